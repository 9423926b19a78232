//! docs/asyncapi.yaml, the AsyncAPI 3.0.0 description of what countersign
//! publishes. It must be valid against the official AsyncAPI 3.0.0 JSON
//! Schema (npm's `@asyncapi/specs`, which scripts/test.sh installs into a
//! cache outside the tree; Python's `jsonschema` validates, PyYAML reads the
//! YAML), its references must resolve (the payload is docs/event.schema.json,
//! not a copy), its examples must be valid events, and the headers,
//! subjects, exchange, properties, SQS message attributes and FIFO fields it
//! documents must be the ones the sinks send: read from src/deliver/*.rs,
//! and seen on one delivery per transport (SQS: moto's, read with boto3).

use crate::common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::moto::Moto;
use countersign::config::{SinkKind, SinkSettings};
use countersign::deliver::receiver::WebhookReceiver;
use countersign::deliver::{OutgoingEvent, build_sink};
use countersign::events::CLOUDEVENTS_JSON;
use countersign::events::agreement::Lifecycle;
use countersign::ids::EventId;
use futures_util::StreamExt;
use lapin::options::{BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::{Value, json};

/// The `@asyncapi/specs` release scripts/test.sh installs; the cache
/// directory is named after it.
const SPECS_VERSION: &str = "6.11.1";

/// What the event schema is written in, and so the payloads' `schemaFormat`.
const EVENT_SCHEMA_FORMAT: &str = "application/schema+json;version=draft-2020-12";

const MESSAGE_KINDS: [&str; 2] = ["provisioningEvent", "agreementLifecycleEvent"];

/// Every channel, so that dropping one (a transport undocumented) fails.
const CHANNELS: [&str; 5] = ["webhook", "natsPrefixed", "nats", "amqp", "sqs"];

/// Each sink kind (`[[sinks]] kind`) and the protocol of its server.
const SINK_PROTOCOLS: [(&str, &str); 4] = [("webhook", "https"), ("nats", "nats"), ("amqp", "amqp"), ("sqs", "sqs")];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative)).unwrap_or_else(|e| panic!("cannot read {relative}: {e}"))
}

/// The AsyncAPI 3.0.0 JSON Schema from the cache scripts/test.sh fills.
fn specs_schema() -> PathBuf {
    let dir = std::env::var_os("ASYNCAPI_SPECS_DIR").map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
        cache.join("countersign").join(format!("asyncapi-specs-{SPECS_VERSION}"))
    });
    let schema = dir.join("node_modules/@asyncapi/specs/schemas/3.0.0.json");
    assert!(
        schema.is_file(),
        "the AsyncAPI 3.0.0 JSON Schema is not at {}. Run scripts/test.sh once (it installs it), or: \
         npm install --prefix {} --no-save @asyncapi/specs@{SPECS_VERSION} (ASYNCAPI_SPECS_DIR points elsewhere)",
        schema.display(),
        dir.display()
    );
    schema
}

const PYTHON_HINT: &str = "run scripts/test.sh once, or: python3 -m pip install 'jsonschema>=4.18,<5' 'PyYAML>=6,<7'";

fn python(script: &str, args: &[&Path]) -> std::process::Output {
    Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 ({e}); {PYTHON_HINT}"))
}

const YAML_TO_JSON: &str = r#"
import json, sys
try:
    import yaml
except ImportError as error:
    sys.exit(f"PyYAML is missing ({error})")
with open(sys.argv[1]) as file:
    json.dump(yaml.safe_load(file), sys.stdout)
"#;

/// docs/asyncapi.yaml as JSON.
fn contract() -> Value {
    let out = python(YAML_TO_JSON, &[&repo().join("docs/asyncapi.yaml")]);
    assert!(
        out.status.success(),
        "docs/asyncapi.yaml does not read as YAML that converts to JSON: {}; {PYTHON_HINT}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Validates the document against the AsyncAPI schema (draft-07), the event
/// schema as a 2020-12 schema, and each message example: its payload against
/// the event schema, its headers against the message's (traits included).
const VALIDATE: &str = r#"
import json, sys
try:
    import jsonschema, yaml
    from jsonschema.exceptions import best_match
except ImportError as error:
    sys.exit(f"jsonschema or PyYAML is missing ({error})")
specs_path, doc_path, event_path = sys.argv[1:4]
with open(specs_path) as file:
    specs = json.load(file)
with open(doc_path) as file:
    doc = yaml.safe_load(file)
with open(event_path) as file:
    event_schema = json.load(file)
problems = []

asyncapi = jsonschema.Draft7Validator(specs, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
for error in asyncapi.iter_errors(doc):
    cause = best_match([error])
    problems.append(f"AsyncAPI 3.0.0 schema: at {cause.json_path}: {cause.message[:400]}")

try:
    jsonschema.Draft202012Validator.check_schema(event_schema)
except jsonschema.SchemaError as error:
    problems.append(f"event.schema.json is not a valid 2020-12 schema: {error.message}")
events = jsonschema.Draft202012Validator(event_schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)

def node_of_doc(ref):
    node = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node

for name, message in doc.get("components", {}).get("messages", {}).items():
    headers = message.get("headers")
    for trait in message.get("traits", []):
        if "$ref" in trait:
            trait = node_of_doc(trait["$ref"])
        headers = trait.get("headers", headers)
    examples = message.get("examples", [])
    if not examples:
        problems.append(f"message {name} has no example")
    for example in examples:
        where = f"message {name}, example {example.get('name')}"
        for error in events.iter_errors(example.get("payload")):
            cause = best_match([error])
            problems.append(f"{where}: the payload at {cause.json_path}: {cause.message[:300]}")
        if headers is None and "headers" in example:
            problems.append(f"{where}: headers, but the message has none")
        if headers is not None:
            checker = jsonschema.Draft7Validator(headers, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
            for error in checker.iter_errors(example.get("headers")):
                problems.append(f"{where}: headers: {error.message[:300]}")

print("\n".join(problems))
sys.exit(1 if problems else 0)
"#;

#[test]
fn asyncapi_contract_is_valid_against_the_official_asyncapi_3_schema() {
    let schema = specs_schema();
    let doc = repo().join("docs/asyncapi.yaml");
    let event_schema = repo().join("docs/event.schema.json");
    let out = python(VALIDATE, &[&schema, &doc, &event_schema]);
    assert!(
        out.status.success(),
        "docs/asyncapi.yaml is not valid (@asyncapi/specs@{SPECS_VERSION} schemas/3.0.0.json, Python jsonschema):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // scripts/test.sh installs the release this test looks for.
    let script = read("scripts/test.sh");
    assert!(
        script.contains(&format!("ASYNCAPI_SPECS_VERSION={SPECS_VERSION}\n")),
        "scripts/test.sh must install @asyncapi/specs@{SPECS_VERSION}, the release this test reads"
    );
}

/// Every `$ref` string in the document, with where it is.
fn refs(node: &Value, at: &str, found: &mut Vec<(String, String)>) {
    match node {
        Value::Object(map) => {
            for (key, value) in map {
                let here = format!("{at}/{key}");
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => found.push((here, target.clone())),
                    _ => refs(value, &here, found),
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                refs(item, &format!("{at}/{i}"), found);
            }
        }
        _ => {}
    }
}

/// The node a local `$ref` points at.
fn follow<'a>(doc: &'a Value, target: &str) -> &'a Value {
    let pointer = target.strip_prefix('#').unwrap_or_else(|| panic!("{target} is not a local reference"));
    doc.pointer(pointer).unwrap_or_else(|| panic!("{target} points at nothing"))
}

/// A message with its traits applied (later traits, then the message itself, win).
fn merged_message(doc: &Value, message: &Value) -> serde_json::Map<String, Value> {
    let message = message.get("$ref").and_then(Value::as_str).map_or(message, |target| follow(doc, target));
    let mut merged = serde_json::Map::new();
    for trait_ in message["traits"].as_array().into_iter().flatten() {
        let trait_ = trait_.get("$ref").and_then(Value::as_str).map_or(trait_, |target| follow(doc, target));
        merged.extend(trait_.as_object().unwrap().clone());
    }
    merged.extend(
        message.as_object().unwrap().iter().filter(|(k, _)| *k != "traits").map(|(k, v)| (k.clone(), v.clone())),
    );
    merged
}

fn channel_message(doc: &Value, channel: &str, kind: &str) -> serde_json::Map<String, Value> {
    merged_message(doc, &doc["channels"][channel]["messages"][kind])
}

fn header_names(message: &serde_json::Map<String, Value>) -> BTreeSet<String> {
    message["headers"]["properties"].as_object().expect("the message has headers").keys().cloned().collect()
}

#[test]
fn asyncapi_contract_references_resolve_and_the_payload_is_the_event_schema() {
    let doc = contract();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"), "the contract is versioned with the crate");
    assert!(doc["info"]["description"].as_str().unwrap().contains("docs/EVENTS.md"), "info points at EVENTS.md");
    assert_eq!(doc["defaultContentType"], CLOUDEVENTS_JSON);

    let mut found = Vec::new();
    refs(&doc, "", &mut found);
    let docs = repo().join("docs");
    let event_schema = docs.join("event.schema.json").canonicalize().unwrap();
    let mut external = 0;
    for (at, target) in &found {
        if target.starts_with('#') {
            follow(&doc, target);
        } else {
            let file = docs.join(target).canonicalize().unwrap_or_else(|e| panic!("{at}: {target}: {e}"));
            assert_eq!(file, event_schema, "{at}: the only file referenced is the event schema");
            assert!(at.ends_with("/payload/schema/$ref"), "{at}: only payloads reference the event schema");
            external += 1;
        }
    }
    let schema: Value = serde_json::from_str(&read("docs/event.schema.json")).unwrap();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema", "schemaFormat says 2020-12");

    let messages = doc["components"]["messages"].as_object().unwrap();
    assert_eq!(external, messages.len(), "every message's payload is the event schema");
    for (name, message) in messages {
        assert_eq!(message["payload"]["schemaFormat"], EVENT_SCHEMA_FORMAT, "{name}");
        assert_eq!(message["payload"]["schema"], json!({ "$ref": "./event.schema.json" }), "{name}: not a copy");
    }

    // Two messages on every channel, told apart by the CloudEvents type.
    let lifecycle_types: Vec<&str> =
        doc["components"]["messageTraits"]["agreementLifecycleEvent"]["x-cloudevents-types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
    assert_eq!(lifecycle_types, Lifecycle::TYPES, "the lifecycle types are the code's");
    let channels = doc["channels"].as_object().unwrap();
    assert_eq!(channels.keys().map(String::as_str).collect::<BTreeSet<_>>(), BTreeSet::from(CHANNELS));
    // Every sink kind has a server, and every server is some channel's.
    let servers = doc["servers"].as_object().unwrap();
    for (kind, protocol) in SINK_PROTOCOLS {
        let _: SinkKind = serde_json::from_value(json!(kind)).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(servers.values().any(|server| server["protocol"] == protocol), "no {protocol} server for {kind} sinks");
    }
    for name in servers.keys() {
        let target = format!("#/servers/{name}");
        let used = channels.values().any(|c| c["servers"].as_array().unwrap().iter().any(|s| s["$ref"] == target));
        assert!(used, "server {name} is no channel's");
    }
    for channel in channels.keys() {
        let kinds: BTreeSet<&str> =
            doc["channels"][channel]["messages"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(kinds, BTreeSet::from(MESSAGE_KINDS), "{channel}");
        for kind in MESSAGE_KINDS {
            let message = channel_message(&doc, channel, kind);
            assert_eq!(message["name"], kind, "{channel}: {kind} carries its kind's trait");
            assert_eq!(message["contentType"], CLOUDEVENTS_JSON, "{channel}: {kind}");
            let correlation = message["correlationId"]["$ref"].as_str().unwrap();
            assert_eq!(
                follow(&doc, correlation)["location"],
                "$message.payload#/id",
                "the correlation id is the event id"
            );
            for example in message["examples"].as_array().unwrap() {
                let event_type = example["payload"]["type"].as_str().unwrap();
                let lifecycle = Lifecycle::TYPES.contains(&event_type);
                assert_eq!(
                    lifecycle,
                    kind == "agreementLifecycleEvent",
                    "{channel}: {kind}: example of type {event_type}"
                );
                let id = &example["payload"]["id"];
                for header in ["webhook-id", "Nats-Msg-Id", "ce-id"] {
                    if let Some(value) = example["headers"].get(header) {
                        assert_eq!(value, id, "{channel}: {kind}: {header} is the event id");
                    }
                }
                // SQS: each `ce-` attribute repeats the event's, and the
                // FIFO fields the summary gives are the envelope and event ids.
                if message.contains_key("x-sqs-fifo") {
                    for name in header_names(&message) {
                        if let Some(attribute) = name.strip_prefix("ce-") {
                            assert_eq!(
                                example["headers"][&name], example["payload"][attribute],
                                "{channel}: {kind}: {name}"
                            );
                        }
                    }
                    let summary = example["summary"].as_str().unwrap().split_whitespace().collect::<Vec<_>>().join(" ");
                    let group = example["payload"]["data"]["envelope_id"].as_str().unwrap();
                    for (field, value) in [("MessageGroupId", group), ("MessageDeduplicationId", id.as_str().unwrap())]
                    {
                        assert!(
                            summary.contains(&format!("{field} {value}")),
                            "{channel}: {kind}: the example's {field} is {value}: {summary:?}"
                        );
                    }
                }
            }
        }
    }

    // Every operation is a send on its own channel's messages.
    let operations = doc["operations"].as_object().unwrap();
    let mut used: BTreeSet<&str> = BTreeSet::new();
    for (name, operation) in operations {
        assert_eq!(operation["action"], "send", "{name}: countersign sends");
        let channel = operation["channel"]["$ref"].as_str().unwrap();
        used.insert(channel.strip_prefix("#/channels/").unwrap());
        let refs: Vec<&str> =
            operation["messages"].as_array().unwrap().iter().map(|m| m["$ref"].as_str().unwrap()).collect();
        let expected: Vec<String> = MESSAGE_KINDS.iter().map(|k| format!("{channel}/messages/{k}")).collect();
        assert_eq!(refs, expected, "{name}: the channel's two messages");
    }
    assert_eq!(used, channels.keys().map(String::as_str).collect(), "one operation per channel");
}

/// The string literals `pattern` captures in a source file.
fn literals(source: &str, pattern: &str) -> BTreeSet<String> {
    regex::Regex::new(pattern).unwrap().captures_iter(source).map(|c| c[1].to_string()).collect()
}

#[test]
fn asyncapi_names_match_the_delivery_code() {
    let doc = contract();

    // Webhook: the headers webhook.rs sets are the ones documented.
    let webhook_rs = read("src/deliver/webhook.rs");
    let webhook = channel_message(&doc, "webhook", "provisioningEvent");
    assert_eq!(header_names(&webhook), literals(&webhook_rs, r#"\.header\("([^"]+)""#), "webhook headers");
    assert_eq!(webhook["headers"]["properties"]["content-type"]["const"], CLOUDEVENTS_JSON);
    assert!(webhook_rs.contains(r#".header("content-type", CLOUDEVENTS_JSON)"#));
    assert_eq!(doc["operations"]["sendWebhookEvent"]["bindings"]["http"]["method"], "POST");
    assert!(webhook_rs.contains(".post(&self.url)"), "webhook.rs POSTs to the sink's url");

    // NATS: Nats-Msg-Id and the literal headers nats.rs inserts, nothing else.
    let nats_rs = read("src/deliver/nats.rs");
    let nats = channel_message(&doc, "nats", "provisioningEvent");
    let mut inserted = literals(&nats_rs, r#"headers\.insert\("([^"]+)""#);
    assert!(nats_rs.contains("headers.insert(async_nats::header::NATS_MESSAGE_ID,"));
    inserted.insert(async_nats::header::NATS_MESSAGE_ID.to_string());
    assert_eq!(nats_rs.matches("headers.insert(").count(), inserted.len(), "every header nats.rs sets is a literal");
    assert_eq!(header_names(&nats), inserted, "NATS headers");
    assert_eq!(nats["headers"]["properties"]["Content-Type"]["const"], CLOUDEVENTS_JSON);
    assert!(nats_rs.contains(r#"headers.insert("Content-Type", CLOUDEVENTS_JSON)"#));
    assert_eq!(doc["channels"]["natsPrefixed"]["address"], "{subject_prefix}.{type}");
    assert!(nats_rs.contains(r#"Some(prefix) => format!("{prefix}.{event_type}")"#));
    assert_eq!(doc["channels"]["nats"]["address"], "{type}");
    assert!(nats_rs.contains("None => event_type.to_string()"));

    // AMQP: the exchange, its kind, and the basic properties amqp.rs sets.
    let amqp_rs = read("src/deliver/amqp.rs");
    let exchange = &doc["channels"]["amqp"]["bindings"]["amqp"]["exchange"];
    let default = literals(&amqp_rs, r#"pub const DEFAULT_EXCHANGE: &str = "([^"]+)";"#);
    assert_eq!(exchange["name"].as_str().into_iter().map(String::from).collect::<BTreeSet<_>>(), default);
    assert_eq!(exchange["type"], "topic");
    assert!(amqp_rs.contains("ExchangeKind::Topic"));
    assert_eq!(exchange["durable"], true);
    assert!(amqp_rs.contains("ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() }"));
    assert_eq!(exchange["autoDelete"], false);
    assert_eq!(doc["channels"]["amqp"]["address"], "{type}");
    assert!(amqp_rs.contains("let routing_key = event.event_type;"));
    let publish = &doc["operations"]["sendAmqpEvent"]["bindings"]["amqp"];
    assert_eq!(publish["deliveryMode"], 2);
    assert!(amqp_rs.contains("const PERSISTENT: u8 = 2;") && amqp_rs.contains(".with_delivery_mode(PERSISTENT)"));
    assert_eq!(publish["mandatory"], true);
    assert!(amqp_rs.contains("BasicPublishOptions { mandatory: true,"));
    assert_eq!(publish["timestamp"], true);
    assert!(amqp_rs.contains("confirm_select("), "publisher confirms");
    let amqp = channel_message(&doc, "amqp", "provisioningEvent");
    let properties = amqp["x-amqp-properties"].as_object().unwrap();
    assert_eq!(
        properties.keys().cloned().collect::<BTreeSet<_>>(),
        literals(&amqp_rs, r"\.with_(\w+)\("),
        "the basic properties amqp.rs sets"
    );
    assert_eq!(properties["delivery_mode"], 2);
    assert_eq!(properties["content_type"], CLOUDEVENTS_JSON);
    let app_id = properties["app_id"].as_str().unwrap();
    assert!(amqp_rs.contains(&format!(r#".with_app_id("{app_id}".into())"#)), "app_id");

    // SQS: the message attributes sqs.rs puts, the ones it always puts
    // required; the FIFO fields it sets; the server, channel and binding.
    let sqs_rs = read("src/deliver/sqs.rs");
    let always = literals(&sqs_rs, r#"\bput\("([^"]+)""#);
    let pairs = regex::Regex::new(r#"\("(\w+)", "(ce-[^"]+)"\)"#).unwrap();
    let mut when_set = BTreeSet::new();
    for pair in pairs.captures_iter(&sqs_rs) {
        assert_eq!(
            &pair[2],
            format!("ce-{}", &pair[1]),
            "the attribute of {} is named as the HTTP binding does",
            &pair[1]
        );
        when_set.insert(pair[2].to_string());
    }
    let conditional = regex::Regex::new(r"if let Some\(value\) = text\(attribute\) \{\s*put\(name, value\);").unwrap();
    assert!(conditional.is_match(&sqs_rs), "the pairs are set when the event has the attribute");
    assert_eq!(
        regex::Regex::new(r"\bput\(").unwrap().find_iter(&sqs_rs).count(),
        always.len() + 1,
        "every attribute sqs.rs sets is a literal, or one of the pairs set when the event has it"
    );
    assert!(!when_set.is_empty() && always.is_disjoint(&when_set));
    for kind in MESSAGE_KINDS {
        let sqs = channel_message(&doc, "sqs", kind);
        let attributes = &sqs["headers"];
        assert_eq!(header_names(&sqs), &always | &when_set, "SQS message attributes ({kind})");
        let required: BTreeSet<String> =
            attributes["required"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
        assert_eq!(required, always, "the attributes sqs.rs always sets, and only those, are required ({kind})");
        assert_eq!(attributes["properties"]["content-type"]["const"], CLOUDEVENTS_JSON);
        assert_eq!(attributes["properties"]["ce-specversion"]["const"], "1.0");
        let fifo = sqs["x-sqs-fifo"].as_object().expect("the SQS messages document the FIFO fields");
        assert_eq!(
            fifo.keys().cloned().collect::<BTreeSet<_>>(),
            literals(&sqs_rs, r#"request\["(\w+)"\] ="#),
            "the FIFO fields sqs.rs sets ({kind})"
        );
        let group = fifo["MessageGroupId"].as_str().unwrap();
        assert!(group.contains("`data.envelope_id`") && group.contains("`subject`"), "{group}");
        assert!(fifo["MessageDeduplicationId"].as_str().unwrap().contains("the event id"));
    }
    assert!(sqs_rs.contains(r#"put("content-type", CLOUDEVENTS_JSON);"#));
    assert!(sqs_rs.contains(r#"put("ce-specversion", text("specversion").unwrap_or("1.0"));"#));
    assert!(sqs_rs.contains("let id = event.id.to_string();") && sqs_rs.contains(r#"put("ce-id", &id);"#));
    assert!(sqs_rs.contains(r#"put("ce-type", event.event_type);"#));
    assert!(sqs_rs.contains(r#""DataType": "String""#));
    assert!(sqs_rs.contains(r#"let envelope = cloud.pointer("/data/envelope_id")"#));
    assert!(sqs_rs.contains(r#"let group = envelope.or_else(|| text("subject"))"#));
    assert!(sqs_rs.contains(r#"request["MessageDeduplicationId"] = Value::String(id);"#));
    assert!(sqs_rs.contains("if self.fifo {"));
    assert!(read("src/config/sinks.rs").contains(r#"self.name.ends_with(".fifo")"#), "FIFO is a `.fifo` name");
    let channel = &doc["channels"]["sqs"];
    assert_eq!(channel["address"], "{queue}", "the channel is the queue, by name");
    assert!(channel["description"].as_str().unwrap().contains("`.fifo`"));
    let queue = &channel["bindings"]["sqs"]["queue"];
    assert_eq!(queue["name"], channel["address"]);
    assert_eq!(queue["fifoQueue"], false, "the binding describes a standard queue; the description, FIFO");
    let server = &doc["servers"]["sqsEndpoint"];
    assert_eq!(server["protocol"], "sqs");
    assert_eq!(server["host"], "sqs.{region}.amazonaws.com");
    assert_eq!(
        server["variables"]["region"]["default"].as_str().into_iter().map(String::from).collect::<BTreeSet<_>>(),
        literals(&sqs_rs, r#"const DEFAULT_REGION: &str = "([^"]+)";"#),
        "the default region is sqs.rs's"
    );
    let target = literals(&sqs_rs, r#"const TARGET: &str = "([^"]+)";"#).pop_first().unwrap();
    assert!(server["description"].as_str().unwrap().contains(&target), "the server names {target}");
    assert!(doc["operations"]["sendSqsEvent"]["description"].as_str().unwrap().contains("`SendMessage`"));
}

fn sink(settings: Value) -> SinkSettings {
    serde_json::from_value(settings).unwrap()
}

/// An example event of the contract with a fresh id and the given type.
fn example_event(doc: &Value, event_type: &str) -> (EventId, Vec<u8>) {
    let mut payload = channel_message(doc, "webhook", "provisioningEvent")["examples"][0]["payload"].clone();
    let id = EventId(uuid::Uuid::new_v4());
    payload["id"] = json!(id.to_string());
    payload["type"] = json!(event_type);
    (id, serde_json::to_vec(&payload).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncapi_webhook_request_is_what_the_contract_says() {
    let doc = contract();
    let message = channel_message(&doc, "webhook", "provisioningEvent");
    let headers = &message["headers"]["properties"];
    let (old, new) = (countersign::deliver::receiver::random_secret(), countersign::deliver::receiver::random_secret());
    let receiver = WebhookReceiver::spawn(&[new.as_str()]).await.unwrap();
    // Two secrets, as during a rotation: two signatures in one header.
    let settings =
        sink(json!({ "name": "hr", "kind": "webhook", "url": receiver.url(), "secret": old, "secrets": [new] }));
    let (id, body) = example_event(&doc, "employee.onboarding.signed");
    let sent = build_sink(&settings, Duration::from_secs(10)).unwrap();
    sent.deliver(&OutgoingEvent { id, event_type: "employee.onboarding.signed", body: &body }).await.unwrap();

    let request = receiver.wait_for_delivered(1, Duration::from_secs(10)).await.unwrap().remove(0);
    assert!(request.verified(), "Standard Webhooks verification: {:?}", request.rejected);
    assert_eq!(request.webhook_id.as_deref(), Some(id.to_string().as_str()), "webhook-id is the event id");
    assert_eq!(request.content_type.as_deref(), headers["content-type"]["const"].as_str());
    let timestamp = request.timestamp.unwrap();
    assert!(
        (chrono::Utc::now().timestamp() - timestamp).abs() < 60,
        "webhook-timestamp is Unix seconds of the attempt"
    );
    assert!(
        regex::Regex::new(headers["webhook-timestamp"]["pattern"].as_str().unwrap())
            .unwrap()
            .is_match(&timestamp.to_string())
    );
    let signature = request.signature.unwrap();
    let pattern = regex::Regex::new(headers["webhook-signature"]["pattern"].as_str().unwrap()).unwrap();
    assert!(pattern.is_match(&signature), "{signature:?} against {pattern}");
    assert_eq!(signature.split(' ').count(), 2, "one signature per secret");
    assert_eq!(&request.body[..], &body[..], "the body is the event, unchanged");
}

fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into())
}

fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

fn unique(prefix: &str) -> String {
    format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncapi_nats_subjects_and_headers_are_what_the_sink_publishes() {
    let doc = contract();
    let client = async_nats::connect(nats_url().as_str())
        .await
        .unwrap_or_else(|e| panic!("NATS is not reachable at {} ({e}); scripts/test.sh starts it", nats_url()));
    let js = async_nats::jetstream::new(client);
    let prefix = unique("csasyncapi");
    let bare = format!("{prefix}-bare.employee.onboarding.signed");
    let name = unique("countersign-asyncapi-");
    let stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: name.clone(),
            subjects: vec![format!("{prefix}.>"), bare.clone()],
            ..Default::default()
        })
        .await
        .unwrap();

    let mut expected = Vec::new();
    for (channel, prefix_setting, event_type) in
        [("natsPrefixed", Some(prefix.as_str()), "employee.onboarding.signed"), ("nats", None, bare.as_str())]
    {
        let mut settings = json!({ "name": "identity", "kind": "nats", "url": nats_url() });
        if let Some(p) = prefix_setting {
            settings["subject_prefix"] = json!(p);
        }
        let (id, body) = example_event(&doc, event_type);
        let sink = build_sink(&sink(settings), Duration::from_secs(10)).unwrap();
        sink.deliver(&OutgoingEvent { id, event_type, body: &body }).await.unwrap();
        let address = doc["channels"][channel]["address"].as_str().unwrap();
        let subject = address.replace("{subject_prefix}", &prefix).replace("{type}", event_type);
        expected.push((channel, subject, id.to_string()));
    }

    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config { durable_name: None, ..Default::default() })
        .await
        .unwrap();
    let mut messages = consumer.fetch().max_messages(2).expires(Duration::from_secs(2)).messages().await.unwrap();
    let mut seen = 0;
    while let Some(message) = messages.next().await {
        let message = message.unwrap();
        let (channel, _, id) = expected
            .iter()
            .find(|(_, subject, _)| message.subject.as_str() == subject)
            .unwrap_or_else(|| panic!("subject {} is none of the documented {expected:?}", message.subject));
        let documented = channel_message(&doc, channel, "provisioningEvent");
        let headers = message.headers.as_ref().unwrap();
        let names: BTreeSet<String> = headers.iter().map(|(name, _)| name.to_string()).collect();
        assert_eq!(names, header_names(&documented), "{channel}: the headers are the documented ones");
        assert_eq!(headers.get("Nats-Msg-Id").map(|v| v.as_str()), Some(id.as_str()), "Nats-Msg-Id is the event id");
        let content_type = documented["headers"]["properties"]["Content-Type"]["const"].as_str();
        assert_eq!(headers.get("Content-Type").map(|v| v.as_str()), content_type);
        seen += 1;
    }
    assert_eq!(seen, 2, "one message per channel");
    js.delete_stream(&name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncapi_amqp_exchange_routing_key_and_properties_are_what_the_sink_publishes() {
    let doc = contract();
    let exchange = &doc["channels"]["amqp"]["bindings"]["amqp"]["exchange"];
    let exchange_name = exchange["name"].as_str().unwrap();
    let connection = common::servers::amqp_connect(&amqp_url())
        .await
        .unwrap_or_else(|e| panic!("RabbitMQ is not reachable at AMQP_URL ({e}); scripts/test.sh starts it"));
    let channel = connection.create_channel().await.unwrap();
    // Declared as documented first: the sink's own declaration then succeeds
    // only if it asks for the same kind of exchange.
    let kind = match exchange["type"].as_str().unwrap() {
        "topic" => lapin::ExchangeKind::Topic,
        other => panic!("exchange type {other}"),
    };
    let options = ExchangeDeclareOptions {
        durable: exchange["durable"].as_bool().unwrap(),
        auto_delete: exchange["autoDelete"].as_bool().unwrap(),
        ..ExchangeDeclareOptions::default()
    };
    channel.exchange_declare(exchange_name.into(), kind, options, FieldTable::default()).await.unwrap();
    let queue = channel
        .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, FieldTable::default())
        .await
        .unwrap();
    let event_type = format!("{}.employee.onboarding.signed", unique("csasyncapi"));
    let routing_key = doc["channels"]["amqp"]["address"].as_str().unwrap().replace("{type}", &event_type);
    channel
        .queue_bind(
            queue.name().clone(),
            exchange_name.into(),
            routing_key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // No `exchange` setting: the default is the documented one.
    let (id, body) = example_event(&doc, &event_type);
    let sink = build_sink(&sink(json!({ "name": "erp", "kind": "amqp", "url": amqp_url() })), Duration::from_secs(10))
        .unwrap();
    sink.deliver(&OutgoingEvent { id, event_type: &event_type, body: &body }).await.unwrap();

    let message = channel
        .basic_get(queue.name().clone(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("the confirmed message is in the bound queue");
    let delivery = &message.delivery;
    assert_eq!(delivery.exchange.as_str(), exchange_name);
    assert_eq!(delivery.routing_key.as_str(), routing_key, "the routing key is the event type");
    let p = &delivery.properties;
    let set: BTreeSet<String> = [
        ("content_type", p.content_type().is_some()),
        ("content_encoding", p.content_encoding().is_some()),
        ("headers", p.headers().is_some()),
        ("delivery_mode", p.delivery_mode().is_some()),
        ("priority", p.priority().is_some()),
        ("correlation_id", p.correlation_id().is_some()),
        ("reply_to", p.reply_to().is_some()),
        ("expiration", p.expiration().is_some()),
        ("message_id", p.message_id().is_some()),
        ("timestamp", p.timestamp().is_some()),
        ("type", p.kind().is_some()),
        ("user_id", p.user_id().is_some()),
        ("app_id", p.app_id().is_some()),
        ("cluster_id", p.cluster_id().is_some()),
    ]
    .into_iter()
    .filter(|(_, present)| *present)
    .map(|(name, _)| name.to_string())
    .collect();
    let documented = channel_message(&doc, "amqp", "provisioningEvent");
    let properties = documented["x-amqp-properties"].as_object().unwrap();
    assert_eq!(set, properties.keys().cloned().collect::<BTreeSet<_>>(), "the properties set are the documented ones");
    assert_eq!(
        p.message_id().as_ref().map(|v| v.as_str()),
        Some(id.to_string().as_str()),
        "message_id is the event id"
    );
    assert_eq!(p.kind().as_ref().map(|v| v.as_str()), Some(event_type.as_str()), "type is the event type");
    assert_eq!(p.content_type().as_ref().map(|v| v.as_str()), properties["content_type"].as_str());
    let mode = doc["operations"]["sendAmqpEvent"]["bindings"]["amqp"]["deliveryMode"].as_u64();
    assert_eq!(p.delivery_mode().map(u64::from), mode, "persistent");
    assert_eq!(p.app_id().as_ref().map(|v| v.as_str()), properties["app_id"].as_str());
    assert_eq!(&delivery.data[..], &body[..], "the body is the event, unchanged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncapi_sqs_message_attributes_and_fifo_fields_are_what_the_sink_sends() {
    let doc = contract();
    let moto = Moto::start().await;
    let address = doc["channels"]["sqs"]["address"].as_str().unwrap();
    let name = unique("asyncapi-");
    let queues = [address.replace("{queue}", &name), address.replace("{queue}", &format!("{name}.fifo"))];
    let urls = moto
        .boto3(
            "sqs = client('sqs')\nprint(json.dumps([sqs.create_queue(QueueName=q, Attributes={'FifoQueue': 'true'} if \
             q.endswith('.fifo') else {})['QueueUrl'] for q in args['queues']]))",
            json!({ "queues": queues }),
        )
        .await;
    let urls: Vec<String> = serde_json::from_value(urls).unwrap();

    let event_type = "employee.onboarding.signed";
    let (id, body) = example_event(&doc, event_type);
    for url in &urls {
        let settings = json!({
            "name": "queue", "kind": "sqs", "url": url, "region": "us-east-1",
            "access_key_id": "AKIAMOTOTESTING00001", "secret": "moto-ignores-this-secret-key",
        });
        let sink = build_sink(&sink(settings), Duration::from_secs(10)).unwrap();
        sink.deliver(&OutgoingEvent { id, event_type, body: &body }).await.unwrap();
    }
    let received = moto
        .boto3(
            "sqs = client('sqs')\nout = []\nfor url in args['urls']:\n    answer = sqs.receive_message(QueueUrl=url, \
             MaxNumberOfMessages=10, MessageAttributeNames=['All'], MessageSystemAttributeNames=['All'])\n    \
             out.append([{'body': m['Body'], 'attributes': {k: [v['DataType'], v.get('StringValue')] for k, v in \
             m.get('MessageAttributes', {}).items()}, 'system': m.get('Attributes', {})} for m in \
             answer.get('Messages', [])])\nprint(json.dumps(out))",
            json!({ "urls": urls }),
        )
        .await;

    let documented = channel_message(&doc, "sqs", "provisioningEvent");
    let attributes = &documented["headers"]["properties"];
    let fifo_fields: BTreeSet<String> = documented["x-sqs-fifo"].as_object().unwrap().keys().cloned().collect();
    let payload: Value = serde_json::from_slice(&body).unwrap();
    for (queue, messages) in queues.iter().zip(received.as_array().unwrap()) {
        let [message] = messages.as_array().unwrap().as_slice() else {
            panic!("{queue}: one message expected: {messages}");
        };
        assert_eq!(
            message["body"].as_str().unwrap().as_bytes(),
            &body[..],
            "{queue}: the body is the event, unchanged"
        );
        let sent = message["attributes"].as_object().unwrap();
        assert_eq!(
            sent.keys().cloned().collect::<BTreeSet<_>>(),
            header_names(&documented),
            "{queue}: the message attributes are the documented ones"
        );
        for (name, value) in sent {
            assert_eq!(value[0], "String", "{queue}: {name} is a String attribute");
            let expected = match name.strip_prefix("ce-") {
                Some(attribute) => payload[attribute].clone(),
                None => attributes[name]["const"].clone(),
            };
            assert_eq!(value[1], expected, "{queue}: {name}");
        }
        assert_eq!(sent["ce-id"][1], id.to_string(), "{queue}: ce-id is the event id");
        let system = message["system"].as_object().unwrap();
        if queue.ends_with(".fifo") {
            let present: BTreeSet<String> = fifo_fields.iter().filter(|f| system.contains_key(*f)).cloned().collect();
            assert_eq!(present, fifo_fields, "{queue}: the documented FIFO fields");
            assert_eq!(system["MessageGroupId"], payload["data"]["envelope_id"], "{queue}: grouped by envelope");
            assert_eq!(system["MessageDeduplicationId"], id.to_string(), "{queue}: deduplicated by event id");
        } else {
            assert!(fifo_fields.iter().all(|f| !system.contains_key(f)), "{queue}: no FIFO fields: {system:?}");
        }
    }
}
