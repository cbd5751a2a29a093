//! Which of a document's numbered updates a room has applied: everything up
//! to a watermark, and some ranges above it (updates that arrived ahead of
//! one still missing). A hole below a range is what a node fills from the
//! database.

use std::collections::BTreeMap;

#[derive(Debug, Default, Clone)]
pub struct SeqSet {
    /// Every update numbered up to this one is applied.
    watermark: u64,
    /// Applied ranges above the watermark, `start -> end` (inclusive), none
    /// touching another or the watermark.
    above: BTreeMap<u64, u64>,
}

impl SeqSet {
    /// Everything up to `watermark` applied, nothing above.
    pub fn new(watermark: u64) -> Self {
        SeqSet {
            watermark,
            above: BTreeMap::new(),
        }
    }

    pub fn watermark(&self) -> u64 {
        self.watermark
    }

    /// Whether an update above the watermark is applied while one below it
    /// is not.
    pub fn has_hole(&self) -> bool {
        !self.above.is_empty()
    }

    /// The highest number applied.
    pub fn highest(&self) -> u64 {
        self.above
            .last_key_value()
            .map_or(self.watermark, |(_, &end)| end)
    }

    pub fn contains(&self, seq: u64) -> bool {
        seq <= self.watermark
            || self
                .above
                .range(..=seq)
                .next_back()
                .is_some_and(|(_, &end)| seq <= end)
    }

    /// Marks `first ..= last` applied.
    pub fn insert_range(&mut self, first: u64, last: u64) {
        if last < first || last <= self.watermark {
            return;
        }
        let mut start = first.max(self.watermark + 1);
        let mut end = last;
        // Merge with every range that overlaps or touches.
        let touching: Vec<(u64, u64)> = self
            .above
            .range(..=end.saturating_add(1))
            .filter(|(_, &e)| e.saturating_add(1) >= start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in touching {
            self.above.remove(&s);
            start = start.min(s);
            end = end.max(e);
        }
        if start == self.watermark + 1 {
            self.watermark = end;
        } else {
            self.above.insert(start, end);
        }
    }

    pub fn insert(&mut self, seq: u64) {
        self.insert_range(seq, seq);
    }

    /// Everything up to `seq` is applied (a snapshot that folds them).
    pub fn advance_to(&mut self, seq: u64) {
        if seq <= self.watermark {
            return;
        }
        self.watermark = seq;
        let below: Vec<u64> = self.above.range(..=seq).map(|(&s, _)| s).collect();
        for s in below {
            if let Some(e) = self.above.remove(&s) {
                if e > self.watermark {
                    self.watermark = e;
                }
            }
        }
        // A range that now touches the watermark joins it.
        while let Some((&s, &e)) = self.above.first_key_value() {
            if s > self.watermark + 1 {
                break;
            }
            self.above.remove(&s);
            self.watermark = self.watermark.max(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_hole_closes_when_its_update_arrives() {
        let mut s = SeqSet::new(4);
        s.insert(6);
        s.insert(7);
        assert!(s.has_hole());
        assert_eq!(s.watermark(), 4);
        assert_eq!(s.highest(), 7);
        assert!(s.contains(6) && !s.contains(5));
        s.insert(5);
        assert!(!s.has_hole());
        assert_eq!(s.watermark(), 7);
    }

    #[test]
    fn a_snapshot_moves_the_watermark_past_ranges_below_it() {
        let mut s = SeqSet::new(0);
        s.insert_range(3, 4);
        s.insert_range(9, 9);
        s.insert_range(11, 12);
        s.advance_to(10);
        assert_eq!(s.watermark(), 12);
        assert!(!s.has_hole());
    }

    proptest! {
        /// Whatever order numbers arrive in, the set holds exactly them.
        #[test]
        fn the_set_holds_what_was_inserted(start in 0u64..5, seqs in proptest::collection::vec(1u64..60, 0..80)) {
            let mut s = SeqSet::new(start);
            let mut model: std::collections::BTreeSet<u64> = (0..=start).collect();
            for &q in &seqs {
                s.insert(q);
                model.insert(q);
            }
            for q in 0..70 {
                prop_assert_eq!(s.contains(q), model.contains(&q), "seq {}", q);
            }
            let mut w = start;
            while model.contains(&(w + 1)) { w += 1; }
            prop_assert_eq!(s.watermark(), w);
            prop_assert_eq!(s.has_hole(), model.iter().any(|&q| q > w));
        }
    }
}
