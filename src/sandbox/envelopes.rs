//! Realistic completed envelopes, reproducible from a seed: signers with
//! names, emails and roles, envelope custom fields, text tabs with values,
//! and one to three documents of a configurable size.

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use uuid::Uuid;

use crate::ids::{AccountId, EnvelopeId, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Person {
    pub user_id: UserId,
    pub name: String,
    pub email: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tab {
    pub label: String,
    pub value: String,
    /// DocuSign's tab type, e.g. "text", "date", "list".
    pub tab_type: String,
    pub document_id: String,
    pub page: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signer {
    /// DocuSign's recipient id: a small number as a string, sometimes a long one.
    pub recipient_id: String,
    pub recipient_id_guid: Uuid,
    pub person: Person,
    pub role_name: String,
    pub routing_order: u32,
    pub sent_at: DateTime<Utc>,
    pub delivered_at: DateTime<Utc>,
    pub signed_at: DateTime<Utc>,
    pub ip_address: String,
    pub tabs: Vec<Tab>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Document {
    /// "1", "2", … as DocuSign numbers envelope documents.
    pub document_id: String,
    pub document_id_guid: Uuid,
    pub name: String,
    pub pages: u32,
    /// The PDF is padded to about this many bytes.
    pub target_bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Envelope {
    pub account_id: AccountId,
    pub envelope_id: EnvelopeId,
    pub template_id: Uuid,
    pub subject: String,
    pub sender: Person,
    pub signers: Vec<Signer>,
    pub carbon_copies: Vec<Person>,
    /// Envelope custom fields (textCustomFields), in order.
    pub custom_fields: Vec<(String, String)>,
    pub documents: Vec<Document>,
    pub created_at: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
}

impl Envelope {
    /// When the last signer signed, DocuSign marks the envelope completed.
    pub fn status(&self) -> &'static str {
        "completed"
    }

    /// Moves every timestamp so that the envelope completes at `now`,
    /// keeping the intervals between them.
    pub fn shift_completion_to(&mut self, now: DateTime<Utc>) {
        let delta = now - self.completed_at;
        self.created_at += delta;
        self.sent_at += delta;
        self.completed_at += delta;
        for signer in &mut self.signers {
            signer.sent_at += delta;
            signer.delivered_at += delta;
            signer.signed_at += delta;
        }
    }
}

/// What the generator varies and what it keeps fixed.
#[derive(Debug, Clone)]
pub struct GeneratorOptions {
    pub account_id: AccountId,
    pub sender: Person,
    /// Size of each generated document, in bytes (at least a small valid PDF).
    pub document_bytes: usize,
    /// How many documents an envelope carries, at most (1–3).
    pub max_documents: usize,
}

/// One kind of envelope a company sends, with the template it comes from.
struct Scenario {
    /// What the control API calls it.
    name: &'static str,
    template_id: &'static str,
    subject: &'static str,
    roles: &'static [&'static str],
    documents: &'static [&'static str],
    tabs: &'static [&'static str],
}

/// Template ids are fixed so that operators' rules can match on them.
pub const ONBOARDING_TEMPLATE: &str = "5c1b6f0e-8a4d-4b3e-9f2a-7d6c5b4a3f21";
pub const NDA_TEMPLATE: &str = "a7e3d2c1-4b5f-4e6a-8d9c-0b1a2f3e4d5c";
pub const EQUIPMENT_TEMPLATE: &str = "3f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f";

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "onboarding",
        template_id: ONBOARDING_TEMPLATE,
        subject: "Offer letter and onboarding forms for {name}",
        roles: &["Employee", "HR Manager"],
        documents: &["Offer Letter", "Employee Handbook Acknowledgement", "Direct Deposit Form"],
        tabs: &["first_name", "last_name", "start_date", "job_title", "laptop_model"],
    },
    Scenario {
        name: "nda",
        template_id: NDA_TEMPLATE,
        subject: "Mutual NDA: {company}",
        roles: &["Counterparty", "Legal"],
        documents: &["Mutual Non-Disclosure Agreement", "Exhibit A"],
        tabs: &["company_name", "signatory_title", "effective_date"],
    },
    Scenario {
        name: "equipment",
        template_id: EQUIPMENT_TEMPLATE,
        subject: "Equipment request for {name}",
        roles: &["Employee", "IT Approver"],
        documents: &["Equipment Request"],
        tabs: &["laptop_model", "monitor_count", "delivery_address"],
    },
];

/// The names [`EnvelopeGenerator::next_envelope_of`] accepts, in the generator's order.
pub fn scenario_names() -> Vec<&'static str> {
    SCENARIOS.iter().map(|s| s.name).collect()
}

const FIRST: &[&str] = &["Ada", "Grace", "Alan", "Katherine", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Radia"];
const LAST: &[&str] =
    &["Lovelace", "Hopper", "Turing", "Johnson", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson", "Perlman"];
const COMPANIES: &[&str] = &["Initech", "Globex", "Umbrella Health", "Soylent Foods", "Hooli", "Vandelay Industries"];
const DEPARTMENTS: &[&str] = &["Engineering", "Finance", "People", "Sales", "Support"];
const LAPTOPS: &[&str] = &["MacBook Pro 14", "ThinkPad X1 Carbon", "Dell XPS 13", "Framework 13"];
const TITLES: &[&str] = &["Software Engineer", "Accountant", "Recruiter", "Account Executive", "Support Engineer"];

/// A seeded stream of envelopes: the same seed gives the same envelopes.
#[derive(Debug)]
pub struct EnvelopeGenerator {
    rng: StdRng,
    options: GeneratorOptions,
    clock: DateTime<Utc>,
}

impl EnvelopeGenerator {
    pub fn new(seed: u64, options: GeneratorOptions) -> Self {
        let clock = Utc.with_ymd_and_hms(2026, 3, 2, 9, 0, 0).single().unwrap_or(DateTime::UNIX_EPOCH);
        Self { rng: StdRng::seed_from_u64(seed), options, clock }
    }

    fn guid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(self.rng.random()).into_uuid()
    }

    fn pick<'a>(&mut self, items: &'a [&'a str]) -> &'a str {
        items[self.rng.random_range(0..items.len())]
    }

    fn person(&mut self, company: &str) -> Person {
        let (first, last) = (self.pick(FIRST), self.pick(LAST));
        let domain = company.to_lowercase().replace(' ', "");
        Person {
            user_id: UserId::from_uuid(self.guid()),
            name: format!("{first} {last}"),
            email: format!("{}.{}@{domain}.example", first.to_lowercase(), last.to_lowercase()),
        }
    }

    /// The next completed envelope.
    pub fn next_envelope(&mut self) -> Envelope {
        let scenario = &SCENARIOS[self.rng.random_range(0..SCENARIOS.len())];
        self.envelope_of(scenario)
    }

    /// The next completed envelope of the scenario named `name` (one of
    /// [`scenario_names`]); `None` when no scenario has that name.
    pub fn next_envelope_of(&mut self, name: &str) -> Option<Envelope> {
        let scenario = SCENARIOS.iter().find(|s| s.name == name)?;
        Some(self.envelope_of(scenario))
    }

    fn envelope_of(&mut self, scenario: &Scenario) -> Envelope {
        let company = self.pick(COMPANIES).to_string();
        let created_at = self.clock;
        self.clock += Duration::minutes(self.rng.random_range(3..90));
        let sent_at = created_at + Duration::seconds(self.rng.random_range(5..300));

        let mut signed = sent_at;
        let mut signers: Vec<Signer> = Vec::new();
        for (i, role) in scenario.roles.iter().enumerate() {
            let person = self.person(&company);
            let delivered_at = signed + Duration::minutes(self.rng.random_range(1..120));
            signed = delivered_at + Duration::seconds(self.rng.random_range(30..1800));
            // Real recipient ids are usually "1", "2"…, sometimes long numbers.
            let recipient_id = if self.rng.random_bool(0.2) {
                self.rng.random_range(10_000_000u32..99_999_999).to_string()
            } else {
                (i + 1).to_string()
            };
            signers.push(Signer {
                recipient_id,
                recipient_id_guid: self.guid(),
                person,
                role_name: (*role).to_string(),
                routing_order: u32::try_from(i + 1).unwrap_or(1),
                sent_at,
                delivered_at,
                signed_at: signed,
                ip_address: format!("203.0.113.{}", self.rng.random_range(1..255)),
                tabs: Vec::new(),
            });
        }
        let first_signer = signers[0].person.name.clone();
        let (first_name, last_name) = first_signer.split_once(' ').unwrap_or((&first_signer, ""));
        let tabs: Vec<Tab> = scenario
            .tabs
            .iter()
            .map(|label| {
                let value = match *label {
                    "first_name" => first_name.to_string(),
                    "last_name" => last_name.to_string(),
                    "start_date" | "effective_date" => {
                        (signed + Duration::days(self.rng.random_range(7..45))).format("%Y-%m-%d").to_string()
                    }
                    "job_title" | "signatory_title" => self.pick(TITLES).to_string(),
                    "laptop_model" => self.pick(LAPTOPS).to_string(),
                    "company_name" => company.clone(),
                    "monitor_count" => self.rng.random_range(0..3).to_string(),
                    _ => format!("{} Main St, Springfield", self.rng.random_range(1..999)),
                };
                Tab {
                    label: (*label).to_string(),
                    value,
                    tab_type: if label.ends_with("date") { "date".into() } else { "text".into() },
                    document_id: "1".into(),
                    page: 1,
                }
            })
            .collect();
        signers[0].tabs = tabs;

        let count = self.rng.random_range(1..=self.options.max_documents.clamp(1, 3)).min(scenario.documents.len());
        let documents = scenario.documents[..count]
            .iter()
            .enumerate()
            .map(|(i, name)| Document {
                document_id: (i + 1).to_string(),
                document_id_guid: self.guid(),
                name: format!("{name}.pdf"),
                pages: self.rng.random_range(1..4),
                target_bytes: self.options.document_bytes,
            })
            .collect();
        let employee_id = format!("E{:05}", self.rng.random_range(1..99_999));
        let custom_fields = vec![
            ("department".to_string(), self.pick(DEPARTMENTS).to_string()),
            ("employee_id".to_string(), employee_id),
            ("cost_center".to_string(), format!("CC-{}", self.rng.random_range(100..999))),
        ];
        let subject = scenario.subject.replace("{name}", &first_signer).replace("{company}", &company);
        let cc = self.person(&company);
        Envelope {
            account_id: self.options.account_id,
            envelope_id: EnvelopeId::from_uuid(self.guid()),
            template_id: Uuid::parse_str(scenario.template_id).unwrap_or_default(),
            subject,
            sender: self.options.sender.clone(),
            signers,
            carbon_copies: vec![cc],
            custom_fields,
            documents,
            created_at,
            sent_at,
            completed_at: signed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> GeneratorOptions {
        GeneratorOptions {
            account_id: AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap(),
            sender: Person {
                user_id: UserId::parse("4c0f6a7e-2b3d-4e5f-8a9b-0c1d2e3f4a5b").unwrap(),
                name: "Sam Sender".into(),
                email: "sam@example.com".into(),
            },
            document_bytes: 20_000,
            max_documents: 3,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_envelopes_and_another_seed_others() {
        let a: Vec<_> = (0..5)
            .map({
                let mut g = EnvelopeGenerator::new(42, options());
                move |_| g.next_envelope()
            })
            .collect();
        let b: Vec<_> = (0..5)
            .map({
                let mut g = EnvelopeGenerator::new(42, options());
                move |_| g.next_envelope()
            })
            .collect();
        assert_eq!(a, b);
        let c = EnvelopeGenerator::new(43, options()).next_envelope();
        assert_ne!(a[0].envelope_id, c.envelope_id);
    }

    #[test]
    fn envelopes_look_like_completed_docusign_envelopes() {
        let mut generator = EnvelopeGenerator::new(1, options());
        for _ in 0..50 {
            let envelope = generator.next_envelope();
            assert!((1..=3).contains(&envelope.documents.len()));
            assert!(envelope.signers.len() >= 2);
            assert!(
                envelope.signers.iter().all(|s| s.person.email.contains('@') && s.signed_at <= envelope.completed_at)
            );
            assert!(!envelope.signers[0].tabs.is_empty());
            assert!(envelope.custom_fields.iter().any(|(name, _)| name == "employee_id"));
            assert!(envelope.sent_at < envelope.completed_at);
        }
    }

    #[test]
    fn a_named_scenario_gives_envelopes_of_its_template_only() {
        let mut generator = EnvelopeGenerator::new(1, options());
        assert_eq!(scenario_names(), ["onboarding", "nda", "equipment"]);
        for _ in 0..10 {
            let envelope = generator.next_envelope_of("equipment").unwrap();
            assert_eq!(envelope.template_id.to_string(), EQUIPMENT_TEMPLATE);
            assert!(envelope.subject.starts_with("Equipment request for "));
        }
        assert_eq!(generator.next_envelope_of("onboarding").unwrap().template_id.to_string(), ONBOARDING_TEMPLATE);
        assert!(generator.next_envelope_of("payroll").is_none());
    }
}
