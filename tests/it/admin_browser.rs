//! The operator page in a real browser: headless Chromium driven through
//! chromedriver logs in, opens an envelope, replays a dead letter and saves
//! a screenshot. Needs `chromium` and `chromedriver` on the PATH (Debian:
//! `apt-get install chromium chromium-driver`; `.ci/run` installs them).

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::envelopes::{SECRET, publish_many};
use common::{TestApp, eventually};
use countersign::deliver::receiver::{Reply, WebhookReceiver};
use countersign::events::Planner;
use fantoccini::{Client, ClientBuilder, Locator};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "admin-browser-token-0123456789abcdef";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = match Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(error) => panic!(
                "cannot start chromedriver ({error}); install Chromium and its driver: \
                 `apt-get install chromium chromium-driver` (Debian) or put both on the PATH"
            ),
        };
        let url = format!("http://127.0.0.1:{port}");
        let status = format!("{url}/status");
        eventually(Duration::from_secs(20), "chromedriver to answer", || async {
            reqwest::get(&status).await.ok().filter(|r| r.status().is_success()).map(|_| ())
        })
        .await;
        Self { child, url }
    }

    async fn browser(&self) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000"]
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector).capabilities(capabilities).connect(&self.url).await.unwrap()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_logs_in_opens_an_envelope_and_replays_a_dead_letter_in_a_real_browser() {
    let receiver = WebhookReceiver::spawn(&[SECRET]).await.unwrap();
    receiver.set_default_reply(Reply::status(500));
    let config = format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[delivery]\nschedule = [\"50ms\"]\n\
         [[sinks]]\nname = \"hr\"\nkind = \"webhook\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n",
        receiver.url()
    );
    let app = TestApp::spawn(common::sqlite().await, &config).await;
    let planner = Planner::from_settings(&app.settings).unwrap();
    let plan = publish_many(&*app.store, &planner, 1).await.remove(0);
    let envelope = plan.envelope_id.to_string();
    let dead = eventually(WAIT, "a dead delivery", || async {
        app.store.dead_deliveries(&Default::default(), 10).await.unwrap().into_iter().next()
    })
    .await;

    let driver = Driver::start().await;
    let browser = driver.browser().await;
    let base = &app.base_url;

    // Log in: the page sends us to the form, the token gets us in.
    browser.goto(&format!("{base}/admin/")).await.unwrap();
    assert_eq!(browser.current_url().await.unwrap().path(), "/admin/login");
    browser.find(Locator::Css("input[name=token]")).await.unwrap().send_keys(TOKEN).await.unwrap();
    browser.find(Locator::Css("form.login button")).await.unwrap().click().await.unwrap();
    let processed = browser.wait().at_most(WAIT).for_element(Locator::Id("count-processed")).await.unwrap();
    assert_eq!(processed.text().await.unwrap(), "1");
    assert_eq!(browser.current_url().await.unwrap().path(), "/admin/");

    // Open the envelope from the table.
    browser.find(Locator::LinkText("Envelopes")).await.unwrap().click().await.unwrap();
    let link = browser.wait().at_most(WAIT).for_element(Locator::LinkText(&envelope)).await.unwrap();
    link.click().await.unwrap();
    let shown = browser.wait().at_most(WAIT).for_element(Locator::Id("envelope-id")).await.unwrap();
    assert_eq!(shown.text().await.unwrap(), envelope);
    let timeline = browser.find(Locator::Id("timeline")).await.unwrap().text().await.unwrap();
    assert!(timeline.contains("delivery to hr is a dead letter"), "{timeline}");

    // Replay the dead letter once the receiver is back.
    receiver.set_default_reply(Reply::OK);
    browser.find(Locator::LinkText("Dead letters")).await.unwrap().click().await.unwrap();
    let row = browser.wait().at_most(WAIT).for_element(Locator::Id("dead-deliveries")).await.unwrap();
    assert!(row.text().await.unwrap().contains(&plan.events[0].event.id.to_string()));
    row.find(Locator::Css("button[type=submit]")).await.unwrap().click().await.unwrap();
    let notice = browser.wait().at_most(WAIT).for_element(Locator::Id("notice")).await.unwrap();
    assert_eq!(notice.text().await.unwrap(), format!("Job {} is queued again.", dead.job_id));
    receiver.wait_for_delivered(1, WAIT).await.unwrap();

    let screenshot = browser.screenshot().await.unwrap();
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG");
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("admin-dead-letters.png");
    std::fs::write(&path, &screenshot).unwrap();
    eprintln!("screenshot saved to {}", path.display());

    browser.close().await.unwrap();
    app.shutdown().await;
}
