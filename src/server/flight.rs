//! Arrow Flight SQL: the same statements as the Postgres wire, answered with Arrow record
//! batches (`docs/flight.md`).
//!
//! * Queries (`CommandStatementQuery`, prepared queries): `GetFlightInfo` runs the statement and
//!   keeps its result stream under a ticket; `DoGet` streams it, batch by batch as DataFusion
//!   produces them. A ticket is redeemed once; one not redeemed in [`RESULT_TTL`] is dropped.
//!   `SUBSCRIBE ...` is a query whose stream never ends (until the client stops reading).
//! * Prepared statements live until closed, or [`PREPARED_TTL`] after their last use.
//! * Updates (`CommandStatementUpdate`, prepared updates): DoPut, answered with a row count.
//! * Metadata: catalogs, schemas, tables (with their Arrow schemas), table types, primary keys
//!   and `GetSqlInfo` ([`super::flight_metadata`]).
//! * Every request runs in a session of its own, committing as it goes: Flight SQL has no
//!   connection to hang a transaction or a `SET` on, so Weir advertises no transactions and
//!   refuses `BEGIN` and `SET` rather than let them silently do nothing.
//! * Handshake: HTTP Basic credentials in (checked against the role's verifier under
//!   `--auth password`), a bearer token out (valid 24 h). Under `trust` every user name is
//!   accepted and the password is not checked; a request without a token runs as `weir`. A
//!   token the server did not hand out is refused.
//! * Errors are gRPC statuses whose message carries the SQLSTATE, detail and hint, and whose
//!   `x-weir-sqlstate` metadata carries the SQLSTATE alone.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage, SchemaAsIpc,
    Ticket,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::ParamValues;
use datafusion::common::metadata::ScalarAndMetadata;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::scalar::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};
use weir_sql::ParsedStatement;

use crate::auth::AuthMethod;
use crate::database::Database;
use crate::error::{Result, SqlState, WeirError};
use crate::session::{Outcome, Prepared, Session};

/// How long a query's result waits for its `DoGet`.
pub const RESULT_TTL: Duration = Duration::from_secs(300);
/// How long a prepared statement may go unused before it is dropped (clients that never close
/// theirs must not grow the server without bound).
const PREPARED_TTL: Duration = Duration::from_secs(3600);
/// How long a bearer token from the handshake stays valid.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);
/// The user of requests without credentials while authentication is off.
const DEFAULT_USER: &str = "weir";
/// The largest message a client may send (a DoPut of parameters or rows).
const MAX_DECODING_MESSAGE_SIZE: usize = 64 << 20;

/// Serves Flight SQL on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    db: Arc<Database>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::result::Result<(), tonic::transport::Error> {
    let service = FlightServiceServer::new(WeirFlightSql::new(db))
        .max_decoding_message_size(MAX_DECODING_MESSAGE_SIZE)
        .max_encoding_message_size(usize::MAX);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder
        // HTTP/2 windows sized to the link (BDP estimation) instead of h2's fixed 64 KiB: a
        // large DoPut is not throttled by window updates.
        .http2_adaptive_window(Some(true))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The Flight SQL service: the database, and what outlives one request (tokens, results
/// waiting for their DoGet, prepared statements).
pub struct WeirFlightSql {
    db: Arc<Database>,
    tokens: Mutex<HashMap<String, Token>>,
    results: Mutex<HashMap<String, PendingResult>>,
    prepared: Mutex<HashMap<String, PreparedStatement>>,
    sql_info: arrow_flight::sql::metadata::SqlInfoData,
}

struct Token {
    user: String,
    issued: Instant,
}

/// A statement's result between `GetFlightInfo` and `DoGet`.
struct PendingResult {
    user: String,
    created: Instant,
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
}

/// A statement prepared by `CreatePreparedStatement`, and the parameters a DoPut bound to it.
struct PreparedStatement {
    user: String,
    prepared: Prepared,
    /// One row per execution; empty until parameters are bound.
    parameters: Vec<Vec<ScalarValue>>,
    last_used: Instant,
}

type DoGetStream = <WeirFlightSql as FlightService>::DoGetStream;

impl WeirFlightSql {
    pub fn new(db: Arc<Database>) -> Self {
        WeirFlightSql {
            db,
            tokens: Mutex::default(),
            results: Mutex::default(),
            prepared: Mutex::default(),
            sql_info: super::flight_metadata::sql_info(),
        }
    }

    /// The user a request runs as: the bearer token's, Basic credentials' (checked as in the
    /// handshake), or, under `trust` only, [`DEFAULT_USER`] without credentials.
    #[allow(clippy::result_large_err)] // tonic's Status is what every handler returns
    fn user<T>(&self, request: &Request<T>) -> Result<String, Status> {
        let Some(header) = request.metadata().get("authorization") else {
            return self.anonymous();
        };
        let header = header.to_str().map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            let tokens = lock(&self.tokens);
            return match tokens.get(token.trim()) {
                Some(t) if t.issued.elapsed() < TOKEN_TTL => Ok(t.user.clone()),
                _ => Err(Status::unauthenticated("invalid or expired bearer token: authenticate again (handshake)")),
            };
        }
        if let Some(basic) = header.strip_prefix("Basic ") {
            return self.authenticate(basic, request.remote_addr());
        }
        Err(Status::unauthenticated("unsupported authorization scheme: use Basic or Bearer"))
    }

    /// A request without credentials: the default user under `trust`, refused otherwise.
    #[allow(clippy::result_large_err)]
    fn anonymous(&self) -> Result<String, Status> {
        match self.db.config.auth_method() {
            AuthMethod::Trust => Ok(DEFAULT_USER.to_string()),
            AuthMethod::Password => Err(Status::unauthenticated("authentication required: send Basic credentials to the handshake")),
        }
    }

    /// Checks Basic credentials: under `password`, the role must exist, may log in, and the
    /// password must match its verifier (failures count against the address, as on the Postgres
    /// wire); under `trust` any user name is taken.
    #[allow(clippy::result_large_err)]
    fn authenticate(&self, basic: &str, peer: Option<std::net::SocketAddr>) -> Result<String, Status> {
        let (user, password) = basic_credentials(basic)?;
        if self.db.config.auth_method() == AuthMethod::Trust {
            return Ok(user);
        }
        let failed = |detail: Option<String>| {
            self.db.metrics.auth_failures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut message = format!("ERROR {}: password authentication failed for user \"{user}\"", SqlState::InvalidPassword.code());
            if let Some(detail) = detail {
                message.push_str(&format!("\nHINT: {detail}"));
            }
            Status::unauthenticated(message)
        };
        let ip = peer.map(|p| p.ip());
        if let Some(wait) = ip.and_then(|ip| self.db.logins.blocked(ip)) {
            tracing::warn!(user, peer = ?ip, "Flight login refused: too many failed logins from this address");
            return Err(failed(Some(format!("Too many failed logins from this address; try again in {} s.", wait.as_secs().max(1)))));
        }
        if crate::roles::login_verifier(&self.db, &user).is_some_and(|v| v.accepts_password(&password)) {
            if let Some(ip) = ip {
                self.db.logins.succeeded(ip);
            }
            return Ok(user);
        }
        if let Some(ip) = ip {
            self.db.logins.failed(ip);
        }
        tracing::warn!(user, peer = ?ip, "Flight password authentication failed");
        Err(failed(None))
    }

    fn session(&self, user: String) -> Session {
        Session::new(self.db.clone(), 0, user)
    }

    /// Parses one statement (after the same client rewrites the Postgres wire applies).
    fn parse_one(&self, session: &Session, text: &str) -> Result<ParsedStatement> {
        let mut parsed = self.parse(session, text)?;
        match parsed.len() {
            1 => Ok(parsed.remove(0)),
            0 => Err(WeirError::new(SqlState::SyntaxError, "empty query")),
            _ => Err(WeirError::new(SqlState::SyntaxError, "cannot run multiple commands as one query")
                .with_hint("Send one statement per query; updates (DoPut) may hold several.")),
        }
    }

    fn parse(&self, session: &Session, text: &str) -> Result<Vec<ParsedStatement>> {
        let text = crate::pg_rewrite::rewrite_client_sql(text, &session.settings, &session.user);
        Ok(weir_sql::parse(&text)?)
    }

    /// Runs one statement in `session`, counting it in the metrics as the Postgres wire does.
    async fn execute(&self, session: &mut Session, statement: &ParsedStatement, parameters: Option<(&Prepared, ParamValues)>) -> Result<Outcome> {
        let kind = statement.statement.kind_name();
        // Running until it returns (a query's rows then run under its DoGet's own count).
        let _running = self.db.statement_running();
        tracing::debug!(statement = %statement.statement.to_redacted_string(), "execute (flight)");
        let span = crate::telemetry::statement_span("flight", kind, &session.user);
        let outcome = tracing::Instrument::instrument(
            async {
                match parameters {
                    Some((prepared, values)) => session.execute_prepared(prepared, &values).await,
                    None => session.execute(statement).await,
                }
            },
            span.clone(),
        )
        .await
        .and_then(flight_outcome);
        match &outcome {
            Ok(_) => self.db.metrics.statement(kind, true),
            Err(e) => {
                crate::telemetry::failed(&span, e.state.code());
                session.on_error();
                self.db.metrics.statement(kind, false);
                self.db.metrics.error(e.state.code());
            }
        }
        outcome
    }

    /// Keeps a query's result for its DoGet and describes it: its schema and one endpoint
    /// whose ticket names the result.
    fn result_info(&self, user: String, outcome: Outcome, descriptor: FlightDescriptor) -> Result<FlightInfo> {
        let (schema, stream) = match outcome {
            Outcome::Rows { schema, stream, .. } => (schema, stream),
            // A command (DDL, INSERT) sent as a query: no columns, no rows.
            _ => {
                let schema = Arc::new(Schema::empty());
                let empty = datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema.clone(), futures::stream::empty());
                (schema, Box::pin(empty) as SendableRecordBatchStream)
            }
        };
        let handle = random_token()?;
        let info = FlightInfo::new()
            .try_with_schema(&schema)?
            .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(
                TicketStatementQuery { statement_handle: handle.clone().into() }.as_any().encode_to_vec(),
            )))
            .with_descriptor(descriptor)
            .with_ordered(true)
            .with_total_records(-1)
            .with_total_bytes(-1);
        let mut results = lock(&self.results);
        results.retain(|_, r| r.created.elapsed() < RESULT_TTL);
        results.insert(handle, PendingResult { user, created: Instant::now(), schema, stream });
        Ok(info)
    }

    /// The row counts of the statements of one update, run in one session: several commit
    /// together, as in a multi-statement simple query.
    async fn execute_update(&self, user: String, text: &str) -> Result<i64> {
        let mut session = self.session(user);
        let statements = self.parse(&session, text)?;
        if statements.len() > 1 {
            session.begin_implicit();
        }
        let mut count = 0;
        for statement in &statements {
            refuse_feed_in_update(statement)?;
            let outcome = self.execute(&mut session, statement, None).await?;
            count += affected_rows(outcome).await?;
        }
        session.end_implicit().await?;
        Ok(count)
    }

    fn prepared_statement(&self, handle: &[u8], user: &str) -> Result<(Prepared, Vec<Vec<ScalarValue>>)> {
        let handle = std::str::from_utf8(handle).unwrap_or_default();
        let mut statements = lock(&self.prepared);
        match statements.get_mut(handle) {
            Some(p) if p.user == user => {
                p.last_used = Instant::now();
                Ok((p.prepared.clone(), p.parameters.clone()))
            }
            _ => Err(WeirError::new(SqlState::InvalidSqlStatementName, "prepared statement does not exist")
                .with_hint("Prepared statements live until closed or until the server restarts.")),
        }
    }
}

#[tonic::async_trait]
impl FlightSqlService for WeirFlightSql {
    type FlightService = WeirFlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let user = match request.metadata().get("authorization") {
            None => self.anonymous()?,
            Some(header) => {
                let header = header.to_str().map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
                let basic = header
                    .strip_prefix("Basic ")
                    .ok_or_else(|| Status::unauthenticated("the handshake takes Basic credentials"))?;
                self.authenticate(basic, request.remote_addr())?
            }
        };
        let token = random_token().map_err(status)?;
        {
            let mut tokens = lock(&self.tokens);
            tokens.retain(|_, t| t.issued.elapsed() < TOKEN_TTL);
            tokens.insert(token.clone(), Token { user, issued: Instant::now() });
        }
        let bearer = MetadataValue::try_from(format!("Bearer {token}")).map_err(|_| Status::internal("token is not a header value"))?;
        let answer = HandshakeResponse { protocol_version: 0, payload: token.into() };
        let mut response: Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(answer)])));
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let user = self.user(&request)?;
        let mut session = self.session(user.clone());
        let statement = self.parse_one(&session, &query.query).map_err(status)?;
        let outcome = self.execute(&mut session, &statement, None).await.map_err(status)?;
        Ok(Response::new(self.result_info(user, outcome, request.into_inner()).map_err(status)?))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let user = self.user(&request)?;
        let (prepared, parameters) = self.prepared_statement(&query.prepared_statement_handle, &user).map_err(status)?;
        let values = match parameters.as_slice() {
            [] => vec![],
            [row] => row.clone(),
            _ => {
                return Err(status(WeirError::new(SqlState::FeatureNotSupported, "a prepared query takes one row of parameters")
                    .with_hint("Run the query once per parameter row.")));
            }
        };
        let values = parameter_values(&prepared, values).map_err(status)?;
        let mut session = self.session(user.clone());
        let outcome = self.execute(&mut session, &prepared.parsed, Some((&prepared, values))).await.map_err(status)?;
        Ok(Response::new(self.result_info(user, outcome, request.into_inner()).map_err(status)?))
    }

    async fn do_get_statement(&self, ticket: TicketStatementQuery, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        let user = self.user(&request)?;
        let handle = std::str::from_utf8(&ticket.statement_handle).unwrap_or_default();
        let pending = {
            let mut results = lock(&self.results);
            match results.get(handle) {
                Some(r) if r.user == user => results.remove(handle),
                _ => None,
            }
        };
        let Some(PendingResult { schema, stream, .. }) = pending else {
            return Err(Status::not_found("no result for this ticket: it was already read, or expired"));
        };
        let running = self.db.rows_streaming();
        let batches = stream.map_err(|e| FlightError::from(status(WeirError::from(e))));
        let data = FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map(move |item| {
            // The statement counts as running (graceful shutdown waits) until its stream ends.
            let _running = &running;
            item.map_err(Status::from)
        });
        Ok(Response::new(Box::pin(data)))
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let user = self.user(&request)?;
        self.execute_update(user, &command.query).await.map_err(status)
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let user = self.user(&request)?;
        // Checks the handle before reading the parameters.
        self.prepared_statement(&query.prepared_statement_handle, &user).map_err(status)?;
        let rows = parameter_rows(request.into_inner()).await?;
        let handle = std::str::from_utf8(&query.prepared_statement_handle).unwrap_or_default();
        if let Some(p) = lock(&self.prepared).get_mut(handle) {
            p.parameters = rows;
        }
        Ok(DoPutPreparedStatementResult { prepared_statement_handle: Some(query.prepared_statement_handle) })
    }

    async fn do_put_prepared_statement_update(
        &self,
        query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let user = self.user(&request)?;
        let (prepared, bound) = self.prepared_statement(&query.prepared_statement_handle, &user).map_err(status)?;
        refuse_feed_in_update(&prepared.parsed).map_err(status)?;
        let sent = parameter_rows(request.into_inner()).await?;
        let rows = if sent.is_empty() { bound } else { sent };
        let mut session = self.session(user);
        // Several parameter rows run as one transaction: all of them or none.
        if rows.len() > 1 {
            session.begin_implicit();
        }
        let mut count = 0;
        for row in if rows.is_empty() { vec![vec![]] } else { rows } {
            let values = parameter_values(&prepared, row).map_err(status)?;
            let outcome = self.execute(&mut session, &prepared.parsed, Some((&prepared, values))).await.map_err(status)?;
            count += affected_rows(outcome).await.map_err(status)?;
        }
        session.end_implicit().await.map_err(status)?;
        Ok(count)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let user = self.user(&request)?;
        let session = self.session(user.clone());
        let statement = self.parse_one(&session, &query.query).map_err(status)?;
        let prepared = session.prepare(statement).await.map_err(status)?;
        let (dataset, parameters) = match &prepared.plan {
            Some(plan) => {
                let dataset = crate::session::rename_schema(plan.schema().as_arrow(), &prepared.parsed);
                let parameters = crate::session::parameter_types(plan).map_err(status)?;
                let fields: Vec<Field> =
                    parameters.into_iter().map(|(name, t)| Field::new(name, t.unwrap_or(DataType::Null), true)).collect();
                (dataset, Schema::new(fields))
            }
            None => (Schema::empty(), Schema::empty()),
        };
        let handle = random_token().map_err(status)?;
        {
            let mut statements = lock(&self.prepared);
            statements.retain(|_, p| p.last_used.elapsed() < PREPARED_TTL);
            statements.insert(handle.clone(), PreparedStatement { user, prepared, parameters: vec![], last_used: Instant::now() });
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let user = self.user(&request)?;
        let handle = std::str::from_utf8(&query.prepared_statement_handle).unwrap_or_default();
        let mut statements = lock(&self.prepared);
        if statements.get(handle).is_some_and(|p| p.user == user) {
            statements.remove(handle);
        }
        Ok(())
    }

    async fn get_flight_info_catalogs(&self, query: CommandGetCatalogs, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        self.user(&request)?;
        let schema = query.into_builder().schema();
        metadata_info(query.as_any().encode_to_vec(), &schema, request.into_inner())
    }

    async fn get_flight_info_schemas(&self, query: CommandGetDbSchemas, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        self.user(&request)?;
        let schema = query.clone().into_builder().schema();
        metadata_info(query.as_any().encode_to_vec(), &schema, request.into_inner())
    }

    async fn get_flight_info_tables(&self, query: CommandGetTables, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        self.user(&request)?;
        let schema = query.clone().into_builder().schema();
        metadata_info(query.as_any().encode_to_vec(), &schema, request.into_inner())
    }

    async fn get_flight_info_table_types(&self, query: CommandGetTableTypes, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        self.user(&request)?;
        let schema = query.into_builder().schema();
        metadata_info(query.as_any().encode_to_vec(), &schema, request.into_inner())
    }

    async fn get_flight_info_sql_info(&self, query: CommandGetSqlInfo, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        self.user(&request)?;
        let schema = query.clone().into_builder(&self.sql_info).schema();
        metadata_info(query.as_any().encode_to_vec(), &schema, request.into_inner())
    }

    async fn get_flight_info_primary_keys(&self, query: CommandGetPrimaryKeys, request: Request<FlightDescriptor>) -> Result<Response<FlightInfo>, Status> {
        self.user(&request)?;
        metadata_info(query.as_any().encode_to_vec(), &super::flight_metadata::primary_keys_schema(), request.into_inner())
    }

    async fn do_get_catalogs(&self, query: CommandGetCatalogs, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        let mut builder = query.into_builder();
        builder.append(crate::database::DATABASE_NAME);
        one_batch(builder.schema(), builder.build())
    }

    async fn do_get_schemas(&self, query: CommandGetDbSchemas, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        let mut builder = query.into_builder();
        for schema in super::flight_metadata::schema_names(&self.db) {
            builder.append(crate::database::DATABASE_NAME, schema);
        }
        one_batch(builder.schema(), builder.build())
    }

    async fn do_get_tables(&self, query: CommandGetTables, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        let mut builder = query.into_builder();
        for relation in super::flight_metadata::relations(&self.db).await.map_err(status)? {
            builder
                .append(crate::database::DATABASE_NAME, &relation.schema, &relation.name, relation.table_type, &relation.columns)
                .map_err(Status::from)?;
        }
        one_batch(builder.schema(), builder.build())
    }

    async fn do_get_table_types(&self, query: CommandGetTableTypes, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        let mut builder = query.into_builder();
        for table_type in super::flight_metadata::TABLE_TYPES {
            builder.append(table_type);
        }
        one_batch(builder.schema(), builder.build())
    }

    async fn do_get_sql_info(&self, query: CommandGetSqlInfo, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        let builder = query.into_builder(&self.sql_info);
        one_batch(builder.schema(), builder.build())
    }

    async fn do_get_primary_keys(&self, query: CommandGetPrimaryKeys, request: Request<Ticket>) -> Result<Response<DoGetStream>, Status> {
        self.user(&request)?;
        let batch = super::flight_metadata::primary_keys(&self.db, &query).map_err(status)?;
        one_batch(batch.schema(), Ok(batch))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// Refuses what needs a session to outlive the request.
fn flight_outcome(outcome: Outcome) -> Result<Outcome> {
    let refuse = |what: &str, hint: &str| Err(WeirError::new(SqlState::FeatureNotSupported, format!("{what} is not supported over Flight SQL")).with_hint(hint));
    match outcome {
        Outcome::TransactionStart | Outcome::TransactionEnd(_) => refuse(
            "a transaction block",
            "Each Flight SQL request commits on its own; send several statements in one update to commit them together.",
        ),
        Outcome::SetReported { .. } => refuse("SET", "Each Flight SQL request runs in a new session; settings do not carry over."),
        Outcome::CopyIn { .. } | Outcome::CopyOut { .. } | Outcome::CopyOutStream { .. } => {
            refuse("COPY", "Query the rows instead (SUBSCRIBE for a change feed); use INSERT to write.")
        }
        other => Ok(other),
    }
}

/// An update answers a row count once it is done; a subscription is never done.
fn refuse_feed_in_update(statement: &ParsedStatement) -> Result<()> {
    if matches!(statement.statement, weir_sql::Statement::Subscribe(_)) {
        return Err(WeirError::new(SqlState::WrongObjectType, "SUBSCRIBE cannot run as an update")
            .with_hint("Run it as a query (GetFlightInfo, then DoGet): its result streams until the client closes it."));
    }
    Ok(())
}

/// The rows a command affected (from its tag), or the rows a query returned.
async fn affected_rows(outcome: Outcome) -> Result<i64> {
    match outcome {
        Outcome::Command(tag) => {
            let tag = pgwire::messages::response::CommandComplete::from(tag).tag;
            Ok(tag.rsplit(' ').next().and_then(|n| n.parse().ok()).unwrap_or(0))
        }
        Outcome::Rows { stream, .. } => {
            let batches = crate::session::collect_rows(stream).await?;
            Ok(batches.iter().map(|b| b.num_rows() as i64).sum())
        }
        _ => Ok(0),
    }
}

/// The bound values for one execution, cast to the types the plan expects (a Python int
/// arrives as Int64 for an `integer` column).
fn parameter_values(prepared: &Prepared, row: Vec<ScalarValue>) -> Result<ParamValues> {
    let types = match &prepared.plan {
        Some(plan) => crate::session::parameter_types(plan)?,
        None => vec![],
    };
    if row.len() != types.len() {
        return Err(WeirError::new(
            SqlState::ProtocolViolation,
            format!("the statement takes {} parameters, {} were bound", types.len(), row.len()),
        ));
    }
    let mut values = Vec::with_capacity(row.len());
    for (value, (_, target)) in row.into_iter().zip(types) {
        let value = match target {
            Some(t) if value.data_type() != t && !value.is_null() => value.cast_to(&t)?,
            _ => value,
        };
        values.push(ScalarAndMetadata::from(value));
    }
    Ok(ParamValues::List(values))
}

/// The parameter rows a DoPut carries. A message with only the command and no IPC data (what
/// a client sends when the parameters were bound before) carries none.
async fn parameter_rows(stream: PeekableFlightDataStream) -> Result<Vec<Vec<ScalarValue>>, Status> {
    let data = stream.try_filter(|message| futures::future::ready(!message.data_header.is_empty()));
    let batches: Vec<RecordBatch> =
        arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(data.map_err(FlightError::from))
            .try_collect()
            .await
            .map_err(|e| Status::invalid_argument(format!("cannot read the parameters: {e}")))?;
    let mut rows = vec![];
    for batch in batches {
        for row in 0..batch.num_rows() {
            let values = batch
                .columns()
                .iter()
                .map(|column| ScalarValue::try_from_array(column, row))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| status(e.into()))?;
            rows.push(values);
        }
    }
    Ok(rows)
}

#[allow(clippy::result_large_err)]
fn metadata_info(ticket: Vec<u8>, schema: &Schema, descriptor: FlightDescriptor) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| status(e.into()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

#[allow(clippy::result_large_err)]
fn one_batch(
    schema: SchemaRef,
    batch: std::result::Result<RecordBatch, FlightError>,
) -> Result<Response<DoGetStream>, Status> {
    let batch = batch?;
    let data = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::iter([Ok(batch)]))
        .map_err(Status::from);
    Ok(Response::new(Box::pin(data)))
}

#[allow(clippy::result_large_err)]
fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default()).try_into().map_err(|e: datafusion::arrow::error::ArrowError| status(e.into()))?;
    Ok(bytes)
}

/// `user:password` from a Basic header's value.
#[allow(clippy::result_large_err)]
fn basic_credentials(encoded: &str) -> Result<(String, String), Status> {
    use base64::Engine;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    // With or without `=` padding: the Go Flight client (ADBC) sends it unpadded.
    const BASIC: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let decoded = BASIC
        .decode(encoded.trim())
        .map_err(|_| Status::unauthenticated("Basic credentials are not base64"))?;
    let text = String::from_utf8(decoded).map_err(|_| Status::unauthenticated("Basic credentials are not UTF-8"))?;
    let (user, password) = text.split_once(':').ok_or_else(|| Status::unauthenticated("Basic credentials are not user:password"))?;
    if user.is_empty() {
        return Err(Status::unauthenticated("no user name in the Basic credentials"));
    }
    Ok((user.to_string(), password.to_string()))
}

/// 128 random bits from the OS, hex: bearer tokens, result tickets, prepared statement handles.
/// Without the OS generator there is no token that cannot be guessed, so the request fails.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| WeirError::internal(format!("the OS random generator failed: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A Weir error as a gRPC status: the code by SQLSTATE class, the message as psql would print
/// it (with detail and hint), and the SQLSTATE in `x-weir-sqlstate` metadata.
pub fn status(e: WeirError) -> Status {
    let code = e.state.code();
    let grpc = match code {
        "42P01" | "42703" | "42883" | "42704" | "3F000" | "3D000" | "34000" | "26000" => tonic::Code::NotFound,
        "42P07" | "42710" | "42P06" | "23505" => tonic::Code::AlreadyExists,
        "42501" => tonic::Code::PermissionDenied,
        "08P01" => tonic::Code::InvalidArgument,
        "57014" => tonic::Code::Cancelled,
        _ => match &code[..2] {
            "0A" => tonic::Code::Unimplemented,
            "22" | "42" | "2F" => tonic::Code::InvalidArgument,
            "23" | "25" | "2B" | "55" => tonic::Code::FailedPrecondition,
            "28" => tonic::Code::Unauthenticated,
            "40" => tonic::Code::Aborted,
            "53" | "54" => tonic::Code::ResourceExhausted,
            "08" | "57" => tonic::Code::Unavailable,
            _ => tonic::Code::Internal,
        },
    };
    let mut message = format!("ERROR {code}: {}", e.message);
    if let Some(detail) = &e.detail {
        message.push_str(&format!("\nDETAIL: {detail}"));
    }
    if let Some(hint) = &e.hint {
        message.push_str(&format!("\nHINT: {hint}"));
    }
    let mut status = Status::new(grpc, message);
    if let Ok(value) = MetadataValue::try_from(code) {
        status.metadata_mut().insert("x-weir-sqlstate", value);
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_the_sqlstate() {
        let s = status(WeirError::new(SqlState::UndefinedTable, "relation \"x\" does not exist").with_hint("Create it."));
        assert_eq!(s.code(), tonic::Code::NotFound);
        assert_eq!(s.message(), "ERROR 42P01: relation \"x\" does not exist\nHINT: Create it.");
        assert_eq!(s.metadata().get("x-weir-sqlstate").and_then(|v| v.to_str().ok()), Some("42P01"));
        assert_eq!(status(WeirError::new(SqlState::SyntaxError, "x")).code(), tonic::Code::InvalidArgument);
        assert_eq!(status(WeirError::new(SqlState::FeatureNotSupported, "x")).code(), tonic::Code::Unimplemented);
    }

    #[test]
    fn basic_credentials_are_user_and_password() {
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3:cret");
        assert_eq!(basic_credentials(&encoded).unwrap(), ("alice".to_string(), "s3:cret".to_string()));
        assert!(basic_credentials("!!!").is_err());
        assert!(basic_credentials(&base64::engine::general_purpose::STANDARD.encode(":x")).is_err());
    }

    #[test]
    fn tokens_are_random_hex() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
