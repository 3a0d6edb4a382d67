//! A log written in segments: verified as one chain, and a million records across
//! rotations verified in bounded memory.

use super::*;

/// The served log closes a segment at `segment_bytes`: calls through the server fill several,
/// `audit verify` checks the chain across them, and a segment removed from the middle is
/// reported by the records it held.
#[tokio::test]
async fn the_log_is_written_in_segments_that_verify_as_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    let text = audited_text(&path, "").replace(
        "replica = \"replica-test\"\n",
        "replica = \"replica-test\"\nsegment_bytes = 4096\n",
    );
    let server = TestServer::start(config(&text)).await;
    let mut client = server.client().await;
    for n in 0..12 {
        let mut call = request("email", "alice@example.com");
        call.request_id = format!("dsr-segments-{n}");
        let x = extract(&mut client, call).await;
        assert_eq!(x.code(), Code::Ok, "{}", x.message());
    }
    server.stop().await.unwrap();
    let closed = dsr_connector::records::appender::closed_segments(&path).unwrap();
    assert!(closed.len() >= 3, "{closed:?}");
    let out = verify(&path);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        said.contains(&format!("in {} segments", closed.len() + 1)),
        "{said}"
    );
    // No value in any segment.
    for file in closed.iter().chain([&path]) {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(!text.contains("alice"), "{}", file.display());
    }

    std::fs::remove_file(&closed[1]).unwrap();
    let out = verify(&path);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(said.contains("are missing before this file"), "{said}");
    let next = closed[2].file_name().unwrap().to_string_lossy();
    assert!(said.contains(next.as_ref()), "{said}");
}

/// Not part of the suite (it writes about 700 MB): a million records through the service's
/// log in 64 MiB segments, then `audit verify` of all of them, with its time and peak RSS.
/// Run it with `cargo test --release --test audit -- --ignored --nocapture a_million`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn a_million_records_across_rotations_verify_in_bounded_memory() {
    use dsr_connector::records::appender::Segments;
    use dsr_connector::records::audit::AuditLog;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("audit.log");
    let key = demo::audit_key(SUBJECT_KEY);
    let segments = Segments {
        max_bytes: 64 * 1024 * 1024,
        max_age: None,
        retention: None,
    };
    let log = AuditLog::open_segmented(&path, key.as_bytes(), "replica-long", segments).unwrap();
    let started = std::time::Instant::now();
    append_bulk(&log, 0..1_000_000, 4_000).await;
    drop(log);
    let written = started.elapsed();
    let closed = dsr_connector::records::appender::closed_segments(&path).unwrap();
    let bytes: u64 = closed
        .iter()
        .chain([&path])
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    let verified = measured_verify(&path, &key);
    println!(
        "1,000,000 records, {} segments, {} MB, written in {:.1} s; audit verify: {:.2} s, \
         peak RSS {} KiB: {}",
        closed.len() + 1,
        bytes / 1_000_000,
        written.as_secs_f64(),
        verified.secs,
        verified.peak_kib,
        verified.said
    );
    assert!(verified.ok, "{verified:?}");
    assert!(
        verified
            .said
            .contains(&format!("ok ({} records", 1_000_000 + closed.len())),
        "{verified:?}"
    );
}
