//! Which offset may be stored when records of a partition finish out of order.
//!
//! Records of different users on one partition complete in any order. The
//! offset stored is always the last one below which every record is done, so
//! a restart never skips unfinished work. One consumer reads one topic, so a
//! partition number names a partition.
//!
//! A partition taken away (revoked) is forgotten at once; it may come back
//! later under a new *generation*, and a record of an older generation that
//! finishes after that counts for nothing. The number of records in flight
//! is kept as a count, not summed.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub struct Offsets {
    partitions: HashMap<i32, Partition>,
    in_flight: usize,
    generations: u64,
}

#[derive(Debug)]
struct Partition {
    generation: u64,
    /// Offsets started and not finished (a count, in case a record is read twice).
    pending: BTreeMap<i64, u32>,
    /// Highest offset finished.
    max_done: Option<i64>,
    /// Last offset handed out for storing.
    stored: Option<i64>,
}

impl Offsets {
    /// A record was read; returns the generation to finish it with.
    pub fn begin(&mut self, partition: i32, offset: i64) -> u64 {
        let generations = &mut self.generations;
        let p = self.partitions.entry(partition).or_insert_with(|| {
            *generations += 1;
            Partition { generation: *generations, pending: BTreeMap::new(), max_done: None, stored: None }
        });
        *p.pending.entry(offset).or_insert(0) += 1;
        self.in_flight += 1;
        p.generation
    }

    /// Marks `offset` finished; returns the offset to store now, if it moved.
    pub fn finish(&mut self, partition: i32, generation: u64, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&partition).filter(|p| p.generation == generation)?;
        if let Some(n) = p.pending.get_mut(&offset) {
            *n -= 1;
            self.in_flight -= 1;
            if *n == 0 {
                p.pending.remove(&offset);
            }
        }
        p.max_done = p.max_done.max(Some(offset));
        let safe = match p.pending.keys().next() {
            Some(&lowest) => Some(lowest - 1),
            None => p.max_done,
        }?;
        if safe >= 0 && p.stored.is_none_or(|s| safe > s) {
            p.stored = Some(safe);
            Some(safe)
        } else {
            None
        }
    }

    /// The partition was taken away: what is pending there is no longer ours to store.
    pub fn revoke(&mut self, partition: i32) {
        if let Some(p) = self.partitions.remove(&partition) {
            self.in_flight -= p.pending.values().map(|n| *n as usize).sum::<usize>();
        }
    }

    /// Records read and not finished, over the partitions still held.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_only_below_the_lowest_unfinished_offset() {
        let mut o = Offsets::default();
        let g = (0..4).map(|off| o.begin(0, off)).last().unwrap();
        assert_eq!(o.finish(0, g, 2), None, "0 and 1 are still running");
        assert_eq!(o.finish(0, g, 0), Some(0));
        assert_eq!(o.finish(0, g, 1), Some(2), "1 done and 2 was already done");
        assert_eq!(o.finish(0, g, 3), Some(3));
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent() {
        let mut o = Offsets::default();
        o.begin(0, 5);
        let g = o.begin(1, 7);
        assert_eq!(o.finish(1, g, 7), Some(7));
        assert_eq!(o.in_flight(), 1);
    }

    #[test]
    fn a_revoked_partition_is_forgotten_and_its_late_records_count_for_nothing() {
        let mut o = Offsets::default();
        let old = o.begin(0, 10);
        o.begin(0, 11);
        o.begin(1, 3);
        o.revoke(0);
        assert_eq!(o.in_flight(), 1, "only partition 1's record is still ours");
        // The partition comes back and is read again from its committed offset.
        let new = o.begin(0, 10);
        assert_ne!(old, new);
        assert_eq!(o.finish(0, old, 10), None, "a record of the old generation stores nothing");
        assert_eq!(o.in_flight(), 2);
        assert_eq!(o.finish(0, new, 10), Some(10));
        assert_eq!(o.in_flight(), 1);
    }
}
