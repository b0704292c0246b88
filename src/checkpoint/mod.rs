//! Checkpoints: consistent snapshots of the dataflow taken at barriers, and recovery from the
//! newest one (`docs/checkpoints.md`).
//!
//! * [`store`] - where checkpoints live (`object_store`: a directory, `memory://`, `s3://`):
//!   parts, a manifest written last, the newest intact checkpoint, garbage collection.
//! * [`ipc`] - parts as Arrow IPC files.

pub mod ipc;
pub mod store;

pub use store::{CheckpointStore, CheckpointWriter, Manifest, PartRef};
