//! The classification matrix, value detectors, and the recursive PII scan of nested JSON.
//!
//! A [`Matrix`] maps data categories (`contact.email`, `network.ip`, ...) to key-name patterns
//! and value detectors. Every column of the data map must carry a category of the matrix or
//! `not_pii`; config validation refuses any other. JSON columns marked `scan_json` are walked
//! through objects and arrays: a key whose name matches a category's pattern, or a string value
//! that a category's detector recognises, becomes a PII field with its path
//! (`events.payload.contact.email`, arrays as `[]`).
//!
//! The walker is iterative (an explicit stack), so a hostile document cannot overflow the
//! thread's stack, and it stops at a depth limit and a size limit with a [`ScanViolation`].
//! Hits and violations carry paths and categories, never the values found.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;

/// The category that marks a column as holding no personal data.
pub const NOT_PII: &str = "not_pii";

/// Detectors for string values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// An e-mail address.
    Email,
    /// A phone number: international (`+44 20 7946 0958`) or common local forms
    /// (`(415) 555-0100`, `020 7946 0958`, `415-555-0100`).
    Phone,
    /// An IPv4 or IPv6 address.
    Ip,
    /// A payment card number of 13 to 19 digits, spaces or dashes allowed, passing the Luhn
    /// check.
    Card,
    /// The shape of a US social security number, `123-45-6789`, excluding the never-issued
    /// area numbers 000, 666 and 900-999.
    Ssn,
}

impl Detector {
    /// Whether `text` looks like what this detector finds.
    pub fn matches(&self, text: &str) -> bool {
        let text = text.trim();
        if text.is_empty() || text.len() > 320 {
            return false;
        }
        // Cheap shape checks first: most strings in a document are none of these.
        let first = text.as_bytes()[0];
        match self {
            Detector::Email => text.contains('@') && email_re().is_match(text),
            Detector::Phone => {
                // Dates share the shape of short numbers: a phone number has an
                // international prefix or at least nine digits, and is not a date.
                if !(first.is_ascii_digit() || first == b'+' || first == b'(') {
                    return false;
                }
                let digits = text.chars().filter(char::is_ascii_digit).count();
                let plausible = if text.starts_with('+') {
                    digits >= 7
                } else {
                    digits >= 9
                };
                plausible && digits <= 15 && phone_re().is_match(text) && !date_re().is_match(text)
            }
            Detector::Ip => {
                (first.is_ascii_hexdigit() || first == b':') && text.parse::<IpAddr>().is_ok()
            }
            Detector::Card => first.is_ascii_digit() && is_card_number(text),
            Detector::Ssn => {
                text.len() == 11
                    && ssn_re().captures(text).is_some_and(|c| {
                        let area = &c[1];
                        area != "000"
                            && area != "666"
                            && !area.starts_with('9')
                            && &c[2] != "00"
                            && &c[3] != "0000"
                    })
            }
        }
    }
}

fn email_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$")
            .expect("a valid e-mail pattern")
    })
}

fn phone_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}$")
            .expect("a valid phone pattern")
    })
}

fn date_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"^(\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d{8})$")
            .expect("a valid date pattern")
    })
}

fn ssn_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"^(\d{3})-(\d{2})-(\d{4})$").expect("a valid SSN pattern"))
}

/// 13-19 digits, optionally grouped by single spaces or dashes, passing the Luhn check.
fn is_card_number(text: &str) -> bool {
    if !text
        .chars()
        .all(|c| c.is_ascii_digit() || c == ' ' || c == '-')
    {
        return false;
    }
    if text.contains("  ") || text.contains("--") || text.starts_with([' ', '-']) {
        return false;
    }
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|d| *d == digits[0]) {
        return false;
    }
    luhn(&digits)
}

/// The Luhn checksum over decimal digits.
pub fn luhn(digits: &[u32]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                *d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// One category of the matrix, as configured.
#[derive(Debug, Clone, Deserialize)]
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
            r"^tel$",
        ],
        &[Detector::Phone],
        "Telephone numbers.",
    ),
    (
        "name",
        &[
            r"^(full_?|first_?|last_?|given_?|family_?|sur|middle_?|display_?)?name$",
            r"^holder$",
        ],
        &[],
        "Names of people.",
    ),
    (
        "address",
        &[r"^(street|address(_?line\d?)?|postcode|postal_?code|zip(_?code)?|city|town)$"],
        &[],
        "Postal addresses and parts of them (street, post code, city).",
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
        &[],
        "Bank account numbers, such as an IBAN.",
    ),
    (
        "network.ip",
        &[r"^(ip|ip_?address|remote_?addr|client_?ip)$"],
        &[Detector::Ip],
        "Internet (IP) addresses of the devices used.",
    ),
    (
        "birth_date",
        &[r"^(dob|birth_?date|date_?of_?birth|birthday)$"],
        &[],
        "Dates of birth.",
    ),
    (
        "location",
        &[r"^(lat|latitude|lng|lon|longitude|geo|coordinates)$"],
        &[],
        "Geographic locations, such as coordinates.",
    ),
    (
        "identifier",
        &[r"^(user|customer|account|subject)_?id$"],
        &[],
        "Numbers or codes that identify a person or an account, such as a customer number.",
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
            if name.is_empty() || name == NOT_PII {
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
        if !self.key_set.is_match(key) {
            return None;
        }
        self.key_set
            .matches(key)
            .iter()
            .map(|pattern| self.key_owner[pattern])
            .min()
            .map(|i| self.categories[i].name.as_str())
    }

    /// The category whose detector recognises `value`, if any.
    pub fn value_category(&self, value: &str) -> Option<&str> {
        self.categories
            .iter()
            .find(|c| c.detectors.iter().any(|d| d.matches(value)))
            .map(|c| c.name.as_str())
    }
}

fn case_insensitive(pattern: &str) -> Result<Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(true)
        .size_limit(1 << 20)
        .build()
}

/// Limits of the JSON walker. Memory is bounded by depth (one small frame per level) and by
/// the fields kept, never by how wide a document is.
#[derive(Debug, Clone, Copy)]
pub struct ScanLimits {
    /// Deepest nesting walked; deeper parts are skipped with a violation.
    pub max_depth: usize,
    /// Largest document scanned, in bytes of JSON text.
    pub max_bytes: usize,
    /// Most values (scalars, arrays and objects) visited per document; the scan stops there
    /// with a violation.
    pub max_nodes: usize,
    /// Most distinct fields kept per document; more set `fields_truncated`.
    pub max_fields: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_depth: 64,
            max_bytes: 8 * 1024 * 1024,
            max_nodes: 1_000_000,
            max_fields: 32,
        }
    }
}

/// The longest JSON key shown in a path; longer keys show as [`WILDCARD`].
pub const MAX_KEY_CHARS: usize = 64;

/// What a path shows instead of a key that is not a plain name: keys are data as often as
/// they are names (maps keyed by e-mail address, phone number or user id).
pub const WILDCARD: &str = "*";

/// How a JSON key appears in a path: lower-cased when it is a plain name (a letter or `_`,
/// then letters, digits, `_` or `-`, at most [`MAX_KEY_CHARS`]), [`WILDCARD`] otherwise.
/// Digits-only keys, keys with `@`, dots, spaces or control characters, and anything a
/// detector recognises are never shown.
pub fn path_segment(key: &str) -> String {
    let mut segment = String::new();
    push_segment(&mut segment, key);
    segment
}

/// Appends `key` as [`path_segment`] shows it.
fn push_segment(path: &mut String, key: &str) {
    let bytes = key.as_bytes();
    let plain = !bytes.is_empty()
        && bytes.len() <= MAX_KEY_CHARS
        && (bytes[0].is_ascii_alphabetic() || bytes[0] == b'_')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
    if plain {
        path.extend(bytes.iter().map(|b| b.to_ascii_lowercase() as char));
    } else {
        path.push_str(WILDCARD);
    }
}

/// Why a document could not be scanned completely. Never holds a value from the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanViolation {
    /// `json_too_deep`, `json_too_large`, `json_too_many_nodes`, `json_invalid` or
    /// `json_control_chars_in_key`.
    pub category: &'static str,
    /// Where it happened (a path of plain names and `*`), or a description.
    pub detail: String,
}

/// The PII found in one document: path → category, plus the violations met.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanResult {
    pub fields: BTreeSet<(String, String)>,
    /// More distinct fields were found than [`ScanLimits::max_fields`].
    pub fields_truncated: bool,
    pub violations: Vec<ScanViolation>,
}

/// Scans one JSON document (as text) without building a tree: the parser drives a visitor
/// that keeps one frame per nesting level, iterates arrays and objects lazily, and builds a
/// path only when it records a field. `root` is the path prefix, e.g. `events.payload`.
pub fn scan_json(matrix: &Matrix, root: &str, json: &str, limits: ScanLimits) -> ScanResult {
    use serde::de::DeserializeSeed;
    let mut walk = Walk {
        matrix,
        limits,
        root,
        path: String::new(),
        frames: Vec::new(),
        nodes: 0,
        stopped: None,
        result: ScanResult::default(),
    };
    if json.len() > limits.max_bytes {
        walk.violation(
            "json_too_large",
            format!(
                "{root}: document of {} bytes is above the {}-byte scan limit",
                json.len(),
                limits.max_bytes
            ),
        );
        return walk.result;
    }
    // serde_json refuses nesting deeper than 128 without recursing further, so parsing itself
    // cannot overflow the stack; the walker stops descending at `max_depth` before that.
    let mut parser = serde_json::Deserializer::from_str(json);
    let outcome = Node(&mut walk)
        .deserialize(&mut parser)
        .and_then(|_| parser.end());
    if let Err(e) = outcome {
        match walk.stopped.take() {
            Some(violation) => walk.result.violations.push(violation),
            None => {
                let category = if e.to_string().contains("recursion limit") {
                    "json_too_deep"
                } else {
                    "json_invalid"
                };
                walk.violation(category, format!("{root}: {}", e.classify_text()));
            }
        }
    }
    walk.result
}

/// The walker's state: the frames of the current path, and what it found.
struct Walk<'a> {
    matrix: &'a Matrix,
    limits: ScanLimits,
    root: &'a str,
    /// The path below the root, as `.segment` and `[]` parts, built in place: a key costs
    /// no allocation unless something is found under it.
    path: String,
    /// One per enclosing container: the length of `path` before its part.
    frames: Vec<usize>,
    nodes: usize,
    /// The violation that ended the scan early, if one did.
    stopped: Option<ScanViolation>,
    result: ScanResult,
}

impl Walk<'_> {
    fn path(&self) -> String {
        let mut path = String::with_capacity(self.root.len() + self.path.len());
        path.push_str(self.root);
        path.push_str(&self.path);
        path
    }

    /// Leaves the innermost container's part of the path.
    fn pop(&mut self) {
        if let Some(len) = self.frames.pop() {
            self.path.truncate(len);
        }
    }

    fn field(&mut self, category: &str) {
        let already = self.result.fields.iter().any(|(path, c)| {
            c == category
                && path.len() == self.root.len() + self.path.len()
                && path.starts_with(self.root)
                && path.ends_with(self.path.as_str())
        });
        if already {
            return;
        }
        let entry = (self.path(), category.to_owned());
        if self.result.fields.len() >= self.limits.max_fields {
            self.result.fields_truncated = true;
        } else {
            self.result.fields.insert(entry);
        }
    }

    /// Records a violation once per category and document.
    fn violation(&mut self, category: &'static str, detail: String) {
        if !self
            .result
            .violations
            .iter()
            .any(|v| v.category == category)
        {
            self.result
                .violations
                .push(ScanViolation { category, detail });
        }
    }

    /// Counts one visited value; past the node limit, ends the scan.
    fn tick<E: serde::de::Error>(&mut self) -> Result<(), E> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            self.stopped = Some(ScanViolation {
                category: "json_too_many_nodes",
                detail: format!(
                    "{}: more than {} values; the rest of the document was not scanned",
                    self.root, self.limits.max_nodes
                ),
            });
            return Err(E::custom("node limit"));
        }
        Ok(())
    }

    /// Whether a container at the current position may be entered.
    fn may_enter(&mut self) -> bool {
        if self.frames.len() < self.limits.max_depth {
            return true;
        }
        let detail = format!(
            "{}: nesting deeper than {} levels was not scanned",
            self.path(),
            self.limits.max_depth
        );
        self.violation("json_too_deep", detail);
        false
    }
}

/// One JSON value at the walker's current position. Its output is whether the value was null.
struct Node<'w, 'a>(&'w mut Walk<'a>);

impl<'de> serde::de::DeserializeSeed<'de> for Node<'_, '_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Node<'_, '_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<bool, E> {
        self.0.tick()?;
        Ok(true)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<bool, E> {
        self.0.tick()?;
        Ok(false)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<bool, E> {
        self.0.tick()?;
        Ok(false)
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<bool, E> {
        self.0.tick()?;
        Ok(false)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<bool, E> {
        self.0.tick()?;
        Ok(false)
    }

    fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<bool, E> {
        self.0.tick()?;
        if let Some(category) = self.0.matrix.value_category(text) {
            self.0.field(category);
        }
        Ok(false)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut items: A) -> Result<bool, A::Error> {
        let walk = self.0;
        walk.tick()?;
        if !walk.may_enter() {
            while items.next_element::<serde::de::IgnoredAny>()?.is_some() {}
            return Ok(false);
        }
        walk.frames.push(walk.path.len());
        walk.path.push_str("[]");
        while items.next_element_seed(Node(&mut *walk))?.is_some() {}
        walk.pop();
        Ok(false)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut entries: A) -> Result<bool, A::Error> {
        let walk = self.0;
        walk.tick()?;
        if !walk.may_enter() {
            while entries
                .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                .is_some()
            {}
            return Ok(false);
        }
        loop {
            let mark = walk.path.len();
            let Some(key) = entries.next_key_seed(KeySeed(walk.matrix, &mut walk.path))? else {
                break;
            };
            walk.frames.push(mark);
            if key.control_chars {
                let detail = format!("{}: a key holds control characters", walk.path());
                walk.violation("json_control_chars_in_key", detail);
            }
            let is_null = entries.next_value_seed(Node(&mut *walk))?;
            if let Some(category) = key.category
                && !is_null
            {
                walk.field(category);
            }
            walk.pop();
        }
        Ok(false)
    }
}

/// What the walker keeps of a key: its category, and whether it holds control characters. The
/// key itself reaches the path only as [`path_segment`] shows it.
struct Key<'a> {
    category: Option<&'a str>,
    control_chars: bool,
}

/// Reads a key: classifies it, and appends its path part (`.segment`) to the path.
struct KeySeed<'a, 'p>(&'a Matrix, &'p mut String);

impl<'de, 'a> serde::de::DeserializeSeed<'de> for KeySeed<'a, '_> {
    type Value = Key<'a>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Key<'a>, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de, 'a> serde::de::Visitor<'de> for KeySeed<'a, '_> {
    type Value = Key<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key<'a>, E> {
        let control_chars = key.chars().any(char::is_control);
        self.1.push('.');
        push_segment(self.1, key);
        Ok(Key {
            category: if control_chars {
                None
            } else {
                self.0.key_category(key)
            },
            control_chars,
        })
    }
}

trait ClassifyText {
    fn classify_text(&self) -> String;
}

impl ClassifyText for serde_json::Error {
    /// The parse error's kind and position, without the excerpt of the input.
    fn classify_text(&self) -> String {
        let kind = match self.classify() {
            serde_json::error::Category::Io => "I/O error",
            serde_json::error::Category::Syntax => "syntax error",
            serde_json::error::Category::Data => "data error",
            serde_json::error::Category::Eof => "unexpected end",
        };
        if self.to_string().contains("recursion limit") {
            format!(
                "nesting deeper than the parser's limit (line {}, column {})",
                self.line(),
                self.column()
            )
        } else {
            format!(
                "not valid JSON: {kind} at line {}, column {}",
                self.line(),
                self.column()
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matrix() -> Matrix {
        Matrix::new(&[]).unwrap()
    }

    #[test]
    fn detectors_recognise_their_shapes() {
        for email in ["alice@example.com", "a.b+tag@sub.example.co.uk"] {
            assert!(Detector::Email.matches(email), "{email}");
        }
        for not in ["alice@", "@example.com", "alice example.com", "a@b"] {
            assert!(!Detector::Email.matches(not), "{not}");
        }
        for phone in [
            "+44 20 7946 0958",
            "(415) 555-0100",
            "020 7946 0958",
            "415-555-0100",
            "+14155550100",
        ] {
            assert!(Detector::Phone.matches(phone), "{phone}");
        }
        for not in [
            "12",
            "2024-01-15",
            "15/01/2024",
            "20240115",
            "hello",
            "1.5",
            "555-0100",
        ] {
            assert!(!Detector::Phone.matches(not), "{not}");
        }
        assert!(Detector::Ip.matches("203.0.113.7"));
        assert!(Detector::Ip.matches("2001:db8::1"));
        assert!(!Detector::Ip.matches("999.1.1.1"));
        assert!(Detector::Card.matches("4242 4242 4242 4242"));
        assert!(Detector::Card.matches("4111-1111-1111-1111"));
        assert!(!Detector::Card.matches("4242 4242 4242 4241"), "Luhn fails");
        assert!(!Detector::Card.matches("0000 0000 0000 0000"));
        assert!(Detector::Ssn.matches("123-45-6789"));
        assert!(!Detector::Ssn.matches("666-45-6789"));
        assert!(!Detector::Ssn.matches("923-45-6789"));
        assert!(!Detector::Ssn.matches("123456789"));
    }

    #[test]
    fn categories_must_be_known() {
        let m = matrix();
        assert!(m.knows("contact.email"));
        assert!(m.knows(" Contact.Email "));
        assert!(m.knows("not_pii"));
        assert!(m.knows("identifier.customer_id"), "refines 'identifier'");
        assert!(!m.knows("identifierx"));
        assert!(!m.knows("favourite.colour"));
        let m = Matrix::new(&[CategoryConfig {
            name: "favourite.colour".into(),
            key_patterns: vec!["^colou?r$".into()],
            detectors: vec![],
            description: Some("The colour you like best.".into()),
        }])
        .unwrap();
        assert!(m.knows("favourite.colour"));
        assert_eq!(
            m.describe("Favourite.Colour.Shade"),
            Some("The colour you like best.")
        );
        assert_eq!(
            m.describe("identifier.customer_id"),
            m.describe("identifier")
        );
        assert!(m.describe("identifier").is_some());
        assert_eq!(m.describe("favourite"), None);
        assert_eq!(m.describe("not_pii"), None);
        assert!(
            Matrix::new(&[CategoryConfig {
                name: "x".into(),
                key_patterns: vec!["(".into()],
                detectors: vec![],
                description: None,
            }])
            .is_err()
        );
    }

    #[test]
    fn nested_pii_is_found_with_paths() {
        let doc = r#"{
            "email": "alice@example.com",
            "a": {"b": {"c": {"d": {"phone": "+44 20 7946 0958"}}}},
            "items": [{"ip": "203.0.113.7"}, {"note": "call 415-555-0100"}, {"contact": "bob@example.com"}],
            "count": 3, "ok": true, "none": null
        }"#;
        let result = scan_json(&matrix(), "t.doc", doc, ScanLimits::default());
        let fields: Vec<(&str, &str)> = result
            .fields
            .iter()
            .map(|(p, c)| (p.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("t.doc.a.b.c.d.phone", "contact.phone"),
                ("t.doc.email", "contact.email"),
                ("t.doc.items[].contact", "contact.email"),
                ("t.doc.items[].ip", "network.ip"),
            ]
        );
        assert!(result.violations.is_empty());
    }

    #[test]
    fn hostile_documents_give_violations_not_crashes() {
        let m = matrix();
        let deep = "[".repeat(100_000) + &"]".repeat(100_000);
        let r = scan_json(&m, "t.doc", &deep, ScanLimits::default());
        assert_eq!(r.violations[0].category, "json_too_deep");

        let big = format!("{{\"k\": \"{}\"}}", "x".repeat(9 * 1024 * 1024));
        let r = scan_json(&m, "t.doc", &big, ScanLimits::default());
        assert_eq!(r.violations[0].category, "json_too_large");

        let r = scan_json(
            &m,
            "t.doc",
            "{\"e\\u0000mail\": \"alice@example.com\"}",
            ScanLimits::default(),
        );
        assert_eq!(r.violations[0].category, "json_control_chars_in_key");
        assert!(!r.violations[0].detail.contains("alice"));

        let nested_60 = "{\"a\":".repeat(100) + "1" + &"}".repeat(100);
        let r = scan_json(&m, "t.doc", &nested_60, ScanLimits::default());
        assert_eq!(r.violations[0].category, "json_too_deep");

        let r = scan_json(
            &m,
            "t.doc",
            "{\"email\": \"alice@example.com\"",
            ScanLimits::default(),
        );
        assert_eq!(r.violations[0].category, "json_invalid");
        assert!(
            !r.violations[0].detail.contains("alice"),
            "{:?}",
            r.violations
        );
    }
    #[test]
    fn keys_that_are_not_plain_names_show_as_a_wildcard() {
        let doc = r#"{"friends": {"victim.person@example.net": {"phone": "+44 20 7946 0958"}},
                      "+1 415 555 0100": {"email": "x"}, "12345": {"ip": "203.0.113.9"},
                      "First Name": {"e-mail": "bob@example.com"}}"#;
        let result = scan_json(&matrix(), "t.doc", doc, ScanLimits::default());
        let paths: Vec<&str> = result.fields.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "t.doc.*.e-mail",
                "t.doc.*.email",
                "t.doc.*.ip",
                "t.doc.friends.*.phone",
            ]
        );
        assert_eq!(path_segment(&"k".repeat(65)), WILDCARD);
        assert_eq!(path_segment("Contact_Email"), "contact_email");
        assert_eq!(path_segment("bad\u{7}key"), WILDCARD);
    }

    #[test]
    fn wide_documents_stop_at_the_node_limit_and_fields_at_the_field_limit() {
        let m = matrix();
        let limits = ScanLimits {
            max_nodes: 1000,
            max_fields: 3,
            ..ScanLimits::default()
        };
        let wide = format!("[{}]", vec!["0"; 5000].join(","));
        let r = scan_json(&m, "t.doc", &wide, limits);
        assert_eq!(r.violations[0].category, "json_too_many_nodes");

        let many: serde_json::Map<String, serde_json::Value> = (0..10)
            .map(|i| (format!("k{i}"), format!("p{i}@example.org").into()))
            .collect();
        let r = scan_json(
            &m,
            "t.doc",
            &serde_json::Value::Object(many).to_string(),
            limits,
        );
        assert_eq!(r.fields.len(), 3);
        assert!(r.fields_truncated);
        assert!(r.violations.is_empty());
    }

    #[test]
    fn a_deep_branch_is_skipped_and_its_siblings_are_still_scanned() {
        let deep = "[".repeat(70) + &"]".repeat(70);
        let doc = format!(r#"{{"a": {deep}, "email": "alice@example.com"}}"#);
        let r = scan_json(&matrix(), "t.doc", &doc, ScanLimits::default());
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].category, "json_too_deep");
        assert!(
            r.fields
                .contains(&("t.doc.email".to_owned(), "contact.email".to_owned()))
        );
    }

    #[test]
    fn invalid_escapes_are_a_violation() {
        for doc in [
            r#"{"a": "\ud800"}"#,
            r#"{"a": "\uZZZZ"}"#,
            "{\"a\": \"\\x\"}",
        ] {
            let r = scan_json(&matrix(), "t.doc", doc, ScanLimits::default());
            assert_eq!(r.violations[0].category, "json_invalid", "{doc}");
        }
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(8, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(".{0,10}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn the_walker_never_panics_and_paths_start_at_the_root(doc in json_value()) {
            let text = doc.to_string();
            let result = scan_json(&Matrix::new(&[]).unwrap(), "t.c", &text, ScanLimits::default());
            for (path, _) in &result.fields {
                prop_assert!(path.starts_with("t.c"));
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in ".{0,200}") {
            let _ = scan_json(&Matrix::new(&[]).unwrap(), "t.c", &text, ScanLimits::default());
        }

        #[test]
        fn hostile_keys_never_reach_a_path(
            keys in prop::collection::vec("[^\\x00]{0,80}", 1..8),
            value in prop_oneof![Just("alice@example.com".to_owned()), Just("+44 20 7946 0958".to_owned())],
        ) {
            // Nest every key, with a detectable value at the bottom.
            let mut doc = serde_json::Value::String(value);
            for key in keys.iter().rev() {
                let mut map = serde_json::Map::new();
                map.insert(key.clone(), doc);
                doc = serde_json::Value::Object(map);
            }
            let result = scan_json(&Matrix::new(&[]).unwrap(), "t.c", &doc.to_string(), ScanLimits::default());
            prop_assert!(!result.fields.is_empty());
            for (path, _) in &result.fields {
                for segment in path.trim_start_matches("t.c").split('.').skip(1) {
                    let plain = segment == WILDCARD
                        || (segment.len() <= MAX_KEY_CHARS
                            && segment.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
                    prop_assert!(plain, "{segment:?} in {path:?}");
                }
            }
        }

        #[test]
        fn an_email_under_any_key_is_found(key in "[a-z]{1,8}", local in "[a-z]{1,8}") {
            let doc = serde_json::json!({ "wrap": [ { key.clone(): format!("{local}@example.com") } ] });
            let result = scan_json(&Matrix::new(&[]).unwrap(), "t.c", &doc.to_string(), ScanLimits::default());
            let path = format!("t.c.wrap[].{key}");
            let found = result.fields.iter().any(|(p, c)| *p == path && c == "contact.email");
            prop_assert!(found, "{:?}", result);
        }
    }
}
