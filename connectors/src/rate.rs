//! A rows-per-second limit shared by the generators.
//!
//! The limit is a schedule, not a per-batch sleep: the n-th row is due `n / rate` seconds after
//! the first batch, so that the rate over all of a source's partitions stays at the limit however
//! long generating a batch takes. A source that fell more than [`MAX_DEBT`] behind (the engine
//! stopped reading for a while) does not burst to catch up; the schedule restarts from now.

use std::time::Duration;

use tokio::time::Instant;

/// How far behind its schedule a limited source may be before the schedule restarts.
const MAX_DEBT: Duration = Duration::from_secs(1);

/// Limited sources produce about this many batches a second.
const BATCHES_PER_SECOND: f64 = 20.0;

/// Paces a source to `rows_per_second` over all its partitions (0: unlimited).
#[derive(Debug, Clone)]
pub struct RateLimit {
    rows_per_second: f64,
    /// When the schedule started (at the first wait, or when it fell behind).
    started: Option<Instant>,
    /// Rows produced since `started`.
    emitted: u64,
}

impl RateLimit {
    pub fn new(rows_per_second: f64) -> Self {
        RateLimit { rows_per_second, started: None, emitted: 0 }
    }

    pub fn is_limited(&self) -> bool {
        self.rows_per_second > 0.0
    }

    /// The rows of the next batch: `max_chunk` when unlimited, else about a twentieth of a
    /// second's worth (at least one).
    pub fn batch_rows(&self, max_chunk: usize) -> usize {
        if self.is_limited() {
            ((self.rows_per_second / BATCHES_PER_SECOND) as usize).clamp(1, max_chunk)
        } else {
            max_chunk
        }
    }

    /// Waits until the next rows are due. Cancel-safe: dropping the future loses nothing, as
    /// the rows only count once [`RateLimit::record`] is called after they were produced. An
    /// unlimited source still yields to the scheduler when its task has used its budget, so that
    /// a reader that is never slowed down does not starve other tasks.
    pub async fn wait(&mut self) {
        if !self.is_limited() {
            tokio::task::consume_budget().await;
            return;
        }
        let now = Instant::now();
        let ahead = Duration::from_secs_f64(self.emitted as f64 / self.rows_per_second);
        let due = match self.started {
            Some(started) if started + ahead + MAX_DEBT >= now => started + ahead,
            // First batch, or too far behind: restart the schedule (idempotent, so cancel-safe).
            _ => {
                self.started = Some(now);
                self.emitted = 0;
                now
            }
        };
        if due > now {
            tokio::time::sleep_until(due).await;
        }
    }

    /// Counts rows produced after a [`RateLimit::wait`].
    pub fn record(&mut self, rows: usize) {
        self.emitted += rows as u64;
    }
}
