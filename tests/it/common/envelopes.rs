//! Completed envelopes as `process_envelope` hands them to the events
//! stage, and that stage's write: plan, then outbox, in one transaction.

use chrono::{DateTime, Utc};
use countersign::domain::{ConnectNotification, Envelope, Format, Party, Recipient, TabValue};
use countersign::events::{Plan, Planner};
use countersign::ids::{AccountId, EnvelopeId};
use countersign::store::{DocumentRecord, EnvelopeStatus, EnvelopeUpsert, Store};

pub const ACCOUNT: &str = "f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b";

/// A Standard Webhooks secret (32 bytes) and a second one for rotations.
pub const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const NEW_SECRET: &str = "whsec_ZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXp7fH1+f4CBgoM=";

/// A fresh envelope id each call.
pub fn new_envelope_id() -> EnvelopeId {
    EnvelopeId::from_uuid(uuid::Uuid::new_v4())
}

/// An offer letter signed by the employee, with an employee id custom field.
pub fn offer_letter(envelope_id: EnvelopeId) -> ConnectNotification {
    let completed: DateTime<Utc> = "2026-11-20T10:04:00Z".parse().unwrap();
    ConnectNotification {
        format: Format::Json,
        event: "envelope-completed".into(),
        user_id: None,
        recipient_id: None,
        generated_at: completed,
        envelope: Envelope {
            account_id: AccountId::parse(ACCOUNT).unwrap(),
            envelope_id,
            status: Some("completed".into()),
            subject: Some("Offer letter for Jane Doe".into()),
            sender: Some(Party { name: Some("HR Team".into()), email: Some("offers@hr.example.com".into()) }),
            completed_at: Some(completed),
            recipients: vec![Recipient {
                recipient_id: Some("1".into()),
                kind: "signer".into(),
                name: Some("Jane Doe".into()),
                email: Some("jane.doe@example.com".into()),
                role: Some("Employee".into()),
                routing_order: Some(1),
                status: Some("completed".into()),
                signed_at: Some(completed),
                declined_reason: None,
                tabs: vec![TabValue { label: "Start Date".into(), value: "2027-01-04".into() }],
            }],
            custom_fields: vec![("Employee ID".into(), "E-1042".into())],
            documents: Vec::new(),
        },
        embedded: Vec::new(),
        has_envelope_data: true,
    }
}

/// What `process_envelope` does at its end: the envelope row, the plan's
/// events, deliveries and jobs, in one transaction.
pub async fn publish(
    store: &dyn Store,
    planner: &Planner,
    envelope: &ConnectNotification,
    documents: &[DocumentRecord],
    now: DateTime<Utc>,
) -> Plan {
    let plan = planner.plan(envelope, documents, &[], now);
    let mut tx = store.begin().await.unwrap();
    tx.upsert_envelope(&EnvelopeUpsert {
        envelope_id: envelope.envelope.envelope_id,
        account_id: envelope.envelope.account_id,
        status: if plan.needs_operator() { EnvelopeStatus::Flagged } else { EnvelopeStatus::Processed },
        subject: envelope.envelope.subject.clone(),
        completed_at: envelope.envelope.completed_at,
    })
    .await
    .unwrap();
    for document in documents {
        tx.upsert_document(document).await.unwrap();
    }
    countersign::pipeline::write_outbox(&mut *tx, &plan.events, plan.max_attempts).await.unwrap();
    tx.commit().await.unwrap();
    plan
}

/// Publishes `count` new offer letters; returns their plans.
pub async fn publish_many(store: &dyn Store, planner: &Planner, count: usize) -> Vec<Plan> {
    let mut plans = Vec::new();
    for _ in 0..count {
        let envelope = offer_letter(new_envelope_id());
        plans.push(publish(store, planner, &envelope, &[], Utc::now()).await);
    }
    plans
}
