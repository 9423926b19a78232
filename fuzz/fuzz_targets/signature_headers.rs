//! Arbitrary request headers through the Connect signature check. Besides
//! "no panic", one property holds whatever else the request carries: a body
//! signed with a configured key in `X-DocuSign-Signature-1` is accepted,
//! within that key's scope, and the same request without it is not.
//!
//! Input: two control bytes, then lines: key material, body, and headers as
//! `name: value` (lines that are not a valid header are skipped).

#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use countersign::config::{ConnectAccountSettings, ConnectSettings, Secret};
use countersign::ids::AccountId;
use countersign::ingest::ConnectAuth;
use countersign::ingest::auth::{KeyScope, signatures};
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

const ACCOUNT: &str = "0b7f5c1e-4a7d-4c1e-9e0a-3d2f6b8a9c41";

/// src/http.rs lets 256 headers through; one is the signature added here.
const MAX_OTHER_HEADERS: usize = 255;

fuzz_target!(|data: &[u8]| {
    let [position, flags, rest @ ..] = data else { return };
    let sign_with_account_key = position & 0x80 != 0;
    let position = usize::from(position & 0x7f);
    let ask_for_account = flags & 1 != 0;
    let with_basic = flags & 2 != 0;

    let mut lines = rest.split(|&b| b == b'\n');
    let material = String::from_utf8_lossy(lines.next().unwrap_or_default());
    let body = lines.next().unwrap_or_default();
    let others: Vec<(HeaderName, HeaderValue)> = lines.filter_map(header).take(MAX_OTHER_HEADERS).collect();

    // Prefixed so that the two keys always differ and neither is empty.
    let global_key = format!("any:{material}");
    let account_key = format!("account:{material}");
    let account = AccountId::parse(ACCOUNT).expect("a valid GUID");
    let settings = ConnectSettings {
        hmac_keys: vec![Secret::new(global_key.clone())],
        accounts: vec![ConnectAccountSettings {
            account_id: ACCOUNT.to_owned(),
            hmac_keys: vec![Secret::new(account_key.clone())],
            hmac_keys_file: None,
        }],
        basic_auth_user: with_basic.then(|| "connect".to_owned()),
        basic_auth_password: with_basic.then(|| Secret::new(material.to_string())),
        ..ConnectSettings::default()
    };
    let auth = ConnectAuth::from_settings(&settings);

    let key = if sign_with_account_key { &account_key } else { &global_key };
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    let signature =
        HeaderValue::from_str(&STANDARD.encode(mac.finalize().into_bytes())).expect("base64 is a valid value");

    let mut unsigned = HeaderMap::new();
    let mut signed = HeaderMap::new();
    for (index, (name, value)) in others.iter().enumerate() {
        if index == position {
            signed.append("x-docusign-signature-1", signature.clone());
        }
        unsigned.append(name, value.clone());
        signed.append(name, value.clone());
    }
    if position >= others.len() {
        signed.append("x-docusign-signature-1", signature);
    }
    let _ = auth.basic_ok(&signed);

    let asked = ask_for_account.then_some(account);
    let expected = match (sign_with_account_key, asked) {
        (false, _) => Some(KeyScope::Any),
        (true, Some(id)) => Some(KeyScope::Account(id)),
        // An account's key vouches for nothing when the request names no account.
        (true, None) => None,
    };
    assert_eq!(scope(&auth, asked, body, &signed), expected, "signed request");
    // No one without a key can produce a matching HMAC, so whatever the
    // other headers hold, they must not match.
    assert_eq!(scope(&auth, asked, body, &unsigned), None, "unsigned request");
});

/// One `name: value` line, trimmed as an HTTP/1 parser would trim it.
fn header(line: &[u8]) -> Option<(HeaderName, HeaderValue)> {
    let colon = line.iter().position(|&b| b == b':')?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    let value = value.trim_ascii();
    Some((HeaderName::from_bytes(name).ok()?, HeaderValue::from_bytes(value).ok()?))
}

/// The body goes in two pieces, as it streams in from the socket.
fn scope(auth: &ConnectAuth, account: Option<AccountId>, body: &[u8], headers: &HeaderMap) -> Option<KeyScope> {
    let mut verifier = auth.verifier(account);
    let (head, tail) = body.split_at(body.len() / 2);
    verifier.update(head);
    verifier.update(tail);
    verifier.matching_scope(&signatures(headers))
}
