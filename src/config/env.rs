//! The variables `${VAR}` is filled from: the process environment, and the
//! `.env` file in the working directory for names the environment does not
//! set, as Node's dotenv does.
//!
//! Both are read each time the config is loaded, at startup and on every
//! reload, so an edited `.env` takes effect with the next reload. The
//! process environment itself is never changed.

use std::collections::HashMap;
use std::path::Path;

pub struct Env {
    dotenv: HashMap<String, String>,
}

impl Env {
    /// Reads `dotenv` if it exists; `Err` names what in it is wrong.
    pub fn load(dotenv: &Path) -> Result<Env, String> {
        let mut values = HashMap::new();
        match dotenvy::from_path_iter(dotenv) {
            Ok(lines) => {
                for line in lines {
                    let (name, value) = line.map_err(|e| e.to_string())?;
                    values.insert(name, value);
                }
            }
            Err(e) if e.not_found() => {}
            Err(e) => return Err(e.to_string()),
        }
        Ok(Env { dotenv: values })
    }

    /// The process environment wins over the file.
    pub fn get(&self, name: &str) -> Option<String> {
        std::env::var(name)
            .ok()
            .or_else(|| self.dotenv.get(name).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_fills_what_the_environment_does_not_set() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(".env");
        std::fs::write(
            &file,
            "# a comment\nAPI_GW_TEST_ONLY_IN_FILE=file\nPATH=from-file\n",
        )
        .unwrap();
        let env = Env::load(&file).unwrap();
        assert_eq!(env.get("API_GW_TEST_ONLY_IN_FILE").as_deref(), Some("file"));
        assert_ne!(env.get("PATH").as_deref(), Some("from-file"));
        assert_eq!(env.get("API_GW_TEST_NOWHERE"), None);

        let missing = Env::load(&dir.path().join("absent")).unwrap();
        assert_eq!(missing.get("API_GW_TEST_ONLY_IN_FILE"), None);

        std::fs::write(&file, "NOT A LINE\n").unwrap();
        assert!(Env::load(&file).is_err());
    }
}
