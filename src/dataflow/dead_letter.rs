//! Late rows kept for inspection (`watermark.late_events = 'dead_letter'`).
//!
//! A late row is excluded from every view (see `watermark.rs`); with the dead-letter policy it
//! is also kept, rendered as text with the reason, in a bounded per-source queue that
//! `weir_catalog.late_events` shows. The queue keeps the newest [`DEAD_LETTER_CAPACITY`] rows;
//! older ones are dropped (they stay counted in `weir_catalog.sources.late_rows`). Until
//! checkpoints land the queue lives in memory.

use std::collections::VecDeque;
use std::sync::Mutex;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::EventTime;
use crate::error::Result;

/// Rows kept per source.
pub const DEAD_LETTER_CAPACITY: usize = 10_000;

/// What a source does with late rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateEvents {
    Drop,
    DeadLetter,
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub received_at_micros: i64,
    pub partition: usize,
    pub event_time: Option<EventTime>,
    /// The watermark the row was below when read.
    pub watermark: EventTime,
    pub reason: String,
    /// The row as a Postgres row literal: `(a,5,2026-01-01T00:00:00)`.
    pub row: String,
}

#[derive(Debug, Default)]
pub struct DeadLetterQueue {
    rows: Mutex<VecDeque<DeadLetter>>,
}

impl DeadLetterQueue {
    /// Keeps the late rows of one batch, with their event times and the watermarks they missed.
    pub fn push(&self, partition: usize, late: &RecordBatch, event_times: &[Option<EventTime>], missed: &[EventTime]) -> Result<()> {
        let options = FormatOptions::default().with_null("");
        let formatters = late
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let now = chrono::Utc::now().timestamp_micros();
        let mut letters = Vec::with_capacity(late.num_rows());
        for (i, (event_time, watermark)) in event_times.iter().zip(missed).enumerate().take(late.num_rows()) {
            let fields: Vec<String> = formatters.iter().map(|f| f.value(i).to_string()).collect();
            letters.push(DeadLetter {
                received_at_micros: now,
                partition,
                event_time: *event_time,
                watermark: *watermark,
                reason: "late: event time below the source's watermark".to_string(),
                row: format!("({})", fields.join(",")),
            });
        }
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        rows.extend(letters);
        let excess = rows.len().saturating_sub(DEAD_LETTER_CAPACITY);
        rows.drain(..excess);
        Ok(())
    }

    pub fn snapshot(&self) -> Vec<DeadLetter> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}
