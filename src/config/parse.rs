//! Walks the spanned TOML tree into [`super::Config`]. (Being written.)
use std::path::Path;

use super::{Config, ConfigErrors};

/// Reads and parses the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::file(path, format!("cannot read the config file: {e}")))?;
    parse(&text, path)
}

/// Parses `text` as the config file `path`.
pub fn parse(_text: &str, path: &Path) -> Result<Config, ConfigErrors> {
    Err(ConfigErrors::file(path, "not implemented"))
}
