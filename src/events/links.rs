//! Document URLs in event data, and the signed, expiring form of them.
//!
//! A link is `{server.public_url}/documents/{envelope}/{file}`. Consumers
//! fetch it with their sink's bearer token; when `events.link_key` is set
//! the link also carries `expires` (Unix seconds) and `signature` (base64url
//! HMAC-SHA256 of envelope, file and expiry under that key), so it works on
//! its own until it expires, like a presigned object-store URL.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::config::{ConfigError, Secret, Settings};
use crate::ids::EnvelopeId;

#[derive(Debug, Clone)]
pub struct DocumentLinks {
    base: url::Url,
    key: Option<Secret>,
    ttl: chrono::Duration,
}

/// Why a signed link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("this link is not signed")]
    Unsigned,
    #[error("this link's signature is wrong")]
    BadSignature,
    #[error("this link has expired")]
    Expired,
}

impl DocumentLinks {
    pub fn from_settings(settings: &Settings) -> Result<Self, ConfigError> {
        let base = url::Url::parse(&settings.server.public_url).map_err(|_| ConfigError::Invalid {
            key: "server.public_url".into(),
            reason: "must be an http:// or https:// URL".into(),
        })?;
        let ttl = chrono::Duration::from_std(settings.events.link_ttl).unwrap_or(chrono::Duration::days(7));
        Ok(Self { base, key: settings.events.link_key.clone(), ttl })
    }

    /// Whether links carry a signature (or need a bearer token).
    pub fn signs(&self) -> bool {
        self.key.is_some()
    }

    /// The URL of one stored document, signed to expire `events.link_ttl` after `now` when a key is set.
    pub fn url_for(&self, envelope: EnvelopeId, file_name: &str, now: DateTime<Utc>) -> String {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.pop_if_empty().extend(["documents", &envelope.to_string(), file_name]);
        }
        if let Some(key) = &self.key {
            let expires = (now + self.ttl).timestamp();
            let signature = sign(key, envelope, file_name, expires);
            url.query_pairs_mut().append_pair("expires", &expires.to_string()).append_pair("signature", &signature);
        }
        url.to_string()
    }

    /// Checks a link's `expires` and `signature` query values.
    pub fn verify(
        &self,
        envelope: EnvelopeId,
        file_name: &str,
        expires: Option<&str>,
        signature: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), LinkError> {
        let (Some(key), Some(expires), Some(signature)) = (&self.key, expires, signature) else {
            return Err(LinkError::Unsigned);
        };
        let expires: i64 = expires.parse().map_err(|_| LinkError::BadSignature)?;
        let given = URL_SAFE_NO_PAD.decode(signature).map_err(|_| LinkError::BadSignature)?;
        let mac = mac(key, envelope, file_name, expires).ok_or(LinkError::BadSignature)?;
        mac.verify_slice(&given).map_err(|_| LinkError::BadSignature)?;
        if now.timestamp() > expires {
            return Err(LinkError::Expired);
        }
        Ok(())
    }
}

/// `None` only if HMAC refused the key, which it does for no length.
fn mac(key: &Secret, envelope: EnvelopeId, file_name: &str, expires: i64) -> Option<Hmac<Sha256>> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key.expose().as_bytes()).ok()?;
    // Length-prefixed parts, so no two (envelope, file, expiry) triples sign the same bytes.
    for part in [envelope.to_string().as_str(), file_name, expires.to_string().as_str()] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part.as_bytes());
    }
    Some(mac)
}

fn sign(key: &Secret, envelope: EnvelopeId, file_name: &str, expires: i64) -> String {
    mac(key, envelope, file_name, expires)
        .map(|m| URL_SAFE_NO_PAD.encode(m.finalize().into_bytes()))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links(key: Option<&str>) -> DocumentLinks {
        let mut settings = Settings::default();
        settings.server.public_url = "https://cs.example.com/base/".into();
        settings.events.link_key = key.map(Secret::new);
        DocumentLinks::from_settings(&settings).unwrap()
    }

    #[test]
    fn a_signed_link_verifies_until_it_expires_and_not_for_another_file() {
        let envelope = EnvelopeId::parse("5e1f4c1a-7d0b-4d8e-b0a4-1f2e3d4c5b6a").unwrap();
        let now = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let links = links(Some("a link key of some length"));
        let url = url::Url::parse(&links.url_for(envelope, "1-Offer letter.pdf", now)).unwrap();
        assert_eq!(url.path(), format!("/base/documents/{envelope}/1-Offer%20letter.pdf"));
        let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        let (expires, signature) =
            (query.get("expires").map(String::as_str), query.get("signature").map(String::as_str));
        assert_eq!(links.verify(envelope, "1-Offer letter.pdf", expires, signature, now), Ok(()));
        assert_eq!(links.verify(envelope, "2-Other.pdf", expires, signature, now), Err(LinkError::BadSignature));
        let later = now + chrono::Duration::days(8);
        assert_eq!(links.verify(envelope, "1-Offer letter.pdf", expires, signature, later), Err(LinkError::Expired));
        assert_eq!(
            links.verify(envelope, "1-Offer letter.pdf", Some("99999999999"), signature, now),
            Err(LinkError::BadSignature)
        );
    }

    #[test]
    fn without_a_key_links_are_plain_and_never_verify() {
        let envelope = EnvelopeId::parse("5e1f4c1a-7d0b-4d8e-b0a4-1f2e3d4c5b6a").unwrap();
        let links = links(None);
        let url = links.url_for(envelope, "Combined.pdf", Utc::now());
        assert_eq!(url, format!("https://cs.example.com/base/documents/{envelope}/Combined.pdf"));
        assert_eq!(links.verify(envelope, "Combined.pdf", Some("1"), Some("x"), Utc::now()), Err(LinkError::Unsigned));
    }
}
