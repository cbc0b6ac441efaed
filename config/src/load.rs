//! File + environment loading. TODO(config helper): implement.

use std::path::Path;

use crate::{Config, ConfigErrors};

/// File format, chosen by extension (`.yaml`/`.yml`, `.toml`, `.json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Toml,
    Json,
}

/// Loads, interpolates `${VAR}`s, applies `MCP_DISCOVERY__SECTION__KEY`
/// overrides from the process environment, validates.
pub fn load_file(_path: &Path) -> Result<Config, ConfigErrors> {
    unimplemented!()
}

/// As [`load_file`] with the text and environment given (tests).
pub fn load_str(
    _text: &str,
    _format: Format,
    _file: Option<&Path>,
    _env: &[(String, String)],
) -> Result<Config, ConfigErrors> {
    unimplemented!()
}
