//! The shared reader of one source.
//!
//! One task per source reads the connector, assigns watermarks and drops late rows
//! ([`WatermarkTracker`]), and broadcasts the result to every view that reads the source, so all
//! of them see the same rows in the same epochs. It reads only while some view is attached.
//! Control messages from the coordinator come through one channel, in order: barriers (which
//! it forwards between batches) and attachments of new views.
//!
//! A view attached after the reader has read rows is backfilled: a replay of the source from
//! its start, stopped at the positions the shared reader had reached, is fed to the view's
//! backfill channel by a separate task while the live channel queues what comes next. The
//! bounded live channel pauses the shared reader if the backfill is slow: back-pressure, not
//! unbounded buffering.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use weir_catalog::ObjectId;
use weir_connectors::{ConnectorStatus, Source, SourceEvent, SourcePosition};

use super::dead_letter::{DeadLetterQueue, LateEvents};
use super::source_errors::SourceErrorLog;
use super::watermark::WatermarkTracker;
use crate::checkpoint::snapshot::{CheckpointHub, Contribution, SourceState};
use super::{Changes, EventTime, Message, WATERMARK_MAX};

pub enum ReaderControl {
    Barrier(u64),
    /// A view starts reading. `backfill: None`: the view was restored from a checkpoint taken
    /// together with this reader's positions, so it needs no backfill, only the watermark.
    Attach { view: ObjectId, live: mpsc::Sender<Message>, backfill: Option<mpsc::Sender<Message>> },
}

/// Live figures of a source, read by `weir_catalog` and `/metrics`.
#[derive(Debug)]
pub struct SourceStats {
    pub rows: AtomicU64,
    pub late_rows: AtomicU64,
    pub watermark: AtomicI64,
    pub errors: AtomicU64,
    /// Late rows kept, when the source's policy is `dead_letter`.
    pub dead_letters: Option<DeadLetterQueue>,
    /// Records skipped because they did not decode.
    pub bad_records: SourceErrorLog,
    /// What the connector itself reports (offsets, lag, connection), if anything.
    pub connector: Option<Arc<ConnectorStatus>>,
    /// Per partition: rows read, its watermark, whether it ended.
    pub partitions: std::sync::Mutex<Vec<PartitionStats>>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PartitionStats {
    pub rows: u64,
    pub watermark: EventTime,
    pub ended: bool,
}

impl SourceStats {
    pub fn new(late_events: LateEvents, connector: Option<Arc<ConnectorStatus>>) -> Self {
        SourceStats {
            dead_letters: (late_events == LateEvents::DeadLetter).then(DeadLetterQueue::default),
            connector,
            ..SourceStats::default()
        }
    }
}

impl Default for SourceStats {
    fn default() -> Self {
        SourceStats {
            rows: AtomicU64::new(0),
            late_rows: AtomicU64::new(0),
            watermark: AtomicI64::new(EventTime::MIN),
            errors: AtomicU64::new(0),
            dead_letters: None,
            bad_records: SourceErrorLog::default(),
            connector: None,
            partitions: std::sync::Mutex::new(Vec::new()),
        }
    }
}

pub struct Reader {
    pub source_id: ObjectId,
    pub name: String,
    pub source: Box<dyn Source>,
    pub tracker: WatermarkTracker,
    pub control: mpsc::UnboundedReceiver<ReaderControl>,
    pub stats: Arc<SourceStats>,
    /// The newest checkpointed epoch (the newest published one when checkpoints are off):
    /// positions reached before an epoch's barrier are committed to the source
    /// ([`Source::commit`]) once that epoch is.
    pub committed: watch::Receiver<u64>,
    /// Which barriers are checkpoints, and where this reader hands in its state at them.
    pub checkpoints: Option<Arc<CheckpointHub>>,
    /// The state to resume from (recovery): positions to seek to, watermarks to continue from.
    pub restored: Option<SourceState>,
}

impl Reader {
    /// Copies the tracker's per-partition figures into the shared stats (after each batch).
    fn record_partitions(&self, partition: Option<(usize, u64)>) {
        let mut stats = self.stats.partitions.lock().unwrap_or_else(|p| p.into_inner());
        let marks = self.tracker.partition_watermarks();
        stats.resize(marks.len(), PartitionStats { watermark: EventTime::MIN, ..PartitionStats::default() });
        for (s, (watermark, ended)) in stats.iter_mut().zip(marks) {
            s.watermark = watermark;
            s.ended = ended;
        }
        if let Some((p, rows)) = partition
            && let Some(s) = stats.get_mut(p)
        {
            s.rows += rows;
        }
    }

    /// Tells the tracker which partitions the connector knows to have unread messages, so that
    /// a partition that is only slow to fetch never counts as idle.
    fn refresh_backlog(&mut self) {
        if let Some(status) = &self.stats.connector {
            self.tracker.set_backlog(status.partitions().iter().map(|p| p.lag().is_some_and(|lag| lag > 0)));
        }
    }

    pub async fn run(mut self) {
        let mut outputs: Vec<(ObjectId, mpsc::Sender<Message>)> = Vec::new();
        let mut read_any = false;
        let mut ended = false;
        // Set when the source cannot go on: it reads nothing more, but barriers still pass, so
        // that its views stay as they are and every other view keeps publishing.
        let mut stopped = false;
        // The checkpointed positions of a stopped source, which its checkpoints keep.
        let mut frozen_positions = None;
        if let Some(state) = self.restored.take() {
            if let Err(e) = self.source.seek(&state.positions()).await {
                // Reading from the start instead would count the checkpointed rows twice.
                tracing::error!(source = %self.name, error = %e, "could not seek to the checkpointed positions; the source reads nothing more");
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                stopped = true;
                frozen_positions = Some(state.positions());
            }
            self.tracker.restore(&state.watermarks);
            self.stats.watermark.store(self.tracker.current(), Ordering::Relaxed);
            self.record_partitions(None);
            read_any = state.read_any;
            ended = state.ended;
        }
        // Positions at each barrier not yet committed, oldest first.
        let mut uncommitted: VecDeque<(u64, Vec<SourcePosition>)> = VecDeque::new();
        loop {
            let reading = !outputs.is_empty() && !ended && !stopped;
            tokio::select! {
                biased;
                control = self.control.recv() => match control {
                    None => return,
                    Some(ReaderControl::Barrier(epoch)) => {
                        if let Some(hub) = self.checkpoints.as_ref().filter(|h| h.is_requested(epoch)) {
                            let positions = frozen_positions.clone().unwrap_or_else(|| self.source.positions());
                            let state = SourceState {
                                positions: SourceState::record_positions(&positions),
                                watermarks: self.tracker.save(),
                                read_any,
                                ended,
                            };
                            hub.contribute(Contribution::Source { id: self.source_id, epoch, state });
                        }
                        if read_any && !stopped && uncommitted.back().is_none_or(|(_, p)| *p != self.source.positions()) {
                            uncommitted.push_back((epoch, self.source.positions()));
                        }
                        self.refresh_backlog();
                        if let Some(w) = self.tracker.tick() {
                            self.stats.watermark.store(w, Ordering::Relaxed);
                            broadcast(&mut outputs, Message::Watermark(w)).await;
                        }
                        broadcast(&mut outputs, Message::Barrier(epoch)).await;
                    }
                    Some(ReaderControl::Attach { view, live, backfill }) => {
                        match backfill {
                            Some(backfill) if read_any => self.spawn_backfill(view, backfill, ended),
                            Some(_) => {}
                            None => {
                                // Restored: operators downstream start from no watermark.
                                let w = self.tracker.current();
                                if w > EventTime::MIN && live.send(Message::Watermark(w)).await.is_err() {
                                    continue;
                                }
                            }
                        }
                        outputs.push((view, live));
                    }
                },
                Ok(()) = self.committed.changed(), if !uncommitted.is_empty() => {
                    let epoch = *self.committed.borrow_and_update();
                    let mut newest = None;
                    while uncommitted.front().is_some_and(|(e, _)| *e <= epoch) {
                        newest = uncommitted.pop_front().map(|(_, p)| p);
                    }
                    if let Some(positions) = newest
                        && let Err(e) = self.source.commit(&positions).await
                    {
                        tracing::warn!(source = %self.name, error = %e, "could not commit the source's positions");
                    }
                }
                event = self.source.next(), if reading => match event {
                    Ok(SourceEvent::Batch { partition, rows }) => {
                        read_any = true;
                        let n = rows.num_rows() as u64;
                        self.refresh_backlog();
                        match self.tracker.assign(partition, rows) {
                            Ok(assigned) => {
                                self.stats.rows.fetch_add(n, Ordering::Relaxed);
                                self.record_partitions(Some((partition, n)));
                                let late = assigned.late.num_rows() as u64;
                                if late > 0 {
                                    self.stats.late_rows.fetch_add(late, Ordering::Relaxed);
                                    tracing::debug!(source = %self.name, late, "late rows dropped");
                                    if let Some(queue) = &self.stats.dead_letters {
                                        let kept = self.tracker.event_times(&assigned.late).and_then(|times| {
                                            queue.push(partition, &assigned.late, &times, &assigned.missed)
                                        });
                                        if let Err(e) = kept {
                                            tracing::warn!(source = %self.name, error = %e, "could not keep late rows");
                                        }
                                    }
                                }
                                if assigned.on_time.num_rows() > 0 {
                                    let changes = Arc::new(Changes::inserts(assigned.on_time));
                                    broadcast(&mut outputs, Message::Data(changes)).await;
                                }
                                if let Some(w) = assigned.advanced {
                                    self.stats.watermark.store(w, Ordering::Relaxed);
                                    broadcast(&mut outputs, Message::Watermark(w)).await;
                                }
                            }
                            Err(e) => {
                                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(source = %self.name, error = %e, "could not assign watermarks; batch skipped");
                            }
                        }
                    }
                    Ok(SourceEvent::PartitionEnd { partition }) => {
                        let advanced = self.tracker.end_partition(partition);
                        self.record_partitions(None);
                        if let Some(w) = advanced {
                            self.stats.watermark.store(w, Ordering::Relaxed);
                            broadcast(&mut outputs, Message::Watermark(w)).await;
                        }
                    }
                    Ok(SourceEvent::BadRecord { partition, offset, reason, payload }) => {
                        read_any = true;
                        // Counted with the source's errors; the record is skipped, the source goes on.
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(source = %self.name, partition, offset, %reason, "record skipped");
                        self.stats.bad_records.push(partition, offset, reason, &payload);
                    }
                    Ok(SourceEvent::End) => {
                        ended = true;
                        read_any = true;
                        let advanced = self.tracker.end_all();
                        self.record_partitions(None);
                        if let Some(w) = advanced {
                            self.stats.watermark.store(w, Ordering::Relaxed);
                            broadcast(&mut outputs, Message::Watermark(w)).await;
                        }
                        tracing::info!(source = %self.name, "source exhausted");
                    }
                    Err(e) => {
                        self.stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(source = %self.name, error = %e, "source read failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                },
            }
        }
    }

    /// Replays the source up to the shared reader's positions into a new view's backfill.
    fn spawn_backfill(&self, view: ObjectId, backfill: mpsc::Sender<Message>, ended: bool) {
        let Some(mut replay) = self.source.replay_from_start() else {
            tracing::warn!(source = %self.name, view, "source cannot replay; the view starts from the live position");
            return;
        };
        replay.stop_at(&self.source.positions());
        let mut tracker = self.tracker.clone_reset();
        let shared_watermark = self.tracker.current();
        let name = self.name.clone();
        tokio::spawn(async move {
            loop {
                match replay.next().await {
                    Ok(SourceEvent::Batch { partition, rows }) => match tracker.assign(partition, rows) {
                        Ok(a) => {
                            if a.on_time.num_rows() > 0
                                && backfill.send(Message::Data(Arc::new(Changes::inserts(a.on_time)))).await.is_err()
                            {
                                return;
                            }
                            if let Some(w) = a.advanced
                                && backfill.send(Message::Watermark(w)).await.is_err()
                            {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(source = %name, error = %e, "backfill batch skipped"),
                    },
                    // The replay stops where the shared reader was; only the shared reader's
                    // own state says whether the source really ended.
                    Ok(SourceEvent::PartitionEnd { .. }) => {}
                    // The shared reader counted and reported it when it read it.
                    Ok(SourceEvent::BadRecord { .. }) => {}
                    Ok(SourceEvent::End) => break,
                    Err(e) => {
                        tracing::warn!(source = %name, error = %e, "backfill read failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
            let w = if ended { WATERMARK_MAX } else { shared_watermark };
            if w > EventTime::MIN {
                let _ = backfill.send(Message::Watermark(w)).await;
            }
            tracing::info!(source = %name, view, "backfill done");
        });
    }
}

/// Sends a message to every output, forgetting outputs whose view went away.
pub async fn broadcast(outputs: &mut Vec<(ObjectId, mpsc::Sender<Message>)>, message: Message) {
    let mut closed = Vec::new();
    for (i, (_, tx)) in outputs.iter().enumerate() {
        if tx.send(message.clone()).await.is_err() {
            closed.push(i);
        }
    }
    for i in closed.into_iter().rev() {
        outputs.remove(i);
    }
}
