//! Sites made up for the simulator: many sources, many destinations, a mix
//! of VMs, the same for the same seed on every machine (the generator is
//! a few lines of SplitMix64 rather than a crate's RNG, whose streams may
//! change between versions and would change the benchmark's site).
//!
//! The mix, loosely after the paper's four kinds of VM:
//! - 40% quiet (idle services): dirty 20–500 pages/s;
//! - 25% memory-busy (databases, caches): a working set of 64–512 MiB
//!   rewritten at 2,000–30,000 pages/s;
//! - 20% senders (NO): 10–300 Mbit/s out; 15% receivers (NI): 10–300 in;
//! - memory 1, 2, 4 or 8 GiB, 30–90% of it non-zero; 1–8 vCPUs.
//!
//! Every link is `capacity_bps` each way; a source host pushes at most
//! 80% of its link (CPU); a destination has room for its share of the
//! source VMs and a third more, memory and vCPUs.

use super::{Site, SiteHost, SiteVm};
use crate::topology::Role;

/// What to make: `SOURCES:DESTINATIONS:VMS[:SEED]` on the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spec {
    pub sources: usize,
    pub destinations: usize,
    pub vms: usize,
    pub seed: u64,
    pub capacity_bps: f64,
}

impl std::str::FromStr for Spec {
    type Err = String;
    fn from_str(s: &str) -> Result<Spec, String> {
        let parts: Vec<&str> = s.split(':').collect();
        let num = |i: usize, what: &str| -> Result<u64, String> {
            parts
                .get(i)
                .ok_or_else(|| format!("{s:?}: expected SOURCES:DESTINATIONS:VMS[:SEED]"))?
                .parse::<u64>()
                .map_err(|_| format!("{s:?}: {what} must be a whole number"))
        };
        if parts.len() > 4 {
            return Err(format!("{s:?}: expected SOURCES:DESTINATIONS:VMS[:SEED]"));
        }
        let spec = Spec {
            sources: num(0, "SOURCES")? as usize,
            destinations: num(1, "DESTINATIONS")? as usize,
            vms: num(2, "VMS")? as usize,
            seed: if parts.len() == 4 { num(3, "SEED")? } else { 1 },
            capacity_bps: 10e9,
        };
        if spec.sources == 0 || spec.destinations == 0 || spec.vms == 0 {
            return Err(format!("{s:?}: every count must be at least 1"));
        }
        if spec.vms > 1_000_000 {
            return Err(format!("{s:?}: at most 1000000 VMs"));
        }
        Ok(spec)
    }
}

struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

/// The site of `spec`.
pub fn site(spec: &Spec) -> Site {
    let mut rng = SplitMix(spec.seed);
    let mut vms = Vec::with_capacity(spec.vms);
    for i in 0..spec.vms {
        let host = format!("src{:03}", i % spec.sources + 1);
        let memory_mib: u64 = rng.pick(&[1024, 2048, 4096, 8192]);
        let non_zero = (memory_mib as f64 * rng.range(0.3, 0.9)) as u64;
        let kind = rng.range(0.0, 1.0);
        let (mut dirty, mut ws, mut tx, mut rx) = (rng.range(20.0, 500.0), None, 0.0, 0.0);
        if (0.4..0.65).contains(&kind) {
            let w = rng.range(64.0, 512.0).min(memory_mib as f64) as u64;
            ws = Some(w * 1024);
            dirty = rng.range(2000.0, 30000.0);
        } else if (0.65..0.85).contains(&kind) {
            tx = rng.range(10e6, 300e6);
        } else if kind >= 0.85 {
            rx = rng.range(10e6, 300e6);
        }
        vms.push(SiteVm {
            name: format!("vm{:05}", i + 1),
            host,
            memory_kib: memory_mib * 1024,
            vcpus: rng.pick(&[1, 2, 2, 4, 8]),
            non_zero_pages: non_zero * 256,
            dirty_pages_per_sec: dirty.round(),
            working_set_kib: ws,
            tx_bps: tx.round(),
            rx_bps: rx.round(),
            priority: None,
            // Shared storage (no disk copies): the generated sites stay as
            // they were, seed for seed.
            disk_bytes: 0,
            disk_write_bps: 0.0,
        });
    }
    let mem: u64 = vms.iter().map(|v| v.memory_kib / 1024).sum();
    let cpus: u32 = vms.iter().map(|v| v.vcpus).sum();
    let share = |x: u64| (x as f64 * 4.0 / 3.0 / spec.destinations as f64).ceil() as u64;
    let mut hosts: Vec<SiteHost> = (0..spec.sources)
        .map(|i| SiteHost {
            name: format!("src{:03}", i + 1),
            role: Role::Source,
            capacity_bps: spec.capacity_bps,
            push_bps: Some(spec.capacity_bps * 0.8),
            memory_mib: None,
            vcpus: None,
        })
        .collect();
    hosts.extend((0..spec.destinations).map(|i| SiteHost {
        name: format!("dst{:03}", i + 1),
        role: Role::Destination,
        capacity_bps: spec.capacity_bps,
        push_bps: None,
        memory_mib: Some(share(mem)),
        vcpus: Some(share(cpus as u64) as u32),
    }));
    Site {
        name: format!(
            "generated-{}s-{}d-{}vm-seed{}",
            spec.sources, spec.destinations, spec.vms, spec.seed
        ),
        hosts,
        vms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_site() {
        let spec: Spec = "3:2:40:7".parse().unwrap();
        let a = site(&spec);
        assert_eq!(a, site(&spec));
        assert_ne!(a, site(&"3:2:40:8".parse().unwrap()));
        assert_eq!((a.hosts.len(), a.vms.len()), (5, 40));
        a.validate().unwrap();
        assert!("3:2".parse::<Spec>().is_err());
        assert!("0:2:4".parse::<Spec>().is_err());
        assert!("3:x:4"
            .parse::<Spec>()
            .unwrap_err()
            .contains("DESTINATIONS"));
    }
}
