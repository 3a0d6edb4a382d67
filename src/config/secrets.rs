//! Secrets a config points at (environment variables or files), read once at load time into
//! redacting wrappers. Every failure is collected, each naming its key.

use std::path::Path;

use secrecy::{SecretBox, SecretString};

use super::{Config, ConfigError, DEFAULT_AUDIT_KEY_ENV, DEFAULT_SUBJECT_KEY_ENV};

impl Config {
    /// Reads every secret the config points at. Collects all failures.
    pub(super) fn resolve_secrets(
        &mut self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        let mut problems = Vec::new();

        if self.server.subject_key.is_none() {
            let key = match (&self.server.subject_key_env, &self.server.subject_key_file) {
                (Some(_), Some(_)) => Err(
                    "server.subject_key_env: set either subject_key_env or subject_key_file, not both"
                        .to_owned(),
                ),
                (None, Some(file)) => read_secret_file(file)
                    .map(String::into_bytes)
                    .map_err(|e| format!("server.subject_key_file: {e}")),
                (var, None) => {
                    let var = var.as_deref().unwrap_or(DEFAULT_SUBJECT_KEY_ENV);
                    env(var).map(String::into_bytes).ok_or_else(|| {
                        format!(
                            "server.subject_key_env: environment variable {var} is not set \
                             (it holds the secret key for subject hashes, at least 16 bytes)"
                        )
                    })
                }
            };
            match key {
                Ok(key) if key.len() < 16 => problems.push(
                    "server.subject_key_env: the subject key must be at least 16 bytes long"
                        .to_owned(),
                ),
                Ok(key) => self.server.subject_key = Some(SecretBox::new(Box::new(key))),
                Err(problem) => problems.push(problem),
            }
        }

        if let Some(audit) = self.server.audit.as_mut()
            && audit.key.is_none()
        {
            let key = match (&audit.key_env, &audit.key_file) {
                (Some(_), Some(_)) => {
                    Err("server.audit.key_env: set either key_env or key_file, not both".to_owned())
                }
                (None, Some(file)) => read_secret_file(file)
                    .map(String::into_bytes)
                    .map_err(|e| format!("server.audit.key_file: {e}")),
                (var, None) => {
                    let var = var.as_deref().unwrap_or(DEFAULT_AUDIT_KEY_ENV);
                    env(var).map(String::into_bytes).ok_or_else(|| {
                        format!(
                            "server.audit.key_env: environment variable {var} is not set \
                             (it holds the key of the audit chain, at least 16 bytes)"
                        )
                    })
                }
            };
            match key {
                Ok(key) if key.len() < 16 => problems.push(
                    "server.audit.key_env: the audit key must be at least 16 bytes long".into(),
                ),
                Ok(key) => audit.key = Some(SecretBox::new(Box::new(key))),
                Err(problem) => problems.push(problem),
            }
        }

        if let Some(control) = self.server.control.as_mut()
            && control.url.is_none()
        {
            let url = match (&control.url_env, &control.url_file) {
                (Some(var), None) => env(var).ok_or_else(|| {
                    format!("server.control.url_env: environment variable {var} is not set")
                }),
                (None, Some(file)) => {
                    read_secret_file(file).map_err(|e| format!("server.control.url_file: {e}"))
                }
                _ => Err("server.control: set exactly one of url_env and url_file".to_owned()),
            };
            match url {
                Ok(url) => control.url = Some(SecretString::from(url)),
                Err(problem) => problems.push(problem),
            }
        }

        for (i, token) in self.server.tokens.iter_mut().enumerate() {
            let at = format!("server.tokens[{i}]");
            let text = match (&token.sha256_env, &token.sha256_file) {
                (Some(var), None) => env(var).ok_or_else(|| {
                    format!("{at}.sha256_env: environment variable {var} is not set")
                }),
                (None, Some(file)) => {
                    read_secret_file(file).map_err(|e| format!("{at}.sha256_file: {e}"))
                }
                _ => Err(format!(
                    "{at}: set exactly one of sha256_env and sha256_file"
                )),
            };
            match text.and_then(|t| {
                let bytes = hex::decode(t.trim())
                    .map_err(|_| format!("{at}: the token digest is not hex"))?;
                <[u8; 32]>::try_from(bytes.as_slice())
                    .map_err(|_| format!("{at}: the token digest must be 32 bytes (SHA-256)"))
            }) {
                Ok(digest) => token.sha256 = Some(digest),
                Err(problem) => problems.push(problem),
            }
        }

        for (i, source) in self.sources.iter_mut().enumerate() {
            let at = format!("sources[{i}]");
            if source.password.is_some() {
                continue; // set programmatically (the demo)
            }
            if source.password_inline.is_some() {
                problems.push(format!(
                    "{at}.password: inline passwords are not allowed; \
                     use password_env or password_file"
                ));
                continue;
            }
            match (&source.password_env, &source.password_file) {
                (Some(_), Some(_)) => problems.push(format!(
                    "{at}.password_env: set either password_env or password_file, not both"
                )),
                (Some(var), None) => match env(var) {
                    Some(value) => source.password = Some(SecretString::from(value)),
                    None => problems.push(format!(
                        "{at}.password_env: environment variable {var} is not set"
                    )),
                },
                (None, Some(file)) => match read_secret_file(file) {
                    Ok(value) => source.password = Some(SecretString::from(value)),
                    Err(e) => problems.push(format!("{at}.password_file: {e}")),
                },
                (None, None) => {} // trust or certificate authentication
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Reads a secret from a file, without its trailing newline.
fn read_secret_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let trimmed = text.trim_end_matches(['\r', '\n']);
    if trimmed.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(trimmed.to_owned())
}
