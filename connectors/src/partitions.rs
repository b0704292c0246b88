//! The read state of a generator's partitions, shared by datagen and Nexmark: how many rows each
//! partition has produced (its [`SourcePosition`] offset), how many it may produce, which have
//! ended, and whose turn it is.
//!
//! Generators derive every row from (partition, row index), so this is all the state they have
//! besides their options: seeking is setting offsets, and a replay is a copy with offsets at 0.

use crate::error::ConnectorError;
use crate::rate::RateLimit;
use crate::source::{SourceEvent, SourcePosition};

/// What a generator's `next` does on this call (see [`Partitions::next_turn`]).
pub enum Turn {
    /// Report this event and generate nothing.
    Report(SourceEvent),
    /// Generate `rows` rows of `partition`, then [`Partitions::advance`] it.
    Generate { partition: usize, rows: usize },
}

#[derive(Debug, Clone)]
pub struct Partitions {
    /// Rows produced per partition.
    offsets: Vec<u64>,
    /// Rows a partition has in all (from the source's options), if bounded.
    bounds: Vec<Option<u64>>,
    /// Where [`Partitions::stop_at`] ends a partition, if it was called.
    stops: Vec<Option<u64>>,
    /// Partitions whose end was reported.
    ended: Vec<bool>,
    /// The partition to read next, if it has not ended.
    next: usize,
}

impl Partitions {
    /// Partitions with these bounds (one per partition), all at offset 0.
    pub fn new(bounds: Vec<Option<u64>>) -> Self {
        let n = bounds.len();
        Partitions { offsets: vec![0; n], bounds, stops: vec![None; n], ended: vec![false; n], next: 0 }
    }

    /// The same partitions read from the start, without the stops of [`Partitions::stop_at`].
    pub fn restarted(&self) -> Self {
        Partitions::new(self.bounds.clone())
    }

    pub fn count(&self) -> usize {
        self.offsets.len()
    }

    pub fn offset(&self, partition: usize) -> u64 {
        self.offsets[partition]
    }

    /// Rows the partition may still produce (`u64::MAX` when unbounded).
    pub fn remaining(&self, partition: usize) -> u64 {
        let limit = match (self.bounds[partition], self.stops[partition]) {
            (Some(b), Some(s)) => b.min(s),
            (b, s) => b.or(s).unwrap_or(u64::MAX),
        };
        limit.saturating_sub(self.offsets[partition])
    }

    /// The partition whose turn it is (round-robin over those that have not ended), or `None`
    /// when every partition has ended.
    pub fn turn(&self) -> Option<usize> {
        let n = self.count();
        (0..n).map(|i| (self.next + i) % n).find(|&p| !self.ended[p])
    }

    /// Picks the partition whose turn it is and how many rows it makes, waiting for the rate
    /// limit first. Cancel-safe: the wait is the only await, and only an ended partition is
    /// recorded, before it.
    pub async fn next_turn(&mut self, rate: &mut RateLimit, max_chunk: usize) -> Turn {
        let Some(partition) = self.turn() else { return Turn::Report(SourceEvent::End) };
        let remaining = self.remaining(partition);
        if remaining == 0 {
            self.end(partition);
            return Turn::Report(SourceEvent::PartitionEnd { partition });
        }
        let rows = (rate.batch_rows(max_chunk) as u64).min(remaining) as usize;
        rate.wait().await;
        Turn::Generate { partition, rows }
    }

    /// Records that the partition's end was reported.
    pub fn end(&mut self, partition: usize) {
        self.ended[partition] = true;
        self.next = (partition + 1) % self.count();
    }

    /// Records that the partition produced `rows` more rows.
    pub fn advance(&mut self, partition: usize, rows: u64) {
        self.offsets[partition] += rows;
        self.next = (partition + 1) % self.count();
    }

    pub fn positions(&self) -> Vec<SourcePosition> {
        self.offsets
            .iter()
            .enumerate()
            .map(|(p, &offset)| SourcePosition { partition: p.to_string(), offset })
            .collect()
    }

    /// Sets the offsets of the partitions named by `positions` (others keep theirs). A partition
    /// moved back before its end reads again. Returns the partitions that moved.
    pub fn seek(&mut self, positions: &[SourcePosition]) -> Result<Vec<usize>, ConnectorError> {
        let mut targets = Vec::with_capacity(positions.len());
        for pos in positions {
            targets.push((self.index(&pos.partition)?, pos.offset));
        }
        for &(p, offset) in &targets {
            self.offsets[p] = offset;
            self.ended[p] = false;
        }
        Ok(targets.into_iter().map(|(p, _)| p).collect())
    }

    /// Ends each named partition once its offset reaches the given one.
    pub fn stop_at(&mut self, positions: &[SourcePosition]) {
        for pos in positions {
            if let Ok(p) = self.index(&pos.partition) {
                self.stops[p] = Some(self.stops[p].map_or(pos.offset, |s| s.min(pos.offset)));
            }
        }
    }

    fn index(&self, partition: &str) -> Result<usize, ConnectorError> {
        match partition.parse::<usize>() {
            Ok(p) if p < self.count() => Ok(p),
            _ => Err(ConnectorError::InvalidPosition {
                partition: partition.to_string(),
                reason: format!("the source has partitions 0 to {}", self.count() - 1),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(partition: &str, offset: u64) -> SourcePosition {
        SourcePosition { partition: partition.into(), offset }
    }

    #[test]
    fn turns_go_round_the_partitions_that_have_not_ended() {
        let mut parts = Partitions::new(vec![None, Some(0), None]);
        assert_eq!(parts.turn(), Some(0));
        parts.advance(0, 5);
        assert_eq!((parts.turn(), parts.remaining(1)), (Some(1), 0));
        parts.end(1);
        assert_eq!(parts.turn(), Some(2));
        parts.advance(2, 5);
        assert_eq!(parts.turn(), Some(0));
        parts.end(0);
        parts.end(2);
        assert_eq!(parts.turn(), None);
    }

    #[test]
    fn seek_and_stop_at_move_and_bound_offsets() {
        let mut parts = Partitions::new(vec![Some(100), None]);
        parts.stop_at(&[pos("0", 150), pos("1", 30)]);
        assert_eq!((parts.remaining(0), parts.remaining(1)), (100, 30));
        assert_eq!(parts.seek(&[pos("1", 10)]).unwrap(), vec![1]);
        assert_eq!(parts.remaining(1), 20);
        assert_eq!(parts.positions(), vec![pos("0", 0), pos("1", 10)]);
        assert!(parts.seek(&[pos("2", 0)]).is_err());
        assert!(parts.seek(&[pos("x", 0)]).is_err());
        let fresh = parts.restarted();
        assert_eq!((fresh.offset(1), fresh.remaining(1)), (0, u64::MAX));
    }
}
