//! The configuration file, read by `Config::from_toml_str` (what `serve`, `check-config` and
//! a reload run on the file's text).
//!
//! Input: the file's text (not UTF-8: nothing to check, the reader refuses it first).
//!
//! Properties: no panic; every error has a message, and its line and column (when given)
//! point inside the text; a configuration that is accepted, written back out as TOML, is
//! accepted again as the same configuration (what the admin listener's effective config
//! shows is a file that loads).

use agentgate_config::Config;

/// Checks one input (see the module docs).
pub fn check(input: &[u8]) {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    match Config::from_toml_str(text) {
        Err(errors) => {
            assert!(!errors.is_empty(), "refused without an error");
            let lines: Vec<&str> = text.split('\n').collect();
            for error in &errors {
                assert!(!error.message.is_empty(), "{error:?}");
                if let Some(line) = error.line {
                    assert!((1..=lines.len()).contains(&line), "{error:?}");
                    if let Some(column) = error.column {
                        let width = lines[line - 1].chars().count();
                        assert!((1..=width + 1).contains(&column), "{error:?}");
                    }
                }
            }
        }
        Ok(config) => {
            let written = toml::to_string(&config)
                .unwrap_or_else(|e| panic!("accepted config does not serialize: {e}"));
            let again = Config::from_toml_str(&written)
                .unwrap_or_else(|e| panic!("written config refused: {e:?}\n{written}"));
            assert_eq!(again, config, "written config differs:\n{written}");
        }
    }
}
