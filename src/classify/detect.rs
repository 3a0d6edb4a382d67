//! Value detectors: what a string looks like (an e-mail address, a phone number, a card
//! number that passes the Luhn check, an IP address, ...), recognised without keeping it.

use std::net::IpAddr;
use std::sync::OnceLock;

use regex::Regex;
use serde::Deserialize;

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
