//! Where configuration values come from (the environment over an optional `KEY=VALUE` file), and
//! the reader that collects every problem while values are parsed.

use std::{collections::HashMap, path::Path};

use super::{ConfigError, ConfigProblem};

/// Where variables come from: the process environment over an optional `KEY=VALUE` file.
pub struct Source {
    values: HashMap<String, String>,
}

impl Source {
    /// The process environment, over `EVISA_CONFIG_FILE` (or `file`) when given.
    pub fn from_env(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut values = HashMap::new();
        let file = file
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("EVISA_CONFIG_FILE").map(Into::into));
        if let Some(path) = file {
            let text = std::fs::read_to_string(&path).map_err(|e| {
                ConfigError(vec![ConfigProblem {
                    var: "EVISA_CONFIG_FILE",
                    problem: format!("cannot read {}: {e}", path.display()),
                }])
            })?;
            values.extend(parse_env_file(&text).map_err(|problem| {
                ConfigError(vec![ConfigProblem {
                    var: "EVISA_CONFIG_FILE",
                    problem,
                }])
            })?);
        }
        values.extend(std::env::vars());
        Ok(Self { values })
    }

    /// Explicit values only (tests).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        Self {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    pub(super) fn get(&self, var: &str) -> Option<&str> {
        self.values
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }
}

pub(super) fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| format!("line {} is not KEY=VALUE", n + 1))?;
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(v);
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

/// Collects problems while reading variables.
pub(super) struct Reader<'a> {
    pub(super) src: &'a Source,
    pub(super) problems: Vec<ConfigProblem>,
}

impl Reader<'_> {
    pub(super) fn problem(&mut self, var: &'static str, problem: impl Into<String>) {
        self.problems.push(ConfigProblem {
            var,
            problem: problem.into(),
        });
    }

    /// A value, or a secret read from the file named by `{var}_FILE`.
    pub(super) fn secret(&mut self, var: &'static str, file_var: &'static str) -> Option<String> {
        match (self.src.get(var), self.src.get(file_var)) {
            (Some(_), Some(_)) => {
                self.problem(var, format!("set either {var} or {file_var}, not both"));
                None
            }
            (Some(v), None) => Some(v.to_string()),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
                Ok(_) => {
                    self.problem(file_var, format!("{path} is empty"));
                    None
                }
                Err(e) => {
                    self.problem(file_var, format!("cannot read {path}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }

    pub(super) fn parsed<T>(
        &mut self,
        var: &'static str,
        default: T,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> T {
        match self.src.get(var) {
            None => default,
            Some(raw) => parse(raw).unwrap_or_else(|p| {
                self.problem(var, p);
                default
            }),
        }
    }

    pub(super) fn url(&mut self, var: &'static str) -> Option<url::Url> {
        let raw = self.src.get(var)?;
        match url::Url::parse(raw) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Some(u),
            _ => {
                self.problem(var, "must be an absolute http(s) URL");
                None
            }
        }
    }
}
