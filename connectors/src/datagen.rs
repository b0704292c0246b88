//! `connector = 'datagen'`: rows made up from per-column rules, for demos, tests and load.
//!
//! Options (RisingWave's names):
//! * `datagen.rows.per.second` (default 10; 0 = as fast as the engine reads) over all partitions;
//! * `datagen.split.num` (partitions, default 1);
//! * `datagen.max.rows` (rows over all partitions, split evenly, the first partitions taking the
//!   remainder; unbounded if absent);
//! * `datagen.max.chunk.size` (rows per batch at most, default 1024);
//! * `datagen.seed` (default 0) for the random values.
//!
//! And per column, `fields.<column>.kind` with that kind's options:
//! * `sequence` (the default for integers; also floats and decimals): `.start` (default 1) and
//!   `.end` (inclusive, optional; else the column type's maximum). One sequence split across
//!   partitions: partition p of P yields start+p, start+p+P, ... and ends after `.end`.
//! * `random` (the default for floats, decimals, strings and booleans): numbers uniform in
//!   `[.min, .max]` (defaults 0 and 100, inclusive for integers); strings of `.length` (default
//!   10) letters and digits, or one of `.values` (`'a,b,c'`) chosen uniformly; booleans; `.seed`
//!   (default: the column's position) gives a column its own values.
//! * `event_time` (the default for timestamps and dates): row n of a partition has time `.start`
//!   (`'2026-01-01 00:00:00'` in UTC, or integer microseconds; default: when the source was
//!   created) + n × `.step` (`'10ms'`, `'1 second'`; default 1 s × partitions / rows per second,
//!   so that event time keeps pace with the wall clock, or 1 ms when unlimited), minus a
//!   pseudo-random amount in `[0, .disorder]` (default 0) to make out-of-order events.
//! * `now` (timestamps and dates): the wall clock when the row is generated. Unlike every other
//!   rule it is not replayable: a replay (a backfill, a restart) sees other times.
//!
//! Determinism: every value is a function of (options, creation time, column, partition, row
//! index); random ones are a counter-based hash (splitmix64), so any position can be generated
//! again without sequential state and [`Source::replay_from_start`] yields the same rows.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, RecordBatchOptions, StringArray,
};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer, OffsetBuffer, ScalarBuffer};
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use crate::convert::{integer_range, is_decimal, is_numeric, is_text, is_time, timestamps_to_declared, to_declared};
use crate::error::ConnectorError;
use crate::options::{
    check_known, invalid, parse_count, parse_interval_micros, parse_num, parse_opt, parse_rate, parse_timestamp_micros,
    parse_value,
};
use crate::partitions::{Partitions, Turn};
use crate::rate::RateLimit;
use crate::source::{Source, SourceEvent, SourceOptions, SourcePosition};

/// The source-level options.
const SOURCE_OPTIONS: &[&str] =
    &["datagen.rows.per.second", "datagen.split.num", "datagen.max.rows", "datagen.max.chunk.size", "datagen.seed"];

/// The options a column may have, `fields.<column>.<attribute>`.
const FIELD_ATTRIBUTES: &[&str] =
    &["kind", "start", "end", "min", "max", "length", "values", "seed", "step", "disorder"];

const MAX_PARTITIONS: usize = 1024;
const MAX_CHUNK: usize = 1 << 20;
const MAX_STRING_LENGTH: usize = 1 << 20;

const ALPHANUMERIC: &[u8; 62] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// How a column's values are made.
#[derive(Debug, Clone)]
enum Rule {
    /// `start + partition + row × partitions`.
    Sequence {
        start: i64,
    },
    RandomInt {
        min: i64,
        max: i64,
    },
    RandomFloat {
        min: f64,
        max: f64,
    },
    RandomString {
        length: usize,
    },
    Choice {
        values: Arc<[String]>,
    },
    RandomBool,
    /// Microseconds: `start + row × step - random [0, disorder]`.
    EventTime {
        start: i64,
        step: i64,
        disorder: i64,
    },
    Now,
}

#[derive(Debug, Clone)]
struct Column {
    rule: Rule,
    declared: DataType,
    /// Seeds the column's random values (with the partition and row).
    key: u64,
}

/// The datagen connector; see the module documentation for its options.
#[derive(Debug, Clone)]
pub struct DatagenSource {
    schema: SchemaRef,
    columns: Vec<Column>,
    max_chunk: usize,
    partitions: Partitions,
    rate: RateLimit,
}

/// splitmix64's output function of a counter: a fast, well-mixed bijection on u64.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The random values of one column in one partition: value `n` is a hash of the row index, so
/// any row can be made again on its own.
#[derive(Clone, Copy)]
struct Stream(u64);

impl Stream {
    fn new(column_key: u64, partition: usize) -> Self {
        Stream(mix(column_key ^ mix(partition as u64)))
    }

    fn at(self, row: u64) -> u64 {
        mix(self.0.wrapping_add(row.wrapping_mul(0x9E37_79B9_7F4A_7C15)))
    }

    /// A value uniform in `0..n` (n > 0), by multiply-high (bias below 2^-64 × n).
    fn below(self, row: u64, n: u128) -> u128 {
        (u128::from(self.at(row)) * n) >> 64
    }
}

/// What the options of one column say, read and checked.
struct FieldOptions<'a> {
    options: &'a SourceOptions,
    column: String,
    declared: &'a DataType,
}

impl FieldOptions<'_> {
    fn key(&self, attribute: &str) -> String {
        format!("fields.{}.{attribute}", self.column)
    }

    fn get(&self, attribute: &str) -> Option<&str> {
        self.options.get(&self.key(attribute)).map(String::as_str)
    }

    fn num<T: std::str::FromStr>(&self, attribute: &str, default: T) -> Result<T, ConnectorError> {
        match self.get(attribute) {
            Some(v) => parse_value(&self.key(attribute), v),
            None => Ok(default),
        }
    }

    fn error(&self, attribute: &str, reason: impl Into<String>) -> ConnectorError {
        invalid(&self.key(attribute), reason)
    }

    /// Rejects options of this column that its kind does not read.
    fn only(&self, kind: &str, allowed: &[&str]) -> Result<(), ConnectorError> {
        for attribute in FIELD_ATTRIBUTES {
            if *attribute != "kind" && !allowed.contains(attribute) && self.get(attribute).is_some() {
                return Err(self.error(
                    attribute,
                    format!("does not apply to kind '{kind}' on a column of type {}", self.declared),
                ));
            }
        }
        Ok(())
    }

    /// An integer option within the declared type's range.
    fn integer(&self, attribute: &str, default: i64, (lo, hi): (i64, i64)) -> Result<i64, ConnectorError> {
        let v = self.num(attribute, default)?;
        if v < lo || v > hi {
            return Err(self.error(attribute, format!("{v} is out of range for type {} ({lo} to {hi})", self.declared)));
        }
        Ok(v)
    }

    fn interval(&self, attribute: &str) -> Result<Option<i64>, ConnectorError> {
        self.get(attribute).map(|v| parse_interval_micros(&self.key(attribute), v)).transpose()
    }
}

/// The settings that shape the whole source, needed to read the column rules.
struct Settings {
    partitions: usize,
    rows_per_second: f64,
    max_chunk: usize,
    created_at_micros: i64,
}

/// Reads one column's rule; also returns how many rows a sequence column gives each partition.
fn column_rule(field: &FieldOptions<'_>, s: &Settings) -> Result<(Rule, Option<Vec<u64>>), ConnectorError> {
    let declared = field.declared;
    let default_kind = if declared.is_integer() {
        "sequence"
    } else if is_time(declared) {
        "event_time"
    } else {
        "random"
    };
    let kind = field.get("kind").map(|k| k.trim().to_ascii_lowercase()).unwrap_or_else(|| default_kind.to_string());
    let range = integer_range(declared).unwrap_or((i64::MIN, i64::MAX));
    let cannot = || {
        let reason = if field.get("kind").is_some() {
            format!("'{kind}' cannot generate a column of type {declared}")
        } else {
            format!("datagen cannot generate column \"{}\" of type {declared}", field.column)
        };
        field.error("kind", reason)
    };
    let rule = match kind.as_str() {
        "sequence" => {
            if !is_numeric(declared) {
                return Err(cannot());
            }
            field.only("sequence", &["start", "end"])?;
            let start = field.integer("start", 1, range)?;
            let end = field.integer("end", range.1, range)?;
            // Partition p yields start + p + n × P while it is at most `end`.
            let p_count = s.partitions as i128;
            let counts = (0..s.partitions)
                .map(|p| {
                    let first = i128::from(start) + p as i128;
                    let end = i128::from(end);
                    if end < first { 0 } else { ((end - first) / p_count + 1).min(u64::MAX as i128) as u64 }
                })
                .collect();
            return Ok((Rule::Sequence { start }, Some(counts)));
        }
        "random" if declared.is_integer() => {
            field.only("random", &["min", "max", "seed"])?;
            let (min, max) =
                (field.integer("min", 0.max(range.0), range)?, field.integer("max", 100.min(range.1), range)?);
            if min > max {
                return Err(field.error("min", format!("{min} is greater than max {max}")));
            }
            Rule::RandomInt { min, max }
        }
        "random" if declared.is_floating() || is_decimal(declared) => {
            field.only("random", &["min", "max", "seed"])?;
            let (min, max): (f64, f64) = (field.num("min", 0.0)?, field.num("max", 100.0)?);
            if !(min.is_finite() && max.is_finite()) || min > max {
                return Err(field.error("min", format!("[{min}, {max}] is not a range of numbers")));
            }
            if is_decimal(declared) && (min < range.0 as f64 || max > range.1 as f64) {
                return Err(field.error("max", format!("[{min}, {max}] does not fit in type {declared}")));
            }
            Rule::RandomFloat { min, max }
        }
        "random" if is_text(declared) => match field.get("values") {
            Some(list) => {
                field.only("random", &["values", "seed"])?;
                let values: Arc<[String]> =
                    list.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
                if values.is_empty() {
                    return Err(field.error("values", "needs at least one value, as in 'a,b,c'"));
                }
                Rule::Choice { values }
            }
            None => {
                field.only("random", &["length", "seed"])?;
                let length: usize = field.num("length", 10)?;
                if length > MAX_STRING_LENGTH || length * s.max_chunk > i32::MAX as usize {
                    return Err(field.error(
                        "length",
                        format!("{length} characters are too many for batches of {} rows", s.max_chunk),
                    ));
                }
                Rule::RandomString { length }
            }
        },
        "random" if declared == &DataType::Boolean => {
            field.only("random", &["seed"])?;
            Rule::RandomBool
        }
        "event_time" if is_time(declared) => {
            field.only("event_time", &["start", "step", "disorder", "seed"])?;
            let start = match field.get("start") {
                Some(v) => parse_timestamp_micros(&field.key("start"), v)?,
                None => s.created_at_micros,
            };
            let step = match field.interval("step")? {
                Some(step) => step,
                None if s.rows_per_second > 0.0 => (1e6 * s.partitions as f64 / s.rows_per_second).round() as i64,
                None => 1_000,
            };
            Rule::EventTime { start, step, disorder: field.interval("disorder")?.unwrap_or(0) }
        }
        "now" if is_time(declared) => {
            field.only("now", &[])?;
            Rule::Now
        }
        "random" | "event_time" | "now" => return Err(cannot()),
        other => {
            return Err(field.error("kind", format!("unknown kind '{other}' (sequence, random, event_time, now)")));
        }
    };
    Ok((rule, None))
}

impl DatagenSource {
    pub fn new(schema: SchemaRef, options: &SourceOptions, created_at_micros: i64) -> Result<Self, ConnectorError> {
        let column_names: Vec<String> = schema.fields().iter().map(|f| f.name().to_ascii_lowercase()).collect();
        check_known(options, "datagen", |key| {
            if SOURCE_OPTIONS.contains(&key) {
                return Ok(true);
            }
            let Some((column, attribute)) = key.strip_prefix("fields.").and_then(|rest| rest.rsplit_once('.')) else {
                return Ok(false);
            };
            if !column_names.iter().any(|c| c == column) {
                return Err(invalid(
                    key,
                    format!("the source has no column \"{column}\" (it has {})", column_names.join(", ")),
                ));
            }
            if !FIELD_ATTRIBUTES.contains(&attribute) {
                return Err(invalid(
                    key,
                    format!("unknown column option '{attribute}' ({})", FIELD_ATTRIBUTES.join(", ")),
                ));
            }
            Ok(true)
        })?;
        let rows_per_second = parse_rate(options, "datagen.rows.per.second", 10.0)?;
        let partitions = parse_count(options, "datagen.split.num", 1, MAX_PARTITIONS)?;
        let max_chunk = parse_count(options, "datagen.max.chunk.size", 1024, MAX_CHUNK)?;
        let max_rows: Option<u64> = parse_opt(options, "datagen.max.rows")?;
        let seed: u64 = parse_num(options, "datagen.seed", 0)?;

        let p_count = partitions as u64;
        let mut bounds: Vec<Option<u64>> =
            (0..p_count).map(|p| max_rows.map(|m| m / p_count + u64::from(p < m % p_count))).collect();
        let settings = Settings { partitions, rows_per_second, max_chunk, created_at_micros };
        let mut columns = Vec::with_capacity(schema.fields().len());
        for (index, (field, name)) in schema.fields().iter().zip(&column_names).enumerate() {
            let field_options = FieldOptions { options, column: name.clone(), declared: field.data_type() };
            let (rule, counts) = column_rule(&field_options, &settings)?;
            for (bound, count) in bounds.iter_mut().zip(counts.into_iter().flatten()) {
                *bound = Some(bound.map_or(count, |b| b.min(count)));
            }
            // Columns draw from distinct streams; an explicit `.seed` picks the stream.
            let column_seed = match field_options.get("seed") {
                Some(v) => parse_value::<u64>(&field_options.key("seed"), v)?,
                None => index as u64 | 1 << 63,
            };
            columns.push(Column { rule, declared: field.data_type().clone(), key: mix(mix(seed) ^ mix(column_seed)) });
        }
        Ok(DatagenSource {
            schema,
            columns,
            max_chunk,
            partitions: Partitions::new(bounds),
            rate: RateLimit::new(rows_per_second),
        })
    }

    /// Rows `first..first + rows` of a partition.
    fn generate(&self, partition: usize, first: u64, rows: usize) -> Result<RecordBatch, ConnectorError> {
        let p_count = self.partitions.count() as i64;
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.columns.len());
        for column in &self.columns {
            let range = first..first + rows as u64;
            let stream = Stream::new(column.key, partition);
            let array: ArrayRef = match &column.rule {
                Rule::Sequence { start } => {
                    // In range: the partition's bound stops it at `.end` or the type's maximum.
                    let base = start.wrapping_add(partition as i64);
                    let values = Int64Array::from_iter_values(
                        range.map(|n| base.wrapping_add((n as i64).wrapping_mul(p_count))),
                    );
                    to_declared(Arc::new(values), &column.declared)?
                }
                Rule::RandomInt { min, max } => {
                    let span = (i128::from(*max) - i128::from(*min) + 1) as u128;
                    let values = Int64Array::from_iter_values(
                        range.map(|n| (i128::from(*min) + stream.below(n, span) as i128) as i64),
                    );
                    to_declared(Arc::new(values), &column.declared)?
                }
                Rule::RandomFloat { min, max } => {
                    let values = Float64Array::from_iter_values(range.map(|n| {
                        let unit = (stream.at(n) >> 11) as f64 / (1u64 << 53) as f64;
                        min + unit * (max - min)
                    }));
                    to_declared(Arc::new(values), &column.declared)?
                }
                Rule::RandomString { length } => {
                    to_declared(Arc::new(random_strings(stream, first, rows, *length)?), &column.declared)?
                }
                Rule::Choice { values } => {
                    let n = values.len() as u128;
                    let strings =
                        StringArray::from_iter_values(range.map(|row| values[stream.below(row, n) as usize].as_str()));
                    to_declared(Arc::new(strings), &column.declared)?
                }
                Rule::RandomBool => {
                    let bits = BooleanBuffer::collect_bool(rows, |i| stream.at(first + i as u64) >> 63 == 1);
                    to_declared(Arc::new(BooleanArray::new(bits, None)), &column.declared)?
                }
                Rule::EventTime { start, step, disorder } => {
                    let spread = *disorder as u128 + 1;
                    let micros = range
                        .map(|n| {
                            let back = if *disorder > 0 { stream.below(n, spread) as i64 } else { 0 };
                            start.saturating_add((n as i64).saturating_mul(*step)).saturating_sub(back)
                        })
                        .collect();
                    timestamps_to_declared(micros, &column.declared)?
                }
                Rule::Now => {
                    let now = chrono::Utc::now().timestamp_micros();
                    timestamps_to_declared(vec![now; rows], &column.declared)?
                }
            };
            arrays.push(array);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)?)
    }
}

/// `rows` strings of `length` letters and digits, written straight into one buffer (ten
/// characters per 64-bit hash).
fn random_strings(stream: Stream, first: u64, rows: usize, length: usize) -> Result<StringArray, ConnectorError> {
    let mut bytes = Vec::with_capacity(rows * length);
    for n in first..first + rows as u64 {
        let mut h = stream.at(n);
        for i in 0..length {
            if i > 0 && i % 10 == 0 {
                h = mix(h);
            }
            bytes.push(ALPHANUMERIC[(h % 62) as usize]);
            h /= 62;
        }
    }
    // Checked at creation: rows × length fits in i32 offsets.
    let offsets = OffsetBuffer::new(ScalarBuffer::from_iter((0..=rows).map(|i| (i * length) as i32)));
    Ok(StringArray::try_new(offsets, Buffer::from_vec(bytes), None)?)
}

#[async_trait]
impl Source for DatagenSource {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn partitions(&self) -> usize {
        self.partitions.count()
    }

    async fn next(&mut self) -> Result<SourceEvent, ConnectorError> {
        let (partition, rows) = match self.partitions.next_turn(&mut self.rate, self.max_chunk).await {
            Turn::Report(event) => return Ok(event),
            Turn::Generate { partition, rows } => (partition, rows),
        };
        // Past the only await: from here on the call completes, so state may change.
        let batch = self.generate(partition, self.partitions.offset(partition), rows)?;
        self.rate.record(rows);
        self.partitions.advance(partition, rows as u64);
        Ok(SourceEvent::Batch { partition, rows: batch })
    }

    fn positions(&self) -> Vec<SourcePosition> {
        self.partitions.positions()
    }

    async fn seek(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        self.partitions.seek(positions).map(drop)
    }

    /// The same rows from the start, read as fast as the caller reads (a backfill catching up
    /// with the shared reader is not held to the rate limit).
    fn replay_from_start(&self) -> Option<Box<dyn Source>> {
        Some(Box::new(DatagenSource {
            partitions: self.partitions.restarted(),
            rate: RateLimit::new(0.0),
            ..self.clone()
        }))
    }

    fn stop_at(&mut self, positions: &[SourcePosition]) {
        self.partitions.stop_at(positions);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema, TimeUnit, TimestampMicrosecondType};

    use super::*;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
            Field::new("ok", DataType::Boolean, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]))
    }

    fn opts(pairs: &[(&str, &str)]) -> SourceOptions {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn unlimited(pairs: &[(&str, &str)]) -> SourceOptions {
        let mut o = opts(pairs);
        o.insert("datagen.rows.per.second".into(), "0".into());
        o
    }

    /// Every event until `End`, which must then repeat.
    async fn drain(s: &mut dyn Source) -> Vec<SourceEvent> {
        let mut out = Vec::new();
        loop {
            match s.next().await.unwrap() {
                SourceEvent::End => break,
                event => out.push(event),
            }
        }
        assert!(matches!(s.next().await.unwrap(), SourceEvent::End));
        out
    }

    fn batches(events: &[SourceEvent]) -> Vec<(usize, RecordBatch)> {
        events
            .iter()
            .filter_map(|e| match e {
                SourceEvent::Batch { partition, rows } => Some((*partition, rows.clone())),
                _ => None,
            })
            .collect()
    }

    fn ints(batch: &RecordBatch, column: usize) -> Vec<i64> {
        batch.column(column).as_primitive::<Int64Type>().values().to_vec()
    }

    fn times(batch: &RecordBatch, column: usize) -> Vec<i64> {
        batch.column(column).as_primitive::<TimestampMicrosecondType>().values().to_vec()
    }

    fn error_option(result: Result<DatagenSource, ConnectorError>) -> String {
        match result {
            Err(ConnectorError::InvalidOption { option, .. }) => option,
            other => panic!("expected an invalid option, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn the_same_options_give_the_same_rows_and_replays_repeat_them() {
        let o = unlimited(&[
            ("datagen.split.num", "3"),
            ("datagen.max.rows", "5000"),
            ("datagen.max.chunk.size", "300"),
            ("datagen.seed", "7"),
            ("fields.ts.disorder", "5s"),
        ]);
        let mut a = DatagenSource::new(schema(), &o, 1_000_000).unwrap();
        let mut b = DatagenSource::new(schema(), &o, 1_000_000).unwrap();
        let first = batches(&drain(&mut a).await);
        assert_eq!(first, batches(&drain(&mut b).await));
        assert_eq!(first.iter().map(|(_, b)| b.num_rows()).sum::<usize>(), 5000);
        let mut replay = a.replay_from_start().unwrap();
        assert_eq!(first, batches(&drain(replay.as_mut()).await));
        // Another seed gives other random values, the same sequence and times.
        let mut other =
            DatagenSource::new(schema(), &unlimited(&[("datagen.seed", "8"), ("datagen.max.rows", "10")]), 0).unwrap();
        let mut same =
            DatagenSource::new(schema(), &unlimited(&[("datagen.seed", "7"), ("datagen.max.rows", "10")]), 0).unwrap();
        let (x, y) = (batches(&drain(&mut other).await), batches(&drain(&mut same).await));
        assert_eq!(ints(&x[0].1, 0), ints(&y[0].1, 0));
        assert_ne!(x[0].1.column(1), y[0].1.column(1));
        assert_ne!(x[0].1.column(2), y[0].1.column(2));
    }

    #[tokio::test]
    async fn partitions_take_turns_end_once_and_then_the_source_ends() {
        let o = unlimited(&[("datagen.split.num", "3"), ("datagen.max.rows", "10"), ("datagen.max.chunk.size", "2")]);
        let mut s = DatagenSource::new(schema(), &o, 0).unwrap();
        let order: Vec<String> = drain(&mut s)
            .await
            .iter()
            .map(|e| match e {
                SourceEvent::Batch { partition, rows } => format!("{partition}:{}", rows.num_rows()),
                SourceEvent::PartitionEnd { partition } => format!("end {partition}"),
                SourceEvent::End => "end".into(),
                SourceEvent::BadRecord { reason, .. } => format!("bad {reason}"),
            })
            .collect();
        // 10 rows over 3 partitions: 4, 3, 3.
        assert_eq!(order, ["0:2", "1:2", "2:2", "0:2", "1:1", "2:1", "end 0", "end 1", "end 2"]);
        assert_eq!(s.positions().iter().map(|p| p.offset).collect::<Vec<_>>(), [4, 3, 3]);
    }

    #[tokio::test]
    async fn a_sequence_is_split_across_partitions_and_ends_at_its_end() {
        let o = unlimited(&[("datagen.split.num", "3"), ("fields.id.start", "10"), ("fields.id.end", "20")]);
        let mut s = DatagenSource::new(schema(), &o, 0).unwrap();
        let mut per_partition = vec![Vec::new(); 3];
        for (p, b) in batches(&drain(&mut s).await) {
            per_partition[p].extend(ints(&b, 0));
        }
        assert_eq!(per_partition, [vec![10, 13, 16, 19], vec![11, 14, 17, 20], vec![12, 15, 18]]);
        // A smallint sequence ends at the type's maximum.
        let small = Arc::new(Schema::new(vec![Field::new("n", DataType::Int16, true)]));
        let mut s = DatagenSource::new(small, &unlimited(&[("fields.n.start", "32760")]), 0).unwrap();
        let rows: usize = batches(&drain(&mut s).await).iter().map(|(_, b)| b.num_rows()).sum();
        assert_eq!(rows, 8);
    }

    #[tokio::test]
    async fn seek_resumes_and_stop_at_ends_a_replay_where_the_reader_was() {
        let o = unlimited(&[("datagen.split.num", "2"), ("datagen.max.chunk.size", "10")]);
        let mut s = DatagenSource::new(schema(), &o, 0).unwrap();
        let mut read = Vec::new();
        for _ in 0..5 {
            read.push(s.next().await.unwrap());
        }
        let positions = s.positions();
        assert_eq!(
            positions.iter().map(|p| (p.partition.as_str(), p.offset)).collect::<Vec<_>>(),
            [("0", 30), ("1", 20)]
        );
        let mut replay = s.replay_from_start().unwrap();
        replay.stop_at(&positions);
        assert_eq!(batches(&drain(replay.as_mut()).await), batches(&read));

        // A fresh source sought to the positions continues each partition like the first one.
        let mut resumed = DatagenSource::new(schema(), &o, 0).unwrap();
        resumed.seek(&positions).await.unwrap();
        let mut continued = Vec::new();
        let mut again = Vec::new();
        for _ in 0..4 {
            continued.push(s.next().await.unwrap());
            again.push(resumed.next().await.unwrap());
        }
        let by_partition = |events: &[SourceEvent]| {
            let mut b = batches(events);
            b.sort_by_key(|(p, _)| *p);
            b
        };
        assert_eq!(by_partition(&continued), by_partition(&again));
        assert!(resumed.seek(&[SourcePosition { partition: "2".into(), offset: 0 }]).await.is_err());
    }

    #[tokio::test]
    async fn event_time_advances_by_step_with_bounded_disorder() {
        let o = unlimited(&[
            ("datagen.max.rows", "3"),
            ("fields.ts.start", "2026-01-01 00:00:00"),
            ("fields.ts.step", "1 second"),
        ]);
        let mut s = DatagenSource::new(schema(), &o, 0).unwrap();
        let base = 1_767_225_600_000_000i64;
        assert_eq!(times(&batches(&drain(&mut s).await)[0].1, 4), [base, base + 1_000_000, base + 2_000_000]);

        let o = unlimited(&[
            ("datagen.max.rows", "1000"),
            ("fields.ts.step", "10ms"),
            ("fields.ts.disorder", "250 milliseconds"),
        ]);
        let mut s = DatagenSource::new(schema(), &o, 5_000_000).unwrap();
        let ts = times(&batches(&drain(&mut s).await)[0].1, 4);
        let mut out_of_order = 0;
        for (n, t) in ts.iter().enumerate() {
            let on_time = 5_000_000 + n as i64 * 10_000;
            assert!((on_time - 250_000..=on_time).contains(t));
            out_of_order += usize::from(n > 0 && *t < ts[n - 1]);
        }
        assert!(out_of_order > 100, "{out_of_order}");

        // By default event time keeps pace with the rate: 2 partitions at 100 rows/s, 20 ms a row.
        let o = opts(&[("datagen.split.num", "2"), ("datagen.rows.per.second", "100"), ("datagen.max.rows", "4")]);
        let mut s = DatagenSource::new(schema(), &o, 0).unwrap();
        let b = batches(&drain(&mut s).await);
        assert_eq!(times(&b[0].1, 4), [0, 20_000]);
    }

    #[tokio::test]
    async fn random_values_follow_their_options() {
        let o = unlimited(&[
            ("datagen.max.rows", "2000"),
            ("datagen.max.chunk.size", "2000"),
            ("fields.id.kind", "random"),
            ("fields.id.min", "-3"),
            ("fields.id.max", "3"),
            ("fields.name.values", "red, green,blue"),
            ("fields.score.min", "1.5"),
            ("fields.score.max", "2.5"),
        ]);
        let mut s = DatagenSource::new(schema(), &o, 0).unwrap();
        let b = &batches(&drain(&mut s).await)[0].1;
        let mut ids = ints(b, 0);
        ids.sort();
        ids.dedup();
        assert_eq!(ids, [-3, -2, -1, 0, 1, 2, 3]);
        let names: std::collections::BTreeSet<&str> = b.column(1).as_string::<i32>().iter().flatten().collect();
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["blue", "green", "red"]);
        let scores = b.column(2).as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert!(scores.values().iter().all(|v| (1.5..=2.5).contains(v)));
        let trues = b.column(3).as_boolean().true_count();
        assert!((800..1200).contains(&trues), "{trues}");

        let o = unlimited(&[("datagen.max.rows", "50"), ("fields.name.length", "25")]);
        let mut s = DatagenSource::new(schema(), &o, 0).unwrap();
        let b = &batches(&drain(&mut s).await)[0].1;
        let names = b.column(1).as_string::<i32>();
        assert!(names.iter().flatten().all(|n| n.len() == 25 && n.bytes().all(|c| c.is_ascii_alphanumeric())));
        assert_ne!(names.value(0), names.value(1));
    }

    #[tokio::test]
    async fn batches_have_the_declared_types() {
        let declared = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int16, true),
            Field::new("b", DataType::Int32, true),
            Field::new("c", DataType::Float32, true),
            Field::new("d", DataType::Decimal128(10, 2), true),
            Field::new("e", DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())), true),
            Field::new("f", DataType::Date32, true),
            Field::new("g", DataType::Int64, false),
            Field::new("h", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("i", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let o = unlimited(&[
            ("datagen.max.rows", "100"),
            ("fields.b.kind", "random"),
            ("fields.d.kind", "sequence"),
            ("fields.i.kind", "now"),
        ]);
        let mut s = DatagenSource::new(declared.clone(), &o, 86_400_000_000).unwrap();
        let b = &batches(&drain(&mut s).await)[0].1;
        assert_eq!(b.schema(), declared);
        assert_eq!(b.num_rows(), 100);
        assert!(b.columns().iter().all(|c| c.null_count() == 0));
        assert_eq!(b.column(5).as_primitive::<datafusion::arrow::datatypes::Date32Type>().value(0), 1);
    }

    #[test]
    fn bad_options_name_the_option() {
        let new = |pairs: &[(&str, &str)]| DatagenSource::new(schema(), &opts(pairs), 0);
        for (pairs, option) in [
            (&[("datagen.split.num", "0")][..], "datagen.split.num"),
            (&[("datagen.rows.per.second", "-1")], "datagen.rows.per.second"),
            (&[("datagen.max.rows", "ten")], "datagen.max.rows"),
            (&[("datagen.max.chunk.size", "0")], "datagen.max.chunk.size"),
            (&[("datagen.rows", "1")], "datagen.rows"),
            (&[("watermark.other", "1")], "watermark.other"),
            (&[("fields.nope.kind", "random")], "fields.nope.kind"),
            (&[("fields.id.colour", "red")], "fields.id.colour"),
            (&[("fields.name.kind", "sequence")], "fields.name.kind"),
            (&[("fields.id.kind", "gaussian")], "fields.id.kind"),
            (&[("fields.ts.kind", "random")], "fields.ts.kind"),
            (&[("fields.ts.step", "soon")], "fields.ts.step"),
            (&[("fields.ts.start", "yesterday")], "fields.ts.start"),
            (&[("fields.id.start", "1.5")], "fields.id.start"),
            (&[("fields.id.length", "5")], "fields.id.length"),
            (&[("fields.id.kind", "random"), ("fields.id.min", "10"), ("fields.id.max", "1")], "fields.id.min"),
            (&[("fields.name.values", " , ")], "fields.name.values"),
            (&[("fields.ok.kind", "now")], "fields.ok.kind"),
        ] {
            assert_eq!(error_option(new(pairs)), option, "{pairs:?}");
        }
        let binary = Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, true)]));
        let error = DatagenSource::new(binary, &opts(&[]), 0).unwrap_err();
        assert!(error.to_string().contains("cannot generate column \"b\" of type Binary"), "{error}");
        let small = Arc::new(Schema::new(vec![Field::new("n", DataType::Int16, true)]));
        let error = DatagenSource::new(small, &opts(&[("fields.n.end", "40000")]), 0).unwrap_err();
        assert!(error.to_string().contains("out of range"), "{error}");
        // The engine's own options are accepted and left to it.
        let engine = [("connector", "datagen"), ("watermark.idle_timeout", "5s"), ("watermark.late_events", "drop")];
        assert!(new(&engine).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn rows_per_second_paces_all_partitions_together() {
        let o = opts(&[("datagen.rows.per.second", "200"), ("datagen.split.num", "4")]);
        let mut s = DatagenSource::new(schema(), &o, 0).unwrap();
        let start = tokio::time::Instant::now();
        let mut per_second = vec![0usize; 5];
        loop {
            let SourceEvent::Batch { rows, .. } = s.next().await.unwrap() else { panic!("unbounded") };
            let second = start.elapsed().as_secs() as usize;
            if second >= per_second.len() {
                break;
            }
            // About 20 batches a second.
            assert_eq!(rows.num_rows(), 10);
            per_second[second] += rows.num_rows();
        }
        assert!(per_second.iter().all(|n| (190..=210).contains(n)), "{per_second:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_next_loses_no_rows() {
        let o = opts(&[("datagen.rows.per.second", "1")]);
        let mut s = DatagenSource::new(schema(), &o, 0).unwrap();
        let SourceEvent::Batch { rows, .. } = s.next().await.unwrap() else { panic!("unbounded") };
        assert_eq!(ints(&rows, 0), [1]);
        // The second row is due in a second; give up waiting for it after 100 ms.
        tokio::select! {
            biased;
            _ = s.next() => panic!("the row came early"),
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {}
        }
        assert_eq!(s.positions()[0].offset, 1);
        let SourceEvent::Batch { rows, .. } = s.next().await.unwrap() else { panic!("unbounded") };
        assert_eq!(ints(&rows, 0), [2]);
    }
}
