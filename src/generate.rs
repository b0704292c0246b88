//! `weir generate-nexmark`: Nexmark bids written to Parquet and CSV files, so that Weir (through
//! a `connector = 'file'` source) and other engines read the very same events.
//!
//! The bids are the built-in `nexmark` source's, from one generator (so in event-time order,
//! with the generator's small disorder), with a fixed base time: the same command writes the
//! same files on every machine. Rows are split evenly over the files, in order, named
//! `bids-00000.parquet`, ... so that name order is event-time order.

use std::path::{Path, PathBuf};

use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use weir_connectors::{NexmarkTable, SourceEvent, SourceOptions, nexmark_default_schema};

use crate::error::{Result, WeirError};

/// What to write.
#[derive(Debug, Clone)]
pub struct BidFiles {
    pub dir: PathBuf,
    /// Nexmark events to generate; about 92% of them are bids.
    pub events: u64,
    pub files: usize,
    /// Event time of the first event (`'2026-01-01 00:00:00'` or epoch milliseconds).
    pub base_time: String,
    pub parquet: bool,
    pub csv: bool,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct Written {
    pub bids: u64,
    pub parquet_files: Vec<PathBuf>,
    pub csv_files: Vec<PathBuf>,
}

/// One output file per format, open while its share of the bids is written.
struct Outputs {
    parquet: Option<ArrowWriter<std::fs::File>>,
    csv: Option<datafusion::arrow::csv::Writer<std::io::BufWriter<std::fs::File>>>,
}

fn io_error(path: &Path, e: impl std::fmt::Display) -> WeirError {
    WeirError::internal(format!("cannot write {}: {e}", path.display()))
}

impl BidFiles {
    /// How many bids `events` Nexmark events hold (the 1:3:46 person:auction:bid mix).
    fn bid_count(&self) -> u64 {
        let full = self.events / 50 * 46;
        let rest = self.events % 50;
        full + rest.saturating_sub(4)
    }

    /// `DIR/<format>/bids-<index>.<format>`, created (with its directory).
    fn create(&self, format: &str, index: usize) -> Result<(PathBuf, std::fs::File)> {
        let dir = self.dir.join(format);
        std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
        let path = dir.join(format!("bids-{index:05}.{format}"));
        let file = std::fs::File::create(&path).map_err(|e| io_error(&path, e))?;
        Ok((path, file))
    }

    fn open(&self, index: usize, written: &mut Written) -> Result<Outputs> {
        let schema = nexmark_default_schema(NexmarkTable::Bid);
        let parquet = if self.parquet {
            let (path, file) = self.create("parquet", index)?;
            let props = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
            written.parquet_files.push(path.clone());
            Some(ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(|e| io_error(&path, e))?)
        } else {
            None
        };
        let csv = if self.csv {
            let (path, file) = self.create("csv", index)?;
            written.csv_files.push(path);
            // No header, millisecond timestamps: what Flink's CSV format reads.
            Some(
                WriterBuilder::new()
                    .with_header(false)
                    .with_timestamp_format("%Y-%m-%d %H:%M:%S%.3f".to_string())
                    .build(std::io::BufWriter::new(file)),
            )
        } else {
            None
        };
        Ok(Outputs { parquet, csv })
    }

    /// Generates the bids and writes the files.
    pub async fn write(&self) -> Result<Written> {
        let options: SourceOptions = [
            ("nexmark.table.type", "bid"),
            ("nexmark.event.num", &self.events.to_string()),
            ("nexmark.base.time", &self.base_time),
            ("nexmark.max.chunk.size", "65536"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let schema = nexmark_default_schema(NexmarkTable::Bid);
        let mut source = weir_connectors::create_source(weir_connectors::SourceSpec {
            name: "generate",
            connector: "nexmark",
            schema,
            options: &options,
            format: None,
            metadata: &[],
            created_at_micros: 0,
        })
        .await?;
        let files = self.files.max(1) as u64;
        let per_file = self.bid_count().div_ceil(files).max(1);
        let mut written = Written::default();
        let mut outputs = self.open(0, &mut written)?;
        let mut in_file = 0u64;
        let mut index = 0;
        loop {
            let rows = match source.next().await? {
                SourceEvent::Batch { rows, .. } => rows,
                SourceEvent::End => break,
                _ => continue,
            };
            let mut offset = 0;
            while offset < rows.num_rows() {
                if in_file == per_file {
                    close(outputs)?;
                    index += 1;
                    outputs = self.open(index, &mut written)?;
                    in_file = 0;
                }
                let take = ((per_file - in_file) as usize).min(rows.num_rows() - offset);
                write_batch(&mut outputs, &rows.slice(offset, take))?;
                offset += take;
                in_file += take as u64;
                written.bids += take as u64;
            }
        }
        close(outputs)?;
        Ok(written)
    }
}

fn write_batch(outputs: &mut Outputs, batch: &RecordBatch) -> Result<()> {
    if let Some(w) = &mut outputs.parquet {
        w.write(batch).map_err(|e| WeirError::internal(format!("cannot write Parquet: {e}")))?;
    }
    if let Some(w) = &mut outputs.csv {
        w.write(batch).map_err(|e| WeirError::internal(format!("cannot write CSV: {e}")))?;
    }
    Ok(())
}

fn close(outputs: Outputs) -> Result<()> {
    if let Some(w) = outputs.parquet {
        w.close().map_err(|e| WeirError::internal(format!("cannot finish Parquet: {e}")))?;
    }
    if let Some(w) = outputs.csv {
        use std::io::Write;
        w.into_inner().flush().map_err(|e| WeirError::internal(format!("cannot finish CSV: {e}")))?;
    }
    Ok(())
}
