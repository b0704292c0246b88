//! Where checkpoints live: an `object_store` (a local directory, `memory://`, `s3://...`) with
//! one directory per checkpoint epoch, its parts, and a manifest written last.
//!
//! ```text
//! <root>/00000000000000000120/0.arrow        parts (operator state, contents), Arrow IPC files
//! <root>/00000000000000000120/1.arrow
//! <root>/00000000000000000120/MANIFEST.json  written last: the checkpoint exists once it does
//! ```
//!
//! A manifest names every part the checkpoint needs, with size and CRC32, including parts an
//! earlier checkpoint wrote (incremental state: a base and its deltas). [`CheckpointStore::latest`]
//! returns the newest checkpoint whose manifest parses and whose parts are all there and intact,
//! warning about each newer one it skips; [`CheckpointStore::collect_garbage`] keeps the newest
//! [`KEEP`] manifests and what they reference.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path as FsPath;
use std::sync::Arc;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{Result, SqlState, WeirError};

/// The manifest's file name inside a checkpoint's directory.
pub const MANIFEST: &str = "MANIFEST.json";
/// Manifests kept by garbage collection: one broken manifest still leaves two to fall back to.
pub const KEEP: usize = 3;
/// The manifest format this code writes and reads.
const FORMAT: u32 = 1;

/// One file of a checkpoint, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    /// Relative to the store's root (`<epoch>/<n>.arrow`): may be in an earlier checkpoint.
    pub path: String,
    pub bytes: u64,
    pub crc32: u32,
}

/// Everything a checkpoint is, besides its parts' contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Manifest {
    pub format: u32,
    /// The barrier epoch the checkpoint was taken at.
    pub epoch: u64,
    pub created_at_micros: i64,
    /// The catalog version when the checkpoint was taken.
    pub catalog_version: u64,
    /// Per source (object id): per partition the position of the next row after the barrier,
    /// in the connector's own notation (a Kafka offset, a NATS sequence, a generator's row),
    /// and the watermark state.
    pub sources: BTreeMap<u64, super::snapshot::SourceState>,
    /// Per view checkpointed: the watermark its output had reached. Its operators' state and
    /// contents are the parts named `view/<id>/...`.
    pub views: BTreeMap<u64, ViewRecord>,
    /// Per table: the newest WAL commit the views had received at the barrier, and the feed's
    /// watermark state.
    pub tables: BTreeMap<u64, super::snapshot::TableState>,
    /// Per sink: the last epoch delivered.
    pub sinks: BTreeMap<u64, u64>,
    /// Named parts (`view/<id>/op/<n>/base`, ...) and their files.
    pub parts: BTreeMap<String, PartRef>,
}

/// A view in a manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ViewRecord {
    pub watermark: i64,
}

/// A checkpoint store: where, and the root every path is under.
pub struct CheckpointStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// Where, for messages: the URL without credentials (object_store takes those from options
    /// and the environment, never from the URL's user part).
    location: String,
}

impl CheckpointStore {
    /// The store a `--state-store` URL names, or `<data_dir>/checkpoints` without one. S3
    /// settings come from the `AWS_*` variables (`AWS_ENDPOINT`, `AWS_ALLOW_HTTP`, ...).
    pub fn open(url: Option<&str>, data_dir: &FsPath) -> Result<CheckpointStore> {
        let env = std::env::vars().filter(|(k, _)| k.starts_with("AWS_")).map(|(k, v)| (k.to_ascii_lowercase(), v));
        Self::open_with_options(url, data_dir, env.collect())
    }

    /// [`CheckpointStore::open`] with object_store's settings given (`aws_endpoint`,
    /// `aws_access_key_id`, ...).
    pub fn open_with_options(url: Option<&str>, data_dir: &FsPath, options: Vec<(String, String)>) -> Result<CheckpointStore> {
        let Some(url) = url.filter(|u| !u.is_empty()) else {
            let dir = data_dir.join("checkpoints");
            std::fs::create_dir_all(&dir)?;
            return local(&dir);
        };
        let parsed = url::Url::parse(url).map_err(|e| {
            WeirError::new(SqlState::InvalidParameterValue, format!("invalid state store URL: {e}"))
                .with_hint("Use a directory (the default), file:///path, memory:// or s3://bucket/prefix.")
        })?;
        if parsed.scheme() == "file" {
            return local(FsPath::new(parsed.path()));
        }
        let (store, root) = object_store::parse_url_opts(&parsed, options).map_err(store_error)?;
        let mut location = parsed.clone();
        let _ = location.set_password(None);
        let _ = location.set_username("");
        Ok(CheckpointStore { store: Arc::from(store), root, location: location.to_string() })
    }

    /// A store in memory (tests; lost at exit).
    pub fn in_memory() -> CheckpointStore {
        CheckpointStore { store: Arc::new(object_store::memory::InMemory::new()), root: Path::default(), location: "memory://".to_string() }
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    fn path(&self, relative: &str) -> Path {
        relative.split('/').fold(self.root.clone(), |p, part| p.join(part))
    }

    /// Starts writing the checkpoint of `epoch`.
    pub fn begin(&self, epoch: u64, catalog_version: u64) -> CheckpointWriter<'_> {
        let manifest = Manifest {
            format: FORMAT,
            epoch,
            created_at_micros: chrono::Utc::now().timestamp_micros(),
            catalog_version,
            ..Default::default()
        };
        CheckpointWriter { store: self, manifest, next_part: 0 }
    }

    /// The epochs that have a directory, newest first.
    async fn epochs(&self) -> Result<Vec<u64>> {
        let listing = self.store.list_with_delimiter(Some(&self.root)).await.map_err(store_error)?;
        let mut epochs: Vec<u64> =
            listing.common_prefixes.iter().filter_map(|p| p.filename().and_then(|name| name.parse().ok())).collect();
        epochs.sort_unstable_by(|a, b| b.cmp(a));
        Ok(epochs)
    }

    /// The manifest of `epoch`, checked: it parses, and every part it names is there with the
    /// recorded size and CRC32.
    async fn checked_manifest(&self, epoch: u64) -> Result<Manifest> {
        let manifest = self.parsed_manifest(epoch).await?;
        for part in manifest.parts.values() {
            self.read_part(part).await?;
        }
        Ok(manifest)
    }

    /// The manifest of `epoch`, parsed but with its parts unread (garbage collection needs only
    /// what they reference; recovery checks them).
    async fn parsed_manifest(&self, epoch: u64) -> Result<Manifest> {
        let bytes = self.read(&format!("{}/{MANIFEST}", epoch_dir(epoch))).await?;
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| WeirError::new(SqlState::DataCorrupted, format!("the manifest does not parse: {e}")))?;
        if manifest.format != FORMAT || manifest.epoch != epoch {
            return Err(WeirError::new(
                SqlState::DataCorrupted,
                format!("the manifest says format {} epoch {}, expected format {FORMAT} epoch {epoch}", manifest.format, manifest.epoch),
            ));
        }
        Ok(manifest)
    }

    /// The newest complete, intact checkpoint, or `None`. Each newer one that is incomplete
    /// (no manifest: the server stopped while writing it) or damaged is skipped with a warning.
    pub async fn latest(&self) -> Result<Option<Manifest>> {
        for epoch in self.epochs().await? {
            match self.checked_manifest(epoch).await {
                Ok(manifest) => return Ok(Some(manifest)),
                Err(e) => tracing::warn!(epoch, store = %self.location, reason = %e.message, "skipping a checkpoint that is incomplete or damaged"),
            }
        }
        Ok(None)
    }

    /// A part's bytes, checked against the manifest's size and CRC32.
    pub async fn read_part(&self, part: &PartRef) -> Result<Bytes> {
        let bytes = self.read(&part.path).await?;
        if bytes.len() as u64 != part.bytes || crc32fast::hash(&bytes) != part.crc32 {
            return Err(WeirError::new(
                SqlState::DataCorrupted,
                format!("part {} has {} bytes and CRC {:08x}, the manifest says {} and {:08x}", part.path, bytes.len(), crc32fast::hash(&bytes), part.bytes, part.crc32),
            ));
        }
        Ok(bytes)
    }

    async fn read(&self, relative: &str) -> Result<Bytes> {
        let result = self.store.get(&self.path(relative)).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => WeirError::new(SqlState::DataCorrupted, format!("{relative} is missing")),
            other => store_error(other),
        })?;
        result.bytes().await.map_err(store_error)
    }

    /// Deletes every checkpoint but the newest [`KEEP`] complete ones, keeping the parts those
    /// reference (even in older directories). Directories newer than the newest complete
    /// checkpoint are left alone (one may be being written). Returns the files deleted.
    pub async fn collect_garbage(&self) -> Result<usize> {
        let mut kept = vec![];
        let mut newest_complete = None;
        for epoch in self.epochs().await? {
            if kept.len() == KEEP {
                break;
            }
            // A manifest whose parts are damaged still counts among the kept: recovery skips it
            // and falls back to the others, which are kept too.
            if let Ok(manifest) = self.parsed_manifest(epoch).await {
                newest_complete.get_or_insert(epoch);
                kept.push(manifest);
            }
        }
        let Some(newest) = newest_complete else { return Ok(0) };
        let mut keep: BTreeSet<String> = BTreeSet::new();
        for manifest in &kept {
            keep.insert(format!("{}/{MANIFEST}", epoch_dir(manifest.epoch)));
            keep.extend(manifest.parts.values().map(|p| p.path.clone()));
        }
        let mut deleted = 0;
        let objects: Vec<_> = self.store.list(Some(&self.root)).try_collect().await.map_err(store_error)?;
        for object in objects {
            let Some(relative) = relative_path(&self.root, &object.location) else { continue };
            let epoch = relative.split('/').next().and_then(|d| d.parse::<u64>().ok());
            if epoch.is_some_and(|e| e > newest) || keep.contains(&relative) {
                continue;
            }
            self.store.delete(&object.location).await.map_err(store_error)?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

/// A checkpoint being written: its parts first, the manifest last ([`CheckpointWriter::commit`]).
/// Dropped without a commit, it leaves parts that no manifest names, which garbage collection
/// removes.
pub struct CheckpointWriter<'a> {
    store: &'a CheckpointStore,
    manifest: Manifest,
    next_part: usize,
}

impl CheckpointWriter<'_> {
    /// Writes a part of this checkpoint under `name` (unique within the checkpoint).
    pub async fn put_part(&mut self, name: &str, data: Bytes) -> Result<PartRef> {
        let path = format!("{}/{}.arrow", epoch_dir(self.manifest.epoch), self.next_part);
        self.next_part += 1;
        let part = PartRef { path: path.clone(), bytes: data.len() as u64, crc32: crc32fast::hash(&data) };
        self.store.store.put(&self.store.path(&path), PutPayload::from_bytes(data)).await.map_err(store_error)?;
        self.manifest.parts.insert(name.to_string(), part.clone());
        Ok(part)
    }

    /// Names a part an earlier checkpoint wrote (unchanged state, a base under new deltas).
    pub fn keep_part(&mut self, name: &str, part: PartRef) {
        self.manifest.parts.insert(name.to_string(), part);
    }

    /// The manifest being built: source positions, table sequences, sink epochs.
    pub fn manifest_mut(&mut self) -> &mut Manifest {
        &mut self.manifest
    }

    /// Writes the manifest: from now on the checkpoint exists.
    pub async fn commit(self) -> Result<Manifest> {
        let json = serde_json::to_vec_pretty(&self.manifest).map_err(|e| WeirError::internal(format!("manifest: {e}")))?;
        let path = self.store.path(&format!("{}/{MANIFEST}", epoch_dir(self.manifest.epoch)));
        self.store.store.put(&path, PutPayload::from(json)).await.map_err(store_error)?;
        Ok(self.manifest)
    }
}

/// A directory as a store; deleting a checkpoint's last file removes its directory too.
fn local(dir: &FsPath) -> Result<CheckpointStore> {
    std::fs::create_dir_all(dir)?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(store_error)?.with_automatic_cleanup(true);
    Ok(CheckpointStore { store: Arc::new(store), root: Path::default(), location: dir.display().to_string() })
}

/// Epochs zero-padded, so that names sort as numbers.
fn epoch_dir(epoch: u64) -> String {
    format!("{epoch:020}")
}

fn relative_path(root: &Path, location: &Path) -> Option<String> {
    let parts: Vec<String> = location.prefix_match(root)?.map(|p| p.as_ref().to_string()).collect();
    Some(parts.join("/"))
}

fn store_error(e: object_store::Error) -> WeirError {
    WeirError::new(SqlState::Io, format!("checkpoint store: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn write(store: &CheckpointStore, epoch: u64, parts: &[(&str, &str)], keep: &[(&str, PartRef)]) -> Manifest {
        let mut w = store.begin(epoch, 7);
        for (name, data) in parts {
            w.put_part(name, Bytes::from(data.to_string())).await.unwrap();
        }
        for (name, part) in keep {
            w.keep_part(name, part.clone());
        }
        w.manifest_mut().sources.entry(1).or_default().positions.push(crate::checkpoint::snapshot::PositionRecord { partition: "0".into(), offset: epoch * 10 });
        w.commit().await.unwrap()
    }

    async fn the_store_falls_back_and_collects(store: CheckpointStore) {
        assert_eq!(store.latest().await.unwrap(), None);
        let first = write(&store, 4, &[("view/1/base", "aaaa")], &[]).await;
        let base = first.parts["view/1/base"].clone();
        let second = write(&store, 8, &[("view/1/delta", "bb")], &[("view/1/base", base.clone())]).await;
        assert_eq!(store.latest().await.unwrap().as_ref(), Some(&second));
        assert_eq!(store.read_part(&second.parts["view/1/base"]).await.unwrap(), Bytes::from("aaaa"));

        // Half-written: parts without a manifest. Skipped for the previous one.
        let mut unfinished = store.begin(12, 7);
        unfinished.put_part("view/1/delta", Bytes::from("cc")).await.unwrap();
        drop(unfinished);
        assert_eq!(store.latest().await.unwrap().as_ref(), Some(&second));

        // Damaged: a part overwritten with other bytes of the same length.
        let third = write(&store, 16, &[("view/1/delta", "dd")], &[("view/1/base", base.clone())]).await;
        assert_eq!(store.latest().await.unwrap().as_ref(), Some(&third));
        let delta = &third.parts["view/1/delta"];
        store.store.put(&store.path(&delta.path), PutPayload::from_static(b"xx")).await.unwrap();
        assert_eq!(store.latest().await.unwrap().as_ref(), Some(&second), "a damaged part rules its checkpoint out");
        // A manifest that does not parse.
        store.store.put(&store.path(&format!("{}/{MANIFEST}", epoch_dir(20))), PutPayload::from_static(b"{\"format\": 1, \"ep")).await.unwrap();
        assert_eq!(store.latest().await.unwrap().as_ref(), Some(&second));

        // Collection keeps the newest KEEP checkpoints whose manifest parses, and what they
        // reference: the base written at epoch 4 stays although epoch 4's own manifest goes.
        // It does not read parts (recovery does), so 16, damaged, counts among the three.
        let fourth = write(&store, 24, &[], &[("view/1/base", base.clone())]).await;
        let fifth = write(&store, 28, &[("view/1/delta", "ee")], &[("view/1/base", base.clone())]).await;
        let deleted = store.collect_garbage().await.unwrap();
        assert!(deleted > 0);
        assert_eq!(store.latest().await.unwrap().as_ref(), Some(&fifth));
        assert_eq!(store.read_part(&base).await.unwrap(), Bytes::from("aaaa"));
        let left: Vec<u64> = store.epochs().await.unwrap();
        assert_eq!(left, [28, 24, 16, 4], "8 is the fourth, 12 and 20 are incomplete; 4 holds the base");
        assert!(store.read(&format!("{}/{MANIFEST}", epoch_dir(4))).await.is_err(), "4's manifest is gone");
        assert_eq!(store.checked_manifest(24).await.unwrap(), fourth);
    }

    /// Against an S3-compatible server (`tests/services.sh start_s3`: moto).
    #[tokio::test]
    async fn in_s3() {
        let (Ok(endpoint), Ok(bucket)) = (std::env::var("WEIR_S3_ENDPOINT"), std::env::var("WEIR_S3_BUCKET")) else {
            assert!(std::env::var_os("CI").is_none(), "CI must run the S3 checkpoint test: start moto with tests/services.sh");
            eprintln!("skipped: WEIR_S3_ENDPOINT is not set (run tests/run.sh, or source tests/services.sh and start_s3)");
            return;
        };
        let options = [
            ("aws_endpoint", endpoint.as_str()),
            ("aws_allow_http", "true"),
            ("aws_virtual_hosted_style_request", "false"),
            ("aws_region", "us-east-1"),
            ("aws_access_key_id", "test"),
            ("aws_secret_access_key", "test-secret"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let prefix = format!("checkpoints-{}", std::process::id());
        let url = format!("s3://user:password@{bucket}/{prefix}");
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open_with_options(Some(&url), dir.path(), options.to_vec()).unwrap();
        assert_eq!(store.location(), format!("s3://{bucket}/{prefix}"), "no credentials in the location");
        the_store_falls_back_and_collects(store).await;
    }

    #[tokio::test]
    async fn in_memory() {
        the_store_falls_back_and_collects(CheckpointStore::in_memory()).await;
    }

    #[tokio::test]
    async fn in_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(None, dir.path()).unwrap();
        assert!(store.location().ends_with("checkpoints"));
        the_store_falls_back_and_collects(store).await;
        let url = format!("file://{}/other", dir.path().display());
        the_store_falls_back_and_collects(CheckpointStore::open(Some(&url), dir.path()).unwrap()).await;
        assert!(CheckpointStore::open(Some("no scheme"), dir.path()).is_err());
    }
}
