//! Value detectors: what a string looks like (an e-mail address, a phone number, a card
//! number that passes the Luhn check, an IP address, ...), recognised without keeping it.

use std::net::IpAddr;
use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;

/// A compiled pattern, searched through `search`. A `Regex` shared by threads hands its search
/// caches out through a pool whose slow path takes a lock, which every thread but the first
/// to use it meets; here each thread searches through its own clone, which shares the
/// compiled program and keeps its own cache.
macro_rules! pattern {
    ($(#[$doc:meta])* $name:ident, $pattern:expr, $what:expr) => {
        $(#[$doc])*
        fn $name<T>(search: impl FnOnce(&Regex) -> T) -> T {
            static SHARED: OnceLock<Regex> = OnceLock::new();
            thread_local! {
                static OWN: Regex =
                    SHARED.get_or_init(|| Regex::new($pattern).expect($what)).clone();
            }
            OWN.with(search)
        }
    };
}

/// Detectors for string values.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, schemars::JsonSchema,
)]
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
    /// An IBAN: a country code, two check digits and up to 30 letters or digits (spaces every
    /// four allowed), passing the ISO 7064 mod-97 check.
    Iban,
}

/// A string as the detectors read it: trimmed, not empty, and at most 320 bytes (longer
/// strings are text, not a value of one of these shapes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'a>(&'a str);

impl<'a> Candidate<'a> {
    pub(crate) fn of(text: &'a str) -> Option<Self> {
        let text = text.trim();
        (!text.is_empty() && text.len() <= 320).then_some(Candidate(text))
    }
}

impl Detector {
    /// Whether `text`, as a whole, looks like what this detector finds.
    ///
    /// Where shapes overlap, the more specific one wins, so that one value is one thing:
    /// - an IPv4 or IPv6 address is never a phone number (`192.168.100.200` has a phone
    ///   number's digits and dots);
    /// - a date is never a phone number (`2024-01-15`, `20240115`);
    /// - a card number (13-19 digits passing the Luhn check) or a social security number's
    ///   shape (`123-45-6789`) is never a phone number;
    /// - a UUID is never a card number: a card number is 13-19 digits with spaces or dashes
    ///   only (and inside free text, digits joined to letters or dashes are part of a longer
    ///   token).
    pub fn matches(&self, text: &str) -> bool {
        Candidate::of(text).is_some_and(|candidate| self.matches_candidate(candidate))
    }

    /// [`Detector::matches`] on a value trimmed and measured once, for all detectors.
    pub(crate) fn matches_candidate(&self, Candidate(text): Candidate<'_>) -> bool {
        // Cheap shape checks first: most strings in a document are none of these.
        let first = text.as_bytes()[0];
        match self {
            Detector::Email => text.contains('@') && email_re(|re| re.is_match(text)),
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
                plausible
                    && digits <= 15
                    && phone_re(|re| re.is_match(text))
                    && !date_re(|re| re.is_match(text))
                    && text.parse::<IpAddr>().is_err()
                    && !is_card_number(text)
                    && !ssn_re(|re| re.is_match(text))
            }
            Detector::Ip => {
                (first.is_ascii_hexdigit() || first == b':') && text.parse::<IpAddr>().is_ok()
            }
            Detector::Card => first.is_ascii_digit() && is_card_number(text),
            Detector::Iban => first.is_ascii_alphabetic() && is_iban(text),
            Detector::Ssn => {
                text.len() == 11
                    && ssn_re(|re| {
                        re.captures(text).is_some_and(|c| {
                            let area = &c[1];
                            area != "000"
                                && area != "666"
                                && !area.starts_with('9')
                                && &c[2] != "00"
                                && &c[3] != "0000"
                        })
                    })
            }
        }
    }
}

impl Detector {
    /// Whether this detector finds something anywhere inside `text` (free text such as a
    /// message or a note): each candidate that the detector's shape picks out of the text must
    /// pass [`Detector::matches`] on its own, with the same precedence.
    pub fn found_in(&self, text: &str) -> bool {
        let search = |candidates: &Regex| self.found_among(text, candidates);
        match self {
            Detector::Email => text.contains('@') && email_in_re(search),
            Detector::Phone => phone_in_re(search),
            Detector::Ip => ip_in_re(search),
            Detector::Card => card_in_re(search),
            Detector::Ssn => ssn_in_re(search),
            Detector::Iban => iban_in_re(search),
        }
    }

    /// Whether one of the `candidates` that the detector's shape picks out of `text` passes.
    fn found_among(&self, text: &str, candidates: &Regex) -> bool {
        candidates.find_iter(text).any(|found| {
            let candidate = found.as_str().trim_end_matches(['.', ' ', '-', ')', ':']);
            // Not part of a longer token such as a UUID, an IBAN or a version string.
            let before = text[..found.start()].chars().next_back();
            let after = text[found.start() + candidate.len()..].chars().next();
            let joined =
                |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_');
            if *self != Detector::Email && (joined(before) || joined(after)) {
                return false;
            }
            // `Chrome/121.0.0.0` is a version, not an address.
            if *self == Detector::Ip && before == Some('/') {
                return false;
            }
            match self {
                // Inside text, a bare run of digits is as often an order or tracking number:
                // a phone number there is written with a prefix or separators.
                Detector::Phone => {
                    let written = candidate.starts_with(['+', '(', '0'])
                        || candidate.contains([' ', '-', '.', '(']);
                    written
                        && !date_start_re(|re| re.is_match(candidate))
                        && !is_card_number(candidate)
                        && !ssn_re(|re| re.is_match(candidate))
                        && phone_prefixes(candidate).any(|p| self.matches(p))
                }
                // An IPv6 address in running text has at least three groups: `::` alone, or
                // `a::b`, is punctuation or a word as often.
                Detector::Ip
                    if !candidate.contains('.')
                        && candidate.split(':').filter(|g| !g.is_empty()).count() < 3 =>
                {
                    false
                }
                _ => self.matches(candidate),
            }
        })
    }
}

/// `candidate`, then with its last group of digits dropped, up to three times: a phone number
/// followed by another number in running text is still found.
fn phone_prefixes(candidate: &str) -> impl Iterator<Item = &str> {
    let mut next = Some(candidate);
    std::iter::from_fn(move || {
        let current = next?;
        next = current
            .rfind([' ', '-', '.'])
            .map(|at| current[..at].trim_end_matches([' ', '-', '.']))
            .filter(|shorter| !shorter.is_empty());
        Some(current)
    })
    .take(4)
}

pattern!(
    /// A date at the start of a run of digits in text (`2024-07-10 14`): not a phone number.
    date_start_re,
    r"^(\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4})\b",
    "a valid date pattern"
);

pattern!(
    email_in_re,
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+",
    "a valid e-mail pattern"
);

pattern!(
    phone_in_re,
    r"[+(]?\d[\d .()-]{5,22}\d",
    "a valid phone pattern"
);

pattern!(
    ip_in_re,
    r"\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
    "a valid IP pattern"
);

pattern!(card_in_re, r"\d(?:[ -]?\d){12,18}", "a valid card pattern");

pattern!(ssn_in_re, r"\d{3}-\d{2}-\d{4}", "a valid SSN pattern");

pattern!(
    iban_in_re,
    r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b",
    "a valid IBAN pattern"
);

/// An IBAN, spaces allowed: country letters, check digits, 11 to 30 letters or digits, and
/// the mod-97 remainder of the rearranged number is 1.
fn is_iban(text: &str) -> bool {
    // Read without the spaces, and without copying: most strings fail on their first bytes.
    let compact = || text.bytes().filter(|b| *b != b' ');
    let length = compact().count();
    if !(15..=34).contains(&length)
        || !compact().take(2).all(|b| b.is_ascii_uppercase())
        || !compact().skip(2).take(2).all(|b| b.is_ascii_digit())
        || !compact()
            .skip(4)
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        return false;
    }
    let mut remainder = 0u32;
    for b in compact().skip(4).chain(compact().take(4)) {
        let value = if b.is_ascii_digit() {
            u32::from(b - b'0')
        } else {
            u32::from(b - b'A') + 10
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

pattern!(
    email_re,
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+$",
    "a valid e-mail pattern"
);

pattern!(
    phone_re,
    r"^(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}$",
    "a valid phone pattern"
);

pattern!(
    date_re,
    r"^(\d{4}[-./]\d{1,2}[-./]\d{1,2}|\d{1,2}[-./]\d{1,2}[-./]\d{2,4}|\d{8})$",
    "a valid date pattern"
);

pattern!(ssn_re, r"^(\d{3})-(\d{2})-(\d{4})$", "a valid SSN pattern");

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
