//! Column names as people write them: split into words (snake_case, kebab-case, camelCase,
//! digits kept with the word before them), with common abbreviations written out, so that a
//! category's key patterns can match the word that says what a column holds
//! (`shipping_address`, `billingAddressLine2`, `home_tel`, `ip_addr`).
//!
//! A compound names what its last word names (`shipping_address` is an address, `phone_model`
//! is a model), so patterns are tried on the name's endings, longest first: `ip_addr` is an
//! IP address before it is an address.

use super::Matrix;

/// Abbreviations and run-together words, written out.
const ABBREVIATIONS: &[(&str, &[&str])] = &[
    ("addr", &["address"]),
    ("adr", &["address"]),
    ("tel", &["phone"]),
    ("telno", &["phone"]),
    ("msisdn", &["phone"]),
    ("mob", &["mobile"]),
    ("fname", &["first", "name"]),
    ("lname", &["last", "name"]),
    ("mail", &["email"]),
    ("acct", &["account"]),
    ("num", &["number"]),
    ("nbr", &["number"]),
    ("no", &["number"]),
    ("bday", &["birthday"]),
    ("zipcode", &["zip"]),
];

/// Words before `name` that make it a person's name; any other (`product_name`, `file_name`)
/// names a thing.
const PERSON_QUALIFIERS: &[&str] = &[
    "full",
    "first",
    "last",
    "given",
    "family",
    "middle",
    "display",
    "nick",
    "maiden",
    "legal",
    "preferred",
    "contact",
    "customer",
    "client",
    "user",
    "member",
    "account",
    "holder",
    "card",
    "billing",
    "shipping",
    "recipient",
    "sender",
    "owner",
    "person",
    "patient",
    "employee",
    "emergency",
    "parent",
    "guardian",
    "spouse",
    "beneficiary",
    "requester",
    "author",
];

/// Words before `address` that make it something other than a postal address.
const NOT_POSTAL: &[&str] = &[
    "mac", "web", "url", "wallet", "server", "host", "memory", "base", "return",
];

/// Last words of a text column's name that say it holds free text written by or about a
/// person (the `free_text` category has no key pattern, so that JSON keys are not matched by
/// these words alone).
pub const FREE_TEXT_WORDS: &[&str] = &[
    "note", "notes", "comment", "comments", "message", "messages", "remark", "remarks", "memo",
    "feedback", "body",
];

/// The words of a name, lower-cased, abbreviations written out.
pub fn words(name: &str) -> Vec<String> {
    let mut raw: Vec<String> = Vec::new();
    let mut current = String::new();
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                raw.push(std::mem::take(&mut current));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let next = chars.get(i + 1);
        // camelCase: a capital after a small letter or a digit, or the last capital of a run
        // followed by a small letter (`IPAddress` is `IP`, `Address`).
        let boundary = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_uppercase() && next.is_some_and(|n| n.is_lowercase()))
            });
        if boundary && !current.is_empty() {
            raw.push(std::mem::take(&mut current));
        }
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        raw.push(current);
    }
    let mut words = Vec::with_capacity(raw.len());
    for word in raw {
        // A word of digits alone belongs to the word before it (`line_2` is `line2`).
        if word.bytes().all(|b| b.is_ascii_digit())
            && let Some(last) = words.last_mut()
        {
            let last: &mut String = last;
            last.push_str(&word);
            continue;
        }
        match ABBREVIATIONS.iter().find(|(short, _)| *short == word) {
            Some((_, long)) => words.extend(long.iter().map(|w| (*w).to_owned())),
            None => words.push(word),
        }
    }
    words
}

/// How a name matched a category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameMatch {
    /// The whole name matches a key pattern.
    Whole,
    /// The name's ending, as these words, matches.
    Words(String),
}

impl Matrix {
    /// The category a column's name says it holds: the whole name, or else its endings as
    /// words, longest first, by the key patterns.
    pub fn name_category(&self, name: &str) -> Option<(&str, NameMatch)> {
        if let Some(category) = self.key_category(name) {
            return Some((category, NameMatch::Whole));
        }
        let words = words(name);
        for start in 0..words.len() {
            let ending = words[start..].join("_");
            let Some(category) = self.key_category(&ending) else {
                continue;
            };
            let before = start.checked_sub(1).map(|i| words[i].as_str());
            let head = words[start].as_str();
            let thing = match (head, before) {
                ("name", Some(before)) => !PERSON_QUALIFIERS.contains(&before),
                ("address", Some(before)) => NOT_POSTAL.contains(&before),
                _ => false,
            };
            if !thing {
                return Some((category, NameMatch::Words(ending)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_into_words_as_people_write_them() {
        assert_eq!(words("shipping_address"), ["shipping", "address"]);
        assert_eq!(
            words("billingAddressLine2"),
            ["billing", "address", "line2"]
        );
        assert_eq!(words("address_line_2"), ["address", "line2"]);
        assert_eq!(words("IPAddress"), ["ip", "address"]);
        assert_eq!(words("userID"), ["user", "id"]);
        assert_eq!(words("home_tel"), ["home", "phone"]);
        assert_eq!(words("fname"), ["first", "name"]);
        assert_eq!(words("ip-addr"), ["ip", "address"]);
        assert_eq!(words("passport_no"), ["passport", "number"]);
    }

    #[test]
    fn composite_names_find_their_category_and_look_alikes_do_not() {
        let matrix = Matrix::new(&[]).unwrap();
        let category = |name: &str| matrix.name_category(name).map(|(c, _)| c.to_owned());
        for (name, expected) in [
            ("shipping_address", "address"),
            ("billingAddressLine2", "address"),
            ("home_tel", "contact.phone"),
            ("homePhone", "contact.phone"),
            ("contact_email", "contact.email"),
            ("ip_addr", "network.ip"),
            ("last_login_ip", "network.ip"),
            ("dob", "birth_date"),
            ("dateOfBirth", "birth_date"),
            ("fname", "name"),
            ("customer_name", "name"),
            ("billing_city", "address"),
            ("postal_code", "address"),
            ("passport_no", "government_id"),
            ("email", "contact.email"),
        ] {
            assert_eq!(category(name).as_deref(), Some(expected), "{name}");
        }
        for name in [
            "ip_rule_id",
            "phone_model",
            "address_count",
            "product_name",
            "file_name",
            "mac_address",
            "email_verified",
            "created_at",
        ] {
            assert_eq!(category(name), None, "{name}");
        }
        assert_eq!(
            matrix.name_category("shipping_address"),
            Some(("address", NameMatch::Words("address".into())))
        );
        assert_eq!(
            matrix.name_category("email"),
            Some(("contact.email", NameMatch::Whole))
        );
    }
}
