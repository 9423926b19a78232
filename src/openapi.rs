//! What the described HTTP APIs (the admin API, the requests API) share: the
//! bearer security scheme in their descriptions, and serving a description.

use std::sync::Arc;

use axum::http::header;
use axum::routing::MethodRouter;

/// Adds the `bearer` HTTP security scheme the APIs' `security` names.
#[derive(Debug)]
pub struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// A description as the JSON served at `…/openapi.json`.
pub fn to_json(openapi: &utoipa::openapi::OpenApi) -> String {
    openapi.to_pretty_json().unwrap_or_else(|error| format!("{{\"error\": \"{error}\"}}"))
}

/// `GET` of a description rendered once at start-up.
pub fn description_route<S: Clone + Send + Sync + 'static>(json: &str) -> MethodRouter<S> {
    let description: Arc<str> = json.into();
    axum::routing::get(move || {
        let description = description.clone();
        async move { ([(header::CONTENT_TYPE, "application/json")], description.to_string()) }
    })
}
