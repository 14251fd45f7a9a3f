//! Types shared by the REST API, the state and the `_schemas` topic records.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The only schema type this registry serves.
pub(crate) const AVRO: &str = "AVRO";

/// How a new schema version must relate to the previous ones of its subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    /// No check at all.
    None,
    /// The new schema can read data written with the latest version.
    #[default]
    Backward,
    /// The new schema can read data written with every earlier version.
    BackwardTransitive,
    /// The latest version can read data written with the new schema.
    Forward,
    /// Every earlier version can read data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest version.
    Full,
    /// Backward and forward against every earlier version.
    FullTransitive,
}

impl CompatibilityLevel {
    /// Every level, in the order the error message lists them.
    pub const ALL: [CompatibilityLevel; 7] = [
        CompatibilityLevel::None,
        CompatibilityLevel::Backward,
        CompatibilityLevel::BackwardTransitive,
        CompatibilityLevel::Forward,
        CompatibilityLevel::ForwardTransitive,
        CompatibilityLevel::Full,
        CompatibilityLevel::FullTransitive,
    ];

    /// The name used on the wire, e.g. `BACKWARD_TRANSITIVE`.
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityLevel::None => "NONE",
            CompatibilityLevel::Backward => "BACKWARD",
            CompatibilityLevel::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityLevel::Forward => "FORWARD",
            CompatibilityLevel::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityLevel::Full => "FULL",
            CompatibilityLevel::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the new schema must read data written by older versions.
    pub(crate) fn checks_backward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Backward
                | CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Whether older versions must read data written by the new schema.
    pub(crate) fn checks_forward(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::Forward
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::Full
                | CompatibilityLevel::FullTransitive
        )
    }

    /// Whether the check covers every earlier version rather than only the latest.
    pub(crate) fn is_transitive(self) -> bool {
        matches!(
            self,
            CompatibilityLevel::BackwardTransitive
                | CompatibilityLevel::ForwardTransitive
                | CompatibilityLevel::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityLevel {
    type Err = Error;

    /// Parses a level case-insensitively, as Confluent's registry does.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        CompatibilityLevel::ALL
            .into_iter()
            .find(|level| level.as_str() == upper)
            .ok_or_else(|| Error::InvalidCompatibilityLevel {
                level: s.to_owned(),
            })
    }
}

/// A named type that a schema imports from another subject's version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SchemaReference {
    /// The full name of the imported Avro type, e.g. `com.acme.Address`.
    pub name: String,
    /// The subject that holds the imported schema.
    pub subject: String,
    /// The version of that subject.
    pub version: u32,
}

/// A version number or `latest`, as given in a URL path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionSelector {
    /// The highest version that is not deleted.
    Latest,
    /// One specific version.
    Number(u32),
}

impl VersionSelector {
    /// Parses `latest`, `-1` (Confluent's alias for latest) or a version in `1..=2^31-1`.
    pub(crate) fn parse(raw: &str) -> Result<Self, Error> {
        if raw.eq_ignore_ascii_case("latest") || raw == "-1" {
            return Ok(VersionSelector::Latest);
        }
        match raw.parse::<u32>() {
            Ok(n) if (1..=i32::MAX as u32).contains(&n) => Ok(VersionSelector::Number(n)),
            _ => Err(Error::InvalidVersion {
                version: raw.to_owned(),
            }),
        }
    }
}

impl fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSelector::Latest => f.write_str("latest"),
            VersionSelector::Number(n) => write!(f, "{n}"),
        }
    }
}

/// One version of a subject, as the API returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SubjectVersion {
    pub(crate) subject: String,
    pub(crate) version: u32,
    pub(crate) id: u32,
    pub(crate) schema: String,
    pub(crate) references: Vec<SchemaReference>,
    pub(crate) deleted: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_case_insensitively_and_reject_unknown_names() {
        assert_eq!(
            "full_transitive".parse::<CompatibilityLevel>().unwrap(),
            CompatibilityLevel::FullTransitive
        );
        assert_eq!(
            "NONE".parse::<CompatibilityLevel>().unwrap(),
            CompatibilityLevel::None
        );
        let err = "SIDEWAYS".parse::<CompatibilityLevel>().unwrap_err();
        assert_eq!(err.error_code(), 42203);
    }

    #[test]
    fn version_selector_accepts_latest_and_positive_numbers_only() {
        assert_eq!(
            VersionSelector::parse("latest").unwrap(),
            VersionSelector::Latest
        );
        assert_eq!(
            VersionSelector::parse("-1").unwrap(),
            VersionSelector::Latest
        );
        assert_eq!(
            VersionSelector::parse("3").unwrap(),
            VersionSelector::Number(3)
        );
        for bad in ["0", "-2", "abc", "2147483648", ""] {
            assert_eq!(
                VersionSelector::parse(bad).unwrap_err().error_code(),
                42202,
                "{bad}"
            );
        }
    }
}
