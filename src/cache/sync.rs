//! One cached VM's task: a sync every `[cache] every`, the dirty figures
//! refreshed in between, and the checks an evacuation makes before it
//! uses the copy. The helpers (`qemu-img`, `qemu-nbd`, `cp`, `cat`) run on
//! the hosts through their `exec` prefix as child processes that end with
//! the controller ([`crate::child`]), each under a time limit: a cut sync,
//! or a killed controller, leaves no helper behind, and no wait is without
//! a bound.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

use super::plan::{self, Evidence, Marker};
use super::{CacheHost, CacheState, Caches, Shared, Taken};

/// A short helper (create, check, info, cat, rm).
const SHORT: Duration = Duration::from_secs(60);
/// How often the dirty figures are refreshed between syncs.
const REFRESH: Duration = Duration::from_secs(2);

/// How a cache's task is stopped.
#[derive(Debug, Clone, Default)]
pub(super) struct Cut {
    /// No more syncs; a transfer in flight is cut.
    pub stop: CancellationToken,
    /// Set before `stop` by an evacuation that migrates over the copy: a
    /// cut sync then leaves the source's chain as it is, its overlay in
    /// flight below the new one, for [`prepare`] to merge and the migration
    /// to carry. Without it a cut sync commits that overlay on the source
    /// (the chain back to one overlay, the backup's copy stale).
    pub hand_over: CancellationToken,
}

/// The task: syncs until stopped or until one fails (then the cache is
/// `stopped` with the reason; the VM is not touched again).
pub(super) async fn run(
    caches: Caches,
    status: Arc<Shared>,
    round: Arc<tokio::sync::Mutex<()>>,
    cut: Cut,
) {
    let stop = &cut.stop;
    loop {
        {
            let _g = round.lock().await;
            if stop.is_cancelled() {
                return;
            }
            // Not dropped on a stop: the sync notices it, cuts its transfer
            // and leaves the source's chain whole.
            let r = sync_once(&caches, &status, &cut).await;
            status.set(|s| s.transfer = None);
            if stop.is_cancelled() {
                return;
            }
            if let Err(why) = r {
                tracing::warn!(vm = status.get().vm, error = %why, "caching stopped");
                status.set(|s| {
                    s.state = CacheState::Stopped;
                    s.reason = Some(why);
                });
                return;
            }
        }
        let next = Instant::now() + caches.inner.settings.every;
        while Instant::now() < next {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
            refresh_dirty(&caches, &status).await;
        }
    }
}

/// Runs `argv` on `host` (with its `exec` prefix), feeding it `input`;
/// its stdout, or its last line of stderr as the error.
async fn helper(
    host: &CacheHost,
    argv: &[String],
    input: Option<Vec<u8>>,
    limit: Duration,
) -> Result<String, String> {
    let full: Vec<String> = host.exec.iter().chain(argv.iter()).cloned().collect();
    let mut cmd = crate::child::command(&full)?;
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", full[0]))?;
    if let (Some(data), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(&data)
            .await
            .map_err(|e| format!("{}: {e}", argv[0]))?;
    }
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .map_err(|_| format!("{} did not end within {} s", argv[0], limit.as_secs()))?
        .map_err(|e| format!("{}: {e}", argv[0]))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().rev().find(|l| !l.trim().is_empty());
    Err(format!(
        "{} failed ({}): {}",
        argv[..2.min(argv.len())].join(" "),
        out.status,
        last.unwrap_or("no message")
    ))
}

/// A helper that connects to a server just started: a refused connection
/// is tried again for a few seconds (`qemu-nbd` needs a moment to listen).
/// A server that has exited meanwhile is started again (the first run
/// after a controller's restart once found none listening for 10 s, and
/// said nothing of why), and its last words are in the error if the
/// connection never comes.
async fn helper_connecting(
    host: &CacheHost,
    argv: &[String],
    limit: Duration,
    server: &mut NbdServer,
) -> Result<(), String> {
    let started = Instant::now();
    loop {
        match helper(host, argv, None, limit).await {
            Ok(_) => return Ok(()),
            Err(e)
                if (e.contains("refused") || e.contains("Failed to connect"))
                    && started.elapsed() < Duration::from_secs(10) =>
            {
                server.restart_if_exited().await?;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                server.restart_if_exited().await?;
                return Err(match &server.exited {
                    Some(why) => format!("{e} (qemu-nbd on the backup: {why})"),
                    None => e,
                });
            }
        }
    }
}

/// `qemu-nbd` on the backup, serving its copy for one transfer.
struct NbdServer {
    argv: Vec<String>,
    child: tokio::process::Child,
    /// How the last run that exited by itself ended (status, last line of
    /// its stderr).
    exited: Option<String>,
}

impl NbdServer {
    fn start(argv: Vec<String>) -> Result<NbdServer, String> {
        let child = Self::spawn(&argv)?;
        Ok(NbdServer {
            argv,
            child,
            exited: None,
        })
    }

    fn spawn(argv: &[String]) -> Result<tokio::process::Child, String> {
        crate::child::command(argv)?
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start qemu-nbd on the backup: {e}"))
    }

    /// Starts it again if it has exited, keeping why it did.
    async fn restart_if_exited(&mut self) -> Result<(), String> {
        let Ok(Some(status)) = self.child.try_wait() else {
            return Ok(());
        };
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            use tokio::io::AsyncReadExt;
            // It has exited: its pipe ends at once (bounded all the same).
            let _ = tokio::time::timeout(Duration::from_secs(2), e.read_to_string(&mut err)).await;
        }
        let last = err.lines().rev().find(|l| !l.trim().is_empty());
        let why = format!("exited ({status}): {}", last.unwrap_or("no message"));
        tracing::warn!(why = %why, "qemu-nbd on the backup exited before its client came; started again");
        self.exited = Some(why);
        self.child = Self::spawn(&self.argv)?;
        Ok(())
    }
}

/// Sizes of an image on `host`, read while QEMU may hold it (`-U`).
async fn sizes(host: &CacheHost, image: &str) -> Result<(u64, u64), String> {
    let out = helper(
        host,
        &["qemu-img", "info", "-U", "--output=json", image].map(String::from),
        None,
        SHORT,
    )
    .await?;
    plan::image_sizes(&out).ok_or_else(|| format!("qemu-img info {image}: no sizes"))
}

/// One transfer into `image` on the backup: its NBD server for the time of
/// `steps` (run on the source; `{url}` is where they write).
#[allow(clippy::too_many_arguments)]
async fn transfer(
    caches: &Caches,
    status: &Shared,
    stop: &CancellationToken,
    source: &CacheHost,
    backup: &CacheHost,
    image: &str,
    bytes: u64,
    steps: impl FnOnce(&str, u64) -> Vec<Vec<String>>,
) -> Result<(), String> {
    let address = backup
        .address
        .as_deref()
        .ok_or("the backup has no address")?;
    let lease = caches
        .inner
        .ports
        .take()
        .ok_or("every cache port is in use")?;
    // A low-priority reservation on the source's uplink: a meter holds the
    // copy to its share of the room, re-set every period. Where the switch
    // cannot (no controller, queue mode) qemu-img's own cap at the room
    // when the transfer starts is all that holds it.
    let source_name = status.get().source;
    let background = background(caches, &source_name, source, address, lease.port).await;
    let settings = &caches.inner.settings;
    let (rate, cap) = match background.as_ref().map(|b| b.held.rate_bps) {
        Some(Some(r)) => ((r / 8.0) as u64, (settings.max_rate_bps / 8.0) as u64),
        Some(None) => (
            rate(caches, &source_name).await,
            (settings.max_rate_bps / 8.0) as u64,
        ),
        None => {
            let r = rate(caches, &source_name).await;
            (r, r)
        }
    };
    // However slow its share gets, not below the floor.
    let limit = transfer_limit(bytes, rate.min((settings.floor_rate_bps / 8.0) as u64));
    status.set(|s| {
        s.rate_bps = Some(rate as f64 * 8.0);
        s.transfer = Some(super::Transfer {
            bytes,
            started_at: super::now_s(),
            rate_bps: rate as f64 * 8.0,
        })
    });
    let url = plan::nbd_url(address, lease.port);
    let serve: Vec<String> = backup
        .exec
        .iter()
        .cloned()
        .chain(plan::serve(image, address, lease.port))
        .collect();
    let mut server = NbdServer::start(serve)?;
    let run_steps = async {
        for step in steps(&url, cap) {
            let connects = step.iter().any(|a| a == &url);
            if connects {
                helper_connecting(source, &step, limit, &mut server).await?;
            } else {
                helper(source, &step, None, limit).await?;
            }
        }
        Ok(())
    };
    // The backup is watched while the copy runs: a host that stops
    // answering ends the transfer (its helpers are killed) at once, not
    // when the next sync starts.
    let watch = async {
        loop {
            tokio::time::sleep(REFRESH).await;
            if let Err(e) = backup.hv.list().await {
                return Err::<(), String>(format!("the backup host stopped answering: {e}"));
            }
            // The share the controller gives it now.
            if let Some(r) = match &background {
                Some(b) => b.rate_bps().await,
                None => None,
            } {
                status.set(|s| {
                    s.rate_bps = Some(r);
                    if let Some(t) = s.transfer.as_mut() {
                        t.rate_bps = r;
                    }
                });
            }
        }
    };
    let result = tokio::select! {
        r = run_steps => r,
        r = watch => r,
        _ = stop.cancelled() => Err("cut: the caching was stopped".to_string()),
    };
    status.set(|s| s.transfer = None);
    // The server ends when its client has gone; it is killed otherwise.
    if tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .is_err()
    {
        let _ = server.child.kill().await;
    }
    result
}

/// The transfer from `source` to `address:port` as a background transfer of
/// the controller's, if the controller can hold it there (meter mode).
async fn background(
    caches: &Caches,
    name: &str,
    source: &CacheHost,
    address: &str,
    port: u16,
) -> Option<crate::controller::BackgroundLease> {
    let controller = caches.inner.controller.as_ref()?;
    let parse = |a: Option<&str>| a?.parse::<std::net::Ipv4Addr>().ok();
    let (src, dst) = (parse(source.address.as_deref())?, parse(Some(address))?);
    let s = &caches.inner.settings;
    let req = crate::controller::background::BackgroundRequest {
        host: name.to_string(),
        src,
        dst,
        tcp_dst: port,
        floor_bps: s.floor_rate_bps,
        max_bps: s.max_rate_bps,
    };
    match controller.start_background(req).await {
        Ok(b) if b.held.enforced => Some(b),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cache transfer not reserved on the switch");
            None
        }
    }
}

/// The time limit of a transfer of `bytes` at `rate` bytes/s: twice the
/// time it should take, plus a minute.
fn transfer_limit(bytes: u64, rate: u64) -> Duration {
    Duration::from_secs(60 + 2 * bytes / rate.max(1))
}

async fn rate(caches: &Caches, source: &str) -> u64 {
    let s = &caches.inner.settings;
    let view = match &caches.inner.controller {
        Some(c) => c.host(source).await.ok().flatten(),
        None => None,
    };
    let (capacity, tx) = view
        .map(|v| {
            let tx = v.uplink_out_bps().unwrap_or(0.0);
            (v.capacity_mbps as f64 * 1e6, tx)
        })
        .unwrap_or((s.max_rate_bps * 2.0, 0.0));
    plan::rate_bytes(s.max_rate_bps, s.floor_rate_bps, capacity, tx)
}

/// One sync of every cached disk of the VM (see the module docs of
/// [`super`] for the steps).
async fn sync_once(caches: &Caches, status: &Shared, cut: &Cut) -> Result<(), String> {
    let stop = &cut.stop;
    let st = status.get();
    let source = caches.host(&st.source)?;
    let backup = caches.host(&st.backup_host)?;
    // The backup must still answer as a host (its libvirtd): a host that
    // went away stops the caching before anything is touched.
    backup
        .hv
        .list()
        .await
        .map_err(|e| format!("the backup host {} does not answer: {e}", st.backup_host))?;
    caches.acting()?;
    settle_jobs(source, &st.vm).await?;
    let first = st.generation == 0;
    status.set(|s| {
        s.state = if first {
            CacheState::Copying
        } else {
            CacheState::Syncing
        }
    });
    let disks = source
        .hv
        .disks(&st.vm)
        .await
        .map_err(|e| format!("cannot read the VM's disks: {e}"))?;
    let stamp = format!("{}", (super::now_s() * 1000.0) as u64);
    let overlays: Vec<(String, String)> = st
        .disks
        .iter()
        .map(|d| (d.target.clone(), plan::overlay_path(&d.base, &stamp)))
        .collect();
    caches.acting()?;
    source
        .hv
        .snapshot_disks(&st.vm, overlays.clone())
        .await
        .map_err(|e| format!("cannot put a new overlay on the disks: {e}"))?;
    let taken_at = super::now_s();
    if stop.is_cancelled() {
        return Err("cut: the caching was stopped".into());
    }
    let mut sent = 0;
    let mut cached = Vec::new();
    for (i, (d, (_, new_top))) in st.disks.iter().zip(&overlays).enumerate() {
        let now = disks
            .iter()
            .find(|x| x.target == d.target)
            .ok_or_else(|| format!("disk {} is gone", d.target))?;
        let old_top = now.source.clone().unwrap_or_default();
        let base = &d.base;
        // Incremental only over the chain the last completed sync left (its
        // top, on its base): anything else (a sync cut after it committed
        // its overlay on the source but before its new state was stored,
        // seen by a restarted controller) means the copy may hold part of
        // an overlay the source no longer has, so it is made whole again.
        let incremental =
            !first && now.backing == [base.clone()] && old_top != *base && old_top == d.top;
        let (shipped, base_bytes) = if incremental {
            let (_, bytes) = sizes(source, &old_top).await?;
            let scratch = plan::scratch_path(&old_top);
            let r = transfer(
                caches,
                status,
                stop,
                source,
                backup,
                base,
                bytes,
                |url, cap| plan::ship_overlay(&old_top, &scratch, url, cap),
            )
            .await;
            let _ = helper(
                source,
                &["rm", "-f", &scratch].map(String::from),
                None,
                SHORT,
            )
            .await;
            if r.is_err() && cut.hand_over.is_cancelled() {
                // An evacuation takes the copy as it is: the backup's base
                // is the last sync's with some of `old_top`'s clusters
                // written, every one of them still in `old_top`, which the
                // migration carries ([`prepare`]). So the marker keeps the
                // last sync's generation and the chain stays.
                return Err("cut: handed over to an evacuation".into());
            }
            // Otherwise the source's chain goes back to one overlay
            // whatever the transfer did: the source is the truth, the
            // cache may lag.
            let c = commit(caches, source, &st.vm, &d.target, base, &old_top).await;
            r.map_err(|e| format!("shipping {old_top} to {}: {e}", st.backup_host))?;
            c?;
            // The base has just changed (the commit): read again.
            let base_bytes = sizes(source, base).await?.1;
            // This disk's copy is the source's base now, its overlay the
            // new one: so an evacuation that cuts the sync at a later disk
            // finds this one's chain as expected.
            status.set(|s| {
                if let Some(x) = s.disks.get_mut(i) {
                    x.top = new_top.clone();
                    x.cached_bytes = base_bytes;
                }
            });
            (bytes, base_bytes)
        } else {
            if old_top != *base {
                commit(caches, source, &st.vm, &d.target, base, &old_top).await?;
                // A sync cut without its cleanup (the controller killed)
                // leaves layers under the top the commit merged, and its
                // private copy of the overlay it was shipping: in no chain
                // now.
                let stale = plan::stale_files(base, &now.backing);
                if !stale.is_empty() {
                    let mut rm = vec!["rm".to_string(), "-f".to_string()];
                    rm.extend(stale);
                    let _ = helper(source, &rm, None, SHORT).await;
                }
            }
            // The copy is about to be rewritten: until it is whole again no
            // evacuation may take it. (A first copy too: the backup may hold
            // a marker from before a restart.)
            let _ = helper(
                backup,
                &["rm", "-f", &plan::marker_path(base)].map(String::from),
                None,
                SHORT,
            )
            .await;
            let (_, bytes) = sizes(source, base).await?;
            helper(
                backup,
                &plan::create(base, d.capacity_bytes, None),
                None,
                SHORT,
            )
            .await
            .map_err(|e| format!("cannot make the copy on {}: {e}", st.backup_host))?;
            transfer(
                caches,
                status,
                stop,
                source,
                backup,
                base,
                bytes,
                |url, cap| vec![plan::copy_all(base, url, cap)],
            )
            .await
            .map_err(|e| format!("copying {base} to {}: {e}", st.backup_host))?;
            // The base was frozen throughout: what was sent is what it holds.
            (bytes, bytes)
        };
        sent += shipped;
        cached.push((new_top.clone(), base_bytes));
    }
    let generation = st.generation + 1;
    for d in &st.disks {
        let marker = Marker {
            vm: st.vm.clone(),
            source: st.source.clone(),
            generation,
        };
        let json = serde_json::to_vec(&marker).map_err(|e| e.to_string())?;
        helper(
            backup,
            &[
                "sh".to_string(),
                "-c".to_string(),
                "cat > \"$0\"".to_string(),
                plan::marker_path(&d.base),
            ],
            Some(json),
            SHORT,
        )
        .await
        .map_err(|e| format!("cannot record the sync on {}: {e}", st.backup_host))?;
    }
    status.set(|s| {
        s.generation = generation;
        s.synced_at = Some(taken_at);
        // An evacuation elsewhere may have stopped the cache meanwhile
        // (`Caches::take` without the sync lock): it stays stopped.
        if s.state != CacheState::Stopped {
            s.state = CacheState::Synced;
        }
        s.sent_bytes += sent;
        s.reason = None;
        for (d, (top, bytes)) in s.disks.iter_mut().zip(cached) {
            d.top = top;
            d.cached_bytes = bytes;
            d.dirty_bytes = 0;
        }
    });
    tracing::info!(vm = st.vm, generation, sent, "disk cache synced");
    Ok(())
}

/// Commits `top` into `base` on the source and removes `top`'s file (it is
/// in no chain any more).
async fn commit(
    caches: &Caches,
    source: &CacheHost,
    vm: &str,
    target: &str,
    base: &str,
    top: &str,
) -> Result<(), String> {
    caches.acting()?;
    source
        .hv
        .commit_disk(vm, target, base, top, crate::hypervisor::COMMIT_LIMIT)
        .await
        .map_err(|e| format!("cannot commit {top} into {base}: {e}"))?;
    let _ = helper(source, &["rm", "-f", top].map(String::from), None, SHORT).await;
    Ok(())
}

/// Finishes a commit a killed controller left on the VM's disks (its
/// snapshot, commit or migration would fail on it).
async fn settle_jobs(source: &CacheHost, vm: &str) -> Result<(), String> {
    crate::hypervisor::settle_left_jobs(source.hv.as_ref(), vm)
        .await
        .map_err(|e| format!("a block job on the VM's disks: {e}"))
}

async fn refresh_dirty(caches: &Caches, status: &Shared) {
    let st = status.get();
    let Ok(source) = caches.host(&st.source) else {
        return;
    };
    let mut dirty = Vec::new();
    for d in &st.disks {
        dirty.push(sizes(source, &d.top).await.map(|(_, a)| a).ok());
    }
    status.set(|s| {
        for (d, n) in s.disks.iter_mut().zip(dirty) {
            if let Some(n) = n {
                d.dirty_bytes = n;
            }
        }
    });
}

/// The checks an evacuation makes before it uses the copy, and the empty
/// top images it then needs on the backup (called with the sync lock held
/// and the syncs stopped). `cut`: the evacuation cut a sync (why): a disk
/// whose chain holds that sync's new overlay on the one it was shipping
/// gets the two merged first (an active commit on the source), so the top
/// image the migration carries holds everything the backup may lack.
pub(super) async fn prepare(
    caches: &Caches,
    status: &Shared,
    cut: Option<&str>,
) -> Result<Taken, String> {
    let st = status.get();
    let source = caches.host(&st.source)?;
    let backup = caches.host(&st.backup_host)?;
    caches.acting()?;
    settle_jobs(source, &st.vm)
        .await
        .map_err(|e| format!("stale: {e}"))?;
    let disks = source
        .hv
        .disks(&st.vm)
        .await
        .map_err(|e| format!("stale: cannot read the VM's disks: {e}"))?;
    let mut saved = 0;
    let mut merged = 0;
    for d in &st.disks {
        let now = disks.iter().find(|x| x.target == d.target);
        let mut chain: Vec<String> = now
            .map(|n| n.source.iter().chain(&n.backing).cloned().collect())
            .unwrap_or_default();
        if cut.is_some() && chain.len() == 3 && chain[1] == d.top && chain[2] == d.base {
            let (_, bytes) = sizes(source, &d.top).await?;
            commit(caches, source, &st.vm, &d.target, &d.top, &chain[0])
                .await
                .map_err(|e| format!("stale: {e}"))?;
            chain.remove(0);
            merged += bytes;
        }
        let marker = helper(
            backup,
            &["cat".to_string(), plan::marker_path(&d.base)],
            None,
            SHORT,
        )
        .await
        .ok()
        .and_then(|m| serde_json::from_str::<Marker>(&m).ok());
        let check = helper(
            backup,
            &["qemu-img", "check", "-q", &d.base].map(String::from),
            None,
            SHORT,
        )
        .await
        .map(|_| ());
        let evidence = Evidence {
            synced_generation: st.generation,
            // A sync cut for this evacuation left the copy as usable as
            // the last one that completed.
            healthy: st.state == CacheState::Synced
                || (cut.is_some() && st.state == CacheState::Syncing),
            marker,
            check,
            cached_size: sizes(backup, &d.base).await.ok().map(|(v, _)| v),
            disk_size: now.map_or(d.capacity_bytes, |n| n.capacity_bytes),
            chain,
            expected_chain: vec![d.top.clone(), d.base.clone()],
        };
        plan::usable(&st.vm, &evidence)?;
    }
    for d in &st.disks {
        if let Err(e) = helper(
            backup,
            &plan::create(&d.top, d.capacity_bytes, Some(&d.base)),
            None,
            SHORT,
        )
        .await
        {
            for d in &st.disks {
                let _ = helper(backup, &["rm", "-f", &d.top].map(String::from), None, SHORT).await;
            }
            return Err(format!("broken: cannot put the top image on the copy: {e}"));
        }
        saved += d.cached_bytes;
    }
    let mut note = format!(
        "cached on {}: generation {}, {:.0} s old; only the blocks written since were copied",
        st.backup_host,
        st.generation,
        st.synced_at.map_or(0.0, |t| super::now_s() - t)
    );
    if let Some(why) = cut {
        note += &format!(
            " ({why}: it was cut, and its {} MiB went with the migration)",
            merged >> 20
        );
    }
    Ok(Taken::Incremental {
        saved_bytes: saved,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that exits before its client comes is started again, and
    /// what it said is kept for the error.
    #[tokio::test]
    async fn a_server_that_exited_is_started_again_and_says_why() {
        let argv: Vec<String> = [
            "sh",
            "-c",
            "echo 'Failed to get \"write\" lock' >&2; exit 1",
        ]
        .map(String::from)
        .to_vec();
        let mut server = NbdServer::start(argv).unwrap();
        server.child.wait().await.unwrap();
        server.restart_if_exited().await.unwrap();
        assert_eq!(
            server.exited.as_deref(),
            Some("exited (exit status: 1): Failed to get \"write\" lock")
        );
        // The new run is a new process, which exits the same way.
        assert!(server.child.wait().await.is_ok());
        // One still running is left alone.
        let mut alive = NbdServer::start(["sleep", "30"].map(String::from).to_vec()).unwrap();
        alive.restart_if_exited().await.unwrap();
        assert!(alive.exited.is_none());
        alive.child.kill().await.unwrap();
    }
}
