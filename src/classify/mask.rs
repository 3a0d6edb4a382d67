//! Masking personal data inside a JSON document in place: what the scan finds (a value under a
//! key that a category names, a string that a detector recognises), a string or key equal to
//! the subject's identity, and a key that a detector recognises, is replaced; every other byte
//! of the document is kept as it was.
//!
//! The walker reads the document level by level: each container's entries come from the parser
//! as raw slices of the original text, so an edit is a byte range and a replacement, and the
//! document is rebuilt once from the original and the edits. Memory is the edits and one frame
//! per level; the same limits as the scan apply, and a document that cannot be walked
//! completely is refused rather than half masked.

use std::borrow::Cow;

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{Matrix, ScanLimits, ScanViolation};

/// What a masked value (or key) becomes.
pub enum Replacement<'a> {
    /// JSON `null` (a key becomes the redaction text).
    Null(&'a str),
    /// The redaction text, as a JSON string.
    Redact(&'a str),
    /// A keyed pseudonym of the value's text (a string's content, or another value's JSON), as
    /// a JSON string; the function returns 32 hex digits.
    Pseudonym(&'a (dyn Fn(&str) -> String + Sync)),
}

/// Masks the personal data of one kind of document.
pub struct JsonMasker<'a> {
    pub matrix: &'a Matrix,
    /// The subject's identity value: any string or key equal to it is masked.
    pub identity: &'a str,
    pub replacement: Replacement<'a>,
    pub limits: ScanLimits,
    /// Checking a masked document rather than masking one: a pseudonym-shaped value under a
    /// personal key counts as masked (when masking, it is pseudonymised like any other, since
    /// a real token or hash has that shape too).
    pub verifying: bool,
}

/// One replaced byte range of the original document.
struct Edit {
    start: usize,
    end: usize,
    text: String,
}

impl JsonMasker<'_> {
    /// The document with its personal data masked, or `None` when nothing in it needed masking
    /// (a masked document masks to nothing more). A document the walker cannot read completely
    /// (too large, too deep, too many values, not JSON) is an error that names why, with no
    /// value.
    pub fn mask(&self, json: &str) -> Result<Option<String>, ScanViolation> {
        if json.len() > self.limits.max_bytes {
            return Err(ScanViolation {
                category: "json_too_large",
                detail: format!(
                    "a document of {} bytes is above the {}-byte limit",
                    json.len(),
                    self.limits.max_bytes
                ),
            });
        }
        let mut walk = Walk {
            masker: self,
            original: json,
            edits: Vec::new(),
            nodes: 0,
            stopped: None,
        };
        let root: &RawValue = serde_json::from_str(json).map_err(|e| ScanViolation {
            category: "json_invalid",
            detail: format!("not valid JSON at line {}, column {}", e.line(), e.column()),
        })?;
        walk.value(root.get(), 0, false)?;
        if walk.edits.is_empty() {
            return Ok(None);
        }
        walk.edits.sort_by_key(|e| e.start);
        let mut out = String::with_capacity(json.len());
        let mut at = 0;
        for edit in &walk.edits {
            out.push_str(&json[at..edit.start]);
            out.push_str(&edit.text);
            at = edit.end;
        }
        out.push_str(&json[at..]);
        Ok(Some(out))
    }

    /// Whether a value under a personal key is already what this masking makes of it.
    fn already_masked(&self, raw: &str) -> bool {
        if raw == "null" {
            return true;
        }
        let Ok(text) = serde_json::from_str::<Cow<str>>(raw) else {
            return false;
        };
        match self.replacement {
            Replacement::Null(_) => false,
            Replacement::Redact(redaction) => text == redaction,
            Replacement::Pseudonym(_) => self.verifying && is_token(&text),
        }
    }

    /// The replacement of a value, as JSON. `text` is a string value's content.
    fn replace_value(&self, raw: &str, text: Option<&str>) -> String {
        match self.replacement {
            Replacement::Null(_) => "null".to_owned(),
            Replacement::Redact(redaction) => json_string(redaction),
            Replacement::Pseudonym(token) => json_string(&token(text.unwrap_or(raw))),
        }
    }

    /// The replacement of the key at `position` of its object (from 1), as JSON. The
    /// position keeps masked keys unique within the object, whatever keys an earlier masking
    /// left there (each stands at a position of its own).
    fn replace_key(&self, key: &str, position: usize) -> String {
        match self.replacement {
            Replacement::Pseudonym(token) => json_string(&token(key)),
            Replacement::Null(redaction) | Replacement::Redact(redaction) => {
                json_string(&format!("{redaction}#{position}"))
            }
        }
    }

    /// Whether a string (a value or a key) is personal data by itself.
    /// Whether a string (a value or a key) is, or holds, personal data: the identity, inside
    /// or whole; something a detector recognises, whole or inside free text.
    fn personal_text(&self, text: &str) -> bool {
        if self.masked_text(text) {
            return false;
        }
        (!self.identity.is_empty() && text.contains(self.identity))
            || self.matrix.value_category(text).is_some()
            || !self.matrix.categories_in_text(text).is_empty()
    }

    /// Whether a string is what masking writes.
    fn masked_text(&self, text: &str) -> bool {
        match self.replacement {
            Replacement::Null(redaction) | Replacement::Redact(redaction) => {
                text.strip_prefix(redaction).is_some_and(|rest| {
                    rest.is_empty()
                        || rest
                            .strip_prefix('#')
                            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                })
            }
            // A key that is a token was masked already (keys are pseudonymised whole).
            Replacement::Pseudonym(_) => is_token(text),
        }
    }
}

/// Whether JSON number `raw` is the number `identity` spells (`1001`, `1001.0` and `1.001e3`
/// are one number); an identity that is not a number is never equal to one. Integers are
/// compared exactly, whatever their size.
fn same_number(raw: &str, identity: &str) -> bool {
    let identity = identity.trim();
    if identity.is_empty() {
        return false;
    }
    if raw == identity {
        return true;
    }
    if let (Ok(a), Ok(b)) = (raw.parse::<i128>(), identity.parse::<i128>()) {
        return a == b;
    }
    match (raw.parse::<f64>(), identity.parse::<f64>()) {
        // Beyond 2^53 a double stands for several integers: only exact text matched there.
        (Ok(a), Ok(b)) => a.is_finite() && a == b && a.abs() < 9_007_199_254_740_992.0,
        _ => false,
    }
}

/// A pseudonym's shape: 32 lower-case hex digits.
fn is_token(text: &str) -> bool {
    text.len() == 32
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// One document's walk: the edits so far, and why it stopped if it did.
struct Walk<'m, 'a> {
    masker: &'m JsonMasker<'m>,
    original: &'a str,
    edits: Vec<Edit>,
    nodes: usize,
    stopped: Option<ScanViolation>,
}

impl<'a> Walk<'_, 'a> {
    /// Where a slice of the original document starts in it.
    fn offset(&self, part: &str) -> usize {
        part.as_ptr() as usize - self.original.as_ptr() as usize
    }

    fn edit(&mut self, part: &str, text: String) {
        let start = self.offset(part);
        self.edits.push(Edit {
            start,
            end: start + part.len(),
            text,
        });
    }

    /// One value, `raw` being its text in the original document; `personal_key` when the key
    /// it is under names a category.
    fn value(
        &mut self,
        raw: &'a str,
        depth: usize,
        personal_key: bool,
    ) -> Result<(), ScanViolation> {
        self.nodes += 1;
        if self.nodes > self.masker.limits.max_nodes {
            let detail = format!("more than {} values", self.masker.limits.max_nodes);
            return Err(ScanViolation {
                category: "json_too_many_nodes",
                detail,
            });
        }
        if personal_key {
            if !self.masker.already_masked(raw) {
                let text = serde_json::from_str::<Cow<str>>(raw).ok();
                let replacement = self.masker.replace_value(raw, text.as_deref());
                self.edit(raw, replacement);
            }
            return Ok(());
        }
        match raw.as_bytes().first() {
            Some(b'{' | b'[') => {
                if depth >= self.masker.limits.max_depth {
                    let detail = format!(
                        "nesting deeper than {} levels",
                        self.masker.limits.max_depth
                    );
                    return Err(ScanViolation {
                        category: "json_too_deep",
                        detail,
                    });
                }
                let mut parser = serde_json::Deserializer::from_str(raw);
                let walked = parser.deserialize_any(Container {
                    walk: &mut *self,
                    depth,
                    start: raw,
                });
                if let Err(e) = walked {
                    return Err(self.stopped.take().unwrap_or_else(|| ScanViolation {
                        category: "json_invalid",
                        detail: format!(
                            "not valid JSON at line {}, column {}",
                            e.line(),
                            e.column()
                        ),
                    }));
                }
                Ok(())
            }
            Some(b'"') => {
                let text: Cow<str> = serde_json::from_str(raw).map_err(|e| ScanViolation {
                    category: "json_invalid",
                    detail: format!("not a valid string ({})", e.column()),
                })?;
                if self.masker.personal_text(&text) {
                    let replacement = self.masker.replace_value(raw, Some(&text));
                    self.edit(raw, replacement);
                }
                Ok(())
            }
            // A number equal to a numeric identity (`{"customer": 1001}` of customer 1001).
            Some(b'-' | b'0'..=b'9') if same_number(raw, self.masker.identity) => {
                let replacement = self.masker.replace_value(raw, None);
                self.edit(raw, replacement);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// An object or an array at the walker's position: its entries are walked one by one.
struct Container<'w, 'm, 'a> {
    walk: &'w mut Walk<'m, 'a>,
    depth: usize,
    /// The container's text in the original document.
    start: &'a str,
}

impl<'a> Visitor<'a> for Container<'_, '_, 'a> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object or an array")
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut items: A) -> Result<(), A::Error> {
        while let Some(item) = items.next_element::<&'a RawValue>()? {
            self.walk
                .value(item.get(), self.depth + 1, false)
                .map_err(|v| stopped(self.walk, v))?;
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'a>>(self, mut entries: A) -> Result<(), A::Error> {
        let masker = self.walk.masker;
        // Where the next key's text begins: after the `{`, then after each value.
        let mut cursor = self.walk.offset(self.start) + 1;
        let mut position = 0;
        while let Some(key) = entries.next_key::<Cow<'a, str>>()? {
            position += 1;
            let value = entries.next_value::<&'a RawValue>()?.get();
            let value_at = self.walk.offset(value);
            if key.chars().any(char::is_control) {
                let violation = ScanViolation {
                    category: "json_control_chars_in_key",
                    detail: "a key holds control characters".into(),
                };
                return Err(stopped(self.walk, violation));
            }
            if masker.personal_text(&key) {
                // The key's text: from the first quote after the cursor to the last quote
                // before its value (only white space, `,` and `:` lie around it).
                let between = &self.walk.original[cursor..value_at];
                if let (Some(open), Some(close)) = (between.find('"'), between.rfind('"')) {
                    let text = masker.replace_key(&key, position);
                    let key_text = &self.walk.original[cursor + open..cursor + close + 1];
                    self.walk.edit(key_text, text);
                }
            }
            let personal_key = masker.matrix.key_category(&key).is_some();
            self.walk
                .value(value, self.depth + 1, personal_key)
                .map_err(|v| stopped(self.walk, v))?;
            cursor = value_at + value.len();
        }
        Ok(())
    }
}

/// Ends the parse of a container because the walk stopped, keeping why.
fn stopped<E: serde::de::Error>(walk: &mut Walk<'_, '_>, violation: ScanViolation) -> E {
    walk.stopped = Some(violation);
    E::custom("stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    const REDACTION: &str = "[redacted]";

    fn masker<'a>(matrix: &'a Matrix, replacement: Replacement<'a>) -> JsonMasker<'a> {
        JsonMasker {
            matrix,
            identity: "C-1001",
            replacement,
            limits: ScanLimits::default(),
            verifying: false,
        }
    }

    fn redact(json: &str) -> Option<String> {
        let matrix = Matrix::new(&[]).unwrap();
        masker(&matrix, Replacement::Redact(REDACTION))
            .mask(json)
            .unwrap()
    }

    #[test]
    fn personal_paths_are_masked_and_every_other_byte_is_kept() {
        let doc = r#"{ "kind" : "login",  "email":"alice@example.com", "n": 1.50,
            "geo": {"lat": 51.5, "lon": -0.1}, "client": {"ip_seen": "203.0.113.7", "ua": "x"},
            "tags": ["a", "+44 20 7946 0958", 3], "ref": "C-1001", "note": null,
            "said": "call me on +44 20 7946 0958 please", "about": "customer C-1001's order" }"#;
        let masked = redact(doc).expect("something to mask");
        assert_eq!(
            masked,
            r#"{ "kind" : "login",  "email":"[redacted]", "n": 1.50,
            "geo": "[redacted]", "client": {"ip_seen": "[redacted]", "ua": "x"},
            "tags": ["a", "[redacted]", 3], "ref": "[redacted]", "note": null,
            "said": "[redacted]", "about": "[redacted]" }"#
        );
        assert_eq!(
            redact(&masked),
            None,
            "a masked document masks to nothing more"
        );
        assert_eq!(
            redact(r#"{"kind": "login", "n": [1, 2, {"a": true}]}"#),
            None
        );
    }

    #[test]
    fn a_number_equal_to_a_numeric_identity_is_masked_and_no_other() {
        let matrix = Matrix::new(&[]).unwrap();
        let masker = JsonMasker {
            identity: "1001",
            ..masker(&matrix, Replacement::Redact(REDACTION))
        };
        let doc = r#"{"customer": 1001, "as_float": 1001.0, "exp": 1.001e3, "other": 1002,
            "qty": 1, "big": 10010, "neg": -1001, "list": [1001, 7], "text": "1001"}"#;
        let masked = masker.mask(doc).unwrap().expect("something to mask");
        assert_eq!(
            masked,
            r#"{"customer": "[redacted]", "as_float": "[redacted]", "exp": "[redacted]", "other": 1002,
            "qty": 1, "big": 10010, "neg": -1001, "list": ["[redacted]", 7], "text": "[redacted]"}"#
        );
        assert_eq!(masker.mask(&masked).unwrap(), None);
        // An identity that is no number matches no number; huge integers match exactly.
        assert!(!same_number("1001", "C-1001"));
        assert!(!same_number("1", ""));
        assert!(same_number(
            "123456789012345678901",
            "123456789012345678901"
        ));
        assert!(!same_number(
            "123456789012345678901",
            "123456789012345678902"
        ));
        assert!(!same_number("9007199254740993.0", "9007199254740992"));
    }

    #[test]
    fn keys_that_hold_personal_data_are_masked_and_stay_unique() {
        let doc = r#"{"alice@example.com": {"visits": 3}, "bob@example.org": {"visits": 4},
            "C-1001": 1, "plain": "x"}"#;
        let masked = redact(doc).unwrap();
        let value: serde_json::Value = serde_json::from_str(&masked).unwrap();
        assert_eq!(value["[redacted]#1"]["visits"], 3);
        assert_eq!(value["[redacted]#2"]["visits"], 4);
        assert_eq!(value["[redacted]#3"], 1);
        assert_eq!(value["plain"], "x");
        assert_eq!(redact(&masked), None);
        // A key masked by an earlier erasure keeps its place; a new one takes its own.
        let again = redact(r#"{"[redacted]#1": {"visits": 3}, "carol@example.net": 2}"#).unwrap();
        let value: serde_json::Value = serde_json::from_str(&again).unwrap();
        assert_eq!(value["[redacted]#1"]["visits"], 3);
        assert_eq!(value["[redacted]#2"], 2);
    }

    #[test]
    fn an_escaped_key_is_read_as_the_parser_reads_it() {
        let masked = redact(r#"{"e\u006dail": "x", "a\"b": "alice@example.com"}"#).unwrap();
        assert_eq!(
            masked,
            r#"{"e\u006dail": "[redacted]", "a\"b": "[redacted]"}"#
        );
    }

    #[test]
    fn pseudonyms_and_nulls() {
        let matrix = Matrix::new(&[]).unwrap();
        let token = |text: &str| format!("{:0>32}", text.len());
        let pseudonyms = masker(&matrix, Replacement::Pseudonym(&token));
        let masked = pseudonyms
            .mask(r#"{"email": "alice@example.com", "customer_id": 1001, "copy": "alice@example.com"}"#)
            .unwrap()
            .unwrap();
        let same = format!("{:0>32}", "alice@example.com".len());
        assert_eq!(
            masked,
            format!(
                r#"{{"email": "{same}", "customer_id": "{:0>32}", "copy": "{same}"}}"#,
                4
            )
        );
        // Masking again pseudonymises again (a real token has a pseudonym's shape too); a
        // check finds nothing left to mask.
        assert!(pseudonyms.mask(&masked).unwrap().is_some());
        let check = JsonMasker {
            verifying: true,
            ..masker(&matrix, Replacement::Pseudonym(&token))
        };
        assert_eq!(check.mask(&masked).unwrap(), None);
        let real_token = r#"{"session_token": "9f86d081884c7d659a2feaa0c55ad015"}"#;
        assert!(
            pseudonyms.mask(real_token).unwrap().is_some(),
            "a real token is masked"
        );

        let nulls = masker(&matrix, Replacement::Null(REDACTION));
        let masked = nulls
            .mask(r#"{"email": "alice@example.com", "alice@example.com": 1}"#)
            .unwrap()
            .unwrap();
        assert_eq!(masked, r#"{"email": null, "[redacted]#2": 1}"#);
        assert_eq!(nulls.mask(&masked).unwrap(), None);
    }

    #[test]
    fn a_document_that_cannot_be_walked_completely_is_refused() {
        let matrix = Matrix::new(&[]).unwrap();
        let mut m = masker(&matrix, Replacement::Redact(REDACTION));
        let deep = format!("{}{}", "[".repeat(70), "]".repeat(70));
        assert_eq!(m.mask(&deep).unwrap_err().category, "json_too_deep");
        assert_eq!(m.mask("{\"a\": ").unwrap_err().category, "json_invalid");
        assert_eq!(
            m.mask("{\"a\\u0001\": 1}").unwrap_err().category,
            "json_control_chars_in_key"
        );
        m.limits.max_nodes = 3;
        assert_eq!(
            m.mask("[1, 2, 3, 4]").unwrap_err().category,
            "json_too_many_nodes"
        );
        m.limits.max_bytes = 4;
        assert_eq!(m.mask("[1, 2]").unwrap_err().category, "json_too_large");
    }
}
