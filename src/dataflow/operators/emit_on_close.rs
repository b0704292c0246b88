//! `EMIT ON WINDOW CLOSE` for views whose root is not a windowed aggregate (a window join, a
//! view over windowed views): changes wait, consolidated per row, until the watermark reaches
//! their row's close time, and are then released once.
//!
//! # Correctness
//! A row's close time is its window column plus the column's close offset, so no change to a
//! row can arrive after the watermark reached its close time (the planner's close-offset
//! invariant); what is released is therefore final, and the released rows' integral equals the
//! input's integral restricted to closed rows. A change that arrives already past its close
//! time (an upstream view released it in the same watermark step) passes straight through.

use std::collections::BTreeMap;

// hashbrown with foldhash (DataFusion's default): std's SipHash showed in profiles.
use datafusion::common::HashMap;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryArray, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};

use super::stateless::conform;
use super::{Operator, OperatorState, SavedBatch, watermark_meta};
use crate::dataflow::{Changes, EventTime};
use crate::error::Result;

pub struct EmitOnCloseOp {
    column: usize,
    close_offset: i64,
    schema: SchemaRef,
    rows: RowConverter,
    /// Close time → row (row format) → net diff.
    pending: BTreeMap<EventTime, HashMap<Box<[u8]>, i64>>,
    watermark: EventTime,
    bytes: usize,
}

impl EmitOnCloseOp {
    pub fn new(column: usize, close_offset: i64, schema: SchemaRef) -> Result<Self> {
        let rows = RowConverter::new(schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        Ok(EmitOnCloseOp { column, close_offset, schema, rows, pending: BTreeMap::new(), watermark: EventTime::MIN, bytes: 0 })
    }
}

impl Operator for EmitOnCloseOp {
    fn process(&mut self, _port: usize, changes: Changes, out: &mut Vec<Changes>) -> Result<()> {
        let closes = super::close_times(changes.rows.column(self.column), self.close_offset)?;
        let encoded = self.rows.convert_columns(changes.rows.columns())?;
        let diffs = changes.diffs.values();
        let mut passing = Vec::with_capacity(closes.len());
        for (i, close) in closes.iter().enumerate() {
            let closed = *close <= self.watermark;
            passing.push(closed);
            if closed {
                continue;
            }
            let rows = self.pending.entry(*close).or_default();
            let row = encoded.row(i);
            match rows.get_mut(row.as_ref()) {
                Some(d) => {
                    *d += diffs[i];
                    if *d == 0 {
                        rows.remove(row.as_ref());
                        self.bytes = self.bytes.saturating_sub(row.as_ref().len() + 24);
                    }
                }
                None => {
                    rows.insert(row.as_ref().into(), diffs[i]);
                    self.bytes += row.as_ref().len() + 24;
                }
            }
        }
        if passing.iter().any(|p| *p) {
            out.push(changes.filter(&passing.into())?);
        }
        Ok(())
    }

    fn on_watermark(&mut self, _port: usize, watermark: EventTime, out: &mut Vec<Changes>) -> Result<Option<EventTime>> {
        if watermark <= self.watermark {
            return Ok(None);
        }
        self.watermark = watermark;
        let still_open = match watermark.checked_add(1) {
            Some(next) => self.pending.split_off(&next),
            None => BTreeMap::new(),
        };
        let closed = std::mem::replace(&mut self.pending, still_open);
        let (mut rows, mut diffs) = (Vec::new(), Vec::new());
        for (row, diff) in closed.into_values().flatten() {
            self.bytes = self.bytes.saturating_sub(row.len() + 24);
            rows.push(row);
            diffs.push(diff);
        }
        if !rows.is_empty() {
            let parser = self.rows.parser();
            let columns = self.rows.convert_rows(rows.iter().map(|r| parser.parse(r)))?;
            out.push(Changes::new(conform(columns, &self.schema, rows.len())?, Int64Array::from(diffs)));
        }
        Ok(Some(watermark))
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn stateful(&self) -> Option<&'static str> {
        Some("an emit-on-close buffer")
    }

    /// The held rows with their close time and net diff (`held`), and the watermark (`meta`).
    fn snapshot(&self) -> Result<OperatorState> {
        let held: Vec<(EventTime, &[u8], i64)> =
            self.pending.iter().flat_map(|(close, rows)| rows.iter().map(move |(r, d)| (*close, r.as_ref(), *d))).collect();
        let batch = RecordBatch::try_from_iter([
            ("close", Arc::new(Int64Array::from_iter_values(held.iter().map(|h| h.0))) as ArrayRef),
            ("row", Arc::new(BinaryArray::from_iter_values(held.iter().map(|h| h.1))) as ArrayRef),
            ("diff", Arc::new(Int64Array::from_iter_values(held.iter().map(|h| h.2))) as ArrayRef),
        ])?;
        Ok(vec![("held".into(), batch), ("meta".into(), watermark_meta(self.watermark)?)])
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        for (name, batch) in state {
            let saved = SavedBatch { batch: &batch, what: "emit-on-close buffer" };
            match name.as_str() {
                "meta" => self.watermark = saved.int("watermark")?,
                "held" => {
                    let (close, rows, diff) = (saved.ints("close")?, saved.binary("row")?, saved.ints("diff")?);
                    for i in 0..batch.num_rows() {
                        self.bytes += rows.value(i).len() + 24;
                        self.pending.entry(close.value(i)).or_default().insert(rows.value(i).into(), diff.value(i));
                    }
                }
                other => return Err(saved.corrupt(&format!("unknown part {other}"))),
            }
        }
        Ok(())
    }
}
