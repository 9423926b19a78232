//! Typed identifiers. DocuSign GUIDs are parsed once at the edge so the core
//! never handles an unchecked string; ids countersign mints itself are UUIDv7
//! so they sort by creation time in both stores.

use std::fmt;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A value that should have been a DocuSign GUID but was not.
#[derive(Debug, thiserror::Error)]
#[error("{what} is not a GUID: {value:?}")]
pub struct InvalidGuid {
    what: &'static str,
    value: String,
}

/// Every id travels as a hyphenated UUID string, which is what the OpenAPI
/// description of the admin API says about each of them.
fn uuid_schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
    ObjectBuilder::new().schema_type(Type::String).format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))).into()
}

macro_rules! docusign_guid {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(Uuid);

        impl $name {
            /// Parses a GUID in any case DocuSign sends it; it prints lowercase.
            pub fn parse(value: &str) -> Result<Self, InvalidGuid> {
                Uuid::try_parse(value.trim())
                    .map(Self)
                    .map_err(|_| InvalidGuid { what: $what, value: value.chars().take(64).collect() })
            }

            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                uuid_schema()
            }
        }

        impl utoipa::ToSchema for $name {}

        impl TryFrom<String> for $name {
            type Error = InvalidGuid;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.to_string()
            }
        }
    };
}

docusign_guid!(
    /// A DocuSign account (`accountId`).
    AccountId,
    "account id"
);
docusign_guid!(
    /// A DocuSign envelope (`envelopeId`).
    EnvelopeId,
    "envelope id"
);
docusign_guid!(
    /// A DocuSign user (`userId`, the JWT `sub`).
    UserId,
    "user id"
);

macro_rules! local_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn parse(value: &str) -> Result<Self, uuid::Error> {
                Uuid::try_parse(value.trim()).map(Self)
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                uuid_schema()
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

local_id!(
    /// A job in the durable queue.
    JobId
);
local_id!(
    /// A Connect notification as countersign recorded it.
    NotificationId
);
local_id!(
    /// An agreement an IT system asked countersign to send.
    AgreementId
);
local_id!(
    /// A provisioning event; deterministic per (envelope, rule), so a rerun plans the same ids.
    EventId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_parsing_normalises_case_and_rejects_garbage() {
        let upper = EnvelopeId::parse("93BE49AB-AFA0-4ADF-933C-F752070D71EC").unwrap();
        assert_eq!(upper.to_string(), "93be49ab-afa0-4adf-933c-f752070d71ec");
        let err = EnvelopeId::parse("../../etc/passwd").unwrap_err();
        assert!(err.to_string().starts_with("envelope id is not a GUID"));
    }
}
