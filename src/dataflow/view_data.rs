//! A view's contents: a multiset of rows that is cheap to version.
//!
//! The job that maintains a view changes its contents every epoch while queries read the last
//! published version. Rows are kept in Arrow's row format (byte-comparable, so equal rows are
//! equal bytes whatever their types) in a persistent ordered map (`imbl::OrdMap`): a version is
//! an O(1) clone that shares structure, an update copies only the path to the changed entry.
//! Queries see the rows in key order, which makes a view's output stable between reads.

use std::sync::{Arc, OnceLock};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};

use super::{Changes, EventTime};
use crate::error::{Result, WeirError};

const BATCH_ROWS: usize = 8192;

#[derive(Clone)]
pub struct ViewData {
    schema: SchemaRef,
    converter: Arc<RowConverter>,
    rows: imbl::OrdMap<Arc<[u8]>, i64>,
    /// Total multiplicity (the row count a `SELECT count(*)` sees).
    len: u64,
    /// Bytes of the distinct rows' encodings, kept up to date by `apply`.
    row_bytes: usize,
    cached: Arc<OnceLock<Arc<Vec<RecordBatch>>>>,
}

impl std::fmt::Debug for ViewData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewData").field("rows", &self.len).finish()
    }
}

impl ViewData {
    pub fn new(schema: SchemaRef) -> Result<Self> {
        let fields = schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect();
        Ok(ViewData {
            schema,
            converter: Arc::new(RowConverter::new(fields)?),
            rows: imbl::OrdMap::new(),
            len: 0,
            row_bytes: 0,
            cached: Arc::new(OnceLock::new()),
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Distinct rows held (what the state costs, more than how many rows a query sees).
    pub fn distinct_rows(&self) -> usize {
        self.rows.len()
    }

    /// Approximate bytes held by the rows.
    pub fn state_bytes(&self) -> usize {
        // Row bytes plus map entry overhead (key pointer, length, count, node share).
        self.row_bytes + self.rows.len() * 40
    }

    /// Applies changes. A retraction of a row the view does not hold is an engine bug; it is
    /// reported rather than allowed to make the multiset negative.
    pub fn apply(&mut self, changes: &Changes) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        self.cached = Arc::new(OnceLock::new());
        let rows = self.converter.convert_columns(changes.rows.columns())?;
        for (i, row) in rows.iter().enumerate() {
            let diff = changes.diffs.value(i);
            if diff == 0 {
                continue;
            }
            let key: Arc<[u8]> = Arc::from(row.as_ref());
            // Insert first: a new row (the common case, and every row of an EMIT ON WINDOW
            // CLOSE view) then costs one walk down the tree; a row already held, a second.
            if diff > 0 {
                match self.rows.insert(key.clone(), diff) {
                    None => self.row_bytes += key.len(),
                    Some(old) => {
                        self.rows.insert(key, old + diff);
                    }
                }
            } else {
                let old = self.rows.get(&key).copied().unwrap_or(0);
                let new = old + diff;
                if new < 0 {
                    return Err(WeirError::internal("a view retracted a row it does not hold"));
                }
                if new == 0 {
                    self.row_bytes -= key.len();
                    self.rows.remove(&key);
                } else {
                    self.rows.insert(key, new);
                }
            }
            self.len = (self.len as i64 + diff) as u64;
        }
        Ok(())
    }

    /// Drops the rows whose close time (their value in `column` plus `close_offset`) is below
    /// `cutoff`, without emitting anything: a retention policy forgets old windows, it does not
    /// retract them. Returns how many distinct rows went.
    pub fn remove_closed_before(&mut self, column: usize, close_offset: i64, cutoff: EventTime) -> Result<usize> {
        let keys: Vec<Arc<[u8]>> = self.rows.keys().cloned().collect();
        let mut gone = Vec::new();
        for chunk in keys.chunks(BATCH_ROWS) {
            let refs: Vec<&Arc<[u8]>> = chunk.iter().collect();
            let batch = self.decode(&refs)?;
            let closes = super::operators::close_times(batch.column(column), close_offset)?;
            gone.extend(chunk.iter().zip(closes).filter(|(_, close)| *close < cutoff).map(|(k, _)| k.clone()));
        }
        if !gone.is_empty() {
            self.cached = Arc::new(OnceLock::new());
        }
        for key in &gone {
            if let Some(n) = self.rows.remove(key) {
                self.row_bytes -= key.len();
                self.len -= n as u64;
            }
        }
        Ok(gone.len())
    }

    /// The changes that turn `older`, an earlier version of these contents, into these: each row
    /// whose multiplicity differs, with the difference. Parts the two versions still share are
    /// skipped without being visited, so the cost follows what changed, not the size.
    pub fn changes_since(&self, older: &ViewData) -> Result<Vec<Changes>> {
        let mut out = Vec::new();
        let mut keys: Vec<&Arc<[u8]>> = Vec::with_capacity(BATCH_ROWS);
        let mut diffs: Vec<i64> = Vec::with_capacity(BATCH_ROWS);
        for item in older.rows.diff(&self.rows) {
            let (key, diff) = match item {
                imbl::ordmap::DiffItem::Add(k, n) => (k, *n),
                imbl::ordmap::DiffItem::Update { old: (_, before), new: (k, after) } => (k, after - before),
                imbl::ordmap::DiffItem::Remove(k, n) => (k, -n),
            };
            if diff == 0 {
                continue;
            }
            keys.push(key);
            diffs.push(diff);
            if keys.len() == BATCH_ROWS {
                out.push(Changes::new(self.decode(&keys)?, std::mem::take(&mut diffs).into()));
                keys.clear();
            }
        }
        if !keys.is_empty() {
            out.push(Changes::new(self.decode(&keys)?, diffs.into()));
        }
        Ok(out)
    }

    /// The whole contents as inserts (to backfill a view that reads this one).
    pub fn as_changes(&self) -> Result<Vec<Changes>> {
        let mut out = Vec::new();
        let mut keys: Vec<&Arc<[u8]>> = Vec::with_capacity(BATCH_ROWS);
        let mut diffs: Vec<i64> = Vec::with_capacity(BATCH_ROWS);
        for (k, n) in self.rows.iter() {
            keys.push(k);
            diffs.push(*n);
            if keys.len() == BATCH_ROWS {
                out.push(Changes::new(self.decode(&keys)?, diffs.clone().into()));
                keys.clear();
                diffs.clear();
            }
        }
        if !keys.is_empty() {
            out.push(Changes::new(self.decode(&keys)?, diffs.into()));
        }
        Ok(out)
    }

    fn decode(&self, keys: &[&Arc<[u8]>]) -> Result<RecordBatch> {
        let parser = self.converter.parser();
        let columns = self.converter.convert_rows(keys.iter().map(|k| parser.parse(k)))?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    /// The rows as record batches (built once per version and shared by every reader of it).
    pub fn batches(&self) -> Arc<Vec<RecordBatch>> {
        self.cached
            .get_or_init(|| {
                let mut keys: Vec<&Arc<[u8]>> = Vec::with_capacity(BATCH_ROWS);
                let mut out = Vec::new();
                let flush = |keys: &mut Vec<&Arc<[u8]>>, out: &mut Vec<RecordBatch>| {
                    match self.decode(keys) {
                        Ok(b) => out.push(b),
                        Err(e) => tracing::error!(error = %e, "could not decode view rows"),
                    }
                    keys.clear();
                };
                for (k, n) in self.rows.iter() {
                    for _ in 0..*n {
                        keys.push(k);
                        if keys.len() == BATCH_ROWS {
                            flush(&mut keys, &mut out);
                        }
                    }
                }
                if !keys.is_empty() {
                    flush(&mut keys, &mut out);
                }
                Arc::new(out)
            })
            .clone()
    }
}
