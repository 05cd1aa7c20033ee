//! The QEMU guest agent, from the host side of its virtio-serial socket: runs
//! a command in a guest and collects its exit code and output
//! (`guest-exec`, `guest-exec-status`; QEMU's qemu-ga reference). Used by
//! the queue-mode test, whose guest has no network the host can enter.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

pub struct Agent {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

/// A command's end: its exit code, stdout and stderr.
pub struct Exited {
    pub code: i64,
    pub out: Vec<u8>,
    pub err: String,
}

impl Agent {
    /// Connects to the agent behind `socket` (QEMU's chardev), waiting up to
    /// `secs` for it to answer a `guest-sync` (it starts late in the boot).
    pub fn connect(socket: &Path, secs: u64) -> Agent {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let mut last = String::new();
        while Instant::now() < deadline {
            match UnixStream::connect(socket) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut a = Agent {
                        reader: BufReader::new(s.try_clone().unwrap()),
                        writer: s,
                        next_id: 7,
                    };
                    match a.sync() {
                        Ok(()) => {
                            a.reader
                                .get_ref()
                                .set_read_timeout(Some(Duration::from_secs(30)))
                                .unwrap();
                            return a;
                        }
                        Err(e) => last = e,
                    }
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        panic!(
            "no guest agent on {} after {secs} s: {last}",
            socket.display()
        );
    }

    /// `guest-sync`: the agent echoes a fresh id; anything before it (a
    /// late answer to an earlier client) is skipped.
    fn sync(&mut self) -> Result<(), String> {
        self.next_id += 1;
        let id = self.next_id;
        self.send(&json!({"execute": "guest-sync", "arguments": {"id": id}}))?;
        loop {
            let v = self.read()?;
            if v["return"] == id {
                return Ok(());
            }
        }
    }

    fn send(&mut self, v: &Value) -> Result<(), String> {
        let mut line = v.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| e.to_string())
    }

    fn read(&mut self) -> Result<Value, String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => Err("the agent closed its socket".into()),
            Ok(_) => {
                serde_json::from_str(line.trim_start_matches('\u{ff}')).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn call(&mut self, v: Value) -> Value {
        self.send(&v).unwrap();
        let r = self.read().unwrap();
        assert!(r.get("error").is_none(), "{v} -> {r}");
        r["return"].clone()
    }

    /// Starts `sh -c script` in the guest; its pid there.
    pub fn spawn(&mut self, script: &str) -> i64 {
        let r = self.call(json!({"execute": "guest-exec", "arguments": {
            "path": "/bin/sh", "arg": ["-c", script], "capture-output": true}}));
        r["pid"].as_i64().unwrap()
    }

    /// Waits (at most `secs`) for `pid` to end.
    pub fn wait(&mut self, pid: i64, secs: u64) -> Exited {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let r = self.call(json!({"execute": "guest-exec-status", "arguments": {"pid": pid}}));
            if r["exited"] == true {
                let data = |k: &str| {
                    r[k].as_str()
                        .map(|s| base64::engine::general_purpose::STANDARD.decode(s).unwrap())
                        .unwrap_or_default()
                };
                return Exited {
                    code: r["exitcode"].as_i64().unwrap_or(-1),
                    out: data("out-data"),
                    err: String::from_utf8_lossy(&data("err-data")).into_owned(),
                };
            }
            assert!(
                Instant::now() < deadline,
                "guest command {pid} still runs after {secs} s"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Runs `script` to its end (at most `secs`) and panics unless it
    /// succeeds; its stdout.
    pub fn run(&mut self, script: &str, secs: u64) -> String {
        let pid = self.spawn(script);
        let e = self.wait(pid, secs);
        assert_eq!(e.code, 0, "in the guest: {script}\n{}", e.err);
        String::from_utf8_lossy(&e.out).into_owned()
    }
}
