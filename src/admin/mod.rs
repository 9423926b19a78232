//! The operator's view: a JSON admin API under `/admin/api` (bearer token)
//! and a server-rendered page under `/admin/` (the same token, exchanged once
//! for a session cookie). Both read and act through [`queries`], so the page
//! shows exactly what the API returns and replays exactly as it does.
//!
//! Without `admin.token` none of these routes exist: an admin surface that
//! was never given a secret answers 404 rather than falling open.

mod api;
mod auth;
mod error;
mod page;
pub mod queries;

use std::sync::Arc;

use axum::Router;

use crate::config::{Secret, Settings};
use crate::deliver::SinkCircuits;
use crate::docusign::AccessStatus;
use crate::reload::Reloader;
use crate::store::Store;

pub use error::AdminError;

/// What the admin handlers need; cheap to clone.
#[derive(Clone)]
pub struct Admin {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    token: Secret,
    /// The configuration in force, and how to read it again.
    reloader: Reloader,
    access: Option<Arc<AccessStatus>>,
    circuits: SinkCircuits,
    /// The OpenAPI description, serialised once at start-up.
    openapi: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin").field("store", &self.inner.store).finish_non_exhaustive()
    }
}

impl Admin {
    /// `None` when `admin.token` is not configured: the admin surface is off.
    pub fn new(
        settings: &Settings,
        store: Arc<dyn Store>,
        reloader: Reloader,
        access: Option<Arc<AccessStatus>>,
        circuits: SinkCircuits,
    ) -> Option<Self> {
        let token = settings.admin.token.clone()?;
        let openapi = api::openapi_json();
        let inner = Inner { store, token, reloader, access, circuits, openapi };
        Some(Self { inner: Arc::new(inner) })
    }

    fn store(&self) -> &dyn Store {
        &*self.inner.store
    }

    /// The settings in force: those of the last successful reload.
    fn settings(&self) -> Arc<Settings> {
        self.inner.reloader.settings()
    }
}

/// Every admin route: `/admin/api/...` and the page under `/admin/`.
pub fn router(admin: Admin) -> Router {
    Router::new().merge(api::router(admin.clone())).merge(page::router(admin))
}
