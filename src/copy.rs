//! `COPY ... FROM STDIN` and `COPY ... TO STDOUT` in Postgres's text and CSV formats.
//!
//! Incoming data is split into rows and fields here, each column gathered as text, and then
//! cast by Arrow to the column's type with the same casts (and the same 22P02 errors) as
//! `INSERT ... VALUES ('...')`. The whole COPY is one write: all rows or none.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, new_null_array};
use datafusion::arrow::datatypes::SchemaRef;
use sqlparser::ast;
use weir_catalog::ObjectId;

use crate::error::{Result, SqlState, WeirError};
use crate::settings::Settings;
use crate::text_format::ColumnText;

/// The data format of a COPY.
#[derive(Debug, Clone, PartialEq)]
pub struct CopyFormat {
    pub csv: bool,
    pub delimiter: char,
    pub null: String,
    pub header: bool,
    pub quote: char,
}

impl CopyFormat {
    pub fn from_options(options: &[ast::CopyOption], legacy: &[ast::CopyLegacyOption]) -> Result<Self> {
        let mut csv = false;
        let mut delimiter = None;
        let mut null = None;
        let mut header = false;
        let mut quote = '"';
        for o in options {
            match o {
                ast::CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                    "csv" => csv = true,
                    "text" => csv = false,
                    other => return Err(WeirError::not_supported(format!("COPY format \"{other}\""))),
                },
                ast::CopyOption::Delimiter(c) => delimiter = Some(*c),
                ast::CopyOption::Null(s) => null = Some(s.clone()),
                ast::CopyOption::Header(h) => header = *h,
                ast::CopyOption::Quote(c) => quote = *c,
                ast::CopyOption::Encoding(e) if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                other => return Err(WeirError::not_supported(format!("the COPY option {other}"))),
            }
        }
        for o in legacy {
            match o {
                ast::CopyLegacyOption::Csv(opts) => {
                    csv = true;
                    for c in opts {
                        if let ast::CopyLegacyCsvOption::Header = c {
                            header = true;
                        }
                    }
                }
                ast::CopyLegacyOption::Delimiter(c) => delimiter = Some(*c),
                ast::CopyLegacyOption::Null(s) => null = Some(s.clone()),
                ast::CopyLegacyOption::Header => header = true,
                other => return Err(WeirError::not_supported(format!("the COPY option {other}"))),
            }
        }
        Ok(CopyFormat {
            csv,
            delimiter: delimiter.unwrap_or(if csv { ',' } else { '\t' }),
            null: null.unwrap_or_else(|| if csv { String::new() } else { "\\N".to_string() }),
            header,
            quote,
        })
    }

    /// The wire format code for CopyInResponse/CopyOutResponse: 0 (text) for both text and CSV.
    pub fn wire_format(&self) -> i8 {
        0
    }
}

/// A `COPY t FROM STDIN` in progress.
pub struct CopyIn {
    table: ObjectId,
    table_name: String,
    schema: SchemaRef,
    /// Table column index of each field in the data.
    targets: Vec<usize>,
    format: CopyFormat,
    data: Vec<u8>,
}

impl CopyIn {
    pub fn new(table: ObjectId, table_name: String, schema: SchemaRef, targets: Vec<usize>, format: CopyFormat) -> Self {
        CopyIn { table, table_name, schema, targets, format, data: Vec::new() }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }

    /// Parses the received data into one batch of the table's schema.
    pub fn finish(self, _settings: &Settings) -> Result<(ObjectId, RecordBatch)> {
        let text = String::from_utf8(self.data).map_err(|_| {
            WeirError::new(SqlState::InvalidTextRepresentation, "invalid byte sequence for encoding \"UTF8\"")
        })?;
        let rows = if self.format.csv { parse_csv(&text, &self.format)? } else { parse_text(&text, &self.format)? };
        let rows: Vec<Vec<Option<String>>> = rows.into_iter().skip(usize::from(self.format.header)).collect();
        let mut fields_by_target: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows.len()); self.targets.len()];
        for (line, row) in rows.into_iter().enumerate() {
            if row.len() != self.targets.len() {
                let what = if row.len() < self.targets.len() { "missing data for column" } else { "extra data after last expected column" };
                return Err(WeirError::new(SqlState::InvalidTextRepresentation, what.to_string())
                    .with_detail(format!("COPY {}, line {}", self.table_name, line + 1 + usize::from(self.format.header))));
            }
            for (i, v) in row.into_iter().enumerate() {
                fields_by_target[i].push(v);
            }
        }
        let n = fields_by_target.first().map(Vec::len).unwrap_or(0);
        let mut columns: Vec<ArrayRef> = self
            .schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), n))
            .collect();
        let text_schema = Arc::new(datafusion::arrow::datatypes::Schema::new(
            self.schema.fields().iter().map(|f| f.as_ref().clone().with_data_type(datafusion::arrow::datatypes::DataType::Utf8).with_nullable(true)).collect::<Vec<_>>(),
        ));
        let mut text_columns: Vec<ArrayRef> = text_schema
            .fields()
            .iter()
            .map(|_| new_null_array(&datafusion::arrow::datatypes::DataType::Utf8, n))
            .collect();
        for (values, target) in fields_by_target.into_iter().zip(&self.targets) {
            text_columns[*target] = Arc::new(StringArray::from(values));
        }
        let text_batch = RecordBatch::try_new(text_schema, std::mem::take(&mut text_columns))?;
        let typed = crate::session::conform_batches(&[text_batch], &self.schema, &self.table_name)?;
        columns.clear();
        Ok((self.table, typed))
    }
}

/// Splits Postgres text-format COPY data: one row per line, `delimiter`-separated, `\N` NULL,
/// backslash escapes.
fn parse_text(text: &str, format: &CopyFormat) -> Result<Vec<Vec<Option<String>>>> {
    let mut rows = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line == "\\." {
            continue;
        }
        let mut fields = Vec::new();
        for raw in line.split(format.delimiter) {
            if raw == format.null {
                fields.push(None);
                continue;
            }
            let mut out = String::with_capacity(raw.len());
            let mut chars = raw.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('t') => out.push('\t'),
                    Some('n') => out.push('\n'),
                    Some('r') => out.push('\r'),
                    Some('b') => out.push('\u{8}'),
                    Some('f') => out.push('\u{c}'),
                    Some('v') => out.push('\u{b}'),
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                }
            }
            fields.push(Some(out));
        }
        rows.push(fields);
    }
    Ok(rows)
}

/// Splits CSV COPY data: quoted fields may hold delimiters, quotes (doubled) and newlines; an
/// unquoted field equal to the NULL string is NULL, a quoted one never is.
fn parse_csv(text: &str, format: &CopyFormat) -> Result<Vec<Vec<Option<String>>>> {
    let mut rows = Vec::new();
    let mut row: Vec<Option<String>> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut in_quotes = false;
    let mut chars = text.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        any = true;
        if in_quotes {
            if c == format.quote {
                if chars.peek() == Some(&format.quote) {
                    field.push(format.quote);
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                field.push(c);
            }
            continue;
        }
        if c == format.quote {
            in_quotes = true;
            quoted = true;
        } else if c == format.delimiter {
            row.push(csv_value(std::mem::take(&mut field), quoted, format));
            quoted = false;
        } else if c == '\n' {
            row.push(csv_value(std::mem::take(&mut field), quoted, format));
            quoted = false;
            let done = std::mem::take(&mut row);
            if !(done.len() == 1 && done[0].as_deref() == Some("\\.")) {
                rows.push(done);
            }
            any = false;
        } else if c != '\r' {
            field.push(c);
        }
    }
    if in_quotes {
        return Err(WeirError::new(SqlState::InvalidTextRepresentation, "unterminated CSV quoted field"));
    }
    if any || !field.is_empty() || !row.is_empty() {
        row.push(csv_value(field, quoted, format));
        if !(row.len() == 1 && row[0].as_deref() == Some("\\.")) {
            rows.push(row);
        }
    }
    Ok(rows)
}

fn csv_value(field: String, quoted: bool, format: &CopyFormat) -> Option<String> {
    if !quoted && field == format.null { None } else { Some(field) }
}

/// Encodes result rows as COPY data lines (one per row, newline-terminated), with a header line
/// first when asked.
pub fn encode_rows(batches: &[RecordBatch], format: &CopyFormat, settings: &Settings) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    let tz = settings.time_zone();
    if format.header
        && let Some(b) = batches.first()
    {
        let names: Vec<String> = b.schema().fields().iter().map(|f| escape(f.name(), format)).collect();
        out.push(format!("{}\n", names.join(&format.delimiter.to_string())).into_bytes());
    }
    for b in batches {
        let columns: Vec<ColumnText> = b.columns().iter().map(|c| ColumnText::new(c, &tz)).collect::<Result<_>>()?;
        for row in 0..b.num_rows() {
            let fields: Vec<String> = columns
                .iter()
                .map(|c| match c.value(row) {
                    None => format.null.clone(),
                    Some(v) => escape(&v, format),
                })
                .collect();
            out.push(format!("{}\n", fields.join(&format.delimiter.to_string())).into_bytes());
        }
    }
    Ok(out)
}

fn escape(v: &str, format: &CopyFormat) -> String {
    if format.csv {
        let needs_quotes = v.is_empty()
            || v.contains(format.delimiter)
            || v.contains(format.quote)
            || v.contains('\n')
            || v.contains('\r')
            || v == format.null;
        if needs_quotes {
            let q = format.quote.to_string();
            return format!("{q}{}{q}", v.replace(&q, &format!("{q}{q}")));
        }
        return v.to_string();
    }
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if c == format.delimiter => {
                s.push('\\');
                s.push(c);
            }
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text() -> CopyFormat {
        CopyFormat::from_options(&[], &[]).unwrap()
    }

    fn csv() -> CopyFormat {
        CopyFormat { csv: true, delimiter: ',', null: String::new(), header: false, quote: '"' }
    }

    #[test]
    fn text_format_nulls_and_escapes() {
        let rows = parse_text("1\ta\\tb\n2\t\\N\n\\.\n", &text()).unwrap();
        assert_eq!(rows, vec![vec![Some("1".into()), Some("a\tb".into())], vec![Some("2".into()), None]]);
    }

    #[test]
    fn csv_quotes_and_nulls() {
        let rows = parse_csv("1,\"a,\"\"b\"\"\",\n2,\"\",x", &csv()).unwrap();
        assert_eq!(
            rows,
            vec![
                vec![Some("1".into()), Some("a,\"b\"".into()), None],
                vec![Some("2".into()), Some("".into()), Some("x".into())]
            ]
        );
        assert_eq!(escape("a,b", &csv()), "\"a,b\"");
        assert_eq!(escape("a\tb", &text()), "a\\tb");
    }
}
