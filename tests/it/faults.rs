//! Faults in the parts countersign depends on, mid-run, with `countersign
//! serve` as its own process: DocuSign failing in every way the sandbox
//! knows, the store's PostgreSQL stopped the hard way and started again, and
//! a NATS server and a RabbitMQ node crashed and restarted under their sinks. Each runs on a server of its own (tests/it/common/servers.rs), so the
//! shared ones other tests use are never disturbed. Afterwards nothing is
//! lost: every envelope's documents stored and its events delivered.
//! docs/RELIABILITY.md's fault matrix lists these with the other faults.

use crate::common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::docusign::options;
use common::pipeline::Pipeline;
use common::process::{ServeProcess, free_port};
use common::servers::{PrivateNats, PrivatePostgres, PrivateRabbitMq};
use countersign::sandbox::connect::{ConnectFormat, json_sim_body, signature_headers};
use countersign::sandbox::{Envelope, Fault};
use futures_util::StreamExt;

/// Deliveries to `sink` that were waiting when the broker came back (created
/// before `resumed`, delivered after it), and how many of all took more
/// than one attempt: the outage was felt, not slept through.
async fn outage_felt(
    store: &dyn countersign::store::Store,
    envelopes: &[Envelope],
    sink: &str,
    resumed: DateTime<Utc>,
) -> (usize, usize) {
    let (mut waited, mut retried) = (0, 0);
    for envelope in envelopes {
        let event = countersign::events::event_id(envelope.envelope_id, "default");
        for delivery in store.deliveries_for(event).await.unwrap().iter().filter(|d| d.sink == sink) {
            waited +=
                usize::from(delivery.created_at < resumed && delivery.delivered_at.is_some_and(|at| at >= resumed));
            retried += usize::from(delivery.attempts > 1);
        }
    }
    (waited, retried)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn docusign_failing_every_way_mid_run_loses_nothing() {
    let db = common::sqlite().await;
    let docusign = "request_timeout = \"1s\"\nrecheck_base = \"500ms\"\nrecheck_cap = \"1s\"";
    let pipeline = Pipeline::with_docusign(&db.url, docusign, "").await;
    let serve = ServeProcess::start(pipeline.dir.path(), &pipeline.config, free_port()).await;
    let sender = Arc::new(pipeline.sender(&serve.base_url));
    let envelopes = pipeline.sandbox.sandbox.complete_envelopes(150);
    let sandbox = pipeline.sandbox.sandbox.clone();
    let user = sandbox.identity().user.user_id;

    // Each fault in turn on the download every envelope needs, while notifications keep coming.
    let phase = Duration::from_millis(1_500);
    let faults = tokio::spawn(async move {
        let phases = [
            Fault { error_rate: 1.0, error_status: Some(500), ..Fault::default() },
            Fault { error_rate: 0.5, error_status: Some(503), ..Fault::default() },
            Fault { reset_rate: 0.5, ..Fault::default() },
            Fault { truncate_rate: 0.5, ..Fault::default() },
            Fault { latency_ms: 2_000, ..Fault::default() },
        ];
        for fault in phases {
            sandbox.set_fault("combined", fault);
            tokio::time::sleep(phase).await;
        }
        sandbox.set_fault("combined", Fault::default());
        // DocuSign ends the token early and the user withdraws consent; later it is granted again.
        sandbox.revoke_consent(user);
        sandbox.expire_tokens();
        tokio::time::sleep(phase).await;
        sandbox.grant_consent(user, &["signature", "impersonation"]);
    });
    let mut sends = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(60));
    for (i, envelope) in envelopes.iter().enumerate() {
        tick.tick().await;
        let (sender, envelope) = (sender.clone(), envelope.clone());
        let format = if i % 2 == 0 { ConnectFormat::Json } else { ConnectFormat::Xml };
        sends.spawn(async move { (envelope.envelope_id, sender.send(&envelope, format, &options(true, false)).await) });
    }
    while let Some(sent) = sends.join_next().await {
        let (id, report) = sent.unwrap();
        assert!(report.delivered, "{id} was never acknowledged: {:?}", report.last_status);
    }
    faults.await.unwrap();
    pipeline.wait_for_events(&envelopes, Duration::from_secs(180), || serve.logs()).await;
    let metrics = reqwest::get(format!("{}/metrics", serve.base_url)).await.unwrap().text().await.unwrap();
    let (exit, logs) = serve.terminate();
    assert!(exit.success(), "{logs}");
    pipeline.assert_nothing_lost(db.store.as_ref(), &envelopes).await;
    let calls = |status: &str| common::metric(&metrics, "countersign_docusign_requests_total", &[("status", status)]);
    println!(
        "{} envelopes; DocuSign answers seen: 200 {}, 500 {}, 503 {}, 401 {}",
        envelopes.len(),
        calls("200"),
        calls("500"),
        calls("503"),
        calls("401")
    );
    assert!(calls("500") > 0.0 && calls("503") > 0.0, "the faults were met");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgresql_stopped_mid_run_answers_503_meanwhile_and_the_work_resumes() {
    let postgres = PrivatePostgres::start();
    let pipeline = Pipeline::new(&postgres.url(), "").await;
    let serve = ServeProcess::start(pipeline.dir.path(), &pipeline.config, free_port()).await;
    let sender = Arc::new(pipeline.sender(&serve.base_url));
    let mut envelopes = pipeline.sandbox.sandbox.complete_envelopes(121);
    let probe = envelopes.pop().unwrap();

    // The outage runs beside the sends: crash, check what a client sees, and start again.
    let postgres = Arc::new(postgres);
    let outage = {
        let (postgres, base_url) = (postgres.clone(), serve.base_url.clone());
        let body = json_sim_body(&probe, &options(true, false), 0, probe.completed_at);
        let signatures = signature_headers(&body, &pipeline.sandbox.sandbox.identity().hmac_keys);
        async move {
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let crashed = postgres.clone();
            tokio::task::spawn_blocking(move || crashed.crash()).await.unwrap();
            let client = reqwest::Client::new();
            let ready = client.get(format!("{base_url}/readyz")).send().await.unwrap();
            assert_eq!(ready.status(), 503, "not ready without the store");
            let mut request = client.post(format!("{base_url}/docusign/connect")).body(body);
            for (name, value) in signatures {
                request = request.header(name, value);
            }
            let answer = request.header("content-type", "application/json").send().await.unwrap();
            assert_eq!(answer.status(), 503, "a notification the store cannot take is not acknowledged");
            tokio::time::sleep(Duration::from_secs(2)).await;
            tokio::task::spawn_blocking(move || postgres.resume()).await.unwrap();
        }
    };
    let outage = tokio::spawn(outage);
    let mut sends = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    for (i, envelope) in envelopes.iter().enumerate() {
        tick.tick().await;
        let (sender, envelope) = (sender.clone(), envelope.clone());
        let format = if i % 2 == 0 { ConnectFormat::Json } else { ConnectFormat::Xml };
        let opts = options(true, i % 4 < 2);
        sends.spawn(async move { (envelope.envelope_id, sender.send(&envelope, format, &opts).await) });
    }
    outage.await.unwrap();
    let mut retried = 0;
    while let Some(sent) = sends.join_next().await {
        let (id, report) = sent.unwrap();
        assert!(report.delivered, "{id} was never acknowledged: {:?} {:?}", report.last_status, report.last_error);
        retried += usize::from(report.attempts > 1);
    }
    pipeline.wait_for_events(&envelopes, Duration::from_secs(180), || serve.logs()).await;
    let (exit, logs) = serve.terminate();
    assert!(exit.success(), "{logs}");
    let store = countersign::store::open(&postgres.url(), 2).await.unwrap();
    pipeline.assert_nothing_lost(store.as_ref(), &envelopes).await;
    assert!(store.envelope(probe.envelope_id).await.unwrap().is_none(), "the refused notification left nothing");
    assert!(retried > 0, "notifications sent during the outage were refused and sent again");
    println!("{} envelopes, {retried} retried by Connect across the outage", envelopes.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nats_restarted_mid_run_gets_every_event_once_it_is_back() {
    let mut nats = PrivateNats::start().await;
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "provisioning".into(),
        subjects: vec!["cs.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    drop(js);
    let db = common::sqlite().await;
    let sink =
        format!("[[sinks]]\nname = \"identity\"\nkind = \"nats\"\nurl = \"{}\"\nsubject_prefix = \"cs\"\n", nats.url());
    let pipeline = Pipeline::new(&db.url, &sink).await;
    let serve = ServeProcess::start(pipeline.dir.path(), &pipeline.config, free_port()).await;
    let sender = Arc::new(pipeline.sender(&serve.base_url));
    let envelopes = pipeline.sandbox.sandbox.complete_envelopes(100);

    let mut sends = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    let mut resumed = None;
    for (i, envelope) in envelopes.iter().enumerate() {
        tick.tick().await;
        match i {
            30 => nats.crash(),
            60 => {
                nats.resume().await;
                resumed = Some(Utc::now());
            }
            _ => {}
        }
        let (sender, envelope) = (sender.clone(), envelope.clone());
        sends.spawn(async move {
            (envelope.envelope_id, sender.send(&envelope, ConnectFormat::Json, &options(true, true)).await)
        });
    }
    while let Some(sent) = sends.join_next().await {
        let (id, report) = sent.unwrap();
        assert!(report.delivered, "{id} was never acknowledged: {:?}", report.last_status);
    }
    // The webhook sink was never down: its events arrive whatever NATS does.
    pipeline.wait_for_events(&envelopes, Duration::from_secs(120), || serve.logs()).await;

    let expected: HashSet<String> =
        envelopes.iter().map(|e| countersign::events::event_id(e.envelope_id, "default").to_string()).collect();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let stream = js.get_stream("provisioning").await.unwrap();
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::Config { durable_name: None, ..Default::default() })
        .await
        .unwrap();
    let mut seen = HashSet::new();
    let mut messages = 0;
    for _ in 0..120 {
        let mut batch =
            consumer.fetch().max_messages(500).expires(Duration::from_millis(500)).messages().await.unwrap();
        while let Some(message) = batch.next().await {
            let message = message.unwrap();
            let id = message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).unwrap().to_string();
            seen.insert(id);
            messages += 1;
        }
        if seen.len() >= expected.len() {
            break;
        }
    }
    assert_eq!(seen, expected, "every event reached the stream, under its event id");
    let (exit, logs) = serve.terminate();
    assert!(exit.success(), "{logs}");
    pipeline.assert_nothing_lost(db.store.as_ref(), &envelopes).await;
    let (waited, retried) = outage_felt(db.store.as_ref(), &envelopes, "identity", resumed.unwrap()).await;
    assert!(waited > 0, "deliveries waited for NATS to come back");
    println!(
        "{} events in the stream as {messages} messages after a NATS crash and restart; \
         {waited} deliveries waited for it, {retried} took more than one attempt",
        expected.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rabbitmq_restarted_mid_run_gets_every_event_once_it_is_back() {
    use lapin::options::{BasicGetOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;

    let mut rabbitmq = PrivateRabbitMq::start().await;
    let declare = |url: String| async move {
        let connection = common::servers::amqp_connect(&url).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        channel
            .exchange_declare("provisioning".into(), lapin::ExchangeKind::Topic, durable, FieldTable::default())
            .await
            .unwrap();
        let queue = QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() };
        channel.queue_declare("erp".into(), queue, FieldTable::default()).await.unwrap();
        channel
            .queue_bind(
                "erp".into(),
                "provisioning".into(),
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        (connection, channel)
    };
    drop(declare(rabbitmq.url()).await);
    let db = common::sqlite().await;
    let sink = format!(
        "[[sinks]]\nname = \"erp\"\nkind = \"amqp\"\nurl = \"{}\"\nexchange = \"provisioning\"\n",
        rabbitmq.url()
    );
    let pipeline = Pipeline::new(&db.url, &sink).await;
    let serve = ServeProcess::start(pipeline.dir.path(), &pipeline.config, free_port()).await;
    let sender = Arc::new(pipeline.sender(&serve.base_url));
    let envelopes = pipeline.sandbox.sandbox.complete_envelopes(100);

    let mut sends = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_millis(40));
    let mut resumed = None;
    for (i, envelope) in envelopes.iter().enumerate() {
        tick.tick().await;
        match i {
            30 => rabbitmq.crash(),
            60 => {
                rabbitmq.resume().await;
                resumed = Some(Utc::now());
            }
            _ => {}
        }
        let (sender, envelope) = (sender.clone(), envelope.clone());
        sends.spawn(async move {
            (envelope.envelope_id, sender.send(&envelope, ConnectFormat::Json, &options(true, true)).await)
        });
    }
    while let Some(sent) = sends.join_next().await {
        let (id, report) = sent.unwrap();
        assert!(report.delivered, "{id} was never acknowledged: {:?}", report.last_status);
    }
    pipeline.wait_for_events(&envelopes, Duration::from_secs(120), || serve.logs()).await;

    let expected: HashSet<String> =
        envelopes.iter().map(|e| countersign::events::event_id(e.envelope_id, "default").to_string()).collect();
    let (_connection, channel) = declare(rabbitmq.url()).await;
    let mut seen = HashSet::new();
    let mut messages = 0;
    for _ in 0..120 {
        while let Some(message) = channel.basic_get("erp".into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            seen.insert(message.delivery.properties.message_id().as_ref().unwrap().to_string());
            messages += 1;
        }
        if seen.len() >= expected.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(seen, expected, "every event reached the queue, under its event id");
    let (exit, logs) = serve.terminate();
    assert!(exit.success(), "{logs}");
    pipeline.assert_nothing_lost(db.store.as_ref(), &envelopes).await;
    let (waited, retried) = outage_felt(db.store.as_ref(), &envelopes, "erp", resumed.unwrap()).await;
    assert!(waited > 0, "deliveries waited for RabbitMQ to come back");
    println!(
        "{} events in the queue as {messages} messages after a RabbitMQ crash and restart; \
         {waited} deliveries waited for it, {retried} took more than one attempt",
        expected.len()
    );
}
