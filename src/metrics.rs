//! Prometheus metrics at `GET /metrics`.
//!
//! Counters and histograms are recorded where things happen (through the
//! `metrics` facade); queue depths, ages and dead letters are read from the
//! store at scrape time, so they are true for the whole deployment, not
//! only for this replica.

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::config::Settings;
use crate::jobs::JobKind;
use crate::store::{JobState, Store};

/// Seconds: from a millisecond to a day (job runs, deliveries, end to end).
const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0, 86_400.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide recorder, installed on first use. Several services in
/// one process (tests, the demo) share it.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let built = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)
                .and_then(PrometheusBuilder::install_recorder);
            match built {
                Ok(handle) => Some(handle),
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed; /metrics stays empty");
                    None
                }
            }
        })
        .as_ref()
}

/// `GET /metrics`: the recorded metrics plus the queue read from the store.
pub async fn render(State(store): State<Arc<dyn Store>>) -> Response {
    let Some(handle) = handle() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "metrics are not available").into_response();
    };
    match store.queue_stats().await {
        Ok(stats) => {
            let now = Utc::now();
            // A (kind, state) that has emptied is no longer listed: report it as 0.
            // Every known pair starts at 0, so a fresh start lists them all.
            static SEEN: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());
            let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
            if seen.is_empty() {
                for kind in JobKind::ALL {
                    for state in JobState::ALL {
                        seen.push((kind.as_str().to_string(), state.as_str().to_string()));
                    }
                }
            }
            for (kind, state) in seen.iter() {
                let labels = [("kind", kind.clone()), ("state", state.clone())];
                metrics::gauge!("countersign_jobs", &labels).set(0.0);
                metrics::gauge!("countersign_job_oldest_age_seconds", &labels).set(0.0);
            }
            for stat in stats {
                let pair = (stat.kind.clone(), stat.state.as_str().to_string());
                if !seen.contains(&pair) {
                    seen.push(pair);
                }
                let labels = [("kind", stat.kind.clone()), ("state", stat.state.as_str().to_string())];
                metrics::gauge!("countersign_jobs", &labels).set(stat.count as f64);
                if matches!(stat.state, JobState::Ready | JobState::Parked) {
                    // How long the oldest waiting job has been due.
                    let age = stat.oldest.map_or(0.0, |oldest| (now - oldest).num_milliseconds().max(0) as f64 / 1e3);
                    metrics::gauge!("countersign_job_oldest_age_seconds", &labels).set(age);
                }
            }
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot read the queue"),
    }
    match store.disabled_sinks().await {
        Ok(disabled) => {
            // A sink enabled again is reported as 0 rather than dropped.
            static DISABLED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
            let mut known = DISABLED.lock().unwrap_or_else(|p| p.into_inner());
            for sink in known.iter() {
                metrics::gauge!("countersign_sink_disabled", "sink" => sink.clone()).set(0.0);
            }
            for sink in disabled {
                metrics::gauge!("countersign_sink_disabled", "sink" => sink.sink.clone()).set(1.0);
                if !known.contains(&sink.sink) {
                    known.push(sink.sink);
                }
            }
        }
        Err(error) => tracing::warn!(%error, "metrics: cannot read the disabled sinks"),
    }
    handle.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], handle.render()).into_response()
}

/// Registers descriptions once, so `# HELP` lines explain each metric.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    static DESCRIBED: OnceLock<()> = OnceLock::new();
    DESCRIBED.get_or_init(|| {
        handle();
        describe_counter!("countersign_notifications_total", "Connect notifications received, by event and outcome");
        describe_counter!("countersign_hmac_failures_total", "Connect notifications refused for their signature");
        describe_gauge!("countersign_jobs", "Jobs in the queue, by kind and state (dead = dead letters)");
        describe_gauge!("countersign_job_oldest_age_seconds", "Age of the oldest due job, by kind and state");
        describe_counter!("countersign_job_runs_total", "Job attempts, by kind and outcome");
        describe_histogram!("countersign_job_duration_seconds", "Duration of job attempts, by kind and outcome");
        describe_counter!("countersign_docusign_requests_total", "DocuSign API calls, by route and HTTP status");
        describe_gauge!("countersign_docusign_rate_limit_remaining", "Calls left in DocuSign's window, by account");
        describe_counter!("countersign_docusign_token_requests_total", "JWT Grant token requests, by outcome");
        describe_counter!("countersign_deliveries_total", "Delivery attempts, by sink and outcome");
        describe_histogram!("countersign_delivery_duration_seconds", "Duration of one delivery attempt, by sink");
        describe_histogram!(
            "countersign_event_delivery_latency_seconds",
            "From the event's creation (envelope processed) to its delivery, by sink"
        );
        describe_gauge!("countersign_sink_disabled", "1 while a sink is disabled (it answered 410), by sink");
        describe_counter!(
            "countersign_reconcile_found_total",
            "Completed envelopes found by reconciliation that Connect never delivered (alert on any increase)"
        );
    });
}

/// Creates, at 0, every series whose labels the configuration already
/// names, so that a fresh start lists them and an alert on an absent series
/// can tell "nothing happened" from "not scraped". Series labelled by what
/// only traffic reveals (an HTTP status, an event countersign ignores) and
/// gauges whose 0 would mean something (DocuSign's remaining calls) appear
/// with their first value.
pub fn register_known(settings: &Settings) {
    describe();
    for event in &settings.connect.process_events {
        for outcome in ["accepted", "duplicate"] {
            metrics::counter!("countersign_notifications_total", "event" => event.clone(), "outcome" => outcome)
                .increment(0);
        }
    }
    metrics::counter!("countersign_hmac_failures_total").increment(0);
    for kind in JobKind::ALL {
        for outcome in crate::pipeline::RUN_OUTCOMES {
            metrics::counter!("countersign_job_runs_total", "kind" => kind.as_str(), "outcome" => outcome).increment(0);
        }
    }
    for outcome in crate::docusign::token::GRANT_OUTCOMES {
        metrics::counter!("countersign_docusign_token_requests_total", "outcome" => outcome).increment(0);
    }
    register_sinks(settings);
    for account in crate::reconcile::accounts(settings).into_iter().flatten() {
        metrics::counter!("countersign_reconcile_found_total", "account" => account.to_string()).increment(0);
    }
}

/// The per-sink series, for the sinks `settings` configures (again on reload).
pub fn register_sinks(settings: &Settings) {
    for sink in &settings.sinks {
        for outcome in crate::deliver::DELIVERY_OUTCOMES {
            metrics::counter!("countersign_deliveries_total", "sink" => sink.name.clone(), "outcome" => outcome)
                .increment(0);
        }
        metrics::gauge!("countersign_sink_disabled", "sink" => sink.name.clone()).increment(0.0);
    }
}
