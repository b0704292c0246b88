//! The coordinator: the running dataflow's control plane.
//!
//! It owns the runtime of every source (a reader task), table (a feed of committed changes)
//! and materialized view (a job task), and drives epochs:
//!
//! * every `barrier_interval`, and on `FLUSH`, it injects `Barrier(e)` into every source and
//!   table; the views that were running when `e` was injected must each report a version of
//!   their contents for `e`;
//! * when all expected reports for the oldest pending epoch are in, it *publishes* them together
//!   ([`Published`]): queries read views from the last published set, so every view they read is
//!   as of the same epoch;
//! * creating a view attaches it to its inputs between two injections, so it joins at an epoch
//!   boundary (after backfilling); dropping or failing a view removes it from pending epochs so
//!   the others keep committing.
//!
//! Lock order: coordinator state → storage tables → the feeds map → one feed. Commits call into
//! the feeds while holding the storage lock (so a feed's order is commit order) and never take
//! the coordinator state; creating a view holds the state for its whole attachment, so no
//! barrier is injected while it is half attached.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use weir_catalog::ObjectId;
use weir_connectors::Source;
use weir_sql::streaming::{InputKind, StreamPlan};

use crate::checkpoint::collector::Checkpointer;
use crate::checkpoint::snapshot::{CheckpointHub, Contribution, TableState};
use crate::checkpoint::recovery::Recovered;
use crate::dataflow::job::{Retention, Backfill, CHANNEL_CAPACITY, Contents, InputReceiver, JobInput, Report, Subscription, ViewJob, ViewStats};
use crate::dataflow::operators;
use crate::dataflow::reader::{Reader, ReaderControl, SourceStats};
use crate::dataflow::view_data::ViewData;
use crate::dataflow::watermark::WatermarkTracker;
use crate::dataflow::{Changes, Message};
use crate::error::{Result, SqlState, WeirError};
use crate::storage::{CommitListener, Storage, TableChange};

/// The view versions queries read: all as of one epoch.
#[derive(Debug, Default)]
pub struct Published {
    pub epoch: u64,
    /// Wall clock (µs since the Unix epoch) when this epoch's barrier was injected: the
    /// published views reflect every input accepted before then.
    pub started_micros: i64,
    pub views: HashMap<ObjectId, ViewData>,
}

struct SourceRuntime {
    control: mpsc::UnboundedSender<ReaderControl>,
    stats: Arc<SourceStats>,
}

struct ViewRuntime {
    /// A materialized view (not the own job of a sink or a SUBSCRIBE).
    kept: bool,
    /// The view's retention in microseconds, when it has a policy (`ALTER` changes it).
    retention: Option<Arc<AtomicI64>>,
    shape: crate::streaming::ViewShape,
    subscriptions: mpsc::UnboundedSender<Subscription>,
    stats: Arc<ViewStats>,
    task: tokio::task::JoinHandle<()>,
}

impl ViewRuntime {
    /// Asks the view job for its contents (only its watermark, for a `restored` subscriber),
    /// then its changes, on two new bounded channels (it answers at its next epoch boundary);
    /// `None` when the job is gone.
    fn subscribe(&self, subscriber: ObjectId, restored: bool) -> Option<(mpsc::Receiver<Message>, mpsc::Receiver<Message>)> {
        let (backfill_tx, backfill_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let (live_tx, live_rx) = mpsc::channel(CHANNEL_CAPACITY);
        let backfill = if restored { Backfill::WatermarkOnly(backfill_tx) } else { Backfill::Messages(backfill_tx) };
        let subscription = Subscription { view: subscriber, backfill, live: live_tx, overflowed: None };
        self.subscriptions.send(subscription).ok()?;
        Some((backfill_rx, live_rx))
    }
}

/// A change feed of a view that never holds the view back (SUBSCRIBE): the view's data when
/// the feed joined, then every later message through a buffer of `capacity` messages. When the
/// buffer is full the view drops the feed (its receiver ends) and sets `overflowed`.
pub struct ChangeFeed {
    pub snapshot: tokio::sync::oneshot::Receiver<crate::dataflow::view_data::ViewData>,
    pub live: mpsc::Receiver<Message>,
    pub overflowed: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Default)]
struct Pending {
    expected: HashSet<ObjectId>,
    versions: HashMap<ObjectId, ViewData>,
    started_micros: i64,
}

#[derive(Default)]
struct State {
    next_epoch: u64,
    sources: HashMap<ObjectId, SourceRuntime>,
    views: HashMap<ObjectId, ViewRuntime>,
    failed: HashMap<ObjectId, WeirError>,
    pending: BTreeMap<u64, Pending>,
    /// Sources and views that resumed from the recovered checkpoint.
    restored_sources: HashSet<ObjectId>,
    restored_tables: HashSet<ObjectId>,
    restored_views: HashSet<ObjectId>,
    /// Views whose state checkpoints keep (every input is a source or such a view).
    checkpointed_views: HashSet<ObjectId>,
    last_checkpoint: Option<std::time::Instant>,
}

pub struct Coordinator {
    state: Mutex<State>,
    /// Outside `state`: commits reach the feeds without taking the coordinator's lock.
    feeds: RwLock<HashMap<ObjectId, Arc<TableFeed>>>,
    published: RwLock<Arc<Published>>,
    reports: mpsc::UnboundedSender<Report>,
    committed: watch::Sender<u64>,
    barrier_interval: Duration,
    /// Writes checkpoints every `checkpoint_interval` (none when checkpoints are off).
    checkpointer: Option<Arc<Checkpointer>>,
    checkpoint_interval: Duration,
    /// The checkpoint the server started from, consumed as sources and views start.
    recovered: Mutex<Option<Recovered>>,
    /// Readers and view jobs wait for this before they start, so that every object of the
    /// catalog is attached first: a restored view must see its inputs from the checkpoint on.
    started: watch::Sender<bool>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator").finish_non_exhaustive()
    }
}

/// A table as a stream: committed changes go to every view that reads the table.
pub struct TableFeed {
    id: ObjectId,
    inner: Mutex<FeedInner>,
    pub stats: Arc<SourceStats>,
    checkpoints: Option<Arc<CheckpointHub>>,
}

struct FeedInner {
    outputs: Vec<(ObjectId, mpsc::UnboundedSender<Message>)>,
    tracker: WatermarkTracker,
    /// The newest commit that changed the table (or, before any, the log's position when the
    /// feed started: every earlier commit is in the rows a new view backfills).
    last_seq: u64,
    /// Recovery: the commits after the checkpoint, as the feed sent them then, for the views
    /// that resume from the checkpoint (cleared once the server started).
    replay: Vec<Message>,
}

impl TableFeed {
    fn lock(&self) -> std::sync::MutexGuard<'_, FeedInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send_all(inner: &mut FeedInner, message: Message) {
        inner.outputs.retain(|(_, tx)| tx.send(message.clone()).is_ok());
    }

    /// Called by the storage commit, under its lock, with all of one commit's changes to this
    /// table at once: a barrier comes before or after the whole commit, never inside it, so
    /// `last_seq` at a barrier means every change of that commit went out before it.
    fn push(&self, seq: u64, changes: &[&TableChange]) {
        let mut inner = self.lock();
        inner.last_seq = seq;
        if inner.outputs.is_empty() {
            return;
        }
        for change in changes {
            Self::push_one(&self.stats, &mut inner, change);
        }
    }

    fn push_one(stats: &SourceStats, inner: &mut FeedInner, change: &TableChange) {
        match feed_messages(&mut inner.tracker, change) {
            Ok((messages, late)) => {
                stats.rows.fetch_add(change.rows.num_rows() as u64, Ordering::Relaxed);
                stats.late_rows.fetch_add(late, Ordering::Relaxed);
                for m in messages {
                    if let Message::Watermark(w) = m {
                        stats.watermark.store(w, Ordering::Relaxed);
                    }
                    Self::send_all(inner, m);
                }
            }
            Err(e) => tracing::error!(error = %e, "table change could not be streamed"),
        }
    }

    fn barrier(&self, epoch: u64) {
        let mut inner = self.lock();
        if let Some(hub) = self.checkpoints.as_ref().filter(|h| h.is_requested(epoch)) {
            let state = TableState { seq: inner.last_seq, watermarks: inner.tracker.save() };
            hub.contribute(Contribution::Table { id: self.id, epoch, state });
        }
        Self::send_all(&mut inner, Message::Barrier(epoch));
    }

    /// Continues from a checkpoint: the watermark state then, and the commits since, passed
    /// through the watermark rule again (as they were when committed) for the views that resume.
    fn restore(&self, state: &TableState, commits: Vec<TableChange>) {
        let mut inner = self.lock();
        inner.tracker.restore(&state.watermarks);
        let mut replay = Vec::new();
        for change in commits {
            match feed_messages(&mut inner.tracker, &change) {
                Ok((messages, _)) => replay.extend(messages),
                Err(e) => tracing::error!(table = self.id, error = %e, "a table change could not be replayed"),
            }
        }
        self.stats.watermark.store(inner.tracker.current(), Ordering::Relaxed);
        inner.replay = replay;
    }
}

/// A table change through a feed's watermark rule: the messages its views receive (the rows on
/// time, then the watermark if it advanced), and how many rows were late.
fn feed_messages(tracker: &mut WatermarkTracker, change: &TableChange) -> Result<(Vec<Message>, u64)> {
    let assigned = tracker.assign(0, change.rows.clone())?;
    let mut messages = Vec::with_capacity(2);
    if assigned.on_time.num_rows() > 0 {
        messages.push(Message::Data(Arc::new(Changes::uniform(assigned.on_time, change.diff))));
    }
    if let Some(w) = assigned.advanced {
        messages.push(Message::Watermark(w));
    }
    Ok((messages, assigned.late.num_rows() as u64))
}

impl Coordinator {
    /// A coordinator that checkpoints with `checkpoints` (the checkpointer and the interval)
    /// and resumes from `recovered`. Nothing runs until [`Coordinator::start`].
    pub fn new(barrier_interval: Duration, checkpoints: Option<(Arc<Checkpointer>, Duration)>, recovered: Option<Recovered>) -> Arc<Self> {
        let (reports, rx) = mpsc::unbounded_channel();
        let first_epoch = recovered.as_ref().map_or(0, |r| r.epoch);
        let (committed, _) = watch::channel(first_epoch);
        let (checkpointer, checkpoint_interval) = match checkpoints {
            Some((c, interval)) => (Some(c), interval),
            None => (None, Duration::MAX),
        };
        let coordinator = Arc::new(Coordinator {
            state: Mutex::new(State { next_epoch: first_epoch + 1, ..State::default() }),
            feeds: RwLock::new(HashMap::new()),
            published: RwLock::new(Arc::new(Published { epoch: first_epoch, ..Published::default() })),
            reports,
            committed,
            barrier_interval,
            checkpointer,
            checkpoint_interval,
            recovered: Mutex::new(recovered),
            started: watch::channel(false).0,
        });
        tokio::spawn(Self::receive_reports(Arc::downgrade(&coordinator), rx));
        tokio::spawn(Self::tick(Arc::downgrade(&coordinator), barrier_interval));
        coordinator
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every object of the catalog is attached: readers and jobs start. What the recovered
    /// checkpoint held for objects that no longer exist is dropped.
    pub fn start(&self) {
        if let Some(recovered) = self.recovered.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let state = self.lock();
            tracing::info!(
                epoch = recovered.epoch,
                sources = state.restored_sources.len(),
                views = state.restored_views.len(),
                rebuilt = state.views.values().filter(|v| v.kept).count().saturating_sub(state.restored_views.len()),
                "recovered from checkpoint; views not restored are rebuilt from their inputs"
            );
        }
        for feed in self.read_feeds().values() {
            feed.lock().replay = Vec::new();
        }
        self.started.send_replace(true);
    }

    /// Waits for [`Coordinator::start`].
    fn start_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut started = self.started.subscribe();
        async move {
            let _ = started.wait_for(|s| *s).await;
        }
    }

    pub fn checkpointer(&self) -> Option<&Arc<Checkpointer>> {
        self.checkpointer.as_ref()
    }

    pub fn barrier_interval(&self) -> Duration {
        self.barrier_interval
    }

    /// The newest epoch barrier injected (views commit it when every input got past it).
    pub fn last_barrier(&self) -> u64 {
        self.lock().next_epoch.saturating_sub(1)
    }

    /// The last published view versions.
    pub fn published(&self) -> Arc<Published> {
        self.published.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn tick(this: std::sync::Weak<Self>, interval: Duration) {
        let mut timer = tokio::time::interval(interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            timer.tick().await;
            let Some(this) = this.upgrade() else { return };
            this.inject_barrier();
        }
    }

    async fn receive_reports(this: std::sync::Weak<Self>, mut rx: mpsc::UnboundedReceiver<Report>) {
        while let Some(report) = rx.recv().await {
            let Some(this) = this.upgrade() else { return };
            let mut state = this.lock();
            match report {
                Report::Epoch { view, epoch, data } => {
                    if !state.views.contains_key(&view) {
                        continue;
                    }
                    if let Some(p) = state.pending.get_mut(&epoch) {
                        p.expected.remove(&view);
                        p.versions.insert(view, data);
                    }
                }
                Report::Failed { view, error } => {
                    if let Some(c) = &this.checkpointer {
                        c.forget(view);
                    }
                    for p in state.pending.values_mut() {
                        p.expected.remove(&view);
                    }
                    if state.views.remove(&view).is_some() {
                        state.failed.insert(view, error);
                    }
                }
            }
            this.publish_ready(&mut state);
        }
    }

    /// Publishes, in order, every pending epoch whose expected reports are all in.
    fn publish_ready(&self, state: &mut State) {
        while let Some(entry) = state.pending.first_entry() {
            if !entry.get().expected.is_empty() {
                break;
            }
            let (epoch, pending) = entry.remove_entry();
            let previous = self.published();
            let mut views: HashMap<ObjectId, ViewData> =
                previous.views.iter().filter(|(id, _)| state.views.contains_key(id)).map(|(k, v)| (*k, v.clone())).collect();
            views.extend(pending.versions.into_iter().filter(|(id, _)| state.views.contains_key(id)));
            let started_micros = pending.started_micros;
            *self.published.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(Published { epoch, started_micros, views });
            self.committed.send_replace(epoch);
        }
    }

    /// Starts epoch boundary `e` everywhere and returns `e`.
    pub fn inject_barrier(&self) -> u64 {
        let mut state = self.lock();
        let epoch = state.next_epoch;
        state.next_epoch += 1;
        let expected: HashSet<ObjectId> = state.views.keys().copied().collect();
        let started_micros = chrono::Utc::now().timestamp_micros();
        if let Some(checkpointer) = &self.checkpointer
            && *self.started.borrow()
            && state.last_checkpoint.is_none_or(|t| t.elapsed() >= self.checkpoint_interval)
            && !checkpointer.busy()
        {
            let views = state.checkpointed_views.iter().filter(|v| state.views.contains_key(v)).copied().collect();
            let inputs = state.sources.keys().chain(self.read_feeds().keys()).copied().collect();
            if checkpointer.begin(epoch, inputs, views) {
                state.last_checkpoint = Some(std::time::Instant::now());
            }
        }
        state.pending.insert(epoch, Pending { expected, versions: HashMap::new(), started_micros });
        for s in state.sources.values() {
            let _ = s.control.send(ReaderControl::Barrier(epoch));
        }
        for t in self.read_feeds().values() {
            t.barrier(epoch);
        }
        self.publish_ready(&mut state);
        epoch
    }

    /// Waits until everything accepted before the call is reflected in every view.
    pub async fn flush(&self) -> Result<()> {
        let epoch = self.inject_barrier();
        let mut rx = self.committed.subscribe();
        rx.wait_for(|c| *c >= epoch)
            .await
            .map_err(|_| WeirError::new(SqlState::AdminShutdown, "the server is shutting down"))?;
        Ok(())
    }

    pub fn add_source(
        &self,
        id: ObjectId,
        name: &str,
        source: Box<dyn Source>,
        tracker: WatermarkTracker,
        late_events: crate::dataflow::dead_letter::LateEvents,
    ) {
        let (control, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(SourceStats::new(late_events, source.status()));
        let restored = self.recovered.lock().unwrap_or_else(|p| p.into_inner()).as_mut().and_then(|r| r.sources.remove(&id));
        let reader_restored = restored.is_some();
        let reader = Reader {
            source_id: id,
            name: name.to_string(),
            source,
            tracker,
            control: rx,
            stats: stats.clone(),
            // Positions are committed to the broker (Kafka offsets, JetStream acks) once a
            // checkpoint holds them: a crash before that must find the messages still there.
            committed: match &self.checkpointer {
                Some(c) => c.written(),
                None => self.committed.subscribe(),
            },
            checkpoints: self.checkpointer.as_ref().map(|c| c.hub.clone()),
            restored,
        };
        let start = self.start_signal();
        tokio::spawn(async move {
            start.await;
            reader.run().await
        });
        let mut state = self.lock();
        if reader_restored {
            state.restored_sources.insert(id);
        }
        state.sources.insert(id, SourceRuntime { control, stats });
    }

    /// Starts a table's feed; at recovery, from the checkpointed state when there is one.
    pub fn add_table(&self, id: ObjectId, tracker: WatermarkTracker, storage: &Storage) {
        let feed = Arc::new(TableFeed {
            id,
            inner: Mutex::new(FeedInner { outputs: Vec::new(), tracker, last_seq: storage.seq(), replay: Vec::new() }),
            stats: Arc::new(SourceStats::default()),
            checkpoints: self.checkpointer.as_ref().map(|c| c.hub.clone()),
        });
        let restored = self.recovered.lock().unwrap_or_else(|p| p.into_inner()).as_mut().and_then(|r| r.tables.remove(&id));
        if let Some(state) = restored {
            feed.lock().last_seq = state.seq;
            feed.restore(&state, storage.commits_after(id, state.seq));
            self.lock().restored_tables.insert(id);
        }
        self.feeds.write().unwrap_or_else(|p| p.into_inner()).insert(id, feed);
    }

    fn read_feeds(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjectId, Arc<TableFeed>>> {
        self.feeds.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a source or table (its views were dropped first).
    pub fn drop_input(&self, id: ObjectId) {
        if let Some(c) = &self.checkpointer {
            c.forget(id);
        }
        self.lock().sources.remove(&id);
        self.feeds.write().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }

    pub fn drop_view(&self, id: ObjectId) {
        if let Some(c) = &self.checkpointer {
            c.forget(id);
        }
        let mut state = self.lock();
        if let Some(v) = state.views.remove(&id) {
            v.task.abort();
        }
        state.failed.remove(&id);
        for p in state.pending.values_mut() {
            p.expected.remove(&id);
            p.versions.remove(&id);
        }
        self.publish_ready(&mut state);
    }

    pub fn source_stats(&self, id: ObjectId) -> Option<Arc<SourceStats>> {
        let from_source = self.lock().sources.get(&id).map(|s| s.stats.clone());
        from_source.or_else(|| self.read_feeds().get(&id).map(|t| t.stats.clone()))
    }

    /// How far behind the wall clock what queries read is: now minus the injection time of the
    /// published epoch (None before the first one).
    pub fn freshness_lag_ms(&self) -> Option<i64> {
        let published = self.published();
        (published.epoch > 0).then(|| (chrono::Utc::now().timestamp_micros() - published.started_micros).max(0) / 1000)
    }

    pub fn view_stats(&self, id: ObjectId) -> Option<Arc<ViewStats>> {
        self.lock().views.get(&id).map(|v| v.stats.clone())
    }

    /// Subscribes `subscriber` (a sink) to a running view's changes: its contents when it joins
    /// (at the view's next epoch boundary) on the first receiver, every later message (changes,
    /// watermarks, barriers) on the second. Both are bounded: a subscriber that stops reading
    /// holds the view back.
    pub fn subscribe(&self, view: ObjectId, subscriber: ObjectId) -> Result<(mpsc::Receiver<Message>, mpsc::Receiver<Message>)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let not_running = || WeirError::new(SqlState::ObjectNotInPrerequisiteState, "the materialized view is not running");
        state.views.get(&view).and_then(|runtime| runtime.subscribe(subscriber, false)).ok_or_else(not_running)
    }

    /// A change feed of a running view (SUBSCRIBE); it joins at the view's next epoch boundary.
    pub fn change_feed(&self, view: ObjectId, capacity: usize) -> Result<ChangeFeed> {
        let (snapshot_tx, snapshot) = tokio::sync::oneshot::channel();
        let (live_tx, live) = mpsc::channel(capacity.max(1));
        let overflowed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let subscription =
            Subscription { view, backfill: Backfill::Snapshot(snapshot_tx), live: live_tx, overflowed: Some(overflowed.clone()) };
        let state = self.lock();
        let runtime = state.views.get(&view).ok_or_else(|| WeirError::new(SqlState::ObjectNotInPrerequisiteState, "the materialized view is not running"))?;
        runtime.subscriptions.send(subscription).map_err(|_| WeirError::new(SqlState::ObjectNotInPrerequisiteState, "the materialized view is not running"))?;
        Ok(ChangeFeed { snapshot, live, overflowed })
    }

    pub fn view_shape(&self, id: ObjectId) -> Option<crate::streaming::ViewShape> {
        self.lock().views.get(&id).map(|v| v.shape.clone())
    }

    /// Changes a running view's retention (`ALTER MATERIALIZED VIEW ... SET (retention = ...)`)
    /// and returns the one it had (`i64::MAX`: none).
    pub fn set_retention(&self, id: ObjectId, micros: i64) -> Result<i64> {
        let state = self.lock();
        let view = state.views.get(&id).ok_or_else(|| WeirError::new(SqlState::ObjectNotInPrerequisiteState, "the materialized view is not running"))?;
        match &view.retention {
            Some(r) => Ok(r.swap(micros, Ordering::Relaxed)),
            None => Err(retention_needs_a_window()),
        }
    }

    pub fn view_failure(&self, id: ObjectId) -> Option<WeirError> {
        self.lock().failed.get(&id).cloned()
    }

    /// Builds a view's operators, attaches it to its inputs and starts its job. It reports from
    /// the next injected epoch on.
    pub fn create_view(&self, view: NewView<'_>, storage: &Storage) -> Result<()> {
        let NewView { id, plan, schema, shape, contents, retention_micros } = view;
        let mut tree = operators::build(plan)?;
        // The view's rows carry its catalog column names.
        tree.output_schema = schema;
        let mut inputs = Vec::new();
        // No barrier may be injected while the view is half attached.
        let mut state = self.lock();
        let (restored, checkpointed) = self.recovery_plan(&state, id, plan, contents, &mut tree)?;
        for input in plan.inputs() {
            let relation = input.id;
            let job_input = match input.kind {
                InputKind::Table => {
                    let feed = self.read_feeds().get(&relation).cloned().ok_or_else(|| missing(&input.name))?;
                    let (live_tx, live_rx) = mpsc::unbounded_channel();
                    let (backfill_tx, backfill_rx) = mpsc::unbounded_channel();
                    // Under the storage lock: the backfill is exactly the rows committed before
                    // the live feed starts.
                    storage.with_table(relation, |data| {
                        let mut inner = feed.lock();
                        if restored.is_some() {
                            // Resumes from the checkpoint: only the commits after it.
                            for m in &inner.replay {
                                let _ = backfill_tx.send(m.clone());
                            }
                        } else {
                            for batch in data.map(|d| d.batches()).unwrap_or_default().iter() {
                                if batch.num_rows() == 0 {
                                    continue;
                                }
                                // Backfilled rows pass the same watermark rule as live ones.
                                match inner.tracker.assign(0, batch.clone()) {
                                    Ok(a) => {
                                        if a.on_time.num_rows() > 0 {
                                            let _ = backfill_tx.send(Message::Data(Arc::new(Changes::inserts(a.on_time))));
                                        }
                                    }
                                    Err(e) => tracing::error!(error = %e, "table backfill batch skipped"),
                                }
                            }
                        }
                        let w = inner.tracker.current();
                        if w > crate::dataflow::EventTime::MIN {
                            let _ = backfill_tx.send(Message::Watermark(w));
                        }
                        inner.outputs.push((id, live_tx));
                    });
                    JobInput {
                        relation,
                        backfill: Some(InputReceiver::Unbounded(backfill_rx)),
                        live: InputReceiver::Unbounded(live_rx),
                    }
                }
                InputKind::Source => {
                    let (mut job_input, live_tx, backfill_tx) = bounded_input(relation);
                    let source = state.sources.get(&relation).ok_or_else(|| missing(&input.name))?;
                    let backfill = if restored.is_some() {
                        job_input.backfill = None;
                        None
                    } else {
                        Some(backfill_tx)
                    };
                    source
                        .control
                        .send(ReaderControl::Attach { view: id, live: live_tx, backfill })
                        .map_err(|_| missing(&input.name))?;
                    job_input
                }
                InputKind::MaterializedView => {
                    let upstream = state.views.get(&relation).ok_or_else(|| {
                        WeirError::new(
                            SqlState::ObjectNotInPrerequisiteState,
                            format!("materialized view \"{}\" is not running", input.name),
                        )
                    })?;
                    let (backfill, live) = upstream.subscribe(id, restored.is_some()).ok_or_else(|| missing(&input.name))?;
                    JobInput {
                        relation,
                        backfill: Some(InputReceiver::Bounded(backfill)),
                        live: InputReceiver::Bounded(live),
                    }
                }
            };
            inputs.push(job_input);
        }
        let (subscriptions, sub_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(ViewStats::default());
        let mut job = ViewJob::new(id, tree, inputs, self.reports.clone(), sub_rx, stats.clone(), contents)?;
        if let Some((data, watermark)) = restored {
            // Queries see the restored contents at once: they are the published state of the
            // checkpoint's epoch, which is where the published epoch starts after recovery.
            let mut published = self.published.write().unwrap_or_else(|p| p.into_inner());
            let mut views = published.views.clone();
            views.insert(id, data.clone());
            *published = Arc::new(Published { epoch: published.epoch, started_micros: published.started_micros, views });
            drop(published);
            job = job.with_contents(data, watermark);
            state.restored_views.insert(id);
        }
        if checkpointed && let Some(c) = &self.checkpointer {
            job = job.with_checkpoints(c.hub.clone());
            state.checkpointed_views.insert(id);
        }
        // Every materialized view with a window column can take a retention policy, now or
        // later by ALTER; `i64::MAX` keeps everything.
        let bound = shape.close_offsets.iter().enumerate().find_map(|(i, o)| o.map(|o| (i, o)));
        let retention = match (bound, retention_micros) {
            (None, Some(_)) => return Err(retention_needs_a_window()),
            (Some((column, close_offset)), micros) if contents == Contents::Kept => {
                let micros = Arc::new(AtomicI64::new(micros.unwrap_or(i64::MAX)));
                job = job.with_retention(Retention { column, close_offset, micros: micros.clone() });
                Some(micros)
            }
            _ => None,
        };
        let start = self.start_signal();
        let task = tokio::spawn(async move {
            start.await;
            job.run().await
        });
        state.views.insert(id, ViewRuntime { kept: contents == Contents::Kept, shape, subscriptions, stats, task, retention });
        Ok(())
    }

    /// Whether a view being created resumes from the recovered checkpoint (then its operators
    /// are restored into `tree`, and its contents and watermark returned), and whether
    /// checkpoints keep its state. Both need every input to be a source, a table, or a view
    /// that does the same: a view rebuilt from its inputs backfills its readers whole. A table
    /// resumes with the commits after the checkpoint's position (from the log).
    fn recovery_plan(
        &self,
        state: &State,
        id: ObjectId,
        plan: &StreamPlan,
        contents: Contents,
        tree: &mut operators::OperatorTree,
    ) -> Result<(Option<(ViewData, crate::dataflow::EventTime)>, bool)> {
        let inputs = plan.inputs();
        let checkpointed = contents == Contents::Kept
            && inputs.iter().all(|i| match i.kind {
                InputKind::Source | InputKind::Table => true,
                InputKind::MaterializedView => state.checkpointed_views.contains(&i.id),
            });
        let recovered = self.recovered.lock().unwrap_or_else(|p| p.into_inner()).as_mut().and_then(|r| r.views.remove(&id));
        let Some(recovered) = recovered else { return Ok((None, checkpointed)) };
        let restorable = checkpointed
            && inputs.iter().all(|i| match i.kind {
                InputKind::Source => state.restored_sources.contains(&i.id),
                InputKind::Table => state.restored_tables.contains(&i.id),
                InputKind::MaterializedView => state.restored_views.contains(&i.id),
            });
        if !restorable {
            return Ok((None, checkpointed));
        }
        let mut data = ViewData::new(tree.output_schema.clone())?;
        let restored = crate::dataflow::job::restore_operators(tree, recovered.operators).and_then(|()| {
            for changes in &recovered.contents {
                data.apply(changes)?;
            }
            Ok(())
        });
        match restored {
            Ok(()) => Ok((Some((data, recovered.watermark)), checkpointed)),
            Err(e) => {
                tracing::warn!(view = id, error = %e, "the view's checkpointed state does not restore; it is rebuilt from its inputs");
                *tree = operators::build(plan)?;
                tree.output_schema = data.schema().clone();
                Ok((None, checkpointed))
            }
        }
    }
}

/// A view job to start ([`Coordinator::create_view`]).
pub struct NewView<'a> {
    pub id: ObjectId,
    pub plan: &'a StreamPlan,
    /// The view's columns, with their catalog names.
    pub schema: datafusion::arrow::datatypes::SchemaRef,
    pub shape: crate::streaming::ViewShape,
    pub contents: Contents,
    /// `WITH (retention = ...)`, in microseconds.
    pub retention_micros: Option<i64>,
}

/// A job input over bounded channels (from a reader or an upstream view), and the senders its
/// producer gets: live, then backfill.
fn bounded_input(relation: u64) -> (JobInput, mpsc::Sender<Message>, mpsc::Sender<Message>) {
    let (live_tx, live_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let (backfill_tx, backfill_rx) = mpsc::channel(CHANNEL_CAPACITY);
    let input = JobInput {
        relation,
        backfill: Some(InputReceiver::Bounded(backfill_rx)),
        live: InputReceiver::Bounded(live_rx),
    };
    (input, live_tx, backfill_tx)
}

pub fn retention_needs_a_window() -> WeirError {
    WeirError::new(SqlState::FeatureNotSupported, "retention needs a view whose rows carry a window bound")
        .with_hint("Group by window_start or window_end of TUMBLE, HOP or SESSION: retention drops windows older than the watermark minus the retention.")
}

fn missing(name: &str) -> WeirError {
    WeirError::new(SqlState::UndefinedTable, format!("relation \"{name}\" is not running"))
}

impl CommitListener for Coordinator {
    fn committed(&self, seq: u64, changes: &[TableChange]) {
        let feeds = self.read_feeds();
        let mut tables: Vec<ObjectId> = changes.iter().map(|c| c.table).collect();
        tables.sort_unstable();
        tables.dedup();
        for table in tables {
            if let Some(feed) = feeds.get(&table) {
                let of_table: Vec<&TableChange> = changes.iter().filter(|c| c.table == table).collect();
                feed.push(seq, &of_table);
            }
        }
    }
}
