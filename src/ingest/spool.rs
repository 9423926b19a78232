//! Reading a notification body: bounded in size and time, HMAC'd and hashed
//! while it streams in, kept in memory when small and spilled to an
//! anonymous temporary file when large, so memory stays bounded whatever
//! the body size.

use std::io::{BufRead, BufReader, Cursor};
use std::path::Path;

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::auth::Verifier;

/// Bodies up to this size stay in memory.
const IN_MEMORY: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the body is larger than connect.max_body_bytes ({0} bytes)")]
    TooLarge(u64),
    #[error("the body could not be read: {0}")]
    Read(axum::Error),
    #[error("spooling the body failed: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Debug)]
enum Content {
    Memory(Bytes),
    File(std::fs::File),
}

/// A fully received body.
#[derive(Debug)]
pub struct Spooled {
    content: Content,
    /// The first bytes, for format detection.
    pub prefix: Bytes,
    pub len: u64,
    /// SHA-256 of the exact bytes, hex.
    pub sha256: String,
}

impl Spooled {
    /// Held in memory and no larger than `limit` bytes.
    pub fn is_small(&self, limit: u64) -> bool {
        matches!(self.content, Content::Memory(_)) && self.len <= limit
    }

    /// The body, when it was small enough to be held in memory.
    pub fn in_memory(&self) -> Option<&Bytes> {
        match &self.content {
            Content::Memory(bytes) => Some(bytes),
            Content::File(_) => None,
        }
    }

    /// A blocking reader over the body, for the parsers.
    pub fn into_reader(self) -> Box<dyn BufRead + Send> {
        match self.content {
            Content::Memory(bytes) => Box::new(Cursor::new(bytes)),
            Content::File(file) => Box::new(BufReader::with_capacity(64 * 1024, file)),
        }
    }
}

/// Reads `body` to the end, feeding every chunk to `verifier`.
pub async fn spool(body: Body, max: u64, verifier: &mut Verifier, spill_dir: &Path) -> Result<Spooled, SpoolError> {
    let mut stream = body.into_data_stream();
    let mut memory = BytesMut::new();
    let mut file: Option<tokio::fs::File> = None;
    let mut hasher = Sha256::new();
    let mut prefix = BytesMut::new();
    let mut len: u64 = 0;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(SpoolError::Read)?;
        len += chunk.len() as u64;
        if len > max {
            return Err(SpoolError::TooLarge(max));
        }
        verifier.update(&chunk);
        hasher.update(&chunk);
        if prefix.len() < 64 {
            prefix.extend_from_slice(&chunk[..chunk.len().min(64 - prefix.len())]);
        }
        match &mut file {
            Some(file) => file.write_all(&chunk).await?,
            None if memory.len() + chunk.len() <= IN_MEMORY => memory.extend_from_slice(&chunk),
            None => {
                let spill = tempfile::tempfile_in(spill_dir)?;
                let mut spill = tokio::fs::File::from_std(spill);
                spill.write_all(&memory).await?;
                spill.write_all(&chunk).await?;
                memory.clear();
                file = Some(spill);
            }
        }
    }
    let content = match file {
        Some(mut file) => {
            file.flush().await?;
            let mut file = file.into_std().await;
            std::io::Seek::rewind(&mut file)?;
            Content::File(file)
        }
        None => Content::Memory(memory.freeze()),
    };
    Ok(Spooled { content, prefix: prefix.freeze(), len, sha256: hex::encode(hasher.finalize()) })
}
