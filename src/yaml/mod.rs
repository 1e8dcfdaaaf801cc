//! The machinery that turns a YAML document into typed values: `${VAR}`
//! expansion on the parsed document (`expand.rs`), then serde into a raw
//! shape, with every error naming the key path it is about
//! (`routes[2].upstream`), and the scalar types the file writes in human
//! units (`values.rs`).
//!
//! Which keys exist is not decided here: `config/` owns the file's core
//! sections and each plugin its own, and all of them report problems as an
//! [`Invalid`], so a bad file always fails with key path and reason.

mod expand;
pub mod values;

use std::fmt;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

/// What is wrong, and where in the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// A key path such as `routes[2].upstream`; `None` for the whole
    /// document (a YAML syntax error).
    pub key: Option<String>,
    pub reason: String,
}

impl Invalid {
    pub fn at(key: impl Into<String>, reason: impl Into<String>) -> Self {
        Invalid {
            key: Some(key.into()),
            reason: reason.into(),
        }
    }

    /// A problem with the section itself, whose place the caller gives
    /// with [`Invalid::under`].
    pub fn here(reason: impl Into<String>) -> Self {
        Invalid {
            key: None,
            reason: reason.into(),
        }
    }

    /// The same problem seen from the section that holds it: `burst` of
    /// the section at `routes[1].rate_limit` is `routes[1].rate_limit.burst`.
    /// Sections report keys relative to themselves, so one conversion
    /// serves wherever its section appears.
    pub fn under(self, section: &str) -> Self {
        let key = match self.key {
            Some(key) if key.starts_with('[') => format!("{section}{key}"),
            Some(key) => format!("{section}.{key}"),
            None => section.to_string(),
        };
        Invalid {
            key: Some(key),
            reason: self.reason,
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.key {
            Some(key) => write!(f, "{key}: {}", self.reason),
            None => f.write_str(&self.reason),
        }
    }
}

impl std::error::Error for Invalid {}

/// Parses `text`, fills `${VAR}` from `env`, and deserializes the result
/// into `T`; separate from file reading so tests can feed it documents and a
/// fake environment.
pub fn parse<T: DeserializeOwned>(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<T, Invalid> {
    let mut doc: Value = serde_yaml::from_str(text).map_err(|e| Invalid {
        key: None,
        reason: format!("invalid YAML: {e}"),
    })?;
    expand::expand_env(&mut doc, env)?;
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let key = e.path().to_string();
        Invalid {
            key: (key != ".").then_some(key),
            reason: e.into_inner().to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_nest_under_their_section() {
        let burst = Invalid::at("burst", "must be at least 1");
        assert_eq!(
            burst.under("routes[1].rate_limit").to_string(),
            "routes[1].rate_limit.burst: must be at least 1"
        );
        let item = Invalid::at("[2]", "bad");
        assert_eq!(
            item.under("allow_origins").to_string(),
            "allow_origins[2]: bad"
        );
    }

    #[test]
    fn errors_name_the_key_path() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Doc {
            a: Vec<u16>,
        }
        let env = |_: &str| None;
        let e = parse::<Doc>("a: [1, x]\n", &env).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("a[1]"));
        let e = parse::<Doc>("b: 1\n", &env).unwrap_err();
        assert!(e.to_string().starts_with("b: unknown field `b`"), "{e}");
        let e = parse::<Doc>("a: [\n", &env).unwrap_err();
        assert_eq!(e.key, None);
        assert!(e.reason.starts_with("invalid YAML"), "{e}");
    }
}
