//! The document store: signed PDFs and certificates, on a local directory.
//! Bytes are written under a staging name, flushed to disk, and only then
//! renamed to their final key `{account}/{envelope}/{file name}`, so a
//! partial write never looks like a stored document.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ids::{AccountId, EnvelopeId};
use crate::ingest::notification::{DocumentKind, DocumentSink, EmbeddedDocument};

#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("documents.url {0:?}: only file:// is supported so far")]
    Unsupported(String),
    #[error("document store I/O on {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("not a key of this store: {0:?}")]
    BadKey(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DocumentError + '_ {
    move |source| DocumentError::Io { path: path.display().to_string(), source }
}

const STAGING: &str = ".incoming";

#[derive(Debug, Clone)]
pub struct DocumentStore {
    root: PathBuf,
}

impl DocumentStore {
    /// Opens (creating) the store named by `documents.url`.
    pub fn open(url: &str) -> Result<Self, DocumentError> {
        let Some(path) = url.strip_prefix("file://") else { return Err(DocumentError::Unsupported(url.to_string())) };
        let root = PathBuf::from(path);
        let staging = root.join(STAGING);
        fs::create_dir_all(&staging).map_err(io(&root))?;
        sweep_staging(&staging);
        Ok(Self { root })
    }

    /// A sink that stages embedded documents while a notification is parsed.
    pub fn staging_sink(&self) -> StagingSink {
        StagingSink { root: self.root.clone(), current: None, staged: Vec::new() }
    }

    /// Moves a staged document to its final key and returns the key.
    pub fn publish(
        &self,
        staged_key: &str,
        account: AccountId,
        envelope: EnvelopeId,
        file_name: &str,
    ) -> Result<String, DocumentError> {
        let staged = self.path_of(staged_key)?;
        let key = format!("{account}/{envelope}/{}", sanitise_file_name(file_name));
        let target = self.root.join(&key);
        let envelope_dir = target.parent().unwrap_or(&self.root).to_path_buf();
        let account_dir = envelope_dir.parent().unwrap_or(&self.root).to_path_buf();
        let created = !envelope_dir.exists();
        fs::create_dir_all(&envelope_dir).map_err(io(&envelope_dir))?;
        fs::rename(&staged, &target).map_err(io(&target))?;
        // The rename is durable only once its directory entry is on disk, and
        // a new directory only once its own entry in its parent is.
        let mut dirs = vec![&envelope_dir];
        if created {
            dirs.extend([&account_dir, &self.root]);
        }
        for dir in dirs {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
        }
        Ok(key)
    }

    /// Starts a document that arrives as a stream (a download).
    pub async fn upload(&self) -> Result<Upload, DocumentError> {
        let key = format!("{STAGING}/{}.part", uuid::Uuid::now_v7().simple());
        let path = self.root.join(&key);
        let file = tokio::fs::File::create(&path).await.map_err(io(&path))?;
        Ok(Upload { key, path, file: Some(file), hasher: Sha256::new(), size: 0 })
    }

    /// [`DocumentStore::publish`] off the async threads (it syncs directories).
    pub async fn publish_async(
        &self,
        staged_key: String,
        account: AccountId,
        envelope: EnvelopeId,
        file_name: String,
    ) -> Result<String, DocumentError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.publish(&staged_key, account, envelope, &file_name))
            .await
            .map_err(|e| DocumentError::Io { path: "publish".into(), source: std::io::Error::other(e) })?
    }

    /// Drops a staged document that will not be kept (a duplicate notification).
    pub fn discard(&self, staged_key: &str) {
        if let Ok(path) = self.path_of(staged_key) {
            let _ = fs::remove_file(path);
        }
    }

    /// The file behind a key; keys never escape the store's root.
    pub fn path_of(&self, key: &str) -> Result<PathBuf, DocumentError> {
        let safe = !key.is_empty()
            && key.split('/').all(|part| !part.is_empty() && part != "." && part != ".." && !part.contains('\0'))
            && !key.contains('\\');
        if !safe {
            return Err(DocumentError::BadKey(key.chars().take(80).collect()));
        }
        Ok(self.root.join(key))
    }
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
}

/// A complete staged document, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Staged {
    pub key: String,
    pub size: u64,
    pub sha256: String,
}

impl Upload {
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

    /// Flushes the bytes to disk; the staged file is kept for publishing.
    pub async fn finish(mut self) -> Result<Staged, DocumentError> {
        use tokio::io::AsyncWriteExt;
        let mut file = self.file.take().ok_or_else(|| DocumentError::BadKey(self.key.clone()))?;
        file.flush().await.map_err(io(&self.path))?;
        file.sync_all().await.map_err(io(&self.path))?;
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

fn sweep_staging(staging: &Path) {
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
    root: PathBuf,
    current: Option<Staging>,
    staged: Vec<String>,
}

impl std::fmt::Debug for Staging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staging").field("key", &self.key).field("size", &self.size).finish_non_exhaustive()
    }
}

impl StagingSink {
    /// Keys of everything this sink staged (to discard them if the notification is refused).
    pub fn staged_keys(&self) -> &[String] {
        &self.staged
    }
}

impl DocumentSink for StagingSink {
    fn begin(&mut self, document_id: Option<&str>, name: &str, kind: DocumentKind) -> std::io::Result<()> {
        let key = format!("{STAGING}/{}.part", uuid::Uuid::now_v7().simple());
        let file = File::create(self.root.join(&key))?;
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
        // Flushed before the notification is acknowledged: a 200 promises the bytes are on disk.
        current.file.sync_all()?;
        let document_id = current.document_id.unwrap_or_else(|| match current.kind {
            DocumentKind::Summary => "certificate".into(),
            DocumentKind::Content => current.name.clone(),
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_file_names_become_one_safe_component() {
        assert_eq!(sanitise_file_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitise_file_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(sanitise_file_name("a\0b.pdf"), "a_b.pdf");
        assert_eq!(sanitise_file_name(".hidden"), "hidden");
        assert_eq!(sanitise_file_name(".."), "document");
        assert_eq!(sanitise_file_name(""), "document");
        assert_eq!(sanitise_file_name("Offer Letter.pdf"), "Offer Letter.pdf");
        assert_eq!(sanitise_file_name(&"x".repeat(400)).len(), 200);
        let long = format!("{}.pdf", "契約".repeat(60));
        let cut = sanitise_file_name(&long);
        assert!(cut.len() <= 200 && cut.ends_with(".pdf"), "{cut}");
    }

    #[test]
    fn keys_cannot_escape_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = DocumentStore::open(&format!("file://{}", dir.path().display())).unwrap();
        for key in ["../x", "a/../../x", "/etc/passwd", "a//b", "a\\b", ""] {
            assert!(store.path_of(key).is_err(), "{key:?}");
        }
        assert!(store.path_of("acc/env/file.pdf").is_ok());
    }

    #[test]
    fn staged_documents_are_published_whole_with_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let store = DocumentStore::open(&format!("file://{}", dir.path().display())).unwrap();
        let mut sink = store.staging_sink();
        sink.begin(Some("1"), "../Offer.pdf", DocumentKind::Content).unwrap();
        sink.write(b"%PDF-1.4 hello").unwrap();
        let doc = sink.finish().unwrap();
        assert_eq!(doc.size_bytes, 14);
        assert_eq!(doc.sha256, hex::encode(Sha256::digest(b"%PDF-1.4 hello")));
        let account = AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap();
        let envelope = EnvelopeId::parse("93be49ab-afa0-4adf-933c-f752070d71ec").unwrap();
        let key = store.publish(&doc.storage_key, account, envelope, &doc.name).unwrap();
        assert_eq!(key, format!("{account}/{envelope}/Offer.pdf"));
        assert_eq!(fs::read(store.path_of(&key).unwrap()).unwrap(), b"%PDF-1.4 hello");
        assert!(!store.path_of(&doc.storage_key).unwrap().exists());
    }
}
