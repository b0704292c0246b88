//! Splits a query string into statements and parses each one.
//!
//! One sqlparser `Parser` walks the whole token stream (so quoting, comments and dollar-quoted
//! strings are handled once, by sqlparser's tokenizer). Before each statement we look at its
//! first words: Weir's own statements are parsed here, with sqlparser's helpers for the
//! pieces (column definitions, expressions, queries); everything else goes to sqlparser's
//! Postgres dialect unchanged.

use sqlparser::ast::{self, Ident, ObjectName};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Location, Token, Tokenizer};

use crate::error::ParseError;
use crate::options::WithOption;
use crate::statement::{
    CreateMaterializedView, CreateSink, CreateSource, CreateStreamingTable, FormatEncode, ObjectKind, RoleOptions, SinkInput,
    Statement, Subscribe, SubscribeTarget, Watermark,
};

/// A parsed statement and the exact source text it came from (without the trailing `;`).
#[derive(Debug, Clone, PartialEq)]
pub struct ParsedStatement {
    pub statement: Statement,
    pub text: String,
}

/// Parses every statement in `sql`. An empty string (or only `;` and comments) gives no
/// statements, which Postgres answers with EmptyQueryResponse.
pub fn parse(sql: &str) -> Result<Vec<ParsedStatement>, ParseError> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql)
        .tokenize_with_location()
        .map_err(|e| tokenizer_error(e, sql))?;
    let mut parser = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let mut out = Vec::new();
    loop {
        while parser.consume_token(&Token::SemiColon) {}
        let start = parser.peek_token();
        if start.token == Token::EOF {
            break;
        }
        let start_offset = byte_offset(sql, start.span.start).unwrap_or(0);
        let statement = parse_one(&mut parser).map_err(|e| ParseError::from_sqlparser(e, sql))?;
        let end = parser.peek_token();
        match end.token {
            Token::SemiColon | Token::EOF => {}
            _ => {
                let position = byte_offset(sql, end.span.start)
                    .map(|b| sql[..b].chars().count() + 1);
                return Err(ParseError {
                    message: format!("syntax error at or near \"{}\"", end.token),
                    detail: Some("expected the end of the statement".into()),
                    position,
                });
            }
        }
        let end_offset = if end.token == Token::EOF {
            sql.len()
        } else {
            byte_offset(sql, end.span.start).unwrap_or(sql.len())
        };
        let text = sql.get(start_offset..end_offset).unwrap_or(sql).trim().to_string();
        out.push(ParsedStatement { statement, text });
    }
    Ok(out)
}

fn tokenizer_error(e: sqlparser::tokenizer::TokenizerError, sql: &str) -> ParseError {
    let position = crate::error::char_offset(sql, e.location.line, e.location.column);
    ParseError { message: format!("syntax error: {}", e.message), detail: None, position }
}

/// Byte offset of a 1-based (line, column-in-characters) location.
fn byte_offset(sql: &str, loc: Location) -> Option<usize> {
    if loc.line == 0 || loc.column == 0 {
        return None;
    }
    let mut line_start = 0usize;
    for (i, line) in sql.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == loc.line {
            let col = (loc.column - 1) as usize;
            return Some(
                line.char_indices().nth(col).map(|(b, _)| line_start + b).unwrap_or(line_start + line.len()),
            );
        }
        line_start += line.len();
    }
    None
}

/// The upper-cased text of the `n`-th next token if it is an unquoted word.
fn word(parser: &Parser, n: usize) -> Option<String> {
    let tokens = parser.peek_tokens::<4>();
    match tokens.get(n) {
        Some(Token::Word(w)) if w.quote_style.is_none() => Some(w.value.to_ascii_uppercase()),
        _ => None,
    }
}

fn expect_word(parser: &mut Parser, expected: &str) -> Result<(), ParserError> {
    if word(parser, 0).as_deref() == Some(expected) {
        parser.next_token();
        Ok(())
    } else {
        parser.expected(expected, parser.peek_token())
    }
}

fn parse_word_if(parser: &mut Parser, expected: &str) -> bool {
    if word(parser, 0).as_deref() == Some(expected) {
        parser.next_token();
        true
    } else {
        false
    }
}

fn parse_one(p: &mut Parser) -> Result<Statement, ParserError> {
    let w0 = word(p, 0);
    let w1 = word(p, 1);
    match (w0.as_deref(), w1.as_deref()) {
        (Some("CREATE"), Some("SOURCE")) => parse_create_source(p).map(|s| Statement::CreateSource(Box::new(s))),
        (Some("CREATE"), Some("MATERIALIZED")) => {
            parse_create_materialized_view(p).map(|s| Statement::CreateMaterializedView(Box::new(s)))
        }
        (Some("CREATE"), Some("TABLE")) => parse_create_table(p),
        (Some("CREATE"), Some("SINK")) => parse_create_sink(p).map(|s| Statement::CreateSink(Box::new(s))),
        (Some("DROP"), Some("SOURCE" | "SINK")) => parse_drop(p),
        (Some("CREATE" | "ALTER"), Some("USER" | "ROLE")) => parse_create_or_alter_role(p),
        (Some("DROP"), Some("USER" | "ROLE")) => {
            p.next_token();
            p.next_token();
            let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
            let names = p.parse_comma_separated(|p| p.parse_identifier())?;
            Ok(Statement::DropRole { names, if_exists })
        }
        (Some("ALTER"), Some("MATERIALIZED")) => {
            p.next_token();
            p.next_token();
            p.expect_keyword(Keyword::VIEW)?;
            let name = p.parse_object_name(false)?;
            p.expect_keyword(Keyword::SET)?;
            let options = parse_option_list(p)?;
            Ok(Statement::AlterMaterializedViewSet { name, options })
        }
        (Some("EXPLAIN"), Some("CREATE")) if word(p, 2).as_deref() == Some("MATERIALIZED") => {
            p.next_token();
            parse_create_materialized_view(p).map(|s| Statement::ExplainCreateMaterializedView(Box::new(s)))
        }
        (Some("SUBSCRIBE"), _) => parse_subscribe(p).map(|s| Statement::Subscribe(Box::new(s))),
        (Some("DECLARE"), _) if declares_subscribe(p) => parse_declare_subscribe(p),
        (Some("FETCH"), _) => parse_fetch(p),
        (Some("COPY"), _) if p.peek_nth_token_ref(1).token == Token::LParen && word(p, 2).as_deref() == Some("SUBSCRIBE") => parse_copy_subscribe(p),
        (Some("FLUSH"), _) if matches!(p.peek_tokens::<2>()[1], Token::SemiColon | Token::EOF) => {
            p.next_token();
            Ok(Statement::Flush)
        }
        (Some("SHOW"), Some("CREATE")) => {
            p.next_token();
            p.next_token();
            let kind = parse_object_kind(p)?;
            let name = p.parse_object_name(false)?;
            Ok(Statement::ShowCreate { kind, name })
        }
        (Some("SHOW"), Some(_)) if show_objects_kind(p).is_some() => {
            let kind = show_objects_kind(p).unwrap_or(ObjectKind::Table);
            p.next_token();
            p.next_token();
            if kind == ObjectKind::MaterializedView {
                p.next_token();
            }
            Ok(Statement::ShowObjects(kind))
        }
        _ => Ok(Statement::Standard(Box::new(p.parse_statement()?))),
    }
}

/// `CREATE | ALTER  USER | ROLE name [WITH] [SUPERUSER | NOSUPERUSER | LOGIN | NOLOGIN |
/// PASSWORD 'p' | PASSWORD NULL] ...`. Other Postgres role options are refused by name, so
/// that nothing is silently ignored.
fn parse_create_or_alter_role(p: &mut Parser) -> Result<Statement, ParserError> {
    let create = word(p, 0).as_deref() == Some("CREATE");
    p.next_token();
    let user = word(p, 0).as_deref() == Some("USER");
    p.next_token();
    let name = p.parse_identifier()?;
    let _ = p.parse_keyword(Keyword::WITH);
    let mut options = RoleOptions::default();
    while let Some(option) = word(p, 0) {
        match option.as_str() {
            "SUPERUSER" | "NOSUPERUSER" => options.superuser = Some(option == "SUPERUSER"),
            "LOGIN" | "NOLOGIN" => options.login = Some(option == "LOGIN"),
            "PASSWORD" => {
                p.next_token();
                if p.parse_keyword(Keyword::NULL) {
                    options.password = Some(None);
                } else {
                    options.password = Some(Some(p.parse_literal_string()?));
                }
                continue;
            }
            "ENCRYPTED" => {
                // `ENCRYPTED PASSWORD 'p'`: every password is stored as a verifier anyway.
                p.next_token();
                continue;
            }
            other => {
                return Err(ParserError::ParserError(format!(
                    "role option {other} is not supported (SUPERUSER, NOSUPERUSER, LOGIN, NOLOGIN and PASSWORD are)"
                )));
            }
        }
        p.next_token();
    }
    Ok(if create { Statement::CreateRole { name, user, options } } else { Statement::AlterRole { name, options } })
}

/// `DROP SOURCE | SINK [IF EXISTS] name [, ...] [CASCADE | RESTRICT]` (sqlparser knows the other
/// kinds).
fn parse_drop(p: &mut Parser) -> Result<Statement, ParserError> {
    p.next_token();
    let kind = parse_object_kind(p)?;
    let if_exists = p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
    let names = p.parse_comma_separated(|p| p.parse_object_name(false))?;
    let cascade = p.parse_keyword(Keyword::CASCADE);
    if !cascade {
        let _ = p.parse_keyword(Keyword::RESTRICT);
    }
    Ok(Statement::Drop { kind, names, if_exists, cascade })
}

/// `SHOW TABLES` and friends; `None` for `SHOW <variable>`.
fn show_objects_kind(p: &Parser) -> Option<ObjectKind> {
    let end = |n: usize| matches!(p.peek_tokens::<4>()[n], Token::SemiColon | Token::EOF);
    let kind = match word(p, 1)?.as_str() {
        "TABLES" => ObjectKind::Table,
        "SOURCES" => ObjectKind::Source,
        "SINKS" => ObjectKind::Sink,
        "VIEWS" => ObjectKind::View,
        "MATERIALIZED" if word(p, 2).as_deref() == Some("VIEWS") => {
            return end(3).then_some(ObjectKind::MaterializedView);
        }
        _ => return None,
    };
    end(2).then_some(kind)
}

fn parse_object_kind(p: &mut Parser) -> Result<ObjectKind, ParserError> {
    let kind = match word(p, 0).as_deref() {
        Some("TABLE") => ObjectKind::Table,
        Some("SOURCE") => ObjectKind::Source,
        Some("SINK") => ObjectKind::Sink,
        Some("VIEW") => ObjectKind::View,
        Some("MATERIALIZED") => {
            p.next_token();
            expect_word(p, "VIEW")?;
            return Ok(ObjectKind::MaterializedView);
        }
        _ => return p.expected("TABLE, SOURCE, MATERIALIZED VIEW, VIEW or SINK", p.peek_token()),
    };
    p.next_token();
    Ok(kind)
}

fn parse_if_not_exists(p: &mut Parser) -> bool {
    p.parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS])
}

/// An option key: identifiers joined by dots (`properties.bootstrap.server`), lower-cased.
fn parse_option_key(p: &mut Parser) -> Result<String, ParserError> {
    let mut key = option_key_part(p)?;
    while p.consume_token(&Token::Period) {
        key.push('.');
        key.push_str(&option_key_part(p)?);
    }
    Ok(key)
}

fn option_key_part(p: &mut Parser) -> Result<String, ParserError> {
    let t = p.next_token();
    match t.token {
        Token::Word(w) => Ok(if w.quote_style.is_some() { w.value } else { w.value.to_ascii_lowercase() }),
        Token::Number(n, _) => Ok(n),
        _ => p.expected("an option name", t),
    }
}

/// `(key = value, ...)`.
fn parse_option_list(p: &mut Parser) -> Result<Vec<WithOption>, ParserError> {
    p.expect_token(&Token::LParen)?;
    if p.consume_token(&Token::RParen) {
        return Ok(Vec::new());
    }
    let options = p.parse_comma_separated(|p| {
        let key = parse_option_key(p)?;
        p.expect_token(&Token::Eq)?;
        let value = p.parse_expr()?;
        Ok(WithOption { key, value })
    })?;
    p.expect_token(&Token::RParen)?;
    Ok(options)
}

fn parse_with_options(p: &mut Parser) -> Result<Vec<WithOption>, ParserError> {
    if p.parse_keyword(Keyword::WITH) { parse_option_list(p) } else { Ok(Vec::new()) }
}

fn parse_format_encode(p: &mut Parser) -> Result<Option<FormatEncode>, ParserError> {
    if !p.parse_keyword(Keyword::FORMAT) {
        return Ok(None);
    }
    let format = p.parse_identifier()?;
    expect_word(p, "ENCODE")?;
    let encode = p.parse_identifier()?;
    let options =
        if p.peek_token().token == Token::LParen { parse_option_list(p)? } else { Vec::new() };
    Ok(Some(FormatEncode { format, encode, options }))
}

fn parse_create_source(p: &mut Parser) -> Result<CreateSource, ParserError> {
    p.expect_keyword(Keyword::CREATE)?;
    expect_word(p, "SOURCE")?;
    let if_not_exists = parse_if_not_exists(p);
    let name = p.parse_object_name(false)?;
    let mut columns = Vec::new();
    let mut watermark = None;
    if p.consume_token(&Token::LParen) && !p.consume_token(&Token::RParen) {
        {
            loop {
                if word(p, 0).as_deref() == Some("WATERMARK") && word(p, 1).as_deref() == Some("FOR") {
                    p.next_token();
                    p.next_token();
                    let column = p.parse_identifier()?;
                    p.expect_keyword(Keyword::AS)?;
                    let expr = p.parse_expr()?;
                    if watermark.is_some() {
                        return Err(ParserError::ParserError(
                            "a source can declare only one WATERMARK".into(),
                        ));
                    }
                    watermark = Some(Watermark { column, expr });
                } else {
                    columns.push(parse_source_column(p)?);
                }
                if p.consume_token(&Token::Comma) {
                    continue;
                }
                p.expect_token(&Token::RParen)?;
                break;
            }
        }
    }
    let mut include = Vec::new();
    while parse_word_if(p, "INCLUDE") {
        let what: Ident = p.parse_identifier()?;
        let alias = if p.parse_keyword(Keyword::AS) { Some(p.parse_identifier()?) } else { None };
        include.push((what, alias));
    }
    let with = parse_with_options(p)?;
    let format = parse_format_encode(p)?;
    Ok(CreateSource { if_not_exists, name, columns, watermark, include, with, format })
}

/// A source's column definition: sqlparser's, except that the type may be a
/// `STRUCT<name type, ...>` (RisingWave's syntax for nested values), which sqlparser's Postgres
/// dialect does not parse.
fn parse_source_column(p: &mut Parser) -> Result<ast::ColumnDef, ParserError> {
    let name = p.parse_identifier()?;
    let data_type = parse_column_type(p)?;
    let mut options = Vec::new();
    loop {
        let name = if p.parse_keyword(Keyword::CONSTRAINT) { Some(p.parse_identifier()?) } else { None };
        match p.parse_optional_column_option()? {
            Some(option) => options.push(ast::ColumnOptionDef { name, option }),
            None if name.is_some() => return Err(ParserError::ParserError("expected constraint details after CONSTRAINT <name>".into())),
            None => break,
        }
    }
    Ok(ast::ColumnDef { name, data_type, options })
}

/// A column type, `STRUCT<...>` included (nested to any depth).
pub fn parse_column_type(p: &mut Parser) -> Result<ast::DataType, ParserError> {
    let (data_type, closed_outer) = parse_nested_type(p)?;
    if closed_outer > 0 {
        return Err(ParserError::ParserError(format!("syntax error at or near \"{}\"", ">".repeat(closed_outer + 1))));
    }
    Ok(data_type)
}

/// Parses one type; the count says how many of the `STRUCT<` around it its last token also
/// closed (the tokenizer reads `>>` and `>>>` as one token).
fn parse_nested_type(p: &mut Parser) -> Result<(ast::DataType, usize), ParserError> {
    if !(word(p, 0).as_deref() == Some("STRUCT") && p.peek_nth_token(1).token == Token::Lt) {
        return Ok((p.parse_data_type()?, 0));
    }
    p.next_token();
    p.next_token();
    let mut fields = Vec::new();
    loop {
        let field_name = p.parse_identifier()?;
        let (field_type, closed) = parse_nested_type(p)?;
        fields.push(ast::StructField { field_name: Some(field_name), field_type, options: None });
        let struct_type = |fields| ast::DataType::Struct(fields, ast::StructBracketKind::AngleBrackets);
        if closed > 0 {
            return Ok((struct_type(fields), closed - 1));
        }
        if p.consume_token(&Token::Comma) {
            continue;
        }
        let next = p.next_token();
        let brackets = match &next.token {
            Token::Gt => 1,
            Token::ShiftRight => 2,
            Token::CustomBinaryOperator(op) if !op.is_empty() && op.chars().all(|c| c == '>') => op.len(),
            other => {
                return Err(ParserError::ParserError(format!(
                    "syntax error at or near \"{other}\": expected , or > in STRUCT<...>"
                )));
            }
        };
        return Ok((struct_type(fields), brackets - 1));
    }
}

/// Parses a column type written as text (`integer`, `struct<a integer, b text>`).
pub fn parse_type_name(text: &str) -> Result<ast::DataType, ParseError> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, text).tokenize_with_location().map_err(|e| tokenizer_error(e, text))?;
    let mut p = Parser::new(&dialect).with_tokens_with_locations(tokens);
    let data_type = parse_column_type(&mut p).map_err(|e| ParseError::from_sqlparser(e, text))?;
    if p.peek_token().token != Token::EOF {
        return Err(ParseError::from_sqlparser(ParserError::ParserError(format!("syntax error at or near \"{}\"", p.peek_token().token)), text));
    }
    Ok(data_type)
}

/// `CREATE TABLE`, with Weir's streaming clauses cut out of the token stream (a
/// `WATERMARK FOR col AS expr` element of the column list, a trailing `APPEND ONLY`) before
/// sqlparser parses the rest.
fn parse_create_table(p: &mut Parser) -> Result<Statement, ParserError> {
    let mut tokens = Vec::new();
    let mut depth = 0usize;
    loop {
        let t = p.peek_token();
        match t.token {
            Token::EOF => break,
            Token::SemiColon if depth == 0 => break,
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        tokens.push(p.next_token());
    }
    let is_word = |t: &sqlparser::tokenizer::TokenWithSpan, w: &str| matches!(&t.token, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w));
    let append_only = tokens.len() >= 2 && is_word(&tokens[tokens.len() - 2], "APPEND") && is_word(&tokens[tokens.len() - 1], "ONLY");
    if append_only {
        tokens.truncate(tokens.len() - 2);
    }
    // The WATERMARK element: from `WATERMARK FOR` at depth 1 to the next comma or the closing
    // parenthesis at that depth, with one adjacent comma.
    let mut watermark = None;
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        match tokens[i].token {
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth == 1 && is_word(&tokens[i], "WATERMARK") && tokens.get(i + 1).is_some_and(|t| is_word(t, "FOR")) {
            let mut end = i;
            let mut d = 1usize;
            while end < tokens.len() {
                match tokens[end].token {
                    Token::LParen => d += 1,
                    Token::RParen if d == 1 => break,
                    Token::RParen => d -= 1,
                    Token::Comma if d == 1 => break,
                    _ => {}
                }
                end += 1;
            }
            let element: Vec<_> = tokens[i + 2..end].to_vec();
            let mut wp = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(element);
            let column = wp.parse_identifier()?;
            wp.expect_keyword(Keyword::AS)?;
            let expr = wp.parse_expr()?;
            if watermark.replace(Watermark { column, expr }).is_some() {
                return Err(ParserError::ParserError("a table can declare only one WATERMARK".into()));
            }
            let (from, to) = if tokens.get(end).is_some_and(|t| t.token == Token::Comma) {
                (i, end + 1)
            } else if i > 0 && tokens[i - 1].token == Token::Comma {
                (i - 1, end)
            } else {
                (i, end)
            };
            tokens.drain(from..to);
            i = from;
            continue;
        }
        i += 1;
    }
    let mut rest = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens);
    let statement = rest.parse_statement()?;
    if !matches!(rest.peek_token().token, Token::EOF) {
        return Err(ParserError::ParserError(format!("syntax error at or near \"{}\"", rest.peek_token().token)));
    }
    match (statement, watermark.is_some() || append_only) {
        (ast::Statement::CreateTable(table), true) => {
            Ok(Statement::CreateStreamingTable(Box::new(CreateStreamingTable { table, watermark, append_only })))
        }
        (statement, _) => Ok(Statement::Standard(Box::new(statement))),
    }
}

fn parse_create_materialized_view(p: &mut Parser) -> Result<CreateMaterializedView, ParserError> {
    p.expect_keyword(Keyword::CREATE)?;
    expect_word(p, "MATERIALIZED")?;
    p.expect_keyword(Keyword::VIEW)?;
    let if_not_exists = parse_if_not_exists(p);
    let name = p.parse_object_name(false)?;
    let with = parse_with_options(p)?;
    p.expect_keyword(Keyword::AS)?;
    let query = p.parse_query()?;
    let emit_on_window_close = parse_emit_on_window_close(p)?;
    Ok(CreateMaterializedView { if_not_exists, name, with, query, emit_on_window_close })
}

/// An optional `EMIT ON WINDOW CLOSE` after a view's or sink's query.
fn parse_emit_on_window_close(p: &mut Parser) -> Result<bool, ParserError> {
    if word(p, 0).as_deref() != Some("EMIT") {
        return Ok(false);
    }
    p.next_token();
    p.expect_keyword(Keyword::ON)?;
    p.expect_keyword(Keyword::WINDOW)?;
    p.expect_keyword(Keyword::CLOSE)?;
    Ok(true)
}

fn parse_create_sink(p: &mut Parser) -> Result<CreateSink, ParserError> {
    p.expect_keyword(Keyword::CREATE)?;
    expect_word(p, "SINK")?;
    let if_not_exists = parse_if_not_exists(p);
    let name = p.parse_object_name(false)?;
    let input = if p.parse_keyword(Keyword::FROM) {
        SinkInput::Object(p.parse_object_name(false)?)
    } else {
        p.expect_keyword(Keyword::AS)?;
        let query = parse_sink_query(p)?;
        SinkInput::Query { query, emit_on_window_close: parse_emit_on_window_close(p)? }
    };
    let with = parse_with_options(p)?;
    let format = parse_format_encode(p)?;
    Ok(CreateSink { if_not_exists, name, input, with, format })
}

/// A sink's query, which ends before `EMIT ON WINDOW CLOSE` or the sink's `WITH (...)` options.
/// sqlparser would read `FROM t WITH (...)` as MSSQL table hints of `t` and `FROM t EMIT` as an
/// alias, so the query is parsed from the tokens up to the first `EMIT ON` or else the last
/// `WITH (` outside parentheses (a CTE's `WITH` is followed by a name, not `(`).
fn parse_sink_query(p: &mut Parser) -> Result<Box<ast::Query>, ParserError> {
    let mut tokens = Vec::new();
    let (mut options_at, mut emit_at) = (None, None);
    let mut depth = 0usize;
    loop {
        let token = p.peek_nth_token_ref(tokens.len()).clone();
        let next = &p.peek_nth_token_ref(tokens.len() + 1).token;
        match &token.token {
            Token::EOF | Token::SemiColon => break,
            Token::LParen => depth += 1,
            Token::RParen => depth = depth.saturating_sub(1),
            Token::Word(w) if depth == 0 && w.keyword == Keyword::WITH && *next == Token::LParen => options_at = Some(tokens.len()),
            Token::Word(w) if depth == 0 && w.value.eq_ignore_ascii_case("EMIT") && matches!(next, Token::Word(n) if n.keyword == Keyword::ON) => {
                emit_at = emit_at.or(Some(tokens.len()));
            }
            _ => {}
        }
        tokens.push(token);
    }
    let Some(end) = emit_at.or(options_at) else { return p.parse_query() };
    tokens.truncate(end);
    let mut query_parser = Parser::new(&PostgreSqlDialect {}).with_tokens_with_locations(tokens);
    let query = query_parser.parse_query()?;
    let rest = query_parser.peek_token();
    if rest.token != Token::EOF {
        return Err(ParserError::ParserError(format!("syntax error at or near \"{}\"", rest.token)));
    }
    for _ in 0..end {
        p.next_token();
    }
    Ok(query)
}

/// Whether a DECLARE is `DECLARE name ... CURSOR ... FOR SUBSCRIBE`.
fn declares_subscribe(p: &Parser) -> bool {
    let mut i = 1;
    loop {
        match &p.peek_nth_token_ref(i).token {
            Token::EOF | Token::SemiColon => return false,
            Token::Word(w) if w.keyword == Keyword::FOR => {
                return matches!(&p.peek_nth_token_ref(i + 1).token, Token::Word(s) if s.value.eq_ignore_ascii_case("SUBSCRIBE"));
            }
            _ => i += 1,
        }
    }
}

/// `DECLARE name [NO SCROLL] CURSOR [WITHOUT HOLD] FOR SUBSCRIBE ...`.
fn parse_declare_subscribe(p: &mut Parser) -> Result<Statement, ParserError> {
    p.expect_keyword(Keyword::DECLARE)?;
    let name = p.parse_identifier()?;
    while !p.parse_keyword(Keyword::FOR) {
        let token = p.next_token();
        if let Token::Word(w) = &token.token
            && w.keyword == Keyword::WITH
            && word(p, 0).as_deref() == Some("HOLD")
        {
            return Err(ParserError::ParserError("a cursor FOR SUBSCRIBE cannot be WITH HOLD".into()));
        }
    }
    let subscribe = parse_subscribe(p)?;
    Ok(Statement::DeclareSubscribe { name, subscribe: Box::new(subscribe) })
}

/// `FETCH [FORWARD] [n | ALL] [FROM | IN] cursor [WITH (timeout = '1s')]`; without a count, one
/// row.
fn parse_fetch(p: &mut Parser) -> Result<Statement, ParserError> {
    p.expect_keyword(Keyword::FETCH)?;
    let _ = p.parse_keyword(Keyword::FORWARD) || p.parse_keyword(Keyword::NEXT);
    let count = if p.parse_keyword(Keyword::ALL) {
        None
    } else if let Token::Number(n, _) = &p.peek_token_ref().token {
        let n = n.parse::<u64>().map_err(|_| ParserError::ParserError(format!("invalid FETCH count {n}")))?;
        p.next_token();
        Some(n)
    } else {
        Some(1)
    };
    let _ = p.parse_keyword(Keyword::FROM) || p.parse_keyword(Keyword::IN);
    let cursor = p.parse_identifier()?;
    let with = parse_with_options(p)?;
    Ok(Statement::Fetch { cursor, count, with })
}

/// `COPY (SUBSCRIBE ...) TO STDOUT [WITH (...)]`. What follows the subscription is parsed by
/// sqlparser as the rest of `COPY (SELECT 1) ...`, so COPY's options are read as usual.
fn parse_copy_subscribe(p: &mut Parser) -> Result<Statement, ParserError> {
    p.expect_keyword(Keyword::COPY)?;
    p.expect_token(&Token::LParen)?;
    let subscribe = parse_subscribe(p)?;
    p.expect_token(&Token::RParen)?;
    let mut rest = Vec::new();
    while !matches!(p.peek_token_ref().token, Token::EOF | Token::SemiColon) {
        rest.push(p.next_token().token.to_string());
    }
    let sql = format!("COPY (SELECT 1) {}", rest.join(" "));
    let copy = Parser::new(&PostgreSqlDialect {}).try_with_sql(&sql)?.parse_statement()?;
    match &copy {
        ast::Statement::Copy { to: true, target: ast::CopyTarget::Stdout, .. } => {}
        _ => return Err(ParserError::ParserError("COPY (SUBSCRIBE ...) must be TO STDOUT".into())),
    }
    Ok(Statement::CopySubscribe { subscribe: Box::new(subscribe), copy: Box::new(copy) })
}

fn parse_subscribe(p: &mut Parser) -> Result<Subscribe, ParserError> {
    expect_word(p, "SUBSCRIBE")?;
    let _ = p.parse_keyword(Keyword::TO);
    let target = if p.consume_token(&Token::LParen) {
        let q = p.parse_query()?;
        p.expect_token(&Token::RParen)?;
        SubscribeTarget::Query(q)
    } else {
        let name: ObjectName = p.parse_object_name(false)?;
        SubscribeTarget::Object(name)
    };
    let with = parse_with_options(p)?;
    Ok(Subscribe { target, with })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(sql: &str) -> Statement {
        let mut v = parse(sql).unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert_eq!(v.len(), 1, "{sql}");
        v.remove(0).statement
    }

    #[test]
    fn role_statements_parse_and_redact_passwords() {
        let s = one("CREATE USER ann WITH PASSWORD 'it''s secret' SUPERUSER");
        let Statement::CreateRole { name, user: true, options } = &s else { panic!("{s:?}") };
        assert_eq!((name.value.as_str(), options.superuser, options.password.clone()), ("ann", Some(true), Some(Some("it's secret".into()))));
        assert_eq!(s.to_redacted_string(), "CREATE USER ann SUPERUSER PASSWORD '***'");
        assert_eq!(one(&s.to_string()), s);
        let s = one("alter role ann nologin password null");
        assert_eq!(s, Statement::AlterRole { name: "ann".into(), options: RoleOptions { login: Some(false), password: Some(None), superuser: None } });
        assert_eq!(one("DROP USER IF EXISTS ann, bob"), Statement::DropRole { names: vec!["ann".into(), "bob".into()], if_exists: true });
        assert!(parse("CREATE ROLE ann CREATEDB").is_err());
    }

    /// Display must print SQL that parses back into the same statement.
    fn round_trips(sql: &str) {
        let s = one(sql);
        let printed = s.to_string();
        assert_eq!(one(&printed), s, "{sql} printed as {printed}");
    }

    #[test]
    fn splits_statements_and_keeps_their_text() {
        let v = parse("select 1; ;select 'a;b' ;").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].text, "select 1");
        assert_eq!(v[1].text, "select 'a;b'");
        assert!(parse("  ; -- only a comment\n").unwrap().is_empty());
    }

    #[test]
    fn streaming_ddl_round_trips() {
        round_trips(
            "CREATE SOURCE chat (stream_id VARCHAR, ts TIMESTAMPTZ, \
             WATERMARK FOR ts AS ts - INTERVAL '5 seconds') WITH (connector = 'kafka', \
             topic = 'chat', properties.bootstrap.server = 'localhost:9092') FORMAT PLAIN ENCODE JSON",
        );
        round_trips(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS m WITH (retention = '7 days') AS \
             SELECT stream_id, window_start, count(*) FROM TUMBLE(chat, ts, INTERVAL '1 minute') \
             GROUP BY stream_id, window_start EMIT ON WINDOW CLOSE",
        );
        round_trips(
            "CREATE SINK s FROM m WITH (connector = 'clickhouse', clickhouse.password = 'pw')",
        );
        round_trips("CREATE SINK s AS SELECT 1 WITH (connector = 'questdb')");
        round_trips("COPY (SUBSCRIBE v WITH (progress = true)) TO STDOUT");
        round_trips("DECLARE c CURSOR FOR SUBSCRIBE v WITH (snapshot = false)");
        round_trips("FETCH 10 c WITH (timeout = '1s')");
        round_trips("FETCH ALL FROM c");
        assert_eq!(one("FETCH c"), one("FETCH 1 c"));
        round_trips("COPY (SUBSCRIBE (SELECT a FROM t)) TO STDOUT WITH (FORMAT csv)");
        // The options are the sink's, not table hints of the query's last table.
        round_trips("CREATE SINK s AS SELECT a FROM t WITH (connector = 'questdb')");
        round_trips("CREATE SINK s AS WITH x AS (SELECT a FROM t) SELECT a FROM x WITH (connector = 'questdb')");
        round_trips("CREATE SINK s AS SELECT a, window_start FROM TUMBLE(t, ts, INTERVAL '1' MINUTE) EMIT ON WINDOW CLOSE WITH (connector = 'questdb')");
        round_trips("SUBSCRIBE TO m WITH (snapshot = false)");
        round_trips("SUBSCRIBE (SELECT * FROM m)");
        round_trips("FLUSH");
        round_trips("SHOW MATERIALIZED VIEWS");
        round_trips("SHOW CREATE MATERIALIZED VIEW m");
        round_trips("CREATE TABLE t (a INT PRIMARY KEY, b TEXT)");
        round_trips(
            "CREATE SOURCE s (id INT NOT NULL, u STRUCT<name TEXT, \"Geo\" STRUCT<lat DOUBLE PRECISION, lon FLOAT8>>, \
             t STRUCT<a STRUCT<b STRUCT<c INT>>>) WITH (connector = 'nats') FORMAT PLAIN ENCODE JSON",
        );
    }

    #[test]
    fn drop_source_and_explain_view_round_trip() {
        round_trips("DROP SOURCE IF EXISTS a, b CASCADE");
        round_trips("DROP SINK s");
        round_trips("EXPLAIN CREATE MATERIALIZED VIEW v AS SELECT count(*) FROM t");
        round_trips("ALTER MATERIALIZED VIEW v SET (retention = '7 days')");
        round_trips("CREATE MATERIALIZED VIEW v WITH (retention = '1 hour') AS SELECT count(*) FROM t");
        assert!(matches!(one("DROP TABLE t"), Statement::Standard(_)));
    }

    #[test]
    fn show_variable_is_still_standard() {
        assert!(matches!(one("SHOW search_path"), Statement::Standard(_)));
        assert!(matches!(one("SHOW TABLES"), Statement::ShowObjects(ObjectKind::Table)));
        assert!(matches!(one("CREATE TABLE t (a INT)"), Statement::Standard(_)));
        let Statement::CreateStreamingTable(t) =
            one("CREATE TABLE t (a INT, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND, ts TIMESTAMP) APPEND ONLY")
        else {
            panic!("not a streaming table");
        };
        assert!(t.append_only);
        assert_eq!(t.table.columns.len(), 2);
        let text = t.to_string();
        assert_eq!(text, "CREATE TABLE t (a INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND) APPEND ONLY");
        assert_eq!(one(&text).to_string(), text, "the definition parses back to itself");
    }

    #[test]
    fn struct_types_parse_from_text() {
        let t = parse_type_name("struct<a integer, \"B\" struct<c text>>").unwrap();
        assert_eq!(t.to_string(), "STRUCT<a INTEGER, \"B\" STRUCT<c TEXT>>");
        assert!(parse_type_name("struct<a integer").is_err());
        assert!(parse_type_name("struct<a integer>>").is_err());
        assert!(parse_type_name("integer x").is_err());
        assert!(parse("CREATE SOURCE s (u STRUCT<a INT,>) WITH (connector = 'nats')").is_err());
    }

    #[test]
    fn secrets_are_redacted() {
        let s = one("CREATE SINK s FROM m WITH (connector = 'clickhouse', clickhouse.password = 'hunter2')");
        let r = s.to_redacted_string();
        assert!(!r.contains("hunter2"), "{r}");
        assert!(r.contains("clickhouse.password = '***'"), "{r}");
    }

    #[test]
    fn syntax_errors_carry_a_position() {
        let e = parse("SELECT 1;\nSELEC 2").unwrap_err();
        assert_eq!(e.message, "syntax error at or near \"SELEC\"");
        assert_eq!(e.position, Some(11));
        let e = parse("SELECT * FROM").unwrap_err();
        assert_eq!(e.message, "syntax error at end of input");
    }
}
