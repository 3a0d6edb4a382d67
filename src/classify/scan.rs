//! The nested-JSON PII scan: a walker driven by the parser, one small frame per level, that
//! records paths and categories and never the values found.

use std::collections::BTreeSet;

use super::Matrix;

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
    let mut scan = ColumnScan::new(root, limits);
    let violations = scan.scan(matrix, json);
    ScanResult {
        fields: scan.fields(matrix).collect(),
        fields_truncated: scan.truncated(),
        violations,
    }
}

/// The scan of one column's documents, one after another (an extraction's table read): the
/// fields found so far, each kept once, and the categories of the keys met, remembered.
///
/// Documents of one column repeat their keys and their fields from row to row. A key met
/// before is classified by one lookup instead of the key patterns, and a field found before
/// costs a comparison instead of a new path. What is remembered is bounded by bytes: keys of
/// at most [`MAX_KEY_CHARS`] bytes, [`MAX_REMEMBERED_KEY_BYTES`] in all (a column whose keys
/// never repeat stops remembering, and is classified as before), and at most
/// [`ScanLimits::max_fields`] fields.
#[derive(Debug)]
pub struct ColumnScan {
    root: String,
    limits: ScanLimits,
    /// Key → the index of its category, for keys met before. The hash is seeded per
    /// process, and a few times faster than the standard one on keys of a few bytes.
    pub(super) keys:
        std::collections::HashMap<Box<str>, Option<usize>, foldhash::fast::RandomState>,
    pub(super) key_bytes: usize,
    /// Fields found: the path below the root, and the index of the category.
    fields: Vec<(String, usize)>,
    truncated: bool,
    /// The path below the root and the frames of the document being scanned; kept so that
    /// their buffers are reused.
    path: String,
    frames: Vec<usize>,
}

/// The most bytes of keys a [`ColumnScan`] remembers.
pub const MAX_REMEMBERED_KEY_BYTES: usize = 16 * 1024;

impl ColumnScan {
    /// A scan of the documents of the column `root` names (`events.payload`).
    pub fn new(root: &str, limits: ScanLimits) -> Self {
        ColumnScan {
            root: root.to_owned(),
            limits,
            keys: Default::default(),
            key_bytes: 0,
            fields: Vec::new(),
            truncated: false,
            path: String::new(),
            frames: Vec::new(),
        }
    }

    /// Scans one document (JSON text): its fields join those found before. Returns what
    /// stopped the document from being scanned completely, each category once.
    pub fn scan(&mut self, matrix: &Matrix, json: &str) -> Vec<ScanViolation> {
        use serde::de::DeserializeSeed;
        self.path.clear();
        self.frames.clear();
        let mut walk = Walk {
            matrix,
            scan: self,
            nodes: 0,
            stopped: None,
            violations: Vec::new(),
        };
        if json.len() > walk.scan.limits.max_bytes {
            let detail = format!(
                "{}: document of {} bytes is above the {}-byte scan limit",
                walk.scan.root,
                json.len(),
                walk.scan.limits.max_bytes
            );
            walk.violation("json_too_large", detail);
            return walk.violations;
        }
        // serde_json refuses nesting deeper than 128 without recursing further, so parsing
        // itself cannot overflow the stack; the walker stops descending at `max_depth` before
        // that.
        let mut parser = serde_json::Deserializer::from_str(json);
        let outcome = Node(&mut walk)
            .deserialize(&mut parser)
            .and_then(|_| parser.end());
        if let Err(e) = outcome {
            match walk.stopped.take() {
                Some(violation) => walk.violations.push(violation),
                None => {
                    let category = if e.to_string().contains("recursion limit") {
                        "json_too_deep"
                    } else {
                        "json_invalid"
                    };
                    let detail = format!("{}: {}", walk.scan.root, e.classify_text());
                    walk.violation(category, detail);
                }
            }
        }
        walk.violations
    }

    /// The fields found so far, as (path, category).
    pub fn fields<'s>(&'s self, matrix: &'s Matrix) -> impl Iterator<Item = (String, String)> + 's {
        self.fields.iter().map(|(path, category)| {
            (
                format!("{}{path}", self.root),
                matrix.category_name(*category).to_owned(),
            )
        })
    }

    /// Whether more distinct fields were found than [`ScanLimits::max_fields`].
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// The category index of `key`: remembered, or matched and remembered.
    fn key_category(&mut self, matrix: &Matrix, key: &str) -> Option<usize> {
        if let Some(known) = self.keys.get(key) {
            return *known;
        }
        let category = matrix.key_category_index(key);
        if key.len() <= MAX_KEY_CHARS && self.key_bytes + key.len() <= MAX_REMEMBERED_KEY_BYTES {
            self.key_bytes += key.len();
            self.keys.insert(key.into(), category);
        }
        category
    }
}

/// The walker's state over one document.
struct Walk<'s, 'm> {
    matrix: &'m Matrix,
    /// The column's scan: its path (`.segment` and `[]` parts, built in place, so that a key
    /// costs no allocation unless something new is found under it), one frame per enclosing
    /// container (the length of the path before its part), and what was found.
    scan: &'s mut ColumnScan,
    nodes: usize,
    /// The violation that ended the scan early, if one did.
    stopped: Option<ScanViolation>,
    violations: Vec<ScanViolation>,
}

impl Walk<'_, '_> {
    fn path(&self) -> String {
        format!("{}{}", self.scan.root, self.scan.path)
    }

    /// Leaves the innermost container's part of the path.
    fn pop(&mut self) {
        if let Some(len) = self.scan.frames.pop() {
            self.scan.path.truncate(len);
        }
    }

    fn field(&mut self, category: usize) {
        let scan = &mut *self.scan;
        if scan
            .fields
            .iter()
            .any(|(path, c)| *c == category && *path == scan.path)
        {
            return;
        }
        if scan.fields.len() >= scan.limits.max_fields {
            scan.truncated = true;
        } else {
            scan.fields.push((scan.path.clone(), category));
        }
    }

    /// Records a violation once per category and document.
    fn violation(&mut self, category: &'static str, detail: String) {
        if !self.violations.iter().any(|v| v.category == category) {
            self.violations.push(ScanViolation { category, detail });
        }
    }

    /// Counts one visited value; past the node limit, ends the scan.
    fn tick<E: serde::de::Error>(&mut self) -> Result<(), E> {
        self.nodes += 1;
        if self.nodes > self.scan.limits.max_nodes {
            self.stopped = Some(ScanViolation {
                category: "json_too_many_nodes",
                detail: format!(
                    "{}: more than {} values; the rest of the document was not scanned",
                    self.scan.root, self.scan.limits.max_nodes
                ),
            });
            return Err(E::custom("node limit"));
        }
        Ok(())
    }

    /// Whether a container at the current position may be entered.
    fn may_enter(&mut self) -> bool {
        if self.scan.frames.len() < self.scan.limits.max_depth {
            return true;
        }
        let detail = format!(
            "{}: nesting deeper than {} levels was not scanned",
            self.path(),
            self.scan.limits.max_depth
        );
        self.violation("json_too_deep", detail);
        false
    }
}

/// One JSON value at the walker's current position. Its output is whether the value was null.
struct Node<'w, 's, 'm>(&'w mut Walk<'s, 'm>);

impl<'de> serde::de::DeserializeSeed<'de> for Node<'_, '_, '_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Node<'_, '_, '_> {
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
        if let Some(category) = self.0.matrix.value_category_index(text) {
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
        walk.scan.frames.push(walk.scan.path.len());
        walk.scan.path.push_str("[]");
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
            let mark = walk.scan.path.len();
            let Some(key) = entries.next_key_seed(KeySeed(walk.matrix, &mut *walk.scan))? else {
                break;
            };
            walk.scan.frames.push(mark);
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
struct Key {
    category: Option<usize>,
    control_chars: bool,
}

/// Reads a key: classifies it, and appends its path part (`.segment`) to the path.
struct KeySeed<'a, 's>(&'a Matrix, &'s mut ColumnScan);

impl<'de> serde::de::DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = Key;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeySeed<'_, '_> {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key, E> {
        let control_chars = key.chars().any(char::is_control);
        let scan = self.1;
        scan.path.push('.');
        push_segment(&mut scan.path, key);
        Ok(Key {
            category: if control_chars {
                None
            } else {
                scan.key_category(self.0, key)
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
