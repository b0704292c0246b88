//! `weir_catalog`: live system tables about the streaming engine.
//!
//! * `weir_catalog.sources` - one row per source and per table that feeds views: rows read, late
//!   rows dropped, the current watermark, errors (bad records and read failures), and the
//!   connector's status (`running`, or why it is not: `broker unreachable: ...`).
//! * `weir_catalog.source_partitions` - per source partition: rows read, the partition's own
//!   watermark, whether it ended; for Kafka and NATS also the next offset, the high watermark,
//!   the lag between them, bytes read and rows and bytes per second.
//! * `weir_catalog.source_errors` - the records sources skipped because they did not decode
//!   (newest 1,000 per source): partition, offset, the error and the record's first bytes.
//! * `weir_catalog.materialized_views` - one row per view: rows, state bytes, last epoch the
//!   view reported, its output watermark, whether it runs or failed (with the error), and its
//!   freshness lag (how long ago the inputs it reflects were read).
//!
//! * `weir_catalog.sinks` - one row per sink: its view, connector, status (`running`,
//!   `retrying: <error>`, `failed: <error>`), change rows, batches and epochs delivered, the last
//!   epoch delivered, retries, rows and epochs waiting to be written, and the lag (how long the
//!   oldest waiting epoch has waited).
//!
//! * `weir_catalog.late_events` - the late rows kept by sources with
//!   `watermark.late_events = 'dead_letter'` (newest 10,000 per source), with the reason.
//!
//! Rows are built when a query scans the table, from the catalog and the coordinator's counters.

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use weir_catalog::{Catalog, ObjectKind};

use crate::coordinator::Coordinator;
use crate::sinks::Sinks;
use crate::dataflow::{EventTime, WATERMARK_MAX};

pub const SCHEMA_NAME: &str = "weir_catalog";

#[derive(Debug, Clone, Copy)]
enum SystemTable {
    Sources,
    MaterializedViews,
    LateEvents,
    SourcePartitions,
    SourceErrors,
    Sinks,
    Checkpoints,
}

impl SystemTable {
    /// Every table, with its name, in the order `table_names` lists them.
    const ALL: [(&'static str, SystemTable); 7] = [
        ("sources", SystemTable::Sources),
        ("source_partitions", SystemTable::SourcePartitions),
        ("source_errors", SystemTable::SourceErrors),
        ("materialized_views", SystemTable::MaterializedViews),
        ("late_events", SystemTable::LateEvents),
        ("sinks", SystemTable::Sinks),
        ("checkpoints", SystemTable::Checkpoints),
    ];

    fn named(name: &str) -> Option<SystemTable> {
        Self::ALL.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
    }
}

pub struct WeirCatalogSchema {
    catalog: Arc<RwLock<Catalog>>,
    coordinator: Arc<Coordinator>,
    sinks: Arc<Sinks>,
}

impl std::fmt::Debug for WeirCatalogSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WeirCatalogSchema")
    }
}

impl WeirCatalogSchema {
    pub fn new(catalog: Arc<RwLock<Catalog>>, coordinator: Arc<Coordinator>, sinks: Arc<Sinks>) -> Self {
        WeirCatalogSchema { catalog, coordinator, sinks }
    }
}

#[async_trait]
impl SchemaProvider for WeirCatalogSchema {
    fn table_names(&self) -> Vec<String> {
        SystemTable::ALL.iter().map(|(name, _)| name.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(which) = SystemTable::named(name) else { return Ok(None) };
        Ok(Some(Arc::new(SystemTableProvider {
            which,
            catalog: self.catalog.clone(),
            coordinator: self.coordinator.clone(),
            sinks: self.sinks.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        SystemTable::named(name).is_some()
    }
}

struct SystemTableProvider {
    which: SystemTable,
    catalog: Arc<RwLock<Catalog>>,
    coordinator: Arc<Coordinator>,
    sinks: Arc<Sinks>,
}

impl std::fmt::Debug for SystemTableProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "weir_catalog.{:?}", self.which)
    }
}

fn ts_field(name: &str) -> Field {
    Field::new(name, DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())), true)
}

/// A watermark as a timestamp: NULL before the first one and after the end (+∞), which the
/// `ended` column says.
fn watermark_value(w: EventTime) -> Option<i64> {
    (w != EventTime::MIN && w != WATERMARK_MAX).then_some(w)
}

/// What `weir_catalog.sources.status` says: the connector's own state when it reports one,
/// else whether the source still runs.
fn source_status(stats: &crate::dataflow::reader::SourceStats) -> String {
    if stats.watermark.load(Ordering::Relaxed) == WATERMARK_MAX {
        return "ended".into();
    }
    match stats.connector.as_ref().map(|c| c.state()) {
        Some(state) if !state.is_empty() => state,
        _ => "running".into(),
    }
}

impl SystemTableProvider {
    /// The running inputs of the given kinds with their live figures, in creation order.
    fn inputs_with_stats<'c>(
        &self,
        catalog: &'c Catalog,
        kinds: &[ObjectKind],
    ) -> Vec<(&'c weir_catalog::CatalogObject, Arc<crate::dataflow::reader::SourceStats>)> {
        let mut objects: Vec<_> = catalog
            .objects()
            .filter(|o| kinds.contains(&o.kind))
            .filter_map(|o| self.coordinator.source_stats(o.id).map(|s| (o, s)))
            .collect();
        objects.sort_by_key(|(o, _)| o.id);
        objects
    }

    fn table_schema(&self) -> SchemaRef {
        Arc::new(match self.which {
            SystemTable::Sources => Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("kind", DataType::Utf8, false),
                Field::new("rows_read", DataType::Int64, true),
                Field::new("late_rows", DataType::Int64, true),
                ts_field("watermark"),
                Field::new("ended", DataType::Boolean, true),
                Field::new("errors", DataType::Int64, true),
                Field::new("status", DataType::Utf8, false),
            ]),
            SystemTable::MaterializedViews => Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("rows", DataType::Int64, true),
                Field::new("state_bytes", DataType::Int64, true),
                Field::new("last_epoch", DataType::Int64, true),
                ts_field("watermark"),
                Field::new("status", DataType::Utf8, false),
                Field::new("freshness_lag_ms", DataType::Int64, true),
            ]),
            SystemTable::SourcePartitions => Schema::new(vec![
                Field::new("source", DataType::Utf8, false),
                Field::new("partition", DataType::Int64, false),
                Field::new("rows_read", DataType::Int64, false),
                ts_field("watermark"),
                Field::new("ended", DataType::Boolean, false),
                Field::new("offset", DataType::Int64, true),
                Field::new("high_watermark", DataType::Int64, true),
                Field::new("lag", DataType::Int64, true),
                Field::new("bytes_read", DataType::Int64, true),
                Field::new("rows_per_second", DataType::Float64, true),
                Field::new("bytes_per_second", DataType::Float64, true),
            ]),
            SystemTable::SourceErrors => Schema::new(vec![
                Field::new("source", DataType::Utf8, false),
                ts_field("received_at"),
                Field::new("partition", DataType::Int64, false),
                Field::new("offset", DataType::Int64, false),
                Field::new("error", DataType::Utf8, false),
                Field::new("payload", DataType::Utf8, false),
            ]),
            SystemTable::Sinks => Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("view", DataType::Utf8, true),
                Field::new("connector", DataType::Utf8, false),
                Field::new("status", DataType::Utf8, false),
                Field::new("rows_delivered", DataType::Int64, false),
                Field::new("batches", DataType::Int64, false),
                Field::new("epochs_delivered", DataType::Int64, false),
                Field::new("last_epoch", DataType::Int64, false),
                Field::new("retries", DataType::Int64, false),
                Field::new("pending_rows", DataType::Int64, false),
                Field::new("pending_epochs", DataType::Int64, false),
                Field::new("lag_ms", DataType::Int64, false),
            ]),
            SystemTable::Checkpoints => Schema::new(vec![
                Field::new("epoch", DataType::Int64, false),
                ts_field("created_at"),
                Field::new("bytes_written", DataType::Int64, false),
                Field::new("duration_ms", DataType::Int64, false),
                Field::new("views", DataType::Int64, false),
                Field::new("sources", DataType::Int64, false),
            ]),
            SystemTable::LateEvents => Schema::new(vec![
                Field::new("source", DataType::Utf8, false),
                ts_field("received_at"),
                Field::new("partition", DataType::Int64, false),
                ts_field("event_time"),
                ts_field("watermark"),
                Field::new("reason", DataType::Utf8, false),
                Field::new("row", DataType::Utf8, false),
            ]),
        })
    }

    fn rows(&self) -> DfResult<RecordBatch> {
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        let schema = self.table_schema();
        let columns: Vec<ArrayRef> = match self.which {
            SystemTable::Sources => {
                let objects = self.inputs_with_stats(&catalog, &[ObjectKind::Source, ObjectKind::Table]);
                let wm = |s: &crate::dataflow::reader::SourceStats| s.watermark.load(Ordering::Relaxed);
                let tz: Arc<str> = Arc::from("+00:00");
                vec![
                    Arc::new(StringArray::from_iter_values(objects.iter().map(|(o, _)| o.name.as_str()))),
                    Arc::new(StringArray::from_iter_values(objects.iter().map(|(o, _)| o.kind.noun()))),
                    Arc::new(Int64Array::from_iter_values(objects.iter().map(|(_, s)| s.rows.load(Ordering::Relaxed) as i64))),
                    Arc::new(Int64Array::from_iter_values(objects.iter().map(|(_, s)| s.late_rows.load(Ordering::Relaxed) as i64))),
                    Arc::new(
                        TimestampMicrosecondArray::from_iter(objects.iter().map(|(_, s)| watermark_value(wm(s))))
                            .with_timezone(tz),
                    ),
                    Arc::new(BooleanArray::from_iter(objects.iter().map(|(_, s)| Some(wm(s) == WATERMARK_MAX)))),
                    Arc::new(Int64Array::from_iter_values(objects.iter().map(|(_, s)| s.errors.load(Ordering::Relaxed) as i64))),
                    Arc::new(StringArray::from_iter_values(objects.iter().map(|(_, s)| source_status(s)))),
                ]
            }
            SystemTable::Sinks => {
                let running = self.sinks.stats();
                let mut sinks: Vec<_> = catalog
                    .objects_of_kind(ObjectKind::Sink)
                    .filter_map(|o| running.iter().find(|(id, _)| *id == o.id).map(|(_, s)| (o, s.clone())))
                    .collect();
                sinks.sort_by_key(|(o, _)| o.id);
                let count = |f: fn(&crate::sinks::SinkStats) -> &std::sync::atomic::AtomicU64| -> ArrayRef {
                    Arc::new(Int64Array::from_iter_values(sinks.iter().map(|(_, s)| f(s).load(Ordering::Relaxed) as i64)))
                };
                vec![
                    Arc::new(StringArray::from_iter_values(sinks.iter().map(|(o, _)| o.name.as_str()))),
                    // NULL for a sink of its own query.
                    Arc::new(StringArray::from_iter(
                        sinks.iter().map(|(_, s)| catalog.get(s.view).filter(|v| v.kind == ObjectKind::MaterializedView).map(|v| v.name.clone())),
                    )),
                    Arc::new(StringArray::from_iter_values(sinks.iter().map(|(_, s)| s.connector.as_str()))),
                    Arc::new(StringArray::from_iter_values(sinks.iter().map(|(_, s)| s.status()))),
                    count(|s| &s.rows_delivered),
                    count(|s| &s.batches),
                    count(|s| &s.epochs_delivered),
                    count(|s| &s.last_epoch),
                    count(|s| &s.retries),
                    count(|s| &s.pending_rows),
                    count(|s| &s.pending_epochs),
                    Arc::new(Int64Array::from_iter_values(sinks.iter().map(|(_, s)| s.lag_ms() as i64))),
                ]
            }
            SystemTable::MaterializedViews => {
                let mut views: Vec<_> = catalog.objects_of_kind(ObjectKind::MaterializedView).collect();
                views.sort_by_key(|o| o.id);
                let stats: Vec<_> = views.iter().map(|o| self.coordinator.view_stats(o.id)).collect();
                let status: Vec<String> = views
                    .iter()
                    .zip(&stats)
                    .map(|(o, s)| match (s, self.coordinator.view_failure(o.id)) {
                        (Some(_), _) => "running".to_string(),
                        (None, Some(e)) => format!("failed: {}", e.message),
                        (None, None) => "stopped".to_string(),
                    })
                    .collect();
                let get = |f: &dyn Fn(&crate::dataflow::job::ViewStats) -> i64| -> Vec<Option<i64>> {
                    stats.iter().map(|s| s.as_ref().map(|s| f(s))).collect()
                };
                let tz: Arc<str> = Arc::from("+00:00");
                vec![
                    Arc::new(StringArray::from_iter_values(views.iter().map(|o| o.name.as_str()))),
                    Arc::new(Int64Array::from(get(&|s| s.rows.load(Ordering::Relaxed) as i64))),
                    Arc::new(Int64Array::from(get(&|s| s.state_bytes.load(Ordering::Relaxed) as i64))),
                    Arc::new(Int64Array::from(get(&|s| s.last_epoch.load(Ordering::Relaxed) as i64))),
                    Arc::new(
                        TimestampMicrosecondArray::from(
                            stats
                                .iter()
                                .map(|s| s.as_ref().and_then(|s| watermark_value(s.watermark.load(Ordering::Relaxed))))
                                .collect::<Vec<_>>(),
                        )
                        .with_timezone(tz),
                    ),
                    Arc::new(StringArray::from(status)),
                    // Views publish together, so a running view is as fresh as the published
                    // epoch.
                    Arc::new(Int64Array::from(
                        stats.iter().map(|s| s.as_ref().and(self.coordinator.freshness_lag_ms())).collect::<Vec<_>>(),
                    )),
                ]
            }
            SystemTable::SourcePartitions => {
                let mut rows = Vec::new();
                let mut progress = Vec::new();
                for (o, stats) in self.inputs_with_stats(&catalog, &[ObjectKind::Source]) {
                    let partitions = stats.partitions.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    let connector = stats.connector.as_ref().map(|c| c.partitions()).unwrap_or_default();
                    // The engine learns of a partition from its first row, the connector from
                    // its assignment: show every partition either knows.
                    for i in 0..partitions.len().max(connector.len()) {
                        let p = partitions.get(i).copied().unwrap_or(crate::dataflow::reader::PartitionStats {
                            watermark: EventTime::MIN,
                            ..Default::default()
                        });
                        rows.push((o.name.clone(), i, p));
                        progress.push(connector.get(i).cloned());
                    }
                }
                let progress_values = |f: &dyn Fn(&weir_connectors::PartitionProgress) -> Option<i64>| -> ArrayRef {
                    Arc::new(Int64Array::from(progress.iter().map(|p| p.as_ref().and_then(f)).collect::<Vec<_>>()))
                };
                let rates = |f: &dyn Fn(&weir_connectors::PartitionProgress) -> f64| -> ArrayRef {
                    Arc::new(Float64Array::from(progress.iter().map(|p| p.as_ref().map(f)).collect::<Vec<_>>()))
                };
                let tz: Arc<str> = Arc::from("+00:00");
                vec![
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|(n, _, _)| n.as_str()))),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, i, _)| *i as i64))),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, _, p)| p.rows as i64))),
                    Arc::new(
                        TimestampMicrosecondArray::from(rows.iter().map(|(_, _, p)| watermark_value(p.watermark)).collect::<Vec<_>>())
                            .with_timezone(tz),
                    ),
                    Arc::new(BooleanArray::from(rows.iter().map(|(_, _, p)| p.ended).collect::<Vec<_>>())),
                    progress_values(&|p| p.next_offset),
                    progress_values(&|p| p.high_watermark),
                    progress_values(&|p| p.lag()),
                    progress_values(&|p| Some(p.bytes as i64)),
                    rates(&|p| p.rows_per_second),
                    rates(&|p| p.bytes_per_second),
                ]
            }
            SystemTable::SourceErrors => {
                let mut rows = Vec::new();
                for (o, stats) in self.inputs_with_stats(&catalog, &[ObjectKind::Source]) {
                    rows.extend(stats.bad_records.snapshot().into_iter().map(|e| (o.name.clone(), e)));
                }
                let tz: Arc<str> = Arc::from("+00:00");
                vec![
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|(n, _)| n.as_str()))),
                    Arc::new(
                        TimestampMicrosecondArray::from_iter_values(rows.iter().map(|(_, e)| e.received_at_micros)).with_timezone(tz),
                    ),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, e)| e.partition as i64))),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, e)| e.offset as i64))),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, e)| e.reason.as_str()))),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, e)| e.payload.as_str()))),
                ]
            }
            SystemTable::Checkpoints => {
                let records = self.coordinator.checkpointer().map(|c| c.records()).unwrap_or_default();
                let int = |f: &dyn Fn(&crate::checkpoint::collector::CheckpointRecord) -> i64| -> ArrayRef {
                    Arc::new(Int64Array::from_iter_values(records.iter().map(f)))
                };
                vec![
                    int(&|r| r.epoch as i64),
                    Arc::new(TimestampMicrosecondArray::from_iter_values(records.iter().map(|r| r.created_at_micros)).with_timezone("+00:00")),
                    int(&|r| r.bytes_written as i64),
                    int(&|r| r.duration_ms as i64),
                    int(&|r| r.views as i64),
                    int(&|r| r.sources as i64),
                ]
            }
            SystemTable::LateEvents => {
                let mut rows = Vec::new();
                for (o, stats) in self.inputs_with_stats(&catalog, &[ObjectKind::Source]) {
                    if let Some(queue) = &stats.dead_letters {
                        rows.extend(queue.snapshot().into_iter().map(|letter| (o.name.clone(), letter)));
                    }
                }
                let tz: Arc<str> = Arc::from("+00:00");
                let times = |f: &dyn Fn(&crate::dataflow::dead_letter::DeadLetter) -> Option<i64>| -> ArrayRef {
                    Arc::new(TimestampMicrosecondArray::from(rows.iter().map(|(_, l)| f(l)).collect::<Vec<_>>()).with_timezone(tz.clone()))
                };
                vec![
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|(n, _)| n.as_str()))),
                    times(&|l| Some(l.received_at_micros)),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|(_, l)| l.partition as i64))),
                    times(&|l| l.event_time),
                    times(&|l| watermark_value(l.watermark)),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, l)| l.reason.as_str()))),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|(_, l)| l.row.as_str()))),
                ]
            }
        };
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

#[async_trait]
impl TableProvider for SystemTableProvider {
    fn schema(&self) -> SchemaRef {
        self.table_schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self.rows()?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], self.table_schema(), projection.cloned())?)
    }
}
