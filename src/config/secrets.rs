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
            let key = KeySource {
                at: "server.subject_key",
                env_var: self.server.subject_key_env.as_deref(),
                file: self.server.subject_key_file.as_deref(),
                default_env: DEFAULT_SUBJECT_KEY_ENV,
                what: "the secret key for subject hashes",
            }
            .resolve(&env);
            match key {
                Ok(key) => self.server.subject_key = Some(key),
                Err(problem) => problems.push(problem),
            }
        }

        if let Some(audit) = self.server.audit.as_mut()
            && audit.key.is_none()
        {
            let key = KeySource {
                at: "server.audit.key",
                env_var: audit.key_env.as_deref(),
                file: audit.key_file.as_deref(),
                default_env: DEFAULT_AUDIT_KEY_ENV,
                what: "the key of the audit chain",
            }
            .resolve(&env);
            match key {
                Ok(key) => audit.key = Some(key),
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
            let erasure = &mut source.erasure;
            if erasure.pseudonym_key.is_none()
                && (erasure.pseudonym_key_env.is_some() || erasure.pseudonym_key_file.is_some())
            {
                let key_at = format!("{at}.erasure.pseudonym_key");
                let key = KeySource {
                    at: &key_at,
                    env_var: erasure.pseudonym_key_env.as_deref(),
                    file: erasure.pseudonym_key_file.as_deref(),
                    default_env: "",
                    what: "the key of erasure pseudonyms",
                }
                .resolve(&env);
                match key {
                    Ok(key) => erasure.pseudonym_key = Some(key),
                    Err(problem) => problems.push(problem),
                }
            }
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

/// Where a key comes from: `<at>_env` (or its default variable) or `<at>_file`.
struct KeySource<'a> {
    at: &'a str,
    env_var: Option<&'a str>,
    file: Option<&'a Path>,
    default_env: &'a str,
    what: &'a str,
}

impl KeySource<'_> {
    /// Reads the key; it must be at least 16 bytes long. A problem names its key.
    fn resolve(&self, env: &impl Fn(&str) -> Option<String>) -> Result<SecretBox<Vec<u8>>, String> {
        let at = self.at;
        let key = match (self.env_var, self.file) {
            (Some(_), Some(_)) => Err(format!(
                "{at}_env: set either {at}_env or {at}_file, not both"
            )),
            (None, Some(file)) => read_secret_file(file)
                .map(String::into_bytes)
                .map_err(|e| format!("{at}_file: {e}")),
            (var, None) => {
                let var = var.unwrap_or(self.default_env);
                env(var).map(String::into_bytes).ok_or_else(|| {
                    format!(
                        "{at}_env: environment variable {var} is not set (it holds {}, at \
                         least 16 bytes)",
                        self.what
                    )
                })
            }
        }?;
        if key.len() < 16 {
            return Err(format!("{at}_env: the key must be at least 16 bytes long"));
        }
        Ok(SecretBox::new(Box::new(key)))
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
