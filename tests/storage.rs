//! Storage migration end to end on the QEMU + libvirt testbed
//! (`topologies/disk-1vm.toml`): a guest whose 1 GiB qcow2 disk lives on
//! h1's own storage (its first 512 MiB written with random data, 1 MiB/s
//! written past them while it runs) is evacuated by solive's API to h2 and
//! back. solive finds the local disk through libvirt, has libvirt copy it
//! over NBD to a port of solive's choosing, reserves that port's flows with
//! the memory's, and records the bytes copied. The guest checksums its disk's
//! fill after every full read: the sum before and after the move must match,
//! and the guest must run. A migration whose destination QEMU is destroyed
//! mid-copy fails and leaves the VM running on its source, disk intact. A
//! second guest's disk is on storage every host sees: it moves without a copy.
//! A third writes its local disk in bursts: it moves with its disk intact.
//!
//! Needs root and `mininet/install.sh`. Holds [`support::lock`] from before
//! `up` until after `down`. Missing tools are a failure, not a skip.
mod support;

use std::process::Command;

use serde_json::json;
use support::testbed::{evacuate, evacuation_end, move_vm, require_tools, solive_on, Testbed};
use support::{eventually, lock, run};

const STATE: &str = "/tmp/solive-testbed-disk";
const FILL_MIB: u64 = 512;
/// "burst"'s fill.
const BURST_FILL_MIB: u64 = 64;

/// The OpenFlow rules on `bridge`, as ovs-ofctl prints them.
fn flows(tb: &Testbed, bridge: &str) -> String {
    run(Command::new("ovs-ofctl")
        .env("OVS_RUNDIR", tb.info["ovs_rundir"].as_str().unwrap())
        .args(["-O", "OpenFlow13", "dump-flows", bridge]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_with_a_local_disk_moves_with_it_intact_and_a_failed_copy_leaves_it_home() {
    let _lock = lock();
    require_tools(&["qemu-img"]);
    let tb = Testbed::up("disk-1vm", STATE);
    tb.wait_ready("h1", "disk", 120);
    // The first full read of the fill under TCG.
    let disk_sum = tb.wait_disksums("h1", "disk", 1, 300)[0].clone();
    let mem_sum = tb.wait_memsums("h1", "disk", 1, 30)[0].clone();
    tb.wait_ready("h1", "share", 120);
    let share_sum = tb.wait_disksums("h1", "share", 1, 120)[0].clone();
    tb.wait_ready("h1", "burst", 120);
    let burst_sum = tb.wait_disksums("h1", "burst", 1, 120)[0].clone();
    let burst_mem = tb.wait_memsums("h1", "burst", 1, 30)[0].clone();
    let solive = solive_on(&tb).await;

    // 0. A disk on shared storage is not copied: "share" moves with its
    // memory only, and its disk is the same file on h2.
    let uplink0 = tb.tx_bytes("br-h1", "h1-up");
    let rec = move_vm(&solive, "share", "h1", "h2", 300).await;
    let vm = &rec["vms"][0];
    assert_eq!(vm["disks"][0]["copy"], false, "{vm:#}");
    assert!(
        vm["disks"][0]["why"]
            .as_str()
            .unwrap()
            .contains("shared storage"),
        "{vm:#}"
    );
    assert!(vm["disk_bytes"].is_null(), "{vm:#}");
    assert_eq!(rec["measurements"][0]["disk_bytes"], 0);
    // Its 32 MiB fill did not cross: the uplink carried its memory (96 MiB
    // at most) and the other guest's nothing.
    let wire = tb.tx_bytes("br-h1", "h1-up") - uplink0;
    assert!(wire < 96 << 20, "the uplink carried {wire} bytes");
    tb.assert_disk_whole("h2", "share", &share_sum, 120);

    // 1. h1 -> h2: the disk travels with the VM, across h1's uplink.
    let uplink0 = tb.tx_bytes("br-h1", "h1-up");
    let id = evacuate(
        &solive,
        json!({"source": "h1", "destination": "h2", "vms": ["disk"], "urgency": 80}),
    )
    .await;
    // While it copies: its reservation names a disk port, and h1's bridge
    // has the copy's own flows (to that port, and back from it).
    let (rid, port) = eventually(300, "the disk copy under way", || async {
        let r = solive.get(&format!("/v1/evacuations/{id}")).await;
        let v = &r["vms"][0];
        let copying = v["progress"]["disk_processed"].as_u64().unwrap_or(0) > 0;
        match v["reservation_id"].as_u64() {
            Some(rid) if copying => {
                let res = solive.get(&format!("/v1/reservations/{rid}")).await;
                match res["disk_port"].as_u64() {
                    Some(p) => Ok((rid, p)),
                    None => Err(format!("reservation without disk_port: {res}")),
                }
            }
            _ => Err(v.to_string()),
        }
    })
    .await;
    // (installed at the reservation's next period)
    eventually(30, "the disk copy's flows on br-h1", || async {
        let rules = flows(&tb, "br-h1");
        if rules.contains(&format!("tp_dst={port}")) && rules.contains(&format!("tp_src={port}")) {
            Ok(())
        } else {
            Err(format!(
                "no flows of port {port} (reservation {rid}):\n{rules}"
            ))
        }
    })
    .await;
    // The copy runs capped: libvirt started its mirror at the migration's
    // cap, and solive keeps it there; never unlimited (0), never above the
    // 200 Mbit/s link (23.8 MiB/s).
    let jobs = tb.virsh(
        "h1",
        &[
            "qemu-monitor-command",
            "disk",
            r#"{"execute":"query-block-jobs"}"#,
        ],
    );
    let jobs: serde_json::Value = serde_json::from_str(&jobs).unwrap();
    let speed = jobs["return"][0]["speed"].as_u64().unwrap_or(0);
    assert!(speed > 0 && speed <= 24 << 20, "{jobs}");
    let rec = evacuation_end(&solive, id, 900).await;
    assert_eq!(rec["state"], "done", "{rec:#}");
    let vm = &rec["vms"][0];
    assert_eq!(vm["disks"][0]["target"], "vda", "{vm:#}");
    assert_eq!(vm["disks"][0]["copy"], true, "{vm:#}");
    let copied = vm["disk_bytes"]
        .as_u64()
        .expect("the bytes copied are recorded");
    assert!(copied >= FILL_MIB << 20, "copied {copied} bytes: {vm:#}");
    // The fill crossed the fabric (QEMU's count also has the disk's
    // unallocated half, which crosses as write-zeroes requests).
    let wire = tb.tx_bytes("br-h1", "h1-up") - uplink0;
    eprintln!(
        "h1's uplink carried {} MiB; QEMU counted {} MiB of disk",
        wire >> 20,
        copied >> 20
    );
    assert!(wire >= FILL_MIB << 20, "the uplink carried {wire} bytes");
    // The VM's bytes are its memory's and its disk's.
    assert!(vm["bytes"].as_u64().unwrap() > copied, "{vm:#}");
    // The measurement counted the disk (its N) and saw the guest write
    // (1 MiB/s by the topology; TCG may run it slower).
    let m = &rec["measurements"][0];
    assert!(m["disk_bytes"].as_u64().unwrap() >= FILL_MIB << 20, "{m:#}");
    assert!(m["disk_write_bps"].as_f64().unwrap() > 100e3, "{m:#}");
    tb.assert_whole("h2", "disk", &mem_sum);
    tb.assert_disk_whole("h2", "disk", &disk_sum, 300);
    // It left h1 ("burst" still runs there, for step 4).
    let on_h1 = tb.virsh("h1", &["list", "--name"]);
    assert!(!on_h1.lines().any(|l| l.trim() == "disk"), "{on_h1}");
    // h2 now has its own image of the disk.
    assert!(tb.state.join("hosts/h2/lib/images/disk.qcow2").exists());
    assert_eq!(solive.get("/v1/reservations").await, json!([]));

    // 2. h2 -> h1, and h1's incoming QEMU destroyed mid-copy: the migration
    // fails, the VM still runs on h2 with its disk intact.
    let id = evacuate(
        &solive,
        json!({"source": "h2", "destination": "h1", "vms": ["disk"], "urgency": 20}),
    )
    .await;
    eventually(300, "the copy back under way", || async {
        let r = solive.get(&format!("/v1/evacuations/{id}")).await;
        match r["vms"][0]["progress"]["disk_processed"].as_u64() {
            Some(b) if b > 16 << 20 => Ok(()),
            _ => Err(r["vms"][0].to_string()),
        }
    })
    .await;
    tb.virsh("h1", &["destroy", "disk"]);
    let rec = evacuation_end(&solive, id, 300).await;
    let vm = &rec["vms"][0];
    assert_eq!(vm["state"], "failed", "{vm:#}");
    assert!(
        vm["error"]
            .as_str()
            .unwrap()
            .contains("the VM is now on h2"),
        "{vm:#}"
    );
    assert_eq!(rec["left_on_source"], json!(["disk"]));
    tb.assert_running("h2", "share");
    tb.assert_whole("h2", "disk", &mem_sum);
    tb.assert_disk_whole("h2", "disk", &disk_sum, 300);
    assert_eq!(solive.get("/v1/reservations").await, json!([]));

    // 3. And the next try moves it back whole (over what the failed one
    // left on h1).
    move_vm(&solive, "disk", "h2", "h1", 900).await;
    tb.assert_whole("h1", "disk", &mem_sum);
    tb.assert_disk_whole("h1", "disk", &disk_sum, 300);

    // 4. A guest that writes its disk in bursts (10 MiB at once every
    // 10 s) moves with its disk too: the copy catches up with each burst,
    // and the fill is the same on h2.
    let rec = move_vm(&solive, "burst", "h1", "h2", 600).await;
    let vm = &rec["vms"][0];
    assert_eq!(vm["disks"][0]["copy"], true, "{vm:#}");
    assert!(
        vm["disk_bytes"].as_u64().unwrap() >= BURST_FILL_MIB << 20,
        "{vm:#}"
    );
    eprintln!(
        "burst writer: disk {} MiB copied in {} ms",
        vm["disk_bytes"].as_u64().unwrap() >> 20,
        vm["duration_ms"]
    );
    tb.assert_whole("h2", "burst", &burst_mem);
    tb.assert_disk_whole("h2", "burst", &burst_sum, 300);
    // It goes on writing there (its console logs every 64 MiB written).
    eventually(150, "burst writing on h2", || async {
        let c = tb.console("h2", "burst");
        if c.contains("slworker: wrote") {
            Ok(())
        } else {
            Err(c)
        }
    })
    .await;
    solive.stop().await;
    tb.down();
}
