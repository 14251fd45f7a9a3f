//! The typed form of a saga definition.
//!
//! New step features (retry policies, timeouts, waits, awaits, parallel
//! branches) are meant to arrive as new optional fields or new step kinds
//! decoded next to the existing ones, so current definitions keep parsing.

use serde_json::{Map, Value};

use crate::diagnostics::Diagnostics;
use crate::parse;
use crate::template::{lookup, Path, RenderError, Template};

/// A validated saga definition, identified by name and version.
#[derive(Debug, Clone, PartialEq)]
pub struct Definition {
    /// Saga type name, `[a-z0-9_.-]+`.
    pub name: String,
    /// Positive version; instances stay pinned to the version they started with.
    pub version: u32,
    /// Free text for humans.
    pub description: Option<String>,
    /// Steps in execution order; never empty, names unique.
    pub steps: Vec<Step>,
}

/// One step: a command to a participant, and optionally how to undo it.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Unique within the saga, `[a-z0-9_-]+`.
    pub name: String,
    /// The command sent when the step runs.
    pub command: CommandSpec,
    /// The command sent to undo a completed step when a later one fails.
    pub compensation: Option<CommandSpec>,
    /// Context key <- path into the step's reply output, in source order.
    pub output: Vec<(String, Path)>,
}

/// A command to publish: where, what kind, and with which payload.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSpec {
    /// Kafka topic the participant consumes.
    pub topic: String,
    /// Command type understood by the participant (YAML key `type`).
    pub command_type: String,
    /// Payload rendered from the saga context; an empty object when omitted.
    pub payload: Template,
}

impl Definition {
    /// Parses and validates YAML, reporting every problem found; `source_name` labels diagnostics.
    pub fn parse(source_name: &str, yaml: &str) -> Result<Definition, Diagnostics> {
        parse::parse(source_name, yaml).map(|located| located.definition)
    }

    /// The registry key, `name@version` (e.g. `trip@1`).
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The step with this name.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|step| step.name == name)
    }

    /// The position of the step with this name in execution order.
    pub fn step_index(&self, name: &str) -> Option<usize> {
        self.steps.iter().position(|step| step.name == name)
    }
}

impl Step {
    /// The context entries this step's reply output produces; a missing path is an error naming it.
    pub fn map_output(&self, reply_output: &Value) -> Result<Map<String, Value>, RenderError> {
        self.output
            .iter()
            .map(|(key, path)| Ok((key.clone(), lookup(path, reply_output)?.clone())))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const YAML: &str = "
name: shop
version: 3
steps:
  - name: reserve
    command: {topic: shop.stock, type: reserve}
    output:
      reservation: $.id
      first_line: $.lines.0
  - name: ship
    command: {topic: shop.shipping, type: ship}
";

    #[test]
    fn lookups_by_name() {
        let definition = Definition::parse("shop.yaml", YAML).unwrap();
        assert_eq!(definition.key(), "shop@3");
        assert_eq!(definition.step_index("ship"), Some(1));
        assert_eq!(
            definition.step("reserve").unwrap().command.topic,
            "shop.stock"
        );
        assert!(definition.step("pay").is_none());
        assert_eq!(definition.step_index("pay"), None);
    }

    #[test]
    fn output_mapping_copies_reply_fields() {
        let definition = Definition::parse("shop.yaml", YAML).unwrap();
        let step = definition.step("reserve").unwrap();
        let mapped = step
            .map_output(&json!({"id": "r-1", "lines": [{"sku": "x"}], "extra": 1}))
            .unwrap();
        assert_eq!(
            Value::Object(mapped),
            json!({"reservation": "r-1", "first_line": {"sku": "x"}})
        );
        assert_eq!(
            step.map_output(&json!({"id": "r-1"}))
                .unwrap_err()
                .to_string(),
            "nothing at `$.lines.0`"
        );
        assert_eq!(
            definition.step("ship").unwrap().command.payload,
            Template::default()
        );
    }
}
