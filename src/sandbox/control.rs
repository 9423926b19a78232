//! The control endpoint under `/control`: what tests, the demo, an operator
//! trying things out and a consumer's developer use to drive the sandbox.
//! Not part of DocuSign. Each handler is annotated for utoipa and registered
//! through `utoipa_axum::routes!`, so a route cannot exist without its
//! description in `GET /control/openapi.json`.
//!
//! Bodies are read by hand rather than by axum's `Json` extractor, whose
//! refusals are plain text and which insists on a `Content-Type`: a
//! developer's first curl should get back JSON naming the field at fault.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::{OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::connect::{ConnectFormat, ConnectSender, DeliveryReport, NotificationOptions, RetryPolicy};
use super::{Counters, Envelope, Fault, LifecycleError, Sandbox, envelopes, faults, pdf};
use crate::error::{ErrorBody, HttpError};
use crate::ids::{EnvelopeId, UserId};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "countersign sandbox control API",
        description = "Drives the DocuSign sandbox (`countersign sandbox`): complete envelopes and have them \
                       announced by signed Connect notifications, read the account's templates, sign or decline \
                       envelopes sent through the REST API as their recipients would, grant or revoke consent, \
                       switch faults, rate limits and token lifetimes, and read the request counters. None of it \
                       exists at DocuSign. No authentication: the sandbox is for a developer's machine or a test. \
                       Bad input is answered 400 with an error body whose `field` names the culprit."
    ),
    tags(
        (name = "about", description = "This description"),
        (name = "identity", description = "Who the sandbox is, and the consent countersign needs"),
        (name = "envelopes", description = "Completing envelopes and checking their documents"),
        (name = "sending", description = "The templates envelopes are sent from, and their recipients' part: \
            signing and declining envelopes sent through `POST …/envelopes`"),
        (name = "connect", description = "Connect notifications, signed with the sandbox's HMAC key"),
        (name = "faults", description = "Making DocuSign misbehave on purpose"),
        (name = "tokens", description = "Access tokens and rate limits"),
    )
)]
struct ControlDoc;

fn routes() -> OpenApiRouter<Sandbox> {
    OpenApiRouter::with_openapi(ControlDoc::openapi())
        .routes(routes!(openapi))
        .routes(routes!(identity))
        .routes(routes!(grant, revoke))
        .routes(routes!(complete_envelopes))
        .routes(routes!(checksums))
        .routes(routes!(list_templates))
        .routes(routes!(sign))
        .routes(routes!(decline))
        .routes(routes!(list_faults, clear_faults))
        .routes(routes!(set_fault))
        .routes(routes!(expire_tokens))
        .routes(routes!(token_lifetime))
        .routes(routes!(rate_limits))
        .routes(routes!(counters))
        .routes(routes!(send_connect))
}

pub(super) fn router() -> axum::Router<Sandbox> {
    routes().split_for_parts().0
}

/// The OpenAPI description, built once: it depends on nothing at run time.
fn description() -> &'static str {
    static DESCRIPTION: OnceLock<String> = OnceLock::new();
    DESCRIPTION.get_or_init(|| {
        let (_, openapi) = routes().split_for_parts();
        openapi.to_pretty_json().unwrap_or_else(|error| {
            serde_json::json!({ "error": "internal", "message": format!("cannot render the description: {error}") })
                .to_string()
        })
    })
}

/// The OpenAPI 3.1 description of every `/control` route: this document.
#[utoipa::path(get, path = "/control/openapi.json", tag = "about",
    responses((status = 200, description = "The OpenAPI description of the control API", content_type = "application/json")))]
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], description()).into_response()
}

/// Bad input in `field`: 400, with a message that starts with the field's name.
/// A request that is well formed but needs a listener the sandbox was not
/// started with: 409, since the same request succeeds on one started with
/// `--connect-url`.
fn no_listener(field: &str, message: &str) -> HttpError {
    HttpError::new(StatusCode::CONFLICT, "no_listener", format!("{field}: {message}")).with_field(field)
}

fn invalid(field: &str, message: impl std::fmt::Display) -> HttpError {
    HttpError::new(StatusCode::BAD_REQUEST, "invalid_input", format!("{field}: {message}")).with_field(field)
}

fn not_found(message: impl Into<String>) -> HttpError {
    HttpError::new(StatusCode::NOT_FOUND, "not_found", message)
}

/// A request body: a JSON object holding only known fields. No body (or
/// `null`) counts as `{}`, so that a bare `curl -X POST` takes every default.
struct Fields(Map<String, Value>);

impl Fields {
    fn parse(body: &[u8], allowed: &[&str]) -> Result<Self, HttpError> {
        if body.is_empty() {
            return Ok(Self(Map::new()));
        }
        let value: Value =
            serde_json::from_slice(body).map_err(|e| invalid("body", format_args!("is not valid JSON ({e})")))?;
        let map = match value {
            Value::Object(map) => map,
            // Where the description makes a body optional it allows `null`: the same as none.
            Value::Null => Map::new(),
            _ => return Err(invalid("body", "must be a JSON object")),
        };
        if let Some(key) = map.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(invalid(key, format_args!("unknown field; expected one of {}", allowed.join(", "))));
        }
        // JSON Schema counts 41.0 as an integer; so does this API.
        let map = map
            .into_iter()
            .map(|(key, value)| match value.as_f64() {
                Some(number)
                    if !value.is_i64() && !value.is_u64() && number.fract() == 0.0 && number.abs() < 9.0e15 =>
                {
                    (key, Value::from(number as i64))
                }
                _ => (key, value),
            })
            .collect();
        Ok(Self(map))
    }

    /// The field read as a `T`; absent and `null` are `None`. `expected` says in words what fits.
    fn get<T: DeserializeOwned>(&self, name: &str, expected: &str) -> Result<Option<T>, HttpError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => T::deserialize(value).map(Some).map_err(|_| {
                let shown = value.to_string();
                // Echo a short value back; a long one would bury the message.
                let got = if shown.len() <= 60 {
                    shown
                } else {
                    format!("{}…", shown.chars().take(40).collect::<String>())
                };
                invalid(name, format_args!("must be {expected}, not {got}"))
            }),
        }
    }

    fn require<T: DeserializeOwned>(&self, name: &str, expected: &str) -> Result<T, HttpError> {
        self.get(name, expected)?.ok_or_else(|| invalid(name, format_args!("is required ({expected})")))
    }
}

/// Where a notification may go: an absolute http(s) URL.
fn listener_url(field: &str, text: &str) -> Result<String, HttpError> {
    match url::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => Ok(text.to_string()),
        Ok(_) => Err(invalid(field, format_args!("{text:?} is not an http:// or https:// URL"))),
        Err(error) => Err(invalid(field, format_args!("{text:?} is not a URL ({error})"))),
    }
}

/// What `countersign serve` needs to reach the sandbox and to check its Connect signatures.
#[derive(Debug, Serialize, ToSchema)]
struct IdentityAnswer {
    /// The integration key (OAuth client id); a JWT assertion's `iss`.
    integration_key: String,
    /// The one user the sandbox knows; a JWT assertion's `sub`.
    user_id: String,
    /// The user's one account.
    account_id: String,
    /// The host a JWT assertion's `aud` must name, without a scheme.
    auth_host: String,
    /// The redirect URI registered on the integration key (the consent page sends the user there).
    redirect_uri: String,
    /// Connect HMAC keys; `X-DocuSign-Signature-N` is made with the N-th.
    hmac_keys: Vec<String>,
    /// The integration key's RSA private key, PEM: what signs countersign's JWT assertions.
    private_key_pem: String,
    /// Where completed envelopes are announced when a request names no listener (`--connect-url`).
    connect_url: Option<String>,
}

/// The sandbox's integration key, user, account, HMAC keys and private key.
#[utoipa::path(get, path = "/control/identity", tag = "identity",
    responses((status = 200, description = "The identity, as `countersign sandbox` prints it", body = IdentityAnswer)))]
async fn identity(State(sandbox): State<Sandbox>) -> Json<IdentityAnswer> {
    let id = sandbox.identity();
    Json(IdentityAnswer {
        integration_key: id.integration_key.to_string(),
        user_id: id.user.user_id.to_string(),
        account_id: id.account_id.to_string(),
        auth_host: sandbox.config().auth_host.clone(),
        redirect_uri: id.redirect_uri.clone(),
        hmac_keys: id.hmac_keys.clone(),
        private_key_pem: id.private_key_pem.clone(),
        connect_url: sandbox.connect_url(),
    })
}

/// Whose consent, and to what. An empty body is fine.
#[derive(Debug, Default, ToSchema)]
#[allow(dead_code, reason = "describes the body, which is read field by field")]
#[serde(deny_unknown_fields)]
struct ConsentRequest {
    /// The user (a GUID); the sandbox's own user when left out.
    #[schema(format = Uuid)]
    user_id: Option<String>,
    /// Scopes to grant; `signature` and `impersonation` (what the JWT Grant needs) when left out.
    /// Revoking takes every scope away and ignores this.
    scopes: Option<Vec<String>>,
}

impl ConsentRequest {
    fn parse(sandbox: &Sandbox, body: &[u8]) -> Result<(UserId, Vec<String>), HttpError> {
        let fields = Fields::parse(body, &["user_id", "scopes"])?;
        let user = match fields.get::<String>("user_id", "a user id (GUID)")? {
            None => sandbox.identity().user.user_id,
            Some(text) => {
                UserId::parse(&text).map_err(|_| invalid("user_id", format_args!("{text:?} is not a GUID")))?
            }
        };
        let scopes = fields
            .get::<Vec<String>>("scopes", "a list of scope names")?
            .unwrap_or_else(|| vec!["signature".into(), "impersonation".into()]);
        Ok((user, scopes))
    }
}

/// Grants the integration key consent, as a user allowing access on DocuSign's consent page would.
#[utoipa::path(post, path = "/control/consent", tag = "identity",
    request_body(content = Option<ConsentRequest>, description = "Optional; by default the sandbox's user consents to `signature impersonation`"),
    responses(
        (status = 204, description = "Granted; tokens can be issued for the user from now on"),
        (status = 400, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
async fn grant(State(sandbox): State<Sandbox>, body: Bytes) -> Result<StatusCode, HttpError> {
    let (user, scopes) = ConsentRequest::parse(&sandbox, &body)?;
    let scopes: Vec<&str> = scopes.iter().map(String::as_str).collect();
    sandbox.grant_consent(user, &scopes);
    Ok(StatusCode::NO_CONTENT)
}

/// Takes the user's consent away; tokens already issued keep working until they expire, as at DocuSign.
#[utoipa::path(delete, path = "/control/consent", tag = "identity",
    request_body(content = Option<ConsentRequest>, description = "Optional; by default the sandbox's user"),
    responses(
        (status = 204, description = "Revoked; the token endpoint answers `consent_required` for the user"),
        (status = 400, description = "A field is invalid; `field` names it", body = ErrorBody),
    ))]
async fn revoke(State(sandbox): State<Sandbox>, body: Bytes) -> Result<StatusCode, HttpError> {
    let (user, _) = ConsentRequest::parse(&sandbox, &body)?;
    sandbox.revoke_consent(user);
    Ok(StatusCode::NO_CONTENT)
}

/// The most envelopes one `POST /control/envelopes` completes.
const MAX_COMPLETE: usize = 100_000;
/// The most envelopes one `POST /control/connect` completes and announces (each is posted in turn).
const MAX_NOTIFY: usize = 10_000;

/// The generator's scenarios, for the description (the body is read as text
/// and checked against `envelopes::scenario_names`, which a unit test pins).
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code, reason = "describes a field, which is read as text")]
enum ScenarioName {
    Onboarding,
    Nda,
    Equipment,
}

/// Which envelopes to complete. An empty body completes one.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "describes the body, which is read field by field")]
#[serde(deny_unknown_fields)]
struct CompleteRequest {
    /// How many, 0 to 100000; 1 when left out.
    #[schema(example = 2)]
    #[schema(minimum = 0, maximum = 100000)]
    count: Option<usize>,
    /// Only envelopes of this kind: `onboarding` (offer letter and forms), `nda` (mutual NDA) or
    /// `equipment` (an equipment request). A seeded mix of all three when left out.
    #[schema(value_type = Option<ScenarioName>, example = "equipment")]
    scenario: Option<String>,
    /// Whether to announce each envelope with an `envelope-completed` notification (JSON, signed)
    /// to the listener the sandbox was started with (`--connect-url`). Defaults to true when there
    /// is one; true without one is an error. For other formats or listeners use `POST /control/connect`.
    notify: Option<bool>,
}

/// The envelopes completed, and how announcing them went.
#[derive(Debug, Serialize, ToSchema)]
struct Completed {
    /// In the order they were completed; the REST API serves them from now on.
    envelope_ids: Vec<String>,
    /// Present when notifications were sent: one per envelope, in the same order.
    #[serde(skip_serializing_if = "Option::is_none")]
    deliveries: Option<Vec<Delivery>>,
}

/// Reads `count` (at most `max`) and `scenario`, and completes that many envelopes.
fn complete_from(sandbox: &Sandbox, fields: &Fields, min: usize, max: usize) -> Result<Vec<Envelope>, HttpError> {
    let expected = format!("a whole number from {min} to {max}");
    let count = fields.get::<usize>("count", &expected)?.unwrap_or(1);
    if !(min..=max).contains(&count) {
        return Err(invalid("count", format_args!("must be {expected}, not {count}")));
    }
    let scenario = fields.get::<String>("scenario", "a scenario name")?;
    sandbox.complete_envelopes_of(count, scenario.as_deref()).ok_or_else(|| {
        let known = envelopes::scenario_names().join(", ");
        invalid("scenario", format_args!("{:?} is not one of {known}", scenario.unwrap_or_default()))
    })
}

/// Completes new envelopes now, and announces them to the `--connect-url` listener if there is one.
#[utoipa::path(post, path = "/control/envelopes", tag = "envelopes",
    request_body(content = Option<CompleteRequest>, description = "Optional; by default one envelope of any scenario"),
    responses(
        (status = 200, description = "Completed (and announced, when `deliveries` is present; a failed delivery \
            is reported there, not as an error status)", body = Completed),
        (status = 400, description = "A field is invalid; `field` names it", body = ErrorBody),
        (status = 409, description = "`notify` is true but the sandbox has no `--connect-url`", body = ErrorBody),
    ))]
async fn complete_envelopes(State(sandbox): State<Sandbox>, body: Bytes) -> Result<Json<Completed>, HttpError> {
    let fields = Fields::parse(&body, &["count", "scenario", "notify"])?;
    let default_url = sandbox.connect_url();
    let url = match (fields.get::<bool>("notify", "true or false")?, default_url) {
        (Some(true), None) => {
            return Err(no_listener(
                "notify",
                "the sandbox has no Connect listener: start it with --connect-url, or use POST /control/connect \
                 with a url",
            ));
        }
        (Some(false), _) | (None, None) => None,
        (Some(true) | None, Some(url)) => Some(url),
    };
    let completed = complete_from(&sandbox, &fields, 0, MAX_COMPLETE)?;
    let envelope_ids = completed.iter().map(|e| e.envelope_id.to_string()).collect();
    let deliveries = match url {
        Some(url) => Some(announce(&sandbox, url, &completed, ConnectFormat::Json, &Announce::default()).await),
        None => None,
    };
    Ok(Json(Completed { envelope_ids, deliveries }))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// SHA-256 of every document the REST API serves for the envelope, so a
/// test can check that what countersign stored is what DocuSign sent.
#[utoipa::path(get, path = "/control/envelopes/{envelope}/checksums", tag = "envelopes",
    params(("envelope" = String, Path, format = Uuid, description = "The id of an envelope the sandbox completed")),
    responses(
        (status = 200, description = "Lowercase hex SHA-256 per document id, plus `certificate` and `combined` \
            (the combined PDF with the certificate)", body = BTreeMap<String, String>),
        (status = 400, description = "Not an envelope id", body = ErrorBody),
        (status = 404, description = "The sandbox has no such envelope", body = ErrorBody),
    ))]
async fn checksums(
    State(sandbox): State<Sandbox>,
    Path(envelope): Path<String>,
) -> Result<Json<BTreeMap<String, String>>, HttpError> {
    let id = EnvelopeId::parse(&envelope)
        .map_err(|_| invalid("envelope", format_args!("{envelope:?} is not an envelope id (a GUID)")))?;
    let envelope = sandbox.envelope(id).ok_or_else(|| not_found(format!("the sandbox has no envelope {id}")))?;
    let mut sums = BTreeMap::new();
    for document in &envelope.documents {
        sums.insert(document.document_id.clone(), sha256_hex(&pdf::document_pdf(&envelope, document)));
    }
    sums.insert("certificate".into(), sha256_hex(&pdf::certificate_pdf(&envelope)));
    sums.insert("combined".into(), sha256_hex(&pdf::combined_pdf(&envelope, true)));
    Ok(Json(sums))
}

/// The fault knobs of one REST route. Every knob left out is off.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct FaultKnobs {
    /// Milliseconds to wait before answering.
    latency_ms: u64,
    /// Share of requests (0 to 1) answered with `error_status` and a DocuSign-style error body.
    #[schema(minimum = 0.0, maximum = 1.0)]
    error_rate: f64,
    /// The status of those answers: a 5xx, 503 when left out.
    #[schema(minimum = 500, maximum = 599)]
    error_status: Option<u16>,
    /// Share of answers (0 to 1) whose body stops halfway, though `Content-Length` promised all of it.
    #[schema(minimum = 0.0, maximum = 1.0)]
    truncate_rate: f64,
    /// Share of requests (0 to 1) whose connection is dropped without an answer.
    #[schema(minimum = 0.0, maximum = 1.0)]
    reset_rate: f64,
    /// Share of requests (0 to 1) that are carried out and then lose their answer: the connection
    /// drops after the envelope was created (`create`) or voided (`void`), so a client retrying
    /// blindly does it twice.
    #[schema(minimum = 0.0, maximum = 1.0)]
    lost_answer_rate: f64,
    /// How many of the next requests are carried out and then lose their answer, counted down as
    /// they come (before `lost_answer_rate` applies), 0 to 1000000.
    #[schema(minimum = 0, maximum = 1_000_000)]
    lost_answers: u32,
}

impl From<Fault> for FaultKnobs {
    fn from(fault: Fault) -> Self {
        let Fault { latency_ms, error_rate, error_status, truncate_rate, reset_rate, lost_answer_rate, lost_answers } =
            fault;
        Self { latency_ms, error_rate, error_status, truncate_rate, reset_rate, lost_answer_rate, lost_answers }
    }
}

impl FaultKnobs {
    fn parse(body: &[u8]) -> Result<Fault, HttpError> {
        let fields = Fields::parse(
            body,
            &[
                "latency_ms",
                "error_rate",
                "error_status",
                "truncate_rate",
                "reset_rate",
                "lost_answer_rate",
                "lost_answers",
            ],
        )?;
        let share = |name: &str| -> Result<f64, HttpError> {
            let value = fields.get::<f64>(name, "a number from 0 to 1")?.unwrap_or(0.0);
            if (0.0..=1.0).contains(&value) {
                Ok(value)
            } else {
                Err(invalid(name, format_args!("must be a number from 0 to 1, not {value}")))
            }
        };
        let error_status = fields.get::<u16>("error_status", "an HTTP status from 500 to 599")?;
        if let Some(status) = error_status
            && !(500..=599).contains(&status)
        {
            return Err(invalid("error_status", format_args!("must be an HTTP status from 500 to 599, not {status}")));
        }
        Ok(Fault {
            latency_ms: fields.get::<u64>("latency_ms", "a whole number of milliseconds")?.unwrap_or(0),
            error_rate: share("error_rate")?,
            error_status,
            truncate_rate: share("truncate_rate")?,
            reset_rate: share("reset_rate")?,
            lost_answer_rate: share("lost_answer_rate")?,
            lost_answers: {
                let count = fields.get::<u32>("lost_answers", "a whole number from 0 to 1000000")?.unwrap_or(0);
                if count > 1_000_000 {
                    return Err(invalid(
                        "lost_answers",
                        format_args!("must be a whole number from 0 to 1000000, not {count}"),
                    ));
                }
                count
            },
        })
    }
}

/// The knobs of every REST route that has them.
#[utoipa::path(get, path = "/control/faults", tag = "faults",
    responses((status = 200, description = "Per route name (`token`, `userinfo`, `listing`, `envelope`, `recipients`, \
        `documents`, `document`, `combined`, `certificate`, `archive`, `templates`, `custom_fields`, `template_list`, \
        `template`, `create`, `void`), its knobs",
        body = BTreeMap<String, FaultKnobs>)))]
async fn list_faults(State(sandbox): State<Sandbox>) -> Json<BTreeMap<String, FaultKnobs>> {
    Json(faults::ROUTES.iter().map(|route| (route.to_string(), sandbox.fault(route).into())).collect())
}

/// Turns every fault off.
#[utoipa::path(delete, path = "/control/faults", tag = "faults",
    responses((status = 204, description = "Every route answers normally again")))]
async fn clear_faults(State(sandbox): State<Sandbox>) -> StatusCode {
    for route in faults::ROUTES {
        sandbox.set_fault(route, Fault::default());
    }
    StatusCode::NO_CONTENT
}

/// Sets the knobs of one REST route, replacing what it had.
#[utoipa::path(put, path = "/control/faults/{route}", tag = "faults",
    params(("route" = String, Path, description = "A route name, as listed by `GET /control/faults`")),
    request_body(content = Option<FaultKnobs>, description = "The knobs; an empty object (or no body) turns the route's faults off"),
    responses(
        (status = 204, description = "In force from the next request"),
        (status = 400, description = "A knob is invalid; `field` names it", body = ErrorBody),
        (status = 404, description = "No route has that name; the message lists the names", body = ErrorBody),
    ))]
async fn set_fault(
    State(sandbox): State<Sandbox>,
    Path(route): Path<String>,
    body: Bytes,
) -> Result<StatusCode, HttpError> {
    if !faults::ROUTES.contains(&route.as_str()) {
        return Err(not_found(format!("unknown route {route:?}; known: {}", faults::ROUTES.join(", "))));
    }
    sandbox.set_fault(&route, FaultKnobs::parse(&body)?);
    Ok(StatusCode::NO_CONTENT)
}

/// Ends every access token issued so far, as DocuSign may do before `expires_in` runs out.
#[utoipa::path(post, path = "/control/tokens/expire", tag = "tokens",
    responses((status = 204, description = "Every issued token is refused from now on (401); new ones can be had")))]
async fn expire_tokens(State(sandbox): State<Sandbox>) -> StatusCode {
    sandbox.expire_tokens();
    StatusCode::NO_CONTENT
}

/// How long tokens issued from now on live.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "describes the body, which is read field by field")]
#[serde(deny_unknown_fields)]
struct Lifetime {
    /// The `expires_in` of new tokens, in seconds (DocuSign's is 3600), 1 to 86400.
    #[schema(minimum = 1, maximum = 86400)]
    seconds: u64,
}

/// Sets the lifetime of access tokens issued from now on.
#[utoipa::path(put, path = "/control/tokens/lifetime", tag = "tokens",
    request_body = Lifetime,
    responses(
        (status = 204, description = "Tokens issued from now on live this long"),
        (status = 400, description = "`seconds` is missing or invalid", body = ErrorBody),
    ))]
async fn token_lifetime(State(sandbox): State<Sandbox>, body: Bytes) -> Result<StatusCode, HttpError> {
    let seconds = Fields::parse(&body, &["seconds"])?.require::<u64>("seconds", "a whole number of seconds")?;
    if !(1..=86_400).contains(&seconds) {
        return Err(invalid("seconds", "must be between 1 and 86400"));
    }
    sandbox.set_token_lifetime(Duration::from_secs(seconds));
    Ok(StatusCode::NO_CONTENT)
}

/// The account's REST request allowances.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "describes the body, which is read field by field")]
#[serde(deny_unknown_fields)]
struct Limits {
    /// Requests per clock hour (DocuSign's default: 3000), up to a billion.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    hourly: u32,
    /// Requests per burst window (200 on demo accounts), up to a billion.
    #[schema(minimum = 0, maximum = 1_000_000_000)]
    burst: u32,
}

/// Sets the account's rate limits; requests past either get DocuSign's 429.
#[utoipa::path(put, path = "/control/rate-limits", tag = "tokens",
    request_body = Limits,
    responses(
        (status = 204, description = "In force from the next request; what was used so far still counts"),
        (status = 400, description = "A field is missing or invalid; `field` names it", body = ErrorBody),
    ))]
async fn rate_limits(State(sandbox): State<Sandbox>, body: Bytes) -> Result<StatusCode, HttpError> {
    let fields = Fields::parse(&body, &["hourly", "burst"])?;
    let hourly = fields.require::<u32>("hourly", "a whole number of requests")?;
    let burst = fields.require::<u32>("burst", "a whole number of requests")?;
    for (name, value) in [("hourly", hourly), ("burst", burst)] {
        if value > 1_000_000_000 {
            return Err(invalid(name, "must be at most 1000000000"));
        }
    }
    sandbox.set_rate_limits(hourly, burst);
    Ok(StatusCode::NO_CONTENT)
}

/// How many OAuth and REST requests the sandbox has answered, per route and per user.
#[utoipa::path(get, path = "/control/counters", tag = "tokens",
    responses((status = 200, description = "Requests so far; the control routes are not counted", body = Counters)))]
async fn counters(State(sandbox): State<Sandbox>) -> Json<Counters> {
    Json(sandbox.counters())
}

/// The two message formats of a Connect configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum Format {
    /// JSON SIM (`application/json`), what new Connect configurations send.
    Json,
    /// Legacy XML (`text/xml`), `DocuSignEnvelopeInformation`.
    Xml,
}

impl From<Format> for ConnectFormat {
    fn from(format: Format) -> Self {
        match format {
            Format::Json => ConnectFormat::Json,
            Format::Xml => ConnectFormat::Xml,
        }
    }
}

/// What to announce, where, and how. An empty body completes one envelope and
/// announces it in JSON to the `--connect-url` listener.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "describes the body, which is read field by field")]
#[serde(deny_unknown_fields)]
struct ConnectRequest {
    /// The listener, e.g. `http://127.0.0.1:8080/docusign/connect` for a local `countersign serve`.
    /// The sandbox's `--connect-url` when left out; required when it was started without one.
    #[schema(example = "http://127.0.0.1:8080/docusign/connect")]
    url: Option<String>,
    /// Envelopes the sandbox completed earlier, to announce (again: Connect delivers at least once).
    /// When left out or empty, `count` new envelopes are completed and announced.
    #[schema(value_type = Option<Vec<uuid::Uuid>>)]
    envelope_ids: Option<Vec<String>>,
    /// How many new envelopes to complete and announce, 1 to 10000; 1 when left out. Not with `envelope_ids`.
    #[schema(example = 2)]
    #[schema(minimum = 1, maximum = 10000)]
    count: Option<usize>,
    /// The kind of the new envelopes: `onboarding`, `nda` or `equipment`; a seeded mix when left
    /// out. Not with `envelope_ids`.
    #[schema(value_type = Option<ScenarioName>, example = "onboarding")]
    scenario: Option<String>,
    /// The message format; `json` when left out.
    format: Option<Format>,
    /// The event reported (JSON SIM's name, e.g. `envelope-completed`, `recipient-completed`,
    /// `envelope-sent`); `envelope-completed` when left out. An earlier event describes the
    /// envelope as it stood then.
    #[schema(example = "envelope-completed")]
    event: Option<String>,
    /// Embed every document and the certificate of completion as base64 PDFs (JSON SIM:
    /// `envelopeDocuments[].PDFBytes`; XML: `DocumentPDFs`); false when left out.
    include_documents: Option<bool>,
    /// JSON SIM: carry `data.envelopeSummary` (recipients, tabs, custom fields); true when left out.
    /// Legacy XML always carries the envelope.
    include_summary: Option<bool>,
    /// How often a failed delivery (no 2xx within 100 s) is tried again, one second apart, 0 to 10; 3 when left out.
    #[schema(minimum = 0, maximum = 10)]
    retries: Option<u32>,
}

/// How the notifications of one request went.
#[derive(Debug, Serialize, ToSchema)]
struct Notified {
    /// The listener they went to.
    url: String,
    format: Format,
    /// One per envelope, in the order they were posted.
    deliveries: Vec<Delivery>,
}

/// The notification about one envelope.
#[derive(Debug, Serialize, ToSchema)]
struct Delivery {
    envelope_id: String,
    report: Report,
}

/// How one notification's delivery went.
#[derive(Debug, Serialize, ToSchema)]
struct Report {
    /// Requests made, the first included.
    attempts: u32,
    /// Whether an attempt got a 2xx in time.
    delivered: bool,
    /// The HTTP status the last attempt got, if it got an answer.
    last_status: Option<u16>,
    /// Why the last attempt failed, if it did.
    last_error: Option<String>,
}

impl From<DeliveryReport> for Report {
    fn from(report: DeliveryReport) -> Self {
        let DeliveryReport { attempts, delivered, last_status, last_error } = report;
        Self { attempts, delivered, last_status, last_error }
    }
}

/// The message options of a request, defaults as for a fresh Connect configuration.
#[derive(Debug, Clone)]
struct Announce {
    options: NotificationOptions,
    retries: u32,
}

impl Default for Announce {
    fn default() -> Self {
        Self { options: NotificationOptions::default(), retries: 3 }
    }
}

/// Posts one signed notification per envelope to `url`, in turn, each retried as Connect would.
async fn announce(
    sandbox: &Sandbox,
    url: String,
    envelopes: &[Envelope],
    format: ConnectFormat,
    announce: &Announce,
) -> Vec<Delivery> {
    // A second between retries, not DocuSign's day, so a caller waits seconds.
    let policy =
        RetryPolicy { max_retries: announce.retries, interval: Duration::from_secs(1), ..RetryPolicy::default() };
    let sender = ConnectSender::new(url, sandbox.identity().hmac_keys.clone(), policy);
    let mut deliveries = Vec::with_capacity(envelopes.len());
    for envelope in envelopes {
        let report = sender.send(envelope, format, &announce.options).await;
        deliveries.push(Delivery { envelope_id: envelope.envelope_id.to_string(), report: report.into() });
    }
    deliveries
}

/// Plays Connect: completes envelopes (or takes ones completed earlier) and
/// posts their notifications to a listener, signed with the sandbox's HMAC key.
#[utoipa::path(post, path = "/control/connect", tag = "connect",
    request_body(content = Option<ConnectRequest>, description = "Optional when the sandbox has a `--connect-url`"),
    responses(
        (status = 200, description = "Every notification was posted; whether each was delivered is in its report \
            (a listener that refuses is not an error of this call)", body = Notified),
        (status = 400, description = "A field is invalid; `field` names it", body = ErrorBody),
        (status = 409, description = "No `url` given and the sandbox has no `--connect-url`", body = ErrorBody),
        (status = 404, description = "An envelope in `envelope_ids` is not the sandbox's", body = ErrorBody),
    ))]
async fn send_connect(State(sandbox): State<Sandbox>, body: Bytes) -> Result<Json<Notified>, HttpError> {
    let fields = Fields::parse(
        &body,
        &[
            "url",
            "envelope_ids",
            "count",
            "scenario",
            "format",
            "event",
            "include_documents",
            "include_summary",
            "retries",
        ],
    )?;
    let url = match fields.get::<String>("url", "the listener's URL")? {
        Some(text) => listener_url("url", &text)?,
        None => sandbox.connect_url().ok_or_else(|| {
            no_listener("url", "is required: the sandbox was started without --connect-url, so it knows no listener")
        })?,
    };
    let format = fields.get::<Format>("format", "\"json\" or \"xml\"")?.unwrap_or(Format::Json);
    let event = fields.get::<String>("event", "a Connect event name such as \"envelope-completed\"")?;
    if event.as_deref().is_some_and(|e| e.trim().is_empty()) {
        return Err(invalid("event", "must not be empty"));
    }
    let retries = fields.get::<u32>("retries", "a whole number from 0 to 10")?.unwrap_or(3);
    if retries > 10 {
        return Err(invalid("retries", format_args!("must be a whole number from 0 to 10, not {retries}")));
    }
    let defaults = NotificationOptions::default();
    let options = NotificationOptions {
        event: event.unwrap_or(defaults.event.clone()),
        include_summary: fields.get("include_summary", "true or false")?.unwrap_or(defaults.include_summary),
        include_documents: fields.get("include_documents", "true or false")?.unwrap_or(defaults.include_documents),
        ..defaults
    };
    let ids = fields.get::<Vec<String>>("envelope_ids", "a list of envelope ids")?.unwrap_or_default();
    let envelopes = if ids.is_empty() {
        complete_from(&sandbox, &fields, 1, MAX_NOTIFY)?
    } else {
        for name in ["count", "scenario"] {
            if fields.0.get(name).is_some_and(|v| !v.is_null()) {
                return Err(invalid(name, "applies to new envelopes; leave it out with envelope_ids"));
            }
        }
        let mut known = Vec::with_capacity(ids.len());
        for text in &ids {
            let id = EnvelopeId::parse(text)
                .map_err(|_| invalid("envelope_ids", format_args!("{text:?} is not an envelope id (a GUID)")))?;
            known.push(sandbox.envelope(id).ok_or_else(|| not_found(format!("the sandbox has no envelope {id}")))?);
        }
        known
    };
    let deliveries = announce(&sandbox, url.clone(), &envelopes, format.into(), &Announce { options, retries }).await;
    Ok(Json(Notified { url, format, deliveries }))
}

/// The kinds of data tab a template has.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code, reason = "describes a field, which is written as text")]
enum TabKind {
    Text,
    Date,
}

/// DocuSign's envelope and recipient statuses.
#[derive(ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code, reason = "describes a field, which is written as text")]
enum StatusName {
    Created,
    Sent,
    Delivered,
    Completed,
    Declined,
    Voided,
}

/// A data tab of a role.
#[derive(Debug, Serialize, ToSchema)]
struct TabAnswer {
    /// What `templateRoles[].tabs` name it by (`tabLabel`), and what a rule matches.
    label: String,
    /// Which list it is in, and which list of a request's `tabs` prefills it (`textTabs`, `dateTabs`).
    #[schema(value_type = TabKind)]
    tab_type: String,
    /// Whether the signer must fill it in; the sandbox's signers fill required tabs left empty.
    required: bool,
}

/// A role of a template: who signs, in which order, and what they fill in.
#[derive(Debug, Serialize, ToSchema)]
struct RoleAnswer {
    /// What `templateRoles[].roleName` must say, exactly (case included).
    role_name: String,
    /// The `recipientId` its signer gets.
    recipient_id: String,
    routing_order: u32,
    /// Whether an envelope needs someone in this role (every signer role does).
    required: bool,
    tabs: Vec<TabAnswer>,
}

/// A template of the sandbox's account.
#[derive(Debug, Serialize, ToSchema)]
struct TemplateAnswer {
    #[schema(format = Uuid)]
    template_id: String,
    name: String,
    /// The generator's name for the same kind of envelope (`POST /control/envelopes`' `scenario`).
    #[schema(value_type = ScenarioName)]
    scenario: String,
    /// The subject an envelope gets when its request has none; `[[Role_UserName]]` is replaced by that signer's name.
    email_subject: String,
    /// Signer roles in routing order.
    roles: Vec<RoleAnswer>,
    /// The documents every envelope from it carries.
    documents: Vec<String>,
}

/// The account's templates, with each role and its tabs: what `POST …/envelopes` can send.
#[utoipa::path(get, path = "/control/templates", tag = "sending",
    responses((status = 200, description = "Every template, as `GET …/templates/{id}?include=tabs` describes it", body = Vec<TemplateAnswer>)))]
async fn list_templates(State(sandbox): State<Sandbox>) -> Json<Vec<TemplateAnswer>> {
    let answers = sandbox
        .templates()
        .into_iter()
        .map(|t| TemplateAnswer {
            template_id: t.template_id.to_string(),
            name: t.name,
            scenario: t.scenario,
            email_subject: t.email_subject,
            roles: t
                .roles
                .into_iter()
                .map(|r| RoleAnswer {
                    role_name: r.role_name,
                    recipient_id: r.recipient_id,
                    routing_order: r.routing_order,
                    required: r.required,
                    tabs: r
                        .tabs
                        .into_iter()
                        .map(|tab| TabAnswer { label: tab.label, tab_type: tab.tab_type, required: tab.required })
                        .collect(),
                })
                .collect(),
            documents: t.documents.into_iter().map(|d| d.name).collect(),
        })
        .collect();
    Json(answers)
}

/// Who signs and what they type. An empty body has every remaining signer sign.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "describes the body, which is read field by field")]
#[serde(deny_unknown_fields)]
struct SignRequest {
    /// The signer who signs (their `recipientId`, e.g. `1`), who must be one the envelope is with
    /// now. Every signer still to sign, in routing order, when left out.
    #[schema(min_length = 1, max_length = 100, example = "1")]
    recipient_id: Option<String>,
    /// What the signers type into their tabs, by tab label (e.g. `{"laptop_model": "ThinkPad X1"}`).
    /// Required tabs nobody filled get a plausible value.
    tabs: Option<BTreeMap<String, String>>,
}

/// Who declines and why. An empty body has the first signer the envelope is with decline.
#[derive(Debug, ToSchema)]
#[allow(dead_code, reason = "describes the body, which is read field by field")]
#[serde(deny_unknown_fields)]
struct DeclineRequest {
    /// The reason the recipient gives, up to 200 characters; "Declined by the recipient." when left out.
    #[schema(min_length = 1, max_length = 200, example = "The start date is wrong.")]
    reason: Option<String>,
    /// The signer who declines (their `recipientId`), who must be one the envelope is with now.
    #[schema(min_length = 1, max_length = 100, example = "1")]
    recipient_id: Option<String>,
}

/// A signer of an envelope, as it now stands.
#[derive(Debug, Serialize, ToSchema)]
struct SignerState {
    recipient_id: String,
    role_name: String,
    name: String,
    email: String,
    #[schema(value_type = StatusName)]
    status: String,
}

/// An envelope after the step, as `GET …/envelopes/{id}` now shows it.
#[derive(Debug, Serialize, ToSchema)]
struct EnvelopeState {
    #[schema(format = Uuid)]
    envelope_id: String,
    #[schema(value_type = StatusName)]
    status: String,
    signers: Vec<SignerState>,
}

impl From<Envelope> for EnvelopeState {
    fn from(envelope: Envelope) -> Self {
        Self {
            envelope_id: envelope.envelope_id.to_string(),
            status: envelope.status().to_string(),
            signers: envelope
                .signers
                .into_iter()
                .map(|s| SignerState {
                    recipient_id: s.recipient_id,
                    role_name: s.role_name,
                    name: s.person.name,
                    email: s.person.email,
                    status: s.status.as_str().to_string(),
                })
                .collect(),
        }
    }
}

fn envelope_id(text: &str) -> Result<EnvelopeId, HttpError> {
    EnvelopeId::parse(text).map_err(|_| invalid("envelope", format_args!("{text:?} is not an envelope id (a GUID)")))
}

/// A bounded optional text field: `min` to `max` characters.
fn bounded(fields: &Fields, name: &str, min: usize, max: usize) -> Result<Option<String>, HttpError> {
    let expected = format!("a string of {min} to {max} characters");
    let value = fields.get::<String>(name, &expected)?;
    match value {
        Some(text) if !(min..=max).contains(&text.chars().count()) => {
            Err(invalid(name, format_args!("must be {expected}")))
        }
        other => Ok(other),
    }
}

impl From<LifecycleError> for HttpError {
    fn from(error: LifecycleError) -> Self {
        let message = error.to_string();
        match error {
            LifecycleError::UnknownEnvelope(_) => not_found(message),
            LifecycleError::NotInProcess { .. } => HttpError::new(StatusCode::CONFLICT, "conflict", message),
            LifecycleError::UnknownRecipient { .. } => not_found(message).with_field("recipient_id"),
            LifecycleError::RecipientNotActive { .. } => {
                HttpError::new(StatusCode::CONFLICT, "conflict", message).with_field("recipient_id")
            }
            LifecycleError::UnknownTab { .. } => invalid("tabs", message),
        }
    }
}

/// Recipients sign an envelope sent through `POST …/envelopes`, as they would on DocuSign's
/// signing page; the last signature completes it. Each step is announced by Connect.
#[utoipa::path(post, path = "/control/envelopes/{envelope}/sign", tag = "sending",
    params(("envelope" = String, Path, format = Uuid, description = "The id of an envelope sent through the REST API")),
    request_body(content = Option<SignRequest>, description = "Optional; by default every remaining signer signs"),
    responses(
        (status = 200, description = "Signed; the envelope's new status (`completed` after the last signature)", body = EnvelopeState),
        (status = 400, description = "A field or the envelope id is invalid, or a tab label is none of the signers'; \
            `field` names it", body = ErrorBody),
        (status = 404, description = "The sandbox has no such envelope, or it has no such recipient", body = ErrorBody),
        (status = 409, description = "The envelope cannot be signed now (a draft, completed, declined or voided), \
            or the recipient is not one it is with now", body = ErrorBody),
    ))]
async fn sign(
    State(sandbox): State<Sandbox>,
    Path(envelope): Path<String>,
    body: Bytes,
) -> Result<Json<EnvelopeState>, HttpError> {
    let id = envelope_id(&envelope)?;
    let fields = Fields::parse(&body, &["recipient_id", "tabs"])?;
    let recipient = bounded(&fields, "recipient_id", 1, 100)?;
    let values = fields.get::<BTreeMap<String, String>>("tabs", "an object of tab labels and text values")?;
    let signed = sandbox.sign_as(id, recipient.as_deref(), &values.unwrap_or_default())?;
    Ok(Json(signed.into()))
}

/// A recipient declines an envelope sent through `POST …/envelopes`, which ends it (`declined`).
/// Announced by Connect as `recipient-declined` and `envelope-declined`.
#[utoipa::path(post, path = "/control/envelopes/{envelope}/decline", tag = "sending",
    params(("envelope" = String, Path, format = Uuid, description = "The id of an envelope sent through the REST API")),
    request_body(content = Option<DeclineRequest>, description = "Optional; by default the first signer the envelope is with declines"),
    responses(
        (status = 200, description = "Declined; the envelope's new status", body = EnvelopeState),
        (status = 400, description = "A field or the envelope id is invalid; `field` names it", body = ErrorBody),
        (status = 404, description = "The sandbox has no such envelope, or it has no such recipient", body = ErrorBody),
        (status = 409, description = "The envelope cannot be declined now (a draft, completed, declined or voided), \
            or the recipient is not one it is with now", body = ErrorBody),
    ))]
async fn decline(
    State(sandbox): State<Sandbox>,
    Path(envelope): Path<String>,
    body: Bytes,
) -> Result<Json<EnvelopeState>, HttpError> {
    let id = envelope_id(&envelope)?;
    let fields = Fields::parse(&body, &["reason", "recipient_id"])?;
    let reason = bounded(&fields, "reason", 1, 200)?;
    let recipient = bounded(&fields, "recipient_id", 1, 100)?;
    let reason = reason.unwrap_or_else(|| "Declined by the recipient.".to_string());
    let declined = sandbox.decline_as(id, recipient.as_deref(), &reason)?;
    Ok(Json(declined.into()))
}
