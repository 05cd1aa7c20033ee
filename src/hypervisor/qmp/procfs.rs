//! What QEMU's process shows in `/proc` when it runs on this machine (the
//! QMP socket is local; for libvirt, when libvirtd runs here too): its vCPU
//! threads' CPU time, its pid, and the guest's non-zero pages read from its
//! memory.

use serde_json::Value;

/// The host thread ids of the VM's vCPUs (`query-cpus-fast`).
pub(super) fn vcpu_threads(cpus: &Value) -> Vec<u32> {
    cpus.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("thread-id").and_then(Value::as_u64))
                .map(|t| t as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time of the vCPU threads, ns, from `/proc/TID/stat` (utime + stime).
/// The QMP socket is local, so QEMU runs on this machine. Under TCG QEMU 7.2
/// `query-stats` returns nothing for vCPUs, hence /proc. Ticks are USER_HZ,
/// 100 on Linux's x86 and arm ABIs.
pub(super) fn threads_cpu_ns(threads: &[u32]) -> u64 {
    threads
        .iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/{t}/stat")).ok())
        .filter_map(|s| stat_cpu_ticks(&s))
        .sum::<u64>()
        * 10_000_000
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command
/// name (field 2) may hold spaces and parentheses: fields are counted after
/// its last `)`.
pub(super) fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state), so field N is f[N - 3].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The process a thread belongs to.
pub(super) fn tgid_of(tid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The non-zero estimate when QEMU runs on this machine: the guest's RAM
/// read from QEMU's address space (`/proc/PID/mem`, root) and its 4 KiB pages
/// counted if any byte is set; `(pages, source)`. QEMU's resident set is a
/// poor stand-in: the guest zeroes pages it frees or hands out (a 128 MiB idle
/// guest had 122 MiB resident but sent 40 MiB of non-zero pages), and under
/// TCG the code buffer alone can exceed the guest's memory. Guests above
/// 256 MiB are sampled (evenly spaced 1 MiB chunks, 256 MiB read in all).
pub fn scan_guest_ram(pid: u32, memory_bytes: u64) -> Result<(u64, String), String> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|e| format!("/proc/{pid}/maps: {e}"))?;
    let (start, len) = guest_ram_mapping(&maps, memory_bytes)
        .ok_or_else(|| format!("no guest-RAM mapping of {memory_bytes} bytes in QEMU {pid}"))?;
    let (pages, sampled) = count_non_zero_pages(&format!("/proc/{pid}/mem"), start, len)?;
    let how = if sampled { "sampled" } else { "all" };
    Ok((
        pages,
        format!("non-zero 4 KiB pages of the guest's RAM read from QEMU ({how}, /proc/PID/mem)"),
    ))
}

/// The guest's RAM in a `/proc/PID/maps` text: the private anonymous
/// read-write mapping (`rw-p`, no inode) as large as the guest's memory (QEMU
/// maps it exactly; up to 4 MiB more is allowed for alignment). TCG's code
/// buffer is `rwxp`, so it never matches. Returns (start address, length).
pub fn guest_ram_mapping(maps: &str, memory_bytes: u64) -> Option<(u64, u64)> {
    maps.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        let range = f.next()?;
        let perms = f.next()?;
        let _offset = f.next()?;
        let _dev = f.next()?;
        let inode = f.next()?;
        let (a, b) = range.split_once('-')?;
        let (a, b) = (
            u64::from_str_radix(a, 16).ok()?,
            u64::from_str_radix(b, 16).ok()?,
        );
        let len = b.checked_sub(a)?;
        (perms == "rw-p"
            && inode == "0"
            && f.next().is_none()
            && len >= memory_bytes
            && len <= memory_bytes + (4 << 20)
            && memory_bytes > 0)
            .then_some((a, memory_bytes))
    })
}

/// Non-zero pages in `len` bytes at `start` of the file `mem` (a
/// `/proc/PID/mem`), scaled up when sampled; (pages, sampled).
pub(super) fn count_non_zero_pages(mem: &str, start: u64, len: u64) -> Result<(u64, bool), String> {
    use std::io::{Read, Seek, SeekFrom};
    const CHUNK: u64 = 1 << 20;
    const MAX_READ: u64 = 256 << 20;
    let mut f = std::fs::File::open(mem).map_err(|e| format!("{mem}: {e}"))?;
    let chunks = len.div_ceil(CHUNK);
    let stride = chunks.div_ceil(MAX_READ / CHUNK).max(1);
    let mut buf = vec![0u8; CHUNK as usize];
    let (mut non_zero, mut read_pages) = (0u64, 0u64);
    for i in (0..chunks).step_by(stride as usize) {
        let off = i * CHUNK;
        let n = CHUNK.min(len - off) as usize;
        f.seek(SeekFrom::Start(start + off))
            .and_then(|_| f.read_exact(&mut buf[..n]))
            .map_err(|e| format!("{mem} at {:#x}: {e}", start + off))?;
        for page in buf[..n].chunks(4096) {
            read_pages += 1;
            // 16 bytes at a time: fast enough in a debug build too.
            if page
                .chunks(16)
                .any(|w| w.iter().fold(0u8, |acc, b| acc | b) != 0)
            {
                non_zero += 1;
            }
        }
    }
    let total_pages = len.div_ceil(4096);
    if stride == 1 {
        Ok((non_zero, false))
    } else {
        let scaled = (non_zero as f64 * total_pages as f64 / read_pages.max(1) as f64) as u64;
        Ok((scaled, true))
    }
}

/// `scan_guest_ram`, or QEMU's resident set when the scan is impossible.
pub(super) fn non_zero_estimate(pid: u32, memory_bytes: u64) -> (u64, String) {
    match scan_guest_ram(pid, memory_bytes) {
        Ok(r) => r,
        Err(why) => {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let rss = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            match rss {
                Some(kib) => (
                    (kib / 4).min(memory_bytes / 4096),
                    format!("QEMU process RSS, capped at the memory size ({why})"),
                ),
                None => (memory_bytes / 4096, format!("memory size ({why})")),
            }
        }
    }
}

/// QEMU's pid from its vCPU thread ids (`query-cpus-fast`), if that QEMU
/// runs on this machine and, when `guest` is given, is the one libvirt
/// started for that guest (`-name guest=NAME,...` on its command line): a
/// thread id from a remote host's QEMU could name an unrelated local process.
pub fn local_qemu_pid(cpus: &Value, guest: Option<&str>) -> Option<u32> {
    let pid = tgid_of(*vcpu_threads(cpus).first()?)?;
    if let Some(g) = guest {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let want = format!("guest={g},");
        let args = cmdline.split(|b| *b == 0);
        if !args
            .map(String::from_utf8_lossy)
            .any(|a| a.starts_with(&want) || a == format!("guest={g}"))
        {
            return None;
        }
    }
    Some(pid)
}
