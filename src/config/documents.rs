//! `[documents]`: where stored documents live. `documents.url` is checked
//! at load time by parsing it into a [`DocumentsLocation`], the type the
//! document store opens, so neither module parses the other's strings.

use std::path::PathBuf;

use serde::Deserialize;

use super::{ConfigError, Secret};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DocumentsSettings {
    /// `file://dir` or `s3://bucket/prefix`.
    pub url: String,
    /// What to download for an envelope whose notification did not carry its documents.
    pub download: DownloadMode,
    /// Where an `s3://` store stages bytes before uploading them; `None` is
    /// `countersign-staging` under the system's temporary directory. A
    /// `file://` store always stages inside its own directory, so that
    /// publishing is a rename on one file system.
    pub staging_dir: Option<PathBuf>,
    /// The endpoint of an S3-compatible service (MinIO, Ceph, R2, …); `None`
    /// is AWS itself (or `AWS_ENDPOINT_URL_S3` / `AWS_ENDPOINT`).
    pub s3_endpoint: Option<String>,
    /// `None` is `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`.
    pub s3_region: Option<String>,
    /// Static credentials; when absent, the AWS environment variables, then
    /// the container or instance credentials, are used.
    pub s3_access_key_id: Option<Secret>,
    pub s3_access_key_id_file: Option<PathBuf>,
    pub s3_secret_access_key: Option<Secret>,
    pub s3_secret_access_key_file: Option<PathBuf>,
    /// Plain HTTP to the endpoint; only for a service on a trusted local network.
    pub s3_allow_http: bool,
    /// `endpoint/bucket/key` rather than `bucket.endpoint/key`: what most
    /// S3-compatible services expect, and what AWS still serves.
    pub s3_path_style: bool,
}

impl Default for DocumentsSettings {
    fn default() -> Self {
        Self {
            url: "file://data/documents".into(),
            download: DownloadMode::Combined,
            staging_dir: None,
            s3_endpoint: None,
            s3_region: None,
            s3_access_key_id: None,
            s3_access_key_id_file: None,
            s3_secret_access_key: None,
            s3_secret_access_key_file: None,
            s3_allow_http: false,
            s3_path_style: true,
        }
    }
}

/// The documents fetched for a completed envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DownloadMode {
    /// One PDF of all documents with the certificate of completion: one call.
    Combined,
    /// Each document and the certificate as separate PDFs: one call each.
    Separate,
    /// The ZIP archive of all PDFs and the certificate: one call.
    Archive,
}

/// Where documents are stored: `documents.url` parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DocumentsLocation {
    /// `file://DIR`: a local directory.
    Local(PathBuf),
    /// `s3://BUCKET/PREFIX`: an S3-compatible bucket; the prefix may be empty.
    S3 { bucket: String, prefix: String },
}

impl DocumentsSettings {
    /// `documents.url` parsed; the error says what is wrong with it.
    pub fn location(&self) -> Result<DocumentsLocation, String> {
        if self.url.starts_with("s3://") {
            let (bucket, prefix) = parse_s3_url(&self.url)?;
            return Ok(DocumentsLocation::S3 { bucket, prefix });
        }
        match self.url.strip_prefix("file://") {
            Some("") => Err("file:// needs a directory, e.g. file://data/documents".into()),
            Some(dir) => Ok(DocumentsLocation::Local(PathBuf::from(dir))),
            None => Err("must start with file:// or s3://".into()),
        }
    }

    /// Checks the settings together; every error names its key.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let docs = self;
        let location = docs.location().map_err(|reason| ConfigError::invalid("documents.url", reason))?;
        if let DocumentsLocation::Local(_) = location {
            // An S3 setting beside a local store is a configuration that
            // does not do what its author believes: say so at start-up.
            let s3_only = [
                ("documents.staging_dir", docs.staging_dir.is_some()),
                ("documents.s3_endpoint", docs.s3_endpoint.is_some()),
                ("documents.s3_region", docs.s3_region.is_some()),
                ("documents.s3_access_key_id", docs.s3_access_key_id.is_some()),
                ("documents.s3_secret_access_key", docs.s3_secret_access_key.is_some()),
                ("documents.s3_allow_http", docs.s3_allow_http),
                ("documents.s3_path_style", !docs.s3_path_style),
            ];
            if let Some((key, _)) = s3_only.iter().find(|(_, set)| *set) {
                return Err(ConfigError::invalid(*key, "applies only to an s3:// documents.url"));
            }
        }
        if let Some(endpoint) = &docs.s3_endpoint {
            let parsed = url::Url::parse(endpoint).ok().filter(|u| u.has_host());
            match parsed.as_ref().map(url::Url::scheme) {
                Some("https") => {}
                Some("http") if docs.s3_allow_http => {}
                Some("http") => {
                    return Err(ConfigError::invalid(
                        "documents.s3_endpoint",
                        "is plain http://: set documents.s3_allow_http = true to allow it",
                    ));
                }
                _ => return Err(ConfigError::invalid("documents.s3_endpoint", "must be an https:// or http:// URL")),
            }
        }
        if docs.s3_region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            return Err(ConfigError::invalid("documents.s3_region", "must not be empty"));
        }
        let blank = |s: &Option<Secret>| s.as_ref().is_some_and(|s| s.expose().trim().is_empty());
        if blank(&docs.s3_access_key_id) || blank(&docs.s3_secret_access_key) {
            return Err(ConfigError::invalid("documents.s3_access_key_id", "an S3 credential is empty"));
        }
        if docs.s3_access_key_id.is_some() != docs.s3_secret_access_key.is_some() {
            return Err(ConfigError::invalid(
                "documents.s3_access_key_id",
                "s3_access_key_id and s3_secret_access_key go together",
            ));
        }
        Ok(())
    }
}

/// Splits `s3://bucket/some/prefix` into the bucket and the prefix (which
/// may be empty); says what is wrong otherwise.
fn parse_s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("s3://").ok_or("must start with s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket_ok = !bucket.is_empty()
        && bucket.len() <= 255
        && bucket.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !bucket_ok {
        return Err("s3://BUCKET/PREFIX needs a bucket name of letters, digits, '.', '-' and '_'".into());
    }
    let prefix = prefix.trim_end_matches('/');
    let prefix_ok = prefix.is_empty()
        || prefix.split('/').all(|part| {
            !part.is_empty() && part != "." && part != ".." && !part.chars().any(|c| c.is_control() || c == '\\')
        });
    if !prefix_ok {
        return Err("the prefix after the bucket must be names separated by single '/' (no '.' or '..')".into());
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn s3_urls_name_a_bucket_and_a_clean_prefix() {
        assert_eq!(parse_s3_url("s3://docs").unwrap(), ("docs".into(), String::new()));
        assert_eq!(parse_s3_url("s3://docs/").unwrap(), ("docs".into(), String::new()));
        assert_eq!(parse_s3_url("s3://docs/countersign/prod/").unwrap(), ("docs".into(), "countersign/prod".into()));
        for bad in ["s3://", "s3:///prefix", "s3://a b/x", "s3://docs/a//b", "s3://docs/../x", "file://docs"] {
            assert!(parse_s3_url(bad).is_err(), "{bad:?}");
        }
    }
}
