//! Checkpoints: consistent snapshots of the dataflow taken at barriers, and recovery from the
//! newest one (`docs/checkpoints.md`).
//!
//! * [`store`] - where checkpoints live (`object_store`: a directory, `memory://`, `s3://`):
//!   parts, a manifest written last, the newest intact checkpoint, garbage collection.
//! * [`ipc`] - parts as Arrow IPC files.
//! * [`snapshot`] - what readers and view jobs hand in at a checkpoint barrier.
//! * [`collector`] - gathers those at each checkpoint epoch and writes the checkpoint.
//! * [`recovery`] - loads the newest intact checkpoint at start.

pub mod collector;
pub mod ipc;
pub mod recovery;
pub mod snapshot;
pub mod store;

pub use store::{CheckpointStore, CheckpointWriter, Manifest, PartRef};
