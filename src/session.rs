//! One client session: statement dispatch, transactions, settings.
//!
//! The pgwire layer hands each parsed statement to [`Session::execute`] and turns the
//! [`Outcome`] into protocol messages. Everything that is not about the wire lives here:
//!
//! * **Transactions** follow Postgres. Outside a block every statement commits on its own. Inside
//!   `BEGIN ... COMMIT` a session writes to private copies of the tables it touches (so it reads
//!   its own writes) and records the changes; `COMMIT` validates and applies them to the shared
//!   storage in one durable WAL commit, `ROLLBACK` drops them. An error inside a block moves it to
//!   the failed state, where everything but `ROLLBACK`/`COMMIT` fails with 25P02. DDL is not
//!   transactional: it commits immediately even inside a block (a documented difference).
//! * **Reads** see one committed version of every table (a snapshot taken per statement) plus,
//!   inside a block, the session's own writes.
//! * **DML** is planned by DataFusion (which resolves columns, casts values to the column types
//!   and binds `$n` parameters) and executed here: an INSERT's input rows are inserted, a
//!   DELETE's input rows (the matching rows) are retracted, an UPDATE retracts the matching rows
//!   and inserts their new versions. These signed row batches are the same "changes" the
//!   streaming engine will consume.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{LogicalPlan, WriteOp};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use pgwire::api::results::Tag;
use sqlparser::ast::{self, ObjectName, ObjectType};
use weir_catalog::{NewObject, ObjectId, ObjectKind as CatalogKind};
use weir_sql::{ObjectKind, ParsedStatement, Statement};

use crate::copy::{CopyFormat, CopyIn};
use crate::database::{
    DEFAULT_SCHEMA, Database, StatementSnapshot, dml_target_table,
};
use crate::error::{Result, SqlState, WeirError};
use crate::settings::Settings;
use crate::storage::{ChangeStore, Snapshot, TableChange, TableData};

/// What a statement produced, for the wire layer to send.
pub enum Outcome {
    /// Rows to stream; `tag` is the command tag (`SELECT`, `SHOW`, `EXPLAIN`).
    Rows { schema: SchemaRef, stream: SendableRecordBatchStream, tag: &'static str },
    /// A command without rows: `INSERT 0 3`, `CREATE TABLE`, ...
    Command(Tag),
    /// `BEGIN` (also when already in a block: Postgres warns and carries on).
    TransactionStart,
    /// `COMMIT` or `ROLLBACK`; the tag says which actually happened.
    TransactionEnd(&'static str),
    /// `COPY ... FROM STDIN`: the client now sends CopyData.
    CopyIn { columns: usize, format: CopyFormat },
    /// `COPY ... TO STDOUT`: rows already encoded, one CopyData message per row.
    CopyOut { columns: usize, format: CopyFormat, rows: Vec<Vec<u8>> },
    /// `COPY (SUBSCRIBE ...) TO STDOUT`: encoded rows as they come, a batch at a time, until
    /// the client cancels or the subscription fails.
    CopyOutStream { columns: usize, format: CopyFormat, rows: futures::stream::BoxStream<'static, Result<Vec<Vec<u8>>>> },
    /// A `SET` whose new value must be reported to the client as ParameterStatus.
    SetReported { name: String, value: String },
}

/// A statement prepared by the extended protocol: parsed, and for queries and DML also planned
/// (so that Describe can report parameter and result types).
#[derive(Clone, Debug)]
pub struct Prepared {
    pub parsed: ParsedStatement,
    pub plan: Option<LogicalPlan>,
    /// The catalog version the plan was made against; a DDL since then means re-planning.
    pub catalog_version: u64,
    /// The columns of a statement that returns rows without a plan but with a schema known
    /// only to the session: a FETCH gives its cursor's columns (Describe answers with them).
    pub result_schema: Option<SchemaRef>,
}

#[derive(Default)]
struct Transaction {
    changes: Vec<TableChange>,
    /// The session's private versions of the tables it wrote.
    working: Snapshot,
    savepoints: Vec<(String, usize, Snapshot)>,
    /// A block opened implicitly for a multi-statement simple query.
    implicit: bool,
}

enum TxnState {
    Idle,
    Open(Transaction),
    Failed,
}

pub struct Session {
    db: Arc<Database>,
    pub settings: Settings,
    pub backend_pid: i32,
    pub user: String,
    txn: TxnState,
    /// An active `COPY ... FROM STDIN`.
    pub copy_in: Option<CopyIn>,
    /// Cursors of the transaction block (`DECLARE ... CURSOR FOR SUBSCRIBE`), closed with it.
    cursors: HashMap<String, crate::subscribe::SubscribeCursor>,
}

impl Session {
    pub fn new(db: Arc<Database>, backend_pid: i32, user: String) -> Self {
        Session { db, settings: Settings::default(), backend_pid, user, txn: TxnState::Idle, copy_in: None, cursors: HashMap::new() }
    }

    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    pub fn in_block(&self) -> bool {
        matches!(self.txn, TxnState::Open(Transaction { implicit: false, .. }) | TxnState::Failed)
    }

    pub fn is_failed(&self) -> bool {
        matches!(self.txn, TxnState::Failed)
    }

    /// Called when a statement fails (or is canceled): an explicit block becomes failed, an
    /// implicit one is rolled back.
    pub fn on_error(&mut self) {
        match &self.txn {
            TxnState::Open(t) if t.implicit => self.txn = TxnState::Idle,
            TxnState::Open(_) => self.txn = TxnState::Failed,
            _ => {}
        }
    }

    /// Opens an implicit block around the statements of one multi-statement simple query, so
    /// that they commit together, as Postgres does.
    pub fn begin_implicit(&mut self) {
        if matches!(self.txn, TxnState::Idle) {
            self.txn = TxnState::Open(Transaction { implicit: true, ..Default::default() });
        }
    }

    /// Ends the implicit block opened by [`Session::begin_implicit`], committing it.
    pub async fn end_implicit(&mut self) -> Result<()> {
        if let TxnState::Open(t) = &self.txn
            && t.implicit
        {
            let TxnState::Open(t) = std::mem::replace(&mut self.txn, TxnState::Idle) else {
                return Ok(());
            };
            self.commit_changes(t.changes).await?;
        }
        Ok(())
    }

    /// Parses and, where DataFusion can, plans a statement for the extended protocol.
    pub async fn prepare(&self, parsed: ParsedStatement) -> Result<Prepared> {
        let catalog_version = self.db.read_catalog().version();
        let plan = match self.plannable(&parsed) {
            Some(stmt) => Some(self.plan(&self.statement_context(), stmt).await?),
            None => None,
        };
        let result_schema = match &parsed.statement {
            Statement::Fetch { cursor, .. } => self.cursors.get(&cursor.value).map(|c| c.schema()),
            _ => None,
        };
        Ok(Prepared { parsed, plan, catalog_version, result_schema })
    }

    /// The sqlparser statement to give DataFusion, for statements DataFusion plans (queries,
    /// EXPLAIN and DML), after datafusion-postgres's Postgres compatibility rewrites.
    fn plannable(&self, parsed: &ParsedStatement) -> Option<ast::Statement> {
        let Statement::Standard(stmt) = &parsed.statement else { return None };
        match stmt.as_ref() {
            ast::Statement::Query(_)
            | ast::Statement::Explain { .. }
            | ast::Statement::Insert(_)
            | ast::Statement::Update(_)
            | ast::Statement::Delete(_) => {}
            _ => return None,
        }
        let compat = &self.db.compat;
        let mut stmt = match compat.parse(&parsed.text) {
            Ok(mut v) if v.len() == 1 => v.remove(0),
            _ => compat.rewrite(stmt.as_ref().clone()),
        };
        crate::pg_rewrite::aggregate_scalar_subqueries(&mut stmt);
        crate::pg_rewrite::rewrite_text_casts(&mut stmt);
        crate::pg_rewrite::rewrite_generate_subscripts(&mut stmt);
        crate::pg_rewrite::rewrite_field_access(&mut stmt);
        Some(stmt)
    }

    async fn plan(&self, ctx: &SessionContext, stmt: ast::Statement) -> Result<LogicalPlan> {
        let state = ctx.state();
        let plan = state
            .statement_to_plan(datafusion::sql::parser::Statement::Statement(Box::new(stmt)))
            .await?;
        crate::roles::check_plan(&self.db, &self.user, &plan)?;
        Ok(plan)
    }

    /// A DataFusion context for one statement: the shared catalogs, this session's settings
    /// and functions, and the table versions the statement reads.
    fn statement_context(&self) -> SessionContext {
        let base = self.db.base_context();
        let mut tables = self.db.snapshot();
        if let TxnState::Open(t) = &self.txn {
            for (id, data) in &t.working {
                tables.insert(*id, data.clone());
            }
        }
        let mut config = base.copied_config();
        config.options_mut().execution.time_zone = Some(self.settings.time_zone());
        let views = self.db.coordinator.published();
        let config = config
            .with_extension(Arc::new(StatementSnapshot { tables, views }))
            .with_extension(Arc::new(crate::roles::StatementUser(self.user.clone())));
        let mut builder = SessionStateBuilder::new_from_existing(base.state()).with_config(config);
        if let Some(runtime) = self.statement_runtime() {
            builder = builder.with_runtime_env(runtime);
        }
        let mut state = builder.build();
        crate::pg_compat::register_session_functions(&mut state, &self.settings, self.backend_pid);
        let trust = self.db.config.auth_method() == crate::auth::AuthMethod::Trust;
        crate::pg_compat::register_privilege_functions(&mut state, self.db.catalog.clone(), self.user.clone(), trust);
        SessionContext::new_with_state(state)
    }

    /// The statement's own memory pool of `query_memory_limit_mb` (None: unlimited, or the
    /// runtime could not be built, which only loses the limit). Operators that can spill
    /// (sorts, hash aggregates) spill to disk at the limit; others fail with 53200.
    fn statement_runtime(&self) -> Option<Arc<datafusion::execution::runtime_env::RuntimeEnv>> {
        use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
        let limit = self.db.config.query_memory_limit_mb.checked_mul(1 << 20).filter(|l| *l > 0)?;
        // The three largest consumers are named in the error, which says where the memory went.
        let pool = TrackConsumersPool::new(GreedyMemoryPool::new(limit as usize), std::num::NonZeroUsize::new(3)?);
        datafusion::execution::runtime_env::RuntimeEnvBuilder::from_runtime_env(&self.db.base_context().runtime_env())
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .inspect_err(|e| tracing::warn!(error = %e, "no memory limit for this statement"))
            .ok()
    }

    /// Executes a prepared statement with bound parameters (extended protocol).
    pub async fn execute_prepared(&mut self, prepared: &Prepared, params: &ParamValues) -> Result<Outcome> {
        self.check_not_failed(&prepared.parsed.statement)?;
        let Some(plan) = &prepared.plan else {
            return self.execute(&prepared.parsed).await;
        };
        let plan = if prepared.catalog_version != self.db.read_catalog().version() {
            // Tables were created or dropped since Parse: plan again against the catalog now.
            match self.plannable(&prepared.parsed) {
                Some(stmt) => self.plan(&self.statement_context(), stmt).await?,
                None => plan.clone(),
            }
        } else {
            plan.clone()
        };
        let plan = plan.replace_params_with_values(params)?;
        let outcome = self.run_plan(plan).await?;
        Ok(rename_outcome(outcome, &prepared.parsed))
    }

    fn check_not_failed(&self, statement: &Statement) -> Result<()> {
        if self.is_failed() {
            let ends_block = matches!(
                statement,
                Statement::Standard(s) if matches!(s.as_ref(),
                    ast::Statement::Commit { .. } | ast::Statement::Rollback { .. })
            );
            if !ends_block {
                return Err(WeirError::in_failed_transaction());
            }
        }
        Ok(())
    }

    /// Executes one statement (simple protocol, or extended without parameters).
    pub async fn execute(&mut self, parsed: &ParsedStatement) -> Result<Outcome> {
        self.check_not_failed(&parsed.statement)?;
        match &parsed.statement {
            Statement::Standard(stmt) => self.execute_standard(parsed, stmt).await,
            Statement::Flush => {
                self.db.coordinator.flush().await?;
                Ok(Outcome::Command(Tag::new("FLUSH")))
            }
            Statement::ShowObjects(kind) => self.show_objects(*kind),
            Statement::ShowCreate { kind, name } => self.show_create(*kind, name),
            Statement::CreateStreamingTable(t) => {
                self.create_table(&t.table, t.watermark.as_ref(), parsed.statement.to_string()).await
            }
            Statement::CreateSource(stmt) => {
                let ctx = self.statement_context();
                crate::streaming::create_source(&self.db, &ctx, stmt, &self.user).await?;
                Ok(Outcome::Command(Tag::new("CREATE SOURCE")))
            }
            Statement::CreateMaterializedView(stmt) => {
                let ctx = self.statement_context();
                crate::streaming::create_materialized_view(&self.db, &ctx, stmt, &self.user).await?;
                Ok(Outcome::Command(Tag::new("CREATE MATERIALIZED VIEW")))
            }
            Statement::AlterMaterializedViewSet { name, options } => {
                let (schema, view) = object_name(name)?;
                let object = self.db.read_catalog().find_kind(CatalogKind::MaterializedView, &schema, &view).cloned()?;
                crate::roles::check_owner(&self.db, &self.user, &object)?;
                crate::streaming::alter_materialized_view(&self.db, name, options).await?;
                Ok(Outcome::Command(Tag::new("ALTER MATERIALIZED VIEW")))
            }
            Statement::ExplainCreateMaterializedView(stmt) => {
                let ctx = self.statement_context();
                let text = crate::streaming::explain_materialized_view(&self.db, &ctx, stmt).await?;
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                rows_outcome(&["QUERY PLAN"], vec![lines], "EXPLAIN")
            }
            Statement::Drop { kind, names, if_exists, cascade } => {
                self.drop_objects(catalog_kind(*kind), names, *if_exists, *cascade).await
            }
            Statement::CreateRole { name, user, options } => {
                crate::roles::create_role(&self.db, &self.user, name, *user, options).await?;
                Ok(Outcome::Command(Tag::new("CREATE ROLE")))
            }
            Statement::AlterRole { name, options } => {
                crate::roles::alter_role(&self.db, &self.user, name, options).await?;
                Ok(Outcome::Command(Tag::new("ALTER ROLE")))
            }
            Statement::DropRole { names, if_exists } => {
                crate::roles::drop_roles(&self.db, &self.user, names, *if_exists).await?;
                Ok(Outcome::Command(Tag::new("DROP ROLE")))
            }
            Statement::CreateSink(stmt) => {
                let ctx = self.statement_context();
                crate::sinks::create_sink(&self.db, &ctx, stmt, &self.user).await?;
                Ok(Outcome::Command(Tag::new("CREATE SINK")))
            }
            Statement::CopySubscribe { subscribe, copy } => {
                let sqlparser::ast::Statement::Copy { options, legacy_options, .. } = copy.as_ref() else {
                    return Err(WeirError::internal("COPY (SUBSCRIBE ...) without its COPY"));
                };
                let format = CopyFormat::from_options(options, legacy_options)?;
                let ctx = self.statement_context();
                let (schema, stream) = crate::subscribe::subscribe(&self.db, &ctx, subscribe).await?;
                let settings = self.settings.clone();
                let mut row_format = format.clone();
                // A CSV header once, before the first rows.
                let rows = stream.map(move |batch| {
                    let rows = crate::copy::encode_rows(&[batch?], &row_format, &settings);
                    row_format.header = false;
                    rows
                });
                Ok(Outcome::CopyOutStream { columns: schema.fields().len(), format, rows: Box::pin(rows) })
            }
            Statement::DeclareSubscribe { name, subscribe } => {
                if !self.in_block() {
                    return Err(WeirError::new(SqlState::NoActiveSqlTransaction, "DECLARE CURSOR can only be used in transaction blocks"));
                }
                if self.cursors.contains_key(&name.value) {
                    return Err(WeirError::new(SqlState::DuplicateCursor, format!("cursor \"{}\" already exists", name.value)));
                }
                let ctx = self.statement_context();
                let cursor = crate::subscribe::SubscribeCursor::declare(&self.db, &ctx, subscribe).await?;
                self.cursors.insert(name.value.clone(), cursor);
                Ok(Outcome::Command(Tag::new("DECLARE CURSOR")))
            }
            Statement::Fetch { cursor, count, with } => {
                let timeout = crate::subscribe::fetch_timeout(with)?;
                let Some(c) = self.cursors.get_mut(&cursor.value) else {
                    return Err(WeirError::new(SqlState::InvalidCursorName, format!("cursor \"{}\" does not exist", cursor.value)));
                };
                match c.fetch(count.unwrap_or(u64::MAX), timeout).await {
                    Ok((schema, batch)) => {
                        let stream = datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema.clone(), futures::stream::iter([Ok(batch)]));
                        Ok(Outcome::Rows { schema, stream: Box::pin(stream), tag: "FETCH" })
                    }
                    Err(e) => {
                        self.cursors.remove(&cursor.value);
                        Err(e)
                    }
                }
            }
            Statement::Subscribe(stmt) => {
                let ctx = self.statement_context();
                let (schema, stream) = crate::subscribe::subscribe(&self.db, &ctx, stmt).await?;
                Ok(Outcome::Rows { schema, stream, tag: "SUBSCRIBE" })
            }
        }
    }

    async fn execute_standard(&mut self, parsed: &ParsedStatement, stmt: &ast::Statement) -> Result<Outcome> {
        use ast::Statement as S;
        match stmt {
            S::Query(_) | S::Explain { .. } | S::Insert(_) | S::Update(_) | S::Delete(_) => {
                let ctx = self.statement_context();
                let stmt = self.plannable(parsed).ok_or_else(|| WeirError::internal("unplannable"))?;
                let plan = self.plan(&ctx, stmt).await?;
                let outcome = self.run_plan(plan).await?;
                Ok(rename_outcome(outcome, parsed))
            }
            S::CreateTable(ct) => {
                let definition = Statement::Standard(Box::new(S::CreateTable(ct.clone()))).to_string();
                self.create_table(ct, None, definition).await
            }
            S::Drop { object_type, if_exists, names, cascade, .. } => {
                let kind = match object_type {
                    ObjectType::Table => CatalogKind::Table,
                    ObjectType::View => CatalogKind::View,
                    ObjectType::MaterializedView => CatalogKind::MaterializedView,
                    other => return Err(WeirError::not_supported(format!("DROP {other}"))),
                };
                self.drop_objects(kind, names, *if_exists, *cascade).await
            }
            S::Grant(_) | S::Revoke(_) => {
                crate::roles::grant(&self.db, &self.user, stmt).await?;
                Ok(Outcome::Command(Tag::new(if matches!(stmt, S::Grant(_)) { "GRANT" } else { "REVOKE" })))
            }
            S::StartTransaction { .. } => {
                match &mut self.txn {
                    TxnState::Idle => self.txn = TxnState::Open(Transaction::default()),
                    TxnState::Open(t) if t.implicit => t.implicit = false,
                    _ => tracing::debug!("BEGIN inside a transaction block ignored"),
                }
                Ok(Outcome::TransactionStart)
            }
            S::Commit { .. } => {
                // Cursors end with their transaction block.
                self.cursors.clear();
                match std::mem::replace(&mut self.txn, TxnState::Idle) {
                    TxnState::Open(t) => {
                        self.commit_changes(t.changes).await?;
                        Ok(Outcome::TransactionEnd("COMMIT"))
                    }
                    TxnState::Failed => Ok(Outcome::TransactionEnd("ROLLBACK")),
                    TxnState::Idle => Ok(Outcome::TransactionEnd("COMMIT")),
                }
            }
            S::Rollback { savepoint: Some(name), .. } => self.rollback_to_savepoint(&name.value),
            S::Rollback { .. } => {
                self.txn = TxnState::Idle;
                self.cursors.clear();
                Ok(Outcome::TransactionEnd("ROLLBACK"))
            }
            S::Close { cursor } => {
                match cursor {
                    ast::CloseCursor::All => self.cursors.clear(),
                    ast::CloseCursor::Specific { name } => {
                        if self.cursors.remove(&name.value).is_none() {
                            return Err(WeirError::new(SqlState::InvalidCursorName, format!("cursor \"{}\" does not exist", name.value)));
                        }
                    }
                }
                Ok(Outcome::Command(Tag::new("CLOSE CURSOR")))
            }
            S::Savepoint { name } => match &mut self.txn {
                TxnState::Open(t) => {
                    t.savepoints.push((name.value.clone(), t.changes.len(), t.working.clone()));
                    Ok(Outcome::Command(Tag::new("SAVEPOINT")))
                }
                _ => Err(WeirError::new(
                    SqlState::NoActiveSqlTransaction,
                    "SAVEPOINT can only be used in transaction blocks",
                )),
            },
            S::ReleaseSavepoint { name } => {
                if let TxnState::Open(t) = &mut self.txn
                    && let Some(pos) = t.savepoints.iter().rposition(|s| s.0 == name.value)
                {
                    t.savepoints.truncate(pos);
                    return Ok(Outcome::Command(Tag::new("RELEASE")));
                }
                Err(WeirError::new(SqlState::UndefinedObject, format!("savepoint \"{}\" does not exist", name.value)))
            }
            S::Set(set) => self.set(set),
            S::ShowVariable { variable } => self.show_variable(variable),
            S::Reset(r) => {
                let reported = match &r.reset {
                    ast::Reset::ALL => self.settings.reset_all().pop(),
                    ast::Reset::ConfigurationParameter(name) => self.settings.reset(&name.to_string())?,
                };
                Ok(match reported {
                    Some((name, value)) => Outcome::SetReported { name, value },
                    None => Outcome::Command(Tag::new("RESET")),
                })
            }
            S::Discard { .. } => {
                self.settings.reset_all();
                Ok(Outcome::Command(Tag::new("DISCARD ALL")))
            }
            S::Deallocate { .. } => {
                // Prepared statements live in the wire layer's per-connection store, which drops
                // `DEALLOCATE name` itself. `DEALLOCATE ALL` (psycopg's pool reset) cannot list
                // that store; what pools rely on after it, a new Parse under an old name,
                // replaces the old statement.
                Ok(Outcome::Command(Tag::new("DEALLOCATE")))
            }
            S::Copy { source, to, target, options, legacy_options, .. } => {
                self.copy(source, *to, target, options, legacy_options).await
            }
            S::ExplainTable { describe_alias: ast::DescribeAlias::Describe | ast::DescribeAlias::Desc, table_name, .. } => {
                self.describe(table_name)
            }
            other => Err(WeirError::not_supported(format!(
                "the statement \"{}\"",
                other.to_string().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            ))),
        }
    }

    fn rollback_to_savepoint(&mut self, name: &str) -> Result<Outcome> {
        // Postgres allows ROLLBACK TO in a failed block: it clears the failure. Our failed state
        // keeps no changes, so only an open block can roll back to a savepoint.
        if let TxnState::Open(t) = &mut self.txn
            && let Some(pos) = t.savepoints.iter().rposition(|s| s.0 == name)
        {
            let (_, len, working) = t.savepoints[pos].clone();
            t.changes.truncate(len);
            t.working = working;
            t.savepoints.truncate(pos + 1);
            return Ok(Outcome::Command(Tag::new("ROLLBACK")));
        }
        Err(WeirError::new(SqlState::UndefinedObject, format!("savepoint \"{name}\" does not exist")))
    }

    /// Runs a DataFusion plan: DML writes, everything else streams rows.
    async fn run_plan(&mut self, plan: LogicalPlan) -> Result<Outcome> {
        if let LogicalPlan::Dml(dml) = &plan {
            let table = dml_target_table(&plan).ok_or_else(|| {
                WeirError::new(
                    SqlState::WrongObjectType,
                    format!("cannot change relation \"{}\"", dml.table_name),
                )
            })?;
            return self.run_dml(table, dml.op.clone(), dml.input.clone()).await;
        }
        if matches!(plan, LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) | LogicalPlan::Copy(_)) {
            return Err(WeirError::not_supported("this statement"));
        }
        let tag = if matches!(plan, LogicalPlan::Explain(_) | LogicalPlan::Analyze(_)) { "EXPLAIN" } else { "SELECT" };
        let ctx = self.statement_context();
        let df = ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let stream = self.db.queries.execute(df).await?;
        Ok(Outcome::Rows { schema, stream, tag })
    }

    async fn collect(&self, plan: LogicalPlan) -> Result<Vec<RecordBatch>> {
        let ctx = self.statement_context();
        let df = ctx.execute_logical_plan(plan).await?;
        collect_rows(self.db.queries.execute(df).await?).await
    }

    async fn run_dml(&mut self, table: ObjectId, op: WriteOp, input: Arc<LogicalPlan>) -> Result<Outcome> {
        let (name, schema) = self.table_info(table)?;
        if !matches!(op, WriteOp::Insert(_)) && crate::streaming::is_append_only_table(&self.db, table) {
            return Err(WeirError::new(
                SqlState::FeatureNotSupported,
                format!("table \"{name}\" is APPEND ONLY: rows cannot be updated or deleted"),
            ));
        }
        match op {
            WriteOp::Insert(_) => {
                let batches = self.collect(relax_values_nullability(input.as_ref().clone())?).await?;
                let rows = conform_batches(&batches, &schema, &name)?;
                let n = rows.num_rows();
                self.write(vec![TableChange { table, diff: 1, rows }]).await?;
                Ok(Outcome::Command(Tag::new("INSERT").with_oid(0).with_rows(n)))
            }
            WriteOp::Delete => {
                let batches = self.collect(input.as_ref().clone()).await?;
                let rows = conform_batches(&batches, &schema, &name)?;
                let n = rows.num_rows();
                self.write(vec![TableChange { table, diff: -1, rows }]).await?;
                Ok(Outcome::Command(Tag::new("DELETE").with_rows(n)))
            }
            WriteOp::Update => {
                // The input is Projection(new values) over the filtered source; the source's first
                // columns are the target table's, which are the old rows.
                let LogicalPlan::Projection(projection) = input.as_ref() else {
                    return Err(WeirError::internal("unexpected UPDATE plan shape"));
                };
                let source = projection.input.clone();
                let old_columns: Vec<datafusion::prelude::Expr> = source
                    .schema()
                    .columns()
                    .into_iter()
                    .take(schema.fields().len())
                    .map(datafusion::prelude::Expr::Column)
                    .collect();
                let old_plan = datafusion::logical_expr::LogicalPlanBuilder::from(source.as_ref().clone())
                    .project(old_columns)?
                    .build()?;
                let old = conform_batches(&self.collect(old_plan).await?, &schema, &name)?;
                let new = conform_batches(&self.collect(input.as_ref().clone()).await?, &schema, &name)?;
                let n = old.num_rows();
                self.write(vec![
                    TableChange { table, diff: -1, rows: old },
                    TableChange { table, diff: 1, rows: new },
                ])
                .await?;
                Ok(Outcome::Command(Tag::new("UPDATE").with_rows(n)))
            }
            other => Err(WeirError::not_supported(format!("{other}"))),
        }
    }

    fn table_info(&self, table: ObjectId) -> Result<(String, SchemaRef)> {
        let name = self
            .db
            .read_catalog()
            .get(table)
            .map(|o| o.name.clone())
            .ok_or_else(|| WeirError::new(SqlState::UndefinedTable, "the table was dropped"))?;
        let data = self
            .db
            .storage
            .table(table)
            .ok_or_else(|| WeirError::new(SqlState::UndefinedTable, format!("relation \"{name}\" does not exist")))?;
        Ok((name, data.schema().clone()))
    }

    /// Applies changes: inside a block to the session's working copies, otherwise as one
    /// durable commit.
    async fn write(&mut self, changes: Vec<TableChange>) -> Result<()> {
        match &mut self.txn {
            TxnState::Open(t) => {
                // Validate against the working copies; on failure the block becomes failed (the
                // caller's on_error), so partial application to the copies is never committed.
                for c in &changes {
                    let entry = match t.working.get_mut(&c.table) {
                        Some(e) => e,
                        None => {
                            let committed = self.db.storage.table(c.table).ok_or_else(|| {
                                WeirError::new(SqlState::UndefinedTable, "the table was dropped")
                            })?;
                            t.working.entry(c.table).or_insert(committed)
                        }
                    };
                    let data = Arc::make_mut(entry);
                    if c.diff > 0 {
                        data.insert(&c.rows)?;
                    } else {
                        data.delete(&c.rows)?;
                    }
                }
                t.changes.extend(changes);
                Ok(())
            }
            TxnState::Idle => self.commit_changes(changes).await,
            TxnState::Failed => Err(WeirError::in_failed_transaction()),
        }
    }

    async fn commit_changes(&self, changes: Vec<TableChange>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let storage = self.db.storage.clone();
        // The commit fsyncs: keep it off the async workers.
        tokio::task::spawn_blocking(move || storage.commit(changes))
            .await
            .map_err(|e| WeirError::internal(format!("commit task failed: {e}")))?
    }

    /// `CREATE TABLE`, with the streaming clauses of `definition` (`WATERMARK FOR`, which
    /// `watermark` carries, and `APPEND ONLY`, checked on UPDATE and DELETE).
    async fn create_table(
        &mut self,
        ct: &ast::CreateTable,
        watermark: Option<&weir_sql::Watermark>,
        definition: String,
    ) -> Result<Outcome> {
        let (schema_name, name) = object_name(&ct.name)?;
        if ct.query.is_some() {
            return Err(WeirError::not_supported("CREATE TABLE ... AS"));
        }
        let mut columns = Vec::with_capacity(ct.columns.len());
        let mut primary_key: Vec<String> = Vec::new();
        for col in &ct.columns {
            let col_name = ident(&col.name);
            if columns.iter().any(|c: &weir_catalog::Column| c.name == col_name) {
                return Err(WeirError::new(
                    SqlState::DuplicateObject,
                    format!("column \"{col_name}\" specified more than once"),
                ));
            }
            let type_name = pg_type_for_sql(&col.data_type)?;
            let mut nullable = true;
            for opt in &col.options {
                match &opt.option {
                    ast::ColumnOption::NotNull => nullable = false,
                    ast::ColumnOption::Null => {}
                    ast::ColumnOption::PrimaryKey(_) => {
                        nullable = false;
                        primary_key.push(col_name.clone());
                    }
                    other => {
                        return Err(WeirError::not_supported(format!("the column constraint {other}")));
                    }
                }
            }
            columns.push(weir_catalog::Column { name: col_name, type_name, nullable });
        }
        for constraint in &ct.constraints {
            match constraint {
                ast::TableConstraint::PrimaryKey(pk) => {
                    if !primary_key.is_empty() {
                        return Err(WeirError::new(
                            SqlState::SyntaxError,
                            format!("multiple primary keys for table \"{name}\" are not allowed"),
                        ));
                    }
                    for c in &pk.columns {
                        let col_name = c.column.expr.to_string().trim_matches('"').to_lowercase();
                        let Some(col) = columns.iter_mut().find(|x| x.name == col_name) else {
                            return Err(WeirError::new(
                                SqlState::UndefinedColumn,
                                format!("column \"{col_name}\" named in key does not exist"),
                            ));
                        };
                        col.nullable = false;
                        primary_key.push(col_name);
                    }
                }
                other => return Err(WeirError::not_supported(format!("the table constraint {other}"))),
            }
        }
        if columns.is_empty() {
            return Err(WeirError::not_supported("a table without columns"));
        }
        let schema = Arc::new(crate::database::table_schema(&columns)?);
        let tracker = crate::streaming::table_watermark_tracker(self.db.base_context(), watermark, &schema)?;
        let pk_idx: Vec<usize> =
            primary_key.iter().filter_map(|k| columns.iter().position(|c| &c.name == k)).collect();
        let data = TableData::new(&name, schema, (!pk_idx.is_empty()).then_some(pk_idx))?;

        let _ddl = self.db.ddl_lock.lock().await;
        if ct.if_not_exists
            && self.db.read_catalog().find(CatalogKind::Table, &schema_name, &name).is_some()
        {
            return Ok(Outcome::Command(Tag::new("CREATE TABLE")));
        }
        let object = self.db.write_catalog().create(NewObject {
            kind: CatalogKind::Table,
            schema: schema_name,
            name,
            owner: self.user.clone(),
            definition,
            columns,
            primary_key,
            depends_on: vec![],
        })?;
        self.db.storage.create_table(object.id, data);
        self.db.coordinator.add_table(object.id, tracker, &self.db.storage);
        Ok(Outcome::Command(Tag::new("CREATE TABLE")))
    }

    async fn drop_objects(
        &mut self,
        kind: CatalogKind,
        names: &[ObjectName],
        if_exists: bool,
        cascade: bool,
    ) -> Result<Outcome> {
        let _ddl = self.db.ddl_lock.lock().await;
        for n in names {
            let (schema, name) = object_name(n)?;
            let id = {
                let catalog = self.db.read_catalog();
                match catalog.find_kind(kind, &schema, &name) {
                    Ok(o) => o.id,
                    Err(weir_catalog::CatalogError::NotFound { .. }) if if_exists => continue,
                    Err(e) => return Err(e.into()),
                }
            };
            {
                // The owner drops an object, and with CASCADE only if it also owns what goes
                // with it (as in Postgres).
                let catalog = self.db.read_catalog();
                let with = if cascade { catalog.dependents(id) } else { Vec::new() };
                for object in with.iter().chain(std::iter::once(&id)).filter_map(|i| catalog.get(*i)) {
                    crate::roles::check_owner(&self.db, &self.user, object)?;
                }
            }
            let dropped = self.db.write_catalog().drop_object(id, cascade)?;
            for o in dropped {
                match o.kind {
                    CatalogKind::Table => {
                        self.db.coordinator.drop_input(o.id);
                        self.db.storage.drop_table(o.id);
                    }
                    CatalogKind::Source => self.db.coordinator.drop_input(o.id),
                    CatalogKind::MaterializedView => self.db.coordinator.drop_view(o.id),
                    CatalogKind::Sink => {
                        self.db.sinks.stop(o.id);
                        // A sink with its own query has a view job under its id.
                        self.db.coordinator.drop_view(o.id);
                    }
                    _ => {}
                }
                if let TxnState::Open(t) = &mut self.txn {
                    t.working.remove(&o.id);
                    t.changes.retain(|c| c.table != o.id);
                }
            }
        }
        let tag = match kind {
            CatalogKind::Table => "DROP TABLE",
            CatalogKind::View => "DROP VIEW",
            CatalogKind::MaterializedView => "DROP MATERIALIZED VIEW",
            CatalogKind::Source => "DROP SOURCE",
            CatalogKind::Sink => "DROP SINK",
            CatalogKind::Subscription => "DROP SUBSCRIPTION",
        };
        Ok(Outcome::Command(Tag::new(tag)))
    }

    fn set(&mut self, set: &ast::Set) -> Result<Outcome> {
        let (name, value) = match set {
            ast::Set::SingleAssignment { variable, values, .. } => {
                let name = variable.to_string();
                let value = values.iter().map(expr_setting_value).collect::<Vec<_>>().join(", ");
                (name, value)
            }
            ast::Set::SetTimeZone { value, .. } => ("TimeZone".to_string(), expr_setting_value(value)),
            ast::Set::SetNames { charset_name, .. } => ("client_encoding".to_string(), charset_name.value.clone()),
            ast::Set::SetTransaction { .. } => return Ok(Outcome::Command(Tag::new("SET"))),
            other => return Err(WeirError::not_supported(format!("{other}"))),
        };
        let reported = if value.eq_ignore_ascii_case("default") {
            self.settings.reset(&name)?
        } else {
            self.settings.set(&name, &value)?
        };
        Ok(match reported {
            Some((name, value)) => Outcome::SetReported { name, value },
            None => Outcome::Command(Tag::new("SET")),
        })
    }

    fn show_variable(&self, variable: &[ast::Ident]) -> Result<Outcome> {
        let name = variable.iter().map(|i| i.value.clone()).collect::<Vec<_>>().join(" ");
        let lower = name.to_ascii_lowercase();
        if lower == "all" {
            let all = self.settings.all();
            return rows_outcome(
                &["name", "setting"],
                vec![all.iter().map(|a| a.0.clone()).collect(), all.iter().map(|a| a.1.clone()).collect()],
                "SHOW",
            );
        }
        let (column, key) = match lower.as_str() {
            "time zone" => ("TimeZone".to_string(), "TimeZone".to_string()),
            "transaction isolation level" => {
                ("transaction_isolation".to_string(), "transaction_isolation".to_string())
            }
            _ => (lower.clone(), lower.clone()),
        };
        let value = self.settings.get(&key).ok_or_else(|| {
            WeirError::new(SqlState::UndefinedObject, format!("unrecognized configuration parameter \"{name}\""))
        })?;
        rows_outcome(&[&column], vec![vec![value]], "SHOW")
    }

    fn show_objects(&self, kind: ObjectKind) -> Result<Outcome> {
        if kind == ObjectKind::Sink {
            return self.show_sinks();
        }
        let kind = catalog_kind(kind);
        let names: Vec<String> =
            self.db.read_catalog().objects_of_kind(kind).map(|o| o.name.clone()).collect();
        rows_outcome(&["name"], vec![names], "SHOW")
    }

    /// `SHOW SINKS`: each sink with its view, connector and status (the figures are in
    /// `weir_catalog.sinks`).
    fn show_sinks(&self) -> Result<Outcome> {
        let catalog = self.db.read_catalog();
        let stats = self.db.sinks.stats();
        let mut sinks: Vec<_> = catalog.objects_of_kind(weir_catalog::ObjectKind::Sink).collect();
        sinks.sort_by(|a, b| a.name.cmp(&b.name));
        let mut columns = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for sink in sinks {
            let stat = stats.iter().find(|(id, _)| *id == sink.id).map(|(_, s)| s);
            columns[0].push(sink.name.clone());
            // Empty for a sink of its own query.
            let view = sink.depends_on.first().and_then(|v| catalog.get(*v)).filter(|v| v.kind == weir_catalog::ObjectKind::MaterializedView);
            columns[1].push(view.map(|v| v.name.clone()).unwrap_or_default());
            columns[2].push(stat.map(|s| s.connector.clone()).unwrap_or_default());
            columns[3].push(stat.map(|s| s.status()).unwrap_or_else(|| "stopped".into()));
        }
        rows_outcome(&["name", "view", "connector", "status"], columns, "SHOW")
    }

    /// `DESCRIBE relation`: its columns with Postgres type names, nullability, and for a
    /// source's or table's watermarked column its watermark rule.
    fn describe(&self, name: &ObjectName) -> Result<Outcome> {
        let (schema, n) = object_name(name)?;
        let catalog = self.db.read_catalog();
        let object = catalog.find(weir_catalog::ObjectKind::Table, &schema, &n).ok_or_else(|| {
            WeirError::new(SqlState::UndefinedTable, format!("relation \"{n}\" does not exist"))
        })?;
        let watermark = crate::streaming::declared_watermark(object);
        let mut columns = vec![Vec::new(), Vec::new(), Vec::new(), Vec::new()];
        for (i, c) in object.columns.iter().enumerate() {
            columns[0].push(c.name.clone());
            columns[1].push(c.type_name.clone());
            columns[2].push(if c.nullable { "YES" } else { "NO" }.to_string());
            columns[3].push(match &watermark {
                Some((column, rule)) if *column == i => rule.to_string(),
                _ => String::new(),
            });
        }
        rows_outcome(&DESCRIBE_COLUMNS, columns, "DESCRIBE")
    }

    fn show_create(&self, kind: ObjectKind, name: &ObjectName) -> Result<Outcome> {
        let (schema, n) = object_name(name)?;
        let catalog = self.db.read_catalog();
        let object = catalog.find_kind(catalog_kind(kind), &schema, &n)?;
        // The stored definition may hold secrets: print it through the parser's redaction.
        let sql = match weir_sql::parse(&object.definition) {
            Ok(mut v) if v.len() == 1 => v.remove(0).statement.to_redacted_string(),
            _ => return Err(WeirError::internal(format!("stored definition of {n} does not parse"))),
        };
        rows_outcome(&["name", "create_sql"], vec![vec![object.qualified_name()], vec![sql]], "SHOW")
    }

    async fn copy(
        &mut self,
        source: &ast::CopySource,
        to: bool,
        target: &ast::CopyTarget,
        options: &[ast::CopyOption],
        legacy: &[ast::CopyLegacyOption],
    ) -> Result<Outcome> {
        let format = CopyFormat::from_options(options, legacy)?;
        if to {
            if !matches!(target, ast::CopyTarget::Stdout) {
                return Err(WeirError::not_supported("COPY TO a file or program").with_hint("Use COPY ... TO STDOUT."));
            }
            let query = match source {
                ast::CopySource::Query(q) => ast::Statement::Query(q.clone()),
                ast::CopySource::Table { table_name, columns } => {
                    let cols = if columns.is_empty() {
                        "*".to_string()
                    } else {
                        columns.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(", ")
                    };
                    let sql = format!("SELECT {cols} FROM {table_name}");
                    match weir_sql::parse(&sql)?.pop().map(|p| p.statement) {
                        Some(Statement::Standard(s)) => *s,
                        _ => return Err(WeirError::internal("COPY source did not parse")),
                    }
                }
            };
            let ctx = self.statement_context();
            let plan = self.plan(&ctx, query).await?;
            let batches = self.collect(plan).await?;
            let columns = batches.first().map(|b| b.num_columns()).unwrap_or(0);
            let rows = crate::copy::encode_rows(&batches, &format, &self.settings)?;
            return Ok(Outcome::CopyOut { columns, format, rows });
        }
        if !matches!(target, ast::CopyTarget::Stdin) {
            return Err(WeirError::not_supported("COPY FROM a file or program").with_hint("Use COPY ... FROM STDIN."));
        }
        let ast::CopySource::Table { table_name, columns } = source else {
            return Err(WeirError::new(SqlState::SyntaxError, "COPY FROM needs a table"));
        };
        let (schema_name, name) = object_name(table_name)?;
        let object = self.db.read_catalog().find_kind(CatalogKind::Table, &schema_name, &name)?.clone();
        let (_, schema) = self.table_info(object.id)?;
        let targets: Vec<usize> = if columns.is_empty() {
            (0..schema.fields().len()).collect()
        } else {
            columns
                .iter()
                .map(|c| {
                    let c = ident(c);
                    schema.index_of(&c).map_err(|_| {
                        WeirError::new(
                            SqlState::UndefinedColumn,
                            format!("column \"{c}\" of relation \"{name}\" does not exist"),
                        )
                    })
                })
                .collect::<Result<_>>()?
        };
        let n = targets.len();
        self.copy_in = Some(CopyIn::new(object.id, name, schema, targets, format.clone()));
        Ok(Outcome::CopyIn { columns: n, format })
    }

    /// Finishes `COPY FROM STDIN`: parses what the client sent and writes it.
    pub async fn finish_copy_in(&mut self) -> Result<usize> {
        let copy = self.copy_in.take().ok_or_else(|| WeirError::internal("no COPY in progress"))?;
        let (table, rows) = copy.finish(&self.settings)?;
        let n = rows.num_rows();
        self.write(vec![TableChange { table, diff: 1, rows }]).await?;
        Ok(n)
    }
}

/// DataFusion types an INSERT's VALUES list after the target table, NOT NULL included, and then
/// fails inside Arrow with "Column 'column1' is declared as non-nullable" for a NULL. Make the
/// VALUES nullable so the NULL reaches [`conform_batches`], which reports the table's column
/// the way Postgres does (23502).
fn relax_values_nullability(plan: LogicalPlan) -> Result<LogicalPlan> {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    let relaxed = plan.transform_up(|node| {
        let LogicalPlan::Values(values) = &node else { return Ok(Transformed::no(node)) };
        if values.schema.fields().iter().all(|f| f.is_nullable()) {
            return Ok(Transformed::no(node));
        }
        let fields = values
            .schema
            .iter()
            .map(|(q, f)| (q.cloned(), Arc::new(f.as_ref().clone().with_nullable(true))))
            .collect();
        let schema = datafusion::common::DFSchema::new_with_metadata(fields, values.schema.metadata().clone())?;
        Ok(Transformed::yes(LogicalPlan::Values(datafusion::logical_expr::Values {
            schema: Arc::new(schema),
            values: values.values.clone(),
        })))
    })?;
    // Projections above the VALUES cached the old nullability: recompute their schemas.
    Ok(relaxed.data.recompute_schema()?)
}

/// The names Postgres would give the result columns of `parsed`, if it is a query whose select
/// list names them (see [`crate::pg_compat::output_column_names`]).
pub fn postgres_column_names(parsed: &ParsedStatement) -> Option<Vec<String>> {
    let Statement::Standard(s) = &parsed.statement else { return None };
    let ast::Statement::Query(q) = s.as_ref() else { return None };
    crate::pg_compat::output_column_names(q)
}

/// `schema` with its fields renamed to Postgres's names (when they can be known).
pub fn rename_schema(schema: &Schema, parsed: &ParsedStatement) -> Schema {
    match postgres_column_names(parsed) {
        Some(names) if names.len() == schema.fields().len() => Schema::new_with_metadata(
            schema
                .fields()
                .iter()
                .zip(names)
                .map(|(f, n)| f.as_ref().clone().with_name(n))
                .collect::<Vec<_>>(),
            schema.metadata().clone(),
        ),
        _ => schema.clone(),
    }
}

fn rename_outcome(outcome: Outcome, parsed: &ParsedStatement) -> Outcome {
    match outcome {
        Outcome::Rows { schema, stream, tag } => {
            Outcome::Rows { schema: Arc::new(rename_schema(&schema, parsed)), stream, tag }
        }
        other => other,
    }
}

/// The type of each `$n`: DataFusion's inference, and for a parameter it could not type, the
/// type it is cast to (`$1::int`), which is what Postgres infers too.
fn parameter_types_by_name(plan: &LogicalPlan) -> Result<HashMap<String, Option<DataType>>> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::Expr;
    let mut types = plan.get_parameter_types()?;
    if types.values().any(Option::is_none) {
        let _ = plan.apply(|node| {
            for expr in node.expressions() {
                let _ = expr.apply(|e| {
                    if let Expr::Cast(cast) = e
                        && let Expr::Placeholder(ph) = cast.expr.as_ref()
                        && let Some(slot @ None) = types.get_mut(&ph.id)
                    {
                        *slot = Some(cast.field.data_type().clone());
                    }
                    // A parameter passed straight to a function with one exact signature
                    // (`pg_cancel_backend($1)`) has the signature's type.
                    if let Expr::ScalarFunction(f) = e
                        && let datafusion::logical_expr::TypeSignature::Exact(sig) = &f.func.signature().type_signature
                    {
                        for (arg, ty) in f.args.iter().zip(sig) {
                            if let Expr::Placeholder(ph) = arg
                                && let Some(slot @ None) = types.get_mut(&ph.id)
                            {
                                *slot = Some(ty.clone());
                            }
                        }
                    }
                    Ok(TreeNodeRecursion::Continue)
                });
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    Ok(types)
}

/// Parameter types by position: `$n` at index n-1. A statement may not mention every number
/// (a rewrite can remove a subquery that held one): those positions are `None`.
pub fn parameter_types(plan: &LogicalPlan) -> Result<Vec<(String, Option<DataType>)>> {
    let types = parameter_types_by_name(plan)?;
    let max = types.keys().filter_map(|k| k.trim_start_matches('$').parse::<usize>().ok()).max().unwrap_or(0);
    Ok((1..=max).map(|n| (format!("${n}"), types.get(&format!("${n}")).cloned().flatten())).collect())
}

/// The value text of a `SET` argument: `'UTC'` → `UTC`, `on` → `on`, `5` → `5`.
fn expr_setting_value(e: &ast::Expr) -> String {
    match e {
        ast::Expr::Value(v) => match &v.value {
            ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        ast::Expr::Identifier(i) => i.value.clone(),
        other => other.to_string(),
    }
}

fn catalog_kind(kind: ObjectKind) -> CatalogKind {
    match kind {
        ObjectKind::Table => CatalogKind::Table,
        ObjectKind::Source => CatalogKind::Source,
        ObjectKind::MaterializedView => CatalogKind::MaterializedView,
        ObjectKind::View => CatalogKind::View,
        ObjectKind::Sink => CatalogKind::Sink,
    }
}

/// An identifier as Postgres resolves it: unquoted names fold to lower case.
pub fn ident(i: &ast::Ident) -> String {
    if i.quote_style.is_some() { i.value.clone() } else { i.value.to_lowercase() }
}

/// Splits `[weir.][public.]name` into (schema, name).
pub fn object_name(name: &ObjectName) -> Result<(String, String)> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| p.as_ident().map(ident).unwrap_or_else(|| p.to_string()))
        .collect();
    let (schema, table) = match parts.as_slice() {
        [t] => (DEFAULT_SCHEMA.to_string(), t.clone()),
        [s, t] => (s.clone(), t.clone()),
        [d, s, t] if d == crate::database::DATABASE_NAME => (s.clone(), t.clone()),
        [_, _, _] => {
            return Err(WeirError::new(
                SqlState::FeatureNotSupported,
                format!("cross-database references are not implemented: {name}"),
            ));
        }
        _ => return Err(WeirError::new(SqlState::SyntaxError, format!("improper qualified name: {name}"))),
    };
    if schema != DEFAULT_SCHEMA {
        return Err(WeirError::new(
            SqlState::UndefinedObject,
            format!("schema \"{schema}\" does not exist"),
        )
        .with_hint("Weir has one user schema, public."));
    }
    Ok((schema, table))
}

/// The canonical Postgres type name for a column type written in SQL.
pub fn pg_type_for_sql(t: &ast::DataType) -> Result<String> {
    use ast::DataType as D;
    let length = |l: &Option<ast::CharacterLength>| match l {
        Some(ast::CharacterLength::IntegerLength { length, .. }) => format!("({length})"),
        _ => String::new(),
    };
    Ok(match t {
        D::SmallInt(_) | D::Int2(_) => "smallint".into(),
        D::Int(_) | D::Integer(_) | D::Int4(_) => "integer".into(),
        D::BigInt(_) | D::Int8(_) => "bigint".into(),
        D::Real | D::Float4 => "real".into(),
        D::Double(_) | D::DoublePrecision | D::Float8 | D::Float64 => "double precision".into(),
        D::Float(p) => match p {
            ast::ExactNumberInfo::Precision(p) | ast::ExactNumberInfo::PrecisionAndScale(p, _) if *p <= 24 => {
                "real".into()
            }
            _ => "double precision".into(),
        },
        D::Numeric(info) | D::Decimal(info) | D::Dec(info) => match info {
            ast::ExactNumberInfo::None => "numeric".into(),
            ast::ExactNumberInfo::Precision(p) => {
                check_precision(*p, 0)?;
                format!("numeric({p},0)")
            }
            ast::ExactNumberInfo::PrecisionAndScale(p, s) => {
                check_precision(*p, (*s).max(0) as u64)?;
                format!("numeric({p},{s})")
            }
        },
        D::Text | D::String(_) => "text".into(),
        D::Varchar(l) | D::CharacterVarying(l) | D::CharVarying(l) => format!("character varying{}", length(l)),
        D::Char(l) | D::Character(l) => {
            let l = length(l);
            format!("character{}", if l.is_empty() { "(1)".to_string() } else { l })
        }
        D::Boolean | D::Bool => "boolean".into(),
        D::Date => "date".into(),
        D::Timestamp(_, tz) => match tz {
            ast::TimezoneInfo::WithTimeZone | ast::TimezoneInfo::Tz => "timestamp with time zone".into(),
            _ => "timestamp without time zone".into(),
        },
        D::Time(_, ast::TimezoneInfo::None | ast::TimezoneInfo::WithoutTimeZone) => "time without time zone".into(),
        D::Bytea => "bytea".into(),
        D::Interval { .. } => "interval".into(),
        D::JSON => "json".into(),
        D::JSONB => "jsonb".into(),
        D::Uuid => "uuid".into(),
        D::Custom(name, _) if name.to_string().eq_ignore_ascii_case("timestamptz") => {
            "timestamp with time zone".into()
        }
        D::Struct(fields, _) => {
            let mut names = Vec::with_capacity(fields.len());
            let mut parts = Vec::with_capacity(fields.len());
            for f in fields {
                let Some(name) = f.field_name.as_ref().map(ident) else {
                    return Err(WeirError::new(SqlState::SyntaxError, "every STRUCT field needs a name"));
                };
                if names.contains(&name) {
                    return Err(WeirError::new(SqlState::DuplicateObject, format!("STRUCT field \"{name}\" specified more than once")));
                }
                parts.push(format!("{} {}", crate::pg_compat::quote_ident(&name), pg_type_for_sql(&f.field_type)?));
                names.push(name);
            }
            format!("struct<{}>", parts.join(", "))
        }
        other => {
            return Err(WeirError::new(
                SqlState::FeatureNotSupported,
                format!("type {other} is not supported in tables yet"),
            ));
        }
    })
}

fn check_precision(p: u64, s: u64) -> Result<()> {
    if !(1..=38).contains(&p) || s > p {
        return Err(WeirError::new(
            SqlState::InvalidParameterValue,
            format!("NUMERIC precision {p} and scale {s} are out of range (precision 1 to 38, scale 0 to precision)"),
        ));
    }
    Ok(())
}

/// Makes DataFusion's output batches into one batch of exactly the table's schema: casts each
/// column to the column type (with Postgres-style errors) and enforces NOT NULL.
pub fn conform_batches(batches: &[RecordBatch], schema: &SchemaRef, table: &str) -> Result<RecordBatch> {
    let mut columns: Vec<Vec<ArrayRef>> = vec![Vec::new(); schema.fields().len()];
    for b in batches {
        if b.num_columns() != schema.fields().len() {
            return Err(WeirError::internal(format!(
                "expected {} columns for \"{table}\", got {}",
                schema.fields().len(),
                b.num_columns()
            )));
        }
        for (i, c) in b.columns().iter().enumerate() {
            columns[i].push(c.clone());
        }
    }
    let opts = CastOptions { safe: false, ..Default::default() };
    let mut out = Vec::with_capacity(columns.len());
    for (i, field) in schema.fields().iter().enumerate() {
        let parts: Vec<&dyn datafusion::arrow::array::Array> = columns[i].iter().map(|a| a.as_ref()).collect();
        let array = if parts.is_empty() {
            datafusion::arrow::array::new_empty_array(field.data_type())
        } else {
            datafusion::arrow::compute::concat(&parts)?
        };
        let array = if array.data_type() == field.data_type() {
            array
        } else {
            cast_with_options(&array, field.data_type(), &opts)?
        };
        if !field.is_nullable() && array.null_count() > 0 {
            return Err(WeirError::new(
                SqlState::NotNullViolation,
                format!(
                    "null value in column \"{}\" of relation \"{table}\" violates not-null constraint",
                    field.name()
                ),
            ));
        }
        out.push(array);
    }
    Ok(RecordBatch::try_new(schema.clone(), out)?)
}

/// A small in-memory result (SHOW and friends).
/// The result columns of `DESCRIBE relation` (also what Describe in the extended protocol
/// reports for it).
pub const DESCRIBE_COLUMNS: [&str; 4] = ["name", "type", "nullable", "description"];

fn rows_outcome(names: &[&str], columns: Vec<Vec<String>>, tag: &'static str) -> Result<Outcome> {
    let schema = Arc::new(Schema::new(
        names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> =
        columns.into_iter().map(|c| Arc::new(StringArray::from(c)) as ArrayRef).collect();
    let batch = RecordBatch::try_new(schema.clone(), arrays)?;
    let stream = RecordBatchStreamAdapter::new(schema.clone(), futures::stream::iter(vec![Ok(batch)]));
    Ok(Outcome::Rows { schema, stream: Box::pin(stream), tag })
}

/// Drains an outcome's rows (tests and COPY).
pub async fn collect_rows(stream: SendableRecordBatchStream) -> Result<Vec<RecordBatch>> {
    let mut out = Vec::new();
    let mut s = stream;
    while let Some(b) = s.next().await {
        out.push(b?);
    }
    Ok(out)
}
