//! Which offset may be stored when records of a partition finish out of order.
//!
//! Records of different users on one partition complete in any order. The
//! offset stored is always the last one below which every record is done, so
//! a restart never skips unfinished work.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Default)]
pub struct Offsets {
    partitions: HashMap<(String, i32), Partition>,
}

#[derive(Debug, Default)]
struct Partition {
    /// Offsets started and not finished (a count, in case a record is read twice after a rebalance).
    pending: BTreeMap<i64, u32>,
    /// Highest offset finished.
    max_done: Option<i64>,
    /// Last offset handed out for storing.
    stored: Option<i64>,
}

impl Offsets {
    pub fn begin(&mut self, topic: &str, partition: i32, offset: i64) {
        let p = self.partitions.entry((topic.to_string(), partition)).or_default();
        *p.pending.entry(offset).or_insert(0) += 1;
    }

    /// Marks `offset` finished; returns the offset to store now, if it moved.
    pub fn finish(&mut self, topic: &str, partition: i32, offset: i64) -> Option<i64> {
        let p = self.partitions.get_mut(&(topic.to_string(), partition))?;
        if let Some(n) = p.pending.get_mut(&offset) {
            *n -= 1;
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

    /// Records in flight, over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|p| p.pending.values().sum::<u32>() as usize).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_only_below_the_lowest_unfinished_offset() {
        let mut o = Offsets::default();
        for off in 0..4 {
            o.begin("t", 0, off);
        }
        assert_eq!(o.finish("t", 0, 2), None, "0 and 1 are still running");
        assert_eq!(o.finish("t", 0, 0), Some(0));
        assert_eq!(o.finish("t", 0, 1), Some(2), "1 done and 2 was already done");
        assert_eq!(o.finish("t", 0, 3), Some(3));
        assert_eq!(o.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent() {
        let mut o = Offsets::default();
        o.begin("t", 0, 5);
        o.begin("t", 1, 7);
        assert_eq!(o.finish("t", 1, 7), Some(7));
        assert_eq!(o.in_flight(), 1);
    }
}
