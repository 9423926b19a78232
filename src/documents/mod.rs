//! The document store: signed PDFs and certificates, under the key
//! `{account}/{envelope}/{file name}`, on a local directory (`file://DIR`)
//! or in an S3-compatible bucket (`s3://BUCKET/PREFIX`).
//!
//! Bytes are always staged on local disk first, hashed and counted as they
//! arrive. Only a complete staged file is published: renamed into place on a
//! local store, uploaded (as one request, or in parts that become visible
//! only when the upload completes) to a bucket. A partial write therefore
//! never looks like a stored document on either backend.

mod local;
mod s3;
mod staging;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::stream::BoxStream;

use crate::config::{DocumentsLocation, DocumentsSettings};
use crate::ids::{AccountId, EnvelopeId};

pub use staging::{Staged, StagingSink, Upload};

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("documents.url {0:?}: must be file://DIR or s3://BUCKET/PREFIX")]
    Unsupported(String),
    #[error("document store I/O on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("not a key of this store: {0:?}")]
    BadKey(String),
    #[error("no document {0:?} in the store")]
    NotFound(String),
    #[error("the S3 store, {context}: {source}")]
    Remote { context: String, source: object_store::Error },
    #[error("{key}: {sent} bytes uploaded, but {staged} were staged")]
    LengthMismatch { key: String, sent: u64, staged: u64 },
    #[error("{0} is not a file on a local store")]
    NotLocal(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DocumentError + '_ {
    move |source| DocumentError::Io { path: path.display().to_string(), source }
}

/// Where a local store keeps its staging files, and the first component of
/// every staged key on either backend.
const STAGING: &str = ".incoming";

#[derive(Clone)]
pub struct DocumentStore {
    /// Local directory of staged files.
    staging: PathBuf,
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Local { root: PathBuf },
    S3(s3::S3Store),
}

impl std::fmt::Debug for DocumentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Only where the documents go: the S3 client holds credentials.
        let target = match &self.backend {
            Backend::Local { root } => format!("file://{}", root.display()),
            Backend::S3(s3) => s3.to_string(),
        };
        f.debug_struct("DocumentStore").field("target", &target).finish_non_exhaustive()
    }
}

/// A stored document being read: its length, and its bytes as they arrive.
pub struct StoredDocument {
    pub size: u64,
    pub body: BoxStream<'static, std::io::Result<Bytes>>,
}

impl std::fmt::Debug for StoredDocument {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredDocument").field("size", &self.size).finish_non_exhaustive()
    }
}

impl DocumentStore {
    /// Opens (creating local directories) the store named by `documents.url`.
    /// No request is sent to a bucket here; the first upload or read does.
    pub fn open(settings: &DocumentsSettings) -> Result<Self, DocumentError> {
        let location = settings.location().map_err(|_| DocumentError::Unsupported(settings.url.clone()))?;
        match location {
            DocumentsLocation::Local(root) => {
                let staging = root.join(STAGING);
                std::fs::create_dir_all(&staging).map_err(io(&root))?;
                staging::sweep(&staging);
                Ok(Self { staging, backend: Backend::Local { root } })
            }
            DocumentsLocation::S3 { bucket, prefix } => {
                let store = s3::S3Store::open(bucket, prefix, settings)?;
                let staging =
                    settings.staging_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("countersign-staging"));
                std::fs::create_dir_all(&staging).map_err(io(&staging))?;
                staging::sweep(&staging);
                Ok(Self { staging, backend: Backend::S3(store) })
            }
        }
    }

    /// A local store's staged files are flushed to disk, because publishing
    /// is a rename and a 200 promises the bytes survive a crash. A bucket's
    /// are not: the upload, which completes before any 200, is what lasts.
    fn durable_staging(&self) -> bool {
        matches!(self.backend, Backend::Local { .. })
    }

    /// A sink that stages embedded documents while a notification is parsed.
    pub fn staging_sink(&self) -> StagingSink {
        StagingSink::new(self.staging.clone(), self.durable_staging())
    }

    /// Starts a document that arrives as a stream (a download).
    pub async fn upload(&self) -> Result<Upload, DocumentError> {
        Upload::create(&self.staging, self.durable_staging()).await
    }

    /// Moves a staged document to its final key `{account}/{envelope}/{file}`
    /// and returns that key. On a bucket the object is `{prefix}/{key}`; the
    /// staged file is removed once the upload has completed.
    pub async fn publish(
        &self,
        staged_key: &str,
        account: AccountId,
        envelope: EnvelopeId,
        file_name: &str,
    ) -> Result<String, DocumentError> {
        let staged = self.staged_path(staged_key)?;
        let key = format!("{account}/{envelope}/{}", sanitise_file_name(file_name));
        match &self.backend {
            Backend::Local { root } => {
                let (root, target_key) = (root.clone(), key.clone());
                // Renaming and syncing directories block: keep them off the async threads.
                tokio::task::spawn_blocking(move || local::publish(&root, &staged, &target_key))
                    .await
                    .map_err(|e| DocumentError::Io { path: "publish".into(), source: std::io::Error::other(e) })??;
            }
            Backend::S3(s3) => {
                s3.publish(&staged, &key).await?;
                let _ = tokio::fs::remove_file(&staged).await;
            }
        }
        Ok(key)
    }

    /// Drops a staged document that will not be kept (a duplicate notification).
    pub fn discard(&self, staged_key: &str) {
        if let Ok(path) = self.staged_path(staged_key) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Removes a published document that no row refers to (its notification
    /// was refused after it was published). Failures are logged: an
    /// unreferenced file is never served, only left behind.
    pub async fn remove(&self, key: &str) {
        let removed = match (check_key(key), &self.backend) {
            (Err(error), _) => Err(error),
            (Ok(()), Backend::Local { root }) => match tokio::fs::remove_file(root.join(key)).await {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(io(&root.join(key))(error)),
                _ => Ok(()),
            },
            (Ok(()), Backend::S3(s3)) => s3.remove(key).await,
        };
        if let Err(error) = removed {
            tracing::warn!(%error, key, "cannot remove an unreferenced document");
        }
    }

    /// Opens a stored document for reading. Keys never leave the store (no
    /// `..`, no absolute path), and staged files are not documents.
    pub async fn read(&self, key: &str) -> Result<StoredDocument, DocumentError> {
        check_key(key)?;
        if key.split('/').any(|part| part.starts_with('.')) {
            return Err(bad_key(key));
        }
        match &self.backend {
            Backend::Local { root } => local::read(&root.join(key), key).await,
            Backend::S3(s3) => s3.read(key).await,
        }
    }

    /// The file behind a key of a local store; keys never escape its root.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, DocumentError> {
        check_key(key)?;
        match &self.backend {
            Backend::Local { root } => Ok(root.join(key)),
            Backend::S3(_) => Err(DocumentError::NotLocal(key.chars().take(80).collect())),
        }
    }

    /// The local file of a staged key, `.incoming/{name}`, on either backend.
    fn staged_path(&self, staged_key: &str) -> Result<PathBuf, DocumentError> {
        check_key(staged_key)?;
        match staged_key.strip_prefix(STAGING).and_then(|rest| rest.strip_prefix('/')) {
            Some(name) if !name.contains('/') => Ok(self.staging.join(name)),
            _ => Err(bad_key(staged_key)),
        }
    }
}

fn bad_key(key: &str) -> DocumentError {
    DocumentError::BadKey(key.chars().take(80).collect())
}

/// A key is relative, `/`-separated, and has no empty, `.` or `..` part.
fn check_key(key: &str) -> Result<(), DocumentError> {
    let safe = !key.is_empty()
        && key.split('/').all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\0'))
        && !key.contains('\\');
    if safe { Ok(()) } else { Err(bad_key(key)) }
}

/// Longest file name kept, in bytes (file systems allow 255).
const MAX_NAME_BYTES: usize = 200;

/// A file name from a payload, made safe to use as one path component:
/// directories stripped, control characters and reserved characters
/// replaced, no leading dot, at most 200 bytes with its extension kept.
pub fn sanitise_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last
        .chars()
        .map(|c| if c.is_control() || matches!(c, '<' | '>' | ':' | '"' | '|' | '?' | '*') { '_' } else { c })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    if trimmed.is_empty() {
        return "document".into();
    }
    if trimmed.len() <= MAX_NAME_BYTES {
        return trimmed.to_string();
    }
    let extension = trimmed.rfind('.').map(|dot| &trimmed[dot..]).filter(|e| e.len() <= 16).unwrap_or("");
    let mut end = MAX_NAME_BYTES - extension.len();
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{extension}", &trimmed[..end])
}

#[cfg(test)]
mod tests;
