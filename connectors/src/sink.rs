//! The sink side: a view's changes out to an external system, and what every sink does with
//! them before writing: [`SinkMode`] (append-only or upsert by key, from the options),
//! [`inserted_rows`] (an append-only epoch as rows) and [`newest_per_key`] (an upsert epoch as
//! the rows its keys have now and the keys that left).

use std::collections::HashMap;

use async_trait::async_trait;
use datafusion::arrow::array::{AsArray, Int64Array, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{Int64Type, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{RowConverter, SortField};

use crate::error::ConnectorError;
use crate::options::{invalid, parse_count};
use crate::source::SourceOptions;

/// The column of a change batch that holds each row's signed multiplicity.
pub const DIFF_COLUMN: &str = "weir_diff";

/// Delivers a view's changes epoch by epoch. A batch carries the view's columns plus the signed
/// `weir_diff` column. `write_epoch` may be called again for an epoch after a crash, so an
/// implementation must make a re-sent epoch replace itself rather than duplicate rows.
#[async_trait]
pub trait Sink: Send {
    /// Writes one epoch's changes; returns how many batches (inserts, requests) it sent.
    async fn write_epoch(&mut self, epoch: u64, changes: &[RecordBatch]) -> Result<u64, ConnectorError>;

    /// The last epoch known to be fully delivered, read from the external system when it can
    /// tell (used on recovery).
    async fn last_delivered_epoch(&mut self) -> Result<Option<u64>, ConnectorError>;
}

/// How a sink writes a view's changes: `type = 'append-only' | 'upsert'` and `primary_key`.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkMode {
    /// Inserted rows only (EOWC windows, projections of append-only inputs); a retraction is an
    /// error.
    AppendOnly,
    /// Per key, the row it has now or a delete marker. `key` indexes the view's columns.
    Upsert { key: Vec<usize> },
}

impl SinkMode {
    /// The mode the options ask for, checked against the view: an append-only sink needs a view
    /// that only inserts (`append_only`), an upsert sink a key of the view's columns. Without
    /// `type`, append-only views are sunk append-only and others need `primary_key`.
    pub fn from_options(view: &SchemaRef, options: &SourceOptions, append_only: bool) -> Result<Self, ConnectorError> {
        let mode = match options.get("type").map(|t| t.to_ascii_lowercase()).as_deref() {
            Some("append-only") => SinkMode::AppendOnly,
            None if append_only && !options.contains_key("primary_key") => SinkMode::AppendOnly,
            Some("upsert") | None => {
                let key = options.get("primary_key").ok_or_else(|| {
                    invalid("primary_key", "an upsert sink needs the view's key (primary_key = 'col, ...')")
                })?;
                let key = key
                    .split(',')
                    .map(|c| {
                        let c = c.trim();
                        view.index_of(c).map_err(|_| invalid("primary_key", format!("the view has no column \"{c}\"")))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                SinkMode::Upsert { key }
            }
            Some(other) => return Err(invalid("type", format!("\"{other}\" is not 'append-only' or 'upsert'"))),
        };
        if mode == SinkMode::AppendOnly && !append_only {
            return Err(invalid("type", "the view can update and delete rows; use type = 'upsert' with primary_key"));
        }
        Ok(mode)
    }
}

/// `sink.max_pending_rows` (default 1,000,000): how many received rows a sink may hold before
/// its view waits for it.
pub fn max_pending_rows(options: &SourceOptions) -> Result<usize, ConnectorError> {
    parse_count(options, "sink.max_pending_rows", 1_000_000, tokio::sync::Semaphore::MAX_PERMITS)
}

/// The signed diff column of a change batch.
pub fn diff_column(batch: &RecordBatch) -> Result<&Int64Array, ConnectorError> {
    batch
        .column_by_name(DIFF_COLUMN)
        .and_then(|c| c.as_primitive_opt::<Int64Type>())
        .ok_or_else(|| ConnectorError::Arrow(datafusion::arrow::error::ArrowError::SchemaError(format!("a change batch needs a {DIFF_COLUMN} column"))))
}

/// A change batch without its diff column (a projection, no copy).
fn view_columns(view: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch, ConnectorError> {
    Ok(batch.project(&(0..view.fields().len()).collect::<Vec<_>>())?)
}

/// An append-only epoch as rows in the view's columns: a row inserted n times appears n times.
/// A retraction is an error: the view was not append-only after all.
pub fn inserted_rows(view: &SchemaRef, changes: &[RecordBatch]) -> Result<RecordBatch, ConnectorError> {
    let mut pieces = Vec::with_capacity(changes.len());
    for batch in changes {
        let diffs = diff_column(batch)?;
        let rows = view_columns(view, batch)?;
        if diffs.values().iter().all(|d| *d == 1) {
            pieces.push(rows);
            continue;
        }
        let mut indexes = Vec::with_capacity(diffs.len());
        for (i, d) in diffs.values().iter().enumerate() {
            if *d < 0 {
                return Err(ConnectorError::Rejected {
                    reason: "the view retracted a row, which an append-only sink cannot write (use type = 'upsert')".into(),
                });
            }
            indexes.extend(std::iter::repeat_n(i as u32, *d as usize));
        }
        pieces.push(take_record_batch(&rows, &UInt32Array::from(indexes))?);
    }
    Ok(concat_batches(view, &pieces)?)
}

/// Changes netted per distinct row: each row inserted more often than retracted, as many times
/// as the difference, in the order rows were first seen; rows retracted more often than
/// inserted are left out. An append-only sink that joins its view again (a restart) retracts
/// the rows its target already has this way, and writes only the rest.
pub fn net_inserted_rows(view: &SchemaRef, changes: &[RecordBatch]) -> Result<RecordBatch, ConnectorError> {
    let whole = RowConverter::new(view.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
    let view_rows = changes.iter().map(|b| view_columns(view, b)).collect::<Result<Vec<_>, _>>()?;
    let all = concat_batches(view, &view_rows)?;
    let rows = whole.convert_columns(all.columns())?;
    let mut net: HashMap<&[u8], (i64, usize)> = HashMap::new();
    let mut i = 0;
    for batch in changes {
        for d in diff_column(batch)?.values() {
            net.entry(rows.row(i).data()).or_insert((0, i)).0 += d;
            i += 1;
        }
    }
    let mut kept: Vec<(usize, i64)> = net.into_values().filter(|(count, _)| *count > 0).map(|(count, first)| (first, count)).collect();
    kept.sort_unstable();
    let indexes: Vec<u32> = kept.iter().flat_map(|&(first, count)| std::iter::repeat_n(first as u32, count as usize)).collect();
    Ok(take_record_batch(&all, &UInt32Array::from(indexes))?)
}

/// An upsert epoch's outcome, in the view's columns: per key whose row changed, the row it has
/// now; and the keys that left the view, each as one of its old rows.
pub fn newest_per_key(view: &SchemaRef, key: &[usize], changes: &[RecordBatch]) -> Result<(RecordBatch, RecordBatch), ConnectorError> {
    let key_fields: Vec<SortField> = key.iter().map(|&i| SortField::new(view.field(i).data_type().clone())).collect();
    let all_fields: Vec<SortField> = view.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
    let keys = RowConverter::new(key_fields)?;
    let whole = RowConverter::new(all_fields)?;
    let view_rows = changes.iter().map(|b| view_columns(view, b)).collect::<Result<Vec<_>, _>>()?;
    let all = concat_batches(view, &view_rows)?;
    let mut diffs: Vec<i64> = Vec::with_capacity(all.num_rows());
    for batch in changes {
        diffs.extend_from_slice(diff_column(batch)?.values());
    }
    let key_rows = keys.convert_columns(&key.iter().map(|&i| all.column(i).clone()).collect::<Vec<_>>())?;
    let full_rows = whole.convert_columns(all.columns())?;
    // Net count of each distinct row, and where it was last seen.
    let mut net: HashMap<&[u8], (i64, usize)> = HashMap::new();
    for (i, d) in diffs.iter().enumerate() {
        let entry = net.entry(full_rows.row(i).data()).or_insert((0, i));
        entry.0 += d;
        entry.1 = i;
    }
    // Per key: the newest row with a positive net count (the key's row now), else a row with
    // a negative one (the key left); rows that net to zero changed nothing.
    let mut per_key: HashMap<&[u8], (Option<usize>, Option<usize>)> = HashMap::new();
    for i in 0..all.num_rows() {
        let (count, last) = net[full_rows.row(i).data()];
        let entry = per_key.entry(key_rows.row(i).data()).or_insert((None, None));
        if count > 0 && entry.0.is_none_or(|seen| seen < last) {
            entry.0 = Some(last);
        } else if count < 0 {
            entry.1 = Some(last);
        }
    }
    let mut present = Vec::new();
    let mut gone = Vec::new();
    for value in per_key.values() {
        match *value {
            (Some(i), _) => present.push(i as u32),
            (None, Some(i)) => gone.push(i as u32),
            (None, None) => {}
        }
    }
    present.sort_unstable();
    gone.sort_unstable();
    Ok((take_record_batch(&all, &UInt32Array::from(present))?, take_record_batch(&all, &UInt32Array::from(gone))?))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::StringArray;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn changes(keys: &[&str], diffs: &[i64]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true), Field::new(DIFF_COLUMN, DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(keys.to_vec())), Arc::new(Int64Array::from(diffs.to_vec()))]).unwrap()
    }

    #[test]
    fn net_inserted_rows_subtract_what_the_target_has() {
        let view = Arc::new(Schema::new(vec![Field::new("k", DataType::Utf8, true)]));
        // The target has a, b, b and x; the view has a, b, b, b, c.
        let target = changes(&["a", "b", "b", "x"], &[-1, -1, -1, -1]);
        let contents = changes(&["c", "a", "b", "b"], &[1, 1, 2, 1]);
        let rows = net_inserted_rows(&view, &[target, contents]).unwrap();
        let keys: Vec<&str> = rows.column(0).as_string::<i32>().iter().map(|k| k.unwrap()).collect();
        assert_eq!(keys, ["b", "c"], "one more b, and c; x is not the sink's to remove");
    }
}
