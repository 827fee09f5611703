//! The two error types: [`ValidationError`] (a rule broken by parsed values) and
//! [`ConfigError`] (anything wrong with a file, located at a line and column when possible).

use std::fmt;

/// One broken validation rule, found by [`Config::validate`](crate::Config::validate).
///
/// Displays as `key: message`, e.g. `auth.api_keys: at least one API key is required`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ValidationError {
    /// Dotted path of the offending key, with `[index]` for array elements, e.g.
    /// `store.redis.urls[1]`.
    pub key: String,
    /// Why the value is rejected. Never echoes secrets or API keys.
    pub message: String,
}

impl ValidationError {
    /// A rule broken at `key` (a dotted path) for the reason `message`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// A problem with a configuration file: unreadable, bad TOML syntax, a wrong type, an
/// unknown key, or a broken validation rule.
///
/// Displays as `line 7, column 1: store.redis.urls[1]: must start with redis:// or rediss://`,
/// leaving out the parts that are unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// Dotted path of the key concerned, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// 1-based line in the source, when the problem points at text in it.
    pub line: Option<usize>,
    /// 1-based column (in characters) in the source, when the problem points at text in it.
    pub column: Option<usize>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, "line {line}, column {column}: ")?,
            (Some(line), None) => write!(f, "line {line}: ")?,
            (None, _) => {}
        }
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}
