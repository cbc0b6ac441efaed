//! Configuration for mcp-discovery: a raw serde schema ([`schema`]) that is
//! loaded from a file plus the environment ([`load`]), validated into the
//! types below ([`validate`]) with every problem collected at once, and
//! compared between two versions ([`diff`]).
//!
//! This crate is pure: no actix, no I/O beyond reading the config file.

pub mod diff;
/// Property tests of loading (the stable-toolchain fuzz targets).
#[cfg(test)]
mod fuzz;
mod interpolate;
pub mod load;
pub mod schema;
mod tree;
pub mod types;
pub mod validate;

pub use diff::{diff_servers, restart_required, ConfigDiff};
pub use load::{load_file, load_str, Format, ENV_PREFIX, ENV_SEPARATOR};
pub use types::*;
pub use validate::{server_from_value, validate_value, ConfigError, ConfigErrors, ServerDefaults};
