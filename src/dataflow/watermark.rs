//! Watermarks per partition, and which rows are late.
//!
//! The rule (DESIGN.md §2): a partition's watermark is the maximum, over the rows it has read, of
//! the declared watermark expression (`ts - INTERVAL '5 seconds'`); the source's watermark is
//! the minimum over its partitions, leaving out partitions that ended (+∞) and partitions idle
//! for longer than `watermark.idle_timeout`. A row is late when its event time is below the
//! source's watermark at the moment it is read, i.e. with the watermark computed from the rows
//! before it (in read order, across partitions). Late rows never reach a view.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::physical_expr::PhysicalExpr;

use super::{EventTime, WATERMARK_MAX};
use crate::checkpoint::snapshot::{PartitionMark, TrackerState};
use crate::error::Result;

/// How a relation's watermark is defined: the event-time column and the expression whose
/// maximum is the watermark.
#[derive(Debug, Clone)]
pub struct WatermarkSpec {
    pub column: usize,
    pub expr: Arc<dyn PhysicalExpr>,
    /// When the expression is `column - <fixed interval>` (the usual form), that interval in
    /// microseconds: the watermark candidates are then a subtraction, not an evaluation of the
    /// expression (whose calendar-aware interval arithmetic is slow per row).
    pub fixed_delay: Option<i64>,
    /// `None`: partitions never count as idle.
    pub idle_timeout: Option<Duration>,
}

#[derive(Debug, Clone)]
struct PartitionState {
    max: EventTime,
    last_row: Instant,
    ended: bool,
    /// Not read yet, in a source that reads its partitions one after another: it does not
    /// hold the watermark back until its first row.
    pending: bool,
    /// The connector knows of messages in this partition that Weir has not read yet (consumer
    /// lag): however long since its last row, it is not idle, only slower to fetch than the
    /// others. Without this a backlog read unevenly across partitions turns into late rows.
    backlog: bool,
}

/// The result of reading one batch.
pub struct Assigned {
    /// The rows that are not late.
    pub on_time: RecordBatch,
    /// The rows that are late (below the watermark when read).
    pub late: RecordBatch,
    /// For each late row, the watermark it was below.
    pub missed: Vec<EventTime>,
    /// The new source watermark, when it advanced.
    pub advanced: Option<EventTime>,
}

#[derive(Debug, Clone)]
pub struct WatermarkTracker {
    spec: Option<WatermarkSpec>,
    partitions: Vec<PartitionState>,
    current: EventTime,
    /// Partitions start pending ([`WatermarkTracker::start_partitions_when_read`]).
    in_sequence: bool,
}

fn timestamps_micros(array: &dyn Array) -> Result<datafusion::arrow::array::PrimitiveArray<TimestampMicrosecondType>> {
    let casted = cast(array, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
    Ok(casted.as_primitive::<TimestampMicrosecondType>().clone())
}

impl WatermarkTracker {
    pub fn new(spec: Option<WatermarkSpec>, partitions: usize) -> Self {
        let now = Instant::now();
        WatermarkTracker {
            spec,
            partitions: vec![
                PartitionState { max: EventTime::MIN, last_row: now, ended: false, pending: false, backlog: false };
                partitions.max(1)
            ],
            current: EventTime::MIN,
            in_sequence: false,
        }
    }

    /// Partitions that appeared after the source started (a Kafka topic grew): each counts for
    /// the watermark from its first row on, like a pending partition, so that a new, empty
    /// partition does not stop the watermark.
    fn add_partitions(&mut self, count: usize, now: Instant) {
        self.partitions.resize(count, PartitionState { max: EventTime::MIN, last_row: now, ended: false, pending: true, backlog: false });
    }

    /// For a source that reads its partitions one after another (files in name order): a
    /// partition counts for the watermark from its first row on, not before.
    pub fn start_partitions_when_read(&mut self) {
        self.in_sequence = true;
        for p in &mut self.partitions {
            p.pending = p.max == EventTime::MIN && !p.ended;
        }
    }

    pub fn current(&self) -> EventTime {
        self.current
    }

    /// The state a checkpoint keeps (idleness is a matter of wall-clock time and starts afresh).
    pub fn save(&self) -> TrackerState {
        TrackerState {
            partitions: self.partitions.iter().map(|p| PartitionMark { max: p.max, ended: p.ended, pending: p.pending }).collect(),
            current: self.current,
        }
    }

    /// Continues from a checkpointed state: rows below its watermark are late, as they were.
    pub fn restore(&mut self, state: &TrackerState) {
        let now = Instant::now();
        if state.partitions.len() > self.partitions.len() {
            self.add_partitions(state.partitions.len(), now);
        }
        for (p, mark) in self.partitions.iter_mut().zip(&state.partitions) {
            p.max = mark.max;
            p.ended = mark.ended;
            p.pending = mark.pending;
            p.last_row = now;
        }
        self.current = state.current;
    }

    /// The event time of each row (the watermarked column), for reporting late rows.
    pub fn event_times(&self, batch: &RecordBatch) -> Result<Vec<Option<EventTime>>> {
        match &self.spec {
            Some(spec) => Ok(timestamps_micros(batch.column(spec.column).as_ref())?.iter().collect()),
            None => Ok(vec![None; batch.num_rows()]),
        }
    }

    /// Per partition: its own watermark (the max of the watermark expression over its rows),
    /// and whether it ended.
    pub fn partition_watermarks(&self) -> Vec<(EventTime, bool)> {
        self.partitions.iter().map(|p| (p.max, p.ended)).collect()
    }

    pub fn has_watermark(&self) -> bool {
        self.spec.is_some()
    }

    /// Which partitions have unread messages, as the connector reports it (index = partition;
    /// partitions not listed have none, or the connector does not know).
    pub fn set_backlog(&mut self, backlog: impl IntoIterator<Item = bool>) {
        let mut backlog = backlog.into_iter();
        for p in &mut self.partitions {
            p.backlog = backlog.next().unwrap_or(false);
        }
    }

    /// The partitions that hold the watermark back at `now`: not ended, not pending, and not
    /// idle (a partition with a backlog is never idle).
    fn counting(&self, now: Instant) -> impl Iterator<Item = (usize, &PartitionState)> {
        let idle = self.spec.as_ref().and_then(|s| s.idle_timeout);
        self.partitions.iter().enumerate().filter(move |(_, p)| {
            !p.ended && !p.pending && (p.backlog || idle.is_none_or(|timeout| now.duration_since(p.last_row) < timeout))
        })
    }

    fn combined(&self, now: Instant) -> EventTime {
        let mut min = WATERMARK_MAX;
        let mut any_active = false;
        for (_, p) in self.counting(now) {
            any_active = true;
            min = min.min(p.max);
        }
        if !any_active && self.partitions.iter().any(|p| !p.ended) {
            // Everything is idle: hold the watermark where it is rather than jump ahead.
            return self.current;
        }
        if self.spec.is_none() && min != WATERMARK_MAX {
            // Without a declared watermark only the end of the input moves it.
            return self.current;
        }
        min
    }

    /// The minimum watermark of the partitions other than `partition` that count (not ended,
    /// not pending, not idle at `now`); +∞ when none does.
    fn min_of_others(&self, partition: usize, now: Instant) -> EventTime {
        self.counting(now).filter(|(i, _)| *i != partition).map(|(_, p)| p.max).min().unwrap_or(WATERMARK_MAX)
    }

    fn advance(&mut self, now: Instant) -> Option<EventTime> {
        let next = self.combined(now);
        if next > self.current {
            self.current = next;
            Some(next)
        } else {
            None
        }
    }

    /// Splits a batch read from `partition` into on-time and late rows, advancing watermarks.
    pub fn assign(&mut self, partition: usize, batch: RecordBatch) -> Result<Assigned> {
        let now = Instant::now();
        if partition >= self.partitions.len() {
            self.add_partitions(partition + 1, now);
        }
        let Some(spec) = &self.spec else {
            let empty = batch.slice(0, 0);
            return Ok(Assigned { on_time: batch, late: empty, missed: Vec::new(), advanced: None });
        };
        let start = self.current;
        let ts = timestamps_micros(batch.column(spec.column).as_ref())?;
        let candidates = match spec.fixed_delay {
            Some(delay) => datafusion::arrow::compute::kernels::arity::unary(&ts, |t: i64| t.saturating_sub(delay)),
            None => timestamps_micros(spec.expr.evaluate(&batch)?.into_array(batch.num_rows())?.as_ref())?,
        };
        self.partitions[partition].last_row = now;
        self.partitions[partition].pending = false;
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut any_late = false;
        let mut missed = Vec::new();
        // The other partitions do not change during this batch (idleness is judged at `now`),
        // so the source's watermark after a row is min(others, this partition's max): one
        // comparison per row instead of a pass over the partitions.
        let others = self.min_of_others(partition, now);
        for i in 0..batch.num_rows() {
            // A row without event time cannot be placed in time: it is never late and never
            // moves the watermark (it can still reach non-windowed views).
            let on_time = ts.is_null(i) || ts.value(i) >= self.current;
            keep.push(on_time);
            if !on_time {
                any_late = true;
                missed.push(self.current);
            }
            if !candidates.is_null(i) {
                let c = candidates.value(i);
                let p = &mut self.partitions[partition];
                if c > p.max {
                    p.max = c;
                    let next = c.min(others);
                    if next > self.current {
                        self.current = next;
                    }
                }
            }
        }
        let _ = self.advance(now);
        let (on_time, late) = if any_late {
            let mask = BooleanArray::from(keep);
            let not = datafusion::arrow::compute::not(&mask)?;
            (
                datafusion::arrow::compute::filter_record_batch(&batch, &mask)?,
                datafusion::arrow::compute::filter_record_batch(&batch, &not)?,
            )
        } else {
            let empty = batch.slice(0, 0);
            (batch, empty)
        };
        Ok(Assigned { on_time, late, missed, advanced: (self.current > start).then_some(self.current) })
    }

    /// A partition ended (bounded input): it no longer holds the watermark back.
    pub fn end_partition(&mut self, partition: usize) -> Option<EventTime> {
        if let Some(p) = self.partitions.get_mut(partition) {
            p.ended = true;
        }
        self.advance(Instant::now())
    }

    /// Every partition ended: the watermark goes to +∞ so every window closes.
    pub fn end_all(&mut self) -> Option<EventTime> {
        for p in &mut self.partitions {
            p.ended = true;
        }
        if self.current < WATERMARK_MAX {
            self.current = WATERMARK_MAX;
            Some(WATERMARK_MAX)
        } else {
            None
        }
    }

    /// Re-evaluates idleness without new rows (called on a timer).
    pub fn tick(&mut self) -> Option<EventTime> {
        self.spec.as_ref()?;
        self.advance(Instant::now())
    }
}

impl WatermarkTracker {
    /// The same rule from the beginning (for a replay of the same input).
    pub fn clone_reset(&self) -> Self {
        let mut fresh = WatermarkTracker::new(self.spec.clone(), self.partitions.len());
        if self.in_sequence {
            fresh.start_partitions_when_read();
        }
        fresh
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use datafusion::arrow::array::TimestampMicrosecondArray;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_expr::expressions::Column;

    use super::*;

    fn rows(times: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true)]));
        RecordBatch::try_new(schema, vec![Arc::new(TimestampMicrosecondArray::from(times.to_vec()))]).unwrap()
    }

    fn tracker(partitions: usize, idle: Option<Duration>) -> WatermarkTracker {
        let spec = WatermarkSpec { column: 0, expr: Arc::new(Column::new("ts", 0)), fixed_delay: None, idle_timeout: idle };
        WatermarkTracker::new(Some(spec), partitions)
    }

    #[test]
    fn the_slowest_partition_holds_the_watermark() {
        let mut t = tracker(2, None);
        t.assign(0, rows(&[100, 200])).unwrap();
        assert_eq!(t.current(), EventTime::MIN, "partition 1 has not reported yet");
        t.assign(1, rows(&[50])).unwrap();
        assert_eq!(t.current(), 50);
        let a = t.assign(1, rows(&[40, 300])).unwrap();
        assert_eq!(a.late.num_rows(), 1, "40 is below the watermark 50");
        assert_eq!(a.missed, vec![50]);
        assert_eq!(t.current(), 200);
    }

    /// Files read one after another: a file not opened yet does not hold the watermark back, so
    /// windows close while the first file is read; the next file counts from its first row.
    #[test]
    fn partitions_read_in_sequence_count_from_their_first_row() {
        let mut t = tracker(3, None);
        t.start_partitions_when_read();
        t.assign(0, rows(&[100, 200])).unwrap();
        assert_eq!(t.current(), 200, "files 1 and 2 are not open yet");
        t.end_partition(0);
        assert_eq!(t.current(), 200, "between files the watermark holds");
        let a = t.assign(1, rows(&[150, 300])).unwrap();
        assert_eq!(a.late.num_rows(), 1, "150 is below the previous file's watermark");
        assert_eq!(t.current(), 300);
        let mut replay = t.clone_reset();
        replay.assign(0, rows(&[10])).unwrap();
        assert_eq!(replay.current(), 10, "a replay reads in sequence too");
    }

    /// A partition that stops sending rows holds the watermark back only until it has been idle
    /// for `idle_timeout`; then the others move it, and its own old rows become late.
    #[test]
    fn an_idle_partition_stops_holding_the_watermark() {
        let idle = Duration::from_millis(500);
        let mut t = tracker(2, Some(idle));
        t.assign(1, rows(&[10])).unwrap();
        let started = Instant::now();
        let mut ts = 20;
        while started.elapsed() < idle / 5 {
            t.assign(0, rows(&[ts])).unwrap();
            ts += 10;
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(t.current(), 10, "partition 1 is not idle yet");
        while started.elapsed() < idle * 2 {
            t.assign(0, rows(&[ts])).unwrap();
            ts += 10;
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(t.current(), ts - 10, "partition 1 is idle: partition 0 alone sets the watermark");
        let a = t.assign(1, rows(&[15])).unwrap();
        assert_eq!(a.late.num_rows(), 1, "the idle partition's old row is late");
        // Back with a current row, it holds the watermark again; it never goes back.
        let before = t.current();
        t.assign(1, rows(&[before + 5])).unwrap();
        t.assign(0, rows(&[before + 1000])).unwrap();
        assert_eq!(t.current(), before + 5);
        // With every partition idle the watermark holds rather than jump.
        std::thread::sleep(idle * 2);
        assert_eq!(t.tick(), None);
        assert_eq!(t.current(), before + 5);
    }

    /// A partition the connector reports unread messages for is slow, not idle: it holds the
    /// watermark however long since its last row, until its backlog is read.
    #[test]
    fn a_partition_with_a_backlog_is_never_idle() {
        let idle = Duration::from_millis(50);
        let mut t = tracker(2, Some(idle));
        t.assign(1, rows(&[10])).unwrap();
        t.set_backlog([false, true]);
        std::thread::sleep(idle * 3);
        t.assign(0, rows(&[1000])).unwrap();
        assert_eq!(t.current(), 10, "partition 1 has unread messages: it still holds the watermark");
        let a = t.assign(1, rows(&[12])).unwrap();
        assert_eq!(a.late.num_rows(), 0, "its rows are on time");
        t.set_backlog([false, false]);
        std::thread::sleep(idle * 3);
        t.assign(0, rows(&[1001])).unwrap();
        assert_eq!(t.current(), 1001, "read up and quiet: now partition 1 is idle");
    }

    #[test]
    fn partitions_that_end_stop_counting_and_the_end_of_all_is_the_final_watermark() {
        let mut t = tracker(2, None);
        t.assign(0, rows(&[100])).unwrap();
        t.assign(1, rows(&[10])).unwrap();
        assert_eq!(t.end_partition(1), Some(100));
        assert_eq!(t.end_all(), Some(WATERMARK_MAX));
    }
}
