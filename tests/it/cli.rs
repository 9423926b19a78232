//! The `countersign` binary, driven as an operator would.

use crate::common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use countersign::store::{NewJob, Retry};
use serde_json::json;

fn countersign(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_countersign")).args(args).current_dir(dir).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn help_lists_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = countersign(&["--help"], dir.path());
    assert!(out.status.success());
    let help = text(&out.stdout);
    let commands =
        ["serve", "demo", "sandbox", "consent-url", "check", "dead-letters", "replay", "reconcile", "healthcheck"];
    for command in commands {
        assert!(help.contains(command), "--help should list {command}:\n{help}");
    }
    let out = countersign(&["replay", "--help"], dir.path());
    assert!(text(&out.stdout).contains("--all"));
}

#[test]
fn consent_url_is_the_one_docusign_documents() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "[docusign]\nauth_server = \"account-d.docusign.com\"\n\
         integration_key = \"7d3e2f5a-0b1c-4d6e-8f9a-1b2c3d4e5f60\"\nredirect_uri = \"https://www.docusign.com\"\n",
    )
    .unwrap();
    let out = countersign(&["consent-url", "--config", "c.toml"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "https://account-d.docusign.com/oauth/auth?response_type=code&scope=signature%20impersonation\
         &client_id=7d3e2f5a-0b1c-4d6e-8f9a-1b2c3d4e5f60&redirect_uri=https%3A%2F%2Fwww.docusign.com"
    );

    std::fs::write(dir.path().join("empty.toml"), "").unwrap();
    let out = countersign(&["consent-url", "--config", "empty.toml"], dir.path());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("`docusign.integration_key`: is not set"), "{}", text(&out.stderr));
}

#[test]
fn check_accepts_a_good_configuration_and_names_the_wrong_key_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("good.toml"), "[store]\nurl = \"sqlite://state/cs.db\"\n").unwrap();
    let out = countersign(&["check", "--config", "good.toml"], dir.path());
    assert!(text(&out.stdout).contains("configuration: ok"), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("store: ok (sqlite"));
    assert!(!out.status.success(), "without DocuSign access the service cannot download documents");
    assert!(text(&out.stdout).contains("docusign: NOT CONFIGURED"), "{}", text(&out.stdout));
    assert!(dir.path().join("state/cs.db").exists(), "the store's directory is created");

    std::fs::write(dir.path().join("bad.toml"), "[queue]\nlease = \"soon\"\n").unwrap();
    let out = countersign(&["check", "--config", "bad.toml"], dir.path());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("configuration key `queue.lease` (in "), "{}", text(&out.stderr));
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed() {
    let db = common::sqlite().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), format!("[store]\nurl = \"{}\"\n", db.url)).unwrap();
    db.store.enqueue(&NewJob::new("process_envelope", json!({}), 1)).await.unwrap();
    let claimed = db.store.claim_jobs(&["process_envelope"], "w", Duration::from_secs(30), 1).await.unwrap();
    db.store.fail_job(&claimed[0].lease, "DocuSign said 400: no such envelope", Retry::Never).await.unwrap();
    let id = claimed[0].job.id.to_string();

    let out = countersign(&["dead-letters", "--config", "c.toml"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(listing.contains(&id) && listing.contains("no such envelope"), "{listing}");

    let out = countersign(&["dead-letters", "--config", "c.toml", "--json"], dir.path());
    let row: serde_json::Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!((row["id"].as_str(), row["state"].as_str()), (Some(id.as_str()), Some("dead")));

    let out = countersign(&["replay", "--config", "c.toml", &id], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), format!("replayed {id}"));
    let claimed = db.store.claim_jobs(&["process_envelope"], "w", Duration::from_secs(30), 1).await.unwrap();
    assert_eq!(claimed.len(), 1, "the replayed job runs again");

    let out = countersign(&["replay", "--config", "c.toml", "not-a-job"], dir.path());
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("\"not-a-job\" is not a job id"));
}

#[tokio::test]
async fn serve_answers_its_probes_and_exits_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::process::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .arg("serve")
        .current_dir(dir.path())
        .env("COUNTERSIGN_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let health = common::eventually(Duration::from_secs(20), "serve to answer /healthz", || async {
        client.get(format!("{base}/healthz")).send().await.ok()
    })
    .await;
    assert_eq!(health.status(), 200);
    let ready = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["store"], "sqlite");
    assert!(dir.path().join("data/countersign.db").exists(), "embedded default: ./data/countersign.db");

    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(std::time::Instant::now() < deadline, "serve did not exit within 15s of SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(exit.success(), "exit status {exit:?}; logs:\n{stderr}");
    let last: serde_json::Value = serde_json::from_str(stderr.lines().last().unwrap()).expect("JSON log lines");
    assert_eq!(last["message"], "stopped");
}

#[tokio::test]
async fn the_sandbox_command_prints_a_configuration_that_serve_can_use() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["sandbox", "--listen", "127.0.0.1:0", "--data", "sbx"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut toml = String::new();
    let mut in_toml = false;
    for line in lines.by_ref() {
        let line = line.unwrap();
        in_toml |= line.starts_with("[connect]");
        if in_toml {
            toml.push_str(&line);
            toml.push('\n');
        }
        if line.starts_with("private_key_file") {
            break;
        }
    }
    std::fs::write(dir.path().join("countersign.toml"), &toml).unwrap();
    let key = std::fs::read_to_string(dir.path().join("sbx/private-key.pem")).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("sbx/private-key.pem")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "the private key is readable by its owner only");
    }

    let out = countersign(&["consent-url", "--config", "countersign.toml"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let consent = text(&out.stdout).trim().to_string();
    assert!(consent.starts_with("http://127.0.0.1:"), "{consent}");
    let page = reqwest::get(&consent).await.unwrap();
    assert_eq!(page.status(), 200, "the sandbox shows its consent page for countersign's consent URL");
    assert!(page.text().await.unwrap().contains("signature impersonation"));

    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn sighup_rereads_the_connect_keys_without_a_restart() {
    use countersign::sandbox::connect::{NotificationOptions, json_sim_body, signature_headers};
    let dir = tempfile::tempdir().unwrap();
    let port = common::process::free_port();
    let config = |key: &str| format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[connect]\nhmac_keys = [\"{key}\"]\n");
    std::fs::write(dir.path().join("c.toml"), config("first-key")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_countersign"))
        .args(["serve", "--config", "c.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    common::eventually(Duration::from_secs(20), "serve to start", || async {
        client.get(format!("{base}/healthz")).send().await.ok()
    })
    .await;
    let sandbox = countersign::sandbox::Sandbox::new(Default::default()).unwrap();
    let envelopes = sandbox.complete_envelopes(3);
    let send = |n: usize, key: &str| {
        let body = json_sim_body(&envelopes[n], &NotificationOptions::default(), 0, chrono::Utc::now());
        let (name, value) = signature_headers(&body, &[key.to_string()]).remove(0);
        client.post(format!("{base}/docusign/connect")).header(name, value).body(body).send()
    };
    assert_eq!(send(0, "first-key").await.unwrap().status(), 200);

    std::fs::write(dir.path().join("c.toml"), config("second-key")).unwrap();
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    common::eventually(Duration::from_secs(10), "the new key to take effect", || async {
        (send(1, "second-key").await.ok()?.status() == 200).then_some(())
    })
    .await;
    assert_eq!(send(2, "first-key").await.unwrap().status(), 401, "the old key is no longer accepted");

    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_deliveries_are_listed_and_replayed_by_sink_which_enables_it_again() {
    use common::envelopes::{SECRET, publish_many};
    use countersign::deliver::receiver::{Reply, WebhookReceiver};

    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    receiver.set_default_reply(Reply::status(410));
    let sinks = format!(
        "[delivery]\nschedule = [\"50ms\"]\n\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        receiver.url()
    );
    // PostgreSQL: the running service hears the CLI's replay through LISTEN/NOTIFY.
    let db = common::postgres().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), format!("[store]\nurl = \"{}\"\n{sinks}", db.url)).unwrap();
    let app = common::TestApp::spawn(db, &sinks).await;
    let planner = countersign::events::Planner::from_settings(&app.settings).unwrap();
    let plans = publish_many(&*app.store, &planner, 2).await;
    let events: Vec<String> = plans.iter().map(|p| p.events[0].event.id.to_string()).collect();
    common::eventually(Duration::from_secs(60), "both deliveries to be dead letters", || async {
        (app.store.dead_deliveries(&Default::default(), 10).await.unwrap().len() == 2).then_some(())
    })
    .await;

    let out = countersign(&["dead-letters", "--config", "c.toml"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listing = text(&out.stdout);
    assert!(listing.contains("sink hr is DISABLED"), "{listing}");
    assert!(listing.contains("countersign replay --sink hr"), "the listing says how to recover: {listing}");
    for event in &events {
        let row =
            listing.lines().find(|l| l.starts_with(event.as_str())).unwrap_or_else(|| panic!("{event} in {listing}"));
        assert!(row.contains(" hr ") && row.contains("envelope.completed"), "{row}");
    }
    assert!(listing.contains("HTTP 410"), "{listing}");
    let out = countersign(&["dead-letters", "--config", "c.toml", "--json"], dir.path());
    let rows: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.iter().filter(|r| r["kind"] == "disabled_sink").count(), 1);
    let deliveries: Vec<_> = rows.iter().filter(|r| r["kind"] == "deliver").collect();
    assert_eq!(deliveries.len(), 2);
    assert!(deliveries.iter().all(|r| r["sink"] == "hr" && r["attempts"] == 1));

    receiver.set_default_reply(Reply::OK);
    let out = countersign(&["replay", "--config", "c.toml", "--sink", "hr", "--since", "1h"], dir.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    let replayed = text(&out.stdout);
    assert!(replayed.contains("sink hr enabled again"), "{replayed}");
    for event in &events {
        assert!(replayed.contains(&format!("replayed event {event} to sink hr")), "{replayed}");
    }
    let delivered = receiver.wait_for_delivered(2, Duration::from_secs(60)).await.unwrap();
    let mut received: Vec<String> = delivered.iter().map(|r| r.webhook_id.clone().unwrap()).collect();
    received.sort();
    let mut expected = events.clone();
    expected.sort();
    assert_eq!(received, expected);

    let out = countersign(&["dead-letters", "--config", "c.toml"], dir.path());
    assert_eq!(text(&out.stdout).trim(), "no dead letters");
    let out = countersign(&["replay", "--config", "c.toml", "--event", &events[0]], dir.path());
    assert!(!out.status.success(), "nothing left to replay");
    assert!(text(&out.stdout).contains("no dead deliveries match"));
    let out = countersign(&["replay", "--config", "c.toml", "--sink", "erp"], dir.path());
    assert!(text(&out.stderr).contains("no sink named \"erp\""), "{}", text(&out.stderr));
    app.shutdown().await;
}

#[tokio::test]
async fn healthcheck_exits_0_while_serve_answers_and_1_once_it_has_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::process::free_port();
    // The probe reads the same configuration as serve; a wildcard listen
    // address (what a container uses) is probed on loopback.
    let config = common::process::write_config(dir.path(), &format!("[server]\nlisten = \"0.0.0.0:{port}\"\n"));
    let serve = common::process::ServeProcess::start(dir.path(), &config, port).await;
    let probe = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_countersign"))
            .arg("healthcheck")
            .args(args)
            .current_dir(dir.path())
            .env("HTTP_PROXY", "http://127.0.0.1:9")
            .env("http_proxy", "http://127.0.0.1:9")
            .output()
            .unwrap()
    };
    let healthy = common::eventually(Duration::from_secs(20), "healthcheck to pass", || async {
        let out = probe(&["--config", "countersign.toml"]);
        out.status.success().then_some(out)
    })
    .await;
    assert_eq!(text(&healthy.stdout).trim(), format!("healthy: http://127.0.0.1:{port}/healthz answered 200 OK"));
    let ready = probe(&["--config", "countersign.toml", "--ready"]);
    assert!(ready.status.success(), "{}", text(&ready.stdout));
    assert!(text(&ready.stdout).contains("/readyz answered 200"), "{}", text(&ready.stdout));

    let (exit, _) = serve.terminate();
    assert!(exit.success());
    let gone = probe(&["--config", "countersign.toml", "--timeout", "2s"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(
        text(&gone.stdout).starts_with(&format!("unhealthy: http://127.0.0.1:{port}/healthz: ")),
        "{}",
        text(&gone.stdout)
    );

    let bad = probe(&["--timeout", "soon"]);
    assert_eq!(bad.status.code(), Some(2), "a usage error: {}", text(&bad.stderr));
}

#[tokio::test]
async fn check_connects_to_postgres_with_the_password_from_a_file_and_prints_none_of_it() {
    let db = common::postgres().await;
    // The password moves out of the URL into a secret file, as in a container.
    let mut url = url::Url::parse(&db.url).unwrap();
    let password = url.password().unwrap_or("PG-FILE-SECRET").to_string();
    url.set_password(None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("postgres-password"), format!("{password}\n")).unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        format!("[store]\nurl = \"{url}\"\npassword_file = \"postgres-password\"\n"),
    )
    .unwrap();
    let out = countersign(&["check", "--config", "c.toml"], dir.path());
    let printed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(printed.contains(&format!("store: ok (postgres, {url})")), "{printed}");
    assert!(!printed.contains(&password), "the password was printed:\n{printed}");
}
