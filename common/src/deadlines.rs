//! One deadline table: an ordered set of `(MonoTime, K)` that remembers
//! each key's armed time, so moving a deadline is a remove and an insert
//! (O(log n)) and the earliest is the first entry. A loop keys it by an
//! enum of what it wakes for (STYLE.md, section 4); the restarter's
//! supervisor keys it by `(ServiceId, Timer)`.
//!
//! Pure data: it derives `Clone, Eq, Hash, Debug`, so a core holding one
//! stays hashable for a model checker, and [`Deadlines::rebase`] moves
//! every armed time as [`MonoTime::rebased`] does.

use crate::clock::MonoTime;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Armed deadlines, at most one per key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Deadlines<K: Ord> {
    by_time: BTreeSet<(MonoTime, K)>,
    by_key: BTreeMap<K, MonoTime>,
}

impl<K: Ord> Default for Deadlines<K> {
    fn default() -> Self {
        Deadlines {
            by_time: BTreeSet::new(),
            by_key: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Copy> Deadlines<K> {
    pub fn new() -> Self {
        Deadlines::default()
    }

    /// Arms `key` at `at`, or disarms it with `None` (moving it if armed).
    pub fn set(&mut self, key: K, at: Option<MonoTime>) {
        let old = self.by_key.get(&key).copied();
        if old == at {
            return;
        }
        if let Some(t) = old {
            self.by_time.remove(&(t, key));
            self.by_key.remove(&key);
        }
        if let Some(t) = at {
            self.by_time.insert((t, key));
            self.by_key.insert(key, t);
        }
    }

    /// When `key` is armed.
    pub fn get(&self, key: K) -> Option<MonoTime> {
        self.by_key.get(&key).copied()
    }

    /// The earliest armed deadline.
    pub fn first(&self) -> Option<(MonoTime, K)> {
        self.by_time.first().copied()
    }

    /// Disarms and returns the earliest deadline if it is due at `now`
    /// (equal times in key order).
    pub fn pop_due(&mut self, now: MonoTime) -> Option<(MonoTime, K)> {
        let (t, key) = self.first()?;
        if t > now {
            return None;
        }
        self.by_time.pop_first();
        self.by_key.remove(&key);
        Some((t, key))
    }

    /// Disarms and returns every deadline due at `now` whose key `keep`
    /// selects, in time order; the others stay armed.
    pub fn take_due_where(&mut self, now: MonoTime, keep: impl Fn(&K) -> bool) -> Vec<K> {
        let due: Vec<(MonoTime, K)> = self
            .by_time
            .iter()
            .take_while(|(t, _)| *t <= now)
            .filter(|(_, k)| keep(k))
            .copied()
            .collect();
        for (t, k) in &due {
            self.by_time.remove(&(*t, *k));
            self.by_key.remove(k);
        }
        due.into_iter().map(|(_, k)| k).collect()
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every armed time moved as [`MonoTime::rebased`] moves one (for a
    /// model checker's canonical clock; never used by the shells).
    pub fn rebase(&mut self, by: Duration, now: MonoTime, horizon: Duration) {
        let keys: Vec<(K, MonoTime)> = self.by_key.iter().map(|(k, t)| (*k, *t)).collect();
        self.by_time.clear();
        self.by_key.clear();
        for (k, t) in keys {
            self.set(k, Some(t.rebased(by, now, horizon)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> MonoTime {
        MonoTime::from_duration(Duration::from_millis(ms))
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
    enum Wake {
        Beat,
        Flush,
        Client(u32),
    }

    #[test]
    fn set_moves_and_disarms_one_entry_per_key() {
        let mut d = Deadlines::new();
        d.set(Wake::Beat, Some(at(30)));
        d.set(Wake::Flush, Some(at(10)));
        assert_eq!(d.first(), Some((at(10), Wake::Flush)));
        d.set(Wake::Flush, Some(at(50)));
        assert_eq!(d.first(), Some((at(30), Wake::Beat)));
        assert_eq!(d.len(), 2);
        d.set(Wake::Beat, None);
        assert_eq!(d.first(), Some((at(50), Wake::Flush)));
        assert_eq!(d.get(Wake::Beat), None);
        assert_eq!(d.get(Wake::Flush), Some(at(50)));
    }

    #[test]
    fn pop_due_fires_in_time_then_key_order_and_stops_at_now() {
        let mut d = Deadlines::new();
        d.set(Wake::Client(2), Some(at(20)));
        d.set(Wake::Client(1), Some(at(20)));
        d.set(Wake::Beat, Some(at(5)));
        d.set(Wake::Flush, Some(at(21)));
        let mut fired = Vec::new();
        while let Some((_, k)) = d.pop_due(at(20)) {
            fired.push(k);
        }
        assert_eq!(fired, [Wake::Beat, Wake::Client(1), Wake::Client(2)]);
        assert_eq!(d.first(), Some((at(21), Wake::Flush)));
        assert_eq!(d.get(Wake::Beat), None);
    }

    #[test]
    fn take_due_where_leaves_unselected_keys_armed() {
        let mut d = Deadlines::new();
        d.set(Wake::Client(1), Some(at(1)));
        d.set(Wake::Beat, Some(at(2)));
        d.set(Wake::Client(3), Some(at(9)));
        let got = d.take_due_where(at(5), |k| matches!(k, Wake::Client(_)));
        assert_eq!(got, [Wake::Client(1)]);
        assert_eq!(d.first(), Some((at(2), Wake::Beat)));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn equal_tables_hash_alike_whatever_the_order_of_sets() {
        use std::collections::hash_map::DefaultHasher;
        use std::hash::{Hash, Hasher};
        let mut a = Deadlines::new();
        a.set(Wake::Beat, Some(at(1)));
        a.set(Wake::Flush, Some(at(2)));
        let mut b = Deadlines::new();
        b.set(Wake::Flush, Some(at(7)));
        b.set(Wake::Flush, Some(at(2)));
        b.set(Wake::Beat, Some(at(1)));
        assert_eq!(a, b);
        let h = |d: &Deadlines<Wake>| {
            let mut s = DefaultHasher::new();
            d.hash(&mut s);
            s.finish()
        };
        assert_eq!(h(&a), h(&b));
        b.set(Wake::Beat, Some(at(3)));
        assert_ne!(a, b);
    }

    #[test]
    fn rebase_moves_every_time_and_clamps_old_ones() {
        let mut d = Deadlines::new();
        d.set(Wake::Beat, Some(at(1_000)));
        d.set(Wake::Flush, Some(at(10_000)));
        d.rebase(
            Duration::from_millis(9_000),
            at(1_000),
            Duration::from_millis(500),
        );
        assert_eq!(d.get(Wake::Flush), Some(at(1_000)));
        // 1 000 - 9 000 saturates at 0, 1 s before now: clamped to just
        // beyond the horizon.
        let beat = d.get(Wake::Beat).unwrap();
        assert_eq!(
            at(1_000).saturating_since(beat),
            Duration::from_nanos(500_000_001)
        );
        assert_eq!(d.first(), Some((beat, Wake::Beat)));
    }
}
