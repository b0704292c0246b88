//! The Postgres wire protocol, on `pgwire`.
//!
//! pgwire parses and frames messages; this module connects its handler traits to
//! [`Session`]: startup (database check, settings from startup parameters, cancel keys), the
//! simple protocol (several statements per message, run in one implicit transaction as Postgres
//! does), the extended protocol (Parse plans with DataFusion so Describe can report parameter
//! and column types; Bind decodes parameters with arrow-pg; Execute runs), COPY, and cancel.
//!
//! The transaction status byte of ReadyForQuery always comes from the session, which is the
//! one place that knows whether a block is open, failed or committed.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::execution::SendableRecordBatchStream;
use futures::future::{Either, select};
use futures::{Sink, SinkExt, StreamExt, stream};
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{
    ExtendedQueryHandler, SimpleQueryHandler, send_execution_response, send_query_response,
    send_ready_for_query,
};
use pgwire::api::results::{
    CopyResponse, DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionHandle, ConnectionManager, ErrorHandler,
    PgWireConnectionState, PgWireServerHandlers, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::response::{EmptyQueryResponse, TransactionStatus};
use pgwire::messages::startup::{Authentication, ParameterStatus, PasswordMessageFamily};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tokio::sync::Mutex;

use crate::auth::{AuthMethod, scram};
use crate::database::{DATABASE_NAME, Database};
use crate::error::{SqlState, WeirError};
use tracing::Instrument;
use crate::session::{Outcome, Prepared, Session};
use crate::text_format::ColumnText;

/// The per-connection session, kept in pgwire's session extensions.
type SharedSession = Arc<Mutex<Session>>;

/// Unregisters a connection (metrics, cancel registry) when pgwire drops its extensions.
struct ConnectionGuard {
    db: Arc<Database>,
    pid: i32,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.db.metrics.connections_active.fetch_sub(1, Ordering::Relaxed);
        self.db.cancel.unregister(self.pid);
    }
}

pub struct WeirPgHandlers {
    db: Arc<Database>,
    startup: Arc<WeirStartup>,
    query: Arc<WeirQueryHandler>,
    cancel: Arc<DefaultCancelHandler>,
}

impl WeirPgHandlers {
    pub fn new(db: Arc<Database>) -> Self {
        let manager = Arc::new(ConnectionManager::new());
        WeirPgHandlers {
            startup: Arc::new(WeirStartup {
                db: db.clone(),
                manager: manager.clone(),
                next_pid: std::sync::atomic::AtomicI32::new(std::process::id() as i32 % 100_000 * 10 + 1),
            }),
            query: Arc::new(WeirQueryHandler { db: db.clone(), parser: Arc::new(WeirQueryParser) }),
            cancel: Arc::new(DefaultCancelHandler::new(manager)),
            db,
        }
    }
}

impl PgWireServerHandlers for WeirPgHandlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.query.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.query.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        self.startup.clone()
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.query.clone()
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(WeirErrorHandler { db: self.db.clone() })
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

struct WeirErrorHandler {
    db: Arc<Database>,
}

impl ErrorHandler for WeirErrorHandler {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        let code = match error {
            PgWireError::UserError(info) => info.code.clone(),
            PgWireError::QueryCanceled => "57014".to_string(),
            _ => "08P01".to_string(),
        };
        self.db.metrics.error(&code);
        tracing::debug!(sqlstate = %code, error = %error, "statement failed");
    }
}

pub struct WeirStartup {
    db: Arc<Database>,
    manager: Arc<ConnectionManager>,
    next_pid: std::sync::atomic::AtomicI32,
}

/// The ParameterStatus values sent after authentication: the session's reported settings.
struct SessionParameters(HashMap<String, String>);

impl ServerParameterProvider for SessionParameters {
    fn server_parameters<C>(&self, _client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        Some(self.0.clone())
    }
}

#[async_trait]
impl StartupHandler for WeirStartup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let startup = match message {
            PgWireFrontendMessage::Startup(startup) => startup,
            PgWireFrontendMessage::PasswordMessageFamily(message) => return self.on_password_message(client, message).await,
            _ => return Ok(()),
        };
        protocol_negotiation(client, &startup).await?;
        save_startup_parameters_to_metadata(client, &startup);
        let user = client.metadata().get("user").cloned().unwrap_or_else(|| "weir".to_string());
        // Postgres defaults the database to the user name.
        let database = client.metadata().get("database").cloned().unwrap_or_else(|| user.clone());
        if database != DATABASE_NAME {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                SqlState::InvalidCatalogName.code().into(),
                format!("database \"{database}\" does not exist"),
            ))));
        }
        if self.db.config.tls_required && !client.is_secure() {
            // Postgres's answer when only `hostssl` lines match, before any password is asked.
            let peer = client.socket_addr().ip();
            tracing::warn!(user, %peer, "connection refused: TLS is required");
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                SqlState::InvalidAuthorizationSpecification.code().into(),
                format!("no pg_hba.conf entry for host \"{peer}\", user \"{user}\", database \"{database}\", no encryption"),
            ))));
        }
        if self.db.config.auth_method() == AuthMethod::Password {
            let peer = client.socket_addr().ip();
            if let Some(wait) = self.db.logins.blocked(peer) {
                self.db.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(user, %peer, "login refused: too many failed logins from this address");
                return Err(login_failed(&user, Some(wait)));
            }
            client.set_state(PgWireConnectionState::AuthenticationInProgress);
            client.send(PgWireBackendMessage::Authentication(Authentication::SASL(vec![scram::MECHANISM.to_string()]))).await?;
            client.session_extensions().insert(PendingLogin(std::sync::Mutex::new(LoginStage::AwaitingFirst { user })));
            return Ok(());
        }
        self.start_session(client, user).await
    }
}

/// A SCRAM exchange in progress on one connection (kept in its session extensions).
struct PendingLogin(std::sync::Mutex<LoginStage>);

enum LoginStage {
    AwaitingFirst { user: String },
    AwaitingFinal { user: String, exchange: Box<scram::Exchange> },
    Done,
}

/// `FATAL 28P01`, the same for a wrong password, an unknown user and a role that may not log
/// in (as Postgres), so the answer does not tell which names exist.
fn login_failed(user: &str, retry_in: Option<std::time::Duration>) -> PgWireError {
    let mut info = ErrorInfo::new(
        "FATAL".into(),
        SqlState::InvalidPassword.code().into(),
        format!("password authentication failed for user \"{user}\""),
    );
    if let Some(wait) = retry_in {
        info.detail = Some("Too many failed logins from this address.".into());
        info.hint = Some(format!("Try again in {} s.", wait.as_secs().max(1)));
    }
    PgWireError::UserError(Box::new(info))
}

impl WeirStartup {
    /// The client's SCRAM messages: the first gets the server's challenge, the final one is
    /// checked against the role's verifier and, when it holds, starts the session.
    async fn on_password_message<C>(&self, client: &mut C, message: PasswordMessageFamily) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let Some(pending) = client.session_extensions().get::<PendingLogin>() else {
            return Err(WeirError::new(SqlState::ProtocolViolation, "unexpected password message").into());
        };
        let stage = std::mem::replace(&mut *pending.0.lock().unwrap_or_else(|p| p.into_inner()), LoginStage::Done);
        let peer = client.socket_addr().ip();
        match stage {
            LoginStage::AwaitingFirst { user } => {
                let first = message.into_sasl_initial_response()?;
                if first.auth_method != scram::MECHANISM {
                    return Err(WeirError::new(SqlState::ProtocolViolation, format!("SASL mechanism {} is not offered", first.auth_method)).into());
                }
                // An unknown user, one that may not log in or has no password goes through the
                // same exchange with a verifier nothing matches.
                let verifier = crate::roles::login_verifier(&self.db, &user).unwrap_or_else(|| scram::Verifier::mock(&user));
                let data = first.data.unwrap_or_default();
                let (exchange, server_first) = scram::Exchange::start(&data, verifier)
                    .map_err(|e| WeirError::new(SqlState::ProtocolViolation, e.to_string()))?;
                client.send(PgWireBackendMessage::Authentication(Authentication::SASLContinue(server_first.into_bytes().into()))).await?;
                *pending.0.lock().unwrap_or_else(|p| p.into_inner()) = LoginStage::AwaitingFinal { user, exchange: Box::new(exchange) };
                Ok(())
            }
            LoginStage::AwaitingFinal { user, exchange } => {
                let last = message.into_sasl_response()?;
                match exchange.finish(&last.data) {
                    Ok(server_final) => {
                        self.db.logins.succeeded(peer);
                        client.send(PgWireBackendMessage::Authentication(Authentication::SASLFinal(server_final.into_bytes().into()))).await?;
                        tracing::info!(user, %peer, "login");
                        self.start_session(client, user).await
                    }
                    Err(scram::ScramError::WrongPassword) => {
                        self.db.logins.failed(peer);
                        self.db.metrics.auth_failures.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(user, %peer, "password authentication failed");
                        Err(login_failed(&user, None))
                    }
                    Err(e) => Err(WeirError::new(SqlState::ProtocolViolation, e.to_string()).into()),
                }
            }
            LoginStage::Done => Err(WeirError::new(SqlState::ProtocolViolation, "unexpected password message").into()),
        }
    }

    /// Registers an authenticated client's session and sends AuthenticationOk, the reported
    /// settings and ReadyForQuery.
    async fn start_session<C>(&self, client: &mut C, user: String) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // At most max_connections sessions, as Postgres: counted here, after the startup
        // message, so that a CancelRequest (which never starts a session) still gets through
        // when the server is full. Incremented first and checked after, so two startups racing
        // for the last place cannot both win; the ConnectionGuard below decrements it.
        let active = self.db.metrics.connections_active.fetch_add(1, Ordering::SeqCst) + 1;
        if active > self.db.config.max_connections as i64 {
            self.db.metrics.connections_active.fetch_sub(1, Ordering::SeqCst);
            self.db.metrics.connections_over_limit.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(max_connections = self.db.config.max_connections, "refusing a connection: too many clients");
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                SqlState::TooManyConnections.code().into(),
                "sorry, too many clients already".into(),
            ))));
        }
        // pgwire's generator gives every connection the same pid; `pg_cancel_backend(pid)` and
        // `pg_backend_pid()` need them distinct.
        let (_, secret) = RandomPidSecretKeyGenerator::default().generate(client);
        let pid = self.next_pid.fetch_add(1, Ordering::Relaxed);
        client.set_pid_and_secret_key(pid, secret.clone());
        let (handle, guard) = self.manager.register(pid, secret);
        client.session_extensions().insert::<Arc<ConnectionHandle>>(handle.clone());
        client.session_extensions().insert(guard);
        self.db.cancel.register(pid, handle);
        self.db.metrics.connections_total.fetch_add(1, Ordering::Relaxed);
        client.session_extensions().insert(ConnectionGuard { db: self.db.clone(), pid });

        let mut session = Session::new(self.db.clone(), pid, user.clone());
        session.settings.apply_startup(client.metadata());
        if let Err(e) = session.settings.set("session_authorization", &user) {
            tracing::debug!(error = %e, "cannot record the session user");
        }
        let superuser = crate::roles::is_superuser(&self.db, &user);
        session.settings.set_by_server("is_superuser", if superuser { "on" } else { "off" });
        let mut params: HashMap<String, String> = HashMap::new();
        for name in [
            "server_version",
            "server_encoding",
            "client_encoding",
            "application_name",
            "DateStyle",
            "IntervalStyle",
            "TimeZone",
            "integer_datetimes",
            "standard_conforming_strings",
            "is_superuser",
            "default_transaction_read_only",
            "in_hot_standby",
        ] {
            if let Some(v) = session.settings.get(name) {
                params.insert(name.to_string(), v);
            }
        }
        params.insert("session_authorization".into(), user);
        client.session_extensions().insert::<SharedSession>(Arc::new(Mutex::new(session)));
        finish_authentication(client, &SessionParameters(params)).await?;
        Ok(())
    }
}

fn session_of<C: ClientInfo + ?Sized>(client: &C) -> PgWireResult<SharedSession> {
    client
        .session_extensions()
        .get::<SharedSession>()
        .map(|s| s.as_ref().clone())
        .ok_or_else(|| WeirError::new(SqlState::ProtocolViolation, "no session: startup did not complete").into())
}

pub struct WeirQueryHandler {
    db: Arc<Database>,
    parser: Arc<WeirQueryParser>,
}

/// Runs `work` so that `statement_timeout` and, when `cancel` is set, a CancelRequest or
/// `pg_cancel_backend` stop it. (pgwire already listens for cancel around an extended-protocol
/// Execute; starting a second listener there would cancel pgwire's.)
async fn cancellable<C, T>(
    client: &C,
    cancel: bool,
    timeout: Option<std::time::Duration>,
    work: impl std::future::Future<Output = Result<T, WeirError>>,
) -> Result<T, WeirError>
where
    C: ClientInfo + ?Sized,
{
    let cancel_rx = match client.session_extensions().get::<Arc<ConnectionHandle>>() {
        Some(h) if cancel => Some(h.start_query().await),
        _ => None,
    };
    let work = async move {
        match timeout {
            Some(t) => tokio::time::timeout(t, work)
                .await
                .unwrap_or_else(|_| Err(WeirError::canceled("statement timeout"))),
            None => work.await,
        }
    };
    let work = std::pin::pin!(work);
    match cancel_rx {
        Some(rx) => match select(work, rx).await {
            Either::Left((r, _)) => r,
            Either::Right((Ok(()), _)) => Err(WeirError::canceled("user request")),
            // The sender was replaced (a newer statement started): nothing canceled us.
            Either::Right((Err(_), work)) => work.await,
        },
        None => work.await,
    }
}

/// Sends a never-ending COPY TO: CopyOutResponse, then each batch of rows as CopyData, flushed
/// at once (a subscriber waits for them). It ends only with an error: the subscription failed,
/// or the client canceled (CancelRequest, `pg_cancel_backend`) or `statement_timeout` passed
/// (57014). The error is returned for the caller to send.
async fn send_copy_out_stream<C>(
    client: &mut C,
    columns: usize,
    format: &crate::copy::CopyFormat,
    mut rows: futures::stream::BoxStream<'static, Result<Vec<Vec<u8>>, WeirError>>,
    timeout: Option<std::time::Duration>,
    listen_for_cancel: bool,
) -> PgWireResult<WeirError>
where
    C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
    C::Error: Debug,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let mut cancel = match client.session_extensions().get::<Arc<ConnectionHandle>>() {
        Some(h) if listen_for_cancel => Some(h.start_query().await),
        _ => None,
    };
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let header = pgwire::messages::copy::CopyOutResponse::new(format.wire_format(), columns as i16, vec![format.wire_format() as i16; columns]);
    client.send(PgWireBackendMessage::CopyOutResponse(header)).await?;
    loop {
        let timed_out = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let canceled = async {
            match cancel.as_mut() {
                Some(rx) => match rx.await {
                    Ok(()) => {}
                    // Replaced by a newer statement's listener: nothing cancels this one.
                    Err(_) => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            next = rows.next() => match next {
                Some(Ok(batch)) => {
                    for row in batch {
                        client.feed(PgWireBackendMessage::CopyData(CopyData::new(row.into()))).await?;
                    }
                    client.flush().await?;
                }
                Some(Err(e)) => return Ok(e),
                None => return Ok(WeirError::internal("the subscription ended")),
            },
            () = canceled => return Ok(WeirError::canceled("user request")),
            () = timed_out => return Ok(WeirError::canceled("statement timeout")),
        }
    }
}

/// Pulls the first batch inside the cancellable region: blocking operators (aggregates,
/// sorts) do their work before the first batch, so cancel and timeouts cover it.
async fn prefetch(mut stream: SendableRecordBatchStream) -> Result<(Option<RecordBatch>, SendableRecordBatchStream), WeirError> {
    match stream.next().await {
        Some(Ok(b)) => Ok((Some(b), stream)),
        Some(Err(e)) => Err(e.into()),
        None => Ok((None, stream)),
    }
}

enum Ready {
    Rows { schema: SchemaRef, first: Option<RecordBatch>, rest: SendableRecordBatchStream, tag: &'static str },
    Other(Outcome),
}

async fn run_and_prefetch(outcome: Result<Outcome, WeirError>) -> Result<Ready, WeirError> {
    match outcome? {
        Outcome::Rows { schema, stream, tag } => {
            let (first, rest) = prefetch(stream).await?;
            Ok(Ready::Rows { schema, first, rest, tag })
        }
        other => Ok(Ready::Other(other)),
    }
}

/// Encodes result batches as DataRows: text columns in Postgres's text format (ours), binary
/// columns with arrow-pg's binary encoders.
fn query_response(
    schema: SchemaRef,
    first: Option<RecordBatch>,
    rest: SendableRecordBatchStream,
    format: &Format,
    session_tz: String,
    tag: &str,
) -> PgWireResult<QueryResponse> {
    let fields = Arc::new(pg_fields(&schema, format)?);
    let fields_for_rows = fields.clone();
    let batches = stream::iter(first.map(Ok)).chain(rest);
    let rows = batches
        .map(move |batch| {
            let rows: Vec<PgWireResult<pgwire::messages::data::DataRow>> = match batch {
                Ok(b) => encode_batch(&b, &fields_for_rows, &session_tz),
                Err(e) => vec![Err(PgWireError::from(WeirError::from(e)))],
            };
            stream::iter(rows)
        })
        .flatten();
    let mut response = QueryResponse::new(fields, rows);
    response.set_command_tag(tag);
    Ok(response)
}

/// RowDescription fields: arrow-pg's type mapping, corrected by the declared type of columns
/// that come straight from a table (`varchar(40)` is sent as varchar with typmod 44, not text).
pub fn pg_fields(schema: &Schema, format: &Format) -> PgWireResult<Vec<FieldInfo>> {
    let fields = datafusion_postgres::arrow_pg::datatypes::arrow_schema_to_pg_fields(schema, format, None)?;
    Ok(fields
        .into_iter()
        .zip(schema.fields().iter())
        .map(|(info, field)| {
            // Only while the value is still the column's own: `ts::text` keeps the metadata of
            // `ts` but is text.
            let declared = field
                .metadata()
                .get(crate::database::PG_TYPE_METADATA)
                .filter(|t| crate::database::arrow_type_for_pg_name(t).ok().as_ref() == Some(field.data_type()))
                .and_then(|t| crate::pg_catalog::type_oid_and_typmod(t));
            match declared.and_then(|(oid, typmod)| Type::from_oid(oid as u32).map(|t| (t, typmod))) {
                Some((ty, typmod)) if ty != *info.datatype() || typmod != -1 => {
                    FieldInfo::new(info.name().to_string(), None, None, ty, info.format()).with_type_modifier(typmod)
                }
                _ => info,
            }
        })
        .collect())
}

fn encode_batch(
    batch: &RecordBatch,
    fields: &Arc<Vec<FieldInfo>>,
    session_tz: &str,
) -> Vec<PgWireResult<pgwire::messages::data::DataRow>> {
    let texts: Vec<Option<ColumnText>> = batch
        .columns()
        .iter()
        .zip(fields.iter())
        .map(|(c, f)| if f.format() == FieldFormat::Text { ColumnText::new(c, session_tz).ok() } else { None })
        .collect();
    let schema = batch.schema();
    let options = FormatOptions::default();
    let mut out = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut encoder = DataRowEncoder::new(fields.clone());
        let mut result = Ok(());
        for (col, field) in fields.iter().enumerate() {
            let array = batch.column(col);
            result = match &texts[col] {
                Some(text) => encoder.encode_field_with_type_and_format(
                    &text.value(row),
                    &Type::TEXT,
                    FieldFormat::Text,
                    &options,
                ),
                None if matches!(array.data_type(), DataType::Decimal128(..)) => {
                    let value = decimal_value(array, row);
                    encoder.encode_field_with_type_and_format(&value, &Type::NUMERIC, FieldFormat::Binary, &options)
                }
                None => datafusion_postgres::arrow_pg::encoder::encode_value(
                    &mut encoder,
                    batch.column(col),
                    row,
                    schema.field(col),
                    field,
                ),
            };
            if result.is_err() {
                break;
            }
        }
        out.push(result.map(|_| encoder.take_row()));
    }
    out
}

fn decimal_value(array: &datafusion::arrow::array::ArrayRef, row: usize) -> Option<crate::server::numeric::PgNumeric> {
    use datafusion::arrow::array::{Array, AsArray};
    if array.is_null(row) {
        return None;
    }
    let DataType::Decimal128(_, scale) = array.data_type() else { return None };
    let a = array.as_primitive::<datafusion::arrow::datatypes::Decimal128Type>();
    Some(crate::server::numeric::PgNumeric { value: a.value(row), scale: *scale })
}

/// The response for one outcome (rows already prefetched).
fn into_response(ready: Ready, format: &Format, session: &Session) -> PgWireResult<(Response, Option<(String, String)>)> {
    Ok(match ready {
        Ready::Rows { schema, first, rest, tag } => {
            (Response::Query(query_response(schema, first, rest, format, session.settings.time_zone(), tag)?), None)
        }
        Ready::Other(o) => match o {
            Outcome::Rows { .. } => return Err(WeirError::internal("rows were not prefetched").into()),
            Outcome::Command(tag) => (Response::Execution(tag), None),
            Outcome::TransactionStart => (Response::TransactionStart(Tag::new("BEGIN")), None),
            Outcome::TransactionEnd(tag) => (Response::TransactionEnd(Tag::new(tag)), None),
            Outcome::CopyIn { columns, format } => (
                Response::CopyIn(CopyResponse::new(format.wire_format(), columns, stream::empty())),
                None,
            ),
            Outcome::CopyOut { columns, format, rows } => {
                let data = rows.into_iter().map(|r| Ok(CopyData::new(r.into())));
                (Response::CopyOut(CopyResponse::new(format.wire_format(), columns, stream::iter(data))), None)
            }
            Outcome::SetReported { name, value } => (Response::Execution(Tag::new("SET")), Some((name, value))),
            Outcome::CopyOutStream { .. } => return Err(WeirError::internal("a COPY stream reached into_response").into()),
        },
    })
}

fn status_of(session: &Session) -> TransactionStatus {
    if session.is_failed() {
        TransactionStatus::Error
    } else if session.in_block() {
        TransactionStatus::Transaction
    } else {
        TransactionStatus::Idle
    }
}

/// Pgwire's view of the block can go ahead of ours when it fails a statement on its own (a
/// protocol error, a canceled Execute): make the session agree.
fn sync_from_client<C: ClientInfo + ?Sized>(client: &C, session: &mut Session) {
    if client.transaction_status() == TransactionStatus::Error && !session.is_failed() && session.in_block() {
        session.on_error();
    }
}

#[async_trait]
impl SimpleQueryHandler for WeirQueryHandler {
    async fn on_query<C>(&self, client: &mut C, query: pgwire::messages::simplequery::Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let _running = self.db.statement_running();
        let shared = session_of(client)?;
        let mut session = shared.lock().await;
        sync_from_client(client, &mut session);

        let parsed = match weir_sql::parse(&crate::pg_rewrite::rewrite_client_sql(
            &query.query,
            &session.settings,
            &session.user,
        )) {
            Ok(p) => p,
            Err(e) => {
                session.on_error();
                self.db.metrics.statement("PARSE", false);
                let e: WeirError = e.into();
                self.db.metrics.error(e.state.code());
                client.feed(PgWireBackendMessage::ErrorResponse(ErrorInfo::from(e).into())).await?;
                return self.finish_simple(client, &session).await;
            }
        };
        if parsed.is_empty() {
            client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?;
            return self.finish_simple(client, &session).await;
        }
        let multi = parsed.len() > 1;
        if multi {
            session.begin_implicit();
        }
        let mut failed = false;
        for p in &parsed {
            let kind = p.statement.kind_name();
            // Redacted: a CREATE SINK carries passwords, which never reach the logs.
            tracing::debug!(statement = %p.statement.to_redacted_string(), "execute (simple)");
            let timeout = session.settings.statement_timeout();
            let span = crate::telemetry::statement_span("pgwire", kind, &session.user);
            let ready = {
                let s = &mut *session;
                cancellable(client, true, timeout, async { run_and_prefetch(s.execute(p).await).await }).instrument(span.clone()).await
            };
            let ready = match ready {
                // Streams until the client cancels or the subscription fails; either ends the
                // statement with an ErrorResponse, as Postgres ends a failed COPY TO.
                Ok(Ready::Other(Outcome::CopyOutStream { columns, format, rows })) => {
                    Err(send_copy_out_stream(client, columns, &format, rows, timeout, true).await?)
                }
                other => other,
            };
            let ready = match ready {
                Ok(r) => r,
                Err(e) => {
                    crate::telemetry::failed(&span, e.state.code());
                    session.on_error();
                    self.db.metrics.statement(kind, false);
                    self.db.metrics.error(e.state.code());
                    client.feed(PgWireBackendMessage::ErrorResponse(ErrorInfo::from(e).into())).await?;
                    failed = true;
                    break;
                }
            };
            self.db.metrics.statement(kind, true);
            if let Statement::Standard(s) = &p.statement
                && let sqlparser::ast::Statement::Deallocate { name, .. } = s.as_ref()
            {
                client.portal_store().rm_statement(&name.value);
            }
            let (response, report) = into_response(ready, &Format::UnifiedText, &session)?;
            match response {
                Response::Query(r) => send_query_response(client, r, true).await?,
                Response::Execution(tag) | Response::TransactionStart(tag) | Response::TransactionEnd(tag) => {
                    send_execution_response(client, tag).await?
                }
                Response::CopyIn(r) => {
                    pgwire::api::copy::send_copy_in_response(client, r).await?;
                    client.set_state(PgWireConnectionState::CopyInProgress(false));
                    // The rest of the message (if any) runs after the copy; Postgres does the same.
                    return Ok(());
                }
                Response::CopyOut(r) => pgwire::api::copy::send_copy_out_response(client, r).await?,
                Response::EmptyQuery => {
                    client.feed(PgWireBackendMessage::EmptyQueryResponse(EmptyQueryResponse::new())).await?
                }
                Response::Error(e) => client.feed(PgWireBackendMessage::ErrorResponse((*e).into())).await?,
                Response::CopyBoth(_) => return Err(WeirError::internal("unexpected COPY BOTH").into()),
            }
            if let Some((name, value)) = report {
                client.feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(name, value))).await?;
            }
        }
        if multi && !failed
            && let Err(e) = session.end_implicit().await
        {
            session.on_error();
            client.feed(PgWireBackendMessage::ErrorResponse(ErrorInfo::from(e).into())).await?;
        }
        if multi && failed {
            // An error ends the implicit block: nothing of the message is committed.
            session.on_error();
        }
        self.finish_simple(client, &session).await
    }

    async fn do_query<C>(&self, _client: &mut C, _query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        // on_query is overridden and never calls this.
        Err(WeirError::internal("do_query is not used").into())
    }
}

use weir_sql::Statement;

impl WeirQueryHandler {
    async fn finish_simple<C>(&self, client: &mut C, session: &Session) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let status = status_of(session);
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        send_ready_for_query(client, status).await
    }
}

/// Parses (and plans) statements for the extended protocol.
pub struct WeirQueryParser;

#[async_trait]
impl QueryParser for WeirQueryParser {
    type Statement = Prepared;

    async fn parse_sql<C>(&self, client: &C, sql: &str, _types: &[Option<Type>]) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let shared = session_of(client)?;
        let mut session = shared.lock().await;
        let mut parsed =
            match weir_sql::parse(&crate::pg_rewrite::rewrite_client_sql(sql, &session.settings, &session.user)) {
                Ok(p) => p,
                Err(e) => {
                    // pgwire now skips to Sync: an implicit transaction must not commit there.
                    session.on_error();
                    return Err(WeirError::from(e).into());
                }
            };
        if parsed.is_empty() {
            return Ok(None);
        }
        if parsed.len() > 1 {
            return Err(WeirError::new(
                SqlState::SyntaxError,
                "cannot insert multiple commands into a prepared statement",
            )
            .into());
        }
        match session.prepare(parsed.remove(0)).await {
            Ok(p) => Ok(Some(p)),
            Err(e) => {
                session.on_error();
                Err(e.into())
            }
        }
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        let Some(plan) = &stmt.plan else { return Ok(vec![]) };
        Ok(crate::session::parameter_types(plan)?
            .into_iter()
            .map(|(_, t)| {
                t.and_then(|t| datafusion_postgres::arrow_pg::datatypes::into_pg_type(&t).ok())
                    .unwrap_or(Type::TEXT)
            })
            .collect())
    }

    fn get_result_schema(&self, stmt: &Prepared, format: Option<&Format>) -> PgWireResult<Vec<FieldInfo>> {
        let format = format.unwrap_or(&Format::UnifiedText);
        match &stmt.plan {
            Some(plan) if !matches!(plan, datafusion::logical_expr::LogicalPlan::Dml(_)) => {
                pg_fields(&crate::session::rename_schema(plan.schema().as_arrow(), &stmt.parsed), format)
            }
            Some(_) => Ok(vec![]),
            None => match stmt.result_schema.as_deref().cloned().or_else(|| static_result_schema(&stmt.parsed.statement)) {
                Some(schema) => pg_fields(&schema, format),
                None => Ok(vec![]),
            },
        }
    }
}

/// Result columns of statements that return rows without a DataFusion plan.
fn static_result_schema(statement: &Statement) -> Option<Schema> {
    let text = |names: &[&str]| Schema::new(names.iter().map(|n| Field::new(*n, DataType::Utf8, true)).collect::<Vec<_>>());
    match statement {
        Statement::ShowObjects(weir_sql::ObjectKind::Sink) => Some(text(&["name", "view", "connector", "status"])),
        Statement::ShowObjects(_) => Some(text(&["name"])),
        Statement::ShowCreate { .. } => Some(text(&["name", "create_sql"])),
        Statement::Standard(s) => match s.as_ref() {
            sqlparser::ast::Statement::ShowVariable { variable } => {
                let name = variable.iter().map(|i| i.value.to_ascii_lowercase()).collect::<Vec<_>>().join(" ");
                match name.as_str() {
                    "all" => Some(text(&["name", "setting"])),
                    "time zone" => Some(text(&["TimeZone"])),
                    "transaction isolation level" => Some(text(&["transaction_isolation"])),
                    other => Some(text(&[other])),
                }
            }
            sqlparser::ast::Statement::ExplainTable {
                describe_alias: sqlparser::ast::DescribeAlias::Describe | sqlparser::ast::DescribeAlias::Desc,
                ..
            } => Some(text(&crate::session::DESCRIBE_COLUMNS)),
            _ => None,
        },
        _ => None,
    }
}

#[async_trait]
impl ExtendedQueryHandler for WeirQueryHandler {
    type Statement = Prepared;
    type QueryParser = WeirQueryParser;

    fn query_parser(&self) -> Arc<WeirQueryParser> {
        self.parser.clone()
    }

    async fn do_query<C>(&self, client: &mut C, portal: &Portal<Prepared>, _max_rows: usize) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _running = self.db.statement_running();
        let prepared = &portal.statement.statement;
        let kind = prepared.parsed.statement.kind_name();
        // Redacted: a CREATE SINK carries passwords, which never reach the logs.
        tracing::debug!(
            statement = %prepared.parsed.statement.to_redacted_string(),
            planned = prepared.plan.is_some(),
            "execute (extended)"
        );
        let shared = session_of(client)?;
        let mut session = shared.lock().await;
        sync_from_client(client, &mut session);
        // Outside a block, everything up to Sync is one implicit transaction (committed in
        // on_sync), as in Postgres: a failed statement in a pipeline undoes the ones before it.
        session.begin_implicit();
        let params = match bind_parameters(portal) {
            Ok(p) => p,
            Err(e) => {
                session.on_error();
                return Err(e);
            }
        };
        let timeout = session.settings.statement_timeout();
        let span = crate::telemetry::statement_span("pgwire", kind, &session.user);
        let ready = {
            let s = &mut *session;
            cancellable(client, false, timeout, async {
                run_and_prefetch(s.execute_prepared(prepared, &params).await).await
            })
                .instrument(span.clone())
                .await
        };
        match ready {
            Ok(Ready::Other(Outcome::CopyOutStream { columns, format, rows })) => {
                // pgwire listens for a cancel around Execute itself.
                let e = send_copy_out_stream(client, columns, &format, rows, timeout, false).await?;
                crate::telemetry::failed(&span, e.state.code());
                session.on_error();
                self.db.metrics.statement(kind, false);
                self.db.metrics.error(e.state.code());
                Err(e.into())
            }
            Ok(ready) => {
                self.db.metrics.statement(kind, true);
                if let Statement::Standard(s) = &prepared.parsed.statement
                    && let sqlparser::ast::Statement::Deallocate { name, .. } = s.as_ref()
                {
                    client.portal_store().rm_statement(&name.value);
                }
                let (response, report) = into_response(ready, &portal.result_column_format, &session)?;
                if let Some((name, value)) = report {
                    client.feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(name, value))).await?;
                }
                // pgwire tracks the block from these variants; keep it in step with the session.
                client.set_transaction_status(status_of(&session));
                Ok(response)
            }
            Err(e) => {
                crate::telemetry::failed(&span, e.state.code());
                session.on_error();
                self.db.metrics.statement(kind, false);
                Err(e.into())
            }
        }
    }

    /// Postgres answers Describe of a statement that returns no rows with ParameterDescription
    /// and NoData; pgwire sends an empty RowDescription when the statement has parameters,
    /// which pgJDBC takes for a result set ("A result was returned when none was expected").
    async fn on_describe<C>(&self, client: &mut C, message: pgwire::messages::extendedquery::Describe) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if message.target_type == pgwire::messages::extendedquery::TARGET_TYPE_BYTE_STATEMENT {
            let name = message.name.as_deref().unwrap_or(pgwire::api::DEFAULT_NAME);
            if let Some(pgwire::api::store::Entry::Value(stmt)) = client.portal_store().get_statement(name) {
                let described = self.do_describe_statement(client, &stmt).await?;
                client
                    .send(PgWireBackendMessage::ParameterDescription(
                        pgwire::messages::data::ParameterDescription::new(
                            described.parameters.iter().map(|t| t.oid()).collect(),
                        ),
                    ))
                    .await?;
                if described.fields.is_empty() {
                    client.send(PgWireBackendMessage::NoData(pgwire::messages::data::NoData::new())).await?;
                } else {
                    let fields = described.fields.iter().map(pgwire::messages::data::FieldDescription::from).collect();
                    client
                        .send(PgWireBackendMessage::RowDescription(pgwire::messages::data::RowDescription::new(fields)))
                        .await?;
                }
                return Ok(());
            }
        }
        self._on_describe(client, message).await
    }

    async fn on_sync<C>(&self, client: &mut C, message: pgwire::messages::extendedquery::Sync) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let _ = message;
        if let Ok(shared) = session_of(client) {
            let mut session = shared.lock().await;
            sync_from_client(client, &mut session);
            if let Err(e) = session.end_implicit().await {
                session.on_error();
                self.db.metrics.error(e.state.code());
                client.feed(PgWireBackendMessage::ErrorResponse(ErrorInfo::from(e).into())).await?;
            }
            client.set_transaction_status(status_of(&session));
        }
        client.portal_store().rm_portal(pgwire::api::DEFAULT_NAME);
        send_ready_for_query(client, client.transaction_status()).await?;
        client.flush().await?;
        Ok(())
    }
}

/// Decodes Bind parameters to the types the plan expects (arrow-pg does the wire decoding).
///
/// A client may declare a parameter's type (psycopg sends a Python float as float8, pgJDBC
/// strings as varchar): the value is decoded as that type and then cast to the type the plan
/// needs, as Postgres applies an assignment cast.
fn bind_parameters(portal: &Portal<Prepared>) -> PgWireResult<ParamValues> {
    let Some(plan) = &portal.statement.statement.plan else {
        return Ok(ParamValues::List(vec![]));
    };
    let ordered = crate::session::parameter_types(plan)?;
    let inferred: Vec<Option<DataType>> = ordered.iter().map(|(_, t)| t.clone()).collect();
    let declared: Vec<Option<DataType>> = (0..inferred.len())
        .map(|i| match portal.statement.parameter_types.get(i) {
            Some(Some(t)) => arrow_type_of_pg(t),
            _ => None,
        })
        .collect();
    let decode_as: Vec<Option<DataType>> =
        inferred.iter().zip(&declared).map(|(inf, dec)| dec.clone().or_else(|| inf.clone())).collect();
    let decode_refs: Vec<Option<&DataType>> = decode_as.iter().map(|t| t.as_ref()).collect();
    let wire: Vec<Type> = decode_as
        .iter()
        .map(|t| {
            t.as_ref()
                .and_then(|t| datafusion_postgres::arrow_pg::datatypes::into_pg_type(t).ok())
                .unwrap_or(Type::TEXT)
        })
        .collect();
    let wire_refs: Vec<Option<&Type>> = wire.iter().map(Some).collect();
    // arrow-pg turns a binary interval's microseconds into nanoseconds unchecked: one past
    // ±292 years would wrap into a wrong value (or panic in a checked build), so it is refused
    // here as Postgres refuses an interval out of range.
    for (i, target) in decode_as.iter().enumerate() {
        if matches!(target, Some(DataType::Interval(datafusion::arrow::datatypes::IntervalUnit::MonthDayNano) | DataType::Duration(_)))
            && portal.parameter_format.format_for(i) == FieldFormat::Binary
            && let Some(Some(bytes)) = portal.parameters.get(i)
            && let Some(micros) = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(i64::from_be_bytes)
            && micros.checked_mul(1000).is_none()
        {
            return Err(WeirError::new(SqlState::DatetimeFieldOverflow, "interval out of range")
                .with_detail(format!("parameter ${} holds {micros} microseconds", i + 1))
                .into());
        }
    }
    // A panic in arrow-pg's decoders on bytes from the network must not drop the connection:
    // the value is refused instead.
    let values = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        datafusion_postgres::arrow_pg::datatypes::df::deserialize_parameters_with_server_types(portal, &decode_refs, &wire_refs)
    }))
    .map_err(|panic| {
        WeirError::new(SqlState::InvalidBinaryRepresentation, "a parameter value is out of range for its type")
            .with_detail(crate::server::panic_message(panic.as_ref()).to_string())
    })??;
    let ParamValues::List(mut list) = values else { return Ok(values) };
    for (i, target) in inferred.iter().enumerate() {
        let Some(target) = target else { continue };
        if i >= list.len() {
            break;
        }
        // arrow-pg decodes binary numerics through rust_decimal (28 digits); decode those here.
        if let DataType::Decimal128(p, s) = target
            && decode_as[i].as_ref() == Some(target)
            && portal.parameter_format.format_for(i) == FieldFormat::Binary
            && let Some(Some(bytes)) = portal.parameters.get(i)
        {
            let value = crate::server::numeric::decode_binary(bytes, *s).ok_or_else(|| {
                WeirError::new(SqlState::NumericValueOutOfRange, format!("numeric parameter ${} does not fit numeric({p},{s})", i + 1))
            })?;
            list[i] = datafusion::common::metadata::ScalarAndMetadata::from(datafusion::scalar::ScalarValue::Decimal128(
                Some(value),
                *p,
                *s,
            ));
            continue;
        }
        if list[i].value.data_type() != *target && !list[i].value.is_null() {
            let cast = list[i].value.cast_to(target).map_err(WeirError::from)?;
            list[i] = datafusion::common::metadata::ScalarAndMetadata::from(cast);
        }
    }
    Ok(ParamValues::List(list))
}

/// The Arrow type a parameter of a client-declared Postgres type decodes to.
fn arrow_type_of_pg(t: &Type) -> Option<DataType> {
    use datafusion::arrow::datatypes::TimeUnit;
    Some(match *t {
        Type::BOOL => DataType::Boolean,
        Type::INT2 => DataType::Int16,
        Type::INT4 => DataType::Int32,
        Type::INT8 => DataType::Int64,
        Type::FLOAT4 => DataType::Float32,
        Type::FLOAT8 => DataType::Float64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => DataType::Utf8,
        Type::DATE => DataType::Date32,
        Type::TIMESTAMP => DataType::Timestamp(TimeUnit::Microsecond, None),
        Type::TIMESTAMPTZ => DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
        _ => return None,
    })
}

#[async_trait]
impl CopyHandler for WeirQueryHandler {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let shared = session_of(client)?;
        let mut session = shared.lock().await;
        match session.copy_in.as_mut() {
            Some(c) => {
                c.push(&copy_data.data);
                Ok(())
            }
            None => Err(WeirError::new(SqlState::ProtocolViolation, "unexpected CopyData").into()),
        }
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let shared = session_of(client)?;
        let mut session = shared.lock().await;
        match session.finish_copy_in().await {
            Ok(n) => {
                self.db.metrics.statement("COPY", true);
                client.set_transaction_status(status_of(&session));
                client
                    .send(PgWireBackendMessage::CommandComplete(Tag::new("COPY").with_rows(n).into()))
                    .await?;
                Ok(())
            }
            Err(e) => {
                session.on_error();
                self.db.metrics.statement("COPY", false);
                client.set_transaction_status(status_of(&session));
                Err(e.into())
            }
        }
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let Ok(shared) = session_of(client) {
            let mut session = shared.lock().await;
            session.copy_in = None;
            session.on_error();
            client.set_transaction_status(status_of(&session));
        }
        WeirError::canceled(&format!("COPY from stdin failed: {}", fail.message)).into()
    }
}
