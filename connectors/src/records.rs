//! Decoding many records at once without letting one bad record cost the others.
//!
//! Text formats decode fastest a batch at a time, but a batch decoder fails as a whole. So a
//! chunk is decoded in one go, and only when that fails is it decoded again record by record:
//! the good records come out as runs of rows in their original order, each bad one with its
//! reason. Bad records are rare, so the second pass costs nothing in the common case.

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::record_batch::RecordBatch;

/// First bytes of a bad record kept for the user to see (`weir_catalog.source_errors`).
pub const BAD_PAYLOAD_PREFIX: usize = 64;

/// The first [`BAD_PAYLOAD_PREFIX`] bytes of a record.
pub fn payload_prefix(record: &[u8]) -> Vec<u8> {
    record[..record.len().min(BAD_PAYLOAD_PREFIX)].to_vec()
}

/// A piece of a decoded chunk, in record order.
#[derive(Debug)]
pub enum DecodedRecords {
    /// Records `first..first + rows.num_rows()` of the chunk, decoded.
    Rows { first: usize, rows: RecordBatch },
    /// Record `index` of the chunk did not decode.
    Bad { index: usize, reason: String },
}

/// Decodes `records` with `decode`, falling back to one record at a time when the chunk fails.
/// `emit` receives the pieces in record order and returns false to stop early; the result is
/// false when it did.
pub fn decode_lenient(
    records: &[&[u8]],
    decode: impl Fn(&[&[u8]]) -> Result<RecordBatch, String>,
    mut emit: impl FnMut(DecodedRecords) -> bool,
) -> bool {
    if records.is_empty() {
        return true;
    }
    if let Ok(rows) = decode(records) {
        return emit(DecodedRecords::Rows { first: 0, rows });
    }
    // Consecutive good records go out together.
    let mut run: Vec<RecordBatch> = Vec::new();
    let mut run_start = 0;
    let flush = |run: &mut Vec<RecordBatch>, first: usize, emit: &mut dyn FnMut(DecodedRecords) -> bool| -> bool {
        if run.is_empty() {
            return true;
        }
        let rows = match concat_batches(&run[0].schema(), run.iter()) {
            Ok(rows) => rows,
            // Same schema every time, so this does not happen; emit them one by one if it does.
            Err(_) => {
                let mut ok = true;
                for (i, rows) in run.drain(..).enumerate() {
                    ok = ok && emit(DecodedRecords::Rows { first: first + i, rows });
                }
                return ok;
            }
        };
        run.clear();
        emit(DecodedRecords::Rows { first, rows })
    };
    for (index, record) in records.iter().enumerate() {
        match decode(std::slice::from_ref(record)) {
            Ok(rows) => {
                if run.is_empty() {
                    run_start = index;
                }
                run.push(rows);
            }
            Err(reason) => {
                if !flush(&mut run, run_start, &mut emit) || !emit(DecodedRecords::Bad { index, reason }) {
                    return false;
                }
            }
        }
    }
    flush(&mut run, run_start, &mut emit)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn decode(records: &[&[u8]]) -> Result<RecordBatch, String> {
        let values: Vec<i64> = records
            .iter()
            .map(|r| std::str::from_utf8(r).ok().and_then(|s| s.parse().ok()).ok_or_else(|| "not a number".to_string()))
            .collect::<Result<_, _>>()?;
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(values))]).map_err(|e| e.to_string())
    }

    #[test]
    fn good_runs_and_bad_records_come_out_in_order() {
        let records: Vec<&[u8]> = vec![b"1", b"2", b"x", b"4", b"y", b"z", b"7"];
        let mut out = Vec::new();
        assert!(decode_lenient(&records, decode, |d| {
            out.push(match d {
                DecodedRecords::Rows { first, rows } => {
                    format!("{first}:{:?}", rows.column(0).as_primitive::<Int64Type>().values().to_vec())
                }
                DecodedRecords::Bad { index, .. } => format!("bad {index}"),
            });
            true
        }));
        assert_eq!(out, ["0:[1, 2]", "bad 2", "3:[4]", "bad 4", "bad 5", "6:[7]"]);
        let mut seen = 0;
        assert!(!decode_lenient(&records, decode, |_| {
            seen += 1;
            seen < 2
        }));
        assert_eq!(seen, 2);
    }
}
