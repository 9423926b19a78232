//! The S3-compatible backend (object_store's `AmazonS3`): a staged file is
//! uploaded whole, streamed from disk. A file of up to one part goes up in a
//! single PUT; a larger one in a multipart upload. S3 shows neither object
//! until its last byte has arrived, so a reader never sees part of one.

use std::path::Path;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use super::{DocumentError, StoredDocument, bad_key, io};
use crate::config::DocumentsSettings;

/// S3's smallest part (but the last); a file this size or smaller is one PUT.
const PART_BYTES: usize = 5 * 1024 * 1024;
/// Parts uploading at once: with the part being filled, the memory an
/// upload holds is bounded by this plus one part, whatever the file's size.
const PARTS_IN_FLIGHT: usize = 2;
/// How much is read from the staged file at a time.
const READ_BYTES: usize = 256 * 1024;

#[derive(Clone)]
pub(super) struct S3Store {
    store: Arc<AmazonS3>,
    bucket: String,
    prefix: String,
}

impl std::fmt::Display for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

fn remote(context: String) -> impl FnOnce(object_store::Error) -> DocumentError {
    move |source| DocumentError::Remote { context, source }
}

impl S3Store {
    /// Builds the client. The standard `AWS_*` environment variables fill in
    /// what the settings leave out (credentials, session token, region,
    /// endpoint); what the settings say wins.
    pub(super) fn open(bucket: String, prefix: String, settings: &DocumentsSettings) -> Result<Self, DocumentError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .with_allow_http(settings.s3_allow_http)
            .with_virtual_hosted_style_request(!settings.s3_path_style);
        if let Some(region) = &settings.s3_region {
            builder = builder.with_region(region);
        }
        if let Some(endpoint) = &settings.s3_endpoint {
            // The S3-specific key, so that AWS_ENDPOINT_URL_S3 cannot override the setting.
            let endpoint = endpoint_for(endpoint, &bucket, settings.s3_path_style);
            builder = builder.with_config(AmazonS3ConfigKey::S3Endpoint, endpoint);
        }
        if let (Some(id), Some(secret)) = (&settings.s3_access_key_id, &settings.s3_secret_access_key) {
            builder = builder.with_access_key_id(id.expose()).with_secret_access_key(secret.expose());
        }
        let store = builder.build().map_err(remote(format!("configuring the client for bucket {bucket}")))?;
        Ok(Self { store: Arc::new(store), bucket, prefix })
    }

    /// The object of a store key: `{prefix}/{key}`, byte for byte (no
    /// escaping), so an operator finds a recorded key in the bucket as is.
    fn location(&self, key: &str) -> Result<ObjectPath, DocumentError> {
        let full = if self.prefix.is_empty() { key.to_string() } else { format!("{}/{key}", self.prefix) };
        ObjectPath::parse(full).map_err(|_| bad_key(key))
    }

    /// Uploads the complete staged file to `key`, checking that every staged
    /// byte was sent.
    pub(super) async fn publish(&self, staged: &Path, key: &str) -> Result<(), DocumentError> {
        let location = self.location(key)?;
        let mut file = tokio::fs::File::open(staged).await.map_err(io(staged))?;
        let staged_len = file.metadata().await.map_err(io(staged))?.len();
        let check = |sent: u64| {
            if sent == staged_len {
                Ok(())
            } else {
                Err(DocumentError::LengthMismatch { key: key.to_string(), sent, staged: staged_len })
            }
        };
        if staged_len <= PART_BYTES as u64 {
            let mut bytes = Vec::with_capacity(PART_BYTES.min(staged_len as usize));
            file.read_to_end(&mut bytes).await.map_err(io(staged))?;
            check(bytes.len() as u64)?;
            self.store.put(&location, PutPayload::from(bytes)).await.map_err(remote(format!("uploading {key}")))?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&location).await.map_err(remote(format!("starting {key}")))?;
        let mut pending = Pending(Some(WriteMultipart::new_with_chunk_size(upload, PART_BYTES)));
        let sent = pending.send(&mut file, staged, key).await?;
        check(sent)?;
        pending.complete().await.map_err(remote(format!("completing {key}")))
    }

    pub(super) async fn remove(&self, key: &str) -> Result<(), DocumentError> {
        let location = self.location(key)?;
        match self.store.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(DocumentError::Remote { context: format!("removing {key}"), source }),
        }
    }

    pub(super) async fn read(&self, key: &str) -> Result<StoredDocument, DocumentError> {
        let location = self.location(key)?;
        match self.store.get(&location).await {
            Ok(result) => {
                let size = result.meta.size;
                let body = result.into_stream().map(|chunk| chunk.map_err(std::io::Error::from)).boxed();
                Ok(StoredDocument { size, body })
            }
            Err(object_store::Error::NotFound { .. }) => Err(DocumentError::NotFound(key.to_string())),
            Err(source) => Err(DocumentError::Remote { context: format!("reading {key}"), source }),
        }
    }
}

/// A multipart upload that is aborted when dropped unfinished (after an
/// error, or when the publishing future is cancelled), so that S3 does not
/// keep its parts.
struct Pending(Option<WriteMultipart>);

impl Pending {
    /// Streams the file into parts; returns the bytes sent.
    async fn send(&mut self, file: &mut tokio::fs::File, staged: &Path, key: &str) -> Result<u64, DocumentError> {
        let Some(writer) = self.0.as_mut() else { return Ok(0) };
        let mut sent = 0u64;
        loop {
            writer.wait_for_capacity(PARTS_IN_FLIGHT).await.map_err(remote(format!("uploading {key}")))?;
            let mut chunk = BytesMut::with_capacity(READ_BYTES);
            let read = file.read_buf(&mut chunk).await.map_err(io(staged))?;
            if read == 0 {
                return Ok(sent);
            }
            sent += read as u64;
            writer.put(chunk.freeze());
        }
    }

    /// Sends the last part and completes the upload (which aborts it on failure).
    async fn complete(mut self) -> object_store::Result<()> {
        if let Some(writer) = self.0.take() {
            writer.finish().await?;
        }
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(writer) = self.0.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = writer.abort().await {
                    tracing::warn!(%error, "could not abort an unfinished multipart upload; its parts stay until the bucket's lifecycle rule removes them");
                }
            });
        }
    }
}

/// The endpoint the client is given. Path-style requests go to the
/// endpoint as configured; virtual-hosted ones to the bucket's own host,
/// `{bucket}.{endpoint host}`, which object_store expects to be told.
fn endpoint_for(endpoint: &str, bucket: &str, path_style: bool) -> String {
    let trimmed = endpoint.trim_end_matches('/');
    if path_style {
        return trimmed.to_string();
    }
    let Ok(mut url) = url::Url::parse(trimmed) else { return trimmed.to_string() };
    let Some(host) = url.host_str().map(str::to_string) else { return trimmed.to_string() };
    if host.starts_with(&format!("{bucket}.")) || url.set_host(Some(&format!("{bucket}.{host}"))).is_err() {
        return trimmed.to_string();
    }
    url.as_str().trim_end_matches('/').to_string()
}

#[cfg(test)]
mod tests {
    use super::endpoint_for;

    #[test]
    fn a_virtual_hosted_endpoint_names_the_bucket_in_its_host() {
        assert_eq!(endpoint_for("http://127.0.0.1:9000/", "docs", true), "http://127.0.0.1:9000");
        assert_eq!(endpoint_for("https://s3.example.com", "docs", false), "https://docs.s3.example.com");
        assert_eq!(endpoint_for("https://docs.s3.example.com", "docs", false), "https://docs.s3.example.com");
        assert_eq!(endpoint_for("https://s3.example.com:8443/", "docs", false), "https://docs.s3.example.com:8443");
    }
}
