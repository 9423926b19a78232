//! Who exists in the sandbox: one integration key with its real RSA key
//! pair, one user, one account, and the account's Connect HMAC key.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use rand::RngExt;
use uuid::Uuid;

use super::envelopes::Person;
use crate::ids::{AccountId, UserId};

#[derive(Clone)]
pub struct Identity {
    pub integration_key: Uuid,
    pub user: Person,
    pub account_id: AccountId,
    pub account_name: String,
    /// PKCS#8 PEM, as DocuSign's "Generate RSA" hands it out.
    pub private_key_pem: String,
    /// PKCS#1 DER of the public half, registered on the integration key.
    pub public_key_der: Vec<u8>,
    /// The account's Connect HMAC key(s), newest first.
    pub hmac_keys: Vec<String>,
    pub redirect_uri: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("integration_key", &self.integration_key)
            .field("user", &self.user.user_id)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot generate the sandbox's RSA key pair")]
pub struct KeyGenerationFailed;

impl Identity {
    /// A fresh identity with a newly generated 2048-bit RSA key.
    pub fn generate(redirect_uri: &str) -> Result<Self, KeyGenerationFailed> {
        let key = KeyPair::generate(KeySize::Rsa2048).map_err(|_| KeyGenerationFailed)?;
        let pkcs8 = key.as_der().map_err(|_| KeyGenerationFailed)?;
        let public_key_der = aws_lc_rs::signature::KeyPair::public_key(&key).as_ref().to_vec();
        let mut rng = rand::rng();
        let hmac_key: [u8; 32] = rng.random();
        Ok(Self {
            integration_key: Uuid::new_v4(),
            user: Person {
                user_id: UserId::from_uuid(Uuid::new_v4()),
                name: "Sandbox Integration User".into(),
                email: "integration@sandbox.countersign.example".into(),
            },
            account_id: AccountId::from_uuid(Uuid::new_v4()),
            account_name: "Sandbox Company".into(),
            private_key_pem: pem("PRIVATE KEY", pkcs8.as_ref()),
            public_key_der,
            hmac_keys: vec![STANDARD.encode(hmac_key)],
            redirect_uri: redirect_uri.to_string(),
        })
    }
}

/// PEM armour: base64 in 64-character lines.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The account's short number, which legacy XML puts in the `AccountId`
/// custom field where one might expect the GUID. Derived from the GUID so
/// that every envelope of the account names the same one.
pub fn account_number(account: AccountId) -> String {
    let uuid = account.as_uuid();
    let bytes = uuid.as_bytes();
    let value = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    (1_000_000 + value % 9_000_000).to_string()
}
