//! The cost of the nested-JSON scan alone, for counting instructions with callgrind, which
//! repeat exactly from run to run (a shared machine's timings do not):
//!
//!   cargo build --release --example scan_cost
//!   valgrind --tool=callgrind --callgrind-out-file=/dev/null target/release/examples/scan_cost
//!
//! Scans `DSR_SCAN_DOCS` (default 20,000) event payloads shaped like the benchmark's and the
//! demo's: a page, a session, and every fourth one a nested contact with an e-mail address and
//! a phone number, and a device. Prints the fields found, so the work cannot be optimised away.

use dsr_connector::classify::{Matrix, ScanLimits, scan_json};

fn main() {
    let docs: usize = std::env::var("DSR_SCAN_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let matrix = Matrix::new(&[]).expect("the built-in matrix");
    let mut found = 0usize;
    for i in 0..docs {
        let doc = if i % 4 == 0 {
            format!(
                r#"{{"page": "/p/{}", "session": "{:032x}", "cart": {{"items": {}}}, "contact": {{"email": "user{i}@example.com", "phone": "+44 20 7946 {:04}"}}, "device": {{"os": "macOS", "ip": "203.0.113.{}"}}}}"#,
                i % 300,
                i * 7919,
                i % 5,
                i % 10000,
                i % 250
            )
        } else {
            format!(
                r#"{{"page": "/p/{}", "session": "{:032x}", "referrer": "https://example.com/{}", "tags": ["a", "b", "c"]}}"#,
                i % 300,
                i * 7919,
                i % 97
            )
        };
        found += scan_json(&matrix, "events.payload", &doc, ScanLimits::default())
            .fields
            .len();
    }
    println!("{docs} documents, {found} fields found");
}
