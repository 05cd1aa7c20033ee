//! The `solive` binary as an operator runs it: `ofp-print` (good and bad
//! input), and `serve` against a real Open vSwitch, stopped with SIGTERM.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{config_toml, eventually, Sandbox};

fn solive(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_solive"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn ofp_print_decodes_hex_with_spaces_and_as_json() {
    // ECHO_REQUEST, xid 0x2a, 2 bytes of data.
    let out = solive(&["ofp-print", "04 02 00 0a", "0000002a", "ab cd"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ECHO_REQUEST") && text.contains("0x2a"),
        "{text}"
    );

    let out = solive(&["ofp-print", "--json", "040200080000002a"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["xid"], 42, "{v}");
}

#[test]
fn ofp_print_reads_stdin() {
    let out = with_stdin(&["ofp-print", "-"], "04 14 00 08 00 00 00 07\n");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("BARRIER_REQUEST"));
}

#[test]
fn ofp_print_rejects_bad_input_with_a_clear_error() {
    for (input, needle) in [
        ("04 02 00 0x", "hex"),             // not hex
        ("040200", "not a whole"),          // shorter than a header
        ("0402000a0000002a", "need 10"),    // header says 10 bytes, 8 given
        ("040200080000002aff", "trailing"), // a byte after the message
        ("040e00090000000100", "flow_mod"), // FLOW_MOD with a 1-byte body
    ] {
        let out = solive(&["ofp-print", input]);
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(!out.status.success(), "{input} should fail");
        assert!(out.stdout.is_empty(), "{input}: nothing on stdout");
        assert!(
            err.starts_with("solive: ") && err.contains(needle),
            "{input}: {err}"
        );
    }
}

#[test]
fn serve_rejects_a_config_with_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("solive.toml");
    std::fs::write(
        &path,
        "[controller]\nopenflow_listen = \"127.0.0.1:0\"\nperiod = 5\n",
    )
    .unwrap();
    let out = solive(&["serve", "--config", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field") && err.contains("period"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_against_real_ovs_and_stops_cleanly_on_sigterm() {
    let _lock = support::lock();
    let sb = Sandbox::start();
    sb.add_bridge("br0");
    // The binary binds its ports itself: free ones, found just before (a
    // fixed port can be some other socket's ephemeral port at that moment).
    let (of, api) = (support::free_port(), support::free_port());
    let toml = config_toml(&[("h1", &sb.db, "br0", "br0", 100)], 200)
        .replace(
            "127.0.0.1:0\"\nperiod_ms",
            &format!("127.0.0.1:{of}\"\nperiod_ms"),
        )
        .replace(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"127.0.0.1:{api}\""),
        );
    let path = sb.path().join("solive.toml");
    std::fs::write(&path, toml).unwrap();
    // Its log goes to a file (a pipe nobody reads could fill and block it),
    // shown if the test fails.
    let log = sb.path().join("solive.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_solive"))
        .args(["serve", "--config", path.to_str().unwrap()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let _shown = ShowOnPanic(log.clone());
    let base = format!("http://127.0.0.1:{api}");
    eventually(20, "h1 connected through the binary", || async {
        let r = reqwest::get(format!("{base}/v1/hosts/h1"))
            .await
            .map_err(|e| e.to_string())?;
        let v: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
        if v["connected"] == true {
            Ok(())
        } else {
            Err(v.to_string())
        }
    })
    .await;
    let health: serde_json::Value = reqwest::get(format!("{base}/v1/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(
        sb.vsctl(&["get", "bridge", "br0", "fail_mode"]).trim(),
        "secure"
    );

    run_kill(child.id(), "TERM");
    let status =
        wait_timeout(&mut child, Duration::from_secs(20)).expect("solive exits after SIGTERM");
    assert!(status.success(), "{status}");
    // The bridge keeps forwarding after the controller is gone.
    let flows = sb.ofctl(&["dump-flows", "br0"]);
    assert!(flows.contains("actions=NORMAL"), "{flows}");
}

/// Prints a log file if the test is failing when this is dropped.
struct ShowOnPanic(std::path::PathBuf);

impl Drop for ShowOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- {} ----\n{}",
                self.0.display(),
                std::fs::read_to_string(&self.0).unwrap_or_default()
            );
        }
    }
}

fn run_kill(pid: u32, sig: &str) {
    Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
}

fn wait_timeout(child: &mut std::process::Child, t: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + t;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

/// Runs `solive ARGS` with `input` on stdin.
fn with_stdin(args: &[&str], input: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_solive"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn replay(args: &[&str], input: &str) -> std::process::Output {
    with_stdin(&[&["replay"], args].concat(), input)
}

#[test]
fn replay_prints_the_reservation_trace() {
    let input = "total_outgoing_bps,outgoing_bps,migration_bps\n100000000,70000000,0\n100000000,95000000,20000000\n";
    let out = replay(&["--urgency", "75", "--threshold", "10"], input);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "step,avail_pct,mig_pct,reserve_pct\n0,30.00,0.00,75.00\n1,5.00,20.00,20.00\n"
    );
}

#[test]
fn replay_rejects_bad_parameters_and_rows() {
    let out = replay(&["--urgency", "175", "--threshold", "10"], "x");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("urgency"));
    let out = replay(
        &["--urgency", "75", "--threshold", "10"],
        "total_outgoing_bps,outgoing_bps,migration_bps\n0,1,1\n",
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 2") && err.contains("capacity"), "{err}");
    assert!(out.stdout.is_empty());
}

fn plan_cmd(args: &[&str], input: &str) -> std::process::Output {
    with_stdin(&[&["plan"], args].concat(), input)
}

#[test]
fn plan_orders_the_papers_four_vms() {
    // Table I's NO, M, C, NI with their network shares on a 1 Gbit/s link;
    // extra fields such as cpu_pct are accepted.
    let input = r#"{"capacity_bps": 1e9, "vms": [
        {"name": "NI", "non_zero_pages": 276913, "dirty_pages_per_sec": 1118, "tx_bps": 1.8e6, "rx_bps": 1.452e8},
        {"name": "C", "non_zero_pages": 334725, "dirty_pages_per_sec": 3146, "tx_bps": 0, "rx_bps": 0, "cpu_pct": 99},
        {"name": "M", "non_zero_pages": 518280, "dirty_pages_per_sec": 21062, "tx_bps": 0, "rx_bps": 0},
        {"name": "NO", "non_zero_pages": 268694, "dirty_pages_per_sec": 103, "tx_bps": 6.74e8, "rx_bps": 2.8e6}]}"#;
    for mode in ["precopy", "postcopy"] {
        let out = plan_cmd(&["--mode", mode], input);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["order"],
            serde_json::json!(["NO", "M", "C", "NI"]),
            "{mode}: {v}"
        );
        assert_eq!(v["vms"][0]["group"], "outgoing");
        assert!(v["vms"][3]["reason"].as_str().unwrap().contains("receives"));
    }
}

#[test]
fn plan_rejects_bad_input() {
    for (input, needle) in [
        (
            r#"{"capacity_bps": 0, "vms": [{"name": "a", "non_zero_pages": 1, "dirty_pages_per_sec": 0, "tx_bps": 0, "rx_bps": 0}]}"#,
            "capacity_bps",
        ),
        (
            r#"{"capacity_bps": 1, "vms": [{"name": "a", "dirty_pages_per_sec": 0, "tx_bps": 0, "rx_bps": 0}]}"#,
            "non_zero_pages",
        ),
        (
            r#"{"capacity_bps": 1, "vms": [{"name": "a", "non_zero_pages": 1, "dirty_pages_per_sec": 0, "tx_bps": 0, "rx_bps": 0}, {"name": "a", "non_zero_pages": 1, "dirty_pages_per_sec": 0, "tx_bps": 0, "rx_bps": 0}]}"#,
            "twice",
        ),
        ("not json", "invalid plan input"),
    ] {
        let out = plan_cmd(&["--mode", "precopy"], input);
        assert!(!out.status.success(), "{input}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{input}: {err}");
    }
}

/// A 64 MiB guest with 4 MiB to send: each migration well under a second.
fn small_vm() -> solive::hypervisor::fake::FakeVm {
    solive::hypervisor::fake::FakeVm {
        memory_kib: 64 * 1024,
        non_zero_pages: 4 * 256,
        dirty_pages_per_sec: 0.0,
        cpu_pct: 1.0,
    }
}

/// `solive report`: an in-process solive on the fake cloud runs a post-copy
/// evacuation of two VMs; the binary draws it to a file, and an unknown
/// evacuation is an error on stderr with no file written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_draws_a_finished_evacuation_to_svg() {
    use solive::hypervisor::fake::FakeCloud;

    let cloud = FakeCloud::new();
    for name in ["web", "db"] {
        cloud.add_vm("h1", name, small_vm());
    }
    let hvs = cloud.host_hypervisors(&["h1", "h2"]);
    let solive = support::Solive::start_with_hypervisors(
        support::switchless_config(&["h1", "h2"]),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        hvs,
    )
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/evacuations", solive.api))
        .json(&serde_json::json!({"source": "h1", "destination": "h2", "mode": "postcopy", "urgency": 80}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_u64()
        .unwrap();
    eventually(30, "evacuation done", || async {
        let r = solive.get(&format!("/v1/evacuations/{id}")).await;
        if r["state"] == "done" {
            Ok(())
        } else {
            Err(r.to_string())
        }
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("evac.svg");
    let report = |id: u64, out: &std::path::Path| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_solive"))
            .args(["report", &id.to_string(), "--api", &solive.api, "--out"])
            .arg(out)
            .output()
    };
    let o = report(id, &out).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
    assert_eq!(svg.matches(r#"class="bar""#).count(), 2, "{svg}");
    assert!(svg.contains(r#"data-vm="web""#) && svg.contains(r#"data-vm="db""#));

    let missing = dir.path().join("none.svg");
    let o = report(id + 100, &missing).await.unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("404"), "{err}");
    assert!(!missing.exists());
    solive.stop().await;
}

/// `solive simulate` on a made-up site: the summary, a record shaped like a
/// real one (VMs with their routes, metrics, concurrency), its SVG, and the
/// site written back, which `--site` reads and simulates the same.
#[test]
fn simulate_a_site_writes_its_record_and_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let p = |f: &str| dir.path().join(f).to_str().unwrap().to_string();
    let out = solive(&[
        "simulate",
        "--generate",
        "4:2:40:5",
        "--deadline-s",
        "20",
        "--record",
        &p("r.json"),
        "--svg",
        &p("r.svg"),
        "--write-site",
        &p("site.json"),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("40 VMs from 4 sources to 2 destinations"),
        "{text}"
    );
    assert!(text.contains("deadline 20 s:"), "{text}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p("r.json")).unwrap()).unwrap();
    assert_eq!(r["vms"].as_array().unwrap().len(), 40);
    assert!(r["vms"][0]["started_ms"].is_u64() && r["vms"][0]["destination"].is_string());
    assert!(r["metrics"]["score_s"].is_f64());
    assert!(std::fs::read_to_string(p("r.svg"))
        .unwrap()
        .starts_with("<svg"));
    let again = solive(&["simulate", "--site", &p("site.json"), "--deadline-s", "20"]);
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).lines().nth(1),
        text.lines().nth(1)
    );
}

#[test]
fn simulate_rejects_bad_input_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("bad.json");
    std::fs::write(
        &site,
        r#"{"name":"x","hosts":[{"name":"a","role":"source","capacity_bps":1e9},
            {"name":"b","role":"destination","capacity_bps":1e9}],
            "vms":[{"name":"v","host":"c","memory_kib":1024,"non_zero_pages":1,
                    "dirty_pages_per_sec":0}]}"#,
    )
    .unwrap();
    for (args, needle) in [
        (
            vec!["simulate", "--site", site.to_str().unwrap()],
            "vms[0].host",
        ),
        (
            vec!["simulate", "--generate", "2:1"],
            "SOURCES:DESTINATIONS:VMS",
        ),
        (
            vec!["simulate", "--generate", "2:1:4", "--concurrency", "0"],
            "concurrency",
        ),
        (
            vec!["simulate", "--generate", "2:1:4", "--deadline-s=-1"],
            "deadline_s",
        ),
        (vec!["simulate"], "--topology, --site or --generate"),
    ] {
        let out = solive(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(needle),
            "{args:?}: {err}"
        );
    }
}

/// `solive evacuations --group G`: a request with two sources (h1, h2 into
/// h3) run by an in-process solive on the fake cloud, shown as one by the
/// binary: every VM's route and the forecast of both sources together; an
/// unknown group is the server's 404 on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evacuations_group_shows_a_request_with_several_sources_as_one() {
    use solive::hypervisor::fake::FakeCloud;

    let cloud = FakeCloud::new();
    for (host, name) in [("h1", "web"), ("h2", "db")] {
        cloud.add_vm(host, name, small_vm());
    }
    let solive = support::Solive::start_with_hypervisors(
        support::switchless_config(&["h1", "h2", "h3"]),
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        cloud.host_hypervisors(&["h1", "h2", "h3"]),
    )
    .await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/evacuations", solive.api))
        .json(&serde_json::json!({"sources": ["h1", "h2"], "destinations": ["h3"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let group = r.json::<serde_json::Value>().await.unwrap()["evacuations"][0]["group"]
        .as_u64()
        .unwrap();
    eventually(30, "the group done", || async {
        let g = solive.get(&format!("/v1/evacuation-groups/{group}")).await;
        if g["state"] == "done" {
            Ok(())
        } else {
            Err(g.to_string())
        }
    })
    .await;
    let show = |g: u64| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_solive"))
            .args([
                "evacuations",
                "--group",
                &g.to_string(),
                "--api",
                &solive.api,
            ])
            .output()
    };
    let o = show(group).await.unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        &format!("group {group}: done, 2/2 VMs moved") as &str,
        "web          h1->h3",
        "db           h2->h3",
        "forecast of all sources together",
        "median error",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let o = show(group + 100).await.unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains(&format!("no evacuation group {}", group + 100)),
        "{err}"
    );
}
