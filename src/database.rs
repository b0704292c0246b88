//! The database: catalog, table storage and the DataFusion context every session plans with.
//!
//! One [`Database`] is shared by all sessions. Its DataFusion `SessionContext` knows three
//! schemas in the catalog `weir`: `public` (user relations, resolved from the Weir catalog at
//! plan time by [`RelationsProvider`]), `pg_catalog` (from `datafusion-pg-catalog`, which derives
//! `pg_class`, `pg_attribute`, ... from the DataFusion catalog) and DataFusion's
//! `information_schema`. Sessions never plan with the shared context directly: each statement
//! gets a copy of its state carrying the session's settings and a [`StatementSnapshot`], the
//! table versions the statement reads (see `session.rs`).

use std::any::Any;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::catalog::{MemoryCatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::Constraints;
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use weir_catalog::{Catalog, CatalogObject, Column, ObjectId, ObjectKind};

use crate::config::Config;
use crate::error::{Result, WeirError};
use crate::metrics::Metrics;
use crate::storage::{ChangeStore, Snapshot, Storage, TableData};

/// The single database's name, as clients see it (`current_database()`, `\l`).
pub const DATABASE_NAME: &str = "weir";
pub const DEFAULT_SCHEMA: &str = "public";

pub struct Database {
    pub config: Arc<Config>,
    pub catalog: Arc<RwLock<Catalog>>,
    pub storage: Arc<Storage>,
    /// The running dataflow: sources, table feeds, view jobs, epochs.
    pub coordinator: Arc<crate::coordinator::Coordinator>,
    /// The running sinks.
    pub sinks: Arc<crate::sinks::Sinks>,
    pub metrics: Arc<Metrics>,
    /// Failed logins per client address, shared by the Postgres wire and Flight.
    pub logins: crate::auth::login_limit::LoginLimiter,
    pub cancel: Arc<crate::server::cancel::CancelRegistry>,
    base: SessionContext,
    /// Serializes DDL: catalog and storage change together, one statement at a time.
    pub ddl_lock: tokio::sync::Mutex<()>,
    /// datafusion-postgres's rewrites of Postgres-only syntax. Built once: it tokenizes its
    /// list of known client queries when created.
    pub compat: datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser,
    /// Statements executing right now; shutdown waits for them, not for idle connections.
    pub running_statements: std::sync::atomic::AtomicI64,
    /// Where ad-hoc queries execute (`--query-threads`).
    pub queries: crate::query_runtime::QueryRuntime,
    ready: AtomicBool,
}

/// See [`Database::statement_running`].
pub struct RunningStatement {
    db: Arc<Database>,
    /// When the statement started, for the duration histogram (None: not timed here).
    started: Option<std::time::Instant>,
}

impl Drop for RunningStatement {
    fn drop(&mut self) {
        self.db.running_statements.fetch_sub(1, Ordering::SeqCst);
        if let Some(started) = self.started {
            self.db.metrics.statement_duration.observe(started.elapsed());
        }
    }
}

/// The table versions one statement reads, installed as a `SessionConfig` extension so that
/// [`WeirTable::scan`] sees the statement's snapshot (and its transaction's own writes).
#[derive(Debug, Default)]
pub struct StatementSnapshot {
    pub tables: Snapshot,
    /// Materialized views, all as of one published epoch.
    pub views: Arc<crate::coordinator::Published>,
}

impl Database {
    /// Opens the database in the configured data directory: loads the catalog, re-plans every
    /// table definition and replays the table log.
    pub async fn open(config: Arc<Config>) -> Result<Arc<Database>> {
        let data_dir: PathBuf = config.data_dir.clone();
        std::fs::create_dir_all(&data_dir)?;
        let sealer = Arc::new(crate::auth::secrets::SecretSealer::open(&config, &data_dir)?);
        let mut catalog = Catalog::open_with_codec(&data_dir.join("catalog"), sealer)?;
        crate::roles::bootstrap_superuser(&mut catalog, &config)?;
        let base = new_base_context()?;

        // Rebuild every table's empty state from its stored definition, then replay the log.
        let mut tables = Vec::new();
        for object in catalog.objects_of_kind(ObjectKind::Table) {
            let (schema, pk) = table_schema_from_catalog(object)?;
            tables.push((object.id, TableData::new(&object.name, schema, pk)?));
        }
        let catalog = Arc::new(RwLock::new(catalog));
        // The checkpoint first: the log's commits after its table positions are kept for the
        // views that resume from it.
        let (checkpoints, recovered) = open_checkpoints(&config, &data_dir, catalog.clone()).await?;
        let keep_after = recovered.as_ref().and_then(|r| r.tables.values().map(|t| t.seq).min());
        let storage = Arc::new(Storage::open(&data_dir, tables, keep_after)?);
        let metrics = Arc::new(Metrics::default());
        let barrier_interval = std::time::Duration::from_millis(config.barrier_interval_ms.max(1));
        let coordinator = crate::coordinator::Coordinator::new(barrier_interval, checkpoints, recovered);
        storage.set_listener(coordinator.clone());
        let queries = crate::query_runtime::QueryRuntime::new(config.query_threads)
            .map_err(|e| WeirError::internal(format!("cannot start the query runtime: {e}")))?;
        let db = Arc::new(Database {
            config,
            catalog: catalog.clone(),
            storage: storage.clone(),
            coordinator: coordinator.clone(),
            sinks: Arc::new(crate::sinks::Sinks::default()),
            metrics,
            cancel: Arc::new(crate::server::cancel::CancelRegistry::default()),
            base,
            ddl_lock: tokio::sync::Mutex::new(()),
            logins: crate::auth::login_limit::LoginLimiter::default(),
            compat: datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser::new(),
            running_statements: std::sync::atomic::AtomicI64::new(0),
            queries,
            ready: AtomicBool::new(false),
        });
        let provider = Arc::new(RelationsProvider { catalog, storage, coordinator });
        let weir = MemoryCatalogProvider::new();
        datafusion::catalog::CatalogProvider::register_schema(&weir, DEFAULT_SCHEMA, provider)?;
        datafusion::catalog::CatalogProvider::register_schema(
            &weir,
            crate::weir_catalog::SCHEMA_NAME,
            Arc::new(crate::weir_catalog::WeirCatalogSchema::new(db.catalog.clone(), db.coordinator.clone(), db.sinks.clone())),
        )?;
        db.base.register_catalog(DATABASE_NAME, Arc::new(weir));
        datafusion_postgres::datafusion_pg_catalog::setup_pg_catalog(
            &db.base,
            DATABASE_NAME,
            datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
        )
        .map_err(|e| WeirError::from_datafusion(*e))?;
        crate::pg_compat::register_functions(&db.base, &db);
        crate::pg_compat::register_catalog_functions(&db.base, &db.catalog);
        crate::jsonb::register(&db.base).map_err(WeirError::from_datafusion)?;
        if let Some(weir) = db.base.catalog(DATABASE_NAME) {
            let info = datafusion::catalog::information_schema::InformationSchemaProvider::new(
                db.base.state().catalog_list().clone(),
            );
            weir.register_schema(
                "information_schema",
                Arc::new(crate::pg_catalog::PatchedSchema::information_schema(Arc::new(info), db.catalog.clone())),
            )?;
        }
        // Patch pg_catalog with what only the Weir catalog knows (declared types, keys).
        if let Some(weir) = db.base.catalog(DATABASE_NAME)
            && let Some(inner) = weir.schema("pg_catalog")
        {
            weir.register_schema(
                "pg_catalog",
                Arc::new(crate::pg_catalog::PatchedSchema::pg_catalog(inner, db.catalog.clone())),
            )?;
        }
        crate::streaming::start_all(&db).await?;
        db.coordinator.start();
        db.storage.release_tail();
        db.ready.store(true, Ordering::SeqCst);
        Ok(db)
    }

    /// Counts a statement as running until the guard is dropped.
    pub fn statement_running(self: &Arc<Self>) -> RunningStatement {
        self.running_statements.fetch_add(1, Ordering::SeqCst);
        RunningStatement { db: self.clone(), started: Some(std::time::Instant::now()) }
    }

    /// As [`Database::statement_running`] for the rows of a statement whose duration was
    /// already counted (a Flight query's DoGet after its GetFlightInfo).
    pub fn rows_streaming(self: &Arc<Self>) -> RunningStatement {
        self.running_statements.fetch_add(1, Ordering::SeqCst);
        RunningStatement { db: self.clone(), started: None }
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// The shared context (for building per-statement states; do not plan with it directly).
    pub fn base_context(&self) -> &SessionContext {
        &self.base
    }

    pub fn read_catalog(&self) -> std::sync::RwLockReadGuard<'_, Catalog> {
        self.catalog.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn write_catalog(&self) -> std::sync::RwLockWriteGuard<'_, Catalog> {
        self.catalog.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn snapshot(&self) -> Snapshot {
        self.storage.snapshot()
    }
}

/// The checkpointer (when checkpoints are on) and the newest intact checkpoint to resume from.
async fn open_checkpoints(
    config: &Config,
    data_dir: &std::path::Path,
    catalog: Arc<RwLock<Catalog>>,
) -> Result<(Option<(Arc<crate::checkpoint::collector::Checkpointer>, std::time::Duration)>, Option<crate::checkpoint::recovery::Recovered>)> {
    if config.checkpoint_interval_ms == 0 {
        return Ok((None, None));
    }
    let store = Arc::new(crate::checkpoint::CheckpointStore::open(config.state_store.as_deref(), data_dir)?);
    let started = std::time::Instant::now();
    let recovered = crate::checkpoint::recovery::load(&store).await?;
    if let Some(r) = &recovered {
        tracing::info!(epoch = r.epoch, load_ms = started.elapsed().as_millis() as u64, "resuming from checkpoint");
    }
    let catalog_version = Box::new(move || catalog.read().unwrap_or_else(|p| p.into_inner()).version());
    let checkpointer = crate::checkpoint::collector::Checkpointer::start(store, recovered.as_ref().map_or(0, |r| r.epoch), catalog_version);
    // Barriers come at multiples of the barrier interval, so checkpoints do too.
    let interval = std::time::Duration::from_millis(config.checkpoint_interval_ms.max(config.barrier_interval_ms.max(1)));
    Ok((Some((checkpointer, interval)), recovered))
}

fn new_base_context() -> Result<SessionContext> {
    let mut config = SessionConfig::new()
        .with_default_catalog_and_schema(DATABASE_NAME, DEFAULT_SCHEMA)
        .with_create_default_catalog_and_schema(false)
        // information_schema is registered by Weir (patched types), not built in per query.
        .with_information_schema(false);
    let options = config.options_mut();
    // Postgres reads `1.5` as numeric, not double: keep exact decimals exact.
    options.sql_parser.parse_float_as_decimal = true;
    options.sql_parser.dialect = datafusion::config::Dialect::PostgreSQL;
    // Tables store `text` as Utf8; keep literals and casts in the same representation.
    options.sql_parser.map_string_types_to_utf8view = false;
    options.execution.time_zone = Some("+00:00".to_string());
    let ctx = SessionContext::new_with_config(config);
    weir_sql::streaming::register_window_functions(&ctx);
    Ok(ctx)
}

/// Field metadata key holding a column's declared Postgres type (`character varying(40)`), so
/// that result descriptions report `varchar` and typmods rather than what Arrow stores.
pub const PG_TYPE_METADATA: &str = "weir.pg_type";

/// The Arrow schema of a table with these catalog columns.
pub fn table_schema(columns: &[Column]) -> Result<Schema> {
    let mut fields = Vec::with_capacity(columns.len());
    for c in columns {
        let field = Field::new(&c.name, arrow_type_for_pg_name(&c.type_name)?, c.nullable).with_metadata(
            std::collections::HashMap::from([(PG_TYPE_METADATA.to_string(), c.type_name.clone())]),
        );
        fields.push(field);
    }
    Ok(Schema::new(fields))
}

/// Rebuilds a table's Arrow schema from the column types the catalog stores.
pub fn table_schema_from_catalog(object: &CatalogObject) -> Result<(SchemaRef, Option<Vec<usize>>)> {
    let fields = table_schema(&object.columns)?.fields().to_vec();
    let pk: Vec<usize> = object
        .primary_key
        .iter()
        .filter_map(|k| object.columns.iter().position(|c| &c.name == k))
        .collect();
    Ok((Arc::new(Schema::new(fields)), (!pk.is_empty()).then_some(pk)))
}

/// The Arrow type Weir stores a column of the given Postgres type as. The names are those
/// [`pg_type_name`] produces, so the mapping round-trips through the catalog.
pub fn arrow_type_for_pg_name(name: &str) -> Result<DataType> {
    if name.get(..7).is_some_and(|p| p.eq_ignore_ascii_case("struct<")) {
        return struct_type(name);
    }
    let lower = name.to_ascii_lowercase();
    // `character varying(20)`, `character(1)`: the length limit does not change the storage.
    let lower = match lower.split_once('(') {
        Some((base, _)) if base.starts_with("character") => base.trim().to_string(),
        _ => lower,
    };
    if let Some(rest) = lower.strip_prefix("numeric(") {
        let inner = rest.trim_end_matches(')');
        let mut parts = inner.split(',').map(|p| p.trim().parse::<i16>());
        let p = parts.next().and_then(|r| r.ok()).unwrap_or(38);
        let s = parts.next().and_then(|r| r.ok()).unwrap_or(0);
        return Ok(DataType::Decimal128(p.clamp(1, 38) as u8, s.clamp(0, 38) as i8));
    }
    Ok(match lower.as_str() {
        "smallint" => DataType::Int16,
        "integer" => DataType::Int32,
        "bigint" => DataType::Int64,
        "real" => DataType::Float32,
        "double precision" => DataType::Float64,
        "numeric" => DataType::Decimal128(38, 10),
        "text" | "character varying" | "character" | "json" | "jsonb" | "uuid" => DataType::Utf8,
        "boolean" => DataType::Boolean,
        "date" => DataType::Date32,
        "time without time zone" => DataType::Time64(TimeUnit::Microsecond),
        "timestamp without time zone" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamp with time zone" => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        "bytea" => DataType::Binary,
        "interval" => DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano),
        other => {
            return Err(WeirError::new(
                crate::error::SqlState::UndefinedObject,
                format!("type \"{other}\" does not exist"),
            ));
        }
    })
}

/// A `struct<name type, ...>` type name as an Arrow struct (field names keep their case).
fn struct_type(name: &str) -> Result<DataType> {
    let parsed = weir_sql::parse_type_name(name).map_err(|e| WeirError::new(crate::error::SqlState::SyntaxError, e.message))?;
    let weir_sql::sqlparser::ast::DataType::Struct(fields, _) = parsed else {
        return Err(WeirError::internal(format!("\"{name}\" is not a struct type")));
    };
    let fields = fields
        .iter()
        .map(|f| {
            let name = f.field_name.as_ref().map(crate::session::ident).unwrap_or_default();
            let data_type = arrow_type_for_pg_name(&crate::session::pg_type_for_sql(&f.field_type)?)?;
            Ok(Field::new(name, data_type, true))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(DataType::Struct(fields.into()))
}

/// The Postgres name of the type Weir stores for an Arrow type (the inverse of
/// [`arrow_type_for_pg_name`] for the types a table can have).
pub fn pg_type_name(data_type: &DataType) -> Option<String> {
    Some(match data_type {
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Date32 => "date".into(),
        DataType::Time64(_) => "time without time zone".into(),
        DataType::Timestamp(_, None) => "timestamp without time zone".into(),
        DataType::Timestamp(_, Some(_)) => "timestamp with time zone".into(),
        DataType::Binary | DataType::LargeBinary => "bytea".into(),
        DataType::Interval(_) => "interval".into(),
        DataType::Struct(fields) => {
            let fields = fields
                .iter()
                .map(|f| Some(format!("{} {}", crate::pg_compat::quote_ident(f.name()), pg_type_name(f.data_type())?)))
                .collect::<Option<Vec<_>>>()?;
            format!("struct<{}>", fields.join(", "))
        }
        _ => return None,
    })
}

/// Catalog columns for a table schema.
pub fn catalog_columns(schema: &Schema) -> Result<Vec<Column>> {
    schema
        .fields()
        .iter()
        .map(|f| {
            let type_name = pg_type_name(f.data_type()).ok_or_else(|| {
                WeirError::not_supported(format!("a column of type {} (\"{}\")", f.data_type(), f.name()))
            })?;
            Ok(Column { name: f.name().clone(), type_name, nullable: f.is_nullable() })
        })
        .collect()
}

/// `weir.public`: the user's relations, looked up in the Weir catalog at plan time so that
/// DDL from any session is visible to the next statement of every session.
struct RelationsProvider {
    catalog: Arc<RwLock<Catalog>>,
    storage: Arc<Storage>,
    coordinator: Arc<crate::coordinator::Coordinator>,
}

impl std::fmt::Debug for RelationsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelationsProvider")
    }
}

impl RelationsProvider {
    fn find(&self, name: &str) -> Option<CatalogObject> {
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        catalog.objects().find(|o| o.kind.is_relation() && o.schema == DEFAULT_SCHEMA && o.name == name).cloned()
    }
}

#[async_trait]
impl SchemaProvider for RelationsProvider {
    fn table_names(&self) -> Vec<String> {
        let catalog = self.catalog.read().unwrap_or_else(|p| p.into_inner());
        catalog
            .objects()
            .filter(|o| o.kind.is_relation() && o.schema == DEFAULT_SCHEMA)
            .map(|o| o.name.clone())
            .collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(object) = self.find(name) else { return Ok(None) };
        match object.kind {
            ObjectKind::Table => {}
            ObjectKind::MaterializedView | ObjectKind::Source => {
                let schema = Arc::new(Schema::new(
                    table_schema(&object.columns)
                        .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?
                        .fields()
                        .iter()
                        .map(|f| f.as_ref().clone().with_nullable(true))
                        .collect::<Vec<_>>(),
                ));
                return Ok(Some(Arc::new(StreamRelation {
                    id: object.id,
                    name: object.name.clone(),
                    kind: object.kind,
                    schema,
                    coordinator: self.coordinator.clone(),
                })));
            }
            _ => return Ok(None),
        }
        let Some(data) = self.storage.table(object.id) else { return Ok(None) };
        let pk: Vec<usize> = object
            .primary_key
            .iter()
            .filter_map(|k| object.columns.iter().position(|c| &c.name == k))
            .collect();
        let constraints = if pk.is_empty() {
            Constraints::default()
        } else {
            Constraints::new_unverified(vec![datafusion::common::Constraint::PrimaryKey(pk)])
        };
        Ok(Some(Arc::new(WeirTable {
            id: object.id,
            schema: data.schema().clone(),
            storage: self.storage.clone(),
            constraints,
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.find(name).is_some()
    }
}

/// A user table as DataFusion sees it: scans read the statement's snapshot.
#[derive(Debug)]
pub struct WeirTable {
    pub id: ObjectId,
    schema: SchemaRef,
    storage: Arc<Storage>,
    constraints: Constraints,
}

#[async_trait]
impl TableProvider for WeirTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn constraints(&self) -> Option<&Constraints> {
        Some(&self.constraints)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let snapshot = state.config().get_extension::<StatementSnapshot>();
        let data = snapshot
            .and_then(|s| s.tables.get(&self.id).cloned())
            .or_else(|| self.storage.table(self.id));
        let batches = data.map(|d| d.batches().as_ref().clone()).unwrap_or_default();
        let exec = MemorySourceConfig::try_new_exec(&[batches], self.schema.clone(), projection.cloned())?;
        Ok(exec)
    }
}

/// A materialized view (scans read the statement's published epoch) or a source (which holds
/// no rows to scan: it is only an input of views).
#[derive(Debug)]
pub struct StreamRelation {
    pub id: ObjectId,
    name: String,
    kind: ObjectKind,
    schema: SchemaRef,
    coordinator: Arc<crate::coordinator::Coordinator>,
}

#[async_trait]
impl TableProvider for StreamRelation {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if self.kind == ObjectKind::Source {
            let err = WeirError::new(
                crate::error::SqlState::FeatureNotSupported,
                format!("cannot read rows of source \"{}\" directly", self.name),
            )
            .with_hint("Create a materialized view over the source and query the view.");
            return Err(datafusion::error::DataFusionError::External(Box::new(err)));
        }
        let published = match state.config().get_extension::<StatementSnapshot>() {
            Some(s) => s.views.clone(),
            None => self.coordinator.published(),
        };
        let batches = match published.views.get(&self.id) {
            Some(data) => data
                .batches()
                .iter()
                .map(|b| RecordBatch::try_new(self.schema.clone(), b.columns().to_vec()))
                .collect::<std::result::Result<Vec<_>, _>>()?,
            None => {
                // A view that stopped must not read as empty.
                if let Some(failure) = self.coordinator.view_failure(self.id) {
                    let err = WeirError::new(
                        crate::error::SqlState::ObjectNotInPrerequisiteState,
                        format!("materialized view \"{}\" failed: {}", self.name, failure.message),
                    )
                    .with_hint("Drop the view and create it again; the server log has the details.");
                    return Err(datafusion::error::DataFusionError::External(Box::new(err)));
                }
                vec![]
            }
        };
        Ok(MemorySourceConfig::try_new_exec(&[batches], self.schema.clone(), projection.cloned())?)
    }
}

/// The id of the Weir table a DML plan targets, if it is one.
pub fn dml_target_table(plan: &LogicalPlan) -> Option<ObjectId> {
    let LogicalPlan::Dml(dml) = plan else { return None };
    let source = datafusion::datasource::source_as_provider(&dml.target).ok()?;
    let any: &dyn Any = source.as_ref();
    any.downcast_ref::<WeirTable>().map(|t| t.id)
}
