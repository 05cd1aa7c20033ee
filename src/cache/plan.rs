//! The pure half of pre-caching: file names, the helper command lines, the
//! rate a sync may use, and whether a cache can stand in for a full copy.
//! No I/O here; [`super::sync`] runs what these functions describe.

use serde::Serialize;

use super::{CacheState, CacheStatus};

/// What a restarted controller does with a cache the store kept.
#[derive(Debug, Clone, PartialEq)]
pub enum Resume {
    /// Deleted through the API: gone.
    Forget,
    /// Stopped: shown as it was, no syncs.
    Show(CacheStatus),
    /// Its task goes on from this status.
    Run(CacheStatus),
}

/// The rule for taking a stored cache back. Only a cache stored as
/// `synced` is trusted as it stands: the backup then holds the generation
/// its marker names, and everything written since is in the source's top
/// image, as before the restart. A sync in flight (`copying`, `syncing`)
/// may have written part of an overlay into the backup's copy, or committed
/// it on the source after shipping only part, so the copy is made anew
/// (generation 0; the first copy removes the old marker before it writes).
/// A cache an evacuation had taken (`in_use`) is not resumed: that
/// migration was interrupted, the chain on either host may be prepared
/// for it, and caching again is the operator's call.
pub fn resume(mut s: CacheStatus, removed: bool) -> Resume {
    s.transfer = None;
    s.lag_s = None;
    match s.state {
        _ if removed => Resume::Forget,
        CacheState::Stopped => Resume::Show(s),
        CacheState::Synced => Resume::Run(s),
        CacheState::Copying | CacheState::Syncing => {
            s.state = CacheState::Copying;
            s.generation = 0;
            s.synced_at = None;
            for d in &mut s.disks {
                d.cached_bytes = 0;
            }
            s.reason = Some(
                "a sync was in flight when the controller stopped: the copy is made anew".into(),
            );
            Resume::Run(s)
        }
        CacheState::InUse => {
            s.state = CacheState::Stopped;
            s.reason = Some(
                "the controller stopped while an evacuation used this cache; \
                 POST /v1/caches to cache the VM again"
                    .into(),
            );
            Resume::Show(s)
        }
    }
}

/// The export name the backup's `qemu-nbd` serves the cache under.
pub const EXPORT: &str = "cache";

/// The overlay a sync puts on `base`: next to it, named after it and the
/// sync's stamp (unique: solive's snapshots keep no metadata to clash with).
pub fn overlay_path(base: &str, stamp: &str) -> String {
    let (dir, file) = base.rsplit_once('/').unwrap_or(("", base));
    let stem = file.strip_suffix(".qcow2").unwrap_or(file);
    // A base that is itself one of solive's overlays (a chain left by an
    // earlier cache) gets a name from its original stem.
    let stem = stem.split(".solive-").next().unwrap_or(stem);
    let dir = if dir.is_empty() { "." } else { dir };
    format!("{dir}/{stem}.solive-{stamp}.qcow2")
}

/// The private copy of `overlay` a sync ships (QEMU keeps the original
/// open).
pub fn scratch_path(overlay: &str) -> String {
    format!("{overlay}.ship")
}

/// The files a cut sync may have left on the source once the chain's top
/// is committed into `base`: the layers between (`backing`, nearest first,
/// down to `base`) and their shipping copies. Only solive's own overlays:
/// anything else in a chain is not the cache's to remove.
pub fn stale_files(base: &str, backing: &[String]) -> Vec<String> {
    backing
        .iter()
        .take_while(|f| *f != base)
        .filter(|f| f.contains(".solive-"))
        .flat_map(|f| [f.clone(), scratch_path(f)])
        .collect()
}

/// Where the backup keeps the facts of its copy of `base`: which VM, from
/// where, and the generation of the last sync that completed.
pub fn marker_path(base: &str) -> String {
    format!("{base}.solive-cache")
}

/// The backup's record of its copy (JSON in [`marker_path`]).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Marker {
    pub vm: String,
    pub source: String,
    pub generation: u64,
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The backup's NBD server for one transfer into `image` (a qcow2): it
/// serves one client and exits when that client disconnects.
pub fn serve(image: &str, address: &str, port: u16) -> Vec<String> {
    s(&[
        "qemu-nbd",
        "--format=qcow2",
        &format!("--export-name={EXPORT}"),
        &format!("--bind={address}"),
        &format!("--port={port}"),
        image,
    ])
}

pub fn nbd_url(address: &str, port: u16) -> String {
    format!("nbd://{address}:{port}/{EXPORT}")
}

/// An empty qcow2 of `size` bytes at `path` (the backup's fresh cache), or
/// an empty overlay on `backing` (the top image an incremental migration
/// fills).
pub fn create(path: &str, size: u64, backing: Option<&str>) -> Vec<String> {
    let mut v = s(&["qemu-img", "create", "-q", "-f", "qcow2"]);
    if let Some(b) = backing {
        v.extend(s(&["-F", "qcow2", "-b", b]));
    }
    v.extend([path.to_string(), size.to_string()]);
    v
}

/// The first sync: every block of the frozen `base` into the (zeroed)
/// cache behind `url`, at most `rate` bytes/s. Blocks that read as zero are
/// skipped (the cache reads zero there already).
pub fn copy_all(base: &str, url: &str, rate: u64) -> Vec<String> {
    s(&[
        "qemu-img",
        "convert",
        "-U",
        "-n",
        "--target-is-zero",
        "-r",
        &rate.to_string(),
        "-f",
        "qcow2",
        "-O",
        "raw",
        base,
        url,
    ])
}

/// A later sync, three steps on the source: a private copy of the frozen
/// overlay (QEMU still has the original open), re-pointed at the cache, and
/// committed into it: exactly the overlay's clusters travel, zeroed ones
/// included, at most `rate` bytes/s.
pub fn ship_overlay(overlay: &str, scratch: &str, url: &str, rate: u64) -> Vec<Vec<String>> {
    vec![
        s(&["cp", "--sparse=always", overlay, scratch]),
        s(&["qemu-img", "rebase", "-u", "-F", "raw", "-b", url, scratch]),
        s(&[
            "qemu-img",
            "commit",
            "-q",
            "-d",
            "-r",
            &rate.to_string(),
            scratch,
        ]),
    ]
}

/// What a sync may send at, bytes/s: half the room the controller sees on
/// the source's uplink (capacity less what it carries now), never more
/// than `max_bps` and never under `floor_bps`, so the applications keep
/// the link and the cache still moves.
pub fn rate_bytes(max_bps: f64, floor_bps: f64, capacity_bps: f64, tx_bps: f64) -> u64 {
    let room = (capacity_bps - tx_bps).max(0.0) / 2.0;
    (room.clamp(floor_bps.min(max_bps), max_bps) / 8.0) as u64
}

/// How long an evacuation waits for a sync in flight before it uses the
/// cache: while the sync's transfer (`bytes` at `rate_bps`, `elapsed_s`
/// since it began) should end in less than half the time the migration
/// would take to carry what cutting it leaves to carry (`carried_bytes` at
/// the migration's `copy_bps`: the overlay in flight; for a first copy the
/// whole disk), that long and a margin; None: waiting costs more than it
/// saves, cut it now. A sync between transfers (its snapshot or commit:
/// seconds) gets 30 s.
pub fn sync_wait(
    transfer: Option<(u64, f64, f64)>,
    carried_bytes: u64,
    copy_bps: f64,
) -> Option<std::time::Duration> {
    let Some((bytes, rate_bps, elapsed_s)) = transfer else {
        return Some(std::time::Duration::from_secs(30));
    };
    let remaining_s = (bytes as f64 * 8.0 / rate_bps.max(1.0) - elapsed_s).max(0.0);
    let carried_s = carried_bytes as f64 * 8.0 / copy_bps.max(1.0);
    (remaining_s < carried_s / 2.0)
        .then(|| std::time::Duration::from_secs_f64((remaining_s * 1.5 + 30.0).min(600.0)))
}

/// The state of one disk's copy as a migration would use it.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    /// The generation solive last completed, and whether a sync is running
    /// or the caching stopped with an error since.
    pub synced_generation: u64,
    pub healthy: bool,
    /// What the backup's marker says (None: missing or unreadable).
    pub marker: Option<Marker>,
    /// `qemu-img check` of the backup's copy.
    pub check: Result<(), String>,
    /// The copy's size as the guest sees it, and the disk's.
    pub cached_size: Option<u64>,
    pub disk_size: u64,
    /// The source's chain now (top first) and the one the last sync left.
    pub chain: Vec<String>,
    pub expected_chain: Vec<String>,
}

/// Whether the backup's copy can stand in for the disk's base (Ok), or why
/// the migration must copy the whole disk (Err, in words for the record).
pub fn usable(vm: &str, e: &Evidence) -> Result<(), String> {
    if e.synced_generation == 0 {
        return Err("stale: the first copy has not completed".into());
    }
    if !e.healthy {
        return Err("stale: the caching stopped since its last sync".into());
    }
    if e.chain != e.expected_chain {
        return Err(format!(
            "stale: the disk's chain is {:?}, the cache holds the base of {:?}",
            e.chain, e.expected_chain
        ));
    }
    match &e.marker {
        None => return Err("broken: the backup has no record of its copy".into()),
        Some(m) if m.vm != vm => {
            return Err(format!("broken: the backup's copy is of VM {:?}", m.vm))
        }
        Some(m) if m.generation != e.synced_generation => {
            return Err(format!(
                "stale: the backup holds generation {}, the last sync was {}",
                m.generation, e.synced_generation
            ))
        }
        _ => {}
    }
    if let Err(why) = &e.check {
        return Err(format!("broken: the backup's copy fails its check: {why}"));
    }
    match e.cached_size {
        Some(n) if n == e.disk_size => Ok(()),
        Some(n) => Err(format!(
            "broken: the backup's copy is {n} bytes, the disk {}",
            e.disk_size
        )),
        None => Err("broken: the backup's copy cannot be read".into()),
    }
}

/// `virtual-size` and `actual-size` from `qemu-img info --output=json`.
pub fn image_sizes(info: &str) -> Option<(u64, u64)> {
    let v: serde_json::Value = serde_json::from_str(info).ok()?;
    Some((
        v.get("virtual-size")?.as_u64()?,
        v.get("actual-size").and_then(|a| a.as_u64()).unwrap_or(0),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlays_sit_next_to_their_base_and_do_not_nest_names() {
        assert_eq!(
            overlay_path("/var/lib/libvirt/images/disk.qcow2", "17"),
            "/var/lib/libvirt/images/disk.solive-17.qcow2"
        );
        assert_eq!(
            overlay_path("/i/disk.solive-3.qcow2", "4"),
            "/i/disk.solive-4.qcow2"
        );
        assert_eq!(overlay_path("disk.img", "1"), "./disk.img.solive-1.qcow2");
    }

    fn stored(state: CacheState) -> CacheStatus {
        CacheStatus {
            vm: "d".into(),
            source: "h1".into(),
            backup_host: "h2".into(),
            state,
            disks: vec![super::super::DiskCache {
                target: "vda".into(),
                base: "/i/d.qcow2".into(),
                top: "/i/d.solive-9.qcow2".into(),
                capacity_bytes: 1 << 30,
                cached_bytes: 600 << 20,
                dirty_bytes: 3 << 20,
            }],
            generation: 4,
            synced_at: Some(1000.0),
            lag_s: Some(12.0),
            sent_bytes: 700 << 20,
            rate_bps: Some(25e6),
            reason: None,
            transfer: Some(super::super::Transfer {
                bytes: 5 << 20,
                started_at: 1010.0,
                rate_bps: 25e6,
            }),
        }
    }

    #[test]
    fn a_restart_trusts_only_a_cache_stored_between_syncs() {
        // Synced: goes on as it was (its next sync is incremental).
        let Resume::Run(s) = resume(stored(CacheState::Synced), false) else {
            panic!("a synced cache runs on");
        };
        assert_eq!((s.generation, s.synced_at), (4, Some(1000.0)));
        assert_eq!(s.disks[0].cached_bytes, 600 << 20);
        assert_eq!((s.transfer, s.lag_s), (None, None));
        // A sync in flight: the copy is made anew, and the status says why.
        for st in [CacheState::Syncing, CacheState::Copying] {
            let Resume::Run(s) = resume(stored(st), false) else {
                panic!("{st:?} runs again");
            };
            assert_eq!(s.state, CacheState::Copying);
            assert_eq!((s.generation, s.synced_at), (0, None));
            assert_eq!(s.disks[0].cached_bytes, 0);
            assert!(s.reason.unwrap().contains("made anew"));
        }
        // Taken by an evacuation that was interrupted: shown, stopped.
        let Resume::Show(s) = resume(stored(CacheState::InUse), false) else {
            panic!("an in-use cache is not resumed");
        };
        assert_eq!(s.state, CacheState::Stopped);
        assert!(s.reason.unwrap().contains("POST /v1/caches"));
        // Stopped: shown as it was; deleted: forgotten.
        let mut stopped = stored(CacheState::Stopped);
        stopped.reason = Some("the backup host h2 does not answer".into());
        assert_eq!(
            resume(stopped.clone(), false),
            Resume::Show(CacheStatus {
                transfer: None,
                lag_s: None,
                ..stopped
            })
        );
        assert_eq!(resume(stored(CacheState::Synced), true), Resume::Forget);
    }

    #[test]
    fn a_sync_takes_half_the_room_within_bounds() {
        let mib = 8.0 * 1_048_576.0;
        // 200 Mbit/s link carrying 100: half of the 100 left, under the max.
        assert_eq!(rate_bytes(100e6, mib, 200e6, 100e6), 50e6 as u64 / 8);
        // An idle link: the max.
        assert_eq!(rate_bytes(80e6, mib, 200e6, 0.0), 10_000_000);
        // A full one: the floor, so the cache still moves.
        assert_eq!(rate_bytes(80e6, mib, 200e6, 250e6), 1_048_576);
    }

    fn evidence() -> Evidence {
        Evidence {
            synced_generation: 3,
            healthy: true,
            marker: Some(Marker {
                vm: "d".into(),
                source: "h1".into(),
                generation: 3,
            }),
            check: Ok(()),
            cached_size: Some(1 << 30),
            disk_size: 1 << 30,
            chain: vec!["/i/d.solive-9.qcow2".into(), "/i/d.qcow2".into()],
            expected_chain: vec!["/i/d.solive-9.qcow2".into(), "/i/d.qcow2".into()],
        }
    }

    #[test]
    fn a_cache_is_used_only_when_every_fact_agrees() {
        assert_eq!(usable("d", &evidence()), Ok(()));
        type Change = Box<dyn Fn(&mut Evidence)>;
        let cases: Vec<(Change, &str)> = vec![
            (Box::new(|e| e.synced_generation = 0), "stale: the first"),
            (
                Box::new(|e| e.healthy = false),
                "stale: the caching stopped",
            ),
            (Box::new(|e| e.chain.reverse()), "stale: the disk's chain"),
            (
                Box::new(|e| e.marker = None),
                "broken: the backup has no record",
            ),
            (
                Box::new(|e| e.marker.as_mut().unwrap().generation = 2),
                "stale: the backup holds generation 2",
            ),
            (
                Box::new(|e| e.marker.as_mut().unwrap().vm = "x".into()),
                "broken: the backup's copy is of VM",
            ),
            (
                Box::new(|e| e.check = Err("corrupt".into())),
                "fails its check: corrupt",
            ),
            (Box::new(|e| e.cached_size = Some(5)), "is 5 bytes"),
            (Box::new(|e| e.cached_size = None), "cannot be read"),
        ];
        for (change, want) in cases {
            let mut e = evidence();
            change(&mut e);
            let why = usable("d", &e).unwrap_err();
            assert!(why.contains(want), "{why:?} lacks {want:?}");
        }
    }

    #[test]
    fn an_evacuation_waits_for_a_sync_only_when_that_is_quicker() {
        let mb = 1_000_000;
        // A first copy of 30 MB at 24 Mbit/s, 5 s in: 5 s left; the
        // migration would carry the whole 500 MB disk at 40 Mbit/s in 100 s:
        // wait 5 * 1.5 + 30 s.
        let w = sync_wait(Some((30 * mb, 24e6, 5.0)), 500 * mb, 40e6).unwrap();
        assert!((w.as_secs_f64() - 37.5).abs() < 1e-6, "{w:?}");
        // A later sync of 30 MB, 8 s in: 2 s left, under half the 6 s the
        // migration would take to carry its overlay if cut: wait. 1 s in
        // (9 s left): cut it.
        assert!(sync_wait(Some((30 * mb, 24e6, 8.0)), 30 * mb, 40e6).is_some());
        assert_eq!(sync_wait(Some((30 * mb, 24e6, 1.0)), 30 * mb, 40e6), None);
        // 270 MB at 25 Mbit/s, 10 s in: 76 s left, more than half of a
        // full copy's 120 s: copy it all now.
        assert_eq!(
            sync_wait(Some((270 * mb, 25e6, 10.0)), 600 * mb, 40e6),
            None
        );
        // Between transfers (snapshot, commit): a short wait.
        assert_eq!(
            sync_wait(None, 1, 1.0),
            Some(std::time::Duration::from_secs(30))
        );
        // Never more than ten minutes.
        let w = sync_wait(Some((10_000 * mb, 8e6, 0.0)), 1_000_000 * mb, 8e6).unwrap();
        assert_eq!(w.as_secs(), 600);
    }

    #[test]
    fn a_cut_sync_leaves_only_its_own_layers_to_remove() {
        let base = "/i/d.qcow2";
        let layer = overlay_path(base, "1");
        let stale = stale_files(
            base,
            &[layer.clone(), base.into(), "/i/golden.qcow2".into()],
        );
        assert_eq!(stale, [layer.clone(), format!("{layer}.ship")]);
        assert!(stale_files(base, &[base.into()]).is_empty());
        // A layer that is not solive's stays.
        assert!(stale_files(base, &["/i/user.qcow2".into(), base.into()]).is_empty());
    }

    #[test]
    fn helper_command_lines() {
        let url = nbd_url("10.0.0.2", 10809);
        assert_eq!(url, "nbd://10.0.0.2:10809/cache");
        let ship = ship_overlay("/i/o.qcow2", "/i/o.ship", &url, 1000);
        assert_eq!(ship[1][6], url);
        assert_eq!(ship[2].last().unwrap(), "/i/o.ship");
        assert!(copy_all("/i/b.qcow2", &url, 5).contains(&"--target-is-zero".to_string()));
        assert_eq!(
            create("/i/o.qcow2", 7, Some("/i/b.qcow2")),
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                "/i/b.qcow2",
                "/i/o.qcow2",
                "7"
            ]
        );
        assert_eq!(
            image_sizes(r#"{"virtual-size": 10, "actual-size": 4, "format": "qcow2"}"#),
            Some((10, 4))
        );
        assert_eq!(image_sizes("not json"), None);
    }
}
