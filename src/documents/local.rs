//! The local backend: publish by rename, durable by fsync. It is our own
//! code rather than object_store's `LocalFileSystem`, which neither syncs
//! the file nor the directory entries a rename creates.

use std::fs::{self, File};
use std::path::Path;

use futures_util::StreamExt;

use super::{DocumentError, StoredDocument, io};

/// Renames the staged file to `root/key` and syncs the directories that changed.
pub(super) fn publish(root: &Path, staged: &Path, key: &str) -> Result<(), DocumentError> {
    let target = root.join(key);
    let envelope_dir = target.parent().unwrap_or(root).to_path_buf();
    let account_dir = envelope_dir.parent().unwrap_or(root).to_path_buf();
    let created = !envelope_dir.exists();
    fs::create_dir_all(&envelope_dir).map_err(io(&envelope_dir))?;
    fs::rename(staged, &target).map_err(io(&target))?;
    // The rename is durable only once its directory entry is on disk, and
    // a new directory only once its own entry in its parent is.
    let mut dirs = vec![envelope_dir.as_path()];
    if created {
        dirs.extend([account_dir.as_path(), root]);
    }
    for dir in dirs {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    }
    Ok(())
}

pub(super) async fn read(path: &Path, key: &str) -> Result<StoredDocument, DocumentError> {
    let file = match tokio::fs::File::open(path).await {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Err(DocumentError::NotFound(key.to_string()));
        }
        Err(error) => return Err(io(path)(error)),
    };
    let meta = file.metadata().await.map_err(io(path))?;
    if !meta.is_file() {
        return Err(DocumentError::NotFound(key.to_string()));
    }
    let body = tokio_util::io::ReaderStream::new(file).boxed();
    Ok(StoredDocument { size: meta.len(), body })
}
