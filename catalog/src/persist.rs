//! Durable, atomic replacement of the catalog document.
//!
//! The catalog is small (one entry per user object) and changes only on DDL, so it is written
//! whole: serialize to `catalog.json.tmp`, fsync it, rename over `catalog.json`, fsync the
//! directory. A crash at any point leaves either the old or the new document, never a mix.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::{Serialize, de::DeserializeOwned};

use crate::error::CatalogError;

pub const CATALOG_FILE: &str = "catalog.json";

/// Reads the document from `dir`, or `None` when the database is new.
pub fn load<T: DeserializeOwned>(dir: &Path) -> Result<Option<T>, CatalogError> {
    let path = dir.join(CATALOG_FILE);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CatalogError::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Atomically replaces the document in `dir`.
pub fn store<T: Serialize>(dir: &Path, value: &T) -> Result<(), CatalogError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| CatalogError::Corrupt(format!("cannot serialize catalog: {e}")))?;
    let tmp = dir.join(format!("{CATALOG_FILE}.tmp"));
    {
        let mut f = OpenOptions::new().create(true).write(true).truncate(true).open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(CATALOG_FILE))?;
    File::open(dir)?.sync_all()?;
    Ok(())
}
