//! The page's HTML. Every `(value)` below is escaped by maud.

use maud::{DOCTYPE, Markup, html};

use super::timeline::Entry;
use super::{last_outcome, statuses, when, when_opt};
use crate::admin::queries::{Consent, DeadLetters, EnvelopeDetail, Overview, SinkStatus};
use crate::deliver::CircuitState;
use crate::store::{EnvelopePage, EnvelopeStatus};

/// The frame around every page; `csrf` is present once logged in (the
/// logout button needs no token, but only a session has somewhere to go).
pub fn layout(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · countersign" }
                link rel="stylesheet" href="/admin/style.css";
            }
            body {
                header {
                    a.brand href="/admin/" { "countersign" }
                    @if csrf.is_some() {
                        nav {
                            a href="/admin/" { "Overview" }
                            a href="/admin/envelopes" { "Envelopes" }
                            a href="/admin/dead-letters" { "Dead letters" }
                        }
                        form.logout method="post" action="/admin/logout" { button type="submit" { "Log out" } }
                    }
                }
                main {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

pub fn login(problem: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            @if let Some(problem) = problem { p.error { (problem) } }
            form.login method="post" action="/admin/login" {
                label for="token" { "Admin token" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Log in" }
            }
        },
    )
}

fn status_badge(status: EnvelopeStatus) -> Markup {
    html! { span class={ "badge " (status.as_str()) } { (status.as_str()) } }
}

fn circuit(state: Option<&CircuitState>) -> Markup {
    match state {
        None => html! { "—" },
        Some(CircuitState::Closed) => html! { span.badge.processed { "closed" } },
        Some(CircuitState::Failing { failing_for_secs }) => {
            html! { span.badge.received { "failing for " (format!("{failing_for_secs:.0}")) " s" } }
        }
        Some(CircuitState::Suspended { next_probe_in_secs, .. }) => {
            html! { span.badge.flagged { "suspended, probe in " (format!("{next_probe_in_secs:.0}")) " s" } }
        }
    }
}

pub fn overview(csrf: &str, overview: &Overview, sinks: &[SinkStatus], consent: &Consent) -> Markup {
    let total: u64 = overview.envelopes.values().sum();
    layout(
        "Overview",
        Some(csrf),
        html! {
            section.cards {
                a.card href="/admin/envelopes" { span.count #count-envelopes { (total) } " envelopes" }
                @for status in statuses() {
                    a.card href={ "/admin/envelopes?status=" (status.as_str()) } {
                        span.count id={ "count-" (status.as_str()) } { (overview.envelopes.get(status.as_str()).copied().unwrap_or(0)) }
                        " " (status.as_str())
                    }
                }
                a.card href="/admin/dead-letters" {
                    span.count #count-dead-deliveries { (overview.dead_deliveries) } " dead deliveries"
                }
                a.card href="/admin/dead-letters" { span.count #count-dead-jobs { (overview.dead_jobs) } " other dead jobs" }
                span.card { span.count #count-parked { (overview.parked_jobs) } " parked jobs" }
            }
            h2 { "DocuSign consent" }
            section #consent {
                @if !consent.configured { p { "DocuSign access is not configured." } }
                @if let Some(url) = &consent.consent_url {
                    p { "A DocuSign user grants consent by opening: " a #consent-url href=(url) { "the consent link" } }
                } @else if let Some(error) = &consent.consent_url_error {
                    p { "No consent link: " (error) }
                }
                @if !consent.users.is_empty() {
                    table {
                        thead { tr { th { "user" } th { "access" } th { "message" } } }
                        tbody {
                            @for user in &consent.users {
                                tr { td.mono { (user.user_id) } td { (user.state) } td { (user.message.as_deref().unwrap_or("")) } }
                            }
                        }
                    }
                }
            }
            h2 { "Sinks" }
            @if sinks.is_empty() { p { "No sinks are configured." } } @else {
                table #sinks {
                    thead { tr { th { "sink" } th { "kind" } th { "disabled" } th { "circuit" } th { "dead deliveries" } } }
                    tbody {
                        @for sink in sinks {
                            tr {
                                td { (sink.name) } td { (sink.kind) }
                                td { @if let Some(d) = &sink.disabled { (d.reason) " (since " (when(d.disabled_at)) ")" } @else { "no" } }
                                td { (circuit(sink.circuit.as_ref())) }
                                td { (sink.dead_deliveries) }
                            }
                        }
                    }
                }
            }
            h2 { "Queue" }
            table #queue {
                thead { tr { th { "kind" } th { "state" } th { "jobs" } th { "oldest due" } } }
                tbody {
                    @for stat in &overview.queue {
                        tr { td { (stat.kind) } td { (stat.state) } td { (stat.count) } td { (when_opt(stat.oldest)) } }
                    }
                }
            }
        },
    )
}

pub fn envelopes(csrf: &str, status: Option<EnvelopeStatus>, offset: u64, size: u32, page: &EnvelopePage) -> Markup {
    let filter = status.map(|s| format!("status={}&", s.as_str())).unwrap_or_default();
    let shown_to = offset + page.envelopes.len() as u64;
    layout(
        "Envelopes",
        Some(csrf),
        html! {
            nav.filters {
                a href="/admin/envelopes" class=[status.is_none().then_some("current")] { "all" }
                @for s in statuses() {
                    a href={ "/admin/envelopes?status=" (s.as_str()) } class=[(status == Some(s)).then_some("current")] { (s.as_str()) }
                }
            }
            p { (page.total) " envelopes" @if page.total > 0 { ", showing " (offset + 1) "–" (shown_to) } }
            table #envelopes {
                thead { tr { th { "envelope" } th { "subject" } th { "status" } th { "completed" } th { "updated" } } }
                tbody {
                    @for envelope in &page.envelopes {
                        tr {
                            td.mono { a href={ "/admin/envelopes/" (envelope.envelope_id) } { (envelope.envelope_id) } }
                            td.subject { (envelope.subject.as_deref().unwrap_or("")) }
                            td { (status_badge(envelope.status)) }
                            td { (when_opt(envelope.completed_at)) }
                            td { (when(envelope.updated_at)) }
                        }
                    }
                }
            }
            nav.pager {
                @if offset > 0 {
                    a href={ "/admin/envelopes?" (filter) "offset=" (offset.saturating_sub(u64::from(size))) } { "← newer" }
                }
                @if shown_to < page.total {
                    a href={ "/admin/envelopes?" (filter) "offset=" (shown_to) } { "older →" }
                }
            }
        },
    )
}

pub fn envelope(csrf: &str, detail: &EnvelopeDetail, timeline: &[Entry], notice: Option<&str>) -> Markup {
    let envelope = &detail.envelope;
    layout(
        "Envelope",
        Some(csrf),
        html! {
            @if let Some(notice) = notice { p.notice #notice { (notice) } }
            dl.facts {
                dt { "envelope" } dd.mono #envelope-id { (envelope.envelope_id) }
                dt { "subject" } dd #subject { (envelope.subject.as_deref().unwrap_or("")) }
                dt { "account" } dd.mono { (envelope.account_id) }
                dt { "status" } dd { (status_badge(envelope.status)) }
                @if let Some(processing) = &detail.processing {
                    dt { "processing" } dd { (processing.job.state) ", " (processing.job.attempts) " attempt(s), last " (last_outcome(processing)) }
                }
            }
            form.inline #reprocess method="post" action={ "/admin/envelopes/" (envelope.envelope_id) "/reprocess" } {
                input type="hidden" name="csrf" value=(csrf);
                button type="submit" title="Process again with the rules and sinks in force now; nothing already sent is sent again" { "Reprocess" }
            }
            h2 { "Timeline" }
            ol.timeline #timeline {
                @for entry in timeline {
                    li class=(entry.tone) {
                        time { (when(entry.at)) } " " (entry.what)
                        @if let Some(detail) = &entry.detail { pre { (detail) } }
                    }
                }
            }
            h2 { "Documents" }
            table #documents {
                thead { tr { th { "document" } th { "name" } th { "bytes" } th { "sha-256" } } }
                tbody {
                    @for d in &detail.documents {
                        tr { td { (d.document_id) } td { (d.name) } td { (d.size_bytes) } td.mono { (d.sha256) } }
                    }
                }
            }
            h2 { "Events and deliveries" }
            table #deliveries {
                thead { tr { th { "event" } th { "type" } th { "sink" } th { "state" } th { "attempts" } th { "last error" } } }
                tbody {
                    @for event in &detail.events {
                        @for d in &event.deliveries {
                            tr {
                                td.mono { (event.event.id) } td { (event.event.event_type) } td { (d.delivery.sink) }
                                td { (d.delivery.state) } td { (d.delivery.attempts) }
                                td { (d.delivery.last_error.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn replay_button(csrf: &str, job: &str) -> Markup {
    html! {
        form.inline method="post" action="/admin/dead-letters/replay" {
            input type="hidden" name="csrf" value=(csrf);
            input type="hidden" name="job" value=(job);
            button type="submit" { "Replay" }
        }
    }
}

pub fn dead_letters(csrf: &str, dead: &DeadLetters, notice: Option<&str>) -> Markup {
    layout(
        "Dead letters",
        Some(csrf),
        html! {
            @if let Some(notice) = notice { p.notice #notice { (notice) } }
            @for sink in &dead.disabled_sinks {
                p.error { "Sink " (sink.sink) " is disabled since " (when(sink.disabled_at)) ": " (sink.reason) }
            }
            h2 { "Deliveries" }
            @if dead.deliveries.is_empty() { p { "No dead deliveries." } } @else {
                table #dead-deliveries {
                    thead { tr { th { "event" } th { "envelope" } th { "type" } th { "sink" } th { "attempts" } th { "failed" } th { "last error" } th {} } }
                    tbody {
                        @for d in &dead.deliveries {
                            tr {
                                td.mono { (d.event_id) }
                                td.mono {
                                    @if let Some(envelope) = d.envelope_id {
                                        a href={ "/admin/envelopes/" (envelope) } { (envelope) }
                                    } @else { "(no envelope)" }
                                }
                                td { (d.event_type) } td { (d.sink) } td { (d.attempts) } td { (when_opt(d.failed_at)) }
                                td { (d.last_error.as_deref().unwrap_or("")) }
                                td { (replay_button(csrf, &d.job_id.to_string())) }
                            }
                        }
                    }
                }
            }
            h2 { "Other jobs" }
            @if dead.jobs.is_empty() { p { "No other dead jobs." } } @else {
                table #dead-jobs {
                    thead { tr { th { "job" } th { "kind" } th { "attempts" } th { "failed" } th { "last error" } th {} } }
                    tbody {
                        @for job in &dead.jobs {
                            tr {
                                td.mono { (job.id) } td { (job.kind) } td { (job.attempts) } td { (when_opt(job.finished_at)) }
                                td { (job.last_error.as_deref().unwrap_or("")) }
                                td { (replay_button(csrf, &job.id.to_string())) }
                            }
                        }
                    }
                }
            }
        },
    )
}
