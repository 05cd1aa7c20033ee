//! Where each VM of an evacuation goes when several destinations can take
//! it (a rack or a site emptied into several hosts). Pure: the caller
//! gives what it knows of the destinations' room and of the VMs.
//!
//! The rule, in one pass:
//! - the VMs are placed **largest memory first** (ties: more vCPUs, then
//!   name): the big ones have the fewest hosts with room, so they choose
//!   first, as in first-fit decreasing bin packing;
//! - a destination **has room** for a VM when its free memory and free
//!   vCPUs cover the VM's, and its link can carry the VM's own traffic on
//!   top of what it carries already (what the VM sends and receives, each
//!   within the link's capacity): a destination whose link the VMs would
//!   fill has no room left for their service, whatever its memory;
//! - among those with room, the VM goes where **its migration would end
//!   soonest if the destinations' incoming links were the bottleneck**: the
//!   bytes already bound for a destination plus this VM's, over its link's
//!   capacity, lowest first (ties: most free memory, then name). That
//!   spreads the migrations over the destinations' links in proportion to
//!   their capacity, so the sources' uplinks, not one busy destination,
//!   set the pace.
//!
//! A VM that fits nowhere is an error naming it and every destination with
//! what it has free, before anything moves (a 409 on the API).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A destination as the placement sees it. `None` for memory or vCPUs:
/// not known, counted as unlimited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    pub name: String,
    pub free_memory_mib: Option<u64>,
    pub free_vcpus: Option<u32>,
    /// Its link's capacity, bit/s (each way).
    pub capacity_bps: f64,
    /// What the VMs already on it send and receive, bit/s.
    pub tx_bps: f64,
    pub rx_bps: f64,
}

/// A VM to place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Guest {
    pub name: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub tx_bps: f64,
    pub rx_bps: f64,
    /// What its migration sends, bytes (its non-zero memory).
    pub bytes: f64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlaceError {
    #[error("no destination given")]
    NoDestination,
    #[error(
        "no destination has room for VM {vm:?} ({memory_mib} MiB, {vcpus} vCPUs, \
         {tx_bps:.0}/{rx_bps:.0} bit/s out/in): {}",
        describe(.destinations)
    )]
    NoRoom {
        vm: String,
        memory_mib: u64,
        vcpus: u32,
        tx_bps: f64,
        rx_bps: f64,
        /// Every destination, with what it had left when the VM came.
        destinations: Vec<Destination>,
    },
}

fn describe(ds: &[Destination]) -> String {
    let free = |x: Option<u64>| x.map_or_else(|| "unknown".to_string(), |v| v.to_string());
    ds.iter()
        .map(|d| {
            format!(
                "{} has {} MiB and {} vCPUs free, its link {:.0}/{:.0} bit/s out/in in use of {:.0}",
                d.name,
                free(d.free_memory_mib),
                free(d.free_vcpus.map(u64::from)),
                d.tx_bps,
                d.rx_bps,
                d.capacity_bps
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One VM's destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Assignment {
    pub vm: String,
    pub destination: String,
}

/// Places every guest (see the module's rule); in the guests' order.
pub fn place(
    guests: &[Guest],
    destinations: &[Destination],
) -> Result<Vec<Assignment>, PlaceError> {
    place_pinned(guests, destinations, &BTreeMap::new())
}

/// [`place`], with some guests pinned to a destination (by name): those
/// go there first, where they fit (else the error names that destination
/// alone), and count against its room and link before the rest are placed.
pub fn place_pinned(
    guests: &[Guest],
    destinations: &[Destination],
    pinned: &BTreeMap<String, String>,
) -> Result<Vec<Assignment>, PlaceError> {
    if destinations.is_empty() {
        return Err(PlaceError::NoDestination);
    }
    let mut left: Vec<Destination> = destinations.to_vec();
    let mut bound = vec![0.0f64; left.len()];
    let mut chosen = vec![0usize; guests.len()];
    let mut by_size: Vec<usize> = Vec::new();
    for (i, g) in guests.iter().enumerate() {
        match pinned
            .get(&g.name)
            .and_then(|d| left.iter().position(|x| &x.name == d))
        {
            Some(d) => {
                if !has_room(&left[d], g) {
                    return Err(no_room(g, vec![left[d].clone()]));
                }
                take(&mut left[d], &mut bound[d], g);
                chosen[i] = d;
            }
            None => by_size.push(i),
        }
    }
    by_size.sort_by(|&a, &b| {
        let (ga, gb) = (&guests[a], &guests[b]);
        gb.memory_mib
            .cmp(&ga.memory_mib)
            .then(gb.vcpus.cmp(&ga.vcpus))
            .then_with(|| ga.name.cmp(&gb.name))
    });
    for i in by_size {
        let g = &guests[i];
        let best = (0..left.len())
            .filter(|&d| has_room(&left[d], g))
            .min_by(|&a, &b| {
                let end = |d: usize| (bound[d] + g.bytes) * 8.0 / left[d].capacity_bps.max(1.0);
                end(a)
                    .total_cmp(&end(b))
                    .then(
                        left[b]
                            .free_memory_mib
                            .unwrap_or(u64::MAX)
                            .cmp(&left[a].free_memory_mib.unwrap_or(u64::MAX)),
                    )
                    .then_with(|| left[a].name.cmp(&left[b].name))
            });
        let Some(d) = best else {
            return Err(no_room(g, left));
        };
        take(&mut left[d], &mut bound[d], g);
        chosen[i] = d;
    }
    Ok(guests
        .iter()
        .zip(chosen)
        .map(|(g, d)| Assignment {
            vm: g.name.clone(),
            destination: left[d].name.clone(),
        })
        .collect())
}

/// `g` placed on `d`: its room and link taken, its bytes bound there.
fn take(d: &mut Destination, bound: &mut f64, g: &Guest) {
    d.free_memory_mib = d.free_memory_mib.map(|m| m - g.memory_mib);
    d.free_vcpus = d.free_vcpus.map(|c| c - g.vcpus);
    d.tx_bps += g.tx_bps;
    d.rx_bps += g.rx_bps;
    *bound += g.bytes;
}

fn no_room(g: &Guest, destinations: Vec<Destination>) -> PlaceError {
    PlaceError::NoRoom {
        vm: g.name.clone(),
        memory_mib: g.memory_mib,
        vcpus: g.vcpus,
        tx_bps: g.tx_bps,
        rx_bps: g.rx_bps,
        destinations,
    }
}

fn has_room(d: &Destination, g: &Guest) -> bool {
    d.free_memory_mib.is_none_or(|m| m >= g.memory_mib)
        && d.free_vcpus.is_none_or(|c| c >= g.vcpus)
        && d.tx_bps + g.tx_bps <= d.capacity_bps
        && d.rx_bps + g.rx_bps <= d.capacity_bps
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(name: &str, mem: Option<u64>, cpus: Option<u32>, mbps: f64) -> Destination {
        Destination {
            name: name.into(),
            free_memory_mib: mem,
            free_vcpus: cpus,
            capacity_bps: mbps * 1e6,
            tx_bps: 0.0,
            rx_bps: 0.0,
        }
    }

    fn guest(name: &str, mem: u64, cpus: u32, mb: f64) -> Guest {
        Guest {
            name: name.into(),
            memory_mib: mem,
            vcpus: cpus,
            tx_bps: 0.0,
            rx_bps: 0.0,
            bytes: mb * 1e6,
        }
    }

    fn dests_of(a: &[Assignment]) -> Vec<&str> {
        a.iter().map(|x| x.destination.as_str()).collect()
    }

    #[test]
    fn bytes_spread_by_link_capacity() {
        // d1's link is twice d2's: of three equal VMs two go to d1.
        let ds = [dest("d1", None, None, 200.0), dest("d2", None, None, 100.0)];
        let gs = [
            guest("a", 1024, 1, 100.0),
            guest("b", 1024, 1, 100.0),
            guest("c", 1024, 1, 100.0),
        ];
        let a = place(&gs, &ds).unwrap();
        assert_eq!(dests_of(&a), ["d1", "d1", "d2"]);
    }

    #[test]
    fn memory_and_vcpus_bound_and_big_ones_go_first() {
        // Only d1 can take the 4 GiB VM; placed first, it leaves d1 1 GiB,
        // and the small ones then fit d1 and d2 by their links.
        let ds = [
            dest("d1", Some(5120), Some(8), 100.0),
            dest("d2", Some(2048), Some(8), 100.0),
        ];
        let gs = [
            guest("small1", 1024, 1, 10.0),
            guest("big", 4096, 2, 400.0),
            guest("small2", 1024, 1, 10.0),
        ];
        let a = place(&gs, &ds).unwrap();
        assert_eq!(dests_of(&a), ["d2", "d1", "d2"]);
        // vCPUs too: one vCPU free on each, a 2-vCPU VM fits nowhere.
        let ds = [
            dest("d1", None, Some(1), 100.0),
            dest("d2", None, Some(1), 100.0),
        ];
        let e = place(&[guest("wide", 512, 2, 1.0)], &ds).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("\"wide\"") && text.contains("d1 has unknown MiB and 1 vCPUs free"),
            "{text}"
        );
    }

    #[test]
    fn a_destination_whose_link_the_vms_would_fill_has_no_room() {
        let mut d = dest("d1", None, None, 100.0);
        d.rx_bps = 80e6;
        let mut g = guest("ni", 512, 1, 1.0);
        g.rx_bps = 30e6;
        let e = place(std::slice::from_ref(&g), &[d.clone()]).unwrap_err();
        assert!(
            matches!(e, PlaceError::NoRoom { ref vm, .. } if vm == "ni"),
            "{e}"
        );
        let d2 = dest("d2", None, None, 100.0);
        assert_eq!(dests_of(&place(&[g], &[d, d2]).unwrap()), ["d2"]);
        assert_eq!(place(&[], &[]), Err(PlaceError::NoDestination));
    }

    #[test]
    fn pinned_guests_go_first_and_count_against_the_room() {
        let ds = [
            dest("d1", Some(1024), None, 100.0),
            dest("d2", Some(1024), None, 100.0),
        ];
        let gs = [guest("a", 1024, 1, 10.0), guest("b", 1024, 1, 10.0)];
        // a alone would go to d1 (ties by name); pinned to d2, b gets d1.
        let pin: BTreeMap<String, String> = [("a".to_string(), "d2".to_string())].into();
        let a = place_pinned(&gs, &ds, &pin).unwrap();
        assert_eq!(dests_of(&a), ["d2", "d1"]);
        // Pinned where it does not fit: the error names that destination.
        let big = [guest("a", 2048, 1, 10.0)];
        match place_pinned(&big, &ds, &pin).unwrap_err() {
            PlaceError::NoRoom { destinations, .. } => {
                assert_eq!(destinations.len(), 1);
                assert_eq!(destinations[0].name, "d2");
            }
            e => panic!("{e}"),
        }
    }
}
