//! One reservation per link, shared by the migrations crossing it (pure).
//!
//! Algorithm 1 decides how much of a source's uplink the migrations get, from
//! what leaves that uplink and what all of its migrations send together. Run
//! once per migration on the same figures, it would grant each the same room
//! and the speed caps would add up to several times the link; so each period
//! every reservation of a source steps on the aggregate (they all follow the
//! link), the oldest one's value is the link's reservation, and that value is
//! split among them. When the oldest ends, the next oldest has followed the
//! same link all along and carries on from where it stands.
//!
//! The split rule: **by the bytes each migration has left**, so that they
//! finish together (none waits at the end for a straggler that got an equal
//! share of a link it needed more of); a migration with no figure yet counts
//! as the mean of those that have one. Every migration keeps at least a
//! quarter of an equal share, so a nearly finished one is not starved of the
//! few megabytes of its last pass. A destination's incoming link is split
//! among the migrations arriving there by the same rule, within what that
//! destination may reserve.
//!
//! **No downward ratchet.** Algorithm 1's release step follows the
//! migrations' rate down, and a migration's cap follows its part: one slowed
//! by anything but the link (CPU, a guest busy dirtying memory) would drag
//! its own cap down, and a pre-copy capped below what its dirty set needs
//! never finishes (on `paper-4vm-precopy-40m`, M at 3 MiB/s for 560 s). So a
//! migration that says what it needs (a pre-copy: its last dirty set within
//! the downtime limit, [`crate::evacuation::converge::needed_rate_bps`])
//! gets it first: the link's reservation is held at the sum of the needs
//! ([`floor_pct`]) as far as the link has room (never below what the
//! applications offer beyond the urgency), and each migration's part starts
//! from its need before the rest is split by remaining bytes.

use super::enforce::shares;

/// One migration on a link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member {
    pub reservation: u64,
    /// Bytes the migration has left to send, when its hypervisor has said.
    pub remaining: Option<f64>,
    /// The rate it needs to finish, in the unit of the total it is split
    /// from, when its hypervisor has said.
    pub need: Option<f64>,
}

/// The floor of a link's reservation, percent of C: what its migrations
/// need together (`needs_pct`), but no more than the larger of the urgency
/// and the link's room (`room_pct`: 100 less what the applications offer).
/// None when no migration said what it needs.
pub fn floor_pct(needs_pct: &[f64], room_pct: f64, urgency: f64) -> Option<f64> {
    if needs_pct.is_empty() {
        return None;
    }
    let need: f64 = needs_pct.iter().sum();
    Some(need.min(room_pct.max(urgency)).max(0.0))
}

/// Splits `total` (any unit) among `members`: each first gets its need (all
/// needs scaled down alike when they add up to more than `total`), the rest
/// goes by their remaining bytes. In `members`' order; sums to `total`.
pub fn split(total: f64, members: &[Member]) -> Vec<f64> {
    let total = total.max(0.0);
    let needs: Vec<f64> = members
        .iter()
        .map(|m| m.need.unwrap_or(0.0).max(0.0))
        .collect();
    let need: f64 = needs.iter().sum();
    let scale = if need > total { total / need } else { 1.0 };
    let rest = by_remaining(total - need * scale, members);
    needs.iter().zip(rest).map(|(n, r)| n * scale + r).collect()
}

/// Splits `total` by remaining bytes (with [`shares`]' quarter floor).
fn by_remaining(total: f64, members: &[Member]) -> Vec<f64> {
    let known: Vec<f64> = members.iter().filter_map(|m| m.remaining).collect();
    let mean = if known.is_empty() {
        1.0
    } else {
        known.iter().sum::<f64>() / known.len() as f64
    };
    let weights: Vec<f64> = members
        .iter()
        .map(|m| m.remaining.unwrap_or(mean).max(0.0))
        .collect();
    shares(total.max(0.0), &weights)
}

/// What the migrations arriving at one destination get: each wants its
/// source share (`want`, same order as `members`); together they get at most
/// `limit`. Under the limit each gets what it wants; over it the limit is
/// split by [`split`], and no one gets more than it wants.
pub fn fit(limit: f64, want: &[f64], members: &[Member]) -> Vec<f64> {
    let sum: f64 = want.iter().sum();
    if sum <= limit {
        return want.to_vec();
    }
    let mut got = split(limit, members);
    // What one cannot use (it wants less than its part) goes to the others,
    // in proportion to their parts, in a few rounds.
    for _ in 0..members.len() {
        let mut spare = 0.0;
        for (g, w) in got.iter_mut().zip(want) {
            if *g > *w {
                spare += *g - *w;
                *g = *w;
            }
        }
        let open: f64 = got
            .iter()
            .zip(want)
            .filter(|(g, w)| g < w)
            .map(|(g, _)| *g)
            .sum();
        if spare <= 1e-9 || open <= 0.0 {
            break;
        }
        for (g, w) in got.iter_mut().zip(want) {
            if *g < *w {
                *g += spare * *g / open;
            }
        }
    }
    got
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(reservation: u64, remaining: Option<f64>) -> Member {
        Member {
            reservation,
            remaining,
            need: None,
        }
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn the_link_is_split_by_what_is_left_and_never_more_than_the_link() {
        let s = split(80.0, &[m(1, Some(300.0)), m(2, Some(100.0))]);
        assert!((s.iter().sum::<f64>() - 80.0).abs() < 1e-9);
        // Floor 10 each, the other 60 by 3:1.
        assert!(close(&s, &[55.0, 25.0]), "{s:?}");
        // Nothing known yet: equal parts.
        assert!(close(
            &split(90.0, &[m(1, None), m(2, None), m(3, None)]),
            &[30.0; 3]
        ));
        // One unknown counts as the mean of the known.
        let s = split(100.0, &[m(1, Some(100.0)), m(2, None)]);
        assert!(close(&s, &[50.0, 50.0]), "{s:?}");
    }

    #[test]
    fn a_nearly_finished_migration_keeps_a_floor() {
        let s = split(100.0, &[m(1, Some(1e9)), m(2, Some(0.0))]);
        assert!(close(&s, &[87.5, 12.5]), "{s:?}");
    }

    #[test]
    fn a_need_is_served_first_then_the_rest_by_remaining_bytes() {
        // B needs 50 of the 80; the other 30 split 3:1 with floors of 3.75.
        let b = Member {
            need: Some(50.0),
            ..m(2, Some(100.0))
        };
        let s = split(80.0, &[m(1, Some(300.0)), b]);
        assert!((s.iter().sum::<f64>() - 80.0).abs() < 1e-9);
        assert!(close(&s, &[20.625, 59.375]), "{s:?}");
        // Needs beyond the total are scaled down alike, and still sum to it.
        let a = Member {
            need: Some(60.0),
            ..m(1, Some(1.0))
        };
        let s = split(80.0, &[a, b]);
        assert!(
            close(&s, &[80.0 * 60.0 / 110.0, 80.0 * 50.0 / 110.0]),
            "{s:?}"
        );
    }

    #[test]
    fn the_floor_is_what_is_needed_within_the_room_or_the_urgency() {
        assert_eq!(floor_pct(&[], 90.0, 50.0), None);
        assert_eq!(floor_pct(&[20.0, 10.0], 90.0, 50.0), Some(30.0));
        // The applications offer 60: the room is 40, the urgency 75 wins.
        assert_eq!(floor_pct(&[175.0], 40.0, 75.0), Some(75.0));
        assert_eq!(floor_pct(&[175.0], 90.0, 50.0), Some(90.0));
    }

    #[test]
    fn a_destination_gives_what_is_wanted_under_its_limit_and_splits_over_it() {
        let ms = [m(1, Some(100.0)), m(2, Some(100.0))];
        assert_eq!(fit(100.0, &[30.0, 40.0], &ms), vec![30.0, 40.0]);
        let f = fit(60.0, &[50.0, 50.0], &ms);
        assert!(close(&f, &[30.0, 30.0]), "{f:?}");
        // One wants little: the other gets the rest, never past its want.
        let f = fit(60.0, &[10.0, 80.0], &ms);
        assert!(close(&f, &[10.0, 50.0]), "{f:?}");
        assert!(f.iter().sum::<f64>() <= 60.0 + 1e-9);
    }
}
