//! Where a node of the saga graph is: instance ids, the definition's index, and scopes.
//!
//! The state keeps one entry per node *instance*, keyed by an id built from the definition:
//! - a step: its name, which is unique in the whole definition; inside iteration `i` of a
//!   for_each it is `name[i]` (`name[i][j]` nested), because the same step runs once per
//!   element;
//! - a parallel branch: `<parallel id>/<branch name>`;
//! - a choice branch: `<choice id>/<n>` (1-based) or `<choice id>/otherwise`;
//! - a for_each iteration: `<for_each id>/<i>`.
//!
//! Names are `[a-z0-9_-]+`, so `[`, `]` and `/` never clash with them.

use std::collections::HashMap;

use sagaflow_definition::{Definition, Step};
use serde_json::{Map, Value};

/// The instance id of step `name` inside iterations `suffix` (outermost first).
pub(crate) fn instance_id(name: &str, suffix: &[u32]) -> String {
    let mut id = name.to_string();
    for i in suffix {
        id.push_str(&format!("[{i}]"));
    }
    id
}

/// The step name and iteration indexes of a step's instance id; `None` for a branch id or a
/// malformed one.
pub(crate) fn parse_instance(id: &str) -> Option<(&str, Vec<u32>)> {
    if id.contains('/') {
        return None;
    }
    let (name, mut rest) = id
        .split_once('[')
        .map_or((id, ""), |(n, _)| (n, &id[n.len()..]));
    let mut suffix = Vec::new();
    while let Some(tail) = rest.strip_prefix('[') {
        let (index, after) = tail.split_once(']')?;
        suffix.push(index.parse().ok()?);
        rest = after;
    }
    (!name.is_empty()).then_some((name, suffix))
}

/// The id of a branch (or iteration) `child` of the container node `container`.
pub(crate) fn child_id(container: &str, child: &str) -> String {
    format!("{container}/{child}")
}

/// Where a step sits in its definition: the containers around it, outermost first, each with
/// the index of the child sequence (branch) that holds it.
#[derive(Debug, Clone)]
pub(crate) struct Place<'d> {
    pub(crate) step: &'d Step,
    pub(crate) ancestors: Vec<(&'d Step, usize)>,
}

/// Every step of a definition by name.
#[derive(Debug)]
pub(crate) struct Layout<'d> {
    places: HashMap<&'d str, Place<'d>>,
}

impl<'d> Layout<'d> {
    pub(crate) fn of(def: &'d Definition) -> Self {
        let mut places = HashMap::new();
        fn walk<'d>(
            steps: &'d [Step],
            ancestors: &[(&'d Step, usize)],
            places: &mut HashMap<&'d str, Place<'d>>,
        ) {
            for step in steps {
                places.insert(
                    step.name.as_str(),
                    Place {
                        step,
                        ancestors: ancestors.to_vec(),
                    },
                );
                for (index, child) in step.children().into_iter().enumerate() {
                    let mut inner = ancestors.to_vec();
                    inner.push((step, index));
                    walk(child, &inner, places);
                }
            }
        }
        walk(&def.steps, &[], &mut places);
        Layout { places }
    }

    pub(crate) fn place(&self, name: &str) -> Option<&Place<'d>> {
        self.places.get(name)
    }
}

/// One segment of the context location where a scope's step outputs land.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Seg {
    Key(String),
    Index(usize),
}

/// What a sequence of steps runs inside: the iterations (for instance ids), where outputs land
/// and what payloads and conditions see.
#[derive(Debug, Clone, Default)]
pub(crate) struct Scope {
    pub(crate) suffix: Vec<u32>,
    /// Outputs of the scope's steps land under this location of the context.
    pub(crate) base: Vec<Seg>,
    /// Bindings of the innermost iteration: its element and index.
    item: Option<(Value, u32)>,
}

impl Scope {
    /// The instance id of step `name` in this scope.
    pub(crate) fn id(&self, name: &str) -> String {
        instance_id(name, &self.suffix)
    }

    /// The scope of a parallel branch whose outputs land under `key`.
    pub(crate) fn branch(&self, key: &str) -> Scope {
        let mut scope = self.clone();
        scope.base.push(Seg::Key(key.to_string()));
        scope
    }

    /// The scope of iteration `index` over `item` of a for_each whose results land under `key`.
    pub(crate) fn iteration(&self, key: &str, index: u32, item: Value) -> Scope {
        let mut scope = self.clone();
        scope.suffix.push(index);
        scope.base.push(Seg::Key(key.to_string()));
        scope.base.push(Seg::Index(index as usize));
        scope.item = Some((item, index));
        scope
    }

    /// What a payload, a condition or a path sees from this scope: the saga context with each
    /// enclosing branch's and iteration's own outputs on top (so a step reads an earlier
    /// step's output of its branch as `$.key`, wherever the branch sits), then `$.item` and
    /// `$.index` inside a for_each.
    pub(crate) fn view(&self, context: &Value) -> Value {
        if self.base.is_empty() && self.item.is_none() {
            return context.clone();
        }
        let mut view = context.clone();
        let mut at = context;
        for seg in &self.base {
            let next = match (seg, at) {
                (Seg::Key(k), Value::Object(m)) => m.get(k),
                (Seg::Index(i), Value::Array(a)) => a.get(*i),
                _ => None,
            };
            let Some(next) = next else { break };
            at = next;
            if let (Value::Object(local), Value::Object(v)) = (at, &mut view) {
                for (k, value) in local {
                    v.insert(k.clone(), value.clone());
                }
            }
        }
        if let (Some((item, index)), Value::Object(v)) = (&self.item, &mut view) {
            v.insert("item".into(), item.clone());
            v.insert("index".into(), Value::from(*index));
        }
        view
    }

    /// The object at this scope's output location in `context`, created as needed.
    pub(crate) fn outputs<'c>(&self, context: &'c mut Value) -> Option<&'c mut Map<String, Value>> {
        let mut at = context;
        for seg in &self.base {
            at = match seg {
                Seg::Key(k) => {
                    let map = at.as_object_mut()?;
                    map.entry(k.clone())
                        .or_insert_with(|| Value::Object(Map::new()))
                }
                Seg::Index(i) => at.as_array_mut()?.get_mut(*i)?,
            };
        }
        at.as_object_mut()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn instance_ids_round_trip() {
        assert_eq!(instance_id("pay", &[]), "pay");
        assert_eq!(instance_id("box", &[3, 0]), "box[3][0]");
        assert_eq!(parse_instance("box[3][0]"), Some(("box", vec![3, 0])));
        assert_eq!(parse_instance("pay"), Some(("pay", vec![])));
        assert_eq!(parse_instance("book/flight"), None);
        assert_eq!(parse_instance("box[x]"), None);
        assert_eq!(parse_instance("[1]"), None);
    }

    #[test]
    fn a_view_overlays_branch_and_iteration_outputs() {
        let context = json!({"a": 1, "ship": [{"id": "s0"}, {"id": "s1"}], "flight": {"id": "f"}});
        let scope = Scope::default().iteration("ship", 1, json!("w2"));
        let view = scope.view(&context);
        assert_eq!(view["id"], "s1");
        assert_eq!(view["item"], "w2");
        assert_eq!(view["index"], 1);
        assert_eq!(view["a"], 1);
        let branch = Scope::default().branch("flight");
        assert_eq!(branch.view(&context)["id"], "f");
        let mut context = json!({});
        branch
            .outputs(&mut context)
            .unwrap()
            .insert("x".into(), json!(2));
        assert_eq!(context, json!({"flight": {"x": 2}}));
    }
}
