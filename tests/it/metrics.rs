//! `/metrics` on a fresh `countersign serve`: before any traffic, every
//! series whose labels the configuration names is there at 0, so that an
//! alert on an absent series means "not scraped", never "no traffic yet".

use crate::common;

use common::process::{ServeProcess, free_port, write_config};

/// Whether the scrape has a sample of `name` with exactly these labels, and its value.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        let mut have: Vec<&str> = rest.trim_end_matches('}').split(',').filter(|l| !l.is_empty()).collect();
        have.sort_unstable();
        let mut wanted: Vec<&str> = wanted.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        (metric == name && have == wanted).then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_start_lists_every_known_series_at_zero() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let account = "3c9e5f0a-2b1d-4e8f-9a7c-6d5e4f3a2b1c";
    let config = format!(
        "[connect]\nhmac_keys = [\"k\"]\nprocess_events = [\"envelope-completed\", \"recipient-completed\"]\n\
         [reconcile]\nenabled = false\naccounts = [\"{account}\"]\n\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/hr\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n\
         [[sinks]]\nname = \"audit\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/audit\"\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\n"
    );
    let config = write_config(dir.path(), &config);
    let serve = ServeProcess::start(dir.path(), &config, port).await;
    let scrape = reqwest::get(format!("{}/metrics", serve.base_url)).await.unwrap().text().await.unwrap();

    let mut expected: Vec<(&str, Vec<(&str, &str)>)> = vec![("countersign_hmac_failures_total", vec![])];
    for event in ["envelope-completed", "recipient-completed"] {
        for outcome in ["accepted", "duplicate"] {
            expected.push(("countersign_notifications_total", vec![("event", event), ("outcome", outcome)]));
        }
    }
    for sink in ["hr", "audit"] {
        for outcome in ["delivered", "failed", "throttled", "gone"] {
            expected.push(("countersign_deliveries_total", vec![("sink", sink), ("outcome", outcome)]));
        }
        expected.push(("countersign_sink_disabled", vec![("sink", sink)]));
    }
    for kind in ["process_envelope", "deliver", "reconcile_account"] {
        for state in ["ready", "parked", "running", "done", "dead"] {
            expected.push(("countersign_jobs", vec![("kind", kind), ("state", state)]));
        }
        for outcome in ["succeeded", "failed", "fatal", "parked", "deferred", "abandoned"] {
            expected.push(("countersign_job_runs_total", vec![("kind", kind), ("outcome", outcome)]));
        }
    }
    for outcome in ["issued", "consent_required", "refused", "failed"] {
        expected.push(("countersign_docusign_token_requests_total", vec![("outcome", outcome)]));
    }
    expected.push(("countersign_reconcile_found_total", vec![("account", account)]));
    for (name, labels) in &expected {
        assert_eq!(sample(&scrape, name, labels), Some(0.0), "{name} {labels:?} at 0 in:\n{scrape}");
    }
    serve.terminate();
}
