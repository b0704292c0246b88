//! Weir's [`Statement`]: sqlparser's AST for standard SQL, Weir's own structs for streaming DDL.
//!
//! `Display` prints SQL that [`crate::parse`] reads back into an equal statement; the catalog
//! stores that text as an object's definition. [`Statement::to_redacted_string`] prints the
//! same with secret option values replaced by `'***'`.

use std::fmt;

use sqlparser::ast::{self, ColumnDef, Expr, Ident, ObjectName, Query};

use crate::options::{WithOption, fmt_option_list, fmt_with_options};

/// The kinds of named objects a user can create, show and drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectKind {
    Table,
    Source,
    MaterializedView,
    View,
    Sink,
}

impl ObjectKind {
    /// The SQL spelling (`MATERIALIZED VIEW`), as used in `SHOW CREATE` and `DROP`.
    pub fn sql_name(self) -> &'static str {
        match self {
            ObjectKind::Table => "TABLE",
            ObjectKind::Source => "SOURCE",
            ObjectKind::MaterializedView => "MATERIALIZED VIEW",
            ObjectKind::View => "VIEW",
            ObjectKind::Sink => "SINK",
        }
    }

    /// The plural used by `SHOW <kinds>`.
    pub fn plural_sql_name(self) -> &'static str {
        match self {
            ObjectKind::Table => "TABLES",
            ObjectKind::Source => "SOURCES",
            ObjectKind::MaterializedView => "MATERIALIZED VIEWS",
            ObjectKind::View => "VIEWS",
            ObjectKind::Sink => "SINKS",
        }
    }
}

impl fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.sql_name())
    }
}

/// One statement Weir accepts.
#[derive(Debug, Clone, PartialEq)]
pub enum Statement {
    /// Standard SQL in sqlparser's Postgres dialect: CREATE TABLE, INSERT, UPDATE, DELETE, COPY,
    /// SELECT, DROP, EXPLAIN, BEGIN/COMMIT/ROLLBACK, SET/SHOW/RESET, ...
    Standard(Box<ast::Statement>),
    CreateSource(Box<CreateSource>),
    /// `CREATE TABLE` with streaming clauses: `WATERMARK FOR` in the column list, `APPEND ONLY`
    /// after it (plain `CREATE TABLE` is [`Statement::Standard`]).
    CreateStreamingTable(Box<CreateStreamingTable>),
    CreateMaterializedView(Box<CreateMaterializedView>),
    CreateSink(Box<CreateSink>),
    Subscribe(Box<Subscribe>),
    /// `COPY (SUBSCRIBE ...) TO STDOUT [WITH (...)]`: the subscription streamed as COPY data.
    /// `copy` is the statement with `(SELECT 1)` in place of the subscription, for its options.
    CopySubscribe { subscribe: Box<Subscribe>, copy: Box<ast::Statement> },
    /// `DECLARE name CURSOR FOR SUBSCRIBE ...` (in a transaction block), read with FETCH.
    DeclareSubscribe { name: Ident, subscribe: Box<Subscribe> },
    /// `FETCH [FORWARD] [n | ALL] [FROM | IN] cursor [WITH (timeout = '1s')]` (Materialize's
    /// FETCH: it waits until at least one row is there, or until the timeout).
    Fetch { cursor: Ident, count: Option<u64>, with: Vec<WithOption> },
    /// `FLUSH`: wait until everything accepted so far is reflected in every view.
    Flush,
    /// `SHOW TABLES | SOURCES | MATERIALIZED VIEWS | VIEWS | SINKS`.
    ShowObjects(ObjectKind),
    /// `SHOW CREATE <kind> <name>`.
    ShowCreate { kind: ObjectKind, name: ObjectName },
    /// `DROP SOURCE | SINK ...` (other kinds are standard SQL).
    Drop { kind: ObjectKind, names: Vec<ObjectName>, if_exists: bool, cascade: bool },
    /// `EXPLAIN CREATE MATERIALIZED VIEW ...`: the dataflow the view would run.
    ExplainCreateMaterializedView(Box<CreateMaterializedView>),
    /// `ALTER MATERIALIZED VIEW name SET (option = value, ...)` (`retention`).
    AlterMaterializedViewSet { name: ObjectName, options: Vec<WithOption> },
    /// `CREATE USER | ROLE name [WITH] option ...`; a user may log in unless it says NOLOGIN,
    /// a role only with LOGIN (as in Postgres).
    CreateRole { name: Ident, user: bool, options: RoleOptions },
    /// `ALTER USER | ROLE name [WITH] option ...`.
    AlterRole { name: Ident, options: RoleOptions },
    /// `DROP USER | ROLE [IF EXISTS] name [, ...]`.
    DropRole { names: Vec<Ident>, if_exists: bool },
}

/// The options of `CREATE/ALTER USER`: each `None` when not given.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RoleOptions {
    pub superuser: Option<bool>,
    pub login: Option<bool>,
    /// `PASSWORD 'p'` (`Some(Some)`) or `PASSWORD NULL` (`Some(None)`).
    pub password: Option<Option<String>>,
}

impl RoleOptions {
    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>, redact: bool) -> fmt::Result {
        if let Some(superuser) = self.superuser {
            write!(f, " {}", if superuser { "SUPERUSER" } else { "NOSUPERUSER" })?;
        }
        if let Some(login) = self.login {
            write!(f, " {}", if login { "LOGIN" } else { "NOLOGIN" })?;
        }
        match &self.password {
            Some(Some(_)) if redact => write!(f, " PASSWORD '***'"),
            Some(Some(p)) => write!(f, " PASSWORD '{}'", p.replace('\'', "''")),
            Some(None) => write!(f, " PASSWORD NULL"),
            None => Ok(()),
        }
    }
}

impl Statement {
    /// A short name for the statement kind, used in metrics labels and "not supported" errors.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Statement::Standard(s) => standard_kind_name(s),
            Statement::CreateSource(_) => "CREATE SOURCE",
            Statement::CreateStreamingTable(_) => "CREATE TABLE",
            Statement::CreateMaterializedView(_) => "CREATE MATERIALIZED VIEW",
            Statement::CreateSink(_) => "CREATE SINK",
            Statement::Subscribe(_) => "SUBSCRIBE",
            Statement::CopySubscribe { .. } => "COPY",
            Statement::DeclareSubscribe { .. } => "DECLARE CURSOR",
            Statement::Fetch { .. } => "FETCH",
            Statement::Flush => "FLUSH",
            Statement::ShowObjects(_) => "SHOW",
            Statement::ShowCreate { .. } => "SHOW CREATE",
            Statement::Drop { kind: ObjectKind::Source, .. } => "DROP SOURCE",
            Statement::Drop { .. } => "DROP SINK",
            Statement::ExplainCreateMaterializedView(_) => "EXPLAIN",
            Statement::AlterMaterializedViewSet { .. } => "ALTER MATERIALIZED VIEW",
            Statement::CreateRole { .. } => "CREATE ROLE",
            Statement::AlterRole { .. } => "ALTER ROLE",
            Statement::DropRole { .. } => "DROP ROLE",
        }
    }

    /// Every `WITH (...)` and `FORMAT ... ENCODE ... (...)` option of a streaming DDL
    /// statement, for rewriting values in place (sealing secrets for storage).
    pub fn options_mut(&mut self) -> Vec<&mut WithOption> {
        let (with, format) = match self {
            Statement::CreateSource(s) => (&mut s.with, s.format.as_mut()),
            Statement::CreateSink(s) => (&mut s.with, s.format.as_mut()),
            Statement::CreateMaterializedView(s) => (&mut s.with, None),
            _ => return Vec::new(),
        };
        with.iter_mut().chain(format.into_iter().flat_map(|f| f.options.iter_mut())).collect()
    }

    /// The statement as SQL with secret option values replaced by `'***'`.
    pub fn to_redacted_string(&self) -> String {
        struct Redacted<'a>(&'a Statement);
        impl fmt::Display for Redacted<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt_sql(f, true)
            }
        }
        Redacted(self).to_string()
    }

    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>, redact: bool) -> fmt::Result {
        match self {
            Statement::Standard(s) => write!(f, "{s}"),
            Statement::CreateSource(s) => s.fmt_sql(f, redact),
            Statement::CreateStreamingTable(t) => write!(f, "{t}"),
            Statement::CreateMaterializedView(s) => s.fmt_sql(f, redact),
            Statement::CreateSink(s) => s.fmt_sql(f, redact),
            Statement::Subscribe(s) => s.fmt_sql(f, redact),
            Statement::CopySubscribe { subscribe, copy } => {
                let copy = copy.to_string();
                let rest = copy.split_once("(SELECT 1)").map(|(_, rest)| rest).unwrap_or("");
                write!(f, "COPY (")?;
                subscribe.fmt_sql(f, redact)?;
                write!(f, "){rest}")
            }
            Statement::DeclareSubscribe { name, subscribe } => {
                write!(f, "DECLARE {name} CURSOR FOR ")?;
                subscribe.fmt_sql(f, redact)
            }
            Statement::Fetch { cursor, count, with } => {
                match count {
                    Some(n) => write!(f, "FETCH {n} {cursor}")?,
                    None => write!(f, "FETCH ALL {cursor}")?,
                }
                fmt_with_options(f, with, redact)
            }
            Statement::Flush => write!(f, "FLUSH"),
            Statement::AlterMaterializedViewSet { name, options } => {
                write!(f, "ALTER MATERIALIZED VIEW {name} SET ")?;
                fmt_option_list(f, options, redact)
            }
            Statement::ShowObjects(kind) => write!(f, "SHOW {}", kind.plural_sql_name()),
            Statement::ShowCreate { kind, name } => write!(f, "SHOW CREATE {kind} {name}"),
            Statement::Drop { kind, names, if_exists, cascade } => {
                write!(f, "DROP {kind} ")?;
                if *if_exists {
                    write!(f, "IF EXISTS ")?;
                }
                let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                write!(f, "{}", names.join(", "))?;
                if *cascade {
                    write!(f, " CASCADE")?;
                }
                Ok(())
            }
            Statement::ExplainCreateMaterializedView(s) => {
                write!(f, "EXPLAIN ")?;
                s.fmt_sql(f, redact)
            }
            Statement::CreateRole { name, user, options } => {
                write!(f, "CREATE {} {name}", if *user { "USER" } else { "ROLE" })?;
                options.fmt_sql(f, redact)
            }
            Statement::AlterRole { name, options } => {
                write!(f, "ALTER ROLE {name}")?;
                options.fmt_sql(f, redact)
            }
            Statement::DropRole { names, if_exists } => {
                let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
                write!(f, "DROP ROLE {}{}", if *if_exists { "IF EXISTS " } else { "" }, names.join(", "))
            }
        }
    }
}

impl fmt::Display for Statement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_sql(f, false)
    }
}

/// The command-tag style name of a standard statement (`INSERT`, `CREATE TABLE`, ...).
fn standard_kind_name(s: &ast::Statement) -> &'static str {
    use ast::Statement as S;
    match s {
        S::Query(_) => "SELECT",
        S::Insert(_) => "INSERT",
        S::Update(_) => "UPDATE",
        S::Delete(_) => "DELETE",
        S::Copy { .. } => "COPY",
        S::CreateTable(_) => "CREATE TABLE",
        S::CreateView(_) => "CREATE VIEW",
        S::Drop { .. } => "DROP",
        S::Explain { .. } => "EXPLAIN",
        S::StartTransaction { .. } => "BEGIN",
        S::Commit { .. } => "COMMIT",
        S::Rollback { .. } => "ROLLBACK",
        S::Set(_) => "SET",
        S::ShowVariable { .. } => "SHOW",
        S::Declare { .. } => "DECLARE",
        S::Fetch { .. } => "FETCH",
        S::Close { .. } => "CLOSE",
        S::Prepare { .. } => "PREPARE",
        S::Execute { .. } => "EXECUTE",
        S::Deallocate { .. } => "DEALLOCATE",
        S::Discard { .. } => "DISCARD",
        _ => "OTHER",
    }
}

/// `WATERMARK FOR col AS expr`: the event-time column and the watermark expression over it.
#[derive(Debug, Clone, PartialEq)]
pub struct Watermark {
    pub column: Ident,
    pub expr: Expr,
}

impl fmt::Display for Watermark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WATERMARK FOR {} AS {}", self.column, self.expr)
    }
}

/// `FORMAT <format> ENCODE <encode> [(options)]` (RisingWave's syntax).
#[derive(Debug, Clone, PartialEq)]
pub struct FormatEncode {
    pub format: Ident,
    pub encode: Ident,
    pub options: Vec<WithOption>,
}

impl FormatEncode {
    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>, redact: bool) -> fmt::Result {
        write!(f, " FORMAT {} ENCODE {}", self.format, self.encode)?;
        if !self.options.is_empty() {
            write!(f, " ")?;
            fmt_option_list(f, &self.options, redact)?;
        }
        Ok(())
    }
}

/// `CREATE TABLE name (columns, WATERMARK FOR col AS expr) [APPEND ONLY]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateStreamingTable {
    pub table: ast::CreateTable,
    pub watermark: Option<Watermark>,
    pub append_only: bool,
}

impl fmt::Display for CreateStreamingTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.table.to_string();
        // The watermark goes inside the column list: before the parenthesis that closes it.
        let close = self.watermark.as_ref().and_then(|_| column_list_end(&table));
        match (&self.watermark, close) {
            (Some(w), Some(i)) => write!(f, "{}, {w}{}", &table[..i], &table[i..])?,
            _ => write!(f, "{table}")?,
        }
        if self.append_only {
            write!(f, " APPEND ONLY")?;
        }
        Ok(())
    }
}

/// The byte offset of the `)` closing the first parenthesized list of `sql`, skipping quoted
/// text.
fn column_list_end(sql: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote: Option<char> = None;
    for (i, c) in sql.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(') => depth += 1,
            (None, ')') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `CREATE SOURCE [IF NOT EXISTS] name (columns [, WATERMARK ...]) [INCLUDE ...] WITH (...)
/// [FORMAT ... ENCODE ...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSource {
    pub if_not_exists: bool,
    pub name: ObjectName,
    pub columns: Vec<ColumnDef>,
    pub watermark: Option<Watermark>,
    /// `INCLUDE key|partition|offset|timestamp [AS alias]` (Kafka metadata columns).
    pub include: Vec<(Ident, Option<Ident>)>,
    pub with: Vec<WithOption>,
    pub format: Option<FormatEncode>,
}

impl CreateSource {
    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>, redact: bool) -> fmt::Result {
        write!(f, "CREATE SOURCE ")?;
        if self.if_not_exists {
            write!(f, "IF NOT EXISTS ")?;
        }
        write!(f, "{} (", self.name)?;
        let mut first = true;
        for c in &self.columns {
            if !first {
                write!(f, ", ")?;
            }
            first = false;
            write!(f, "{c}")?;
        }
        if let Some(w) = &self.watermark {
            if !first {
                write!(f, ", ")?;
            }
            write!(f, "{w}")?;
        }
        write!(f, ")")?;
        for (what, alias) in &self.include {
            write!(f, " INCLUDE {what}")?;
            if let Some(a) = alias {
                write!(f, " AS {a}")?;
            }
        }
        fmt_with_options(f, &self.with, redact)?;
        if let Some(fe) = &self.format {
            fe.fmt_sql(f, redact)?;
        }
        Ok(())
    }
}

/// `CREATE MATERIALIZED VIEW [IF NOT EXISTS] name [WITH (...)] AS query [EMIT ON WINDOW CLOSE]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateMaterializedView {
    pub if_not_exists: bool,
    pub name: ObjectName,
    pub with: Vec<WithOption>,
    pub query: Box<Query>,
    pub emit_on_window_close: bool,
}

impl CreateMaterializedView {
    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>, redact: bool) -> fmt::Result {
        write!(f, "CREATE MATERIALIZED VIEW ")?;
        if self.if_not_exists {
            write!(f, "IF NOT EXISTS ")?;
        }
        write!(f, "{}", self.name)?;
        fmt_with_options(f, &self.with, redact)?;
        write!(f, " AS {}", self.query)?;
        if self.emit_on_window_close {
            write!(f, " EMIT ON WINDOW CLOSE")?;
        }
        Ok(())
    }
}

/// What a sink reads: a named view/table, or its own query.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkInput {
    Object(ObjectName),
    /// `AS query [EMIT ON WINDOW CLOSE]`: the sink maintains the query like a view of its own.
    Query { query: Box<Query>, emit_on_window_close: bool },
}

/// `CREATE SINK [IF NOT EXISTS] name FROM object | AS query [EMIT ON WINDOW CLOSE] WITH (...)
/// [FORMAT ... ENCODE ...]`.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateSink {
    pub if_not_exists: bool,
    pub name: ObjectName,
    pub input: SinkInput,
    pub with: Vec<WithOption>,
    pub format: Option<FormatEncode>,
}

impl CreateSink {
    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>, redact: bool) -> fmt::Result {
        write!(f, "CREATE SINK ")?;
        if self.if_not_exists {
            write!(f, "IF NOT EXISTS ")?;
        }
        write!(f, "{}", self.name)?;
        match &self.input {
            SinkInput::Object(o) => write!(f, " FROM {o}")?,
            SinkInput::Query { query, emit_on_window_close } => {
                write!(f, " AS {query}")?;
                if *emit_on_window_close {
                    write!(f, " EMIT ON WINDOW CLOSE")?;
                }
            }
        }
        fmt_with_options(f, &self.with, redact)?;
        if let Some(fe) = &self.format {
            fe.fmt_sql(f, redact)?;
        }
        Ok(())
    }
}

/// What a `SUBSCRIBE` follows.
#[derive(Debug, Clone, PartialEq)]
pub enum SubscribeTarget {
    Object(ObjectName),
    Query(Box<Query>),
}

/// `SUBSCRIBE [TO] object | (query) [WITH (snapshot = ..., progress = ...)]` (Materialize).
#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    pub target: SubscribeTarget,
    pub with: Vec<WithOption>,
}

impl Subscribe {
    fn fmt_sql(&self, f: &mut fmt::Formatter<'_>, redact: bool) -> fmt::Result {
        write!(f, "SUBSCRIBE ")?;
        match &self.target {
            SubscribeTarget::Object(o) => write!(f, "{o}")?,
            SubscribeTarget::Query(q) => write!(f, "({q})")?,
        }
        fmt_with_options(f, &self.with, redact)
    }
}
