//! Oracle tests of the incremental engine: for random event streams (out of order within and
//! beyond the watermark delay, 1..3 partitions, random batch cuts and barrier placement), the
//! contents of a view after every epoch equal DataFusion's batch answer to the same SQL over the
//! events that were not late. Lateness is decided here, from the event sequence and the
//! watermark rule (DESIGN.md §2), not from the engine, and the engine's late count must agree.
//!
//! The harness runs the real pieces: weir-sql's window rewrite and streaming planner, the
//! operators, a [`ViewJob`] task fed through channels, and the [`WatermarkTracker`].

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::{DFSchema, TableReference};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use proptest::prelude::*;
use tokio::sync::mpsc;
use weir::checkpoint::snapshot::{CheckpointHub, Contribution};
use weir::dataflow::operators::{OperatorState, Snapshot};
use weir::dataflow::job::{InputReceiver, JobInput, Report, ViewJob, ViewStats, restore_operators};
use weir::dataflow::view_data::ViewData;
use weir::dataflow::watermark::{WatermarkSpec, WatermarkTracker};
use weir::dataflow::{Changes, Message, WATERMARK_MAX, operators};
use weir_sql::streaming::{InputKind, InputResolver, ResolvedInput};

const DELAY_MICROS: i64 = 5_000_000;
const BASE: i64 = 1_700_000_000_000_000;
const KEYS: [&str; 4] = ["a", "b", "c", "d"];
const TAGS: [&str; 6] = ["u1", "u2", "u3", "u4", "u5", "u6"];

#[derive(Debug, Clone)]
struct Event {
    partition: usize,
    key: usize,
    tag: usize,
    v: Option<i64>,
    f: f64,
    ts: i64,
}

#[derive(Debug, Clone)]
struct Scenario {
    partitions: usize,
    events: Vec<Event>,
    /// After how many events each batch ends (a batch never spans two partitions).
    cuts: Vec<usize>,
    /// After how many events a barrier comes.
    barriers: Vec<usize>,
    bounded: bool,
    /// Changes to the table `dim`: after how many events, and which row. A row that is in the
    /// table is deleted, otherwise inserted (so tables both grow and shrink).
    table_ops: Vec<(usize, DimRow)>,
    /// Picks the barrier after which a restarting run checkpoints the job, stops it and goes
    /// on with a new job restored from that checkpoint.
    restart_pick: usize,
}

type DimRow = (usize, usize, i64);
const LABELS: [&str; 3] = ["red", "green", "blue"];

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..=3, 0usize..120, any::<bool>()).prop_flat_map(|(partitions, n, bounded)| {
        let table_op = (0..=n, (0..KEYS.len(), 0..LABELS.len(), -100i64..100));
        let event = (0..partitions, 0..KEYS.len(), 0..TAGS.len(), proptest::option::weighted(0.9, -100i64..100), -1000.0f64..1000.0, 0i64..1_500_000, 0i64..12_000_000, any::<bool>());
        (
            proptest::collection::vec(event, n),
            proptest::collection::vec(any::<bool>(), n),
            proptest::collection::vec(any::<bool>(), n),
            proptest::collection::vec(table_op, 0..24),
            any::<usize>(),
        )
            .prop_map(move |(raw, cut_flags, barrier_flags, mut table_ops, restart_pick)| {
                // Each partition has its own clock that moves forward; some events go back in time
                // (within the 5 s delay or beyond it, which makes them late).
                let mut clocks = vec![0i64; partitions];
                let mut events = Vec::with_capacity(raw.len());
                for (p, key, tag, v, f, step, back, disorder) in raw {
                    clocks[p] += step;
                    let ts = BASE + clocks[p] - if disorder { back } else { 0 };
                    events.push(Event { partition: p, key, tag, v, f, ts });
                }
                let mut cuts = Vec::new();
                for i in 1..=events.len() {
                    let partition_changes = i < events.len() && events[i].partition != events[i - 1].partition;
                    if i == events.len() || partition_changes || cut_flags[i - 1] {
                        cuts.push(i);
                    }
                }
                let barriers = (1..=events.len()).filter(|i| barrier_flags[i - 1]).collect();
                table_ops.sort_by_key(|(at, _)| *at);
                Scenario { partitions, events, cuts, barriers, bounded, table_ops, restart_pick }
            })
    })
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("tag", DataType::Utf8, true),
        Field::new("v", DataType::Int64, true),
        Field::new("f", DataType::Float64, true),
        Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        Field::new("d", DataType::Decimal128(10, 2), true),
    ]))
}

fn batch(events: &[Event]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(events.iter().map(|e| KEYS[e.key]))),
        Arc::new(StringArray::from_iter_values(events.iter().map(|e| TAGS[e.tag]))),
        Arc::new(Int64Array::from_iter(events.iter().map(|e| e.v))),
        Arc::new(Float64Array::from_iter_values(events.iter().map(|e| e.f))),
        Arc::new(TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.ts))),
        // A decimal with cents: v * 1.25.
        Arc::new(
            datafusion::arrow::array::Decimal128Array::from_iter(events.iter().map(|e| e.v.map(|v| v as i128 * 125)))
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
    ];
    RecordBatch::try_new(schema(), columns).unwrap()
}

fn dim_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("label", DataType::Utf8, true),
        Field::new("w", DataType::Int64, true),
    ]))
}

fn dim_batch(rows: &[DimRow]) -> RecordBatch {
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| KEYS[r.0]))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| LABELS[r.1]))),
        Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
    ];
    RecordBatch::try_new(dim_schema(), columns).unwrap()
}

/// Applies the table operations at positions `<= upto` events to `table`, returning the changes.
fn apply_table_ops(ops: &[(usize, DimRow)], next: &mut usize, upto: usize, table: &mut Vec<DimRow>) -> Vec<(DimRow, i64)> {
    let mut changes = Vec::new();
    while *next < ops.len() && ops[*next].0 <= upto {
        let row = ops[*next].1;
        match table.iter().position(|r| *r == row) {
            Some(i) => {
                table.remove(i);
                changes.push((row, -1));
            }
            None => {
                table.push(row);
                changes.push((row, 1));
            }
        }
        *next += 1;
    }
    changes
}

/// The watermark rule, computed independently of the engine: which events are late, and the
/// watermark after each event.
fn lateness(s: &Scenario) -> (Vec<bool>, Vec<i64>) {
    let mut max = vec![i64::MIN; s.partitions];
    let mut wm = i64::MIN;
    let mut late = Vec::new();
    let mut after = Vec::new();
    for e in &s.events {
        late.push(e.ts < wm);
        max[e.partition] = max[e.partition].max(e.ts - DELAY_MICROS);
        wm = wm.max(*max.iter().min().unwrap());
        after.push(wm);
    }
    (late, after)
}

fn context() -> SessionContext {
    let ctx = SessionContext::new();
    weir_sql::streaming::register_window_functions(&ctx);
    ctx
}

struct Resolver;

impl InputResolver for Resolver {
    fn resolve(&self, table: &TableReference) -> Option<ResolvedInput> {
        match table.table() {
            "ev" => Some(ResolvedInput {
                id: 1,
                kind: InputKind::Source,
                name: "ev".into(),
                close_offsets: vec![None, None, None, None, Some(1), None],
                append_only: true,
            }),
            "dim" => Some(ResolvedInput {
                id: 2,
                kind: InputKind::Table,
                name: "dim".into(),
                close_offsets: vec![None; 3],
                append_only: false,
            }),
            _ => None,
        }
    }
}

fn rewritten(sql: &str) -> sqlparser::ast::Query {
    let mut statements = sqlparser::parser::Parser::parse_sql(&sqlparser::dialect::PostgreSqlDialect {}, sql).unwrap();
    let sqlparser::ast::Statement::Query(q) = statements.remove(0) else { panic!("not a query") };
    let mut q = *q;
    weir_sql::streaming::rewrite_windows(&mut q).unwrap();
    q
}

async fn batch_answer(query: &sqlparser::ast::Query, rows: RecordBatch, dim: RecordBatch) -> Vec<RecordBatch> {
    let ctx = context();
    ctx.register_table("ev", Arc::new(MemTable::try_new(schema(), vec![vec![rows]]).unwrap())).unwrap();
    ctx.register_table("dim", Arc::new(MemTable::try_new(dim_schema(), vec![vec![dim]]).unwrap())).unwrap();
    let df = ctx.sql(&query.to_string()).await.unwrap();
    df.collect().await.unwrap()
}

#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum Value {
    Null,
    Int(i128),
    Float(f64),
    Text(String),
}

fn rows_of(batches: &[RecordBatch]) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let mut row = Vec::new();
            for c in b.columns() {
                row.push(value(c, r));
            }
            out.push(row);
        }
    }
    // Sort by the exact columns (keys), so float rounding never changes the order.
    out.sort_by(|a, b| {
        let key = |r: &Vec<Value>| r.iter().map(|v| match v { Value::Float(_) => Value::Null, o => o.clone() }).collect::<Vec<_>>();
        key(a).partial_cmp(&key(b)).unwrap_or(std::cmp::Ordering::Equal)
    });
    out
}

fn value(c: &ArrayRef, r: usize) -> Value {
    if c.is_null(r) {
        return Value::Null;
    }
    match c.data_type() {
        DataType::Int64 => Value::Int(c.as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(r) as i128),
        DataType::Float64 => Value::Float(c.as_primitive::<datafusion::arrow::datatypes::Float64Type>().value(r)),
        DataType::Utf8 => Value::Text(c.as_string::<i32>().value(r).to_string()),
        DataType::Boolean => Value::Int(c.as_any().downcast_ref::<BooleanArray>().unwrap().value(r) as i128),
        // Exact: the raw value at the column's scale (both sides have the type DataFusion plans).
        DataType::Decimal128(..) => Value::Int(c.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>().value(r)),
        DataType::Timestamp(..) => {
            let c = datafusion::arrow::compute::cast(c, &DataType::Int64).unwrap();
            Value::Int(c.as_primitive::<datafusion::arrow::datatypes::Int64Type>().value(r) as i128)
        }
        other => panic!("unexpected type {other}"),
    }
}

/// Floats agree within a relative 1e-9 (absolute near zero), or within `absolute`.
fn assert_same(actual: &[Vec<Value>], expected: &[Vec<Value>], absolute: f64, context: &str) {
    assert_eq!(actual.len(), expected.len(), "{context}: row counts differ\nactual {actual:?}\nexpected {expected:?}");
    for (a, e) in actual.iter().zip(expected) {
        for (x, y) in a.iter().zip(e) {
            let ok = match (x, y) {
                (Value::Float(x), Value::Float(y)) => {
                    (x - y).abs() <= (1e-9 * x.abs().max(y.abs()).max(1.0)).max(absolute)
                }
                _ => x == y,
            };
            assert!(ok, "{context}: {a:?} != {e:?}\nactual {actual:?}\nexpected {expected:?}");
        }
    }
}

/// A view job under test and the channels of its inputs (the events, the table `dim`).
/// The id of the view the tests' jobs maintain.
const VIEW_ID: u64 = 7;

/// Snapshots of changes (rather than full ones) the restarting tests restored.
static CHANGE_SNAPSHOTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Job {
    tx: mpsc::UnboundedSender<Message>,
    dim_tx: mpsc::UnboundedSender<Message>,
    reads_dim: bool,
    task: tokio::task::JoinHandle<()>,
}

impl Job {
    fn start(
        reads: &[u64],
        tree: operators::OperatorTree,
        restored: Option<(ViewData, i64)>,
        reports: &mpsc::UnboundedSender<Report>,
        hub: &Arc<CheckpointHub>,
    ) -> Job {
        let (tx, rx) = mpsc::unbounded_channel();
        let (dim_tx, dim_rx) = mpsc::unbounded_channel();
        let (_subs_tx, subs_rx) = mpsc::unbounded_channel();
        let mut inputs = Vec::new();
        if reads.contains(&1) {
            inputs.push(JobInput { relation: 1, backfill: None, live: InputReceiver::Unbounded(rx) });
        }
        let reads_dim = reads.contains(&2);
        if reads_dim {
            inputs.push(JobInput { relation: 2, backfill: None, live: InputReceiver::Unbounded(dim_rx) });
        }
        let mut job = ViewJob::new(VIEW_ID, tree, inputs, reports.clone(), subs_rx, Arc::new(ViewStats::default()), weir::dataflow::job::Contents::Kept)
            .unwrap()
            .with_checkpoints(hub.clone());
        if let Some((data, watermark)) = restored {
            job = job.with_contents(data, watermark);
        }
        Job { tx, dim_tx, reads_dim, task: tokio::spawn(job.run()) }
    }

    fn barrier(&self, epoch: u64) {
        self.tx.send(Message::Barrier(epoch)).unwrap();
        if self.reads_dim {
            self.dim_tx.send(Message::Barrier(epoch)).unwrap();
        }
    }
}

/// The streaming plan of a view over `ev` and `dim` with this query.
async fn plan(sql: &str, emit_on_window_close: bool) -> weir_sql::streaming::StreamPlan {
    let ctx = context();
    ctx.register_table("ev", Arc::new(MemTable::try_new(schema(), vec![vec![]]).unwrap())).unwrap();
    ctx.register_table("dim", Arc::new(MemTable::try_new(dim_schema(), vec![vec![]]).unwrap())).unwrap();
    let state = ctx.state();
    let plan = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(sqlparser::ast::Statement::Query(
            Box::new(rewritten(sql)),
        ))))
        .await
        .unwrap();
    let plan = state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {}).unwrap();
    weir_sql::streaming::plan_stream(&plan, &Resolver, emit_on_window_close).unwrap()
}

/// Runs a scenario through a view job and checks every published epoch against the oracle;
/// with `restart`, the job is checkpointed, stopped and restored at one of the barriers.
async fn check(sql: &str, emit_on_window_close: bool, window_end_column: Option<usize>, absolute: f64, restart: bool, s: &Scenario) {
    let query = rewritten(sql);
    let stream_plan = plan(sql, emit_on_window_close).await;
    let tree = operators::build(&stream_plan).unwrap();
    let ctx = context();
    let state = ctx.state();

    let df_schema = DFSchema::try_from(schema().as_ref().clone()).unwrap();
    let expr = state.create_logical_expr("ts - INTERVAL '5 seconds'", &df_schema).unwrap();
    // The server's fast path for `ts - <fixed interval>`; the late rows this test computes
    // itself check it.
    let fixed_delay = weir::streaming::fixed_delay_micros(&expr, "ts");
    assert_eq!(fixed_delay, Some(5_000_000));
    let expr = state.create_physical_expr(expr, &df_schema).unwrap();
    let spec = WatermarkSpec { column: 4, expr, fixed_delay, idle_timeout: None };
    let mut tracker = WatermarkTracker::new(Some(spec), s.partitions);

    let reads: Vec<u64> = stream_plan.inputs().iter().map(|i| i.id).collect();
    let reads_dim = reads.contains(&2);
    let (reports_tx, mut reports) = mpsc::unbounded_channel();
    let (hub, mut contributions) = CheckpointHub::new();
    let restart_epoch = (restart && !s.barriers.is_empty()).then(|| 1 + (s.restart_pick % s.barriers.len()) as u64);
    // Every barrier up to the restart is a checkpoint, so operators hand in chains: a full
    // snapshot, then changes.
    for e in 1..=restart_epoch.unwrap_or(0) {
        hub.request(e);
    }
    // Per operator, the snapshots the newest "written" checkpoint holds.
    let mut chains: BTreeMap<usize, Vec<OperatorState>> = BTreeMap::new();
    let mut job = Job::start(&reads, tree, None, &reports_tx, &hub);
    let mut table: Vec<DimRow> = Vec::new();
    let mut next_op = 0usize;
    let send_table = |job: &Job, next_op: &mut usize, upto: usize, table: &mut Vec<DimRow>| {
        let changes = apply_table_ops(&s.table_ops, next_op, upto, table);
        if reads_dim && !changes.is_empty() {
            let rows: Vec<DimRow> = changes.iter().map(|c| c.0).collect();
            let diffs = Int64Array::from_iter_values(changes.iter().map(|c| c.1));
            job.dim_tx.send(Message::Data(Arc::new(Changes::new(dim_batch(&rows), diffs)))).unwrap();
        }
    };

    // The engine computes approx_percentile_cont exactly: the oracle is percentile_cont, whose
    // interpolation weight DataFusion rounds to 1e-6 (so it may differ by 1e-6 of the gap
    // between two neighbouring values: the tests allow 2.5e-3 where values span 2000).
    let oracle_query = rewritten(&query.to_string().replace("approx_percentile_cont", "percentile_cont"));
    let (late, wm_after) = lateness(s);
    let mut epoch = 0u64;
    // (epoch, events read so far, watermark then, table contents then)
    let mut checkpoints: Vec<(u64, usize, i64, Vec<DimRow>)> = Vec::new();
    let mut start = 0usize;
    let mut engine_late = 0usize;
    let mut barrier_at = s.barriers.iter().peekable();
    send_table(&job, &mut next_op, 0, &mut table);
    for &end in &s.cuts {
        let slice = &s.events[start..end];
        let assigned = tracker.assign(slice[0].partition, batch(slice)).unwrap();
        engine_late += assigned.late.num_rows();
        if assigned.on_time.num_rows() > 0 {
            job.tx.send(Message::Data(Arc::new(Changes::inserts(assigned.on_time)))).unwrap();
        }
        if let Some(w) = assigned.advanced {
            assert_eq!(w, wm_after[end - 1], "engine watermark after {end} events");
            job.tx.send(Message::Watermark(w)).unwrap();
        }
        start = end;
        send_table(&job, &mut next_op, end, &mut table);
        while barrier_at.peek().is_some_and(|b| **b <= end) {
            barrier_at.next();
            epoch += 1;
            job.barrier(epoch);
            checkpoints.push((epoch, end, tracker.current(), table.clone()));
            if restart_epoch.is_some_and(|r| epoch <= r) {
                let Some(Contribution::View { state, .. }) = contributions.recv().await else { panic!("no checkpoint") };
                let state = state.expect("the view's state is checkpointed");
                // What the collector does: a full snapshot starts a chain, changes extend it.
                // Now and then a checkpoint is not written (never the one restored): the
                // chain stays as it was, and the operators must hand in all their state next.
                let written = restart_epoch == Some(epoch) || !(epoch as usize * 7 + s.restart_pick).is_multiple_of(5);
                let mut next = chains.clone();
                for (node, snapshot) in state.operators {
                    match snapshot {
                        Snapshot::Full(full) => {
                            next.insert(node, vec![full]);
                        }
                        Snapshot::Changes(changes) => {
                            CHANGE_SNAPSHOTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            next.get_mut(&node).expect("changes only on top of a written snapshot").push(changes);
                        }
                    }
                }
                if written {
                    chains = next;
                    hub.written(epoch, [VIEW_ID].into_iter());
                }
                if restart_epoch != Some(epoch) {
                    continue;
                }
                // What a crash and recovery do: the job's state at this barrier is all that
                // survives; a new job is built from the plan and restored from it, and the
                // reader sends it its current watermark.
                job.task.abort();
                let mut tree = operators::build(&stream_plan).unwrap();
                restore_operators(&mut tree, std::mem::take(&mut chains).into_iter().collect()).unwrap();
                job = Job::start(&reads, tree, Some((state.contents, state.watermark)), &reports_tx, &hub);
                if tracker.current() > i64::MIN {
                    job.tx.send(Message::Watermark(tracker.current())).unwrap();
                }
            }
        }
    }
    send_table(&job, &mut next_op, usize::MAX, &mut table);
    let mut final_wm = tracker.current();
    if s.bounded {
        if let Some(w) = tracker.end_all() {
            job.tx.send(Message::Watermark(w)).unwrap();
        }
        final_wm = WATERMARK_MAX;
    }
    epoch += 1;
    job.barrier(epoch);
    checkpoints.push((epoch, s.events.len(), final_wm, table.clone()));
    assert_eq!(engine_late, late.iter().filter(|l| **l).count(), "late counts differ");

    let mut versions: Vec<(u64, ViewData)> = Vec::new();
    while versions.len() < checkpoints.len() {
        match reports.recv().await.expect("the job stopped") {
            Report::Epoch { epoch, data, .. } => versions.push((epoch, data)),
            Report::Failed { error, .. } => panic!("view failed: {error}"),
        }
    }
    job.task.abort();

    for ((epoch, read, wm, table), (reported, data)) in checkpoints.iter().zip(&versions) {
        assert_eq!(epoch, reported);
        let on_time: Vec<Event> =
            s.events[..*read].iter().zip(&late).filter(|(_, l)| !**l).map(|(e, _)| e.clone()).collect();
        let mut expected = rows_of(&batch_answer(&oracle_query, batch(&on_time), dim_batch(table)).await);
        if let (true, Some(col)) = (emit_on_window_close, window_end_column) {
            expected.retain(|r| matches!(r[col], Value::Int(end) if end <= *wm as i128));
        }
        let actual = rows_of(&data.batches());
        assert_same(&actual, &expected, absolute, &format!("{sql} at epoch {epoch} after {read} events (watermark {wm})"));
    }
}

const TUMBLE: &str = "SELECT k, window_start, window_end, count(*) AS n, count(v) AS nv, sum(v) AS s, min(v) AS lo, \
     max(v) AS hi, avg(v) AS a, count(DISTINCT tag) AS tags, sum(f) AS sf, stddev_samp(f) AS sd, var_pop(f) AS vp, \
     sum(d) AS sd2, avg(d) AS ad, min(d) AS md \
     FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end";

const HOP: &str = "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, max(v) AS hi, min(f) AS lo \
     FROM HOP(ev, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end";

/// A filter and an expression before the window, HAVING after it.
const FILTERED: &str = "SELECT window_start, window_end, count(*) AS n, sum(v * 2) AS s2 \
     FROM TUMBLE(ev, ts, INTERVAL '5' SECOND) WHERE f > -500 GROUP BY window_start, window_end HAVING count(*) > 1";

/// Not windowed: groups stay open forever and only update.
const GLOBAL: &str = "SELECT k, count(*) AS n, max(ts) AS last, bool_or(v > 50) AS big, sum(d) AS sd, avg(d) AS ad FROM ev GROUP BY k";

fn run(sql: &'static str, eowc: bool, window_end_column: Option<usize>, cases: u32) {
    run_within(sql, eowc, window_end_column, 0.0, cases)
}

/// [`run`], with the job checkpointed, stopped and restored from the checkpoint at a random
/// barrier: the results must not change.
fn run_restarting(sql: &'static str, eowc: bool, window_end_column: Option<usize>, absolute: f64, cases: u32) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(s in scenario())| {
        runtime.block_on(check(sql, eowc, window_end_column, absolute, true, &s));
    });
}

/// `absolute`: the float error allowed besides rounding.
fn run_within(sql: &'static str, eowc: bool, window_end_column: Option<usize>, absolute: f64, cases: u32) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let config = ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() };
    proptest!(config, |(s in scenario())| {
        runtime.block_on(check(sql, eowc, window_end_column, absolute, false, &s));
    });
}

#[test]
fn tumble_update_mode_matches_batch() {
    run(TUMBLE, false, None, 40);
}

#[test]
fn tumble_emit_on_window_close_matches_closed_windows() {
    run(TUMBLE, true, Some(2), 40);
}

#[test]
fn hop_update_mode_matches_batch() {
    run(HOP, false, None, 30);
}

#[test]
fn hop_emit_on_window_close_matches_closed_windows() {
    run(HOP, true, Some(2), 30);
}

/// HOP with calls that merge from panes (count; sum and avg of integers, floats and decimals;
/// min and max of integers and timestamps): kept by panes in `EMIT ON WINDOW CLOSE` mode.
const HOP_PANES: &str = "SELECT k, window_start, window_end, count(*) AS n, count(v) AS nv, sum(v) AS s, max(v) AS hi, \
     min(v) AS lo, max(ts) AS last, avg(v) AS a, sum(f) AS sf, avg(f) AS af, sum(d) AS sd, avg(d) AS ad \
     FROM HOP(ev, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end";

/// Panes with an offset, packed integer keys (a NULL group among them) and only the window end.
const HOP_PANES_INTEGER_KEYS: &str = "SELECT v % 3 AS b, window_end, count(*) AS n, min(v) AS lo \
     FROM HOP(ev, ts, INTERVAL '3' SECOND, INTERVAL '9' SECOND, INTERVAL '1' SECOND) GROUP BY v % 3, window_end";

/// Whether the plan's aggregates keep HOP windows by panes.
fn uses_panes(plan: &weir_sql::streaming::StreamPlan) -> Vec<bool> {
    plan.nodes
        .iter()
        .filter_map(|n| match &n.op {
            weir_sql::streaming::StreamOp::Aggregate { panes, .. } => Some(panes.is_some()),
            _ => None,
        })
        .collect()
}

#[test]
fn hop_panes_are_chosen_only_where_they_merge() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        assert_eq!(uses_panes(&plan(HOP_PANES, true).await), [true]);
        assert_eq!(uses_panes(&plan(HOP_PANES_INTEGER_KEYS, true).await), [true]);
        // Update mode, a float min, an expression of the window start: by windows.
        assert_eq!(uses_panes(&plan(HOP_PANES, false).await), [false]);
        assert_eq!(uses_panes(&plan(HOP, true).await), [false]);
        let by_minute = "SELECT date_trunc('minute', window_start) AS m, count(*) AS n \
            FROM HOP(ev, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) GROUP BY 1";
        assert_eq!(uses_panes(&plan(by_minute, false).await), [false]);
        // q5's shape: both aggregates over HOP by panes, the one over their output not.
        let q5 = "SELECT a.k, a.n, a.window_start FROM \
            (SELECT k, count(*) AS n, window_start, window_end FROM HOP(ev, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
             GROUP BY k, window_start, window_end) a \
            JOIN (SELECT max(c.n) AS top, c.window_start, c.window_end FROM \
              (SELECT count(*) AS n, window_start, window_end FROM HOP(ev, ts, INTERVAL '2' SECOND, INTERVAL '10' SECOND) \
               GROUP BY k, window_start, window_end) c GROUP BY c.window_start, c.window_end) m \
            ON a.window_start = m.window_start AND a.window_end = m.window_end AND a.n >= m.top";
        assert_eq!(uses_panes(&plan(q5, true).await).iter().filter(|p| **p).count(), 2);
    });
}

#[test]
fn hop_by_panes_matches_closed_windows() {
    run(HOP_PANES, true, Some(2), 40);
    run(HOP_PANES_INTEGER_KEYS, true, Some(1), 30);
}

#[test]
fn filter_and_having_match_batch() {
    run(FILTERED, false, None, 30);
}

/// Integer group keys (with a NULL group) and a window: the aggregate's packed-key path.
const INTEGER_KEYS: &str = "SELECT v % 7 AS b, window_start, count(*) AS n, sum(f) AS sf, max(k) AS mk \
     FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY v % 7, window_start";

#[test]
fn integer_group_keys_match_batch() {
    run(INTEGER_KEYS, false, None, 30);
}

#[test]
fn unwindowed_group_by_matches_batch() {
    run(GLOBAL, false, None, 30);
}

/// A window join (Nexmark q5's shape): per-key counts joined with each window's top value on
/// the window bounds, with a residual condition.
const WINDOW_JOIN: &str = "SELECT a.k, a.window_start, a.window_end, a.n, b.top, b.busiest \
     FROM (SELECT k, window_start, window_end, count(*) AS n FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) \
           GROUP BY k, window_start, window_end) a \
     JOIN (SELECT window_start, window_end, max(v) AS top, max(n) AS busiest \
           FROM (SELECT k, window_start, window_end, count(*) AS n, max(v) AS v FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) \
                 GROUP BY k, window_start, window_end) c GROUP BY window_start, window_end) b \
     ON a.window_start = b.window_start AND a.window_end = b.window_end AND a.n >= b.busiest";

/// An interval self-join: each event with the same key's events of the 3 seconds before it.
const INTERVAL_JOIN: &str = "SELECT a.k, a.ts, a.v, b.ts AS before_ts, b.v AS before_v FROM ev a JOIN ev b \
     ON a.k = b.k AND b.ts BETWEEN a.ts - INTERVAL '3' SECOND AND a.ts";

/// The same as a LEFT JOIN with a residual condition, aggregated per event (the shape of the
/// chat demo's z-score view).
const INTERVAL_LEFT_JOIN: &str = "SELECT a.k, a.ts, a.tag, count(b.v) AS n, sum(b.v) AS s, max(b.f) AS hi FROM ev a \
     LEFT JOIN ev b ON a.k = b.k AND b.ts >= a.ts - INTERVAL '3' SECOND AND b.ts < a.ts AND b.tag <> a.tag \
     GROUP BY a.k, a.ts, a.tag";

/// Nexmark q7's shape: a WHERE over the join holds the interval.
const WHERE_INTERVAL_JOIN: &str = "SELECT e.k, e.v, e.ts, m.window_end FROM ev e \
     JOIN (SELECT max(v) AS top, window_end FROM TUMBLE(ev, ts, INTERVAL '5' SECOND) GROUP BY window_end) m \
     ON e.v = m.top WHERE e.ts BETWEEN m.window_end - INTERVAL '5' SECOND AND m.window_end";

/// A stream joined with a table that gains and loses rows, aggregated without windows.
const TABLE_JOIN: &str = "SELECT d.label, count(*) AS n, sum(e.v) AS s, min(e.v) AS lo, max(d.w) AS hw \
     FROM ev e JOIN dim d ON e.k = d.k GROUP BY d.label";

/// Outer joins with a table: unmatched stream rows NULL-padded, and the table's unmatched rows.
const TABLE_LEFT_JOIN: &str =
    "SELECT e.k, e.v, d.label, d.w FROM ev e LEFT JOIN dim d ON e.k = d.k AND d.w < e.v";
const TABLE_FULL_JOIN: &str = "SELECT e.k, e.tag, d.k AS dk, d.label FROM ev e FULL JOIN dim d ON e.k = d.k AND e.tag = 'u1'";

#[test]
fn window_join_update_mode_matches_batch() {
    run(WINDOW_JOIN, false, None, 30);
}

#[test]
fn window_join_emit_on_window_close_matches_closed_windows() {
    run(WINDOW_JOIN, true, Some(2), 30);
}

#[test]
fn interval_join_matches_batch() {
    run(INTERVAL_JOIN, false, None, 30);
}

#[test]
fn interval_left_join_aggregate_matches_batch() {
    run(INTERVAL_LEFT_JOIN, false, None, 30);
}

#[test]
fn where_interval_join_matches_batch() {
    run(WHERE_INTERVAL_JOIN, false, None, 30);
}

#[test]
fn stream_table_join_with_retractions_matches_batch() {
    run(TABLE_JOIN, false, None, 30);
}

#[test]
fn stream_table_outer_joins_match_batch() {
    run(TABLE_LEFT_JOIN, false, None, 20);
    run(TABLE_FULL_JOIN, false, None, 20);
}

/// Sessions per key: rows less than 2 s apart share a session, which grows and merges as
/// out-of-order rows arrive.
const SESSION: &str = "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, max(f) AS hi \
     FROM SESSION(ev, ts, INTERVAL '2' SECOND) GROUP BY k, window_start, window_end";

/// Without grouping keys, one global sequence of sessions.
const GLOBAL_SESSION: &str = "SELECT window_start, window_end, count(*) AS n, count(DISTINCT k) AS keys \
     FROM SESSION(ev, ts, INTERVAL '1' SECOND) GROUP BY window_start, window_end";

#[test]
fn session_update_mode_matches_batch() {
    run(SESSION, false, None, 40);
}

#[test]
fn session_emit_on_window_close_matches_closed_sessions() {
    run(SESSION, true, Some(2), 40);
}

#[test]
fn global_session_matches_batch() {
    run(GLOBAL_SESSION, false, None, 30);
}

#[test]
fn global_session_emit_on_window_close_matches_closed_sessions() {
    run(GLOBAL_SESSION, true, Some(1), 30);
}

/// first_value/last_value by event time and percentiles, per window.
const FIRST_LAST: &str = "SELECT k, window_start, window_end, first_value(v ORDER BY ts) AS first_v, \
     last_value(tag ORDER BY ts) AS last_tag, last_value(f ORDER BY ts DESC) AS earliest_f, \
     approx_percentile_cont(0.5) WITHIN GROUP (ORDER BY f) AS median_f, \
     approx_percentile_cont(0.9) WITHIN GROUP (ORDER BY f) AS p90 \
     FROM TUMBLE(ev, ts, INTERVAL '10' SECOND) GROUP BY k, window_start, window_end";

/// The same over a join with a table that loses rows: the accumulators see retractions.
const FIRST_LAST_RETRACTING: &str = "SELECT d.label, first_value(e.v ORDER BY e.ts) AS first_v, \
     last_value(e.tag ORDER BY e.ts) AS last_tag, approx_percentile_cont(0.25) WITHIN GROUP (ORDER BY e.f) AS q1 \
     FROM ev e JOIN dim d ON e.k = d.k GROUP BY d.label";

const PERCENTILE_ERROR: f64 = 2.5e-3;

#[test]
fn first_last_and_percentiles_match_batch() {
    run_within(FIRST_LAST, false, None, PERCENTILE_ERROR, 30);
    run_within(FIRST_LAST, true, Some(2), PERCENTILE_ERROR, 20);
}

#[test]
fn first_last_and_percentiles_with_retractions_match_batch() {
    run_within(FIRST_LAST_RETRACTING, false, None, PERCENTILE_ERROR, 30);
}

/// One group that exists before any row (count 0, NULL aggregates), as in SQL.
const NO_GROUP_BY: &str = "SELECT count(*) AS n, sum(v) AS s, min(f) AS lo, stddev_samp(f) AS sd, bool_and(v > 0) AS pos, \
     first_value(tag ORDER BY ts) AS first_tag FROM ev";

#[test]
fn aggregate_without_group_by_matches_batch() {
    run(NO_GROUP_BY, false, None, 30);
}

#[test]
fn aggregates_restored_from_a_checkpoint_match_batch() {
    run_restarting(TUMBLE, false, None, 0.0, 30);
    run_restarting(TUMBLE, true, Some(2), 0.0, 20);
    run_restarting(HOP, false, None, 0.0, 20);
    run_restarting(HOP_PANES, true, Some(2), 0.0, 20);
    run_restarting(HOP_PANES_INTEGER_KEYS, true, Some(1), 0.0, 20);
    run_restarting(FILTERED, false, None, 0.0, 20);
    run_restarting(GLOBAL, false, None, 0.0, 20);
    run_restarting(NO_GROUP_BY, false, None, 0.0, 20);
    run_restarting(INTEGER_KEYS, false, None, 0.0, 20);
    run_restarting(FIRST_LAST, false, None, PERCENTILE_ERROR, 20);
    run_restarting(FIRST_LAST_RETRACTING, false, None, PERCENTILE_ERROR, 20);
    assert!(CHANGE_SNAPSHOTS.load(std::sync::atomic::Ordering::Relaxed) > 0, "no aggregate handed in only its changes");
}

#[test]
fn joins_restored_from_a_checkpoint_match_batch() {
    run_restarting(WINDOW_JOIN, false, None, 0.0, 20);
    run_restarting(WINDOW_JOIN, true, Some(2), 0.0, 15);
    run_restarting(INTERVAL_LEFT_JOIN, false, None, 0.0, 20);
    run_restarting(TABLE_JOIN, false, None, 0.0, 20);
    run_restarting(TABLE_FULL_JOIN, false, None, 0.0, 20);
}

#[test]
fn sessions_restored_from_a_checkpoint_match_batch() {
    run_restarting(SESSION, false, None, 0.0, 25);
    run_restarting(SESSION, true, Some(2), 0.0, 25);
    run_restarting(GLOBAL_SESSION, false, None, 0.0, 20);
}
