//! The Connect sender: the notifications DocuSign posts to a listener when an
//! envelope changes, in both formats a configuration can choose (JSON SIM,
//! `docs/DOCUSIGN.md` §1, and legacy XML, §2), signed with
//! `X-DocuSign-Signature-N` HMACs (§4) and retried the way Connect retries (§3).
//!
//! A completed envelope's notification for an earlier event (`envelope-sent`,
//! `recipient-delivered`, …) describes the envelope as it stood at that event
//! (see `Moment`). An envelope still in process is described as it is: the
//! sandbox notifies about those as their events happen.

mod json_sim;
mod sender;
mod xml;

use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::envelopes::{Envelope, EnvelopeStatus as Status, Signer};

pub use json_sim::json_sim_body;
pub use sender::{ConnectSender, DeliveryReport, RetryPolicy};
pub use xml::{xml_body, xml_body_at};

/// What one notification carries, as a Connect configuration's `events` and
/// `eventData.includeData` would ask for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationOptions {
    /// The JSON SIM event name, e.g. `envelope-completed` or `recipient-completed`.
    pub event: String,
    /// Adds `data.envelopeSummary` (JSON SIM only; legacy XML always carries the envelope).
    pub include_summary: bool,
    /// Adds the PDFs: `PDFBytes` in JSON SIM's `envelopeDocuments`, `DocumentPDFs` in XML.
    pub include_documents: bool,
    /// The recipient a `recipient-*` event is about; the last signer when unset,
    /// since that is the recipient whose completion completes the envelope.
    pub recipient_id: Option<String>,
    /// The Connect configuration that "produced" the message.
    pub configuration_id: i64,
}

impl Default for NotificationOptions {
    fn default() -> Self {
        Self {
            event: "envelope-completed".into(),
            include_summary: true,
            include_documents: false,
            recipient_id: None,
            // The size of ids seen in real captures, so receivers storing it as i32 still work.
            configuration_id: 10_363_315,
        }
    }
}

/// The two message formats a configuration can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectFormat {
    Json,
    Xml,
}

impl ConnectFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ConnectFormat::Json => "application/json",
            ConnectFormat::Xml => "text/xml; charset=utf-8",
        }
    }
}

type HmacSha256 = Hmac<Sha256>;

/// `X-DocuSign-Signature-1..N`: base64 HMAC-SHA256 of the exact body, one per
/// key in key order, keyed with the secret string's bytes.
pub fn signature_headers(body: &[u8], keys: &[String]) -> Vec<(String, String)> {
    keys.iter()
        .enumerate()
        .filter_map(|(index, key)| {
            // HMAC takes keys of any length, so this never skips; numbering by
            // position keeps the other headers stable even if it ever did.
            let mut mac = HmacSha256::new_from_slice(key.as_bytes()).ok()?;
            mac.update(body);
            let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            Some((format!("X-DocuSign-Signature-{}", index + 1), signature))
        })
        .collect()
}

/// A point on a completed envelope's timeline: everything that happened up to
/// `at` has happened, everything later has not. Declines and voids never
/// happened to generated envelopes, so they are laid onto the timeline where
/// they would plausibly have happened instead of the next step.
///
/// An envelope that is not completed has no later steps to take back: its
/// moment is now, and what happened is read from the recorded statuses.
#[derive(Debug, Clone, Copy)]
struct Moment<'a> {
    status: Status,
    at: DateTime<Utc>,
    decliner: Option<&'a Signer>,
    /// The envelope as it is, not a point on a completed envelope's timeline.
    current: bool,
}

impl<'a> Moment<'a> {
    fn of(envelope: &'a Envelope, event: &str, recipient_id: Option<&str>) -> Self {
        if envelope.state != Status::Completed {
            return Moment {
                status: envelope.state,
                at: envelope.status_changed_at(),
                decliner: envelope.signers.iter().find(|s| s.status == Status::Declined),
                current: true,
            };
        }
        let signer = recipient_id
            .and_then(|id| envelope.signers.iter().find(|s| s.recipient_id == id))
            .or(envelope.signers.last());
        let at = |time: fn(&Signer) -> DateTime<Utc>| signer.map_or(envelope.completed_at, time);
        let moment = |status, at| Moment { status, at, decliner: None, current: false };
        let by_time = |at| Moment { status: status_at(envelope, at), at, decliner: None, current: false };
        match event {
            "envelope-created" | "envelope-discard" => moment(Status::Created, envelope.created_at),
            event if event.starts_with("template-") => moment(Status::Created, envelope.created_at),
            "envelope-sent" | "envelope-resent" | "envelope-corrected" => moment(Status::Sent, envelope.sent_at),
            "envelope-delivered" => {
                let first = envelope.signers.iter().map(|s| s.delivered_at).min().unwrap_or(envelope.sent_at);
                moment(Status::Delivered, first)
            }
            // The decliner declines where they would have signed.
            "envelope-declined" | "recipient-declined" => {
                Moment { status: Status::Declined, at: at(|s| s.signed_at), decliner: signer, current: false }
            }
            // The sender gives up while the last signer has the envelope open.
            "envelope-voided" => {
                let last = envelope.signers.last().map_or(envelope.sent_at, |s| s.delivered_at);
                moment(Status::Voided, last)
            }
            "recipient-sent" | "recipient-resent" | "recipient-autoresponded" | "recipient-authenticationfailed" => {
                by_time(at(|s| s.sent_at))
            }
            "recipient-delivered" | "recipient-finish-later" | "recipient-delegate" | "recipient-reassign" => {
                by_time(at(|s| s.delivered_at))
            }
            "recipient-completed" => by_time(at(|s| s.signed_at)),
            // envelope-completed, envelope-purge, envelope-deleted and names
            // Connect may add later all concern the finished envelope.
            _ => moment(Status::Completed, envelope.completed_at),
        }
    }

    /// Whether this is the completed envelope as the REST API shows it now.
    fn is_final(&self, envelope: &Envelope) -> bool {
        self.status == Status::Completed && self.at >= envelope.completed_at
    }

    /// Whether the REST representation is already the envelope at this moment.
    fn is_as_shown(&self, envelope: &Envelope) -> bool {
        self.current || self.is_final(envelope)
    }

    fn reached(&self, time: DateTime<Utc>) -> bool {
        time <= self.at
    }

    fn envelope_sent(&self, envelope: &Envelope) -> Option<DateTime<Utc>> {
        if self.current { envelope.sent_time() } else { self.reached(envelope.sent_at).then_some(envelope.sent_at) }
    }

    fn signer_sent(&self, signer: &Signer) -> Option<DateTime<Utc>> {
        if self.current { signer.sent_time() } else { self.reached(signer.sent_at).then_some(signer.sent_at) }
    }

    fn signer_delivered(&self, signer: &Signer) -> Option<DateTime<Utc>> {
        if self.current {
            signer.delivered_time()
        } else {
            self.reached(signer.delivered_at).then_some(signer.delivered_at)
        }
    }

    /// Why the signer declined, if they declined by this moment.
    fn decline_reason(&self, signer: &Signer) -> Option<String> {
        (self.signer_status(signer) == Status::Declined)
            .then(|| signer.declined_reason.clone().unwrap_or_else(|| "Declined by the recipient.".to_string()))
    }

    fn signer_status(&self, signer: &Signer) -> Status {
        if self.current {
            return signer.status;
        }
        if self.decliner.is_some_and(|d| d.recipient_id_guid == signer.recipient_id_guid) {
            Status::Declined
        } else if self.reached(signer.signed_at) {
            Status::Completed
        } else if self.reached(signer.delivered_at) {
            Status::Delivered
        } else if self.reached(signer.sent_at) {
            Status::Sent
        } else {
            Status::Created
        }
    }

    /// The latest delivery to any signer so far, which is what the envelope's
    /// delivered time shows once everyone has opened it.
    fn delivered_at(&self, envelope: &Envelope) -> Option<DateTime<Utc>> {
        envelope.signers.iter().filter_map(|s| self.signer_delivered(s)).max()
    }
}

/// The status an in-flight envelope shows at `at`.
fn status_at(envelope: &Envelope, at: DateTime<Utc>) -> Status {
    if at >= envelope.completed_at {
        Status::Completed
    } else if envelope.signers.iter().any(|s| s.delivered_at <= at) {
        Status::Delivered
    } else if at >= envelope.sent_at {
        Status::Sent
    } else {
        Status::Created
    }
}

fn is_recipient_event(event: &str) -> bool {
    event.starts_with("recipient-")
}

fn is_template_event(event: &str) -> bool {
    event.starts_with("template-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::envelopes::{EnvelopeGenerator, GeneratorOptions, Person};

    pub(super) fn envelope() -> Envelope {
        envelope_with_seed(7)
    }

    pub(super) fn envelope_with_seed(seed: u64) -> Envelope {
        let options = GeneratorOptions {
            account_id: crate::ids::AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
            sender: Person {
                user_id: crate::ids::UserId::parse("4c0f6a7e-2b3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap(),
                name: "Sam Sender".into(),
                email: "sam@example.com".into(),
            },
            document_bytes: 2_000,
            max_documents: 3,
        };
        let mut generator = EnvelopeGenerator::new(seed, options);
        // Several documents make the per-document checks meaningful.
        (0..50).map(|_| generator.next_envelope()).find(|e| e.documents.len() > 1).unwrap()
    }

    /// HMAC-SHA256 by another implementation than the one under test.
    pub(super) fn independent_hmac(key: &str, body: &[u8]) -> String {
        let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, key.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(aws_lc_rs::hmac::sign(&key, body).as_ref())
    }

    #[test]
    fn signature_headers_are_numbered_in_key_order_and_verify() {
        let keys = vec!["first secret".to_string(), "second secret".to_string()];
        let body = br#"{"event":"envelope-completed"}"#;
        let headers = signature_headers(body, &keys);
        assert_eq!(headers.len(), 2);
        assert_eq!(headers[0], ("X-DocuSign-Signature-1".to_string(), independent_hmac("first secret", body)));
        assert_eq!(headers[1], ("X-DocuSign-Signature-2".to_string(), independent_hmac("second secret", body)));
        assert_ne!(headers[0].1, headers[1].1);
        assert!(signature_headers(body, &[]).is_empty());
    }

    #[test]
    fn events_before_completion_place_the_envelope_earlier_on_its_timeline() {
        let envelope = envelope();
        let last = envelope.signers.last().unwrap();
        let first = &envelope.signers[0];

        let sent = Moment::of(&envelope, "envelope-sent", None);
        assert_eq!((sent.status, sent.at), (Status::Sent, envelope.sent_at));
        assert!(envelope.signers.iter().all(|s| sent.signer_status(s) == Status::Sent));

        let completed_by_last = Moment::of(&envelope, "recipient-completed", None);
        assert!(completed_by_last.is_final(&envelope));

        let first_done = Moment::of(&envelope, "recipient-completed", Some(&first.recipient_id));
        assert_eq!(first_done.signer_status(first), Status::Completed);
        assert_ne!(first_done.signer_status(last), Status::Completed);
        assert_eq!(first_done.status, Status::Delivered);

        let declined = Moment::of(&envelope, "envelope-declined", None);
        assert_eq!(declined.signer_status(last), Status::Declined);
        assert_eq!(declined.signer_status(first), Status::Completed);
        assert!(!declined.is_final(&envelope));

        assert!(Moment::of(&envelope, "envelope-completed", None).is_final(&envelope));
        assert!(Moment::of(&envelope, "some-future-event", None).is_final(&envelope));
    }
}
