//! `connector = 'nexmark'`: the Nexmark benchmark's people, auctions and bids, made by the
//! `nexmark` crate's generator (the one RisingWave uses), with event time.
//!
//! Nexmark is one stream of events, 1 person : 3 auctions : 46 bids; a source reads one table
//! of it (`nexmark.table.type`), and several sources with the same options see the same
//! stream. Options:
//! * `nexmark.table.type` = `'Bid'` | `'Auction'` | `'Person'` (any case; required);
//! * `nexmark.event.num`: events of all three types to generate (the table gets its share of
//!   them); unbounded if absent;
//! * `nexmark.split.num` (partitions, default 1): partition p of P reads the table's events p,
//!   p+P, p+2P, ...;
//! * `nexmark.max.chunk.size` (rows per batch at most, default 1024);
//! * `nexmark.rows.per.second` (default 0 = as fast as the engine reads): this table's rows;
//! * `nexmark.base.time`: event time of the first event, milliseconds since the Unix epoch (or a
//!   timestamp such as `'2026-01-01 00:00:00'`); default: when the source was created;
//! * `nexmark.first.event.rate` (default 10000): events per second of event time, so that 10M
//!   events span 1000 s.
//!
//! Columns are matched by name (any case); a source may declare any of its table's columns, in
//! any order: ids and prices as any numeric (or text) type, times (`date_time`, `expires`) as a
//! timestamp or date. Without a column list it gets [`nexmark_default_schema`].
//!
//! Every event is a function of its number (the crate seeds each one's randomness with it), so
//! a partition at any offset is regenerated exactly: seeking and replays are deterministic.

use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, RecordBatchOptions, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use nexmark::EventGenerator;
use nexmark::config::NexmarkConfig;
use nexmark::event::{Event, EventType};

use crate::convert::{is_numeric, is_text, is_time, timestamps_to_declared, to_declared};
use crate::error::ConnectorError;
use crate::options::{check_known, invalid, parse_count, parse_opt, parse_rate, parse_timestamp_micros};
use crate::partitions::{Partitions, Turn};
use crate::rate::RateLimit;
use crate::source::{Source, SourceEvent, SourceOptions, SourcePosition};

const OPTIONS: &[&str] = &[
    "nexmark.table.type",
    "nexmark.event.num",
    "nexmark.split.num",
    "nexmark.max.chunk.size",
    "nexmark.rows.per.second",
    "nexmark.base.time",
    "nexmark.first.event.rate",
];

const MAX_PARTITIONS: usize = 1024;
const MAX_CHUNK: usize = 1 << 20;
/// Event numbers beyond this would overflow the generator's arithmetic.
const MAX_EVENT_NUM: u64 = 1 << 60;

/// One of Nexmark's three tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NexmarkTable {
    Person,
    Auction,
    Bid,
}

impl NexmarkTable {
    pub fn name(self) -> &'static str {
        match self {
            NexmarkTable::Person => "Person",
            NexmarkTable::Auction => "Auction",
            NexmarkTable::Bid => "Bid",
        }
    }

    fn event_type(self) -> EventType {
        match self {
            NexmarkTable::Person => EventType::Person,
            NexmarkTable::Auction => EventType::Auction,
            NexmarkTable::Bid => EventType::Bid,
        }
    }

    fn columns(self) -> &'static [(&'static str, Column)] {
        use Column::*;
        match self {
            NexmarkTable::Person => &[
                ("id", PersonId),
                ("name", Name),
                ("email_address", EmailAddress),
                ("credit_card", CreditCard),
                ("city", City),
                ("state", State),
                ("date_time", PersonDateTime),
                ("extra", PersonExtra),
            ],
            NexmarkTable::Auction => &[
                ("id", AuctionId),
                ("item_name", ItemName),
                ("description", Description),
                ("initial_bid", InitialBid),
                ("reserve", Reserve),
                ("date_time", AuctionDateTime),
                ("expires", Expires),
                ("seller", Seller),
                ("category", Category),
                ("extra", AuctionExtra),
            ],
            NexmarkTable::Bid => &[
                ("auction", BidAuction),
                ("bidder", Bidder),
                ("price", Price),
                ("channel", Channel),
                ("url", Url),
                ("date_time", BidDateTime),
                ("extra", BidExtra),
            ],
        }
    }
}

impl FromStr for NexmarkTable {
    type Err = ConnectorError;

    /// `'Bid'`, `'Auction'` or `'Person'`, in any case.
    fn from_str(s: &str) -> Result<Self, ConnectorError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "person" => Ok(NexmarkTable::Person),
            "auction" => Ok(NexmarkTable::Auction),
            "bid" => Ok(NexmarkTable::Bid),
            _ => Err(invalid("nexmark.table.type", format!("'{s}' is not one of 'Bid', 'Auction', 'Person'"))),
        }
    }
}

/// The columns of a Nexmark table: ids and prices as Int64, text as Utf8, times as
/// `Timestamp(Microsecond, None)`.
pub fn nexmark_default_schema(table: NexmarkTable) -> SchemaRef {
    let fields: Vec<Field> = table
        .columns()
        .iter()
        .map(|(name, column)| {
            let data_type = match column.kind() {
                Kind::Int => DataType::Int64,
                Kind::Text => DataType::Utf8,
                Kind::Time => DataType::Timestamp(TimeUnit::Microsecond, None),
            };
            Field::new(*name, data_type, true)
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A column of one of the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    PersonId,
    Name,
    EmailAddress,
    CreditCard,
    City,
    State,
    PersonDateTime,
    PersonExtra,
    AuctionId,
    ItemName,
    Description,
    InitialBid,
    Reserve,
    AuctionDateTime,
    Expires,
    Seller,
    Category,
    AuctionExtra,
    BidAuction,
    Bidder,
    Price,
    Channel,
    Url,
    BidDateTime,
    BidExtra,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Int,
    Text,
    /// Milliseconds since the epoch in the crate, microsecond timestamps here.
    Time,
}

impl Column {
    fn kind(self) -> Kind {
        use Column::*;
        match self {
            PersonId | AuctionId | InitialBid | Reserve | Seller | Category | BidAuction | Bidder | Price => Kind::Int,
            PersonDateTime | AuctionDateTime | Expires | BidDateTime => Kind::Time,
            Name | EmailAddress | CreditCard | City | State | PersonExtra | ItemName | Description | AuctionExtra
            | Channel | Url | BidExtra => Kind::Text,
        }
    }

    /// About how many bytes a text value of this column has (the crate aims at 200-byte people,
    /// 500-byte auctions and 100-byte bids, padding with `extra`), to size batch buffers.
    fn typical_len(self) -> usize {
        use Column::*;
        match self {
            State => 2,
            Channel | City => 12,
            Name | EmailAddress | CreditCard | ItemName => 20,
            BidExtra | Url => 80,
            Description => 100,
            PersonExtra => 140,
            AuctionExtra => 340,
            _ => 0,
        }
    }

    /// Whether a column of this kind can be declared with this type.
    fn fits(self, declared: &DataType) -> bool {
        match self.kind() {
            Kind::Int => is_numeric(declared) || is_text(declared),
            Kind::Text => is_text(declared),
            Kind::Time => is_time(declared),
        }
    }
}

/// One value of an event, borrowed from it.
enum Value<'a> {
    Int(i64),
    Text(&'a str),
    /// Milliseconds since the epoch.
    Time(u64),
}

/// The value of `column` in `event`; `None` if the event is not of the column's table (the
/// declared columns were checked against the table at creation, and generators only make
/// events of their table).
fn value(column: Column, event: &Event) -> Option<Value<'_>> {
    use Column::*;
    use Value::{Int, Text, Time};
    Some(match (event, column) {
        (Event::Person(p), PersonId) => Int(p.id as i64),
        (Event::Person(p), Name) => Text(&p.name),
        (Event::Person(p), EmailAddress) => Text(&p.email_address),
        (Event::Person(p), CreditCard) => Text(&p.credit_card),
        (Event::Person(p), City) => Text(&p.city),
        (Event::Person(p), State) => Text(&p.state),
        (Event::Person(p), PersonDateTime) => Time(p.date_time),
        (Event::Person(p), PersonExtra) => Text(&p.extra),
        (Event::Auction(a), AuctionId) => Int(a.id as i64),
        (Event::Auction(a), ItemName) => Text(&a.item_name),
        (Event::Auction(a), Description) => Text(&a.description),
        (Event::Auction(a), InitialBid) => Int(a.initial_bid as i64),
        (Event::Auction(a), Reserve) => Int(a.reserve as i64),
        (Event::Auction(a), AuctionDateTime) => Time(a.date_time),
        (Event::Auction(a), Expires) => Time(a.expires),
        (Event::Auction(a), Seller) => Int(a.seller as i64),
        (Event::Auction(a), Category) => Int(a.category as i64),
        (Event::Auction(a), AuctionExtra) => Text(&a.extra),
        (Event::Bid(b), BidAuction) => Int(b.auction as i64),
        (Event::Bid(b), Bidder) => Int(b.bidder as i64),
        (Event::Bid(b), Price) => Int(b.price as i64),
        (Event::Bid(b), Channel) => Text(&b.channel),
        (Event::Bid(b), Url) => Text(&b.url),
        (Event::Bid(b), BidDateTime) => Time(b.date_time),
        (Event::Bid(b), BidExtra) => Text(&b.extra),
        _ => return None,
    })
}

/// Collects one column's values for a batch. Events are appended as they are generated and
/// dropped right after, which keeps their strings in cache while they are copied.
enum Builder {
    Int(Vec<i64>),
    Text(StringBuilder),
    /// Microseconds.
    Time(Vec<i64>),
}

impl Builder {
    fn new(column: Column, rows: usize) -> Self {
        match column.kind() {
            Kind::Int => Builder::Int(Vec::with_capacity(rows)),
            // A quarter more than typical: values vary, and growing the buffer copies it.
            Kind::Text => Builder::Text(StringBuilder::with_capacity(rows, rows * column.typical_len() * 5 / 4)),
            Kind::Time => Builder::Time(Vec::with_capacity(rows)),
        }
    }

    /// Appends a value of this builder's kind; false for a value of another kind.
    fn push(&mut self, value: Value<'_>) -> bool {
        match (self, value) {
            (Builder::Int(v), Value::Int(x)) => v.push(x),
            (Builder::Text(b), Value::Text(x)) => b.append_value(x),
            (Builder::Time(v), Value::Time(millis)) => v.push((millis as i64).saturating_mul(1000)),
            _ => return false,
        }
        true
    }

    fn finish(self, declared: &DataType) -> Result<ArrayRef, ConnectorError> {
        Ok(match self {
            Builder::Int(v) => to_declared(Arc::new(Int64Array::from(v)), declared)?,
            Builder::Text(mut b) => to_declared(Arc::new(b.finish()), declared)?,
            Builder::Time(micros) => timestamps_to_declared(micros, declared)?,
        })
    }
}

/// The nexmark connector; see the module documentation for its options.
#[derive(Debug, Clone)]
pub struct NexmarkSource {
    schema: SchemaRef,
    table: NexmarkTable,
    /// The declared columns, in order.
    columns: Vec<Column>,
    config: NexmarkConfig,
    max_chunk: usize,
    partitions: Partitions,
    /// Per partition, the generator positioned at its next row.
    generators: Vec<EventGenerator>,
    rate: RateLimit,
}

impl NexmarkSource {
    pub fn new(schema: SchemaRef, options: &SourceOptions, created_at_micros: i64) -> Result<Self, ConnectorError> {
        check_known(options, "nexmark", |key| Ok(OPTIONS.contains(&key)))?;
        let table: NexmarkTable = match options.get("nexmark.table.type") {
            Some(t) => t.parse()?,
            None => return Err(invalid("nexmark.table.type", "required: 'Bid', 'Auction' or 'Person'")),
        };
        let available = table.columns();
        let mut columns = Vec::with_capacity(schema.fields().len());
        for field in schema.fields() {
            let Some(&(_, column)) = available.iter().find(|(n, _)| n.eq_ignore_ascii_case(field.name())) else {
                let names: Vec<&str> = available.iter().map(|(n, _)| *n).collect();
                return Err(invalid(
                    "nexmark.table.type",
                    format!(
                        "the {} table has no column \"{}\" (it has {})",
                        table.name(),
                        field.name(),
                        names.join(", ")
                    ),
                ));
            };
            if !column.fits(field.data_type()) {
                let expected = match column.kind() {
                    Kind::Int => "a numeric or text type",
                    Kind::Text => "a text type",
                    Kind::Time => "a timestamp or date type",
                };
                return Err(invalid(
                    "nexmark.table.type",
                    format!(
                        "column \"{}\" of the {} table cannot be declared as {} (expected {expected})",
                        field.name(),
                        table.name(),
                        field.data_type()
                    ),
                ));
            }
            columns.push(column);
        }
        let event_num: Option<u64> = parse_opt(options, "nexmark.event.num")?;
        if event_num.is_some_and(|n| n > MAX_EVENT_NUM) {
            return Err(invalid(
                "nexmark.event.num",
                format!("must be at most {MAX_EVENT_NUM}; leave it out for no end"),
            ));
        }
        let partitions = parse_count(options, "nexmark.split.num", 1, MAX_PARTITIONS)?;
        let max_chunk = parse_count(options, "nexmark.max.chunk.size", 1024, MAX_CHUNK)?;
        let rows_per_second = parse_rate(options, "nexmark.rows.per.second", 0.0)?;
        let base_time = match options.get("nexmark.base.time") {
            None => (created_at_micros / 1000).max(0) as u64,
            Some(v) => match v.trim().parse::<u64>() {
                Ok(millis) => millis,
                Err(_) => {
                    let micros = parse_timestamp_micros("nexmark.base.time", v)?;
                    if micros < 0 {
                        return Err(invalid("nexmark.base.time", format!("'{v}' is before the Unix epoch")));
                    }
                    micros as u64 / 1000
                }
            },
        };
        let first_rate = parse_count(options, "nexmark.first.event.rate", 10_000, 1_000_000_000)?;
        let config = NexmarkConfig { base_time, first_rate, next_rate: first_rate, ..NexmarkConfig::default() };

        // A partition ends when its next event would have number `event_num` or more.
        let bounds = match event_num {
            None => vec![None; partitions],
            Some(n) => {
                let rows = table_rows_before(&config, table, n);
                let p_count = partitions as u64;
                (0..p_count).map(|p| Some(if rows > p { (rows - p - 1) / p_count + 1 } else { 0 })).collect()
            }
        };
        let partitions = Partitions::new(bounds);
        let generators = (0..partitions.count()).map(|p| generator_at(&config, table, &partitions, p)).collect();
        Ok(NexmarkSource {
            schema,
            table,
            columns,
            config,
            max_chunk,
            partitions,
            generators,
            rate: RateLimit::new(rows_per_second),
        })
    }

    /// The next `rows` rows of a partition, advancing its generator.
    fn generate(&mut self, partition: usize, rows: usize) -> Result<RecordBatch, ConnectorError> {
        let mut builders: Vec<Builder> = self.columns.iter().map(|&c| Builder::new(c, rows)).collect();
        let mut produced = 0;
        for event in self.generators[partition].by_ref().take(rows) {
            for (builder, (&column, field)) in builders.iter_mut().zip(self.columns.iter().zip(self.schema.fields())) {
                if !value(column, &event).is_some_and(|v| builder.push(v)) {
                    return Err(invalid(
                        "nexmark.table.type",
                        format!("column \"{}\" is not in the {} table", field.name(), self.table.name()),
                    ));
                }
            }
            produced += 1;
        }
        let arrays = builders
            .into_iter()
            .zip(self.schema.fields())
            .map(|(builder, field)| builder.finish(field.data_type()))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(produced));
        Ok(RecordBatch::try_new_with_options(self.schema.clone(), arrays, &options)?)
    }
}

/// A generator of a partition's rows, at its current offset: partition p of P reads the table's
/// events p, p+P, ...
fn generator_at(config: &NexmarkConfig, table: NexmarkTable, partitions: &Partitions, p: usize) -> EventGenerator {
    let step = partitions.count() as u64;
    EventGenerator::new(config.clone())
        .with_type_filter(table.event_type())
        .with_offset(p as u64 + partitions.offset(p) * step)
        .with_step(step)
}

/// How many events of `table` come before event number `event_num` of the whole stream: the
/// first table offset whose event number (the crate's `global_offset`) reaches it.
fn table_rows_before(config: &NexmarkConfig, table: NexmarkTable, event_num: u64) -> u64 {
    let probe = EventGenerator::new(config.clone()).with_type_filter(table.event_type());
    let global = |offset: u64| probe.clone().with_offset(offset).global_offset();
    // A table's k-th event is at least the k-th of the stream: the answer is in 0..=event_num.
    let (mut lo, mut hi) = (0, event_num);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if global(mid) >= event_num { hi = mid } else { lo = mid + 1 }
    }
    lo
}

#[async_trait]
impl Source for NexmarkSource {
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
        let batch = match self.generate(partition, rows) {
            Ok(batch) => batch,
            Err(e) => {
                // The generator moved on; put it back where the partition is.
                self.generators[partition] = generator_at(&self.config, self.table, &self.partitions, partition);
                return Err(e);
            }
        };
        self.rate.record(rows);
        self.partitions.advance(partition, rows as u64);
        Ok(SourceEvent::Batch { partition, rows: batch })
    }

    fn positions(&self) -> Vec<SourcePosition> {
        self.partitions.positions()
    }

    async fn seek(&mut self, positions: &[SourcePosition]) -> Result<(), ConnectorError> {
        for p in self.partitions.seek(positions)? {
            self.generators[p] = generator_at(&self.config, self.table, &self.partitions, p);
        }
        Ok(())
    }

    /// The same rows from the start, read as fast as the caller reads (a backfill catching up
    /// with the shared reader is not held to the rate limit).
    fn replay_from_start(&self) -> Option<Box<dyn Source>> {
        let partitions = self.partitions.restarted();
        let generators =
            (0..partitions.count()).map(|p| generator_at(&self.config, self.table, &partitions, p)).collect();
        Some(Box::new(NexmarkSource { partitions, generators, rate: RateLimit::new(0.0), ..self.clone() }))
    }

    fn stop_at(&mut self, positions: &[SourcePosition]) {
        self.partitions.stop_at(positions);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Date32Type, Int32Type, Int64Type, TimestampMicrosecondType};
    use nexmark::event::Bid;

    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> SourceOptions {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn source(pairs: &[(&str, &str)]) -> NexmarkSource {
        let o = opts(pairs);
        let table: NexmarkTable = o["nexmark.table.type"].parse().unwrap();
        NexmarkSource::new(nexmark_default_schema(table), &o, 0).unwrap()
    }

    /// Every batch until `End` (which then repeats), with its partition.
    async fn drain(s: &mut dyn Source) -> Vec<(usize, RecordBatch)> {
        let mut out = Vec::new();
        let mut ended = vec![false; s.partitions()];
        loop {
            match s.next().await.unwrap() {
                SourceEvent::Batch { partition, rows } => {
                    assert!(!ended[partition]);
                    out.push((partition, rows));
                }
                SourceEvent::PartitionEnd { partition } => {
                    assert!(!ended[partition], "partition {partition} ended twice");
                    ended[partition] = true;
                }
                SourceEvent::End => break,
                SourceEvent::BadRecord { reason, .. } => panic!("a generator reported a bad record: {reason}"),
            }
        }
        assert!(ended.iter().all(|e| *e));
        assert!(matches!(s.next().await.unwrap(), SourceEvent::End));
        out
    }

    fn rows(batches: &[(usize, RecordBatch)]) -> usize {
        batches.iter().map(|(_, b)| b.num_rows()).sum()
    }

    fn column_i64(batches: &[(usize, RecordBatch)], name: &str) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|(_, b)| b.column_by_name(name).unwrap().as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    fn error(schema: SchemaRef, pairs: &[(&str, &str)]) -> (String, String) {
        match NexmarkSource::new(schema, &opts(pairs), 0) {
            Err(ConnectorError::InvalidOption { option, reason }) => (option, reason),
            other => panic!("expected an invalid option, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn bids_are_the_crates_bids_among_the_first_event_num_events() {
        let base = [("nexmark.table.type", "Bid"), ("nexmark.event.num", "10000"), ("nexmark.base.time", "1000")];
        let config = NexmarkConfig { base_time: 1000, ..NexmarkConfig::default() };
        let expected: Vec<Bid> = EventGenerator::new(config)
            .take(10_000)
            .filter_map(|e| if let Event::Bid(b) = e { Some(b) } else { None })
            .collect();
        assert_eq!(expected.len(), 9200);

        let got = drain(&mut source(&base)).await;
        assert_eq!(rows(&got), expected.len());
        assert_eq!(column_i64(&got, "price"), expected.iter().map(|b| b.price as i64).collect::<Vec<_>>());
        assert_eq!(column_i64(&got, "auction"), expected.iter().map(|b| b.auction as i64).collect::<Vec<_>>());
        let times: Vec<i64> = got
            .iter()
            .flat_map(|(_, b)| {
                b.column_by_name("date_time").unwrap().as_primitive::<TimestampMicrosecondType>().values().to_vec()
            })
            .collect();
        assert_eq!(times, expected.iter().map(|b| b.date_time as i64 * 1000).collect::<Vec<_>>());
        let urls: Vec<String> = got
            .iter()
            .flat_map(|(_, b)| {
                b.column_by_name("url")
                    .unwrap()
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(urls, expected.iter().map(|b| b.url.clone()).collect::<Vec<_>>());

        // Split in three, partition p has the bids p, p+3, ...
        let split = drain(&mut source(&[
            base[0],
            base[1],
            base[2],
            ("nexmark.split.num", "3"),
            ("nexmark.max.chunk.size", "500"),
        ]))
        .await;
        assert_eq!(rows(&split), expected.len());
        for p in 0..3 {
            let mine: Vec<(usize, RecordBatch)> = split.iter().filter(|(q, _)| *q == p).cloned().collect();
            let want: Vec<i64> = expected.iter().skip(p).step_by(3).map(|b| b.bidder as i64).collect();
            assert_eq!(column_i64(&mine, "bidder"), want, "partition {p}");
        }
    }

    #[tokio::test]
    async fn event_num_is_shared_by_the_three_tables_in_the_1_3_46_mix() {
        let mut counts = Vec::new();
        for table in ["Person", "Auction", "Bid"] {
            let one = rows(&drain(&mut source(&[("nexmark.table.type", table), ("nexmark.event.num", "5000")])).await);
            let split = [("nexmark.table.type", table), ("nexmark.event.num", "5000"), ("nexmark.split.num", "7")];
            assert_eq!(rows(&drain(&mut source(&split)).await), one, "{table}");
            counts.push(one);
        }
        assert_eq!(counts, [100, 300, 4600]);
        // Ids follow on across batches and partitions.
        let mut ids = column_i64(
            &drain(&mut source(&[
                ("nexmark.table.type", "person"),
                ("nexmark.event.num", "5000"),
                ("nexmark.split.num", "2"),
            ]))
            .await,
            "id",
        );
        ids.sort();
        assert_eq!(ids, (1000..1100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn replays_and_other_instances_give_the_same_batches() {
        let pairs = [
            ("nexmark.table.type", "Auction"),
            ("nexmark.event.num", "20000"),
            ("nexmark.split.num", "3"),
            ("nexmark.max.chunk.size", "64"),
        ];
        let mut a = source(&pairs);
        let first = drain(&mut a).await;
        assert_eq!(first, drain(&mut source(&pairs)).await);
        assert_eq!(first, drain(a.replay_from_start().unwrap().as_mut()).await);
        // Round-robin: partitions take turns while none has ended.
        assert_eq!(first.iter().take(6).map(|(p, _)| *p).collect::<Vec<_>>(), [0, 1, 2, 0, 1, 2]);
    }

    #[tokio::test]
    async fn seek_resumes_and_stop_at_ends_a_replay() {
        let pairs = [("nexmark.table.type", "Bid"), ("nexmark.split.num", "2"), ("nexmark.max.chunk.size", "100")];
        let mut s = source(&pairs);
        let mut read = Vec::new();
        for _ in 0..3 {
            let SourceEvent::Batch { partition, rows } = s.next().await.unwrap() else { panic!("unbounded") };
            read.push((partition, rows));
        }
        let positions = s.positions();
        assert_eq!(positions.iter().map(|p| p.offset).collect::<Vec<_>>(), [200, 100]);
        let mut replay = s.replay_from_start().unwrap();
        replay.stop_at(&positions);
        assert_eq!(drain(replay.as_mut()).await, read);

        let mut resumed = source(&pairs);
        resumed.seek(&positions[1..]).await.unwrap();
        let SourceEvent::Batch { partition: 0, rows: from_start } = resumed.next().await.unwrap() else { panic!() };
        assert_eq!(from_start, read[0].1);
        let SourceEvent::Batch { partition: 1, rows: sought } = resumed.next().await.unwrap() else { panic!() };
        let SourceEvent::Batch { partition: 1, rows: expected } = s.next().await.unwrap() else { panic!() };
        assert_eq!(sought, expected);
    }

    #[tokio::test]
    async fn declared_columns_are_matched_by_name_and_typed_as_declared() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("PRICE", DataType::Int32, true),
            Field::new("date_time", DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())), true),
            Field::new("channel", DataType::Utf8View, true),
            Field::new("bidder", DataType::Decimal128(20, 0), true),
        ]));
        let o = opts(&[
            ("nexmark.table.type", "bid"),
            ("nexmark.event.num", "100"),
            ("nexmark.base.time", "2026-01-01 00:00:00"),
        ]);
        let batches = drain(&mut NexmarkSource::new(schema.clone(), &o, 0).unwrap()).await;
        let b = &batches[0].1;
        assert_eq!(b.schema(), schema);
        assert!(b.columns().iter().all(|c| c.null_count() == 0));
        assert!(b.column(0).as_primitive::<Int32Type>().values().iter().all(|p| *p > 0));
        assert_eq!(b.column(1).as_primitive::<TimestampMicrosecondType>().value(0), 1_767_225_600_000_000);

        // Event time: the first event at base.time, then first.event.rate events a second.
        let schema = Arc::new(Schema::new(vec![Field::new("date_time", DataType::Date32, true)]));
        let o =
            opts(&[("nexmark.table.type", "person"), ("nexmark.base.time", "86400000"), ("nexmark.event.num", "1")]);
        let batches = drain(&mut NexmarkSource::new(schema, &o, 0).unwrap()).await;
        assert_eq!(batches[0].1.column(0).as_primitive::<Date32Type>().values().to_vec(), [1]);
        let o = [
            ("nexmark.table.type", "person"),
            ("nexmark.base.time", "0"),
            ("nexmark.first.event.rate", "100"),
            ("nexmark.event.num", "101"),
        ];
        let batches = drain(&mut source(&o)).await;
        let times = batches[0]
            .1
            .column_by_name("date_time")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>()
            .values()
            .to_vec();
        // People are events 0, 50, 100: 10 ms apart at 100 events/s.
        assert_eq!(times, [0, 500_000, 1_000_000]);
        // The default base time is the source's creation.
        let o = opts(&[("nexmark.table.type", "person"), ("nexmark.event.num", "1")]);
        let batches =
            drain(&mut NexmarkSource::new(nexmark_default_schema(NexmarkTable::Person), &o, 7_000_000).unwrap()).await;
        let first =
            batches[0].1.column_by_name("date_time").unwrap().as_primitive::<TimestampMicrosecondType>().value(0);
        assert_eq!(first, 7_000_000);
    }

    #[test]
    fn bad_options_and_columns_are_reported() {
        let bid = nexmark_default_schema(NexmarkTable::Bid);
        let (option, reason) = error(bid.clone(), &[]);
        assert_eq!(option, "nexmark.table.type");
        assert!(reason.contains("required"), "{reason}");
        assert_eq!(error(bid.clone(), &[("nexmark.table.type", "Bids")]).0, "nexmark.table.type");
        let (option, reason) = error(bid.clone(), &[("nexmark.table.type", "Person")]);
        assert_eq!(option, "nexmark.table.type");
        assert!(reason.contains("\"auction\""), "{reason}");
        let wrong_type = Arc::new(Schema::new(vec![Field::new("channel", DataType::Int64, true)]));
        let (_, reason) = error(wrong_type, &[("nexmark.table.type", "bid")]);
        assert!(reason.contains("cannot be declared as Int64"), "{reason}");
        for (key, value) in [
            ("nexmark.split.num", "0"),
            ("nexmark.event.num", "-5"),
            ("nexmark.event.num", "99999999999999999999"),
            ("nexmark.max.chunk.size", "0"),
            ("nexmark.rows.per.second", "fast"),
            ("nexmark.base.time", "noon"),
            ("nexmark.base.time", "-5"),
            ("nexmark.first.event.rate", "0"),
            ("nexmark.min.event.gap.in.ns", "1"),
            ("datagen.rows.per.second", "1"),
        ] {
            assert_eq!(error(bid.clone(), &[("nexmark.table.type", "bid"), (key, value)]).0, key);
        }
        let engine = opts(&[("nexmark.table.type", "bid"), ("connector", "nexmark"), ("watermark.idle_timeout", "1s")]);
        assert!(NexmarkSource::new(bid, &engine, 0).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn rows_per_second_limits_the_tables_rows() {
        let mut s =
            source(&[("nexmark.table.type", "Bid"), ("nexmark.rows.per.second", "1000"), ("nexmark.split.num", "2")]);
        let start = tokio::time::Instant::now();
        let mut per_second = [0usize; 3];
        loop {
            let SourceEvent::Batch { rows, .. } = s.next().await.unwrap() else { panic!("unbounded") };
            let second = start.elapsed().as_secs() as usize;
            if second >= per_second.len() {
                break;
            }
            per_second[second] += rows.num_rows();
        }
        assert!(per_second.iter().all(|n| (950..=1050).contains(n)), "{per_second:?}");
    }

    /// `cargo test -p weir-connectors --release -- --ignored --nocapture nexmark_throughput`
    #[tokio::test]
    #[ignore = "a benchmark, meaningful in release builds"]
    async fn nexmark_throughput() {
        for table in ["Bid", "Auction", "Person"] {
            let mut s = source(&[("nexmark.table.type", table), ("nexmark.event.num", "10000000")]);
            let start = std::time::Instant::now();
            let mut n = 0;
            loop {
                match s.next().await.unwrap() {
                    SourceEvent::Batch { rows, .. } => n += rows.num_rows(),
                    SourceEvent::PartitionEnd { .. } | SourceEvent::BadRecord { .. } => {}
                    SourceEvent::End => break,
                }
            }
            let secs = start.elapsed().as_secs_f64();
            println!("{table}: {n} rows in {secs:.2} s, {:.0} rows/s", n as f64 / secs);
        }
        for (table, n) in [(EventType::Bid, 9_200_000), (EventType::Auction, 600_000), (EventType::Person, 200_000)] {
            let start = std::time::Instant::now();
            let n = EventGenerator::new(NexmarkConfig { base_time: 0, ..NexmarkConfig::default() })
                .with_type_filter(table)
                .take(n)
                .count();
            let secs = start.elapsed().as_secs_f64();
            println!("the crate alone: {n} {table:?} events in {secs:.2} s, {:.0} rows/s", n as f64 / secs);
        }
    }
}
