//! `${VAR}` and `${VAR:-default}` in YAML string values, filled from the
//! environment (which already holds the `.env` file, loaded by `main`).
//!
//! Expansion runs on parsed values, not on the file's text, so a secret
//! holding `#` or `: ` cannot change the YAML's structure and a `${...}` in a
//! comment means nothing. `$${` writes a literal `${`.

use serde_yaml::Value;

use super::Invalid;

/// Expands every string in `value`; the error names the key path and reason.
pub fn expand_env(
    value: &mut Value,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Invalid> {
    walk(value, String::new(), lookup)
}

fn walk(
    value: &mut Value,
    path: String,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<(), Invalid> {
    match value {
        Value::String(s) if s.contains('$') => {
            *s = expand_str(s, lookup).map_err(|reason| Invalid::at(path, reason))?;
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                walk(item, format!("{path}[{i}]"), lookup)?;
            }
        }
        Value::Mapping(map) => {
            for (key, item) in map.iter_mut() {
                let key = match key {
                    Value::String(k) => k.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                walk(item, child, lookup)?;
            }
        }
        Value::Tagged(tagged) => walk(&mut tagged.value, path, lookup)?,
        _ => {}
    }
    Ok(())
}

fn expand_str(input: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(after) = rest.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("${") {
            let end = after
                .find('}')
                .ok_or_else(|| format!("unterminated `${{` in `{input}`"))?;
            out.push_str(&substitute(&after[..end], lookup)?);
            rest = &after[end + 1..];
        } else {
            out.push('$');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// One `VAR` or `VAR:-default`. As in the shell, an empty variable counts as
/// unset for `:-`, so `PORT=` in a `.env` file still gets the default.
fn substitute(expr: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, default) = match expr.split_once(":-") {
        Some((name, default)) => (name, Some(default)),
        None => (expr, None),
    };
    let valid = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(format!("`${{{expr}}}` is not a valid variable reference"));
    }
    match (lookup(name).filter(|v| !v.is_empty()), default) {
        (Some(value), _) => Ok(value),
        (None, Some(default)) => Ok(default.to_string()),
        (None, None) => Err(format!(
            "environment variable {name} is not set (set it, add it to .env, or write ${{{name}:-default}})"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "PORT" => Some("8080".into()),
            "EMPTY" => Some(String::new()),
            "SECRET" => Some("a#b: c".into()),
            _ => None,
        }
    }

    #[test]
    fn expands_strings() {
        assert_eq!(expand_str("0.0.0.0:${PORT}", &env).unwrap(), "0.0.0.0:8080");
        assert_eq!(
            expand_str("${NOPE:-http://x:1}", &env).unwrap(),
            "http://x:1"
        );
        assert_eq!(expand_str("${EMPTY:-d}", &env).unwrap(), "d");
        assert_eq!(expand_str("${SECRET}", &env).unwrap(), "a#b: c");
        assert_eq!(
            expand_str("cost: $5, $${PORT}", &env).unwrap(),
            "cost: $5, ${PORT}"
        );
    }

    #[test]
    fn refuses_unset_and_malformed() {
        assert!(expand_str("${NOPE}", &env)
            .unwrap_err()
            .contains("NOPE is not set"));
        assert!(expand_str("${PORT", &env)
            .unwrap_err()
            .contains("unterminated"));
        assert!(expand_str("${1X}", &env)
            .unwrap_err()
            .contains("not a valid"));
    }

    #[test]
    fn errors_name_the_key_path() {
        let mut doc: Value = serde_yaml::from_str("a:\n  b: [ok, '${NOPE}']\n").unwrap();
        let e = expand_env(&mut doc, &env).unwrap_err();
        assert_eq!(e.key.as_deref(), Some("a.b[1]"));
        assert!(e.reason.contains("NOPE"));
    }
}
