//! Parse errors, shaped the way Postgres reports them.

use thiserror::Error;

/// A statement that could not be parsed.
///
/// `message` follows Postgres (`syntax error at or near "x"`), `detail` keeps what the parser
/// expected, and `position` is the 1-based character offset into the query string that Postgres
/// sends in the error's `P` field (psql draws a caret under it).
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("{message}")]
pub struct ParseError {
    pub message: String,
    pub detail: Option<String>,
    pub position: Option<usize>,
}

impl ParseError {
    pub fn new(message: impl Into<String>) -> Self {
        ParseError { message: message.into(), detail: None, position: None }
    }

    /// Converts sqlparser's error (`Expected: X, found: Y at Line: l, Column: c`) into
    /// Postgres's wording, with the position resolved against the original `sql`.
    pub(crate) fn from_sqlparser(err: sqlparser::parser::ParserError, sql: &str) -> Self {
        let raw = match err {
            sqlparser::parser::ParserError::TokenizerError(s)
            | sqlparser::parser::ParserError::ParserError(s) => s,
            sqlparser::parser::ParserError::RecursionLimitExceeded => {
                return ParseError::new("statement is too deeply nested");
            }
        };
        let (text, location) = split_location(&raw);
        let position = location.and_then(|(line, column)| char_offset(sql, line, column));
        let found = text.rsplit_once("found: ").map(|(_, f)| f.trim().to_string());
        let message = match found.as_deref() {
            Some("EOF") | Some("") => "syntax error at end of input".to_string(),
            Some(token) => format!("syntax error at or near \"{token}\""),
            None => format!("syntax error: {text}"),
        };
        let position = if found.as_deref() == Some("EOF") {
            Some(sql.trim_end().chars().count() + 1)
        } else {
            position
        };
        ParseError { message, detail: Some(text.to_string()), position }
    }
}

/// Splits `"... at Line: 3, Column: 7"` into the text and `(3, 7)`.
fn split_location(raw: &str) -> (&str, Option<(u64, u64)>) {
    let Some((text, loc)) = raw.rsplit_once(" at Line: ") else {
        return (raw, None);
    };
    let mut parts = loc.split(", Column: ");
    let line = parts.next().and_then(|l| l.trim().parse().ok());
    let column = parts.next().and_then(|c| c.trim().parse().ok());
    match (line, column) {
        (Some(l), Some(c)) => (text, Some((l, c))),
        _ => (raw, None),
    }
}

/// The 1-based character offset of (line, column) in `sql`, both 1-based.
pub(crate) fn char_offset(sql: &str, line: u64, column: u64) -> Option<usize> {
    if line == 0 || column == 0 {
        return None;
    }
    let mut offset = 0usize;
    for (i, l) in sql.split_inclusive('\n').enumerate() {
        if i as u64 + 1 == line {
            return Some(offset + column as usize);
        }
        offset += l.chars().count();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_is_resolved_across_lines() {
        assert_eq!(char_offset("select 1;\nselec 2", 2, 1), Some(11));
        assert_eq!(char_offset("abc", 1, 3), Some(3));
        assert_eq!(char_offset("abc", 0, 3), None);
    }
}
