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

#[test]
fn detector_precedence_on_near_misses() {
    // An IP address is never a phone number, however many digits it has.
    for ip in [
        "192.168.100.200",
        "203.0.113.7",
        "2001:db8::1",
        "10.200.300.4",
    ] {
        assert!(!Detector::Phone.matches(ip), "{ip} is not a phone number");
    }
    assert!(Detector::Ip.matches("192.168.100.200"));
    let matrix = matrix();
    assert_eq!(matrix.value_category("192.168.100.200"), Some("network.ip"));
    // A UUID is never a card number; a date is never a phone number.
    assert!(!Detector::Card.matches("4242424242424242-0000-0000-0000-000000000000"));
    assert_eq!(
        matrix.value_category("12345678-1234-1234-1234-123456789012"),
        None
    );
    for date in ["2024-01-15", "15/01/2024", "20240115"] {
        assert!(!Detector::Phone.matches(date), "{date}");
    }
    // IBANs pass the mod-97 check; one changed digit does not.
    for iban in [
        "GB82WEST12345698765432",
        "GB82 WEST 1234 5698 7654 32",
        "DE89370400440532013000",
    ] {
        assert!(Detector::Iban.matches(iban), "{iban}");
    }
    assert!(!Detector::Iban.matches("GB82WEST12345698765433"));
    assert_eq!(
        matrix.value_category("DE89370400440532013000"),
        Some("financial.account")
    );
}

#[test]
fn detectors_find_personal_data_inside_free_text_and_not_its_look_alikes() {
    let found = |text: &str| -> Vec<Detector> {
        [
            Detector::Email,
            Detector::Phone,
            Detector::Ip,
            Detector::Card,
            Detector::Ssn,
            Detector::Iban,
        ]
        .into_iter()
        .filter(|d| d.found_in(text))
        .collect()
    };
    assert_eq!(
        found("Please call me on +44 20 7946 0958 or write to jo.smith@example.org."),
        [Detector::Email, Detector::Phone]
    );
    assert_eq!(
        found("My number is (415) 555-0100, thanks"),
        [Detector::Phone]
    );
    assert_eq!(found("ring 020 7946 0958 after 5"), [Detector::Phone]);
    assert_eq!(found("logged in from 203.0.113.7 today"), [Detector::Ip]);
    assert_eq!(found("from 2001:db8::1"), [Detector::Ip]);
    assert_eq!(found("card 4242 4242 4242 4242 expired"), [Detector::Card]);
    assert_eq!(found("ssn 123-45-6789 on file"), [Detector::Ssn]);
    assert_eq!(
        found("pay to DE89 3704 0044 0532 0130 00 please"),
        [Detector::Iban]
    );
    for nothing in [
        "Order 103 has not arrived.",
        "Opened 2024-07-10 14:30 by the night shift",
        "Refund for order 201 please, about 12.50 GBP",
        "tracking 1Z999AA10123456784 and ref 20240115093012",
        "see the note:: below, build 1.2.3.4-beta",
        "session 3f2c9a1e-8b4d-4c6e-9f1a-2b3c4d5e6f70 ended",
        "version v10.2.3.4 released",
        "",
    ] {
        assert_eq!(found(nothing), [] as [Detector; 0], "{nothing}");
    }
}

#[test]
fn a_column_scan_keeps_each_field_once_over_its_documents() {
    let m = matrix();
    let docs = [
        r#"{"email": "a@example.org", "visitor": {"ip": "203.0.113.7"}}"#,
        r#"{"email": "b@example.org", "visitor": {"ip": "203.0.113.8", "phone": null}}"#,
        r#"{"visitor": {"note": "+44 20 7946 0958"}, "email": "c@example.org"}"#,
        r#"{"email": "#,
        r#"{"Email": "d@example.org"}"#,
    ];
    let mut scan = ColumnScan::new("t.doc", ScanLimits::default());
    let mut union = std::collections::BTreeSet::new();
    let mut invalid = 0;
    for doc in docs {
        let violations = scan.scan(&m, doc);
        invalid += violations
            .iter()
            .filter(|v| v.category == "json_invalid")
            .count();
        union.extend(scan_json(&m, "t.doc", doc, ScanLimits::default()).fields);
    }
    assert_eq!(invalid, 1, "the broken document, once");
    let fields: std::collections::BTreeSet<_> = scan.fields(&m).collect();
    assert_eq!(
        fields, union,
        "the same fields as each document scanned alone"
    );
    assert_eq!(
        fields
            .iter()
            .map(|(p, c)| format!("{p}:{c}"))
            .collect::<Vec<_>>(),
        [
            "t.doc.email:contact.email",
            "t.doc.visitor.ip:network.ip",
            "t.doc.visitor.note:contact.phone",
        ]
    );
    assert!(!scan.truncated());
    // Keys are remembered as met, the case of each as written.
    assert_eq!(
        scan.keys.len(),
        6,
        "{:?}",
        scan.keys.keys().collect::<Vec<_>>()
    );
}

#[test]
fn a_column_scan_remembers_keys_by_bytes_and_still_classifies_past_its_limit() {
    let m = matrix();
    let mut scan = ColumnScan::new("t.doc", ScanLimits::default());
    // Hostile documents: every key new, most of them as long as a remembered key may be.
    for i in 0..2000 {
        let doc = format!(
            r#"{{"{}{i:06}": 1, "{}": 2, "email": "a@example.org"}}"#,
            "k".repeat(MAX_KEY_CHARS - 6),
            "x".repeat(MAX_KEY_CHARS + 1)
        );
        assert!(scan.scan(&m, &doc).is_empty());
    }
    assert!(scan.key_bytes <= MAX_REMEMBERED_KEY_BYTES);
    assert!(scan.keys.keys().all(|k| k.len() <= MAX_KEY_CHARS));
    assert_eq!(
        scan.key_bytes,
        scan.keys.keys().map(|k| k.len()).sum::<usize>()
    );
    assert!(
        scan.key_bytes + MAX_KEY_CHARS > MAX_REMEMBERED_KEY_BYTES,
        "full"
    );
    // A key first met after the limit is classified all the same.
    let late = format!("{}_email", "k".repeat(MAX_KEY_CHARS - 6));
    assert!(scan.scan(&m, &format!(r#"{{"{late}": 1}}"#)).is_empty());
    assert!(!scan.keys.contains_key(late.as_str()));
    let fields: Vec<String> = scan.fields(&m).map(|(p, c)| format!("{p}:{c}")).collect();
    assert_eq!(
        fields,
        [
            "t.doc.email:contact.email".to_owned(),
            format!("t.doc.{late}:contact.email")
        ]
    );
}

#[test]
fn a_column_scan_keeps_at_most_max_fields_over_its_documents() {
    let m = matrix();
    let limits = ScanLimits {
        max_fields: 3,
        ..ScanLimits::default()
    };
    let mut scan = ColumnScan::new("t.doc", limits);
    for i in 0..5 {
        scan.scan(&m, &format!(r#"{{"k{i}": "p{i}@example.org"}}"#));
        assert_eq!(scan.truncated(), i >= 3, "after document {i}");
    }
    assert_eq!(scan.fields(&m).count(), 3);
}

#[test]
fn iban_detection_reads_spaces_without_copying_and_still_checks_the_sum() {
    assert!(Detector::Iban.matches("GB82 WEST 1234 5698 7654 32"));
    assert!(Detector::Iban.matches("GB82WEST12345698765432"));
    assert!(
        !Detector::Iban.matches("GB83 WEST 1234 5698 7654 32"),
        "mod-97 fails"
    );
    assert!(!Detector::Iban.matches("Springfield"));
    assert!(!Detector::Iban.matches("gb82 west 1234 5698 7654 32"));
}
