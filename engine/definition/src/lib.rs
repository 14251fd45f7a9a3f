//! Declarative, versioned saga definitions: parsing, validation and payload templates.
//!
//! A definition is YAML written by a saga author. [`Definition::parse`] turns it
//! into typed form or reports *every* problem at once, each with a line, a
//! column and a hint, so an author can fix a file in one pass:
//!
//! ```
//! use sagaflow_definition::Definition;
//!
//! let yaml = "
//! name: trip
//! version: 1
//! steps:
//!   - name: payment
//!     command: {topic: trip.payment.commands, type: charge}
//!     compensate: {topic: trip.payment.commands, type: refund}
//! ";
//! let problems = Definition::parse("trip.yaml", yaml).unwrap_err();
//! assert_eq!(
//!     problems.to_string(),
//!     "trip.yaml:7:5: error: unknown field `compensate` in step `payment`\n  hint: did you mean `compensation`?"
//! );
//! ```
//!
//! Payload templates read the saga context: a string `$.a.b` is replaced by the
//! context's field `a.b`, `$` by the whole context, and `$$…` escapes a literal `$`.
//! Parsing is pure; [`load_file`] and [`load_dir`] are the only I/O.

mod diagnostics;
mod load;
mod model;
mod parse;
mod registry;
mod template;
mod yaml;

pub use diagnostics::{Diagnostic, Diagnostics};
pub use load::{load_dir, load_file};
pub use model::{CommandSpec, Definition, Step};
pub use registry::Registry;
pub use template::{Path, PathError, RenderError, Template};

/// Errors of this crate other than definition problems (which are [`Diagnostics`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A different definition is already registered under the same `name@version`.
    #[error("definition `{key}` is already registered with different content; publish the change under a new version")]
    Conflict {
        /// The `name@version` key.
        key: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
