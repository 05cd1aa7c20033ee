//! The processes the controller starts on its hosts (a disk cache's
//! `qemu-img` and `qemu-nbd`, scatter-gather's relays): each one ends with
//! the controller, however the controller ends.
//!
//! `kill_on_drop` covers a controller that stops, or a task it cuts. A
//! controller killed outright (SIGKILL, the OOM killer, a crash) runs no
//! drop, and its children would run on: a cache's `qemu-nbd` and
//! `qemu-img` kept writing the backup's copy while the restarted controller
//! rewrote it (seen in `tests/cache.rs`, step 1c). The kernel's
//! parent-death signal covers that case. It is set in the child before it
//! execs and is kept across the exec prefix's own execs (`nsenter` and
//! `ip netns exec` exec the command, they do not fork it).
//!
//! Two limits, by design of the kernel:
//! - The signal comes when the *thread* that started the child ends. The
//!   children are started from the runtime's tasks, whose worker threads
//!   live as long as the controller. Never start one from `spawn_blocking`,
//!   whose threads end after a few idle seconds.
//! - A prefix that forks or goes over the network (`ssh HOST`) is covered
//!   only as far as its own local process. A remote command then runs until
//!   its own time limit or its peer's end (the NBD server ends with its
//!   client).

#![allow(unsafe_code)]

use std::process::Stdio;

use tokio::process::{Child, Command};

/// A command for `argv` (program first) whose child is killed when it is
/// dropped and when the controller's process ends. Stdin is null, stdout
/// and stderr are piped; the caller changes what it needs.
pub fn command(argv: &[String]) -> Result<Command, String> {
    let (prog, args) = argv.split_first().ok_or("empty command")?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the child between fork and exec and
    // calls only async-signal-safe functions (prctl, getppid); it
    // allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The controller may have ended between the fork and the
            // prctl: then the signal will never come, so do not start.
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the controller has ended"));
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// [`command`] started; `what` names it in the error.
pub fn spawn(argv: &[String], what: &str) -> Result<Child, String> {
    command(argv)
        .map_err(|e| format!("{what}: {e}"))?
        .spawn()
        .map_err(|e| format!("{what}: cannot run {}: {e}", argv[0]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// Whether `pid` is still running (not gone, not a zombie).
    fn running(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                !s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(false)
    }

    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        // Without kill_on_drop, only the death signal can end the `sleep`
        // when its starting thread (standing for the controller) ends.
        let pid = std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut cmd = command(&s(&["sleep", "30"])).unwrap();
                cmd.kill_on_drop(false);
                let child = cmd.spawn().unwrap();
                let pid = child.id().unwrap();
                assert!(running(pid));
                std::mem::forget(child);
                pid
            })
        })
        .join()
        .unwrap();
        let started = std::time::Instant::now();
        while running(pid) && started.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!running(pid), "sleep {pid} outlived its parent thread");
    }

    #[tokio::test]
    async fn a_child_runs_its_command() {
        let out = command(&s(&["sh", "-c", "echo ok"]))
            .unwrap()
            .output()
            .await
            .unwrap();
        assert!(out.status.success() && out.stdout == b"ok\n");
    }

    #[test]
    fn an_empty_command_is_an_error() {
        assert!(command(&[]).is_err());
        assert!(spawn(&[], "nothing").unwrap_err().contains("empty command"));
    }
}
