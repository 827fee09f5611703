//! Reading a file or string into a validated [`Config`], with every error located.

use std::path::Path;

use crate::error::{ConfigError, ValidationError};
use crate::locate::Source;
use crate::schema::Config;

impl Config {
    /// Parses TOML source into a [`Config`] and validates it.
    ///
    /// On failure returns every problem found: a TOML syntax, type or unknown-key error stops
    /// parsing, so it comes alone; validation reports all broken rules together. Each error
    /// carries the 1-based line and column of the offending text when it is in the source.
    pub fn from_toml_str(src: &str) -> Result<Config, Vec<ConfigError>> {
        let config: Config = toml::from_str(src).map_err(|err| vec![toml_error(src, &err)])?;
        config.validate().map_err(|errors| {
            let source = Source::parse(src);
            errors
                .into_iter()
                .map(|err| validation_error(&source, err))
                .collect::<Vec<_>>()
        })?;
        Ok(config)
    }

    /// Reads the file at `path`, then behaves as [`Config::from_toml_str`].
    ///
    /// An unreadable file is reported as a single error without a line.
    pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
        let src = std::fs::read_to_string(path).map_err(|err| {
            vec![ConfigError {
                key: None,
                message: format!("cannot read {}: {err}", path.display()),
                line: None,
                column: None,
            }]
        })?;
        Self::from_toml_str(&src)
    }
}

/// Locates a `toml` parse or deserialize error, naming the key its span falls on.
fn toml_error(src: &str, err: &toml::de::Error) -> ConfigError {
    let Some(span) = err.span() else {
        return ConfigError {
            key: None,
            message: err.message().trim_end().to_owned(),
            line: None,
            column: None,
        };
    };
    // After a syntax error the source cannot be parsed again, so the key stays unknown.
    let source = Source::parse(src);
    let (line, column) = source.line_column(span.start);
    ConfigError {
        key: source.key_at(span.start),
        message: err.message().trim_end().to_owned(),
        line: Some(line),
        column: Some(column),
    }
}

/// Locates a validation error at its key's value, if the key is in the source.
fn validation_error(source: &Source<'_>, err: ValidationError) -> ConfigError {
    let position = source.position_of(&err.key);
    ConfigError {
        key: Some(err.key),
        message: err.message,
        line: position.map(|(line, _)| line),
        column: position.map(|(_, column)| column),
    }
}
