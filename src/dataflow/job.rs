//! One view's job: a task that runs the view's operator tree and maintains its contents.
//!
//! Inputs are channels, one per relation the view reads (a source's reader, a table's feed or
//! an upstream view's job), each optionally preceded by a backfill channel that is drained
//! first. Barriers are aligned: once barrier `e` arrives on an input, that input is not read
//! again until `e` arrived on every input; then the epoch ends: operators flush their epoch's
//! output (children before parents), the view applies it, forwards it to downstream views and
//! reports an immutable version of its contents to the coordinator.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::task::Poll;

use tokio::sync::mpsc;
use weir_catalog::ObjectId;

use super::operators::{OperatorState, OperatorTree};
use crate::checkpoint::snapshot::{CheckpointHub, Contribution, ViewState};
use super::view_data::ViewData;
use super::{Changes, EventTime, Message};
use crate::error::{Result, SqlState, WeirError};

/// Restores a freshly built operator tree from a checkpoint: for every operator named, its
/// chain of snapshots (a full one, then changes) in order.
pub fn restore_operators(tree: &mut OperatorTree, operators: Vec<(usize, Vec<OperatorState>)>) -> Result<()> {
    for (node, chain) in operators {
        let op = tree.operators.get_mut(node).ok_or_else(|| {
            WeirError::new(SqlState::DataCorrupted, format!("checkpointed state for operator {node}, which the view does not have"))
        })?;
        for state in chain {
            op.restore(state)?;
        }
    }
    Ok(())
}

/// Bound of every channel between tasks: a slow view back-pressures its inputs.
pub const CHANNEL_CAPACITY: usize = 64;

/// A channel into a job: bounded from readers and views (back-pressure), unbounded from table
/// feeds (a commit must not wait for a view while it holds the storage lock).
pub enum InputReceiver {
    Bounded(mpsc::Receiver<Message>),
    Unbounded(mpsc::UnboundedReceiver<Message>),
}

impl InputReceiver {
    fn poll_recv(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Message>> {
        match self {
            InputReceiver::Bounded(r) => r.poll_recv(cx),
            InputReceiver::Unbounded(r) => r.poll_recv(cx),
        }
    }
}

pub struct JobInput {
    pub relation: u64,
    pub backfill: Option<InputReceiver>,
    pub live: InputReceiver,
}

/// A request to read this view (a downstream view, a sink, a SUBSCRIBE): its backfill gets the
/// current contents, its live channel everything after.
pub struct Subscription {
    pub view: ObjectId,
    pub backfill: Backfill,
    pub live: mpsc::Sender<Message>,
    /// `None`: the view waits for room in `live` (back-pressure: downstream views, sinks).
    /// `Some(flag)`: the subscriber must never hold the view back (SUBSCRIBE); when `live` is
    /// full it is dropped and the flag set, so that it can tell the client why it ended.
    pub overflowed: Option<Arc<AtomicBool>>,
}

/// How a subscriber gets the view's contents when it joins.
pub enum Backfill {
    /// As change messages, sent before the live ones, waiting for room.
    Messages(mpsc::Sender<Message>),
    /// As the view's data itself (a persistent map: cloning it is cheap), never waiting.
    Snapshot(tokio::sync::oneshot::Sender<ViewData>),
    /// Only the view's watermark: the subscriber was restored from the same checkpoint as this
    /// view, so it already holds the contents.
    WatermarkOnly(mpsc::Sender<Message>),
}

/// Whether a view job keeps its contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// A materialized view: queries read its contents, and any later reader joins with them.
    Kept,
    /// The job of one reader (a sink's or a SUBSCRIBE's own query): the contents are kept until
    /// that reader joined with them, then the job only forwards changes. An append-only sink
    /// of an unbounded stream would otherwise hold every row it ever sent.
    UntilSubscribed,
}

/// A subscriber the view sends its changes to.
struct Downstream {
    live: mpsc::Sender<Message>,
    overflowed: Option<Arc<AtomicBool>>,
}

/// What a job tells the coordinator.
pub enum Report {
    Epoch { view: ObjectId, epoch: u64, data: ViewData },
    Failed { view: ObjectId, error: WeirError },
}

/// Live figures of a view, read by `weir_catalog` and `/metrics`.
#[derive(Debug, Default)]
pub struct ViewStats {
    pub rows: AtomicU64,
    pub state_bytes: AtomicU64,
    pub last_epoch: AtomicU64,
    pub watermark: AtomicI64,
}

pub struct ViewJob {
    pub view: ObjectId,
    pub tree: OperatorTree,
    pub data: ViewData,
    pub inputs: Vec<JobInput>,
    pub reports: mpsc::UnboundedSender<Report>,
    pub subscriptions: mpsc::UnboundedReceiver<Subscription>,
    pub stats: Arc<ViewStats>,
    contents: Contents,
    /// Set once `Contents::UntilSubscribed` contents were handed over and dropped.
    contents_dropped: bool,
    downstream: Vec<Downstream>,
    outbox: Vec<Message>,
    /// Per input: the leaves of the operator tree that read its relation (two for a self-join).
    leaves: Vec<Vec<usize>>,
    /// Set when the view takes part in checkpoints: its state is handed in at their barriers.
    checkpoints: Option<Arc<CheckpointHub>>,
    /// Started from a checkpoint ([`ViewJob::with_contents`]).
    restored: bool,
    /// The epoch of the last state handed in: when the newest written checkpoint holds it,
    /// operators may hand in only what changed since.
    last_snapshot: Option<u64>,
    retention: Option<Retention>,
}

/// A view's retention policy (`WITH (retention = ...)`): rows whose window closed more than
/// `micros` of event time before the view's watermark are forgotten.
#[derive(Debug, Clone)]
pub struct Retention {
    /// A column of the view that bounds its rows (a window start or end).
    pub column: usize,
    pub close_offset: i64,
    /// Microseconds; `i64::MAX`: keep everything (`ALTER ... SET (retention = ...)` changes it
    /// while the view runs).
    pub micros: Arc<AtomicI64>,
}

/// How often (in epochs) a view with a retention policy looks for rows to forget: each look
/// decodes the window column of every row.
const RETENTION_EVERY_EPOCHS: u64 = 20;

impl ViewJob {
    pub fn new(
        view: ObjectId,
        tree: OperatorTree,
        inputs: Vec<JobInput>,
        reports: mpsc::UnboundedSender<Report>,
        subscriptions: mpsc::UnboundedReceiver<Subscription>,
        stats: Arc<ViewStats>,
        contents: Contents,
    ) -> Result<Self> {
        let data = ViewData::new(tree.output_schema.clone())?;
        stats.watermark.store(EventTime::MIN, Ordering::Relaxed);
        let leaves = inputs
            .iter()
            .map(|i| tree.leaves.iter().filter(|(r, _)| *r == i.relation).map(|(_, leaf)| *leaf).collect())
            .collect();
        Ok(ViewJob {
            view,
            tree,
            data,
            inputs,
            reports,
            subscriptions,
            stats,
            contents,
            contents_dropped: false,
            downstream: Vec::new(),
            outbox: Vec::new(),
            leaves,
            checkpoints: None,
            restored: false,
            last_snapshot: None,
            retention: None,
        })
    }

    /// Forgets rows older than the policy allows.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = Some(retention);
        self
    }

    /// Hands the view's state in at every checkpoint barrier.
    pub fn with_checkpoints(mut self, hub: Arc<CheckpointHub>) -> Self {
        self.checkpoints = Some(hub);
        self
    }

    /// Starts from restored contents and output watermark (see [`restore_operators`]).
    pub fn with_contents(mut self, data: ViewData, watermark: EventTime) -> Self {
        self.restored = true;
        self.stats.watermark.store(watermark, Ordering::Relaxed);
        self.stats.rows.store(data.len(), Ordering::Relaxed);
        self.data = data;
        self
    }

    /// The state a checkpoint of `epoch` keeps, taken right after the epoch's output was
    /// applied: operators hand in only their changes when the checkpoint holding their
    /// previous state was written.
    fn snapshot(&mut self, hub: &CheckpointHub, epoch: u64) -> Result<ViewState> {
        // Taken (not read) first: a snapshot that fails half-way has consumed some operators'
        // changes, so the next one must be full.
        let previous = self.last_snapshot.take();
        let since_previous = previous.is_some() && hub.written_for(self.view) == previous;
        let mut operators = Vec::new();
        for (node, op) in self.tree.operators.iter_mut().enumerate() {
            if op.stateful().is_some() {
                operators.push((node, op.checkpoint(since_previous)?));
            }
        }
        self.last_snapshot = Some(epoch);
        Ok(ViewState { operators, contents: self.data.clone(), watermark: self.stats.watermark.load(Ordering::Relaxed) })
    }

    pub async fn run(mut self) {
        use futures::FutureExt;
        let view = self.view;
        let reports = self.reports.clone();
        // A bug in an operator must fail this view, not leave the coordinator waiting for it.
        let outcome = std::panic::AssertUnwindSafe(self.run_inner()).catch_unwind().await;
        let error = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(error)) => error,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                WeirError::internal(format!("materialized view {view} stopped on an internal error: {what}"))
            }
        };
        tracing::error!(view, error = %error, "materialized view failed");
        let _ = reports.send(Report::Failed { view, error });
    }

    async fn run_inner(&mut self) -> Result<()> {
        // A view restored from a checkpoint admits the views that subscribed while the server
        // started before it reads any input: those restored with it hold its contents as of the
        // checkpoint and must miss none of its changes after. (Other views admit subscribers
        // at epoch boundaries, after their own backfill.)
        if self.restored {
            self.admit_subscribers().await?;
        }
        let n = self.inputs.len();
        let mut barrier_on: Vec<Option<u64>> = vec![None; n];
        let mut start = 0usize;
        loop {
            let (index, message) = self.next_message(&barrier_on, start).await;
            start = (index + 1) % n.max(1);
            let Some(message) = message else {
                // An input closed: its relation was dropped (and this view with it) or the
                // server is shutting down.
                return Ok(());
            };
            match message {
                Message::Data(changes) => {
                    for k in 0..self.leaves[index].len() {
                        self.deliver(self.leaves[index][k], 0, changes.as_ref().clone())?;
                    }
                }
                Message::Watermark(w) => {
                    for k in 0..self.leaves[index].len() {
                        self.deliver_watermark(self.leaves[index][k], 0, w)?;
                    }
                }
                Message::Barrier(epoch) => {
                    barrier_on[index] = Some(epoch);
                    if barrier_on.iter().all(|b| *b == Some(epoch)) {
                        self.end_epoch(epoch).await?;
                        barrier_on.iter_mut().for_each(|b| *b = None);
                    } else if barrier_on.iter().any(|b| b.is_some_and(|b| b != epoch)) {
                        return Err(WeirError::internal("inputs delivered different barriers"));
                    }
                }
            }
            self.flush_outbox().await;
        }
    }

    /// The next message from an input not blocked by a barrier, backfill before live.
    async fn next_message(&mut self, blocked: &[Option<u64>], start: usize) -> (usize, Option<Message>) {
        let n = self.inputs.len();
        std::future::poll_fn(|cx| {
            for k in 0..n {
                let i = (start + k) % n;
                if blocked[i].is_some() {
                    continue;
                }
                let input = &mut self.inputs[i];
                if let Some(backfill) = &mut input.backfill {
                    match backfill.poll_recv(cx) {
                        Poll::Ready(Some(m)) => return Poll::Ready((i, Some(m))),
                        Poll::Ready(None) => input.backfill = None,
                        Poll::Pending => continue,
                    }
                }
                match input.live.poll_recv(cx) {
                    Poll::Ready(m) => return Poll::Ready((i, m)),
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await
    }

    fn deliver(&mut self, node: usize, port: usize, changes: Changes) -> Result<()> {
        let mut out = Vec::new();
        self.tree.operators[node].process(port, changes, &mut out)?;
        self.forward(node, out)
    }

    fn forward(&mut self, node: usize, out: Vec<Changes>) -> Result<()> {
        match self.tree.parents[node] {
            Some((parent, port)) => {
                for c in out {
                    self.deliver(parent, port, c)?;
                }
            }
            None => {
                for c in out {
                    if !self.contents_dropped {
                        self.data.apply(&c)?;
                    }
                    if !self.downstream.is_empty() {
                        self.outbox.push(Message::Data(Arc::new(c)));
                    }
                }
            }
        }
        Ok(())
    }

    fn deliver_watermark(&mut self, node: usize, port: usize, watermark: EventTime) -> Result<()> {
        let mut out = Vec::new();
        let forwarded = self.tree.operators[node].on_watermark(port, watermark, &mut out)?;
        self.forward(node, out)?;
        if let Some(w) = forwarded {
            match self.tree.parents[node] {
                Some((parent, port)) => self.deliver_watermark(parent, port, w)?,
                None => {
                    self.stats.watermark.store(w, Ordering::Relaxed);
                    if !self.downstream.is_empty() {
                        self.outbox.push(Message::Watermark(w));
                    }
                }
            }
        }
        Ok(())
    }

    /// Hands every pending subscriber the view's contents (or what its backfill asks for) and
    /// adds it to the downstream list.
    async fn admit_subscribers(&mut self) -> Result<()> {
        while let Ok(sub) = self.subscriptions.try_recv() {
            self.flush_outbox().await;
            match sub.backfill {
                Backfill::Messages(backfill) => {
                    for changes in self.data.as_changes()? {
                        if backfill.send(Message::Data(Arc::new(changes))).await.is_err() {
                            break;
                        }
                    }
                    let w = self.stats.watermark.load(Ordering::Relaxed);
                    if w > EventTime::MIN {
                        let _ = backfill.send(Message::Watermark(w)).await;
                    }
                }
                Backfill::Snapshot(snapshot) => {
                    let _ = snapshot.send(self.data.clone());
                }
                Backfill::WatermarkOnly(backfill) => {
                    let w = self.stats.watermark.load(Ordering::Relaxed);
                    if w > EventTime::MIN {
                        let _ = backfill.send(Message::Watermark(w)).await;
                    }
                }
            }
            self.downstream.push(Downstream { live: sub.live, overflowed: sub.overflowed });
            if self.contents == Contents::UntilSubscribed && !self.contents_dropped {
                self.data = ViewData::new(self.tree.output_schema.clone())?;
                self.contents_dropped = true;
            }
        }
        Ok(())
    }

    async fn end_epoch(&mut self, epoch: u64) -> Result<()> {
        // Views that asked to read this one join now, at the epoch boundary: their backfill is
        // the contents as of the previous epoch, this epoch's changes reach them live.
        self.admit_subscribers().await?;
        for node in 0..self.tree.operators.len() {
            let mut out = Vec::new();
            self.tree.operators[node].on_barrier(epoch, &mut out)?;
            self.forward(node, out)?;
        }
        self.outbox.push(Message::Barrier(epoch));
        self.flush_outbox().await;
        // Measuring operator state walks it: every 20 epochs (5 s at the default interval).
        if epoch.is_multiple_of(20) || self.stats.last_epoch.load(Ordering::Relaxed) == 0 {
            let state: usize = self.tree.operators.iter().map(|o| o.state_bytes()).sum();
            self.stats.state_bytes.store((state + self.data.state_bytes()) as u64, Ordering::Relaxed);
        }
        if let Some(r) = &self.retention
            && epoch.is_multiple_of(RETENTION_EVERY_EPOCHS)
            && !self.contents_dropped
        {
            let (micros, watermark) = (r.micros.load(Ordering::Relaxed), self.stats.watermark.load(Ordering::Relaxed));
            if micros != i64::MAX && watermark > EventTime::MIN {
                let cutoff = watermark.saturating_sub(micros);
                let gone = self.data.remove_closed_before(r.column, r.close_offset, cutoff)?;
                if gone > 0 {
                    tracing::debug!(view = self.view, gone, "rows past the retention forgotten");
                }
            }
        }
        self.stats.rows.store(self.data.len(), Ordering::Relaxed);
        self.stats.last_epoch.store(epoch, Ordering::Relaxed);
        let _ = self.reports.send(Report::Epoch { view: self.view, epoch, data: self.data.clone() });
        if let Some(hub) = self.checkpoints.clone().filter(|h| h.is_requested(epoch)) {
            let state = self.snapshot(&hub, epoch);
            hub.contribute(Contribution::View { id: self.view, epoch, state });
        }
        Ok(())
    }

    async fn flush_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let messages = std::mem::take(&mut self.outbox);
        let mut closed = Vec::new();
        for (i, d) in self.downstream.iter().enumerate() {
            for m in &messages {
                let sent = match &d.overflowed {
                    None => d.live.send(m.clone()).await.is_ok(),
                    Some(flag) => match d.live.try_send(m.clone()) {
                        Ok(()) => true,
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            flag.store(true, Ordering::Relaxed);
                            false
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => false,
                    },
                };
                if !sent {
                    closed.push(i);
                    break;
                }
            }
        }
        for i in closed.into_iter().rev() {
            self.downstream.remove(i);
        }
    }
}
