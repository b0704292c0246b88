//! Records a source skipped because they did not decode (`weir_catalog.source_errors`).
//!
//! A bad message never stops a source: it is counted (`weir_catalog.sources.errors`,
//! `/metrics`), logged, and the newest [`SOURCE_ERROR_CAPACITY`] per source are kept here with
//! where they were (partition, offset), why, and their first bytes, so that a user can find the
//! message in the topic. Until checkpoints land the log lives in memory.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Bad records kept per source.
pub const SOURCE_ERROR_CAPACITY: usize = 1_000;

#[derive(Debug, Clone)]
pub struct SourceError {
    pub received_at_micros: i64,
    pub partition: usize,
    pub offset: u64,
    pub reason: String,
    /// The record's first bytes, as text (invalid UTF-8 shown as U+FFFD).
    pub payload: String,
}

#[derive(Debug, Default)]
pub struct SourceErrorLog {
    errors: Mutex<VecDeque<SourceError>>,
}

impl SourceErrorLog {
    pub fn push(&self, partition: usize, offset: u64, reason: String, payload: &[u8]) {
        let error = SourceError {
            received_at_micros: chrono::Utc::now().timestamp_micros(),
            partition,
            offset,
            reason,
            payload: String::from_utf8_lossy(payload).into_owned(),
        };
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        if errors.len() == SOURCE_ERROR_CAPACITY {
            errors.pop_front();
        }
        errors.push_back(error);
    }

    pub fn snapshot(&self) -> Vec<SourceError> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }
}
