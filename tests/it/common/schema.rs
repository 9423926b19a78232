//! Just enough JSON Schema (2020-12) to check events against
//! docs/event.schema.json: type, const, required, properties,
//! additionalProperties, items, oneOf, enum, local $ref, pattern, minimum, and
//! the formats uuid, date-time and uri. A keyword it does not know fails
//! the check, so the schema cannot silently outgrow this validator.

use serde_json::Value;

const KNOWN: &[&str] = &[
    "$schema",
    "$id",
    "$defs",
    "$ref",
    "title",
    "description",
    "type",
    "const",
    "enum",
    "required",
    "properties",
    "additionalProperties",
    "items",
    "oneOf",
    "pattern",
    "minimum",
    "format",
];

/// Every way `value` breaks `schema`, as "path: problem".
pub fn validate(schema: &Value, value: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    check(schema, schema, value, "$", &mut errors);
    errors
}

fn check(root: &Value, schema: &Value, value: &Value, path: &str, errors: &mut Vec<String>) {
    let Some(rules) = schema.as_object() else {
        if schema == &Value::Bool(false) {
            errors.push(format!("{path}: not allowed"));
        }
        return;
    };
    for key in rules.keys() {
        if !KNOWN.contains(&key.as_str()) {
            errors.push(format!("{path}: the test validator does not know the keyword {key}"));
        }
    }
    if let Some(reference) = rules.get("$ref").and_then(Value::as_str) {
        let target = reference.strip_prefix("#/").map(|p| p.split('/').fold(root, |node, part| &node[part]));
        match target {
            Some(target) if !target.is_null() => check(root, target, value, path, errors),
            _ => errors.push(format!("{path}: unresolvable $ref {reference}")),
        }
    }
    if let Some(types) = rules.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !allowed.iter().any(|t| is_type(value, t)) {
            errors.push(format!("{path}: expected {allowed:?}, found {value}"));
            return;
        }
    }
    if let Some(expected) = rules.get("const")
        && value != expected
    {
        errors.push(format!("{path}: expected {expected}, found {value}"));
    }
    if let Some(options) = rules.get("enum").and_then(Value::as_array)
        && !options.contains(value)
    {
        errors.push(format!("{path}: {value} is not one of {options:?}"));
    }
    if let (Some(pattern), Some(text)) = (rules.get("pattern").and_then(Value::as_str), value.as_str())
        && !regex::Regex::new(pattern).unwrap().is_match(text)
    {
        errors.push(format!("{path}: {text:?} does not match {pattern}"));
    }
    if let (Some(minimum), Some(number)) = (rules.get("minimum").and_then(Value::as_f64), value.as_f64())
        && number < minimum
    {
        errors.push(format!("{path}: {number} is below {minimum}"));
    }
    if let (Some(format), Some(text)) = (rules.get("format").and_then(Value::as_str), value.as_str()) {
        let ok = match format {
            "uuid" => uuid::Uuid::try_parse(text).is_ok(),
            "date-time" => chrono::DateTime::parse_from_rfc3339(text).is_ok(),
            "uri" => url::Url::parse(text).is_ok(),
            other => {
                errors.push(format!("{path}: the test validator does not know the format {other}"));
                true
            }
        };
        if !ok {
            errors.push(format!("{path}: {text:?} is not a {format}"));
        }
    }
    if let Some(options) = rules.get("oneOf").and_then(Value::as_array) {
        let passing = options.iter().filter(|option| validate_under(root, option, value, path).is_empty()).count();
        if passing != 1 {
            errors.push(format!("{path}: matches {passing} of the oneOf alternatives, not exactly one"));
        }
    }
    if let Some(object) = value.as_object() {
        for required in rules.get("required").and_then(Value::as_array).into_iter().flatten() {
            if let Some(name) = required.as_str()
                && !object.contains_key(name)
            {
                errors.push(format!("{path}: {name} is missing"));
            }
        }
        let properties = rules.get("properties").and_then(Value::as_object);
        for (name, item) in object {
            let item_path = format!("{path}.{name}");
            match (properties.and_then(|p| p.get(name)), rules.get("additionalProperties")) {
                (Some(property), _) => check(root, property, item, &item_path, errors),
                (None, Some(additional)) => check(root, additional, item, &item_path, errors),
                (None, None) => {}
            }
        }
    }
    if let (Some(items), Some(array)) = (rules.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            check(root, items, item, &format!("{path}[{i}]"), errors);
        }
    }
}

fn validate_under(root: &Value, schema: &Value, value: &Value, path: &str) -> Vec<String> {
    let mut errors = Vec::new();
    check(root, schema, value, path, &mut errors);
    errors
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        _ => false,
    }
}
