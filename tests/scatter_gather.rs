//! The scatter-gather data path against real `redis-server` processes, each
//! started by the test on a port of its own in a temporary directory and
//! killed on drop. Needs `redis-server` (`ovs/install.sh` installs it): a
//! missing one is a failure, not a skip.
mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use solive::scatter::{self, GatherConfig, PushConfig, ScatterError};
use tokio::io::AsyncWriteExt;

struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("solive-redis-")
            .tempdir()
            .unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is missing: run `sudo ovs/install.sh`");
        let r = Redis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} does not answer"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli is missing: run `sudo ovs/install.sh`");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self) -> usize {
        self.cli(&["DBSIZE"]).trim().parse().unwrap_or(usize::MAX)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        self.kill();
    }
}

/// Deterministic, incompressible-looking test data (xorshift64*).
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

fn configs(vm: &str, stores: &[&Redis], chunk: usize) -> (PushConfig, GatherConfig) {
    let urls: Vec<String> = stores.iter().map(|r| r.url()).collect();
    let mut p = PushConfig::new(vm, urls.clone());
    p.chunk_bytes = chunk;
    p.timeout = Duration::from_secs(2);
    let mut g = GatherConfig::new(vm, urls);
    g.wait = Duration::from_secs(10);
    g.idle = Duration::from_secs(5);
    g.timeout = Duration::from_secs(2);
    (p, g)
}

async fn round_trip(
    vm: &str,
    stores: &[&Redis],
    input: Vec<u8>,
) -> (scatter::PushReport, scatter::GatherReport, Vec<u8>) {
    let (p, g) = configs(vm, stores, 64 * 1024);
    // The gatherer starts first and waits for the push, as on a real migration.
    let gathering = tokio::spawn(async move {
        let mut out = Vec::new();
        let r = scatter::gather(&g, &mut out, None::<tokio::io::Empty>).await;
        (r, out)
    });
    let pushed = scatter::push(&p, &input[..], None::<tokio::io::Sink>)
        .await
        .unwrap();
    let (gathered, out) = gathering.await.unwrap();
    (pushed, gathered.unwrap(), out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_data_round_trips_through_two_stores_and_is_cleared() {
    let (a, b) = (Redis::start(), Redis::start());
    let input = data(20 << 20, 7);
    let (pushed, gathered, out) = round_trip("vm1", &[&a, &b], input.clone()).await;
    assert!(out == input, "gathered stream differs from the pushed one");
    assert_eq!(pushed.bytes, input.len() as u64);
    assert_eq!(pushed.chunks, 320);
    assert_eq!(gathered.chunks, 320);
    assert_eq!(pushed.stream_crc, gathered.stream_crc);
    assert_eq!(
        pushed.stream_crc,
        format!("{:08x}", crc32fast::hash(&input))
    );
    // Both stores took part, and their counts add up.
    let per: Vec<u64> = pushed.per_store.iter().map(|s| s.chunks).collect();
    assert!(per.iter().all(|&c| c > 0), "{per:?}");
    assert_eq!(per.iter().sum::<u64>(), 320);
    let got: Vec<u64> = gathered.per_store.iter().map(|s| s.chunks).collect();
    assert_eq!(per, got);
    assert!(pushed.eviction_ms > 0.0 && pushed.eviction_ms <= pushed.input_closed_ms);
    eprintln!(
        "20 MiB through 2 stores: per store {per:?} chunks, eviction {:.0} ms, gather {:.0} ms",
        pushed.eviction_ms, gathered.total_ms
    );
    // After a successful gather the VM's keyspace is gone from both stores.
    assert_eq!((a.keys(), b.keys()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_vms_through_the_same_stores_do_not_clash() {
    let (a, b) = (Redis::start(), Redis::start());
    let (x, y) = (data(3 << 20, 1), data(3 << 20, 2));
    let both = [&a, &b];
    let (rx, ry) = tokio::join!(
        round_trip("vmx", &both, x.clone()),
        round_trip("vmy", &both, y.clone())
    );
    assert!(rx.2 == x && ry.2 == y);
    assert_eq!((a.keys(), b.keys()), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_stream_round_trips() {
    let a = Redis::start();
    let (pushed, gathered, out) = round_trip("vm1", &[&a], Vec::new()).await;
    assert!(out.is_empty());
    assert_eq!((pushed.chunks, gathered.chunks), (0, 0));
}

/// A store killed mid-transfer: the push fails promptly with the store's
/// error, stops reading its input (the source QEMU's connection breaks, so
/// its migration fails and the VM stays), and a waiting gatherer is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_killed_mid_transfer_fails_the_push_cleanly() {
    let (a, mut b) = (Redis::start(), Redis::start());
    let (p, g) = configs("vm1", &[&a, &b], 64 * 1024);
    let (mut feed, input) = tokio::io::duplex(256 * 1024);
    let pushing =
        tokio::spawn(async move { scatter::push(&p, input, None::<tokio::io::Sink>).await });
    let gathering = tokio::spawn(async move {
        let mut out = Vec::new();
        scatter::gather(&g, &mut out, None::<tokio::io::Empty>).await
    });
    // A source sending 4 MiB/s, for ever unless the push stops taking it.
    let block = data(64 * 1024, 3);
    let started = Instant::now();
    let mut fed = 0usize;
    let mut killed_at = None;
    let write_error = loop {
        match tokio::time::timeout(Duration::from_secs(20), feed.write_all(&block)).await {
            Ok(Ok(())) => fed += block.len(),
            Ok(Err(e)) => break e,
            Err(_) => panic!("the push neither read nor dropped its input for 20 s"),
        }
        if killed_at.is_none() && fed >= 8 << 20 {
            b.kill();
            killed_at = Some(Instant::now());
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "push never stopped reading"
        );
        tokio::time::sleep(Duration::from_millis(16)).await;
    };
    let killed_at = killed_at.expect("the push failed before the store was killed");
    eprintln!(
        "input refused after {:?}: {write_error}",
        killed_at.elapsed()
    );
    let err = tokio::time::timeout(Duration::from_secs(15), pushing)
        .await
        .expect("push hangs after its store died")
        .unwrap()
        .unwrap_err();
    // The push sees the dead store itself, or the gatherer saw it first and
    // aborted the push: either way the error names the store.
    assert!(
        matches!(err, ScatterError::Store { ref store, .. } if store == &b.url())
            || matches!(err, ScatterError::Aborted(ref why) if why.contains(&b.url())),
        "{err}"
    );
    let gerr = tokio::time::timeout(Duration::from_secs(15), gathering)
        .await
        .expect("gather hangs after the push failed")
        .unwrap()
        .unwrap_err();
    eprintln!("push: {err}\ngather: {gerr}");
    assert!(
        matches!(gerr, ScatterError::Aborted(_) | ScatterError::Store { .. }),
        "{gerr}"
    );
    // The surviving store holds nothing of the VM but, perhaps, the abort
    // marker (the gatherer may have cleared the keyspace after it).
    let left = a.cli(&["KEYS", "solive:sg:vm1:*"]);
    assert!(
        left.trim().is_empty() || left.trim() == "solive:sg:vm1:abort",
        "{left}"
    );
}

/// A store that stops answering (SIGSTOP) is an error within the response
/// timeout, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_store_fails_the_push_within_its_timeout() {
    let (a, b) = (Redis::start(), Redis::start());
    let (p, _) = configs("vm1", &[&a, &b], 64 * 1024);
    let (mut feed, input) = tokio::io::duplex(256 * 1024);
    let pushing =
        tokio::spawn(async move { scatter::push(&p, input, None::<tokio::io::Sink>).await });
    let block = data(64 * 1024, 4);
    for _ in 0..32 {
        feed.write_all(&block).await.unwrap();
    }
    support::run(Command::new("kill").args(["-STOP", &b.child.id().to_string()]));
    let stopped = Instant::now();
    let feeder = tokio::spawn(async move {
        while feed.write_all(&block).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let err = tokio::time::timeout(Duration::from_secs(20), pushing)
        .await
        .expect("push hangs on a frozen store")
        .unwrap()
        .unwrap_err();
    eprintln!(
        "frozen store: push failed after {:?}: {err}",
        stopped.elapsed()
    );
    assert!(
        matches!(err, ScatterError::Store { ref store, .. } if store == &b.url()),
        "{err}"
    );
    feeder.await.unwrap();
}

/// Pushes `input` completely (no gatherer), so the test can damage the stores.
async fn push_only(vm: &str, stores: &[&Redis], input: &[u8]) -> scatter::PushReport {
    let (p, _) = configs(vm, stores, 64 * 1024);
    scatter::push(&p, input, None::<tokio::io::Sink>)
        .await
        .unwrap()
}

async fn gather_err(vm: &str, stores: &[&Redis]) -> (ScatterError, Vec<u8>) {
    let (_, g) = configs(vm, stores, 64 * 1024);
    let mut out = Vec::new();
    let e = scatter::gather(&g, &mut out, None::<tokio::io::Empty>)
        .await
        .unwrap_err();
    (e, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_chunk_is_refused_and_nothing_of_it_is_delivered() {
    let (a, b) = (Redis::start(), Redis::start());
    let input = data(4 << 20, 5);
    push_only("vm1", &[&a, &b], &input).await;
    // Flip one payload byte of chunk 37, wherever the push put it.
    let key = "solive:sg:vm1:c:37";
    let holder = if a.cli(&["EXISTS", key]).trim() == "1" {
        &a
    } else {
        &b
    };
    assert_eq!(holder.cli(&["EXISTS", key]).trim(), "1");
    let off = 30 + 3 + 1000; // header, "vm1", into the payload
    let other = if input[37 * 65536 + 1000] == b'X' {
        "Y"
    } else {
        "X"
    };
    assert!(!holder
        .cli(&["SETRANGE", key, &off.to_string(), other])
        .trim()
        .is_empty());
    let (e, out) = gather_err("vm1", &[&a, &b]).await;
    eprintln!("corrupted chunk: {e}");
    assert!(
        matches!(e, ScatterError::Corrupt { ref what, .. } if what == "chunk 37"),
        "{e}"
    );
    // Everything before chunk 37 was delivered, nothing of it or after it.
    assert!(
        out.len() <= 37 * 65536 && input.starts_with(&out),
        "{} bytes delivered",
        out.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_chunk_or_a_stream_without_manifest_is_refused() {
    let (a, b) = (Redis::start(), Redis::start());
    let input = data(2 << 20, 6);
    push_only("vm1", &[&a, &b], &input).await;
    for r in [&a, &b] {
        r.cli(&["DEL", "solive:sg:vm1:c:5"]);
    }
    let (e, out) = gather_err("vm1", &[&a, &b]).await;
    eprintln!("missing chunk: {e}");
    assert!(matches!(e, ScatterError::Incomplete(_)), "{e}");
    assert!(out.len() <= 5 * 65536);

    // All chunks there but no manifest (the push never finished): after the
    // idle timeout, refused; the whole stream may have been delivered, but
    // the gather does not report success.
    push_only("vm2", &[&a, &b], &input).await;
    for r in [&a, &b] {
        r.cli(&["DEL", "solive:sg:vm2:end"]);
    }
    let (mut _p, mut g) = configs("vm2", &[&a, &b], 64 * 1024);
    g.idle = Duration::from_secs(1);
    let mut out = Vec::new();
    let e = scatter::gather(&g, &mut out, None::<tokio::io::Empty>)
        .await
        .unwrap_err();
    eprintln!("no manifest: {e}");
    assert!(matches!(e, ScatterError::Incomplete(_)), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gather_without_a_push_gives_up_after_its_wait() {
    let a = Redis::start();
    let (_, mut g) = configs("vm1", &[&a], 64 * 1024);
    g.wait = Duration::from_millis(500);
    let mut out = Vec::new();
    let e = scatter::gather(&g, &mut out, None::<tokio::io::Empty>)
        .await
        .unwrap_err();
    assert!(matches!(e, ScatterError::NoStream { .. }), "{e}");
    // And bad input is an error, not a panic.
    let bad = PushConfig::new("vm*1", vec![a.url()]);
    let e = scatter::push(&bad, &b""[..], None::<tokio::io::Sink>)
        .await
        .unwrap_err();
    assert!(matches!(e, ScatterError::BadVmName(_)), "{e}");
    let e = scatter::push(
        &PushConfig::new("vm1", vec![]),
        &b""[..],
        None::<tokio::io::Sink>,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ScatterError::Config(_)), "{e}");
}

/// The destination side failing (here: its QEMU's connection closes) stops
/// the push too, through the abort marker: with libvirt the source QEMU would
/// otherwise wait for ever for the destination's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_gather_stops_the_push() {
    let (a, b) = (Redis::start(), Redis::start());
    let (p, g) = configs("vm1", &[&a, &b], 64 * 1024);
    let (mut feed, input) = tokio::io::duplex(256 * 1024);
    let pushing =
        tokio::spawn(async move { scatter::push(&p, input, None::<tokio::io::Sink>).await });
    let (qemu, dest) = tokio::io::duplex(64 * 1024);
    drop(dest); // the destination QEMU is gone: every write fails
    let gathering =
        tokio::spawn(async move { scatter::gather(&g, qemu, None::<tokio::io::Empty>).await });
    let block = data(64 * 1024, 8);
    let feeder = tokio::spawn(async move {
        while feed.write_all(&block).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    let gerr = tokio::time::timeout(Duration::from_secs(20), gathering)
        .await
        .expect("gather hangs")
        .unwrap()
        .unwrap_err();
    assert!(matches!(gerr, ScatterError::Output(_)), "{gerr}");
    let perr = tokio::time::timeout(Duration::from_secs(10), pushing)
        .await
        .expect("push goes on after the gather failed")
        .unwrap()
        .unwrap_err();
    eprintln!("gather: {gerr}\npush: {perr}");
    assert!(
        matches!(perr, ScatterError::Aborted(ref why) if why.contains("gather")),
        "{perr}"
    );
    tokio::time::timeout(Duration::from_secs(10), feeder)
        .await
        .expect("the push still reads its input")
        .unwrap();
}
