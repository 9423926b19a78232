//! Rules → events: what an envelope becomes, as the operator configures it
//! in TOML and as consumers receive it (checked against docs/event.schema.json).

use crate::common;

use chrono::{DateTime, Utc};
use countersign::config::Settings;
use countersign::domain::{ConnectNotification, Envelope, Format, Party, Recipient, TabValue};
use countersign::events::{Plan, Planner};
use countersign::ids::{AccountId, EnvelopeId};
use countersign::store::DocumentRecord;
use serde_json::{Value, json};

const SECRET: &str = "whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const ACCOUNT: &str = "f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b";
const TEMPLATE: &str = "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d";

fn sinks() -> String {
    ["hr", "identity", "crm"]
        .iter()
        .map(|name| format!("[[sinks]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"https://{name}.example.com/hook\"\nsecret = \"{SECRET}\"\n"))
        .collect()
}

fn planner(rules: &str) -> Planner {
    let settings =
        Settings::from_toml(&format!("[server]\npublic_url = \"https://cs.example.com\"\n{}{rules}", sinks()))
            .unwrap_or_else(|e| panic!("{e}"));
    Planner::from_settings(&settings).unwrap()
}

fn time(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

fn signer(name: &str, role: &str, order: u32, tabs: &[(&str, &str)]) -> Recipient {
    Recipient {
        recipient_id: Some(order.to_string()),
        kind: "signer".into(),
        name: Some(name.into()),
        email: Some(format!("{}@example.com", name.to_lowercase().replace(' ', "."))),
        role: Some(role.into()),
        routing_order: Some(order),
        status: Some("completed".into()),
        signed_at: Some(time("2026-11-20T10:00:00Z") + chrono::Duration::minutes(i64::from(order))),
        declined_reason: None,
        tabs: tabs.iter().map(|(label, value)| TabValue { label: (*label).into(), value: (*value).into() }).collect(),
    }
}

/// An offer letter signed by the new employee and the hiring manager.
fn offer_letter() -> ConnectNotification {
    ConnectNotification {
        format: Format::Json,
        event: "envelope-completed".into(),
        user_id: None,
        recipient_id: None,
        generated_at: time("2026-11-20T10:05:00Z"),
        envelope: Envelope {
            account_id: AccountId::parse(ACCOUNT).unwrap(),
            envelope_id: EnvelopeId::parse("93be49ab-afa0-4adf-933c-f752070d71ec").unwrap(),
            status: Some("completed".into()),
            subject: Some("Offer letter for Jane Doe".into()),
            sender: Some(Party { name: Some("HR Team".into()), email: Some("Offers@HR.example.com".into()) }),
            completed_at: Some(time("2026-11-20T10:04:00.250Z")),
            recipients: vec![
                signer("Hiring Manager", "Manager", 2, &[("Cost Center", "CC-42"), ("Start Date", "")]),
                signer("Jane Doe", "Employee", 1, &[("Start Date", "2027-01-04"), ("Phone", "+1 555 0100")]),
                Recipient {
                    kind: "carboncopy".into(),
                    role: Some("Payroll".into()),
                    ..signer("Pay Roll", "Payroll", 3, &[])
                },
            ],
            custom_fields: vec![
                ("Employee ID".into(), "E-1042".into()),
                ("Contract Type".into(), "Employee (full time)".into()),
            ],
            documents: Vec::new(),
        },
        embedded: Vec::new(),
        has_envelope_data: true,
    }
}

fn documents(envelope: &ConnectNotification) -> Vec<DocumentRecord> {
    vec![
        DocumentRecord {
            account_id: envelope.envelope.account_id,
            envelope_id: envelope.envelope.envelope_id,
            document_id: "1".into(),
            name: "Offer letter.pdf".into(),
            file_name: "1-Offer letter.pdf".into(),
            content_type: "application/pdf".into(),
            size_bytes: 48_213,
            sha256: "a".repeat(64),
            storage_key: format!("{ACCOUNT}/{}/1-Offer letter.pdf", envelope.envelope.envelope_id),
            stored_at: time("2026-11-20T10:06:00Z"),
        },
        DocumentRecord {
            account_id: envelope.envelope.account_id,
            envelope_id: envelope.envelope.envelope_id,
            document_id: "certificate".into(),
            name: "Certificate of Completion".into(),
            file_name: format!("CertificateOfCompletion_{}.pdf", envelope.envelope.envelope_id),
            content_type: "application/pdf".into(),
            size_bytes: 9_120,
            sha256: "b".repeat(64),
            storage_key: format!("{ACCOUNT}/{}/certificate.pdf", envelope.envelope.envelope_id),
            stored_at: time("2026-11-20T10:06:00Z"),
        },
    ]
}

fn plan(planner: &Planner, envelope: &ConnectNotification, templates: &[&str]) -> Plan {
    let templates: Vec<String> = templates.iter().map(|t| (*t).to_string()).collect();
    planner.plan(envelope, &documents(envelope), &templates, time("2026-11-20T10:07:00Z"))
}

fn types(plan: &Plan) -> Vec<&str> {
    plan.events.iter().map(|e| e.event.event_type.as_str()).collect()
}

#[test]
fn rules_match_on_template_custom_fields_subject_sender_and_account() {
    let planner = planner(&format!(
        r#"
[[rules]]
name = "onboarding"
event_type = "employee.onboarding.signed"
sinks = ["hr", "identity"]
[rules.match]
template_ids = ["{}"]
custom_fields = {{ "Contract Type" = "Employee*" }}

[[rules]]
name = "offers"
event_type = "employee.offer.signed"
sinks = ["hr"]
[rules.match]
subject = "offer letter*"
sender = "*@hr.example.com"
account_ids = ["{ACCOUNT}"]

[[rules]]
name = "contractors"
event_type = "contractor.onboarding.signed"
sinks = ["crm"]
[rules.match]
custom_fields = {{ "Contract Type" = "Contractor*" }}

[[rules]]
name = "other-account"
event_type = "other.signed"
sinks = ["crm"]
[rules.match]
account_ids = ["00000000-0000-4000-8000-000000000000"]
"#,
        TEMPLATE.to_uppercase()
    ));
    let envelope = offer_letter();
    let planned = plan(&planner, &envelope, &[TEMPLATE]);
    assert_eq!(types(&planned), ["employee.onboarding.signed", "employee.offer.signed"]);
    assert_eq!(planned.events[0].sinks, ["hr", "identity"]);
    assert_eq!(planned.events[1].sinks, ["hr"]);
    assert!(!planned.needs_operator());

    let without_template = plan(&planner, &envelope, &[]);
    assert_eq!(types(&without_template), ["employee.offer.signed"], "the template condition needs the template");

    let mut contractor = offer_letter();
    contractor.envelope.custom_fields[1].1 = "Contractor".into();
    contractor.envelope.subject = Some("Re: Offer letter for Jane Doe".into());
    assert_eq!(types(&plan(&planner, &contractor, &[TEMPLATE])), ["contractor.onboarding.signed"]);
}

#[test]
fn fields_come_from_custom_fields_tabs_and_signers_by_role() {
    let planner = planner(
        r#"
[[rules]]
name = "onboarding"
event_type = "employee.onboarding.signed"
sinks = ["hr"]
[rules.fields]
employee_id = { custom_field = "employee id" }
start_date = { tab = "Start Date", role = "Employee" }
cost_center = { tab = "Cost Center" }
employee = { signer = "Employee" }
manager = { signer = "manager" }
"#,
    );
    let envelope = offer_letter();
    let planned = plan(&planner, &envelope, &[]);
    let data = &planned.events[0].event.body["data"];
    assert_eq!(data["fields"]["employee_id"], "E-1042", "custom field names match ignoring case");
    assert_eq!(data["fields"]["start_date"], "2027-01-04", "the employee's tab, not the manager's empty one");
    assert_eq!(data["fields"]["cost_center"], "CC-42");
    assert_eq!(
        data["fields"]["employee"],
        json!({ "name": "Jane Doe", "email": "jane.doe@example.com", "role": "Employee", "signed_at": "2026-11-20T10:01:00Z" })
    );
    assert_eq!(data["fields"]["manager"]["name"], "Hiring Manager");
    assert_eq!(data["missing"], json!([]));
    let signers: Vec<&str> = data["signers"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(signers, ["Jane Doe", "Hiring Manager"], "signers in routing order; carbon copies are not signers");
}

#[test]
fn a_missing_field_is_listed_unless_required_which_flags_the_envelope_instead() {
    let planner = planner(
        r#"
[[rules]]
name = "onboarding"
event_type = "employee.onboarding.signed"
sinks = ["hr"]
[rules.fields]
employee_id = { custom_field = "Employee ID", required = true }
badge = { custom_field = "Badge Number" }
manager_start = { tab = "Start Date", role = "Manager" }
witness = { signer = "Witness" }

[[rules]]
name = "payroll"
event_type = "employee.payroll.signed"
sinks = ["crm"]
[rules.fields]
iban = { tab = "IBAN", required = true }
"#,
    );
    let envelope = offer_letter();
    let planned = plan(&planner, &envelope, &[]);
    assert_eq!(types(&planned), ["employee.onboarding.signed"], "the payroll rule holds its event back");
    let data = &planned.events[0].event.body["data"];
    assert_eq!(data["missing"], json!(["badge", "manager_start", "witness"]), "blank values count as missing");
    assert!(data["fields"].get("badge").is_none());
    assert!(planned.needs_operator());
    assert_eq!(planned.flags, [r#"rule "payroll": required field "iban" (tab "IBAN") is missing from the envelope"#]);

    let mut no_id = offer_letter();
    no_id.envelope.custom_fields.retain(|(name, _)| name != "Employee ID");
    let planned = plan(&planner, &no_id, &[]);
    assert!(types(&planned).is_empty(), "no event goes out with a required field missing");
    assert_eq!(planned.flags.len(), 2);
    assert!(planned.flags[0].contains(r#"required field "employee_id" (custom field "Employee ID")"#));
}

#[test]
fn an_envelope_no_rule_matches_gets_the_default_event_unless_it_is_switched_off() {
    let rule = "[[rules]]\nname = \"contractors\"\nevent_type = \"contractor.signed\"\nsinks = [\"crm\"]\n\
                [rules.match]\nsubject = \"Contract*\"\n";
    let planned = plan(&planner(rule), &offer_letter(), &[]);
    assert_eq!(types(&planned), ["envelope.completed"]);
    assert_eq!(planned.events[0].sinks, ["hr", "identity", "crm"], "every sink by default");
    assert_eq!(planned.events[0].event.rule, "default");
    assert!(!planned.unmatched);

    let chosen = plan(&planner(&format!("[events]\ndefault_sinks = [\"identity\"]\n{rule}")), &offer_letter(), &[]);
    assert_eq!(chosen.events[0].sinks, ["identity"]);

    let off = plan(&planner(&format!("[events]\ndefault_event = false\n{rule}")), &offer_letter(), &[]);
    assert!(off.events.is_empty());
    assert!(off.unmatched, "the caller learns why nothing was planned");
    assert!(!off.needs_operator());
}

#[test]
fn planning_an_envelope_again_yields_the_same_event_ids() {
    let rule = "[[rules]]\nname = \"onboarding\"\nevent_type = \"employee.onboarding.signed\"\nsinks = [\"hr\"]\n";
    let one_rule = planner(rule);
    let envelope = offer_letter();
    let first = plan(&one_rule, &envelope, &[]);
    let later = one_rule.plan(&envelope, &[], &[], Utc::now());
    assert_eq!(first.events[0].event.id, later.events[0].event.id);
    assert_eq!(first.events[0].event.id, countersign::events::event_id(envelope.envelope.envelope_id, "onboarding"));
    assert_eq!(first.events[0].event.body["id"], first.events[0].event.id.to_string());
    let mut other = offer_letter();
    other.envelope.envelope_id = EnvelopeId::parse("0b9c1d2e-3f40-4a5b-8c6d-7e8f90a1b2c3").unwrap();
    assert_ne!(plan(&one_rule, &other, &[]).events[0].event.id, first.events[0].event.id);
    let two_rules =
        planner(&format!("{rule}[[rules]]\nname = \"audit\"\nevent_type = \"audit.signed\"\nsinks = [\"crm\"]\n"));
    let both = plan(&two_rules, &envelope, &[]);
    assert_ne!(both.events[0].event.id, both.events[1].event.id, "one id per (envelope, rule)");
    assert_eq!(both.events.iter().map(|e| e.event.ordinal).collect::<Vec<_>>(), [0, 1]);
}

#[test]
fn a_planned_event_is_a_cloudevent_that_matches_the_published_schema() {
    let planner = planner(
        "[events]\nlink_key = \"a link key of some length\"\n\
         [[rules]]\nname = \"onboarding\"\nevent_type = \"employee.onboarding.signed\"\nsinks = [\"hr\"]\n\
         [rules.fields]\nemployee_id = { custom_field = \"Employee ID\" }\nemployee = { signer = \"Employee\" }\n\
         badge = { custom_field = \"Badge\" }\n",
    );
    let envelope = offer_letter();
    let event = plan(&planner, &envelope, &[]).events.remove(0).event;
    let body = &event.body;
    assert_eq!(body["specversion"], "1.0");
    assert_eq!(body["type"], "employee.onboarding.signed");
    assert_eq!(body["source"], format!("urn:docusign:account:{ACCOUNT}"));
    assert_eq!(body["subject"], envelope.envelope.envelope_id.to_string());
    assert_eq!(body["time"], "2026-11-20T10:04:00.250Z");
    assert_eq!(body["datacontenttype"], "application/json");
    let data = &body["data"];
    assert_eq!(data["subject"], "Offer letter for Jane Doe");
    assert_eq!(data["sender"], json!({ "name": "HR Team", "email": "Offers@HR.example.com" }));
    let document = &data["documents"][0];
    assert_eq!((document["name"].as_str(), document["size_bytes"].as_u64()), (Some("Offer letter.pdf"), Some(48_213)));
    let url = url::Url::parse(document["url"].as_str().unwrap()).unwrap();
    assert_eq!(url.path(), format!("/documents/{}/1-Offer%20letter.pdf", envelope.envelope.envelope_id));
    assert!(url.query().unwrap().contains("signature="), "signed links when events.link_key is set");

    let schema: Value = serde_json::from_str(&std::fs::read_to_string("docs/event.schema.json").unwrap()).unwrap();
    let errors = common::schema::validate(&schema, body);
    assert!(errors.is_empty(), "the event breaks docs/event.schema.json: {errors:#?}\n{body:#}");
    // The check is not vacuous: a broken event is refused.
    let mut broken = body.clone();
    broken["data"]["documents"][0]["size_bytes"] = json!("large");
    broken["specversion"] = json!("0.3");
    assert_eq!(common::schema::validate(&schema, &broken).len(), 2);
}

/// `Settings::from_toml`'s error for `rules` appended to three valid sinks.
fn refusal(rules: &str) -> String {
    match Settings::from_toml(&format!("{}{rules}", sinks())) {
        Ok(_) => panic!("accepted:\n{rules}"),
        Err(error) => error.to_string(),
    }
}

#[test]
fn invalid_rules_are_refused_naming_the_rule_and_the_key() {
    let base = "[[rules]]\nname = \"ok\"\nevent_type = \"a.b\"\nsinks = [\"hr\"]\n";
    let cases = [
        (
            format!("{base}[[rules]]\nname = \"crm-rule\"\nevent_type = \"a.c\"\nsinks = [\"hr\", \"erp\"]\n"),
            "configuration key `rules[1].sinks`: unknown sink \"erp\"",
        ),
        (format!("{base}{base}"), "configuration key `rules[1].name`: \"ok\" is used twice"),
        ("[[rules]]\nname = \"x\"\nevent_type = \"has space\"\nsinks = [\"hr\"]\n".into(), "`rules[0].event_type`"),
        ("[[rules]]\nname = \"x\"\nevent_type = \"a.*\"\nsinks = [\"hr\"]\n".into(), "`rules[0].event_type`"),
        (
            "[[rules]]\nname = \"x\"\nevent_type = \"a\"\nsinks = []\n".into(),
            "`rules[0].sinks`: must name at least one sink",
        ),
        ("[[rules]]\nname = \"default\"\nevent_type = \"a\"\nsinks = [\"hr\"]\n".into(), "`rules[0].name`"),
        (
            format!("{base}[rules.match]\ntemplate_ids = [\"not-a-guid\"]\n"),
            "configuration key `rules[0].match.template_ids[0]`: must be a GUID",
        ),
        (
            format!("{base}[rules.match]\nsubjects = \"x\"\n"),
            "configuration key `rules[0].match.subjects`: unknown key",
        ),
        (
            format!("{base}[rules.fields]\nid = {{ custom_field = \"ID\", tab = \"ID\" }}\n"),
            "configuration key `rules[0].fields.id`: give exactly one of custom_field, tab or signer",
        ),
        (
            format!("{base}[rules.fields]\nid = {{ custom_field = \"ID\", role = \"Employee\" }}\n"),
            "configuration key `rules[0].fields.id`: role goes with tab",
        ),
        (format!("{base}[rules.fields]\nid = {{ column = \"ID\" }}\n"), "unknown key"),
        (
            format!("[events]\ndefault_sinks = [\"nowhere\"]\n{base}"),
            "`events.default_sinks`: unknown sink \"nowhere\"",
        ),
    ];
    for (rules, expected) in cases {
        let error = refusal(&rules);
        assert!(error.contains(expected), "expected {expected:?} in: {error}\nfor:\n{rules}");
    }
}

#[test]
fn invalid_sinks_are_refused_naming_the_key() {
    let sink = |extra: &str| format!("[[sinks]]\nname = \"hr\"\n{extra}\n");
    let cases = [
        (
            sink("kind = \"webhook\"\nurl = \"https://hr.example.com\""),
            "`sinks[0].secret`: a webhook sink needs a signing secret",
        ),
        (sink("kind = \"webhook\"\nurl = \"https://hr.example.com\"\nsecret = \"hunter2\""), "must start with whsec_"),
        (
            sink("kind = \"webhook\"\nurl = \"https://hr.example.com\"\nsecret = \"whsec_c2hvcnQ=\""),
            "24 to 64 random bytes",
        ),
        (sink(&format!("kind = \"webhook\"\nurl = \"nats://x\"\nsecret = \"{SECRET}\"")), "`sinks[0].url`"),
        (
            sink("kind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nexchange = \"x\""),
            "`sinks[0].exchange`: applies to amqp sinks only",
        ),
        (sink("kind = \"amqp\"\nurl = \"amqp://127.0.0.1\"\nsubject_prefix = \"x\""), "`sinks[0].subject_prefix`"),
        (
            sink("kind = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject_prefix = \"a.>\""),
            "`sinks[0].subject_prefix`",
        ),
        (sink("kind = \"amqp\"\nurl = \"amqp://127.0.0.1\"\ntoken = \"short\""), "`sinks[0].token`"),
        (sink("kind = \"amqp\"\nurl = \"amqp://127.0.0.1\"\nname2 = \"x\""), "unknown key"),
    ];
    for (toml, expected) in cases {
        let error = match Settings::from_toml(&toml) {
            Ok(_) => panic!("accepted:\n{toml}"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains(expected), "expected {expected:?} in: {error}\nfor:\n{toml}");
        assert!(!error.contains("hunter2"), "a secret is never repeated: {error}");
    }
}

#[test]
fn check_refuses_a_bad_rule_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[store]\nurl = \"sqlite://cs.db\"\n{}[[rules]]\nname = \"crm\"\nevent_type = \"crm.signed\"\nsinks = [\"salesforce\"]\n",
        sinks()
    );
    std::fs::write(dir.path().join("c.toml"), config).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["check", "--config", "c.toml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("configuration key `rules[0].sinks`: unknown sink \"salesforce\""), "{stderr}");
}
