//! `countersign reprocess`: envelopes through `process_envelope` again with
//! the rules in force now; a running `serve` does the work.

use std::process::ExitCode;

use anyhow::Context;

use super::{ConfigArg, load, parse_since};
use crate::ids::EnvelopeId;
use crate::pipeline::reprocess::{Reprocessing, flagged, reprocess as queue};
use crate::store;

pub(super) async fn reprocess(
    arg: &ConfigArg,
    ids: &[String],
    only_flagged: bool,
    since: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let settings = load(arg)?;
    let since = since.map(parse_since).transpose()?;
    let envelopes: Vec<EnvelopeId> = ids
        .iter()
        .map(|id| EnvelopeId::parse(id).with_context(|| format!("{id:?} is not an envelope id (a GUID)")))
        .collect::<anyhow::Result<_>>()?;
    let store = store::open(settings.store.connection_url().expose(), 1).await?;
    let envelopes = if only_flagged { flagged(&*store, since).await? } else { envelopes };
    if only_flagged && envelopes.is_empty() {
        println!("no flagged envelopes");
        return Ok(ExitCode::SUCCESS);
    }
    let mut unknown = 0;
    for envelope in envelopes {
        match queue(&*store, envelope, settings.queue.max_attempts).await? {
            Reprocessing::Queued => println!("queued {envelope}: it is processed again with today's rules"),
            Reprocessing::AlreadyQueued => println!("already queued {envelope}: it runs with today's rules anyway"),
            Reprocessing::Running => println!(
                "running {envelope}: it started with the rules in force then; reprocess it again once it is done \
                 if they changed since"
            ),
            Reprocessing::Unknown => {
                println!("unknown {envelope}: no notification ever asked for it to be processed");
                unknown += 1;
            }
        }
    }
    println!("A running `countersign serve` processes the queued envelopes.");
    Ok(if unknown == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
