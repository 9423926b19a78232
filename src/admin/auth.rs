//! Who may use the admin surface: the holder of `admin.token`.
//!
//! The API takes it as a bearer token on every request. The page takes it
//! once in a login form and answers with a session cookie: an expiry and an
//! HMAC over it keyed by the token. Sessions therefore need no server-side
//! table, work on every replica behind a load balancer, survive restarts,
//! and all end together when the token is rotated. Forms that change
//! something carry a CSRF token derived from the session the same way.

use axum::http::{HeaderMap, header};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "countersign_admin";

/// How long a page session lasts before the token must be given again.
pub const SESSION_SECONDS: i64 = 12 * 3600;

fn mac(token: &Secret, purpose: &str, value: &str) -> String {
    // HMAC accepts a key of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(token.expose().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(purpose.as_bytes());
    mac.update(b"\n");
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A fresh session cookie value, valid until `now + SESSION_SECONDS`.
pub fn new_session(token: &Secret, now: i64) -> String {
    let expires = now.saturating_add(SESSION_SECONDS);
    format!("{expires}.{}", mac(token, "session", &expires.to_string()))
}

/// Whether a session cookie value is one we issued and still current.
pub fn session_valid(token: &Secret, value: &str, now: i64) -> bool {
    let Some((expires, signature)) = value.split_once('.') else { return false };
    let Ok(expiry) = expires.parse::<i64>() else { return false };
    let expected = mac(token, "session", expires);
    bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) && expiry > now
}

/// The session cookie of a request, if it sent one.
pub fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// The CSRF token the forms of `session` carry.
pub fn csrf_token(token: &Secret, session: &str) -> String {
    mac(token, "csrf", session)
}

pub fn csrf_valid(token: &Secret, session: &str, given: &str) -> bool {
    bool::from(csrf_token(token, session).as_bytes().ct_eq(given.as_bytes()))
}

/// `Set-Cookie` for a session; `Secure` when the service is reached over HTTPS.
pub fn set_cookie(value: &str, max_age: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{SESSION_COOKIE}={value}; Path=/admin; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_holds_until_it_expires_and_only_for_its_token() {
        let token = Secret::new("a-long-admin-token-for-tests");
        let session = new_session(&token, 1_000);
        assert!(session_valid(&token, &session, 1_001));
        assert!(!session_valid(&token, &session, 1_000 + SESSION_SECONDS), "expired");
        assert!(!session_valid(&Secret::new("another-admin-token-entirely"), &session, 1_001), "token rotated");
        let (_, signature) = session.split_once('.').unwrap();
        let stretched = format!("{}.{signature}", 1_000 + 10 * SESSION_SECONDS);
        assert!(!session_valid(&token, &stretched, 1_001), "the expiry is signed");
        assert!(!session_valid(&token, "garbage", 1_001));
    }

    #[test]
    fn csrf_tokens_belong_to_their_session() {
        let token = Secret::new("a-long-admin-token-for-tests");
        let one = new_session(&token, 1_000);
        let two = new_session(&token, 2_000);
        assert!(csrf_valid(&token, &one, &csrf_token(&token, &one)));
        assert!(!csrf_valid(&token, &two, &csrf_token(&token, &one)));
        assert!(!csrf_valid(&token, &one, ""));
    }

    #[test]
    fn the_session_cookie_is_read_from_its_header() {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, "a=1; countersign_admin=5.ff; b=2".parse().unwrap());
        assert_eq!(session_cookie(&headers), Some("5.ff"));
    }
}
