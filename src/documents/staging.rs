//! Staged files: documents being written to local disk, hashed and counted
//! as their bytes arrive, before they are published.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{DocumentError, STAGING, io};
use crate::domain::{DocumentKind, DocumentSink, EmbeddedDocument};

/// A fresh staged key and its file in `dir`.
fn new_staged(dir: &Path) -> (String, PathBuf) {
    let name = format!("{}.part", uuid::Uuid::now_v7().simple());
    let path = dir.join(&name);
    (format!("{STAGING}/{name}"), path)
}

/// A document being written as its bytes arrive: staged, hashed and
/// counted; removed again if dropped before [`Upload::finish`].
#[derive(Debug)]
pub struct Upload {
    key: String,
    path: PathBuf,
    file: Option<tokio::fs::File>,
    hasher: Sha256,
    size: u64,
    durable: bool,
}

/// A complete staged document, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

impl Upload {
    pub(super) async fn create(dir: &Path, durable: bool) -> Result<Self, DocumentError> {
        let (key, path) = new_staged(dir);
        let file = tokio::fs::File::create(&path).await.map_err(io(&path))?;
        Ok(Self { key, path, file: Some(file), hasher: Sha256::new(), size: 0, durable })
    }

    pub async fn write(&mut self, bytes: &[u8]) -> Result<(), DocumentError> {
        use tokio::io::AsyncWriteExt;
        let file = self.file.as_mut().ok_or_else(|| DocumentError::BadKey(self.key.clone()))?;
        file.write_all(bytes).await.map_err(io(&self.path))?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes the bytes (to disk, for a local store); the staged file is
    /// kept for publishing.
    pub async fn finish(mut self) -> Result<Staged, DocumentError> {
        use tokio::io::AsyncWriteExt;
        let mut file = self.file.take().ok_or_else(|| DocumentError::BadKey(self.key.clone()))?;
        file.flush().await.map_err(io(&self.path))?;
        if self.durable {
            file.sync_all().await.map_err(io(&self.path))?;
        }
        let hasher = std::mem::take(&mut self.hasher);
        let staged =
            Staged { key: std::mem::take(&mut self.key), size: self.size, sha256: hex::encode(hasher.finalize()) };
        self.path = PathBuf::new();
        Ok(staged)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Staged files older than this belong to a notification that was never
/// answered (a crash mid-request); Connect sends it again.
const STALE_STAGING: std::time::Duration = std::time::Duration::from_secs(3600);

pub(super) fn sweep(staging: &Path) {
    let Ok(entries) = fs::read_dir(staging) else { return };
    for entry in entries.flatten() {
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|age| age > STALE_STAGING);
        if stale {
            let _ = fs::remove_file(entry.path());
        }
    }
}

struct Staging {
    key: String,
    file: File,
    hasher: Sha256,
    size: u64,
    document_id: Option<String>,
    name: String,
    kind: DocumentKind,
}

/// Writes embedded documents to staging files, hashing as it goes.
#[derive(Debug)]
pub struct StagingSink {
    dir: PathBuf,
    durable: bool,
    current: Option<Staging>,
    staged: Vec<String>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging").field("key", &self.key).field("size", &self.size).finish_non_exhaustive()
    }
}

impl StagingSink {
    pub(super) fn new(dir: PathBuf, durable: bool) -> Self {
        Self { dir, durable, current: None, staged: Vec::new() }
    }

    /// Keys of everything this sink staged (to discard them if the notification is refused).
    pub fn staged_keys(&self) -> &[String] {
        &self.staged
    }
}

impl DocumentSink for StagingSink {
    fn begin(&mut self, document_id: Option<&str>, name: &str, kind: DocumentKind) -> std::io::Result<()> {
        let (key, path) = new_staged(&self.dir);
        let file = File::create(path)?;
        self.staged.push(key.clone());
        self.current = Some(Staging {
            key,
            file,
            hasher: Sha256::new(),
            size: 0,
            document_id: document_id.map(str::to_string),
            name: name.to_string(),
            kind,
        });
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let current = self.current.as_mut().ok_or_else(|| std::io::Error::other("write before begin"))?;
        current.file.write_all(bytes)?;
        current.hasher.update(bytes);
        current.size += bytes.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> std::io::Result<EmbeddedDocument> {
        let current = self.current.take().ok_or_else(|| std::io::Error::other("finish before begin"))?;
        // Flushed before the notification is acknowledged: on a local store
        // a 200 promises the bytes are on disk.
        if self.durable {
            current.file.sync_all()?;
        }
        let document_id = EmbeddedDocument::id_or_default(current.document_id, current.kind, &current.name);
        Ok(EmbeddedDocument {
            document_id,
            name: current.name,
            kind: current.kind,
            size_bytes: current.size,
            sha256: hex::encode(current.hasher.finalize()),
            storage_key: current.key,
        })
    }
}
