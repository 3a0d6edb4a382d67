//! The classification matrix: the built-in data categories plus those of the config, each
//! with its key-name patterns, detectors and description.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;

use super::{Detector, NOT_PII};

/// One category of the matrix, as configured.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryConfig {
    /// The category name, for example `contact.email`.
    pub name: String,
    /// Regular expressions matched against JSON key names (case-insensitive).
    #[serde(default)]
    pub key_patterns: Vec<String>,
    /// Value detectors.
    #[serde(default)]
    pub detectors: Vec<Detector>,
    /// What the category holds, in words for the data subject.
    #[serde(default)]
    pub description: Option<String>,
}

/// The longest description a table or category may have.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// What is wrong with a configured description, if anything.
pub fn description_problem(text: &str) -> Option<String> {
    if text.trim().is_empty() {
        Some("must not be empty when given".to_owned())
    } else if text.chars().count() > MAX_DESCRIPTION_CHARS {
        Some(format!("longer than {MAX_DESCRIPTION_CHARS} characters"))
    } else if text.chars().any(|c| c.is_control() && c != '\n') {
        Some("control characters other than new lines are not allowed".to_owned())
    } else {
        None
    }
}

/// A compiled category.
#[derive(Debug)]
struct Category {
    name: String,
    /// Key-name patterns, matched case-insensitively (through the matrix's `key_set`).
    keys: Vec<String>,
    detectors: Vec<Detector>,
    description: Option<String>,
}

/// The classification matrix: the built-in categories plus those of the config.
#[derive(Debug)]
pub struct Matrix {
    categories: Vec<Category>,
    /// Every category's key patterns in one set, so that a key is matched in one pass.
    key_set: regex::RegexSet,
    /// For each pattern of `key_set`, the index of its category.
    key_owner: Vec<usize>,
}

/// The built-in categories: (name, key patterns, detectors, description).
const BUILT_IN: &[(&str, &[&str], &[Detector], &str)] = &[
    (
        "contact.email",
        &[r"^e-?mail(_?address)?$", r"_email$"],
        &[Detector::Email],
        "E-mail addresses.",
    ),
    (
        "contact.phone",
        &[
            r"^(tele)?phone(_?number)?$",
            r"^mobile$",
            r"^cell$",
            r"_phone$",
            r"^(tel|fax|msisdn)$",
        ],
        &[Detector::Phone],
        "Telephone numbers.",
    ),
    (
        "name",
        &[
            r"^(full_?|first_?|last_?|given_?|family_?|sur|middle_?|display_?|nick_?|maiden_?)?name$",
            r"^holder$",
        ],
        &[],
        "Names of people.",
    ),
    (
        "address",
        &[
            r"^(street|address\d?(_?line\d?)?|postcode|postal(_?code)?|zip(_?code)?|city|town)$",
            r"^(district|county|province)$",
        ],
        &[],
        "Postal addresses and parts of them (street, post code, city, district).",
    ),
    (
        "government_id",
        &[r"^(ssn|social_security(_number)?|passport(_?(no|number))?|national_?id|tax_?id|nin)$"],
        &[Detector::Ssn],
        "Numbers issued by a government, such as a social security or passport number.",
    ),
    (
        "financial.card",
        &[r"^(card_?number|pan|cc_?number|credit_?card)$"],
        &[Detector::Card],
        "Payment card numbers.",
    ),
    (
        "financial.account",
        &[r"^(iban|account_?number|bank_?account)$"],
        &[Detector::Iban],
        "Bank account numbers, such as an IBAN.",
    ),
    (
        "network.ip",
        &[r"^(ip|ip_?address|remote_?addr|client_?ip)$"],
        &[Detector::Ip],
        "Internet (IP) addresses of the devices used.",
    ),
    (
        "free_text",
        // No key pattern: a JSON key named `note` is found by what its value holds. `discover`
        // proposes the category for text columns by their words (see `FREE_TEXT_WORDS`) and
        // by what detectors find inside their samples.
        &[],
        &[],
        "Free text written by or about a person, such as messages and notes, which may hold \
         contacts or other personal data.",
    ),
    (
        "birth_date",
        &[r"^(dob|birth_?date|date_?of_?birth|birthday)$"],
        &[],
        "Dates of birth.",
    ),
    (
        "photo",
        &[r"^(photo|picture|avatar|portrait|selfie)$"],
        &[],
        "Pictures of a person, such as a profile photo.",
    ),
    (
        "employment",
        &[r"^(job_?title|occupation|job|employer)$"],
        &[],
        "Facts about a person's work, such as a job title.",
    ),
    (
        "location",
        &[r"^(lat|latitude|lng|lon|longitude|geo|coordinates)$"],
        &[],
        "Geographic locations, such as coordinates.",
    ),
    (
        "identifier",
        &[
            r"^(user|customer|account|subject|member|client|device|visitor)_?(id|uuid|guid)$",
            r"^session_?(id|uuid|guid|token)$",
        ],
        &[],
        "Numbers or codes that identify a person, an account or their device, such as a \
         customer number or a device id.",
    ),
];

/// Errors in configured categories.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MatrixError(pub String);

impl Matrix {
    /// The built-in categories plus `extra` (an extra category with a built-in name replaces it).
    pub fn new(extra: &[CategoryConfig]) -> Result<Matrix, MatrixError> {
        let mut by_name: BTreeMap<String, Category> = BTreeMap::new();
        for (name, keys, detectors, description) in BUILT_IN {
            let keys = keys.iter().map(|k| (*k).to_owned()).collect();
            by_name.insert(
                (*name).to_owned(),
                Category {
                    name: (*name).to_owned(),
                    keys,
                    detectors: detectors.to_vec(),
                    description: Some((*description).to_owned()),
                },
            );
        }
        for (i, c) in extra.iter().enumerate() {
            let name = c.name.trim().to_lowercase();
            if name.is_empty() || name == NOT_PII || name == super::CHECK {
                return Err(MatrixError(format!(
                    "classification.categories[{i}].name: '{}' is not a usable category name",
                    c.name
                )));
            }
            // Each pattern is compiled alone once, so that a bad one is named.
            for p in &c.key_patterns {
                case_insensitive(p).map_err(|e| {
                    MatrixError(format!(
                        "classification.categories[{i}].key_patterns: '{p}' is not a valid regular expression: {e}"
                    ))
                })?;
            }
            let keys = c.key_patterns.clone();
            if let Some(problem) = c.description.as_deref().and_then(description_problem) {
                return Err(MatrixError(format!(
                    "classification.categories[{i}].description: {problem}"
                )));
            }
            by_name.insert(
                name.clone(),
                Category {
                    name,
                    keys,
                    detectors: c.detectors.clone(),
                    description: c.description.clone(),
                },
            );
        }
        let categories: Vec<Category> = by_name.into_values().collect();
        let mut patterns = Vec::new();
        let mut key_owner = Vec::new();
        for (i, category) in categories.iter().enumerate() {
            for key in &category.keys {
                patterns.push(key.clone());
                key_owner.push(i);
            }
        }
        let key_set = regex::RegexSetBuilder::new(&patterns)
            .case_insensitive(true)
            .size_limit(1 << 24)
            .build()
            .map_err(|e| MatrixError(format!("classification key patterns: {e}")))?;
        Ok(Matrix {
            categories,
            key_set,
            key_owner,
        })
    }

    /// Whether `category` is in the matrix (or is `not_pii`). Categories are compared
    /// trimmed and lower-cased. A category is also accepted when it refines a known one
    /// (`identifier.customer_id` refines `identifier`).
    pub fn knows(&self, category: &str) -> bool {
        let category = category.trim().to_lowercase();
        category == NOT_PII
            || self.categories.iter().any(|c| {
                category == c.name
                    || category
                        .strip_prefix(c.name.as_str())
                        .is_some_and(|rest| rest.starts_with('.'))
            })
    }

    /// What `category` means, in words: its own description, or that of the nearest
    /// described category it refines (`identifier.customer_id` takes `identifier`'s).
    pub fn describe(&self, category: &str) -> Option<&str> {
        let category = category.trim().to_lowercase();
        let mut name = category.as_str();
        loop {
            if let Some(description) = self
                .categories
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.description.as_deref())
            {
                return Some(description);
            }
            name = &name[..name.rfind('.')?];
        }
    }

    /// The category names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.categories.iter().map(|c| c.name.as_str()).collect()
    }

    /// The category whose key pattern matches `key`, if any (the first category in name
    /// order when several do). Most keys match nothing, which one pass of the set tells.
    pub fn key_category(&self, key: &str) -> Option<&str> {
        self.key_category_index(key).map(|i| self.category_name(i))
    }

    /// [`Matrix::key_category`], as an index for [`Matrix::category_name`].
    pub fn key_category_index(&self, key: &str) -> Option<usize> {
        if !self.key_set.is_match(key) {
            return None;
        }
        self.key_set
            .matches(key)
            .iter()
            .map(|pattern| self.key_owner[pattern])
            .min()
    }

    /// Every category whose detectors find something inside `text` (free text).
    pub fn categories_in_text(&self, text: &str) -> Vec<&str> {
        self.categories
            .iter()
            .filter(|c| c.detectors.iter().any(|d| d.found_in(text)))
            .map(|c| c.name.as_str())
            .collect()
    }

    /// The category whose detector recognises `value`, if any.
    pub fn value_category(&self, value: &str) -> Option<&str> {
        self.value_category_index(value)
            .map(|i| self.category_name(i))
    }

    /// [`Matrix::value_category`], as an index for [`Matrix::category_name`].
    pub fn value_category_index(&self, value: &str) -> Option<usize> {
        let candidate = super::detect::Candidate::of(value)?;
        self.categories
            .iter()
            .position(|c| c.detectors.iter().any(|d| d.matches_candidate(candidate)))
    }

    /// The name of the category at `index` (from [`Matrix::key_category_index`] or
    /// [`Matrix::value_category_index`]).
    pub fn category_name(&self, index: usize) -> &str {
        &self.categories[index].name
    }
}

fn case_insensitive(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
}
