//! Pre-caching end to end on the QEMU + libvirt testbed
//! (`topologies/disk-1vm.toml`, issue 15): the guest `disk` (1 GiB qcow2 on
//! h1's own storage, 512 MiB of random fill, 1 MiB/s written while it runs)
//! is cached on h2 through solive's API; after the syncs, h2's copy is the
//! same disk as h1's base (checked with `qemu-img compare` between syncs);
//! the evacuation to h2 then copies only what was written since the last
//! sync, and the guest's disk and memory checksums are the same after. A
//! cache whose copy is broken makes the next evacuation copy the whole disk
//! (its record says why); an evacuation that meets a sync shipping its
//! overlay cuts it and carries the overlay instead of the whole disk; a
//! backup whose libvirtd is killed mid-copy stops the caching, leaves no
//! helper behind, and leaves the VM untouched. A controller restarted
//! between two syncs takes the cache back from its store and goes on
//! incrementally; one killed mid-sync leaves no helper running, and the
//! next copies the disk anew; a block commit one left unpivoted is
//! finished by the next sync. Bad requests are 400s naming the field.
//!
//! Needs root and `mininet/install.sh`. Holds [`support::lock`] from before
//! `up` until after `down`. Missing tools are a failure, not a skip.
mod support;

use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use support::testbed::{move_vm, post_json, require_tools, Testbed};
use support::{eventually, lock};

const STATE: &str = "/tmp/solive-testbed-cache";
const FILL_MIB: u64 = 512;

fn image(tb: &Testbed, host: &str, file: &str) -> PathBuf {
    tb.state.join(format!("hosts/{host}/lib/images/{file}"))
}

/// The test's controller settings: the testbed's, syncing every 10 s (the
/// test sees several in a few minutes), with a store (so that a restarted
/// controller takes the caches back). Both ways of running it start from
/// these.
fn settings(tb: &Testbed) -> toml::Table {
    let text = std::fs::read_to_string(tb.state.join("solive.toml")).unwrap();
    let mut config: toml::Table = text.parse().unwrap();
    let mut cache = toml::Table::new();
    cache.insert("every_s".into(), 10.0.into());
    config.insert("cache".into(), cache.into());
    let mut state = toml::Table::new();
    let dir = tb.state.join("controller").display().to_string();
    state.insert("dir".into(), dir.into());
    config.insert("state".into(), state.into());
    config
}

/// solive in the test's process, on [`settings`].
async fn solive_on(tb: &Testbed) -> support::Solive {
    let config = solive::config::Config::parse(&toml::to_string(&settings(tb)).unwrap()).unwrap();
    support::Solive::start_with(
        config,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
}

/// `POST /v1/caches` for VM `disk` on `backup`: the status and the body.
async fn cache_on(solive: &support::Solive, backup: &str) -> (u16, Value) {
    post_json(
        &solive.api,
        "/v1/caches",
        json!({"vm": "disk", "backup_host": backup}),
    )
    .await
}

/// Waits until the VM's cache satisfies `ok`; its status.
async fn cache_until(
    solive: &support::Solive,
    what: &str,
    secs: u64,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    eventually(secs, what, || async {
        let c = solive.get("/v1/caches/disk").await;
        if ok(&c) {
            Ok(c)
        } else {
            Err(c.to_string())
        }
    })
    .await
}

/// The helpers of a cache still running anywhere (none may outlive it).
fn helpers() -> String {
    let out = Command::new("pgrep")
        .args([
            "-a",
            "-f",
            "qemu-nbd --format=qcow2 --export-name=cache|qemu-img (convert|commit) ",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits (20 s at most) until no cache helper runs.
async fn no_helper_left(what: &str) {
    eventually(20, what, || async {
        let h = helpers();
        if h.is_empty() {
            Ok(())
        } else {
            Err(h)
        }
    })
    .await;
}

/// Between two syncs h1's base stops changing: h2's copy must then be the
/// same disk as it, block for block (`qemu-img compare`).
async fn assert_copy_is_base(tb: &Testbed, solive: &support::Solive) {
    let (base1, base2) = (image(tb, "h1", "disk.qcow2"), image(tb, "h2", "disk.qcow2"));
    eventually(
        120,
        "h2's copy compared with h1's base between syncs",
        || async {
            let before = solive.get("/v1/caches/disk").await;
            if before["state"] != "synced" {
                return Err(format!("not between syncs: {before}"));
            }
            let out = Command::new("qemu-img")
                .args(["compare", "-U", "-f", "qcow2", "-F", "qcow2"])
                .args([&base1, &base2])
                .output()
                .unwrap();
            let after = solive.get("/v1/caches/disk").await;
            if after["state"] != "synced" || after["generation"] != before["generation"] {
                return Err("a sync ran meanwhile".into());
            }
            assert!(
                out.status.success(),
                "h2's copy differs from h1's base at generation {}: {}",
                after["generation"],
                String::from_utf8_lossy(&out.stdout)
            );
            Ok(())
        },
    )
    .await;
}

/// Waits (60 s at most) for a sync shipping its overlay and freezes its
/// `qemu-img commit` (SIGSTOP), so that what comes next surely meets it;
/// the pids frozen.
async fn freeze_shipping() -> String {
    eventually(60, "a sync shipping its overlay", || async {
        let out = Command::new("pgrep")
            .args(["-f", "^qemu-img commit -q -d"])
            .output()
            .unwrap();
        let pids = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if pids.is_empty() {
            return Err("none".to_string());
        }
        for pid in pids.lines() {
            support::run(Command::new("kill").args(["-STOP", pid]));
        }
        Ok(pids)
    })
    .await
}

/// The real `solive serve` on [`settings`], on free ports: a controller the test can kill outright. Its API's URL.
fn solive_process(tb: &Testbed) -> (support::KillOnDrop, PathBuf, String) {
    let free = || format!("127.0.0.1:{}", support::free_port());
    let mut config = settings(tb);
    let (of, api) = (free(), free());
    config["controller"]["openflow_listen"] = of.into();
    config["api"]["listen"] = api.clone().into();
    let (proc, log) = support::serve_process(
        &tb.state,
        "solive-killed",
        &toml::to_string(&config).unwrap(),
    );
    (proc, log, format!("http://{api}"))
}

/// The block job on h1's `vda`, as virsh says it (on its stderr).
fn block_job(tb: &Testbed) -> String {
    let out = Command::new("virsh")
        .args(["-c", &tb.uri("h1"), "blockjob", "disk", "vda", "--info"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_precached_disk_moves_only_what_changed_and_a_bad_cache_means_a_full_copy() {
    let _lock = lock();
    require_tools(&["qemu-img", "qemu-nbd", "nsenter", "pgrep"]);
    let tb = Testbed::up("disk-1vm", STATE);
    tb.wait_ready("h1", "disk", 120);
    let disk_sum = tb.wait_disksums("h1", "disk", 1, 300)[0].clone();
    let mem_sum = tb.wait_memsums("h1", "disk", 1, 30)[0].clone();
    let solive = solive_on(&tb).await;

    // 0. Bad requests name the field.
    for (body, field) in [
        (
            json!({"vm": "disk", "backup_host": "h9"}),
            "backup_host: unknown host",
        ),
        (
            json!({"vm": "disk", "backup_host": "h1"}),
            "backup_host: \"h1\" is the VM's own host",
        ),
        (
            json!({"vm": "nope", "backup_host": "h2"}),
            "vm: no host runs",
        ),
        (
            json!({"vm": "share", "backup_host": "h2"}),
            "vm: \"share\" has no disk on local storage",
        ),
        (json!({"vm": "disk"}), "backup_host"),
    ] {
        let (s, v) = post_json(&solive.api, "/v1/caches", body.clone()).await;
        assert_eq!(s, 400, "{body} -> {v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(field), "{body} -> {msg:?}");
    }

    // 1. Cache disk on h2; a second request for it is a conflict.
    let (s, v) = cache_on(&solive, "h2").await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["state"], "copying", "{v}");
    let (s, v) = cache_on(&solive, "h2").await;
    assert_eq!(s, 409, "{v}");
    // The copy is a low-priority reservation on h1's uplink: a flow of its
    // own to the cache port into a meter at its share.
    eventually(30, "the copy metered on br-h1", || async {
        let flows = tb.ofctl(&["dump-flows", "br-h1"]);
        match flows.lines().find(|l| l.contains("tp_dst=10809")) {
            Some(l) if l.contains("meter:") => Ok(l.trim().to_string()),
            _ => Err(flows),
        }
    })
    .await;
    // The first copy (~540 MiB at most 10 MB/s), then incremental syncs.
    let c = cache_until(&solive, "two syncs", 400, |c| {
        c["generation"].as_u64() >= Some(2)
    })
    .await;
    eprintln!("cache after two syncs: {c}");
    assert!(c["sent_bytes"].as_u64().unwrap() >= FILL_MIB << 20, "{c}");
    // h1's view in the API carries it, per disk.
    let host = solive.get("/v1/hosts/h1").await;
    let d = &host["caches"][0]["disks"][0];
    assert_eq!(d["target"], "vda", "{host:#}");
    assert!(d["cached_bytes"].as_u64().unwrap() >= FILL_MIB << 20, "{d}");
    assert!(
        d["dirty_bytes"].is_u64() && host["caches"][0]["lag_s"].is_f64(),
        "{host:#}"
    );
    // Between two syncs h1's base stops changing: h2's copy must then be
    // the same disk, block for block.
    assert_copy_is_base(&tb, &solive).await;

    // 1b. The controller restarts between two syncs: the next one takes
    // the cache back from the store at its generation and goes on with
    // incremental syncs, not a new first copy.
    let g = c["generation"].as_u64().unwrap();
    let before = cache_until(&solive, "a sync just ended", 60, |c| {
        c["state"] == "synced" && c["generation"].as_u64() > Some(g)
    })
    .await;
    solive.stop().await;
    no_helper_left("no cache helper left by the shutdown").await;
    let solive = solive_on(&tb).await;
    let back = solive.get("/v1/caches/disk").await;
    eprintln!("cache before the restart: {before}\nafter: {back}");
    assert_eq!(back["generation"], before["generation"], "{back}");
    assert_eq!(back["synced_at"], before["synced_at"], "{back}");
    assert_ne!(back["state"], "stopped", "{back}");
    let after = cache_until(&solive, "a sync after the restart", 120, |c| {
        c["state"] == "synced" && c["generation"].as_u64() > before["generation"].as_u64()
    })
    .await;
    let shipped = after["sent_bytes"].as_u64().unwrap() - before["sent_bytes"].as_u64().unwrap();
    assert!(
        shipped < (FILL_MIB << 20) / 10,
        "the first sync after the restart sent {shipped} bytes: {after}"
    );

    // 1c. The controller killed outright (SIGKILL) while a sync ships its
    // overlay (frozen, so that the kill surely meets it): no helper may
    // outlive it, or it would write on into h2's copy while the next
    // controller rewrites it. That one, started on the same store, finds a
    // sync in flight and copies the disk anew; between its syncs h2's copy
    // is again h1's base, block for block.
    solive.stop().await;
    let (proc, log, api) = solive_process(&tb);
    let resumed = eventually(30, "the killable controller up", || async {
        match reqwest::get(format!("{api}/v1/caches/disk")).await {
            Ok(r) if r.status() == 200 => Ok(r.json::<Value>().await.unwrap()),
            Ok(r) => Err(r.status().to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    eprintln!("cache taken back by the process: {resumed}");
    let frozen = freeze_shipping().await;
    let c = support::get_json(&api, "/v1/caches/disk").await;
    assert_eq!(c["state"], "syncing", "{c}");
    drop(proc);
    eprintln!(
        "controller killed while {frozen} shipped; its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    no_helper_left("no helper outlives a killed controller").await;
    let solive = solive_on(&tb).await;
    let back = solive.get("/v1/caches/disk").await;
    eprintln!("cache after the kill: {back}");
    assert_eq!(back["generation"], 0, "a sync was in flight: {back}");
    cache_until(&solive, "the copy made anew after the kill", 400, |c| {
        c["generation"].as_u64() >= Some(2) && c["state"] == "synced"
    })
    .await;
    assert_copy_is_base(&tb, &solive).await;
    // The killed sync's layers and its shipping copy went with the copy
    // anew: between two syncs h1 keeps the base and the current top only.
    eventually(60, "h1's images between two syncs", || async {
        let before = solive.get("/v1/caches/disk").await;
        let mut files: Vec<String> = std::fs::read_dir(image(&tb, "h1", ""))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.starts_with("disk."))
            .collect();
        files.sort();
        let after = solive.get("/v1/caches/disk").await;
        if before["state"] != "synced"
            || after["state"] != "synced"
            || after["generation"] != before["generation"]
        {
            return Err("a sync ran meanwhile".to_string());
        }
        let top = before["disks"][0]["top"].as_str().unwrap();
        let mut want = vec![
            "disk.qcow2".to_string(),
            top.rsplit('/').next().unwrap().into(),
        ];
        want.sort();
        assert_eq!(files, want, "h1's images between two syncs: {before}");
        Ok(())
    })
    .await;

    // 1d. A controller killed between starting a commit and pivoting it
    // leaves the job in QEMU (made here by hand: an overlay, and an active
    // commit of it not pivoted). The next controller's sync finishes it as
    // that one would have (pivots it) and goes on incrementally; without
    // that, the snapshot and any migration of the VM were refused.
    let before = cache_until(&solive, "between two syncs", 60, |c| c["state"] == "synced").await;
    solive.stop().await;
    tb.virsh(
        "h1",
        &[
            "snapshot-create-as",
            "disk",
            "--disk-only",
            "--no-metadata",
            "--atomic",
            "--diskspec",
            "vda,file=/var/lib/libvirt/images/disk.left-by-a-killed-controller.qcow2",
        ],
    );
    tb.virsh(
        "h1",
        &["blockcommit", "disk", "vda", "--active", "--shallow"],
    );
    let job = block_job(&tb);
    eprintln!("left on h1's vda: {job}");
    assert!(job.contains("Active Block Commit"), "{job}");
    let solive = solive_on(&tb).await;
    let after = cache_until(&solive, "a sync over the job left", 120, |c| {
        c["state"] == "synced" && c["generation"].as_u64() > before["generation"].as_u64()
            || c["state"] == "stopped"
    })
    .await;
    assert_eq!(after["state"], "synced", "{after}");
    let shipped = after["sent_bytes"].as_u64().unwrap() - before["sent_bytes"].as_u64().unwrap();
    assert!(shipped < (FILL_MIB << 20) / 10, "{after}");
    let job = block_job(&tb);
    assert!(!job.contains("Block Commit"), "still on vda: {job}");

    // 2. The evacuation to h2 copies only what was written since the last
    // sync: far under a tenth of the fill, where a cold copy sends it all.
    let uplink0 = tb.tx_bytes("br-h1", "h1-up");
    let rec = move_vm(&solive, "disk", "h1", "h2", 300).await;
    let vm = &rec["vms"][0];
    assert!(
        vm["disk_cache"]
            .as_str()
            .unwrap()
            .starts_with("used: cached on h2"),
        "{vm:#}"
    );
    let copied = vm["disk_bytes"].as_u64().expect("disk bytes recorded");
    assert!(
        copied < (FILL_MIB << 20) / 10,
        "copied {copied} bytes: {vm:#}"
    );
    assert!(
        vm["disk_saved_bytes"].as_u64().unwrap() >= FILL_MIB << 20,
        "{vm:#}"
    );
    let wire = tb.tx_bytes("br-h1", "h1-up") - uplink0;
    eprintln!(
        "pre-cached: disk {} MiB copied, {} MiB saved; h1's uplink carried {} MiB",
        copied >> 20,
        vm["disk_saved_bytes"].as_u64().unwrap() >> 20,
        wire >> 20
    );
    assert!(
        wire < (FILL_MIB << 20) / 2,
        "the uplink carried {wire} bytes"
    );
    tb.assert_whole("h2", "disk", &mem_sum);
    tb.assert_disk_whole("h2", "disk", &disk_sum, 300);
    let c = solive.get("/v1/caches/disk").await;
    assert_eq!(c["state"], "stopped", "{c}");
    assert!(c["reason"].as_str().unwrap().starts_with("used"), "{c}");

    // 3. Cache it back on h1, then break h1's copy: the evacuation there
    // copies the whole disk and says why.
    let (s, v) = cache_on(&solive, "h1").await;
    assert_eq!(s, 201, "{v}");
    cache_until(&solive, "the first copy on h1", 400, |c| {
        c["generation"].as_u64() >= Some(1) && c["state"] == "synced"
    })
    .await;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(image(&tb, "h1", "disk.qcow2"))
        .unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&[0xa5; 4096]).unwrap();
    drop(f);
    let rec = move_vm(&solive, "disk", "h2", "h1", 900).await;
    let vm = &rec["vms"][0];
    let why = vm["disk_cache"].as_str().unwrap();
    assert!(
        why.starts_with("not used, the whole disk was copied: broken"),
        "{vm:#}"
    );
    assert!(
        vm["disk_bytes"].as_u64().unwrap() >= FILL_MIB << 20,
        "{vm:#}"
    );
    tb.assert_whole("h1", "disk", &mem_sum);
    tb.assert_disk_whole("h1", "disk", &disk_sum, 300);

    // 4. An evacuation that comes while a sync ships its overlay does not
    // wait for it nor copy the whole disk: it cuts the sync and carries
    // the overlay. The sync's shipping is frozen (SIGSTOP) so that the
    // evacuation surely meets it.
    let (s, v) = cache_on(&solive, "h2").await;
    assert_eq!(s, 201, "{v}");
    cache_until(&solive, "the first copy on h2", 400, |c| {
        c["generation"].as_u64() >= Some(1) && c["state"] == "synced"
    })
    .await;
    let frozen = freeze_shipping().await;
    let c = solive.get("/v1/caches/disk").await;
    eprintln!("sync frozen (pid {frozen}): {c}");
    assert_eq!(c["state"], "syncing", "{c}");
    let rec = move_vm(&solive, "disk", "h1", "h2", 600).await;
    let vm = &rec["vms"][0];
    let note = vm["disk_cache"].as_str().unwrap();
    assert!(
        note.starts_with("used: cached on h2") && note.contains("it was cut"),
        "{vm:#}"
    );
    let copied = vm["disk_bytes"].as_u64().expect("disk bytes recorded");
    eprintln!("sync cut: disk {} MiB copied; {note}", copied >> 20);
    // The overlay in flight holds what the guest wrote during the first
    // copy (~100 s at 1 MiB/s): well under the fill a full copy moves.
    assert!(
        copied < (FILL_MIB << 20) / 2,
        "copied {copied} bytes: {vm:#}"
    );
    tb.assert_whole("h2", "disk", &mem_sum);
    tb.assert_disk_whole("h2", "disk", &disk_sum, 300);
    no_helper_left("the frozen helper gone").await;

    // 5. The backup's libvirtd killed while the first copy runs: the
    // caching stops and says so, its helpers are gone, the VM runs on.
    let (s, v) = cache_on(&solive, "h1").await;
    assert_eq!(s, 201, "{v}");
    eventually(60, "the first copy to h1 running", || async {
        let h = helpers();
        if h.contains("qemu-img convert") {
            Ok(())
        } else {
            Err(h)
        }
    })
    .await;
    let pid = std::fs::read_to_string(tb.state.join("hosts/h1/run/libvirtd.pid")).unwrap();
    support::run(Command::new("kill").args(["-KILL", pid.trim()]));
    let c = cache_until(&solive, "the caching stopped", 60, |c| {
        c["state"] == "stopped"
    })
    .await;
    let reason = c["reason"].as_str().unwrap();
    assert!(reason.contains("backup host"), "{c}");
    assert_eq!(c["generation"], 0, "{c}");
    no_helper_left("no cache helper left").await;
    tb.assert_whole("h2", "disk", &mem_sum);
    tb.assert_disk_whole("h2", "disk", &disk_sum, 300);
    // DELETE answers its final status and forgets it.
    let (s, v) = support::testbed::delete(&solive.api, "/v1/caches/disk").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(solive.get("/v1/caches").await, json!([]));
    solive.stop().await;
    tb.down();
}
