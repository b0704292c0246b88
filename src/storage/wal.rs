//! The write-ahead log of committed table changes.
//!
//! One file, `wal/tables.wal`, of frames `[len: u32 LE][crc32: u32 LE][payload]`. A payload is one
//! committed transaction: a JSON header listing its changes (`table`, `diff`, byte length) and,
//! after it, each change's rows as an Arrow IPC stream. A commit is acknowledged only after its
//! frame is written and `fdatasync`ed, so an acknowledged row survives `kill -9` and power loss.
//!
//! On open the log is replayed frame by frame; the first frame that is truncated or fails its
//! checksum marks the end of the log (a crash in the middle of a write) and the file is cut
//! there, so the next commit appends after the last good frame.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::error::{Result, SqlState, WeirError};
use weir_catalog::ObjectId;

/// One table change: rows inserted (`diff` = +1) or deleted (`diff` = -1).
#[derive(Debug, Clone)]
pub struct TableChange {
    pub table: ObjectId,
    pub diff: i64,
    pub rows: RecordBatch,
}

#[derive(Serialize, Deserialize)]
struct FrameHeader {
    changes: Vec<ChangeHeader>,
}

#[derive(Serialize, Deserialize)]
struct ChangeHeader {
    table: ObjectId,
    diff: i64,
    bytes: usize,
}

/// Frames larger than this are treated as corruption rather than allocated.
const MAX_FRAME: usize = 1 << 31;

pub struct Wal {
    file: File,
    path: PathBuf,
    /// Bytes in the log after replay plus appends; metrics and future compaction read it.
    len: u64,
}

impl Wal {
    /// Opens (creating) the log in `dir` and returns it with every committed transaction in
    /// commit order.
    pub fn open(dir: &Path) -> Result<(Wal, Vec<Vec<TableChange>>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("tables.wal");
        let mut file = OpenOptions::new().create(true).read(true).write(true).truncate(false).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut transactions = Vec::new();
        let mut good = 0usize;
        while let Some((payload, next)) = next_frame(&bytes, good) {
            match decode_payload(payload) {
                Ok(changes) => transactions.push(changes),
                Err(e) => {
                    tracing::error!(offset = good, error = %e, "undecodable WAL frame; the log ends here");
                    break;
                }
            }
            good = next;
        }
        if good < bytes.len() {
            tracing::warn!(
                valid_bytes = good,
                dropped_bytes = bytes.len() - good,
                "WAL ends with an incomplete frame (a crash during a commit that was never acknowledged); truncating it"
            );
            file.set_len(good as u64)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(good as u64))?;
        File::open(dir)?.sync_all()?;
        Ok((Wal { file, path, len: good as u64 }, transactions))
    }

    /// Appends one committed transaction and syncs it to disk.
    pub fn append(&mut self, changes: &[TableChange]) -> Result<()> {
        let payload = encode_payload(changes)?;
        let mut frame = Vec::with_capacity(payload.len() + 8);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        frame.extend_from_slice(&payload);
        if let Err(e) = self.file.write_all(&frame).and_then(|_| self.file.sync_data()) {
            // Cut a partial frame so that later commits do not land behind garbage.
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(WeirError::new(SqlState::Io, format!("could not write to the WAL {}: {e}", self.path.display())));
        }
        self.len += frame.len() as u64;
        Ok(())
    }

    pub fn len_bytes(&self) -> u64 {
        self.len
    }
}

/// The payload of the frame at `at` and the offset after it, if the frame is whole and valid.
fn next_frame(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let payload = bytes.get(at + 8..at + 8 + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, at + 8 + len))
}

fn encode_payload(changes: &[TableChange]) -> Result<Vec<u8>> {
    let mut blobs = Vec::with_capacity(changes.len());
    for c in changes {
        let mut buf = Vec::new();
        {
            let mut w = StreamWriter::try_new(&mut buf, c.rows.schema_ref())?;
            w.write(&c.rows)?;
            w.finish()?;
        }
        blobs.push(buf);
    }
    let header = FrameHeader {
        changes: changes
            .iter()
            .zip(&blobs)
            .map(|(c, b)| ChangeHeader { table: c.table, diff: c.diff, bytes: b.len() })
            .collect(),
    };
    let header = serde_json::to_vec(&header).map_err(WeirError::internal)?;
    let mut out = Vec::with_capacity(4 + header.len() + blobs.iter().map(Vec::len).sum::<usize>());
    out.extend_from_slice(&(header.len() as u32).to_le_bytes());
    out.extend_from_slice(&header);
    for b in blobs {
        out.extend_from_slice(&b);
    }
    Ok(out)
}

fn decode_payload(payload: &[u8]) -> Result<Vec<TableChange>> {
    let corrupt = || WeirError::internal("corrupt WAL payload");
    let header_len = u32::from_le_bytes(payload.get(0..4).ok_or_else(corrupt)?.try_into().map_err(|_| corrupt())?) as usize;
    let header: FrameHeader = serde_json::from_slice(payload.get(4..4 + header_len).ok_or_else(corrupt)?)
        .map_err(|e| WeirError::internal(format!("corrupt WAL header: {e}")))?;
    let mut at = 4 + header_len;
    let mut changes = Vec::with_capacity(header.changes.len());
    for c in header.changes {
        let blob = payload.get(at..at + c.bytes).ok_or_else(corrupt)?;
        at += c.bytes;
        let reader = StreamReader::try_new(blob, None)?;
        for batch in reader {
            changes.push(TableChange { table: c.table, diff: c.diff, rows: batch? });
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn batch(ids: &[i32]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let names: Vec<Option<String>> = ids.iter().map(|i| Some(format!("n{i}"))).collect();
        RecordBatch::try_new(
            schema,
            vec![Arc::new(Int32Array::from(ids.to_vec())), Arc::new(StringArray::from(names))],
        )
        .unwrap()
    }

    #[test]
    fn replays_commits_and_cuts_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut wal, replayed) = Wal::open(dir.path()).unwrap();
            assert!(replayed.is_empty());
            wal.append(&[TableChange { table: 7, diff: 1, rows: batch(&[1, 2]) }]).unwrap();
            wal.append(&[
                TableChange { table: 7, diff: -1, rows: batch(&[1]) },
                TableChange { table: 8, diff: 1, rows: batch(&[3]) },
            ])
            .unwrap();
        }
        // A crash in the middle of a third commit leaves half a frame.
        let path = dir.path().join("tables.wal");
        let good_len = std::fs::metadata(&path).unwrap().len();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[200, 0, 0, 0, 1, 2, 3]).unwrap();
        drop(f);

        let (mut wal, replayed) = Wal::open(dir.path()).unwrap();
        assert_eq!(replayed.len(), 2);
        assert_eq!(replayed[0][0].rows, batch(&[1, 2]));
        assert_eq!(replayed[1][0].diff, -1);
        assert_eq!(replayed[1][1].table, 8);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), good_len);
        wal.append(&[TableChange { table: 8, diff: 1, rows: batch(&[4]) }]).unwrap();
        drop(wal);
        let (_, replayed) = Wal::open(dir.path()).unwrap();
        assert_eq!(replayed.len(), 3);
    }
}
