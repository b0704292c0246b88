//! Streaming DDL: from a `CREATE SOURCE` or `CREATE MATERIALIZED VIEW` statement to a catalog
//! entry and a running part of the dataflow, and back on restart.
//!
//! * A source is validated by building its connector, stored in the catalog with its columns,
//!   and given a reader (`coordinator::Coordinator::add_source`). Its `created_at` is passed to
//!   the connector so that generators replay the same events after a restart.
//! * A view's query has its window functions rewritten (weir-sql), is planned and type-checked
//!   by DataFusion, compiled by the streaming planner and started; `CREATE` returns once the
//!   view's first epoch (its backfill) is published.
//! * [`start_all`] re-creates every input and view from the catalog in id order (inputs before
//!   the views that read them) when the server starts. Until checkpoints exist, views are rebuilt
//!   from their inputs: tables from their rows, generators by replaying from the start.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::{DFSchema, TableReference};
use datafusion::prelude::SessionContext;
use sqlparser::ast;
use weir_catalog::{CatalogObject, NewObject, ObjectId, ObjectKind};
use weir_sql::streaming::{InputKind, InputResolver, ResolvedInput, StreamPlan};
use weir_connectors::{MetadataColumn, SourceFormat, SourceSpec};
use weir_sql::{CreateMaterializedView, CreateSource, Statement};

use crate::coordinator::NewView;
use crate::database::{DEFAULT_SCHEMA, Database, catalog_columns, table_schema};
use crate::dataflow::dead_letter::LateEvents;
pub use crate::dataflow::job::Contents;
use crate::dataflow::watermark::{WatermarkSpec, WatermarkTracker};
use crate::error::{Result, SqlState, WeirError};
use crate::session::{ident, object_name, pg_type_for_sql};

/// Default of `watermark.idle_timeout`.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Options that the engine, not the connector, interprets.
fn engine_option(key: &str) -> bool {
    key.starts_with("watermark.")
}

pub fn options_map(options: &[weir_sql::WithOption]) -> BTreeMap<String, String> {
    options.iter().map(|o| (o.key.to_ascii_lowercase(), o.value_string())).collect()
}

/// Parses a duration option: `'5s'`, `'500ms'`, `'2 minutes'`, or a number of seconds.
pub fn parse_duration(option: &str, value: &str) -> Result<Duration> {
    let v = value.trim().to_ascii_lowercase();
    let split = v.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(v.len());
    let (number, unit) = v.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad_option(option, value, "expected a duration such as '5s'"))?;
    let seconds = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => number,
        "ms" | "millisecond" | "milliseconds" => number / 1000.0,
        "us" | "microsecond" | "microseconds" => number / 1e6,
        "m" | "min" | "mins" | "minute" | "minutes" => number * 60.0,
        "h" | "hour" | "hours" => number * 3600.0,
        "d" | "day" | "days" => number * 86400.0,
        _ => return Err(bad_option(option, value, "expected a duration such as '5s'")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

fn bad_option(option: &str, value: &str, reason: &str) -> WeirError {
    WeirError::new(SqlState::InvalidParameterValue, format!("invalid value \"{value}\" for option \"{option}\": {reason}"))
}

/// The Arrow schema of a source: its declared columns (or the connector's default ones), then
/// its `INCLUDE`d metadata columns, which the last part of the result names.
async fn source_schema(
    stmt: &CreateSource,
    connector: &str,
    options: &BTreeMap<String, String>,
    format: Option<&SourceFormat>,
) -> Result<(Vec<weir_catalog::Column>, SchemaRef, Vec<(usize, MetadataColumn)>)> {
    let mut columns = Vec::with_capacity(stmt.columns.len());
    for c in &stmt.columns {
        let name = ident(&c.name);
        if columns.iter().any(|x: &weir_catalog::Column| x.name == name) {
            return Err(WeirError::new(SqlState::DuplicateObject, format!("column \"{name}\" specified more than once")));
        }
        columns.push(weir_catalog::Column { name, type_name: pg_type_for_sql(&c.data_type)?, nullable: true });
    }
    if columns.is_empty()
        && let Some(schema) =
            weir_connectors::payload::declared_columns(format, weir_connectors::payload::default_subject(options)).await?
    {
        // The format's schema (a registry subject's newest, or an inline one) gives them.
        columns = catalog_columns(&schema)?;
    }
    if columns.is_empty() {
        let Some(schema) = weir_connectors::default_schema(connector, options) else {
            // A missing or bad connector option (nexmark.table.type) explains more than the
            // missing columns do: let the connector speak first.
            weir_connectors::create_source(SourceSpec {
                name: &object_name(&stmt.name)?.1,
                connector,
                schema: Arc::new(Schema::empty()),
                options,
                format,
                metadata: &[],
                created_at_micros: 0,
            })
            .await?;
            return Err(WeirError::new(SqlState::SyntaxError, "a source needs a column list")
                .with_hint("Declare the columns: CREATE SOURCE name (col type, ...) WITH (...)."));
        };
        columns = catalog_columns(&schema)?;
    }
    let mut metadata = Vec::new();
    for (what, alias) in &stmt.include {
        let column = MetadataColumn::parse(&what.value).ok_or_else(|| {
            WeirError::new(SqlState::SyntaxError, format!("cannot INCLUDE \"{}\"", what.value))
                .with_hint("A source can INCLUDE key, partition, offset or timestamp.")
        })?;
        if metadata.iter().any(|(_, m)| *m == column) {
            return Err(WeirError::new(SqlState::DuplicateObject, format!("INCLUDE {} given more than once", column.name())));
        }
        let name = alias.as_ref().map(ident).unwrap_or_else(|| column.default_column_name(connector));
        if columns.iter().any(|c| c.name == name) {
            return Err(WeirError::new(SqlState::DuplicateObject, format!("column \"{name}\" specified more than once")));
        }
        let type_name = crate::database::pg_type_name(&column.data_type())
            .ok_or_else(|| WeirError::internal(format!("no type for INCLUDE {}", column.name())))?;
        metadata.push((columns.len(), column));
        columns.push(weir_catalog::Column { name, type_name, nullable: true });
    }
    let schema = Arc::new(table_schema(&columns)?);
    Ok((columns, schema, metadata))
}

/// The watermark rule of a source or table, from its definition.
pub fn watermark_tracker(
    ctx: &SessionContext,
    watermark: Option<&weir_sql::Watermark>,
    schema: &SchemaRef,
    options: &BTreeMap<String, String>,
    partitions: usize,
) -> Result<WatermarkTracker> {
    let Some(w) = watermark else { return Ok(WatermarkTracker::new(None, partitions)) };
    let column_name = ident(&w.column);
    let column = schema.index_of(&column_name).map_err(|_| {
        WeirError::new(SqlState::UndefinedColumn, format!("column \"{column_name}\" named in WATERMARK does not exist"))
    })?;
    if !matches!(schema.field(column).data_type(), datafusion::arrow::datatypes::DataType::Timestamp(..)) {
        return Err(WeirError::new(
            SqlState::DatatypeMismatch,
            format!("the WATERMARK column \"{column_name}\" must be a timestamp"),
        ));
    }
    let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
    let state = ctx.state();
    let expr = state.create_logical_expr(&w.expr.to_string(), &df_schema)?;
    let fixed_delay = fixed_delay_micros(&expr, &column_name);
    let physical = state.create_physical_expr(expr, &df_schema)?;
    if !matches!(physical.data_type(schema)?, datafusion::arrow::datatypes::DataType::Timestamp(..)) {
        return Err(WeirError::new(SqlState::DatatypeMismatch, "a WATERMARK expression must give a timestamp"));
    }
    let idle = match options.get("watermark.idle_timeout") {
        Some(v) => parse_duration("watermark.idle_timeout", v)?,
        None => DEFAULT_IDLE_TIMEOUT,
    };
    let spec = WatermarkSpec { column, expr: physical, fixed_delay, idle_timeout: (!idle.is_zero()).then_some(idle) };
    Ok(WatermarkTracker::new(Some(spec), partitions))
}

/// The delay of a watermark expression `column - INTERVAL '...'` whose interval has no months
/// (a fixed number of microseconds), or `column` alone (no delay).
pub fn fixed_delay_micros(expr: &datafusion::logical_expr::Expr, column: &str) -> Option<i64> {
    use datafusion::common::ScalarValue;
    use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
    let is_column = |e: &Expr| matches!(e, Expr::Column(c) if c.name == column);
    if is_column(expr) {
        return Some(0);
    }
    let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Minus, right }) = expr else { return None };
    if !is_column(left) {
        return None;
    }
    let Expr::Literal(value, _) = right.as_ref() else { return None };
    match value {
        // Whole microseconds only: the fast path must equal the expression exactly.
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.nanoseconds % 1000 == 0 => weir_sql::streaming::window::interval_micros(i),
        ScalarValue::IntervalDayTime(Some(i)) => (i.days as i64).checked_mul(86_400_000_000)?.checked_add(i.milliseconds as i64 * 1000),
        _ => None,
    }
}

/// `watermark.late_events`: 'drop' (the default) or 'dead_letter'.
fn late_events(options: &BTreeMap<String, String>) -> Result<LateEvents> {
    match options.get("watermark.late_events").map(|v| v.to_ascii_lowercase()).as_deref() {
        None | Some("drop") => Ok(LateEvents::Drop),
        Some("dead_letter") => Ok(LateEvents::DeadLetter),
        Some(_) => Err(bad_option(
            "watermark.late_events",
            options.get("watermark.late_events").map(String::as_str).unwrap_or_default(),
            "expected 'drop' or 'dead_letter'",
        )),
    }
}

fn validate_engine_options(options: &BTreeMap<String, String>) -> Result<()> {
    for (k, v) in options {
        match k.as_str() {
            "watermark.idle_timeout" => {
                parse_duration(k, v)?;
            }
            "watermark.late_events" => {
                late_events(options)?;
            }
            k if engine_option(k) => return Err(bad_option(k, v, "unknown option")),
            _ => {}
        }
    }
    Ok(())
}

/// A source's `FORMAT ... ENCODE ...` clause for its connector.
fn source_format(stmt: &CreateSource) -> Option<SourceFormat> {
    stmt.format.as_ref().map(|f| SourceFormat {
        format: f.format.value.clone(),
        encode: f.encode.value.clone(),
        options: options_map(&f.options),
        json_columns: Vec::new(),
    })
}

/// Builds a source's connector and watermark rule from its stored definition.
async fn instantiate_source(
    ctx: &SessionContext,
    stmt: &CreateSource,
    created_at_micros: i64,
) -> Result<(Vec<weir_catalog::Column>, Box<dyn weir_connectors::Source>, WatermarkTracker)> {
    let options = options_map(&stmt.with);
    let connector = options.get("connector").cloned().ok_or_else(|| {
        WeirError::new(SqlState::InvalidParameterValue, "a source needs a connector")
            .with_hint("Add WITH (connector = 'datagen' | 'nexmark' | 'file', ...).")
    })?;
    validate_engine_options(&options)?;
    let mut format = source_format(stmt);
    let (columns, schema, metadata) = source_schema(stmt, &connector, &options, format.as_ref()).await?;
    if let Some(f) = &mut format {
        f.json_columns =
            columns.iter().filter(|c| matches!(c.type_name.as_str(), "json" | "jsonb")).map(|c| c.name.clone()).collect();
    }
    let source =
        weir_connectors::create_source(SourceSpec {
        name: &object_name(&stmt.name)?.1,
        connector: &connector,
        schema: schema.clone(),
        options: &options,
        format: format.as_ref(),
        metadata: &metadata,
        created_at_micros,
    })
    .await?;
    let mut tracker = watermark_tracker(ctx, stmt.watermark.as_ref(), &schema, &options, source.partitions())?;
    if source.partitions_in_sequence() {
        tracker.start_partitions_when_read();
    }
    Ok((columns, source, tracker))
}

pub async fn create_source(db: &Arc<Database>, ctx: &SessionContext, stmt: &CreateSource, owner: &str) -> Result<()> {
    let (schema_name, name) = object_name(&stmt.name)?;
    let _ddl = db.ddl_lock.lock().await;
    if stmt.if_not_exists && db.read_catalog().find(ObjectKind::Source, &schema_name, &name).is_some() {
        return Ok(());
    }
    // Validate everything before anything is stored.
    let now = chrono::Utc::now().timestamp_micros();
    let (columns, _, _) = instantiate_source(ctx, stmt, now).await?;
    let mut stored = stmt.clone();
    if stored.columns.is_empty() && source_format(stmt).is_some_and(|f| weir_connectors::payload::has_writer_schema(&f)) {
        // Columns from a registry are fixed when the source is made: a newer schema version
        // later must not change them under the views (nor a restart re-read them).
        stored.columns = column_defs(&columns[..columns.len() - stmt.include.len()])?;
    }
    let object = db.write_catalog().create(NewObject {
        kind: ObjectKind::Source,
        schema: schema_name,
        name,
        owner: owner.to_string(),
        definition: Statement::CreateSource(Box::new(stored)).to_string(),
        columns,
        primary_key: vec![],
        depends_on: vec![],
    })?;
    if let Err(e) = start_source(db, ctx, &object).await {
        let _ = db.write_catalog().drop_object(object.id, false);
        return Err(e);
    }
    Ok(())
}

/// Column definitions as SQL would declare them.
fn column_defs(columns: &[weir_catalog::Column]) -> Result<Vec<ast::ColumnDef>> {
    let list: Vec<String> =
        columns.iter().map(|c| format!("\"{}\" {}", c.name.replace('"', "\"\""), c.type_name)).collect();
    let sql = format!("CREATE SOURCE s ({}) WITH (connector = 'none')", list.join(", "));
    match weir_sql::parse(&sql)?.pop().map(|p| p.statement) {
        Some(Statement::CreateSource(s)) => Ok(s.columns),
        _ => Err(WeirError::internal(format!("cannot write the columns {list:?} as SQL"))),
    }
}

async fn start_source(db: &Arc<Database>, ctx: &SessionContext, object: &CatalogObject) -> Result<()> {
    let stmt = match weir_sql::parse(&object.definition)?.pop().map(|p| p.statement) {
        Some(Statement::CreateSource(s)) => s,
        _ => return Err(WeirError::internal(format!("stored definition of source {} is not CREATE SOURCE", object.name))),
    };
    let (_, source, tracker) = instantiate_source(ctx, &stmt, object.created_at_micros).await?;
    let late = late_events(&options_map(&stmt.with))?;
    db.coordinator.add_source(object.id, &object.name, source, tracker, late);
    Ok(())
}

/// The watermark rule of a table (`CREATE TABLE ... WATERMARK FOR`): like a source's, with one
/// partition that never goes idle (a table's watermark moves only with its rows).
pub fn table_watermark_tracker(
    ctx: &SessionContext,
    watermark: Option<&weir_sql::Watermark>,
    schema: &SchemaRef,
) -> Result<WatermarkTracker> {
    let options = BTreeMap::from([("watermark.idle_timeout".to_string(), "0".to_string())]);
    watermark_tracker(ctx, watermark, schema, &options, 1)
}

/// The streaming clauses of a table's stored definition.
fn table_clauses(definition: &str) -> Option<weir_sql::CreateStreamingTable> {
    match weir_sql::parse(definition).ok()?.pop()?.statement {
        Statement::CreateStreamingTable(t) => Some(*t),
        _ => None,
    }
}

/// The `WATERMARK FOR` a source or table declares, with the index of its column.
pub fn declared_watermark(object: &CatalogObject) -> Option<(usize, weir_sql::Watermark)> {
    let watermark = match weir_sql::parse(&object.definition).ok()?.pop()?.statement {
        Statement::CreateSource(s) => s.watermark?,
        Statement::CreateStreamingTable(t) => t.watermark?,
        _ => return None,
    };
    let column = object.columns.iter().position(|c| c.name == ident(&watermark.column))?;
    Some((column, watermark))
}

pub fn is_append_only_table(db: &Database, table: ObjectId) -> bool {
    let definition = db.read_catalog().get(table).map(|o| o.definition.clone());
    definition.and_then(|d| table_clauses(&d)).is_some_and(|t| t.append_only)
}

/// Answers the streaming planner's questions about the relations a view reads.
struct CatalogResolver<'a> {
    db: &'a Database,
}

impl InputResolver for CatalogResolver<'_> {
    fn resolve(&self, table: &TableReference) -> Option<ResolvedInput> {
        if table.schema().is_some_and(|s| s != DEFAULT_SCHEMA) {
            return None;
        }
        let catalog = self.db.read_catalog();
        let object = catalog.objects().find(|o| o.kind.is_relation() && o.schema == DEFAULT_SCHEMA && o.name == table.table())?;
        // A row with event time t is late once the watermark passes t.
        let watermarked = || {
            let mut close_offsets = vec![None; object.columns.len()];
            if let Some((column, _)) = declared_watermark(object) {
                close_offsets[column] = Some(1);
            }
            close_offsets
        };
        match object.kind {
            ObjectKind::Table => Some(ResolvedInput {
                id: object.id,
                kind: InputKind::Table,
                name: object.name.clone(),
                close_offsets: watermarked(),
                append_only: table_clauses(&object.definition).is_some_and(|t| t.append_only),
            }),
            ObjectKind::Source => Some(ResolvedInput {
                id: object.id,
                kind: InputKind::Source,
                name: object.name.clone(),
                close_offsets: watermarked(),
                append_only: true,
            }),
            ObjectKind::MaterializedView => {
                let shape = self.db.coordinator.view_shape(object.id)?;
                Some(ResolvedInput {
                    id: object.id,
                    kind: InputKind::MaterializedView,
                    name: object.name.clone(),
                    close_offsets: shape.close_offsets,
                    append_only: shape.append_only,
                })
            }
            _ => None,
        }
    }
}

/// What downstream views need to know about a view's output.
#[derive(Debug, Clone)]
pub struct ViewShape {
    pub close_offsets: Vec<Option<i64>>,
    pub append_only: bool,
}

/// Plans a view: window rewrite, DataFusion planning and analysis, streaming planning.
/// Returns the plan and the view's schema with Postgres-style column names.
pub async fn plan_view(db: &Database, ctx: &SessionContext, stmt: &CreateMaterializedView) -> Result<(StreamPlan, SchemaRef)> {
    let mut query = stmt.query.as_ref().clone();
    weir_sql::streaming::rewrite_windows(&mut query)?;
    crate::pg_rewrite::rewrite_field_access(&mut query);
    let state = ctx.state();
    let plan = state
        .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(ast::Statement::Query(Box::new(query)))))
        .await?;
    let plan = state.analyzer().execute_and_check(plan, state.config_options(), |_, _| {})?;
    let resolver = CatalogResolver { db };
    let stream_plan = weir_sql::streaming::plan_stream(&plan, &resolver, stmt.emit_on_window_close)?;
    // A view (or a sink's or SUBSCRIBE's query) reads its inputs with its creator's rights.
    crate::roles::check_context_reads(db, ctx, stream_plan.inputs().iter().map(|i| i.id))?;
    // Postgres names unaliased expressions by their function or column (`count`, not
    // `count(*)`); a view stores those names.
    let names = crate::pg_compat::output_column_names(&stmt.query);
    let root = crate::dataflow::operators::arrow_schema(&stream_plan.root().schema);
    let mut fields = Vec::with_capacity(root.fields().len());
    for (i, f) in root.fields().iter().enumerate() {
        let name = names.as_ref().and_then(|n| n.get(i).cloned()).unwrap_or_else(|| f.name().clone());
        if fields.iter().any(|x: &datafusion::arrow::datatypes::Field| x.name() == &name) {
            return Err(WeirError::new(SqlState::DuplicateObject, format!("column \"{name}\" specified more than once"))
                .with_hint("Give the columns distinct names with AS."));
        }
        fields.push(f.as_ref().clone().with_name(name));
    }
    Ok((stream_plan, Arc::new(Schema::new(fields))))
}

pub async fn create_materialized_view(
    db: &Arc<Database>,
    ctx: &SessionContext,
    stmt: &CreateMaterializedView,
    owner: &str,
) -> Result<()> {
    let (schema_name, name) = object_name(&stmt.name)?;
    {
        let _ddl = db.ddl_lock.lock().await;
        if stmt.if_not_exists && db.read_catalog().find(ObjectKind::MaterializedView, &schema_name, &name).is_some() {
            return Ok(());
        }
        let retention = view_retention(&stmt.with)?;
        let (plan, schema) = plan_view(db, ctx, stmt).await?;
        if retention.is_some() && plan.root().close_offsets.iter().all(Option::is_none) {
            return Err(crate::coordinator::retention_needs_a_window());
        }
        let columns = catalog_columns(&schema)?;
        let depends_on: Vec<ObjectId> = plan.inputs().iter().map(|i| i.id).collect();
        let object = db.write_catalog().create(NewObject {
            kind: ObjectKind::MaterializedView,
            schema: schema_name,
            name,
            owner: owner.to_string(),
            definition: Statement::CreateMaterializedView(Box::new(stmt.clone())).to_string(),
            columns,
            primary_key: vec![],
            depends_on,
        })?;
        if let Err(e) = start_materialized_view(db, object.id, &plan, schema, retention) {
            let _ = db.write_catalog().drop_object(object.id, false);
            return Err(e);
        }
    }
    // Return once the backfill is visible, as RisingWave's CREATE MATERIALIZED VIEW does.
    db.coordinator.flush().await
}

/// Starts a view job: a materialized view's (`Contents::Kept`), or the one reader's own job of a
/// sink or a subscription (`Contents::UntilSubscribed`).
pub fn start_view(db: &Arc<Database>, id: ObjectId, plan: &StreamPlan, schema: SchemaRef, contents: Contents) -> Result<()> {
    let root = plan.root();
    let shape = ViewShape { close_offsets: root.close_offsets.clone(), append_only: root.append_only };
    db.coordinator.create_view(NewView { id, plan, schema, shape, contents, retention_micros: None }, &db.storage)
}

/// Starts a materialized view's job, with its retention policy (microseconds) if it has one.
fn start_materialized_view(db: &Arc<Database>, id: ObjectId, plan: &StreamPlan, schema: SchemaRef, retention: Option<i64>) -> Result<()> {
    let root = plan.root();
    let shape = ViewShape { close_offsets: root.close_offsets.clone(), append_only: root.append_only };
    db.coordinator.create_view(NewView { id, plan, schema, shape, contents: Contents::Kept, retention_micros: retention }, &db.storage)
}

/// A view's `WITH` options: only `retention` (a duration) is known. Microseconds.
fn view_retention(options: &[weir_sql::WithOption]) -> Result<Option<i64>> {
    let mut retention = None;
    for o in options {
        if !o.key.eq_ignore_ascii_case("retention") {
            return Err(WeirError::new(SqlState::InvalidParameterValue, format!("unknown materialized view option \"{}\"", o.key))
                .with_hint("Materialized views take WITH (retention = '7 days')."));
        }
        let duration = parse_duration("retention", &o.value_string())?;
        retention = Some(i64::try_from(duration.as_micros()).unwrap_or(i64::MAX));
    }
    Ok(retention)
}

/// `ALTER MATERIALIZED VIEW v SET (retention = '...')`: stored in the view's definition (so a
/// restart keeps it) and applied to the running view at once.
pub async fn alter_materialized_view(db: &Arc<Database>, name: &weir_sql::sqlparser::ast::ObjectName, options: &[weir_sql::WithOption]) -> Result<()> {
    let (schema_name, view_name) = object_name(name)?;
    let _ddl = db.ddl_lock.lock().await;
    let retention = view_retention(options)?.ok_or_else(|| {
        WeirError::new(SqlState::SyntaxError, "ALTER MATERIALIZED VIEW ... SET needs an option").with_hint("SET (retention = '7 days')")
    })?;
    let object = db.read_catalog().find(ObjectKind::MaterializedView, &schema_name, &view_name).cloned().ok_or_else(|| {
        WeirError::new(SqlState::UndefinedTable, format!("materialized view \"{view_name}\" does not exist"))
    })?;
    let mut stmt = match weir_sql::parse(&object.definition)?.pop().map(|p| p.statement) {
        Some(Statement::CreateMaterializedView(s)) => s,
        _ => return Err(WeirError::internal(format!("stored definition of {view_name} does not parse"))),
    };
    // The running view first (it refuses a view without a window column), then the catalog.
    let previous = db.coordinator.set_retention(object.id, retention)?;
    stmt.with.retain(|o| !o.key.eq_ignore_ascii_case("retention"));
    stmt.with.extend(options.iter().cloned());
    if let Err(e) = db.write_catalog().set_definition(object.id, Statement::CreateMaterializedView(stmt).to_string()) {
        // Not stored: the running view goes back to what the catalog says.
        let _ = db.coordinator.set_retention(object.id, previous);
        return Err(e.into());
    }
    Ok(())
}

pub async fn explain_materialized_view(db: &Arc<Database>, ctx: &SessionContext, stmt: &CreateMaterializedView) -> Result<String> {
    let (plan, _) = plan_view(db, ctx, stmt).await?;
    Ok(plan.to_string())
}

/// Starts every table feed, source reader and view job from the catalog (server start).
pub async fn start_all(db: &Arc<Database>) -> Result<()> {
    let ctx = SessionContext::new_with_state(db.base_context().state());
    let mut objects: Vec<CatalogObject> = db.read_catalog().objects().cloned().collect();
    objects.sort_by_key(|o| o.id);
    for object in objects {
        match object.kind {
            ObjectKind::Table => {
                let watermark = declared_watermark(&object).map(|(_, w)| w);
                let schema = Arc::new(table_schema(&object.columns)?);
                let tracker = table_watermark_tracker(&ctx, watermark.as_ref(), &schema)?;
                db.coordinator.add_table(object.id, tracker, &db.storage);
            }
            ObjectKind::Source => start_source(db, &ctx, &object).await?,
            ObjectKind::MaterializedView => {
                let stmt = match weir_sql::parse(&object.definition)?.pop().map(|p| p.statement) {
                    Some(Statement::CreateMaterializedView(s)) => s,
                    _ => return Err(WeirError::internal(format!("stored definition of {} does not parse", object.name))),
                };
                let (plan, schema) = plan_view(db, &ctx, &stmt).await?;
                start_materialized_view(db, object.id, &plan, schema, view_retention(&stmt.with)?)?;
            }
            ObjectKind::Sink => crate::sinks::start_sink(db, &ctx, &object).await?,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::datatypes::{DataType, Field, TimeUnit};

    use super::*;

    #[test]
    fn watermark_delays_of_fixed_intervals_are_recognised() {
        let ctx = SessionContext::new();
        let schema = DFSchema::try_from(Schema::new(vec![
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("other", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]))
        .unwrap();
        let delay = |sql: &str| fixed_delay_micros(&ctx.state().create_logical_expr(sql, &schema).unwrap(), "ts");
        assert_eq!(delay("ts - INTERVAL '5' SECOND"), Some(5_000_000));
        assert_eq!(delay("ts - INTERVAL '1 day 250 milliseconds'"), Some(86_400_250_000));
        assert_eq!(delay("ts"), Some(0));
        assert_eq!(delay("ts - INTERVAL '1' MONTH"), None, "months have no fixed length");
        assert_eq!(delay("ts + INTERVAL '1' SECOND"), None);
        assert_eq!(delay("other - INTERVAL '1' SECOND"), None);
    }
}
