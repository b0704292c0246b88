//! The rows of one table: a multiset of rows, optionally keyed by a primary key.
//!
//! Rows are kept in Arrow's row format (`arrow-row`), which compares and hashes by bytes, so a
//! deletion can find "this exact row" whatever the column types. Rows keep their insertion
//! order (a sequence number), so `SELECT * FROM t` lists them in the order they were written,
//! as a freshly-written Postgres heap does.
//!
//! Reads take [`TableData::batches`]: the rows as Arrow record batches, built once per version
//! of the table and shared by every query that reads that version.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};

use crate::error::{Result, SqlState, WeirError};

/// Rows per record batch handed to queries.
const BATCH_ROWS: usize = 8192;

#[derive(Clone)]
pub struct TableData {
    name: String,
    schema: SchemaRef,
    converter: Arc<RowConverter>,
    /// Primary-key column indices and their converter.
    key: Option<(Vec<usize>, Arc<RowConverter>)>,
    rows: BTreeMap<u64, OwnedRow>,
    by_row: HashMap<OwnedRow, Vec<u64>>,
    by_key: HashMap<OwnedRow, u64>,
    next_seq: u64,
    cached: OnceLock<Arc<Vec<RecordBatch>>>,
}

impl std::fmt::Debug for TableData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TableData").field("name", &self.name).field("rows", &self.rows.len()).finish()
    }
}

impl TableData {
    pub fn new(name: &str, schema: SchemaRef, primary_key: Option<Vec<usize>>) -> Result<Self> {
        let fields = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        let converter = Arc::new(RowConverter::new(fields)?);
        let key = match primary_key {
            Some(cols) if !cols.is_empty() => {
                let fields = cols.iter().map(|i| SortField::new(schema.field(*i).data_type().clone())).collect();
                Some((cols, Arc::new(RowConverter::new(fields)?)))
            }
            _ => None,
        };
        Ok(TableData {
            name: name.to_string(),
            schema,
            converter,
            key,
            rows: BTreeMap::new(),
            by_row: HashMap::new(),
            by_key: HashMap::new(),
            next_seq: 0,
            cached: OnceLock::new(),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The current rows as record batches (built on first use after a change).
    pub fn batches(&self) -> Arc<Vec<RecordBatch>> {
        self.cached
            .get_or_init(|| {
                let rows: Vec<_> = self.rows.values().collect();
                let mut out = Vec::new();
                for chunk in rows.chunks(BATCH_ROWS) {
                    match self.converter.convert_rows(chunk.iter().map(|r| r.row())) {
                        Ok(columns) => match RecordBatch::try_new(self.schema.clone(), columns) {
                            Ok(b) => out.push(b),
                            Err(e) => tracing::error!(table = %self.name, error = %e, "cannot rebuild rows"),
                        },
                        Err(e) => tracing::error!(table = %self.name, error = %e, "cannot decode rows"),
                    }
                }
                Arc::new(out)
            })
            .clone()
    }

    /// Checks constraints for `batch` and inserts it; all rows or none. Returns the new rows'
    /// sequence numbers (to undo the insert).
    pub fn insert(&mut self, batch: &RecordBatch) -> Result<Vec<u64>> {
        self.check_not_null(batch)?;
        let rows = self.converter.convert_columns(batch.columns())?;
        let keys = match &self.key {
            Some((cols, conv)) => {
                let cols: Vec<ArrayRef> = cols.iter().map(|i| batch.column(*i).clone()).collect();
                let keys = conv.convert_columns(&cols)?;
                let mut seen = std::collections::HashSet::new();
                let mut owned = Vec::with_capacity(keys.num_rows());
                for (i, k) in keys.iter().enumerate() {
                    let k = k.owned();
                    if self.by_key.contains_key(&k) || !seen.insert(k.clone()) {
                        return Err(self.duplicate_key(batch, i));
                    }
                    owned.push(k);
                }
                Some(owned)
            }
            None => None,
        };
        self.cached = OnceLock::new();
        let mut seqs = Vec::with_capacity(rows.num_rows());
        for (i, row) in rows.iter().enumerate() {
            let seq = self.next_seq;
            self.next_seq += 1;
            let row = row.owned();
            self.by_row.entry(row.clone()).or_default().push(seq);
            if let Some(keys) = &keys {
                self.by_key.insert(keys[i].clone(), seq);
            }
            self.rows.insert(seq, row);
            seqs.push(seq);
        }
        Ok(seqs)
    }

    /// Removes one occurrence of each row of `batch`; rows that are not there (already deleted
    /// by a concurrent commit) are skipped. Returns the rows removed (to undo the delete).
    pub fn delete(&mut self, batch: &RecordBatch) -> Result<Vec<OwnedRow>> {
        let rows = self.converter.convert_columns(batch.columns())?;
        let mut removed = Vec::new();
        for row in rows.iter() {
            let row = row.owned();
            if let Some(seq) = self.take_seq(&row) {
                self.remove_seq(seq);
                removed.push(row);
            }
        }
        Ok(removed)
    }

    fn take_seq(&mut self, row: &OwnedRow) -> Option<u64> {
        let seqs = self.by_row.get_mut(row)?;
        let seq = seqs.pop();
        if seqs.is_empty() {
            self.by_row.remove(row);
        }
        seq
    }

    fn remove_seq(&mut self, seq: u64) {
        self.cached = OnceLock::new();
        let Some(row) = self.rows.remove(&seq) else { return };
        if let Some(seqs) = self.by_row.get_mut(&row) {
            seqs.retain(|s| *s != seq);
            if seqs.is_empty() {
                self.by_row.remove(&row);
            }
        }
        if self.key.is_some() {
            self.by_key.retain(|_, s| *s != seq);
        }
    }

    /// Undoes [`TableData::insert`].
    pub fn undo_insert(&mut self, seqs: &[u64]) {
        for s in seqs {
            self.remove_seq(*s);
        }
    }

    /// Undoes [`TableData::delete`]: the rows come back (at the end of the insertion order).
    pub fn undo_delete(&mut self, rows: &[OwnedRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let columns = self.converter.convert_rows(rows.iter().map(|r| r.row()))?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        self.insert(&batch).map(|_| ())
    }

    fn check_not_null(&self, batch: &RecordBatch) -> Result<()> {
        for (i, field) in self.schema.fields().iter().enumerate() {
            if !field.is_nullable() && batch.column(i).null_count() > 0 {
                return Err(WeirError::new(
                    SqlState::NotNullViolation,
                    format!(
                        "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                        field.name(),
                        self.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn duplicate_key(&self, batch: &RecordBatch, row: usize) -> WeirError {
        let Some((cols, _)) = &self.key else {
            return WeirError::internal("duplicate key on a table without a key");
        };
        let names: Vec<&str> = cols.iter().map(|i| self.schema.field(*i).name().as_str()).collect();
        let values: Vec<String> = cols
            .iter()
            .map(|i| {
                datafusion::arrow::util::display::array_value_to_string(batch.column(*i), row)
                    .unwrap_or_default()
            })
            .collect();
        WeirError::new(
            SqlState::UniqueViolation,
            format!("duplicate key value violates unique constraint \"{}_pkey\"", self.name),
        )
        .with_detail(format!("Key ({})=({}) already exists.", names.join(", "), values.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("v", DataType::Utf8, true),
        ]))
    }

    fn batch(rows: &[(i32, Option<&str>)]) -> RecordBatch {
        RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(Int32Array::from(rows.iter().map(|r| r.0).collect::<Vec<_>>())),
                Arc::new(StringArray::from(rows.iter().map(|r| r.1).collect::<Vec<_>>())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn multiset_insert_delete_keeps_order() {
        let mut t = TableData::new("t", schema(), None).unwrap();
        t.insert(&batch(&[(1, Some("a")), (2, None), (1, Some("a"))])).unwrap();
        t.delete(&batch(&[(1, Some("a")), (9, Some("z"))])).unwrap();
        assert_eq!(t.len(), 2);
        let b = t.batches();
        assert_eq!(b[0], batch(&[(1, Some("a")), (2, None)]));
    }

    #[test]
    fn primary_key_is_enforced_atomically() {
        let mut t = TableData::new("t", schema(), Some(vec![0])).unwrap();
        t.insert(&batch(&[(1, Some("a"))])).unwrap();
        let err = t.insert(&batch(&[(2, Some("b")), (1, Some("c"))])).unwrap_err();
        assert_eq!(err.state, SqlState::UniqueViolation);
        assert_eq!(err.detail.as_deref(), Some("Key (id)=(1) already exists."));
        assert_eq!(t.len(), 1, "a failed insert adds nothing");
        let removed = t.delete(&batch(&[(1, Some("a"))])).unwrap();
        let seqs = t.insert(&batch(&[(1, Some("b"))])).unwrap();
        t.undo_insert(&seqs);
        t.undo_delete(&removed).unwrap();
        assert_eq!(t.batches()[0], batch(&[(1, Some("a"))]));
    }
}
