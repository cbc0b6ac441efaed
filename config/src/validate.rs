//! Raw -> validated, collecting every problem. TODO(helper): fill in.
use std::path::PathBuf;

/// One problem in a config: where (file, key path) and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}{path}: {message}", file.as_ref().map(|f| format!("{}: ", f.display())).unwrap_or_default())]
pub struct ConfigError {
    pub file: Option<PathBuf>,
    /// Dotted key path, e.g. `servers.search.url`; empty for the whole file.
    pub path: String,
    pub message: String,
}

/// Every problem found, at once.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{} configuration error(s):\n{}", .0.len(), .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors(pub Vec<ConfigError>);
