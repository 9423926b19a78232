//! Nothing acknowledged is lost across crashes. `countersign serve` runs as
//! its own process while the sandbox's Connect sender sends completed
//! envelopes at a steady rate (retrying what is not acknowledged, as Connect
//! does) and the service is killed with SIGKILL at random moments and
//! started again. Afterwards every acknowledged envelope has its documents
//! stored with DocuSign's bytes and its event delivered at least once under
//! one stable id, and there is no dead letter.
//!
//! CI runs a short version; `scripts/crash.sh` runs the long one
//! (CRASH_ENVELOPES, CRASH_KILLS, CRASH_RATE).

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::docusign::options;
use common::pipeline::Pipeline;
use common::process::{ServeProcess, free_port};
use countersign::sandbox::connect::ConnectFormat;
use rand::RngExt;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn crash_run(store_url: &str) {
    let envelopes_total = setting("CRASH_ENVELOPES", 300);
    let kills = setting("CRASH_KILLS", 2);
    let rate = setting("CRASH_RATE", 50);

    let pipeline = Pipeline::new(store_url, "").await;
    let dir = pipeline.dir.path();
    let port = free_port();
    let mut serve = Some(ServeProcess::start(dir, &pipeline.config, port).await);
    let sender = Arc::new(pipeline.sender(&format!("http://127.0.0.1:{port}")));
    let envelopes = pipeline.sandbox.sandbox.complete_envelopes(envelopes_total);
    let mut sends = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / u32::try_from(rate).unwrap());
    let mut kill_at: Vec<usize> = {
        let mut rng = rand::rng();
        (0..kills).map(|_| rng.random_range(envelopes_total / 10..envelopes_total * 9 / 10)).collect()
    };
    kill_at.sort_unstable();
    for (i, envelope) in envelopes.iter().enumerate() {
        tick.tick().await;
        while kill_at.first() == Some(&i) {
            kill_at.remove(0);
            serve.take().unwrap().kill();
            serve = Some(ServeProcess::start(dir, &pipeline.config, port).await);
        }
        let (sender, envelope) = (sender.clone(), envelope.clone());
        // Half carry their documents, half leave them to be downloaded.
        let format = if i % 2 == 0 { ConnectFormat::Json } else { ConnectFormat::Xml };
        let opts = options(true, i % 4 < 2);
        sends.spawn(async move { (envelope.envelope_id, sender.send(&envelope, format, &opts).await) });
    }
    let mut acknowledged = HashSet::new();
    while let Some(sent) = sends.join_next().await {
        let (id, report) = sent.unwrap();
        assert!(report.delivered, "{id} was never acknowledged: {:?} {:?}", report.last_status, report.last_error);
        acknowledged.insert(id);
    }
    assert_eq!(acknowledged.len(), envelopes.len());

    let requests =
        pipeline.wait_for_events(&envelopes, Duration::from_secs(600), || serve.as_ref().unwrap().logs()).await;
    let delivered = requests.iter().filter(|r| r.delivered()).count();
    println!(
        "{store_url}: {} envelopes, {kills} SIGKILLs, {} requests to the receiver, {} duplicate deliveries",
        envelopes.len(),
        requests.len(),
        delivered - envelopes.len()
    );

    // Stop it, then look at the store the way an operator would.
    let (exit, _) = serve.take().unwrap().terminate();
    assert!(exit.success());
    let store = countersign::store::open(store_url, 2).await.unwrap();
    pipeline.assert_nothing_lost(store.as_ref(), &envelopes).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_on_sqlite() {
    let db = common::sqlite().await;
    crash_run(&db.url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_on_postgres() {
    let db = common::postgres().await;
    crash_run(&db.url).await;
}
