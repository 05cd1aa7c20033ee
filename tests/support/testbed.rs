//! The QEMU + libvirt testbed (`mininet/testbed`) as the tests use it: a
//! testbed brought up in its own state directory and taken down on drop, so
//! a failed assertion does not leave it running. Callers hold
//! [`super::lock`] from before `up` until after `down`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::{repo_root, run};

/// Runs `mininet/testbed` with `args`.
pub fn testbed(args: &[&str]) -> Output {
    testbed_with(args, &[])
}

/// [`testbed`] with variables in its environment (`SOLIVE_LIBVIRT_DEBUG`).
pub fn testbed_with(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new("/usr/bin/python3")
        .arg(repo_root().join("mininet/testbed"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("cannot run mininet/testbed")
}

/// Fails (does not skip) when a tool the testbed needs is missing; `extra`
/// names what a test needs beyond the usual.
pub fn require_tools(extra: &[&str]) {
    for tool in [
        "virsh",
        "libvirtd",
        "virtlogd",
        "qemu-system-x86_64",
        "ovs-vswitchd",
        "ovs-ofctl",
        "gcc",
        "cpio",
    ]
    .iter()
    .chain(extra)
    {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap()
            .status
            .success();
        assert!(found, "{tool} is missing: run `sudo mininet/install.sh`");
    }
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "/usr/bin/python3 is missing"
    );
}

/// A testbed brought up in its own state directory and taken down on drop, so a
/// failed assertion does not leave it running.
pub struct Testbed {
    pub state: PathBuf,
    pub info: serde_json::Value,
    down: bool,
}

impl Testbed {
    pub fn up(topology: &str, state: &str) -> Testbed {
        Self::up_with(topology, state, &[])
    }

    /// [`Testbed::up`] with variables for `mininet/testbed up`:
    /// `("SOLIVE_LIBVIRT_DEBUG", "1")` has each host's libvirtd log its
    /// QEMU driver and migrations at debug level ([`Testbed::libvirtd_log`]).
    pub fn up_with(topology: &str, state: &str, env: &[(&str, &str)]) -> Testbed {
        require_tools(&[]);
        // Leftovers of a killed run.
        let _ = testbed(&["down", "--state", state]);
        let out = testbed_with(&["up", topology, "--state", state], env);
        let mut tb = Testbed {
            state: PathBuf::from(state),
            info: serde_json::Value::Null,
            down: false,
        };
        assert!(
            out.status.success(),
            "testbed up {topology} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let info = std::fs::read_to_string(tb.state.join("testbed.json")).unwrap();
        tb.info = serde_json::from_str(&info).unwrap();
        tb
    }

    pub fn host(&self, name: &str) -> &serde_json::Value {
        self.info["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == name)
            .unwrap_or_else(|| panic!("no host {name} in testbed.json"))
    }

    pub fn uri(&self, host: &str) -> String {
        self.host(host)["libvirt_uri"].as_str().unwrap().to_string()
    }

    pub fn virsh(&self, host: &str, args: &[&str]) -> String {
        run(Command::new("timeout")
            .args(["180", "virsh", "-q", "-c", &self.uri(host)])
            .args(args))
    }

    /// Panics unless `vm` runs on `host` and is alive there: libvirt says
    /// it runs, its console there shows no kernel panic, and it prints one
    /// more memory checksum (every 3 s, `mininet/guest/slworker.c`), then
    /// libvirt still says it runs. A domain that libvirt calls running is
    /// not enough: under TCG a guest has died right after a migration (a
    /// kernel panic on corrupted memory, see the README's Experiments), and
    /// it boots with `panic=-1` into a domain destroyed on reboot, which
    /// takes a moment. A dead guest is a finding, so the message has the
    /// end of its console there. Returns the fresh checksum.
    pub fn assert_running(&self, host: &str, vm: &str) -> String {
        self.assert_domain_running(host, vm);
        let n = self.memsums(host, vm).len();
        let sum = self.wait_memsums(host, vm, n + 1, 30)[n].clone();
        self.assert_domain_running(host, vm);
        sum
    }

    fn assert_domain_running(&self, host: &str, vm: &str) {
        let out = Command::new("timeout")
            .args(["180", "virsh", "-q", "-c", &self.uri(host), "domstate", vm])
            .output()
            .unwrap();
        let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let console = self.console(host, vm);
        if state != "running" || console.contains("Kernel panic") {
            let tail: Vec<&str> = console.lines().rev().take(25).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "{vm} is not running (or panicked) on {host} (state {state:?}; {}); the end of its console there:\n{}",
                String::from_utf8_lossy(&out.stderr).trim(),
                tail.join("\n")
            );
        }
    }

    /// The memory checksums guest `vm` printed on its console on `host`,
    /// oldest first (every 3 s, whatever its workload: see
    /// `mininet/guest/slworker.c`).
    pub fn memsums(&self, host: &str, vm: &str) -> Vec<String> {
        self.sums(host, vm, "memsum")
    }

    /// The disk checksums (of the disk's fill, after each full read) guest
    /// `vm` printed on `host`, oldest first.
    pub fn disksums(&self, host: &str, vm: &str) -> Vec<String> {
        self.sums(host, vm, "disksum")
    }

    fn sums(&self, host: &str, vm: &str, what: &str) -> Vec<String> {
        let tag = format!("slworker: {what} ");
        self.console(host, vm)
            .lines()
            .filter_map(|l| l.split(tag.as_str()).nth(1))
            .filter_map(|r| r.split_whitespace().next())
            .map(str::to_string)
            .collect()
    }

    /// Waits until `vm` has printed at least `n` checksums on `host`.
    pub fn wait_memsums(&self, host: &str, vm: &str, n: usize, secs: u64) -> Vec<String> {
        self.wait_sums(host, vm, "memsum", n, secs)
    }

    /// Waits until `vm` has printed at least `n` disk checksums on `host`.
    pub fn wait_disksums(&self, host: &str, vm: &str, n: usize, secs: u64) -> Vec<String> {
        self.wait_sums(host, vm, "disksum", n, secs)
    }

    fn wait_sums(&self, host: &str, vm: &str, what: &str, n: usize, secs: u64) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let s = self.sums(host, vm, what);
            if s.len() >= n {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} {what}s of {vm} on {host} after {secs} s; console:\n{}",
                self.console(host, vm)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Panics unless `vm` on `host` prints the disk checksum `sum` (the one
    /// from before it moved) once more from now on: its disk is intact.
    pub fn assert_disk_whole(&self, host: &str, vm: &str, sum: &str, secs: u64) {
        self.assert_running(host, vm);
        let n = self.disksums(host, vm).len();
        let after = self.wait_disksums(host, vm, n + 1, secs);
        assert_eq!(
            after.last().map(String::as_str),
            Some(sum),
            "{vm}'s disk changed on {host}: {after:?}"
        );
    }

    /// Panics unless `vm` runs whole on `host`: libvirt runs it there, and
    /// its console there prints the checksum `sum` (the one from before it
    /// moved) once more from now on. A guest that died is a failure with
    /// its console in the message, never a pass.
    pub fn assert_whole(&self, host: &str, vm: &str, sum: &str) {
        let fresh = self.assert_running(host, vm);
        assert_eq!(
            fresh,
            sum,
            "{vm}'s memory changed on {host}: {:?}",
            self.memsums(host, vm)
        );
    }

    /// The last `n` lines of `host`'s libvirtd log that contain any of
    /// `words` (the log is there with `SOLIVE_LIBVIRT_DEBUG`, see
    /// [`Testbed::up_with`]).
    #[allow(dead_code)]
    pub fn libvirtd_log(&self, host: &str, words: &[&str], n: usize) -> String {
        let log = self.state.join(format!("hosts/{host}/log/libvirtd.log"));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let hits: Vec<&str> = text
            .lines()
            .filter(|l| words.iter().any(|w| l.contains(w)))
            .collect();
        hits[hits.len().saturating_sub(n)..].join("\n")
    }

    /// What guest `vm` printed on its console on `host` so far.
    pub fn console(&self, host: &str, vm: &str) -> String {
        let log = self
            .state
            .join(format!("hosts/{host}/log/qemu/{vm}-console.log"));
        std::fs::read_to_string(log).unwrap_or_default()
    }

    /// Waits until the guest's console log shows its workload started.
    pub fn wait_ready(&self, host: &str, vm: &str, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = self.console(host, vm);
            if text.contains("slworker:") && text.contains("ready") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "guest {vm} not ready after {secs} s; console:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Bytes the bridge has transmitted on `port` (OpenFlow port statistics,
    /// read from the switch now, not OVSDB's 5-second statistics column).
    /// The bridge's management socket is replaced when a controller's
    /// arrival reconfigures the bridge (seen: "Connection reset by peer"
    /// right after solive connected), so a refused read is tried again.
    pub fn tx_bytes(&self, bridge: &str, port: &str) -> u64 {
        let out = self.ofctl(&["dump-ports", bridge, port]);
        let tx = out
            .lines()
            .find(|l| l.trim_start().starts_with("tx pkts="))
            .unwrap_or_else(|| panic!("no tx line in {out}"));
        let bytes = tx.split("bytes=").nth(1).unwrap();
        bytes[..bytes.find(',').unwrap()].parse().unwrap()
    }

    /// `ovs-ofctl -O OpenFlow13 ARGS` against the testbed's switch, tried
    /// again if refused (see [`Self::tx_bytes`]).
    pub fn ofctl(&self, args: &[&str]) -> String {
        let rundir = self.info["ovs_rundir"].as_str().unwrap();
        let mut tries = 0;
        loop {
            let o = Command::new("ovs-ofctl")
                .env("OVS_RUNDIR", rundir)
                .args(["-O", "OpenFlow13"])
                .args(args)
                .output()
                .unwrap();
            if o.status.success() {
                return String::from_utf8_lossy(&o.stdout).into_owned();
            }
            tries += 1;
            assert!(
                tries < 5,
                "ovs-ofctl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn down(mut self) {
        self.down = true;
        let state = self.state.to_str().unwrap();
        let out = testbed(&["down", "--state", state]);
        assert!(
            out.status.success(),
            "testbed down failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        if !self.down {
            let _ = testbed(&["down", "--state", self.state.to_str().unwrap()]);
        }
    }
}

// ---- solive on the testbed, through its REST API

/// `POST` of `body` as JSON: the answer's status and body.
pub async fn post_json(
    base: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

/// `solive serve`'s parts, in this process, on the testbed's configuration.
/// The relays of evacuations through intermediaries run the `solive` binary
/// cargo built for the tests (this process is the test harness).
pub async fn solive_on(tb: &Testbed) -> super::Solive {
    let mut config = solive::config::Config::load(&tb.state.join("solive.toml")).unwrap();
    config.scatter.solive = Some(env!("CARGO_BIN_EXE_solive").into());
    super::Solive::start_with(
        config,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    )
    .await
}

/// Evacuation `id`'s record once it has ended (within `secs`), printed as
/// `solive evacuate --watch` ends.
pub async fn evacuation_end(solive: &super::Solive, id: u64, secs: u64) -> serde_json::Value {
    let rec = super::eventually(secs, "evacuation finished", || async {
        let r = solive.get(&format!("/v1/evacuations/{id}")).await;
        if ["done", "failed", "cancelled"].contains(&r["state"].as_str().unwrap_or("")) {
            Ok(r)
        } else {
            Err(format!("{} {}", r["state"], r["vms"][0]["progress"]))
        }
    })
    .await;
    eprintln!("{}", solive::client::evacuation_summary(&rec));
    rec
}

/// Starts the evacuation `body` asks for (the API must answer 201); its id.
pub async fn evacuate(solive: &super::Solive, body: serde_json::Value) -> u64 {
    let (s, v) = post_json(&solive.api, "/v1/evacuations", body).await;
    assert_eq!(s, 201, "{v}");
    v["id"].as_u64().unwrap()
}

/// Moves `vm` from `source` to `destination` (urgency 80) through the API
/// and returns the evacuation's record once it is `done` (panics on any
/// other end, or after `secs`).
pub async fn move_vm(
    solive: &super::Solive,
    vm: &str,
    source: &str,
    destination: &str,
    secs: u64,
) -> serde_json::Value {
    let body = serde_json::json!({"source": source, "destination": destination, "vms": [vm], "urgency": 80});
    let id = evacuate(solive, body).await;
    let rec = evacuation_end(solive, id, secs).await;
    assert_eq!(rec["state"], "done", "{rec:#}");
    rec
}

/// `DELETE /v1/evacuations/{id}`: the answer and its body.
pub async fn delete(base: &str, path: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .delete(format!("{base}{path}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or_default())
}
