//! Realistic completed envelopes, reproducible from a seed: signers with
//! names, emails and roles, envelope custom fields, text tabs with values,
//! and one to three documents of a configurable size. The scenarios they
//! come from are also the account's templates, which envelopes sent through
//! the REST API are created from.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use uuid::Uuid;

use crate::ids::{AccountId, EnvelopeId, UserId};

/// DocuSign's statuses of an envelope and of its recipients, in the order
/// an envelope passes them (a recipient is never `Voided`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EnvelopeStatus {
    /// A draft, or a recipient whose routing order has not come yet.
    Created,
    Sent,
    /// Opened by a recipient.
    Delivered,
    Completed,
    Declined,
    Voided,
}

impl EnvelopeStatus {
    /// The REST spelling, as in an envelope's `status`.
    pub fn as_str(self) -> &'static str {
        match self {
            EnvelopeStatus::Created => "created",
            EnvelopeStatus::Sent => "sent",
            EnvelopeStatus::Delivered => "delivered",
            EnvelopeStatus::Completed => "completed",
            EnvelopeStatus::Declined => "declined",
            EnvelopeStatus::Voided => "voided",
        }
    }

    /// The legacy XML spelling.
    pub fn legacy(self) -> &'static str {
        match self {
            EnvelopeStatus::Created => "Created",
            EnvelopeStatus::Sent => "Sent",
            EnvelopeStatus::Delivered => "Delivered",
            EnvelopeStatus::Completed => "Completed",
            EnvelopeStatus::Declined => "Declined",
            EnvelopeStatus::Voided => "Voided",
        }
    }

    /// Sent or delivered: recipients can still act, and the sender can void.
    pub fn is_in_process(self) -> bool {
        matches!(self, EnvelopeStatus::Sent | EnvelopeStatus::Delivered)
    }
}

impl fmt::Display for EnvelopeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    /// Whether the signer must fill it in (the template says so).
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Signer {
    /// DocuSign's recipient id: a small number as a string, sometimes a long one.
    pub recipient_id: String,
    pub recipient_id_guid: Uuid,
    pub person: Person,
    pub role_name: String,
    pub routing_order: u32,
    /// Only the times of the steps `status` has reached mean anything.
    pub sent_at: DateTime<Utc>,
    pub delivered_at: DateTime<Utc>,
    /// When the signer signed, or declined when `status` is `Declined`.
    pub signed_at: DateTime<Utc>,
    pub ip_address: String,
    pub tabs: Vec<Tab>,
    /// `Completed` in generated envelopes.
    pub status: EnvelopeStatus,
    pub declined_reason: Option<String>,
    /// Set when the sender asked for embedded signing.
    pub client_user_id: Option<String>,
}

impl Signer {
    pub fn sent_time(&self) -> Option<DateTime<Utc>> {
        (self.status != EnvelopeStatus::Created).then_some(self.sent_at)
    }

    pub fn delivered_time(&self) -> Option<DateTime<Utc>> {
        matches!(self.status, EnvelopeStatus::Delivered | EnvelopeStatus::Completed | EnvelopeStatus::Declined)
            .then_some(self.delivered_at)
    }

    pub fn signed_time(&self) -> Option<DateTime<Utc>> {
        (self.status == EnvelopeStatus::Completed).then_some(self.signed_at)
    }

    pub fn declined_time(&self) -> Option<DateTime<Utc>> {
        (self.status == EnvelopeStatus::Declined).then_some(self.signed_at)
    }

    /// Whether the envelope is with this signer now: sent to them, not yet finished.
    pub fn is_active(&self) -> bool {
        self.status.is_in_process()
    }
}

/// How an envelope custom field is shown; fields not named in
/// [`Envelope::custom_field_flags`] are shown and optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FieldFlags {
    /// Shown to recipients (and on the certificate); countersign's own fields are hidden.
    pub show: bool,
    pub required: bool,
}

/// An envelope custom field whose value is picked from a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListCustomField {
    pub name: String,
    pub value: String,
    pub items: Vec<String>,
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
    /// Only the times of the steps `state` has reached mean anything.
    pub created_at: DateTime<Utc>,
    pub sent_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    /// `Completed` for generated envelopes; envelopes sent through the REST
    /// API move through the others.
    pub state: EnvelopeStatus,
    pub voided_at: Option<DateTime<Utc>>,
    pub voided_reason: Option<String>,
    pub email_blurb: Option<String>,
    pub custom_field_flags: BTreeMap<String, FieldFlags>,
    pub list_custom_fields: Vec<ListCustomField>,
}

impl Envelope {
    /// The REST spelling of [`Envelope::state`].
    pub fn status(&self) -> &'static str {
        self.state.as_str()
    }

    pub fn sent_time(&self) -> Option<DateTime<Utc>> {
        (self.state != EnvelopeStatus::Created).then_some(self.sent_at)
    }

    pub fn completed_time(&self) -> Option<DateTime<Utc>> {
        (self.state == EnvelopeStatus::Completed).then_some(self.completed_at)
    }

    /// What `deliveredDateTime` shows: of a completed envelope the last
    /// signer's opening, of one in process the latest opening so far.
    pub fn delivered_time(&self) -> Option<DateTime<Utc>> {
        if self.state == EnvelopeStatus::Completed {
            return Some(self.signers.last().map_or(self.completed_at, |s| s.delivered_at));
        }
        self.signers.iter().filter_map(Signer::delivered_time).max()
    }

    pub fn declined_time(&self) -> Option<DateTime<Utc>> {
        if self.state != EnvelopeStatus::Declined {
            return None;
        }
        self.signers.iter().filter_map(Signer::declined_time).max()
    }

    pub fn voided_time(&self) -> Option<DateTime<Utc>> {
        if self.state != EnvelopeStatus::Voided {
            return None;
        }
        self.voided_at
    }

    /// When the status last changed: what the listing's `from_date` filters on.
    pub fn status_changed_at(&self) -> DateTime<Utc> {
        let latest_step = || {
            self.signers
                .iter()
                .flat_map(|s| [s.sent_time(), s.delivered_time(), s.signed_time()])
                .flatten()
                .max()
                .map_or(self.sent_at, |t| t.max(self.sent_at))
        };
        match self.state {
            EnvelopeStatus::Created => self.created_at,
            EnvelopeStatus::Sent | EnvelopeStatus::Delivered => latest_step(),
            EnvelopeStatus::Completed => self.completed_at,
            EnvelopeStatus::Declined => self.declined_time().unwrap_or_else(latest_step),
            EnvelopeStatus::Voided => self.voided_at.unwrap_or_else(latest_step),
        }
    }

    /// The signer with this recipient id.
    pub fn signer(&self, recipient_id: &str) -> Option<&Signer> {
        self.signers.iter().find(|s| s.recipient_id == recipient_id)
    }

    /// The value of the text custom field `name`.
    pub fn custom_field(&self, name: &str) -> Option<&str> {
        self.custom_fields.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn field_flags(&self, name: &str) -> FieldFlags {
        self.custom_field_flags.get(name).copied().unwrap_or(FieldFlags { show: true, required: false })
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
    template_name: &'static str,
    description: &'static str,
    /// The generator's subject; `{name}` is the first signer, `{company}` theirs.
    subject: &'static str,
    /// The template's subject, with DocuSign's `[[Role_UserName]]` placeholders.
    email_subject: &'static str,
    /// Signer roles in routing order. Every data tab belongs to the first.
    roles: &'static [&'static str],
    /// Names, and the page count the template's copy has.
    documents: &'static [(&'static str, u32)],
    tabs: &'static [&'static str],
    /// Tabs a signer may leave empty; every other one is required.
    optional_tabs: &'static [&'static str],
}

/// Template ids are fixed so that operators' rules can match on them.
pub const ONBOARDING_TEMPLATE: &str = "5c1b6f0e-8a4d-4b3e-9f2a-7d6c5b4a3f21";
pub const NDA_TEMPLATE: &str = "a7e3d2c1-4b5f-4e6a-8d9c-0b1a2f3e4d5c";
pub const EQUIPMENT_TEMPLATE: &str = "3f9e8d7c-6b5a-4c3d-9e2f-1a0b9c8d7e6f";

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "onboarding",
        template_id: ONBOARDING_TEMPLATE,
        template_name: "Employee Onboarding",
        description: "Offer letter, handbook acknowledgement and direct deposit form for a new hire",
        subject: "Offer letter and onboarding forms for {name}",
        email_subject: "Offer letter and onboarding forms for [[Employee_UserName]]",
        roles: &["Employee", "HR Manager"],
        documents: &[("Offer Letter", 2), ("Employee Handbook Acknowledgement", 1), ("Direct Deposit Form", 1)],
        tabs: &["first_name", "last_name", "start_date", "job_title", "laptop_model"],
        optional_tabs: &["laptop_model"],
    },
    Scenario {
        name: "nda",
        template_id: NDA_TEMPLATE,
        template_name: "Mutual NDA",
        description: "Mutual non-disclosure agreement with a counterparty",
        subject: "Mutual NDA: {company}",
        email_subject: "Mutual NDA: [[Counterparty_UserName]]",
        roles: &["Counterparty", "Legal"],
        documents: &[("Mutual Non-Disclosure Agreement", 3), ("Exhibit A", 1)],
        tabs: &["company_name", "signatory_title", "effective_date"],
        optional_tabs: &[],
    },
    Scenario {
        name: "equipment",
        template_id: EQUIPMENT_TEMPLATE,
        template_name: "Equipment Request",
        description: "An employee's request for a laptop and monitors, approved by IT",
        subject: "Equipment request for {name}",
        email_subject: "Equipment request for [[Employee_UserName]]",
        roles: &["Employee", "IT Approver"],
        documents: &[("Equipment Request", 1)],
        tabs: &["laptop_model", "monitor_count", "delivery_address"],
        optional_tabs: &["monitor_count"],
    },
];

/// DocuSign's tab type of a data tab: dates are date tabs, the rest text.
fn tab_type(label: &str) -> &'static str {
    if label.ends_with("date") { "date" } else { "text" }
}

/// A template of the account: the one every envelope of a scenario comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Template {
    pub template_id: Uuid,
    pub name: String,
    pub description: String,
    /// The scenario name the generator and the control API use for it.
    pub scenario: String,
    /// With `[[Role_UserName]]` placeholders, filled in when an envelope is created.
    pub email_subject: String,
    /// Signer roles in routing order.
    pub roles: Vec<TemplateRole>,
    pub documents: Vec<TemplateDocument>,
    pub created: DateTime<Utc>,
    pub last_modified: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateRole {
    pub role_name: String,
    pub recipient_id: String,
    pub routing_order: u32,
    /// An envelope cannot be sent without someone in this role.
    pub required: bool,
    pub tabs: Vec<TemplateTab>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateTab {
    pub label: String,
    /// `text` or `date`: which list (`textTabs`, `dateTabs`) it is in, and
    /// which list of a request's `tabs` can prefill it.
    pub tab_type: String,
    pub required: bool,
    pub document_id: String,
    pub page: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TemplateDocument {
    pub document_id: String,
    pub name: String,
    pub pages: u32,
}

impl Template {
    fn of(scenario: &Scenario) -> Self {
        // Fixed times: the templates were last edited before any envelope was generated.
        let at = |day| Utc.with_ymd_and_hms(2026, 2, day, 9, 30, 0).single().unwrap_or(DateTime::UNIX_EPOCH);
        let roles = scenario
            .roles
            .iter()
            .enumerate()
            .map(|(i, role)| TemplateRole {
                role_name: (*role).to_string(),
                recipient_id: (i + 1).to_string(),
                routing_order: u32::try_from(i + 1).unwrap_or(1),
                required: true,
                tabs: if i == 0 {
                    scenario
                        .tabs
                        .iter()
                        .map(|label| TemplateTab {
                            label: (*label).to_string(),
                            tab_type: tab_type(label).to_string(),
                            required: !scenario.optional_tabs.contains(label),
                            document_id: "1".into(),
                            page: 1,
                        })
                        .collect()
                } else {
                    Vec::new()
                },
            })
            .collect();
        Template {
            template_id: Uuid::parse_str(scenario.template_id).unwrap_or_default(),
            name: scenario.template_name.to_string(),
            description: scenario.description.to_string(),
            scenario: scenario.name.to_string(),
            email_subject: scenario.email_subject.to_string(),
            roles,
            documents: scenario
                .documents
                .iter()
                .enumerate()
                .map(|(i, (name, pages))| TemplateDocument {
                    document_id: (i + 1).to_string(),
                    name: format!("{name}.pdf"),
                    pages: *pages,
                })
                .collect(),
            created: at(2),
            last_modified: at(16),
        }
    }

    pub fn role(&self, name: &str) -> Option<&TemplateRole> {
        self.roles.iter().find(|r| r.role_name == name)
    }

    pub fn page_count(&self) -> u32 {
        self.documents.iter().map(|d| d.pages).sum()
    }
}

/// The account's templates, one per scenario, in the generator's order.
pub fn templates() -> Vec<Template> {
    SCENARIOS.iter().map(Template::of).collect()
}

/// The template with this id (any case, as DocuSign compares GUIDs).
pub fn template(id: &str) -> Option<Template> {
    let id = Uuid::parse_str(id.trim()).ok()?;
    templates().into_iter().find(|t| t.template_id == id)
}

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
                status: EnvelopeStatus::Completed,
                declined_reason: None,
                client_user_id: None,
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
                    tab_type: tab_type(label).into(),
                    document_id: "1".into(),
                    page: 1,
                    required: !scenario.optional_tabs.contains(label),
                }
            })
            .collect();
        signers[0].tabs = tabs;

        let count = self.rng.random_range(1..=self.options.max_documents.clamp(1, 3)).min(scenario.documents.len());
        let documents = scenario.documents[..count]
            .iter()
            .enumerate()
            .map(|(i, (name, _))| Document {
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
            state: EnvelopeStatus::Completed,
            voided_at: None,
            voided_reason: None,
            email_blurb: None,
            custom_field_flags: BTreeMap::new(),
            list_custom_fields: Vec::new(),
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

    #[test]
    fn the_templates_are_the_scenarios_with_every_tab_on_the_first_role() {
        let templates = templates();
        let scenarios: Vec<&str> = templates.iter().map(|t| t.scenario.as_str()).collect();
        assert_eq!(scenarios, scenario_names());
        let mut generator = EnvelopeGenerator::new(1, options());
        for template in &templates {
            let envelope = generator.next_envelope_of(&template.scenario).unwrap();
            assert_eq!(envelope.template_id, template.template_id);
            let roles: Vec<&str> = template.roles.iter().map(|r| r.role_name.as_str()).collect();
            let signers: Vec<&str> = envelope.signers.iter().map(|s| s.role_name.as_str()).collect();
            assert_eq!(roles, signers, "generated envelopes have the template's roles");
            let labels: Vec<&str> = template.roles[0].tabs.iter().map(|t| t.label.as_str()).collect();
            let generated: Vec<&str> = envelope.signers[0].tabs.iter().map(|t| t.label.as_str()).collect();
            assert_eq!(labels, generated);
            assert!(template.roles[1..].iter().all(|r| r.tabs.is_empty() && r.required));
            assert!(template.roles[0].tabs.iter().any(|t| t.required));
        }
        let onboarding = template(&ONBOARDING_TEMPLATE.to_uppercase()).unwrap();
        assert_eq!(onboarding.name, "Employee Onboarding");
        let start = onboarding.roles[0].tabs.iter().find(|t| t.label == "start_date").unwrap();
        assert_eq!((start.tab_type.as_str(), start.required), ("date", true));
        assert!(template("not a guid").is_none());
        assert!(template(&Uuid::new_v4().to_string()).is_none());
    }
}
