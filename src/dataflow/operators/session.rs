//! `SESSION` windows: assigns each row the start and end of its session, per key.
//!
//! A session's bounds change as rows arrive (it grows, or two sessions merge when a row fills
//! the gap between them), so the operator keeps the rows of every open session, sorted by event
//! time per key, and at each barrier (and before forwarding a watermark) re-derives the
//! sessions of the keys that changed: a row whose bounds or multiplicity changed is retracted
//! with its old bounds and inserted with its new ones. A session is final once the watermark
//! reaches its end (no row that could extend it can come any more); its rows are then dropped.
//!
//! # Correctness
//! After every flush, the integral of the output is exactly `{(row, bounds(row))}` over the
//! integral of the input, where `bounds` is [`weir_sql::streaming::session::sessions`] over the
//! key's rows, the same rule the batch window function uses. Dropping a closed session's rows
//! cannot change later bounds: a row arriving later has `ts >= watermark >= end`, so it starts
//! a new session.

use std::collections::BTreeMap;

// hashbrown with foldhash (DataFusion's default): std's SipHash showed in profiles.
use datafusion::common::{HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BinaryArray, Int64Array, RecordBatch, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampMicrosecondType};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::physical_expr::PhysicalExpr;
use weir_sql::streaming::session::sessions;

use super::stateless::conform;
use super::{Operator, OperatorState, SavedBatch, watermark_meta};
use crate::dataflow::{Changes, EventTime};
use crate::error::Result;

pub struct SessionConfig {
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    pub time: Arc<dyn PhysicalExpr>,
    pub gap: i64,
    /// Per appended column: the session end (true) or start (false).
    pub outputs: Vec<bool>,
    pub input_schema: SchemaRef,
    pub output: SchemaRef,
}

#[derive(Debug, Default, Clone, Copy)]
struct RowState {
    multiplicity: i64,
    /// The bounds and multiplicity last emitted for this row.
    emitted: Option<(EventTime, EventTime)>,
    emitted_multiplicity: i64,
}

/// A key's open rows, by (event time, row).
type KeyRows = BTreeMap<(EventTime, Box<[u8]>), RowState>;

pub struct SessionOp {
    config: SessionConfig,
    key_converter: RowConverter,
    rows: RowConverter,
    keys: HashMap<Box<[u8]>, KeyRows>,
    dirty: HashSet<Box<[u8]>>,
    /// Session end → keys with a session ending then.
    closing: BTreeMap<EventTime, Vec<Box<[u8]>>>,
    watermark: EventTime,
    bytes: usize,
}

/// A row to emit: the row (row format), its session bounds, its diff.
type Emission = (Box<[u8]>, Option<(EventTime, EventTime)>, i64);

impl SessionOp {
    pub fn new(config: SessionConfig) -> Result<Self> {
        let key_types: Vec<DataType> =
            config.keys.iter().map(|k| k.data_type(&config.input_schema)).collect::<datafusion::error::Result<_>>()?;
        let key_converter = RowConverter::new(key_types.into_iter().map(SortField::new).collect())?;
        let rows =
            RowConverter::new(config.input_schema.fields().iter().map(|f| SortField::new(f.data_type().clone())).collect())?;
        Ok(SessionOp {
            config,
            key_converter,
            rows,
            keys: HashMap::new(),
            dirty: HashSet::new(),
            closing: BTreeMap::new(),
            watermark: EventTime::MIN,
            bytes: 0,
        })
    }

    /// Output rows: the input row's columns, then the requested session bounds.
    fn output(&self, emissions: &[Emission]) -> Result<Changes> {
        let parser = self.rows.parser();
        let mut columns: Vec<ArrayRef> = self.rows.convert_rows(emissions.iter().map(|(r, _, _)| parser.parse(r)))?;
        for end in &self.config.outputs {
            let values: TimestampMicrosecondArray =
                emissions.iter().map(|(_, b, _)| b.map(|(s, e)| if *end { e } else { s })).collect();
            columns.push(Arc::new(values));
        }
        let diffs = Int64Array::from_iter_values(emissions.iter().map(|(_, _, d)| *d));
        Ok(Changes::new(conform(columns, &self.config.output, emissions.len())?, diffs))
    }

    /// Re-derives the sessions of every changed key and emits what moved.
    fn flush(&mut self, out: &mut Vec<Changes>) -> Result<()> {
        let mut emissions: Vec<Emission> = Vec::new();
        for key in std::mem::take(&mut self.dirty) {
            let Some(rows) = self.keys.get_mut(&key) else { continue };
            let live: Vec<EventTime> =
                rows.iter().filter(|(_, s)| s.multiplicity != 0).map(|((ts, _), _)| *ts).collect();
            let mut bounds = sessions(&live, self.config.gap).into_iter();
            let mut ends = Vec::new();
            let mut gone = Vec::new();
            for ((ts, row), state) in rows.iter_mut() {
                let now = if state.multiplicity != 0 { bounds.next() } else { None };
                if let Some((_, end)) = now
                    && ends.last() != Some(&end)
                {
                    ends.push(end);
                }
                if now == state.emitted && state.multiplicity == state.emitted_multiplicity {
                    continue;
                }
                if state.emitted.is_some() && state.emitted_multiplicity != 0 {
                    emissions.push((row.clone(), state.emitted, -state.emitted_multiplicity));
                }
                if now.is_some() {
                    emissions.push((row.clone(), now, state.multiplicity));
                }
                state.emitted = now;
                state.emitted_multiplicity = state.multiplicity;
                if state.multiplicity == 0 {
                    gone.push((*ts, row.clone()));
                }
            }
            for k in gone {
                self.bytes = self.bytes.saturating_sub(k.1.len() + 48);
                rows.remove(&k);
            }
            for end in ends {
                self.closing.entry(end).or_default().push(key.clone());
            }
        }
        if !emissions.is_empty() {
            out.push(self.output(&emissions)?);
        }
        Ok(())
    }
}

impl Operator for SessionOp {
    fn process(&mut self, _port: usize, changes: Changes, out: &mut Vec<Changes>) -> Result<()> {
        let n = changes.len();
        if n == 0 {
            return Ok(());
        }
        let key_columns: Vec<ArrayRef> = self
            .config
            .keys
            .iter()
            .map(|k| k.evaluate(&changes.rows)?.into_array(n))
            .collect::<datafusion::error::Result<_>>()?;
        // Without keys (global sessions) every row has the empty key; the converter cannot
        // encode zero columns.
        let keys = if key_columns.is_empty() { None } else { Some(self.key_converter.convert_columns(&key_columns)?) };
        let time = self.config.time.evaluate(&changes.rows)?.into_array(n)?;
        let time = cast(&time, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let time = time.as_primitive::<TimestampMicrosecondType>();
        let encoded = self.rows.convert_columns(changes.rows.columns())?;
        let diffs = changes.diffs.values();
        let mut timeless: Vec<Emission> = Vec::new();
        for i in 0..n {
            let row: Box<[u8]> = encoded.row(i).as_ref().into();
            if time.is_null(i) {
                // A row without a time belongs to no session (NULL bounds, as in batch).
                timeless.push((row, None, diffs[i]));
                continue;
            }
            let key: &[u8] = match &keys {
                Some(k) => k.row(i).data(),
                None => &[],
            };
            let rows = match self.keys.get_mut(key) {
                Some(r) => r,
                None => self.keys.entry(key.into()).or_default(),
            };
            if !self.dirty.contains(key) {
                self.dirty.insert(key.into());
            }
            let len = row.len();
            let state = rows.entry((time.value(i), row)).or_insert_with(|| {
                self.bytes += len + 48;
                RowState::default()
            });
            state.multiplicity += diffs[i];
        }
        if !timeless.is_empty() {
            out.push(self.output(&timeless)?);
        }
        Ok(())
    }

    fn on_watermark(&mut self, _port: usize, watermark: EventTime, out: &mut Vec<Changes>) -> Result<Option<EventTime>> {
        if watermark <= self.watermark {
            return Ok(None);
        }
        // Downstream windows close on this watermark: they must see the final sessions first.
        self.flush(out)?;
        self.watermark = watermark;
        let still_open = match watermark.checked_add(1) {
            Some(next) => self.closing.split_off(&next),
            None => BTreeMap::new(),
        };
        let closed = std::mem::replace(&mut self.closing, still_open);
        for key in closed.into_values().flatten() {
            let Some(rows) = self.keys.get_mut(&key) else { continue };
            let before = rows.len();
            rows.retain(|(_, row), state| {
                let keep = state.emitted.is_none_or(|(_, end)| end > watermark);
                if !keep {
                    self.bytes = self.bytes.saturating_sub(row.len() + 48);
                }
                keep
            });
            if rows.is_empty() && before > 0 {
                self.keys.remove(&key);
            }
        }
        Ok(Some(watermark))
    }

    fn on_barrier(&mut self, _epoch: u64, out: &mut Vec<Changes>) -> Result<()> {
        self.flush(out)
    }

    fn state_bytes(&self) -> usize {
        self.bytes
    }

    fn stateful(&self) -> Option<&'static str> {
        Some("a session window")
    }

    /// Taken after a barrier (nothing dirty): every open row with its key, time, multiplicity
    /// and what was last emitted for it (`rows`), and the watermark (`meta`).
    fn snapshot(&self) -> Result<OperatorState> {
        let held: Vec<(&[u8], EventTime, &[u8], &RowState)> = self
            .keys
            .iter()
            .flat_map(|(key, rows)| rows.iter().map(move |((ts, row), state)| (key.as_ref(), *ts, row.as_ref(), state)))
            .collect();
        let batch = RecordBatch::try_from_iter([
            ("key", Arc::new(BinaryArray::from_iter_values(held.iter().map(|h| h.0))) as ArrayRef),
            ("ts", Arc::new(Int64Array::from_iter_values(held.iter().map(|h| h.1))) as ArrayRef),
            ("row", Arc::new(BinaryArray::from_iter_values(held.iter().map(|h| h.2))) as ArrayRef),
            ("multiplicity", Arc::new(Int64Array::from_iter_values(held.iter().map(|h| h.3.multiplicity))) as ArrayRef),
            ("emitted_start", Arc::new(Int64Array::from_iter(held.iter().map(|h| h.3.emitted.map(|b| b.0)))) as ArrayRef),
            ("emitted_end", Arc::new(Int64Array::from_iter(held.iter().map(|h| h.3.emitted.map(|b| b.1)))) as ArrayRef),
            ("emitted_multiplicity", Arc::new(Int64Array::from_iter_values(held.iter().map(|h| h.3.emitted_multiplicity))) as ArrayRef),
        ])?;
        Ok(vec![("rows".into(), batch), ("meta".into(), watermark_meta(self.watermark)?)])
    }

    fn restore(&mut self, state: OperatorState) -> Result<()> {
        for (name, batch) in state {
            let saved = SavedBatch { batch: &batch, what: "session window" };
            match name.as_str() {
                "meta" => self.watermark = saved.int("watermark")?,
                "rows" => {
                    let (keys, rows) = (saved.binary("key")?, saved.binary("row")?);
                    let (ts, multiplicity) = (saved.ints("ts")?, saved.ints("multiplicity")?);
                    let (start, end) = (saved.ints("emitted_start")?, saved.ints("emitted_end")?);
                    let emitted_multiplicity = saved.ints("emitted_multiplicity")?;
                    // Each key is listed once under each of its sessions' ends, as `flush` does.
                    let mut ends: HashSet<(EventTime, &[u8])> = HashSet::new();
                    for i in 0..batch.num_rows() {
                        let emitted = (start.is_valid(i) && end.is_valid(i)).then(|| (start.value(i), end.value(i)));
                        let state = RowState { multiplicity: multiplicity.value(i), emitted, emitted_multiplicity: emitted_multiplicity.value(i) };
                        self.bytes += rows.value(i).len() + 48;
                        self.keys.entry(keys.value(i).into()).or_default().insert((ts.value(i), rows.value(i).into()), state);
                        if let Some((_, e)) = emitted
                            && ends.insert((e, keys.value(i)))
                        {
                            self.closing.entry(e).or_default().push(keys.value(i).into());
                        }
                    }
                }
                other => return Err(saved.corrupt(&format!("unknown part {other}"))),
            }
        }
        Ok(())
    }
}
