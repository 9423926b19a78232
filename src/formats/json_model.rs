//! The parts of a JSON SIM `envelopeSummary` that carry no documents, with
//! plain derives: sender, recipients with their tabs, custom fields.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};

use super::{FormatError, clip, invalid, non_empty, parse_utc};
use crate::domain::{Recipient, TabValue};

/// A scalar as DocuSign sends it: nearly always a string ("1", "true"), but
/// a number or boolean is taken too. Parsed where it is used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl Visitor<'_> for ScalarVisitor {
    type Value = Scalar;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, number or boolean")
    }
    fn visit_str<E: de::Error>(self, value: &str) -> Result<Scalar, E> {
        Ok(Scalar(value.to_owned()))
    }
    fn visit_string<E: de::Error>(self, value: String) -> Result<Scalar, E> {
        Ok(Scalar(value))
    }
    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Scalar, E> {
        Ok(Scalar(value.to_string()))
    }
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Scalar, E> {
        Ok(Scalar(value.to_string()))
    }
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Scalar, E> {
        Ok(Scalar(value.to_string()))
    }
    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Scalar, E> {
        Ok(Scalar(value.to_string()))
    }
}

/// An optional scalar as text, "" counting as absent.
pub(super) fn text(value: Option<Scalar>) -> Option<String> {
    non_empty(value.map(|s| s.0))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawParty {
    pub user_name: Option<Scalar>,
    pub email: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawCustomFields {
    text_custom_fields: Option<Vec<RawCustomField>>,
    list_custom_fields: Option<Vec<RawCustomField>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawCustomField {
    name: Option<Scalar>,
    value: Option<Scalar>,
}

impl RawCustomFields {
    /// Text fields, then list fields; a field without a name cannot be
    /// looked up and is dropped, an unset value is "".
    pub(super) fn into_pairs(self) -> Vec<(String, String)> {
        let fields = self.text_custom_fields.into_iter().flatten().chain(self.list_custom_fields.into_iter().flatten());
        fields.filter_map(|f| Some((text(f.name)?, f.value.map(|v| v.0).unwrap_or_default()))).collect()
    }
}

/// `recipients`: one array per recipient type, each entry's type defaulting
/// to its array's when `recipientType` is missing.
#[derive(Debug, Default)]
pub(super) struct RawRecipients(Vec<(&'static str, RawRecipient)>);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "camelCase")]
enum RecipientGroup {
    Signers,
    CarbonCopies,
    Agents,
    Editors,
    Intermediaries,
    CertifiedDeliveries,
    InPersonSigners,
    Witnesses,
    Notaries,
    Seals,
    #[serde(other)]
    Other,
}

impl RecipientGroup {
    /// DocuSign's own `recipientType` for each array.
    fn kind(&self) -> Option<&'static str> {
        Some(match self {
            Self::Signers => "signer",
            Self::CarbonCopies => "carboncopy",
            Self::Agents => "agent",
            Self::Editors => "editor",
            Self::Intermediaries => "intermediary",
            Self::CertifiedDeliveries => "certifieddelivery",
            Self::InPersonSigners => "inpersonsigner",
            Self::Witnesses => "witness",
            Self::Notaries => "notary",
            Self::Seals => "seal",
            Self::Other => return None,
        })
    }
}

impl<'de> Deserialize<'de> for RawRecipients {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Groups;
        impl<'de> Visitor<'de> for Groups {
            type Value = RawRecipients;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the recipients object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawRecipients, A::Error> {
                let mut all = Vec::new();
                while let Some(group) = map.next_key::<RecipientGroup>()? {
                    // recipientCount, currentRoutingOrder and the like.
                    let Some(kind) = group.kind() else {
                        map.next_value::<IgnoredAny>()?;
                        continue;
                    };
                    let members: Option<Vec<RawRecipient>> = map.next_value()?;
                    all.extend(members.into_iter().flatten().map(|r| (kind, r)));
                }
                Ok(RawRecipients(all))
            }
        }
        deserializer.deserialize_map(Groups)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RawRecipient {
    recipient_id: Option<Scalar>,
    name: Option<Scalar>,
    email: Option<Scalar>,
    role_name: Option<Scalar>,
    routing_order: Option<Scalar>,
    status: Option<Scalar>,
    signed_date_time: Option<Scalar>,
    declined_reason: Option<Scalar>,
    recipient_type: Option<Scalar>,
    tabs: Option<RawTabs>,
}

impl RawRecipients {
    pub(super) fn into_recipients(self) -> Result<Vec<Recipient>, FormatError> {
        self.0.into_iter().map(|(kind, r)| r.into_recipient(kind)).collect()
    }
}

impl RawRecipient {
    fn into_recipient(self, group_kind: &'static str) -> Result<Recipient, FormatError> {
        let routing_order = text(self.routing_order)
            .map(|order| {
                order
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| invalid("recipients.routingOrder", format!("not a routing order: {}", clip(&order))))
            })
            .transpose()?;
        let signed_at = text(self.signed_date_time).map(|t| parse_utc("recipients.signedDateTime", &t)).transpose()?;
        Ok(Recipient {
            recipient_id: text(self.recipient_id),
            kind: text(self.recipient_type).map_or_else(|| group_kind.to_owned(), |k| k.trim().to_ascii_lowercase()),
            name: text(self.name),
            email: text(self.email),
            role: text(self.role_name),
            routing_order,
            status: text(self.status).map(|s| s.trim().to_ascii_lowercase()),
            signed_at,
            declined_reason: text(self.declined_reason),
            tabs: self.tabs.map(|t| t.0).unwrap_or_default(),
        })
    }
}

/// `tabs`: every `…Tabs` array flattened into label/value pairs, in the
/// order they arrive. Tabs that carry no value (sign-here, initials) are
/// left out.
#[derive(Debug, Default)]
pub(super) struct RawTabs(Vec<TabValue>);

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTab {
    tab_label: Option<Scalar>,
    value: Option<Scalar>,
    /// Checkboxes report `selected` rather than a value.
    selected: Option<Scalar>,
    /// Radio groups: the label is the group's name, the value is the
    /// selected radio's.
    group_name: Option<Scalar>,
    radios: Option<Vec<RawRadio>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawRadio {
    value: Option<Scalar>,
    selected: Option<Scalar>,
}

impl RawTab {
    fn into_tab_value(self) -> Option<TabValue> {
        let label = text(self.tab_label).or_else(|| text(self.group_name))?;
        let selected_radio = self
            .radios
            .into_iter()
            .flatten()
            .find(|r| r.selected.as_ref().is_some_and(|s| s.0.trim().eq_ignore_ascii_case("true")))
            .and_then(|r| r.value);
        // A checkbox may carry an empty `value` beside the `selected` that matters.
        let value = match self.value {
            Some(value) if !value.0.is_empty() => value,
            value => selected_radio.or(self.selected).or(value)?,
        };
        Some(TabValue { label, value: value.0 })
    }
}

impl<'de> Deserialize<'de> for RawTabs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Groups;
        impl<'de> Visitor<'de> for Groups {
            type Value = RawTabs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("the tabs object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawTabs, A::Error> {
                let mut tabs = Vec::new();
                while let Some(group) = map.next_key::<String>()? {
                    if group.ends_with("Tabs") {
                        let members: Option<Vec<RawTab>> = map.next_value()?;
                        tabs.extend(members.into_iter().flatten().filter_map(RawTab::into_tab_value));
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(RawTabs(tabs))
            }
        }
        deserializer.deserialize_map(Groups)
    }
}
