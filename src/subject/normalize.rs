//! Identity values as people type them: each identity kind's normalisation, declared per
//! source, applied before the value is bound and before it is hashed into the subject id, so
//! that `Alice@Example.com ` and `alice@example.com` are one subject everywhere.
//!
//! Normalisation is a short list of steps. The defaults follow the kind's name: `email` trims,
//! composes (Unicode NFC) and lower-cases the whole address (mail providers treat the local
//! part case-insensitively in practice); `phone` trims and formats as E.164; every other kind
//! trims. A source can choose other steps for any kind, `[]` among them.

use serde::Deserialize;
use unicode_normalization::UnicodeNormalization;

/// One normalisation step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Removes leading and trailing white space.
    Trim,
    /// Unicode normalisation form C, so that composed and decomposed letters compare equal.
    Nfc,
    /// Lower-cases the whole value.
    Lowercase,
    /// Lower-cases only what follows the last `@` (for sources whose local parts are
    /// case-sensitive).
    LowercaseDomain,
    /// Parses a phone number and writes it as E.164 (`+442079460958`), with the kind's
    /// `default_region` for numbers written without a country code.
    E164,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Trim => "trim",
            Step::Nfc => "nfc",
            Step::Lowercase => "lowercase",
            Step::LowercaseDomain => "lowercase_domain",
            Step::E164 => "e164",
        }
    }
}

/// `[sources.identities.<kind>]`: how one identity kind's values are normalised.
#[derive(Debug, Clone, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityKindConfig {
    /// The steps, in order. Default by the kind's name (see [`default_steps`]).
    pub normalize: Option<Vec<Step>>,
    /// For `e164`: the region (ISO 3166 code, such as "GB") of numbers written without a
    /// country code.
    pub default_region: Option<String>,
}

/// The steps a kind gets when its source does not choose.
pub fn default_steps(kind: &str) -> Vec<Step> {
    match kind {
        "email" => vec![Step::Trim, Step::Nfc, Step::Lowercase],
        "phone" => vec![Step::Trim, Step::E164],
        _ => vec![Step::Trim],
    }
}

/// A kind's normalisation, ready to apply.
#[derive(Debug, Clone)]
pub struct Normalizer {
    steps: Vec<Step>,
    region: Option<phonenumber::country::Id>,
}

/// What [`Normalizer::stored_form`] found among sampled stored values.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoredForm {
    pub sampled: usize,
    /// Values that an identity typed as stored, once normalised, equals.
    pub as_stored: usize,
    /// Values whose digits equal the digits of what normalisation makes of them.
    pub by_digits: usize,
}

impl StoredForm {
    /// Fewer than half of at least three samples would match: identities of the kind can
    /// hardly ever find these rows as the column is compared.
    pub fn mostly_unmatched(&self, digits: bool) -> bool {
        let matched = if digits {
            self.by_digits
        } else {
            self.as_stored
        };
        self.sampled >= 3 && matched * 2 < self.sampled
    }
}

/// Why a value could not be normalised. Never holds the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NormalizeError(pub String);

impl Normalizer {
    /// The normalisation of `kind` under `config` (the source's entry for it, if any).
    /// Errors name what is wrong with the configuration.
    pub fn new(kind: &str, config: Option<&IdentityKindConfig>) -> Result<Normalizer, String> {
        #[cfg(test)]
        counts::BUILT.with(|n| n.set(n.get() + 1));
        let steps = config
            .and_then(|c| c.normalize.clone())
            .unwrap_or_else(|| default_steps(kind));
        let region = match config.and_then(|c| c.default_region.as_deref()) {
            None => None,
            Some(code) => Some(code.trim().to_uppercase().parse().map_err(|_| {
                format!("default_region: '{code}' is not an ISO 3166 region code such as \"GB\"")
            })?),
        };
        if region.is_some() && !steps.contains(&Step::E164) {
            return Err("default_region: only the e164 step uses it".into());
        }
        Ok(Normalizer { steps, region })
    }

    /// Whether values are lower-cased whole, so that a column stored in mixed case needs
    /// `match = "case_insensitive"`.
    pub fn lowercases(&self) -> bool {
        self.steps.contains(&Step::Lowercase)
    }

    /// How stored values of an identity column compare with what this normalisation makes
    /// of the same text: how many an identity typed as stored would match exactly (or
    /// case-insensitively, with `fold_case`), and how many by their digits. Counts only.
    pub fn stored_form<'a>(
        &self,
        values: impl IntoIterator<Item = &'a str>,
        fold_case: bool,
    ) -> StoredForm {
        let digits = |v: &str| v.chars().filter(char::is_ascii_digit).collect::<String>();
        let mut form = StoredForm::default();
        for value in values {
            form.sampled += 1;
            let Ok(normal) = self.apply(value) else {
                continue;
            };
            if normal == value || (fold_case && normal.to_lowercase() == value.to_lowercase()) {
                form.as_stored += 1;
            }
            let stored_digits = digits(value);
            if !stored_digits.is_empty() && digits(&normal) == stored_digits {
                form.by_digits += 1;
            }
        }
        form
    }

    /// The steps, by name.
    pub fn describe(&self) -> String {
        if self.steps.is_empty() {
            "exact".to_owned()
        } else {
            self.steps
                .iter()
                .map(|s| s.name())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }

    /// Normalises one value.
    pub fn apply(&self, value: &str) -> Result<String, NormalizeError> {
        #[cfg(test)]
        counts::APPLIED.with(|n| n.set(n.get() + 1));
        let mut value = value.to_owned();
        for step in &self.steps {
            value = match step {
                Step::Trim => value.trim().to_owned(),
                Step::Nfc => value.nfc().collect(),
                Step::Lowercase => value.to_lowercase(),
                Step::LowercaseDomain => match value.rsplit_once('@') {
                    Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
                    None => value,
                },
                Step::E164 => self.e164(&value)?,
            };
        }
        if value.is_empty() {
            return Err(NormalizeError("the value is empty once normalised".into()));
        }
        Ok(value)
    }

    fn e164(&self, value: &str) -> Result<String, NormalizeError> {
        // The parser's own messages are not passed on: only fixed words, never the value.
        let number = phonenumber::parse(self.region, value).map_err(|_| {
            NormalizeError(if self.region.is_none() && !value.trim_start().starts_with('+') {
                "not a phone number with a country code (+...), and the kind has no default_region"
                    .to_owned()
            } else {
                "not a phone number".to_owned()
            })
        })?;
        if !phonenumber::is_valid(&number) {
            return Err(NormalizeError(
                "not a valid phone number for its region".into(),
            ));
        }
        Ok(number.format().mode(phonenumber::Mode::E164).to_string())
    }
}

/// How many normalisers this thread built and how many values it normalised, so that tests
/// can check that a call normalises its value once, with a normaliser built at start.
#[cfg(test)]
pub(crate) mod counts {
    use std::cell::Cell;

    thread_local! {
        pub static BUILT: Cell<usize> = const { Cell::new(0) };
        pub static APPLIED: Cell<usize> = const { Cell::new(0) };
    }

    /// (built, applied) on this thread so far.
    pub fn get() -> (usize, usize) {
        (BUILT.with(Cell::get), APPLIED.with(Cell::get))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn normalize(
        kind: &str,
        config: Option<IdentityKindConfig>,
        value: &str,
    ) -> Result<String, NormalizeError> {
        Normalizer::new(kind, config.as_ref()).unwrap().apply(value)
    }

    #[test]
    fn emails_as_people_type_them_are_one_address() {
        for typed in [
            "alice@example.com",
            "ALICE@example.com",
            " alice@example.com",
            "Alice@Example.com \t",
        ] {
            assert_eq!(
                normalize("email", None, typed).unwrap(),
                "alice@example.com"
            );
        }
        // Composed and decomposed letters are one address.
        assert_eq!(
            normalize("email", None, "Jose\u{301}@example.com").unwrap(),
            normalize("email", None, "Jos\u{e9}@example.com").unwrap()
        );
        // Exact local parts where the source says so.
        let exact_local = IdentityKindConfig {
            normalize: Some(vec![Step::Trim, Step::Nfc, Step::LowercaseDomain]),
            default_region: None,
        };
        assert_eq!(
            normalize("email", Some(exact_local), " Alice@Example.COM").unwrap(),
            "Alice@example.com"
        );
        let exact = IdentityKindConfig {
            normalize: Some(vec![]),
            default_region: None,
        };
        assert_eq!(normalize("email", Some(exact), " A ").unwrap(), " A ");
    }

    #[test]
    fn phone_numbers_become_e164_with_the_default_region() {
        let gb = IdentityKindConfig {
            normalize: None,
            default_region: Some("gb".into()),
        };
        for typed in [
            "+44 20 7946 0958",
            "020 7946 0958",
            "(020) 7946-0958",
            " 02079460958 ",
        ] {
            assert_eq!(
                normalize("phone", Some(gb.clone()), typed).unwrap(),
                "+442079460958",
                "{typed}"
            );
        }
        let no_region = normalize("phone", None, "020 7946 0958").unwrap_err();
        assert!(no_region.0.contains("default_region"), "{no_region}");
        assert!(!no_region.0.contains("7946"));
        assert_eq!(
            normalize("phone", None, "+44 20 7946 0958").unwrap(),
            "+442079460958"
        );
        let bad = normalize("phone", Some(gb), "call me maybe").unwrap_err();
        assert!(!bad.0.contains("call me"), "{bad}");
    }

    #[test]
    fn other_kinds_are_trimmed_and_never_empty() {
        assert_eq!(normalize("customer_id", None, " 42 ").unwrap(), "42");
        assert!(normalize("customer_id", None, "   ").is_err());
    }

    #[test]
    fn bad_configuration_is_named() {
        let bad_region = IdentityKindConfig {
            normalize: None,
            default_region: Some("Narnia".into()),
        };
        assert!(
            Normalizer::new("phone", Some(&bad_region))
                .unwrap_err()
                .contains("default_region")
        );
        let unused = IdentityKindConfig {
            normalize: None,
            default_region: Some("GB".into()),
        };
        assert!(Normalizer::new("email", Some(&unused)).is_err());
    }
}
