//! Durable table storage: committed table versions in memory, changes in a write-ahead log.
//!
//! * [`wal`]: the log file: framed, checksummed, fsynced commits of Arrow batches.
//! * [`table`]: [`TableData`], the rows of one table (a multiset, optionally keyed).
//!
//! [`Storage`] is what the rest of the server sees, through the [`ChangeStore`] trait: every
//! write is a list of [`TableChange`]s (rows with a diff of +1 or -1, the same shape the
//! streaming engine's operators exchange) committed atomically. A commit is validated and
//! applied under the storage lock, written to the log and synced, and only then released; if
//! the log write fails the in-memory changes are undone, so readers never see a change that is
//! not durable. Readers take [`Storage::snapshot`]: `Arc`s of the committed table versions,
//! copied on write, so a query never blocks a writer for longer than one commit and always
//! sees one committed state of every table.

pub mod table;
pub mod wal;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::row::OwnedRow;
use weir_catalog::ObjectId;

pub use table::TableData;
pub use wal::TableChange;
use wal::Wal;

use crate::error::{Result, WeirError};

/// Committed versions of every table, by catalog id.
pub type Snapshot = HashMap<ObjectId, Arc<TableData>>;

/// The seam that later state (materialized view state, checkpoints) plugs into: a store of
/// keyed collections that accepts atomic batches of signed changes and hands out consistent
/// snapshots.
pub trait ChangeStore: Send + Sync {
    fn snapshot(&self) -> Snapshot;
    fn commit(&self, changes: Vec<TableChange>) -> Result<()>;
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage").finish_non_exhaustive()
    }
}

/// Told about every durable commit while the storage lock is held, so that it sees commits in
/// their order (the coordinator streams table changes to views).
pub trait CommitListener: Send + Sync {
    /// Commit number `seq` (its frame's position in the log, from 1) was applied; called under
    /// the storage lock, so calls come in commit order.
    fn committed(&self, seq: u64, changes: &[TableChange]);
}

pub struct Storage {
    tables: RwLock<Snapshot>,
    wal: Mutex<Wal>,
    listener: RwLock<Option<Arc<dyn CommitListener>>>,
    /// Commits in the log so far (the sequence number of the newest).
    seq: std::sync::atomic::AtomicU64,
    /// The commits after a checkpoint's table positions, kept from the log's replay until the
    /// views restored from that checkpoint took them ([`Storage::commits_after`]).
    tail: Mutex<Vec<(u64, Vec<TableChange>)>>,
}

/// What one applied change did, so that a failed commit can be rolled back.
enum Applied {
    Inserted(ObjectId, Vec<u64>),
    Deleted(ObjectId, Vec<OwnedRow>),
}

impl Storage {
    /// Opens the storage in `dir` for the given (empty) tables and replays the log into them.
    /// Log records of tables that no longer exist (dropped) are skipped. The commits after
    /// `keep_after` (a checkpoint's oldest table position) are kept for the views that resume
    /// from that checkpoint.
    pub fn open(dir: &Path, tables: Vec<(ObjectId, TableData)>, keep_after: Option<u64>) -> Result<Self> {
        let (wal, transactions) = Wal::open(&dir.join("wal"))?;
        let seq = transactions.len() as u64;
        let tail: Vec<(u64, Vec<TableChange>)> = match keep_after {
            Some(after) => transactions.iter().enumerate().skip(after as usize).map(|(i, c)| (i as u64 + 1, c.clone())).collect(),
            None => Vec::new(),
        };
        let mut map: Snapshot = tables.into_iter().map(|(id, t)| (id, Arc::new(t))).collect();
        let mut replayed = 0usize;
        for changes in &transactions {
            for c in changes {
                let Some(t) = map.get_mut(&c.table) else { continue };
                let t = Arc::make_mut(t);
                // Replay cannot fail on constraints: the log only holds validated commits.
                let r = if c.diff > 0 { t.insert(&c.rows).map(|_| ()) } else { t.delete(&c.rows).map(|_| ()) };
                if let Err(e) = r {
                    return Err(WeirError::internal(format!("WAL replay failed for table {}: {e}", c.table)));
                }
            }
            replayed += 1;
        }
        tracing::info!(transactions = replayed, wal_bytes = wal.len_bytes(), "table storage recovered");
        Ok(Storage {
            tables: RwLock::new(map),
            wal: Mutex::new(wal),
            listener: RwLock::new(None),
            seq: std::sync::atomic::AtomicU64::new(seq),
            tail: Mutex::new(tail),
        })
    }

    /// The changes to `table` committed after commit `after`, from the log's replay at start.
    pub fn commits_after(&self, table: ObjectId, after: u64) -> Vec<TableChange> {
        let tail = self.tail.lock().unwrap_or_else(|p| p.into_inner());
        tail.iter().filter(|(seq, _)| *seq > after).flat_map(|(_, changes)| changes.iter().filter(|c| c.table == table).cloned()).collect()
    }

    /// The sequence number of the newest commit.
    pub fn seq(&self) -> u64 {
        self.seq.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every restored view took what it needed from the log's tail.
    pub fn release_tail(&self) {
        self.tail.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    pub fn create_table(&self, id: ObjectId, data: TableData) {
        self.write_tables().insert(id, Arc::new(data));
    }

    pub fn drop_table(&self, id: ObjectId) {
        self.write_tables().remove(&id);
    }

    pub fn table(&self, id: ObjectId) -> Option<Arc<TableData>> {
        self.read_tables().get(&id).cloned()
    }

    pub fn set_listener(&self, listener: Arc<dyn CommitListener>) {
        *self.listener.write().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    /// Runs `f` on a table's committed version while no commit can happen.
    pub fn with_table<R>(&self, id: ObjectId, f: impl FnOnce(Option<&Arc<TableData>>) -> R) -> R {
        let tables = self.read_tables();
        f(tables.get(&id))
    }

    pub fn wal_bytes(&self) -> u64 {
        self.wal.lock().map(|w| w.len_bytes()).unwrap_or(0)
    }

    fn read_tables(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        // A panic while holding the lock cannot leave a half-applied commit visible: commits
        // undo themselves on error, and a panic mid-commit aborts that thread's work only.
        self.tables.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_tables(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        self.tables.write().unwrap_or_else(|p| p.into_inner())
    }

    fn undo(tables: &mut Snapshot, applied: Vec<Applied>) {
        for a in applied.into_iter().rev() {
            match a {
                Applied::Inserted(id, seqs) => {
                    if let Some(t) = tables.get_mut(&id) {
                        Arc::make_mut(t).undo_insert(&seqs);
                    }
                }
                Applied::Deleted(id, rows) => {
                    if let Some(t) = tables.get_mut(&id)
                        && let Err(e) = Arc::make_mut(t).undo_delete(&rows)
                    {
                        tracing::error!(table = id, error = %e, "could not undo a delete");
                    }
                }
            }
        }
    }
}

impl ChangeStore for Storage {
    fn snapshot(&self) -> Snapshot {
        self.read_tables().clone()
    }

    fn commit(&self, changes: Vec<TableChange>) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let mut tables = self.write_tables();
        let mut applied = Vec::with_capacity(changes.len());
        for c in &changes {
            let Some(t) = tables.get_mut(&c.table) else {
                Self::undo(&mut tables, applied);
                return Err(WeirError::new(
                    crate::error::SqlState::UndefinedTable,
                    "a table written by this transaction was dropped concurrently",
                ));
            };
            let t = Arc::make_mut(t);
            let result = if c.diff > 0 {
                t.insert(&c.rows).map(|seqs| Applied::Inserted(c.table, seqs))
            } else {
                t.delete(&c.rows).map(|rows| Applied::Deleted(c.table, rows))
            };
            match result {
                Ok(a) => applied.push(a),
                Err(e) => {
                    Self::undo(&mut tables, applied);
                    return Err(e);
                }
            }
        }
        let logged = self.wal.lock().map_err(|_| WeirError::internal("WAL lock poisoned"))?.append(&changes);
        if let Err(e) = logged {
            Self::undo(&mut tables, applied);
            return Err(e);
        }
        let seq = self.seq.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        if let Some(listener) = self.listener.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            listener.committed(seq, &changes);
        }
        Ok(())
    }
}
