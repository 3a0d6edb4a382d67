//! Several identities of one subject, asked in one snapshot: each checked and normalised as
//! the subject's is, repeats dropped, and all bound together as one parameter (a JSON array of
//! the normalised values) that a plan of several identities reads element by element.

use secrecy::{ExposeSecret, SecretString};

use super::{MAX_IDENTITY_BYTES, MAX_LABEL_BYTES};
use crate::config::SourceConfig;
use crate::engine::error::ExtractError;
use crate::pb;
use crate::subject::normalize::{NormalizeError, Normalizer};

/// The most identities one call may ask with, the subject's included.
pub const MAX_IDENTITIES: usize = 8;

/// Another identity of the subject, as the caller sent it. The value never shows in `Debug`.
#[derive(Debug, Clone)]
pub struct MoreIdentity {
    pub kind: String,
    pub value: SecretString,
}

/// What an extraction binds and names: the one parameter of its statements, and, when it
/// asks with several identities, each of them (the subject's first) with its value.
pub(super) struct Asking {
    pub(super) bound: SecretString,
    pub(super) identities: Vec<Asked>,
}

/// One identity of several: as records name it, its normalised value, and the request field
/// it came in (for refusals).
pub(super) struct Asked {
    pub(super) named: pb::SubjectIdentity,
    pub(super) value: SecretString,
    pub(super) field: String,
}

impl Asking {
    /// The kinds asked, in the order their values are bound.
    pub(super) fn kinds(&self) -> Vec<String> {
        self.identities
            .iter()
            .map(|i| i.named.kind.clone())
            .collect()
    }

    /// The identities asked, for `started` and the manifest: empty when there is one.
    pub(super) fn named(&self) -> Vec<pb::SubjectIdentity> {
        self.identities.iter().map(|i| i.named.clone()).collect()
    }
}

/// Checks an identity's kind and value as sent, naming the request field they came in.
pub(super) fn check(
    field: &str,
    kind: &str,
    value: &str,
    cfg: &SourceConfig,
) -> Result<(), ExtractError> {
    let refuse = |what: String| Err(ExtractError::InvalidArgument(format!("{field}.{what}")));
    if kind.is_empty() {
        return refuse("kind: must not be empty".into());
    }
    if kind.len() > MAX_LABEL_BYTES || kind.chars().any(char::is_control) {
        return refuse(format!(
            "kind: at most {MAX_LABEL_BYTES} bytes, without control characters"
        ));
    }
    if !cfg.identity_kinds.iter().any(|k| k == kind) {
        return refuse(format!(
            "kind: '{kind}' is not an identity kind of source '{}' (declared: {})",
            cfg.name,
            cfg.identity_kinds.join(", ")
        ));
    }
    if value.trim().is_empty() {
        return refuse("value: must not be empty".into());
    }
    if value.len() > MAX_IDENTITY_BYTES {
        return refuse(format!(
            "value: {} bytes is longer than the {MAX_IDENTITY_BYTES}-byte maximum",
            value.len()
        ));
    }
    if value.contains('\0') {
        return refuse("value: must not contain NUL characters".into());
    }
    Ok(())
}

/// An identity's value as its kind's normalisation made it (`normalized`), or the refusal
/// that names its field.
pub(super) fn accept(
    field: &str,
    kind: &str,
    normalized: Result<String, NormalizeError>,
    normalizer: &Normalizer,
) -> Result<String, ExtractError> {
    let normalized = normalized.map_err(|e| {
        ExtractError::InvalidArgument(format!(
            "{field}.value: {e} (identity kind '{kind}' is normalised by: {})",
            normalizer.describe()
        ))
    })?;
    if normalized.len() > MAX_IDENTITY_BYTES {
        return Err(ExtractError::InvalidArgument(format!(
            "{field}.value: longer than the {MAX_IDENTITY_BYTES}-byte maximum once normalised"
        )));
    }
    Ok(normalized)
}

/// The identities to ask with: the subject's (normalised already), then the others, each
/// normalised, an identity equal to an earlier one dropped. `subject_id` hashes a normalised
/// identity.
pub(super) fn asking<'n>(
    subject: (&str, &str),
    more: &[MoreIdentity],
    normalizer: impl Fn(&str) -> Option<&'n Normalizer>,
    subject_id: impl Fn(&str, &str) -> String,
) -> Result<Asking, ExtractError> {
    let mut values: Vec<(String, String, String)> = vec![(
        subject.0.to_owned(),
        subject.1.to_owned(),
        "subject".to_owned(),
    )];
    for (i, other) in more.iter().enumerate() {
        let field = format!("more_identities[{i}]");
        let normalizer = normalizer(&other.kind).ok_or_else(|| {
            ExtractError::Internal(format!("no normaliser for declared kind in {field}"))
        })?;
        let normalized = normalizer.apply(other.value.expose_secret());
        let value = accept(&field, &other.kind, normalized, normalizer)?;
        if !values
            .iter()
            .any(|(k, v, _)| *k == other.kind && *v == value)
        {
            values.push((other.kind.clone(), value, field));
        }
    }
    // The subject first, the others by kind (in the order sent within a kind): fewer lists of
    // kinds, so fewer plans.
    values[1..].sort_by(|a, b| a.0.cmp(&b.0));
    if values.len() == 1 {
        let (_, value, _) = values.pop().expect("one identity");
        return Ok(Asking {
            bound: SecretString::from(value),
            identities: Vec::new(),
        });
    }
    let bound = serde_json::to_string(&values.iter().map(|(_, v, _)| v).collect::<Vec<_>>())
        .map_err(|e| ExtractError::Internal(format!("binding the identities: {e}")))?;
    Ok(Asking {
        bound: SecretString::from(bound),
        identities: values
            .into_iter()
            .map(|(kind, value, field)| Asked {
                named: pb::SubjectIdentity {
                    subject_id: subject_id(&kind, &value),
                    kind,
                },
                value: SecretString::from(value),
                field,
            })
            .collect(),
    })
}
