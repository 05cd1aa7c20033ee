//! Ports handed out to running migrations, one holder at a time, so that two
//! migrations running at once (in one evacuation or in two) never listen on
//! the same port. The relays of a migration through intermediaries take one
//! (the push relay on the source and the gather relay on the destination
//! both listen on it); it goes back when the lease is dropped, however the
//! migration ended.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// A range of ports, `first..first + count`.
#[derive(Debug)]
pub struct PortPool {
    first: u16,
    count: u16,
    used: Mutex<BTreeSet<u16>>,
}

/// One port, held until dropped.
#[derive(Debug)]
pub struct PortLease {
    pool: Arc<PortPool>,
    pub port: u16,
}

impl PortPool {
    pub fn new(first: u16, count: u16) -> Arc<PortPool> {
        Arc::new(PortPool {
            first,
            // Never past 65535.
            count: count.min(u16::MAX - first + 1),
            used: Mutex::new(BTreeSet::new()),
        })
    }

    fn used(&self) -> std::sync::MutexGuard<'_, BTreeSet<u16>> {
        // Only inserts and removes happen under the lock: nothing can be
        // left half-done by a panic elsewhere.
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The lowest free port, or None when every one is held.
    pub fn take(self: &Arc<Self>) -> Option<PortLease> {
        let mut used = self.used();
        let port = (0..self.count)
            .map(|i| self.first + i)
            .find(|p| !used.contains(p))?;
        used.insert(port);
        Some(PortLease {
            pool: self.clone(),
            port,
        })
    }

    /// How many ports the pool has.
    pub fn size(&self) -> u16 {
        self.count
    }
}

impl Drop for PortLease {
    fn drop(&mut self) {
        self.pool.used().remove(&self.port);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_are_distinct_until_dropped() {
        let pool = PortPool::new(49300, 3);
        let a = pool.take().unwrap();
        let b = pool.take().unwrap();
        let c = pool.take().unwrap();
        assert_eq!((a.port, b.port, c.port), (49300, 49301, 49302));
        assert!(pool.take().is_none(), "three ports, three holders");
        drop(b);
        assert_eq!(pool.take().unwrap().port, 49301);
    }

    #[test]
    fn the_range_stops_at_the_last_port() {
        let pool = PortPool::new(65534, 10);
        assert_eq!(pool.size(), 2);
        let _a = pool.take().unwrap();
        let _b = pool.take().unwrap();
        assert!(pool.take().is_none());
    }
}
