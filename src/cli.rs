//! The command line. `main.rs` parses it; everything it does lives here.

mod healthcheck;
mod reprocess;
mod rules;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::Settings;
use crate::ids::{EventId, JobId};
use crate::jobs::JobKind;
use crate::store::DeliveryFilter;
use crate::{service, store, telemetry};

#[derive(Debug, Parser)]
#[command(
    name = "countersign",
    version,
    about = "Turns completed DocuSign envelopes into signed provisioning events for your IT systems",
    long_about = "Turns completed DocuSign envelopes into signed provisioning events for your IT systems.\n\n\
        Configuration comes from embedded defaults, then an optional TOML file (--config), then \
        environment variables prefixed COUNTERSIGN_ with __ between levels (COUNTERSIGN_STORE__URL)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct ConfigArg {
    /// TOML configuration file; environment variables override it.
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: Connect listener, workers, delivery and admin.
    Serve(ConfigArg),
    /// A guided tour on embedded defaults: sandbox, service and event receiver in one process.
    Demo {
        /// Keep the demo's data here instead of a temporary directory.
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
    },
    /// Run the DocuSign simulator on its own and print how to point `serve` at it.
    Sandbox {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8081", value_name = "ADDR")]
        listen: String,
        /// Where to write the integration key's private key.
        #[arg(long, default_value = "sandbox", value_name = "DIR")]
        data: PathBuf,
        /// A Connect listener (e.g. http://127.0.0.1:8080/docusign/connect): envelopes completed through
        /// the control API (POST /control/envelopes or /control/connect) are announced to it, signed,
        /// unless a request names another.
        #[arg(long, value_name = "URL")]
        connect_url: Option<String>,
    },
    /// Print the URL a DocuSign user opens to grant countersign consent (impersonation).
    ConsentUrl(ConfigArg),
    /// Validate the configuration and the store; exit status says whether `serve` could run.
    Check(ConfigArg),
    /// List what ran out of attempts, newest first: event deliveries (event,
    /// sink, attempts, last error), disabled sinks, and other jobs.
    DeadLetters {
        #[command(flatten)]
        config: ConfigArg,
        /// How many to show of each.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only deliveries to this sink.
        #[arg(long, value_name = "NAME")]
        sink: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Give dead letters a fresh set of attempts: jobs by id, or event
    /// deliveries by event and/or sink. Replaying a disabled sink's
    /// deliveries enables it again.
    Replay {
        #[command(flatten)]
        config: ConfigArg,
        /// Job ids as shown by `dead-letters`.
        #[arg(value_name = "JOB_ID", required_unless_present_any = ["all", "event", "sink"])]
        jobs: Vec<String>,
        /// Replay every dead letter.
        #[arg(long, conflicts_with_all = ["jobs", "event", "sink", "since"])]
        all: bool,
        /// The dead deliveries of this event.
        #[arg(long, value_name = "ID", conflicts_with = "jobs")]
        event: Option<String>,
        /// The dead deliveries to this sink.
        #[arg(long, value_name = "NAME", conflicts_with = "jobs")]
        sink: Option<String>,
        /// Only deliveries that died since TIME: RFC 3339 (2026-11-28T09:00:00Z) or a duration ago (2h).
        #[arg(long, value_name = "TIME", conflicts_with = "jobs")]
        since: Option<String>,
    },
    /// Exit 0 when the running service answers GET /healthz on the configured
    /// `server.listen` (a wildcard address is asked on loopback), 1 otherwise:
    /// the container HEALTHCHECK, for images without a shell or curl.
    Healthcheck {
        #[command(flatten)]
        config: ConfigArg,
        /// Ask /readyz instead: the store answers and DocuSign access is not misconfigured.
        #[arg(long)]
        ready: bool,
        /// How long to wait for the answer (5s, 500ms).
        #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    /// Process envelopes again with the rules and sinks in force now (after
    /// a rule fix, say). Events already made are not made again; documents
    /// already stored are not downloaded again.
    Reprocess {
        #[command(flatten)]
        config: ConfigArg,
        /// Envelope ids.
        #[arg(value_name = "ENVELOPE_ID", required_unless_present = "flagged", conflicts_with = "flagged")]
        envelopes: Vec<String>,
        /// Every flagged envelope (a rule's required field was missing).
        #[arg(long)]
        flagged: bool,
        /// With --flagged: only envelopes flagged since TIME: RFC 3339, a date or a duration ago (2h).
        #[arg(long, value_name = "TIME", requires = "flagged")]
        since: Option<String>,
    },
    /// Try the rules without writing or calling anything.
    #[command(subcommand)]
    Rules(RulesCommand),
    /// Find completed envelopes Connect never delivered and process them.
    Reconcile {
        #[command(flatten)]
        config: ConfigArg,
        /// Look for envelopes completed since this time (RFC 3339).
        #[arg(long, value_name = "TIME")]
        since: String,
        /// Only this DocuSign account.
        #[arg(long, value_name = "ID")]
        account: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RulesCommand {
    /// Which rules match an envelope, each event as it would be delivered,
    /// and what is missing. Exit 0: it would be processed; 1: it would be
    /// flagged (a required field is missing); 2: it cannot be tested.
    Test {
        #[command(flatten)]
        config: ConfigArg,
        /// A stored envelope.
        #[arg(value_name = "ENVELOPE_ID", required_unless_present = "file", conflicts_with = "file")]
        envelope: Option<String>,
        /// A Connect message (JSON or legacy XML) instead.
        #[arg(long, value_name = "NOTIFICATION")]
        file: Option<PathBuf>,
    },
}

/// Runs a parsed command line and returns the process exit status.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(arg: &ConfigArg) -> anyhow::Result<Settings> {
    Ok(Settings::load(arg.config.as_deref())?)
}

async fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Serve(arg) => {
            let settings = load(&arg)?;
            telemetry::init(&settings.log);
            service::serve(settings).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::ConsentUrl(arg) => {
            let settings = load(&arg)?;
            println!("{}", consent_url(&settings)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(arg) => check(&arg).await,
        Command::DeadLetters { config, limit, sink, json } => dead_letters(&config, limit, sink, json).await,
        Command::Replay { config, jobs, all, event, sink, since } => {
            if event.is_some() || sink.is_some() {
                replay_deliveries(&config, event.as_deref(), sink, since.as_deref()).await
            } else {
                replay(&config, &jobs, all).await
            }
        }
        Command::Demo { data } => {
            crate::demo::run(data).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox { listen, data, connect_url } => sandbox(&listen, &data, connect_url).await,
        Command::Healthcheck { config, ready, timeout } => healthcheck::healthcheck(&config, ready, timeout).await,
        Command::Reconcile { config, since, account } => reconcile(&config, &since, account.as_deref()).await,
        Command::Reprocess { config, envelopes, flagged, since } => {
            reprocess::reprocess(&config, &envelopes, flagged, since.as_deref()).await
        }
        Command::Rules(RulesCommand::Test { config, envelope, file }) => {
            Ok(rules::test(&config, envelope.as_deref(), file.as_deref()).await)
        }
    }
}

/// The individual-consent URL DocuSign documents for the JWT Grant.
pub fn consent_url(settings: &Settings) -> anyhow::Result<String> {
    Ok(crate::docusign::consent_url(settings)?)
}

async fn sandbox(listen: &str, data: &std::path::Path, connect_url: Option<String>) -> anyhow::Result<ExitCode> {
    telemetry::init(&crate::config::LogSettings { format: crate::config::LogFormat::Human, filter: "warn".into() });
    // Checked before anything listens, so a typo stops here rather than at the first notification.
    if let Some(text) = &connect_url {
        let url = url::Url::parse(text).with_context(|| format!("--connect-url {text:?} is not a URL"))?;
        anyhow::ensure!(
            matches!(url.scheme(), "http" | "https") && url.has_host(),
            "--connect-url {text:?} must be an http:// or https:// URL"
        );
    }
    let sandbox = crate::sandbox::Sandbox::new(crate::sandbox::SandboxConfig::default())?;
    sandbox.set_connect_url(connect_url);
    let running = sandbox.serve(listen).await?;
    std::fs::create_dir_all(data).with_context(|| format!("creating {}", data.display()))?;
    let key_path = std::path::absolute(data.join("private-key.pem"))?;
    write_private(&key_path, sandbox.identity().private_key_pem.as_bytes())?;
    print!("{}", crate::sandbox::describe(&sandbox, &running.base_url(), &key_path));
    use std::io::Write;
    std::io::stdout().flush()?;
    service::shutdown_signal().await;
    Ok(ExitCode::SUCCESS)
}

/// Writes a secret readable by its owner only.
fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("writing {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

async fn check(arg: &ConfigArg) -> anyhow::Result<ExitCode> {
    let settings = load(arg)?;
    println!("configuration: ok");
    let store = store::open(settings.store.connection_url().expose(), 1).await?;
    store.check_ready().await?;
    println!("store: ok ({}, {})", store.backend(), store::redact_url(&settings.store.url));
    if settings.connect.hmac_keys.is_empty() && settings.connect.accounts.is_empty() {
        println!("connect: WARNING no HMAC keys configured (connect.hmac_keys)");
    } else {
        println!("connect: {} HMAC key(s)", settings.connect.hmac_keys.len());
    }
    let Some(docusign) = crate::docusign::DocuSign::from_settings(&settings)? else {
        println!(
            "docusign: NOT CONFIGURED: set docusign.integration_key, docusign.user_id and docusign.private_key_file \
             (only notifications that carry their documents and data can be processed)"
        );
        return Ok(ExitCode::FAILURE);
    };
    let mut healthy = true;
    for user in docusign.impersonation().users() {
        match docusign.accounts(user).await {
            Ok(accounts) => {
                println!("docusign: user {user}: token ok; {} account(s)", accounts.len());
                for account in accounts {
                    let default = if account.is_default { " (default)" } else { "" };
                    println!("  account {} {:?}{default} → {}", account.account_id, account.name, account.api_base);
                }
            }
            Err(crate::docusign::ApiError::Grant(crate::docusign::GrantError::ConsentRequired { .. })) => {
                healthy = false;
                println!("docusign: user {user}: CONSENT REQUIRED: the user must open this URL and allow access:");
                println!("  {}", consent_url(&settings).unwrap_or_else(|e| format!("(no consent URL: {e:#})")));
            }
            Err(error) => {
                healthy = false;
                println!("docusign: user {user}: FAILED: {error}");
            }
        }
    }
    for check in crate::send::check::check_profiles(&settings, &docusign).await {
        match (&check.template, check.problems.is_empty()) {
            (Some(template), true) => println!("profile {}: ok (template {template:?})", check.profile),
            _ => {
                healthy = false;
                println!("profile {}: FAILED", check.profile);
                for problem in &check.problems {
                    println!("  {problem}");
                }
            }
        }
    }
    Ok(if healthy { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `countersign reconcile`: one pass by hand over every configured account
/// (or one), from `since`; what it finds is queued for `serve` to process.
async fn reconcile(arg: &ConfigArg, since: &str, account: Option<&str>) -> anyhow::Result<ExitCode> {
    use crate::reconcile::{Reconciler, accounts};
    let settings = load(arg)?;
    let since = parse_since(since)?;
    anyhow::ensure!(
        settings.processes_completions(),
        "connect.process_events does not include envelope-completed: reconciliation finds completed envelopes \
         to process them, and this configuration does not process completions"
    );
    let store = store::open(settings.store.connection_url().expose(), 2).await?;
    let docusign = crate::docusign::DocuSign::from_settings(&settings)?.context(
        "DocuSign access is not configured: set docusign.integration_key, docusign.user_id and \
         docusign.private_key_file",
    )?;
    let reconciler = Reconciler::new(&settings, std::sync::Arc::new(docusign), store.clone());
    let targets = match account {
        Some(text) => {
            vec![crate::ids::AccountId::parse(text).with_context(|| format!("--account {text:?} is not a GUID"))?]
        }
        None => {
            let mut resolved = Vec::new();
            for configured in accounts(&settings) {
                resolved.push(match configured {
                    Some(account) => account,
                    None => reconciler.default_account().await?,
                });
            }
            resolved
        }
    };
    let mut found = 0;
    for account in targets {
        let started = crate::reconcile::listed_until(chrono::Utc::now(), settings.reconcile.grace);
        anyhow::ensure!(
            since < started,
            "--since {} is within reconcile.grace ({}) of now: envelopes completed since then are Connect's to \
             deliver; give an earlier time",
            since.to_rfc3339(),
            humantime_serde::re::humantime::format_duration(settings.reconcile.grace)
        );
        println!(
            "account {account}: listing envelopes completed from {} to {} (later ones are Connect's to deliver: \
             reconcile.grace = {})",
            since.to_rfc3339(),
            started.to_rfc3339(),
            humantime_serde::re::humantime::format_duration(settings.reconcile.grace)
        );
        let window = crate::store::ReconcilePass { from: since, until: started, position: 0, found: 0 };
        let report = reconciler
            .pass(account, window, false, |report, total| {
                println!(
                    "  page {}: {} of {total} listed, {} not delivered by Connect so far",
                    report.pages, report.listed, report.found
                );
            })
            .await?;
        // The pass covered [since, started]: it may move the checkpoint only
        // when it reaches back to (or before) where the last pass ended.
        let checkpoint = store.reconcile_checkpoint(account).await?;
        let reached = checkpoint.as_ref().is_none_or(|c| since <= c.listed_until);
        let until = if reached { started } else { checkpoint.map_or(started, |c| c.listed_until) };
        store.advance_reconcile_checkpoint(account, until, report.found).await?;
        println!(
            "account {account}: {} listed, {} were never delivered by Connect and are now queued",
            report.listed, report.found
        );
        found += report.found;
    }
    if found > 0 {
        println!("A running `countersign serve` processes the queued envelopes.");
    }
    Ok(ExitCode::SUCCESS)
}

async fn dead_letters(arg: &ConfigArg, limit: u32, sink: Option<String>, json: bool) -> anyhow::Result<ExitCode> {
    let settings = load(arg)?;
    let store = store::open(settings.store.connection_url().expose(), 1).await?;
    let filter = DeliveryFilter { sink: sink.clone(), ..DeliveryFilter::default() };
    let deliveries = store.dead_deliveries(&filter, limit).await?;
    let disabled = store.disabled_sinks().await?;
    let disabled: Vec<_> = disabled.into_iter().filter(|d| sink.as_ref().is_none_or(|s| *s == d.sink)).collect();
    // Deliveries are listed as deliveries; the other kinds as jobs.
    let jobs: Vec<_> = match sink {
        Some(_) => Vec::new(),
        None => store.dead_jobs(limit).await?.into_iter().filter(|job| job.kind != JobKind::Deliver).collect(),
    };
    if json {
        for sink in &disabled {
            let mut row = serde_json::to_value(sink)?;
            row["kind"] = "disabled_sink".into();
            println!("{row}");
        }
        for delivery in &deliveries {
            let mut row = serde_json::to_value(delivery)?;
            row["kind"] = JobKind::Deliver.as_str().into();
            println!("{row}");
        }
        for job in &jobs {
            println!("{}", serde_json::to_string(job)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default()
    };
    let first_line = |error: Option<&str>| error.unwrap_or("").lines().next().unwrap_or("").to_string();
    for sink in &disabled {
        println!("sink {} is DISABLED since {}: {}", sink.sink, time(Some(sink.disabled_at)), sink.reason);
        println!("  fix it, then: countersign replay --sink {}\n", sink.sink);
    }
    if deliveries.is_empty() && jobs.is_empty() {
        println!("no dead letters");
        return Ok(ExitCode::SUCCESS);
    }
    if !deliveries.is_empty() {
        println!("{:<36}  {:<16}  {:<28}  {:>8}  {:<19}  last error", "event", "sink", "type", "attempts", "failed at");
        for d in &deliveries {
            println!(
                "{:<36}  {:<16}  {:<28}  {:>8}  {:<19}  {}",
                d.event_id,
                d.sink,
                d.event_type,
                d.attempts,
                time(d.failed_at),
                first_line(d.last_error.as_deref())
            );
        }
    }
    if !jobs.is_empty() {
        if !deliveries.is_empty() {
            println!();
        }
        println!("{:<36}  {:<18}  {:>8}  {:<20}  last error", "job", "kind", "attempts", "failed at");
        for job in &jobs {
            let error = first_line(job.last_error.as_deref());
            println!("{:<36}  {:<18}  {:>8}  {:<20}  {error}", job.id, job.kind, job.attempts, time(job.finished_at));
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn replay(arg: &ConfigArg, ids: &[String], all: bool) -> anyhow::Result<ExitCode> {
    let settings = load(arg)?;
    let store = store::open(settings.store.connection_url().expose(), 1).await?;
    let ids: Vec<JobId> = if all {
        // Deliveries go through their own replay, which also enables their sinks.
        let replayed = replay_matching(&*store, &settings, &DeliveryFilter::default()).await?;
        let others = store.dead_jobs(u32::MAX).await?.into_iter().filter(|job| job.kind != JobKind::Deliver);
        if replayed == 0 && others.clone().next().is_none() {
            println!("no dead letters");
        }
        others.map(|job| job.id).collect()
    } else {
        ids.iter()
            .map(|id| JobId::parse(id).with_context(|| format!("{id:?} is not a job id")))
            .collect::<anyhow::Result<_>>()?
    };
    let mut missing = 0;
    for id in ids {
        if store.replay_job(id, settings.queue.max_attempts).await? {
            println!("replayed {id}");
        } else {
            println!("not a dead letter: {id}");
            missing += 1;
        }
    }
    Ok(if missing == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// `replay --event ID` / `replay --sink NAME [--since TIME]`.
async fn replay_deliveries(
    arg: &ConfigArg,
    event: Option<&str>,
    sink: Option<String>,
    since: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let settings = load(arg)?;
    let event = event.map(|e| EventId::parse(e).with_context(|| format!("{e:?} is not an event id"))).transpose()?;
    let since = since.map(parse_since).transpose()?;
    if let Some(name) = &sink
        && !settings.sinks.iter().any(|s| &s.name == name)
    {
        anyhow::bail!("no sink named {name:?} is configured ([[sinks]])");
    }
    let store = store::open(settings.store.connection_url().expose(), 1).await?;
    let mut enabled = false;
    if let Some(name) = &sink {
        // Enabled before its deliveries are queued, or they would die again at once.
        enabled = store.enable_sink(name).await?;
        if enabled {
            println!("sink {name} enabled again");
        }
    }
    let replayed = replay_matching(&*store, &settings, &DeliveryFilter { event, sink, since }).await?;
    if replayed == 0 {
        println!("no dead deliveries match");
    }
    Ok(if replayed > 0 || enabled { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Replays the dead deliveries `filter` matches, enabling their sinks first.
async fn replay_matching(
    store: &dyn store::Store,
    settings: &Settings,
    filter: &DeliveryFilter,
) -> anyhow::Result<usize> {
    let replayed = crate::deliver::replay::replay_deliveries(store, filter, settings.delivery.max_attempts()).await?;
    for sink in &replayed.enabled_sinks {
        println!("sink {sink} enabled again");
    }
    for delivery in &replayed.deliveries {
        println!("replayed event {} to sink {}", delivery.event_id, delivery.sink);
    }
    Ok(replayed.deliveries.len())
}

/// `--since`: an RFC 3339 time, a date (midnight UTC), or a duration before now (`2h`, `30m`).
fn parse_since(text: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&chrono::Utc));
    }
    if let Some(midnight) =
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d").ok().and_then(|date| date.and_hms_opt(0, 0, 0))
    {
        return Ok(midnight.and_utc());
    }
    let ago = humantime_serde::re::humantime::parse_duration(text).map_err(|_| {
        anyhow::anyhow!(
            "--since {text:?}: give an RFC 3339 time (2026-11-28T09:00:00Z), a date (2026-11-01) or a duration ago (2h)"
        )
    })?;
    let ago = chrono::Duration::from_std(ago)?;
    chrono::Utc::now().checked_sub_signed(ago).context("--since is too far back")
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime_serde::re::humantime::parse_duration(text).map_err(|e| format!("{e} (write it like 5s or 500ms)"))
}
