//! solive's QMP driver (`solive::hypervisor::qmp::Qmp`) against bare QEMU
//! processes started by the test (TCG, the testbed's guest from
//! `mininet/build-guest`): list, measure, a capped migration whose cap is
//! raised mid-flight, the destination running afterwards, an abort of a
//! second migration, and post-copy switched by solive. Needs root (the guest
//! cache, reading QEMU's memory) and QEMU; missing tools are failures.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use solive::hypervisor::qmp::Qmp;
use solive::hypervisor::{Hypervisor, MigrateOptions};
use support::{free_port, repo_root, run};

/// A QEMU process killed when dropped.
struct Qemu {
    child: Child,
    serial: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn guest() -> PathBuf {
    let out = run(&mut Command::new(repo_root().join("mininet/build-guest")));
    PathBuf::from(
        out.lines()
            .last()
            .expect("build-guest printed nothing")
            .trim(),
    )
}

/// Starts QEMU with its QMP socket `dir/vm.qmp`; `incoming` makes it a
/// migration destination.
fn qemu(dir: &Path, guest: &Path, incoming: Option<u16>) -> Qemu {
    std::fs::create_dir_all(dir).unwrap();
    let serial = dir.join("serial.log");
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-m", "128", "-display", "none", "-monitor", "none"])
        .arg("-kernel")
        .arg(guest.join("vmlinuz"))
        .arg("-initrd")
        .arg(guest.join("initrd.img"))
        .args([
            "-append",
            "console=ttyS0 quiet panic=-1 solive.vm=vm solive.workload=memory solive.fill=16 solive.ws=8",
        ])
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", dir.join("vm.qmp").display()))
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(port) = incoming {
        cmd.args(["-incoming", &format!("tcp:127.0.0.1:{port}")]);
    }
    let child = cmd
        .spawn()
        .expect("qemu-system-x86_64 is missing: run `sudo mininet/install.sh`");
    let q = Qemu { child, serial };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("vm.qmp").exists() {
        assert!(
            Instant::now() < deadline,
            "no QMP socket in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    q
}

fn state(rt: &tokio::runtime::Runtime, q: &Qmp) -> String {
    let vms = rt.block_on(q.list()).unwrap();
    assert_eq!(vms.len(), 1, "{vms:?}");
    vms[0].state.clone()
}

#[test]
fn qmp_driver_measures_migrates_with_a_cap_and_aborts() {
    let guest = guest();
    let tmp = tempfile::tempdir().unwrap();
    let (src_dir, dst_dir, dst2_dir) = (
        tmp.path().join("src"),
        tmp.path().join("dst"),
        tmp.path().join("dst2"),
    );
    let src = qemu(&src_dir, &guest, None);
    let port = free_port();
    let _dst = qemu(&dst_dir, &guest, Some(port));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = std::fs::read_to_string(&src.serial).unwrap_or_default();
        if s.contains("ready") {
            break;
        }
        assert!(Instant::now() < deadline, "guest not ready: {s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (h1, h2) = (Qmp::new(&src_dir), Qmp::new(&dst_dir));

    let vms = rt.block_on(h1.list()).unwrap();
    assert_eq!(vms.len(), 1);
    assert_eq!(
        (vms[0].name.as_str(), vms[0].state.as_str()),
        ("vm", "running")
    );
    assert_eq!((vms[0].memory_kib, vms[0].vcpus), (128 * 1024, 1));
    assert_eq!(state(&rt, &h2), "inmigrate");
    let e = rt.block_on(h1.progress("other")).unwrap_err().to_string();
    assert!(e.contains("other"), "{e}");

    let m = rt
        .block_on(h1.measure("vm", Duration::from_secs(1)))
        .unwrap();
    eprintln!("measured: {m:?}");
    assert_eq!(m.memory_kib, 128 * 1024);
    // An 8 MiB working set rewritten in a loop.
    assert!(m.dirty_pages_per_sec >= 2.0 * 256.0, "{m:?}");
    // The same 8 MiB over the second, three times longer window: a working
    // set well below the 128 MiB.
    let ws = m.working_set_kib.unwrap_or(u64::MAX);
    assert!((2 << 10..=32 << 10).contains(&ws), "{m:?}");
    assert!(m.cpu_pct > 30.0, "{m:?}");
    assert!(m.non_zero_source.contains("/proc/PID/mem"), "{m:?}");
    assert!(
        m.non_zero_pages >= 16 * 256 && m.non_zero_pages <= 128 * 256,
        "{m:?}"
    );
    assert_eq!(rt.block_on(h1.progress("vm")).unwrap(), None);

    // A migration capped at 2 MiB/s; the cap is raised mid-flight.
    let opts = |port: u16, dest: &Path| MigrateOptions {
        dest_uri: format!("unix:{}", dest.join("vm.qmp").display()),
        migrate_uri: Some(format!("tcp:127.0.0.1:{port}")),
        bandwidth_mibs: 2,
        postcopy: false,
        listen_address: None,
        parallel_connections: None,
        auto_converge: None,
        disk_copy: None,
    };
    let migrating = rt.spawn(h1.migrate("vm", opts(port, &dst_dir)));
    std::thread::sleep(Duration::from_secs(1));
    let p0 = rt.block_on(h1.progress("vm")).unwrap().unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let p1 = rt.block_on(h1.progress("vm")).unwrap().unwrap();
    let capped = (p1.data_processed - p0.data_processed) as f64 / 2.0 / 1048576.0;
    eprintln!("capped at 2 MiB/s: {capped:.2} MiB/s, {p1:?}");
    assert!(capped > 1.0 && capped < 3.0, "{capped:.2} MiB/s");
    assert!(p1.data_total >= 128 << 20, "{p1:?}");
    rt.block_on(h1.set_max_speed("vm", 500)).unwrap();
    let t = Instant::now();
    let stats = rt.block_on(migrating).unwrap().unwrap();
    eprintln!(
        "cap raised to 500 MiB/s: done {:.1} s later, {stats:?}",
        t.elapsed().as_secs_f64()
    );
    assert!(stats.bytes.unwrap() > 16 << 20, "{stats:?}");
    assert!(
        stats.downtime_ms.is_some() && stats.time_ms.unwrap() >= 3000,
        "{stats:?}"
    );
    assert_eq!(state(&rt, &h2), "running");
    assert_eq!(state(&rt, &h1), "postmigrate");
    drop(src);

    // Post-copy needs the destination's socket: asked without it, an error.
    let mut pc = opts(1, &dst2_dir);
    pc.dest_uri = String::new();
    pc.postcopy = true;
    let e = rt.block_on(h2.migrate("vm", pc)).unwrap_err().to_string();
    assert!(e.contains("post-copy") && e.contains("vm"), "{e}");

    // A second migration, aborted mid-flight: the VM keeps running.
    let port2 = free_port();
    let _dst2 = qemu(&dst2_dir, &guest, Some(port2));
    let h3 = Qmp::new(&dst2_dir);
    let mut slow = opts(port2, &dst2_dir);
    slow.bandwidth_mibs = 1;
    let migrating = rt.spawn(h2.migrate("vm", slow));
    let t = Instant::now();
    while rt
        .block_on(h2.progress("vm"))
        .unwrap()
        .is_none_or(|p| p.data_processed < 1 << 20)
    {
        assert!(t.elapsed() < Duration::from_secs(20), "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    rt.block_on(h2.abort("vm")).unwrap();
    let err = rt.block_on(migrating).unwrap().unwrap_err().to_string();
    eprintln!(
        "aborted: migrate returned {:.2} s later: {err}",
        t.elapsed().as_secs_f64()
    );
    assert!(err.contains("vm") && err.contains("cancelled"), "{err}");
    assert_eq!(state(&rt, &h2), "running");
    assert_eq!(rt.block_on(h2.progress("vm")).unwrap(), None);
    assert!(rt.block_on(h2.abort("vm")).is_err());
    // The would-be destination does not run the VM: QEMU exits when an
    // incoming migration fails (its socket then refuses connections).
    if let Ok(vms) = rt.block_on(h3.list()) {
        assert!(vms.iter().all(|v| v.state != "running"), "{vms:?}");
    }

    // Post-copy: started capped at 4 MiB/s, switched by solive a second in;
    // the rest comes on demand and in the background, and the VM runs on
    // the destination.
    let (port3, dst3_dir) = (free_port(), tmp.path().join("dst3"));
    let _dst3 = qemu(&dst3_dir, &guest, Some(port3));
    let h4 = Qmp::new(&dst3_dir);
    let mut pc = opts(port3, &dst3_dir);
    pc.bandwidth_mibs = 4;
    pc.postcopy = true;
    let migrating = rt.spawn(h2.migrate("vm", pc));
    std::thread::sleep(Duration::from_secs(1));
    let before = rt.block_on(h2.progress("vm")).unwrap().unwrap();
    rt.block_on(h2.start_postcopy("vm")).unwrap();
    let t = Instant::now();
    let stats = rt.block_on(migrating).unwrap().unwrap();
    eprintln!(
        "post-copy: switched after {} bytes, done {:.1} s later: {stats:?}",
        before.data_processed,
        t.elapsed().as_secs_f64()
    );
    assert!(stats.bytes.unwrap() > 16 << 20, "{stats:?}");
    assert_eq!(state(&rt, &h4), "running");
    assert_eq!(state(&rt, &h2), "postmigrate");
}
