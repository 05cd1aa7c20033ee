//! The QMP parsers and /proc readers on replies and files captured from
//! QEMU 7.2.

use super::procfs::*;
use super::replies::*;
use super::*;

// Replies captured from QEMU 7.2 (Debian 1:7.2+dfsg-7+deb12u18) running
// the testbed's guest under TCG.
const MEASURING: &str = r#"{"return": {"status": "measuring", "sample-pages": 512, "mode": "page-sampling", "start-time": 9419, "calc-time": 1}, "id": 1}"#;
const MEASURED: &str = r#"{"return": {"status": "measured", "sample-pages": 4096, "dirty-rate": 14, "mode": "page-sampling", "start-time": 9448, "calc-time": 1}, "id": 1}"#;
const ACTIVE: &str = r#"{"return": {"expected-downtime": 300, "status": "active", "setup-time": 2, "total-time": 1002, "ram": {"total": 151855104, "postcopy-requests": 0, "dirty-sync-count": 1, "multifd-bytes": 0, "pages-per-second": 1030, "downtime-bytes": 0, "page-size": 4096, "remaining": 146706432, "postcopy-bytes": 0, "mbps": 33.818400000000004, "transferred": 4225155, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 4225155, "duplicate": 228, "dirty-pages-rate": 0, "skipped": 0, "normal-bytes": 4214784, "normal": 1029}}, "id": 1}"#;
const COMPLETED: &str = r#"{"return": {"status": "completed", "setup-time": 2, "downtime": 4, "total-time": 21113, "ram": {"total": 151855104, "postcopy-requests": 161, "dirty-sync-count": 2, "multifd-bytes": 0, "pages-per-second": 1030, "downtime-bytes": 0, "page-size": 4096, "remaining": 0, "postcopy-bytes": 36014827, "mbps": 47.364274927762779, "transferred": 124770860, "dirty-sync-missed-zero-copy": 0, "precopy-bytes": 88756033, "duplicate": 10855, "dirty-pages-rate": 0, "skipped": 0, "normal-bytes": 124428288, "normal": 30378}}, "id": 1}"#;
const FAILED: &str = r#"{"return": {"status": "failed", "error-desc": "Unable to write to socket: Bad file descriptor"}, "id": 1}"#;
const NEVER: &str = r#"{"return": {}, "id": 1}"#;
const UNKNOWN_COMMAND: &str = r#"{"id": 1, "error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#;

#[test]
fn dirty_rate_replies() {
    let m = reply("query-dirty-rate", MEASURING).unwrap();
    assert_eq!(DirtyRate::from_return(&m).unwrap(), DirtyRate::Measuring);
    let m = reply("query-dirty-rate", MEASURED).unwrap();
    let r = DirtyRate::from_return(&m).unwrap();
    assert_eq!(r, DirtyRate::Measured { mib_per_sec: 14 });
    assert_eq!(r.pages_per_sec(), Some(14.0 * 256.0));
    assert_eq!(DirtyRate::Measuring.pages_per_sec(), None);
    // Bad input is an error, not a panic.
    for bad in [
        json!({}),
        json!({"status": "measured"}),
        json!({"status": 3}),
        json!([1]),
    ] {
        assert!(DirtyRate::from_return(&bad).is_err(), "{bad}");
    }
    assert!(DirtyRate::from_return(&json!({"status": "weird"})).is_err());
}

#[test]
fn query_migrate_replies() {
    let a = MigrationInfo::from_return(&reply("query-migrate", ACTIVE).unwrap()).unwrap();
    assert!(a.is_running());
    let p = a.progress();
    assert_eq!(p.data_processed, 4225155);
    assert_eq!(p.data_remaining, 146706432);
    assert_eq!(p.data_total, 151855104);
    assert_eq!(p.mem_bps, 4227300); // 33.8184 Mbit/s
    assert_eq!(p.mem_iteration, 1);

    let c = MigrationInfo::from_return(&reply("query-migrate", COMPLETED).unwrap()).unwrap();
    assert!(!c.is_running());
    assert_eq!(
        c.stats(),
        MigrationStats {
            downtime_ms: Some(4),
            bytes: Some(124770860),
            time_ms: Some(21113),
            disk_bytes: None,
        }
    );
    let ram = c.ram.unwrap();
    assert_eq!(
        (ram.normal, ram.duplicate, ram.postcopy_requests),
        (30378, 10855, 161)
    );

    let f = MigrationInfo::from_return(&reply("query-migrate", FAILED).unwrap()).unwrap();
    assert_eq!(f.status, "failed");
    assert_eq!(
        f.error_desc.as_deref(),
        Some("Unable to write to socket: Bad file descriptor")
    );
    assert_eq!(f.stats(), MigrationStats::default());

    let n = MigrationInfo::from_return(&reply("query-migrate", NEVER).unwrap()).unwrap();
    assert_eq!(n.status, "");
    assert!(!n.is_running());

    assert!(MigrationInfo::from_return(&json!({"status": 5})).is_err());
    assert!(MigrationInfo::from_return(&json!("x")).is_err());
}

#[test]
fn errors_and_bad_replies() {
    assert_eq!(
        reply("nope", UNKNOWN_COMMAND).unwrap_err(),
        QmpError::Command {
            command: "nope".into(),
            class: "CommandNotFound".into(),
            desc: "The command nope has not been found".into()
        }
    );
    assert!(matches!(reply("x", "{"), Err(QmpError::Protocol(_))));
    assert!(matches!(
        reply("x", r#"{"id": 1}"#),
        Err(QmpError::Protocol(_))
    ));
    assert!(matches!(reply("x", "[]"), Err(QmpError::Protocol(_))));
}

#[test]
fn command_texts_and_windows() {
    assert_eq!(
        command_text("query-migrate", None),
        r#"{"execute":"query-migrate"}"#
    );
    let t = command_text(
        "calc-dirty-rate",
        Some(calc_dirty_rate_args(Duration::from_millis(2400))),
    );
    let v: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(v["arguments"]["calc-time"], 2);
    assert_eq!(v["arguments"]["sample-pages"], 4096);
    assert_eq!(calc_secs(Duration::ZERO), 1);
    assert_eq!(calc_secs(Duration::from_millis(1600)), 2);
}

#[test]
fn proc_parsing() {
    // A real /proc/TID/stat line of a QEMU 7.2 TCG vCPU thread (utime
    // 180, stime 11 ticks).
    let stat = "13210 (qemu-system-x86) R 13205 13205 20961 0 -1 138412224 4024 0 0 0 180 11 0 0 20 0 3 0 1234247 1402617856 25082 18446744073709551615 94071399145472 94071405005909 140726263550928 0 0 0 2147220087 4100 16451 0 0 0 -1 1 0 0 0 0 0 94071408118008 94071413322160 94071896096768 140726263552533 140726263552721 140726263552721 140726263554012 0";
    assert_eq!(stat_cpu_ticks(stat), Some(191));
    // A name with spaces and parentheses (threads named by QEMU's
    // debug-threads option look like this).
    assert_eq!(
        stat_cpu_ticks("7 (CPU 0/TCG) (x) R 1 2 3 4 5 6 7 8 9 10 5 6 0"),
        Some(11)
    );
    assert_eq!(stat_cpu_ticks("garbage"), None);
    assert_eq!(stat_cpu_ticks("1 (x) S 1"), None);
    // Lines of a real /proc/PID/maps of QEMU 7.2 running a 128 MiB guest
    // under TCG: the guest's RAM, then TCG's code buffer.
    let maps = "7f8127e00000-7f812fe00000 rw-p 00000000 00:00 0 \n\
                7f8138000000-7f8177fff000 rwxp 00000000 00:00 0 \n\
                55d0c0a00000-55d0c0b00000 r--p 00000000 fe:01 1234   /usr/bin/qemu-system-x86_64\n";
    assert_eq!(
        guest_ram_mapping(maps, 128 << 20),
        Some((0x7f8127e00000, 128 << 20))
    );
    // A 1 GiB guest does not take the (1 GiB - 4 KiB, rwx) code buffer.
    assert_eq!(guest_ram_mapping(maps, 1 << 30), None);
    assert_eq!(guest_ram_mapping("x", 1), None);
    assert_eq!(guest_ram_mapping("zz-10 rw-p 0 00:00 0", 16), None);
}

#[test]
fn counting_non_zero_pages() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("mem");
    // 8 pages: 0 and 5 have one byte set (at the start, at the end).
    let mut m = vec![0u8; 8 * 4096];
    m[0] = 1;
    m[5 * 4096 + 4095] = 0x80;
    std::fs::write(&f, &m).unwrap();
    let p = f.to_str().unwrap();
    assert_eq!(count_non_zero_pages(p, 0, 8 * 4096), Ok((2, false)));
    assert_eq!(count_non_zero_pages(p, 4096, 4 * 4096), Ok((0, false)));
    // Past the end: an error, not a panic.
    assert!(count_non_zero_pages(p, 0, 9 * 4096).is_err());
    assert!(count_non_zero_pages("/nonexistent", 0, 4096).is_err());
}

#[test]
fn vm_names_are_not_paths() {
    let q = Qmp::new("/nonexistent");
    for bad in ["", "../x", "a/b", ".hidden"] {
        assert!(q.socket(bad).is_err(), "{bad}");
    }
    let e = q.socket("vm9").unwrap_err().to_string();
    assert!(e.contains("vm9"), "{e}");
}

#[tokio::test]
async fn an_event_ahead_of_the_greeting_is_kept_and_skipped() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        w.write_all(b"{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 0}}\n{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(r).lines();
        let cmd = lines.next_line().await.unwrap().unwrap();
        assert!(cmd.contains("qmp_capabilities"), "{cmd}");
        w.write_all(b"{\"return\": {}, \"id\": 1}\n").await.unwrap();
    });
    let c = super::client::QmpClient::connect(&path).await.unwrap();
    assert_eq!(c.events.len(), 1);
    assert_eq!(c.events[0]["event"], "RESUME");
    server.await.unwrap();
}
