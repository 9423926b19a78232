//! DocuSign's API limits, read from every answer. The hourly limit is per
//! account and shared by every application on it; the burst limit counts a
//! 30-second window. When either runs low, or DocuSign says it is exceeded
//! (429, or a 400 whose errorCode ends in `_LIMIT_EXCEEDED`), calls for that
//! account pause until the window resets: jobs are put back, not failed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::ids::AccountId;

/// What a response said about the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go on.
    Clear,
    /// This call was refused for the limits; calls wait until then.
    Exceeded { until: DateTime<Utc> },
    /// Only this envelope is over its own polling limit (service protection).
    EnvelopeExceeded { until: DateTime<Utc> },
}

#[derive(Debug)]
pub struct RateLimits {
    paused: Mutex<HashMap<AccountId, DateTime<Utc>>>,
    hourly_reserve: u32,
    burst_reserve: u32,
    burst_window: Duration,
}

fn header_number(headers: &HeaderMap, name: &str) -> Option<i64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

impl RateLimits {
    pub fn new(hourly_reserve: u32, burst_reserve: u32, burst_window: Duration) -> Self {
        Self { paused: Mutex::new(HashMap::new()), hourly_reserve, burst_reserve, burst_window }
    }

    /// When calls for `account` may go on, if they are paused now.
    pub fn paused_until(&self, account: AccountId) -> Option<DateTime<Utc>> {
        let paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        paused.get(&account).copied().filter(|until| *until > Utc::now())
    }

    fn pause(&self, account: AccountId, until: DateTime<Utc>, why: &str) {
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        let entry = paused.entry(account).or_insert(until);
        if *entry < until {
            *entry = until;
        }
        if *entry == until {
            tracing::warn!(%account, until = %until, why, "DocuSign calls for this account paused");
        }
    }

    fn burst_end(&self) -> DateTime<Utc> {
        Utc::now() + chrono::Duration::from_std(self.burst_window).unwrap_or(chrono::Duration::seconds(30))
    }

    /// Reads the limit headers (and, for an error, DocuSign's errorCode) of one answer.
    pub fn observe(
        &self,
        account: AccountId,
        status: StatusCode,
        headers: &HeaderMap,
        error_code: Option<&str>,
    ) -> Verdict {
        let reset = header_number(headers, "x-ratelimit-reset")
            .and_then(|epoch| DateTime::from_timestamp(epoch, 0))
            .filter(|reset| *reset > Utc::now());
        let hourly_left = header_number(headers, "x-ratelimit-remaining");
        let burst_left = header_number(headers, "x-burstlimit-remaining");
        for (window, left) in [("hourly", hourly_left), ("burst", burst_left)] {
            if let Some(left) = left {
                let labels = [("account", account.to_string()), ("window", window.to_string())];
                metrics::gauge!("countersign_docusign_rate_limit_remaining", &labels).set(left as f64);
            }
        }
        let code = error_code.unwrap_or("").to_ascii_uppercase();
        let limit_error = status == StatusCode::TOO_MANY_REQUESTS
            || (status == StatusCode::BAD_REQUEST && code.ends_with("_LIMIT_EXCEEDED"));
        if limit_error {
            let hourly = code.contains("HOURLY") || hourly_left == Some(0);
            let until = if hourly { reset.unwrap_or_else(|| self.burst_end()) } else { self.burst_end() };
            // Service protection counts one envelope's calls: only that envelope waits.
            if code.contains("ENVELOPE") {
                return Verdict::EnvelopeExceeded { until };
            }
            self.pause(account, until, if hourly { "hourly limit exceeded" } else { "burst limit exceeded" });
            return Verdict::Exceeded { until };
        }
        if let (Some(left), Some(reset)) = (hourly_left, reset)
            && left <= i64::from(self.hourly_reserve)
        {
            self.pause(account, reset, "hourly calls nearly used up");
        } else if burst_left.is_some_and(|left| left <= i64::from(self.burst_reserve)) {
            self.pause(account, self.burst_end(), "burst calls nearly used up");
        }
        Verdict::Clear
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, String)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn account() -> AccountId {
        AccountId::parse("f2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap()
    }

    #[test]
    fn an_hourly_429_pauses_the_account_until_the_reset() {
        let limits = RateLimits::new(0, 0, Duration::from_secs(30));
        let reset = Utc::now().timestamp() + 1800;
        let h = headers(&[("x-ratelimit-remaining", "0".into()), ("x-ratelimit-reset", reset.to_string())]);
        let verdict =
            limits.observe(account(), StatusCode::TOO_MANY_REQUESTS, &h, Some("HOURLY_APIINVOCATION_LIMIT_EXCEEDED"));
        let until = DateTime::from_timestamp(reset, 0).unwrap();
        assert_eq!(verdict, Verdict::Exceeded { until });
        assert_eq!(limits.paused_until(account()), Some(until));
    }

    #[test]
    fn a_burst_refusal_pauses_for_one_window_and_an_envelope_limit_only_the_envelope() {
        let limits = RateLimits::new(0, 0, Duration::from_secs(30));
        let h = headers(&[("x-ratelimit-remaining", "2000".into())]);
        let verdict =
            limits.observe(account(), StatusCode::BAD_REQUEST, &h, Some("Burst_Envelope_Polling_Limit_Exceeded"));
        assert!(matches!(verdict, Verdict::EnvelopeExceeded { .. }));
        assert_eq!(limits.paused_until(account()), None, "other envelopes go on");
        let verdict =
            limits.observe(account(), StatusCode::TOO_MANY_REQUESTS, &h, Some("BURST_APIINVOCATION_LIMIT_EXCEEDED"));
        let Verdict::Exceeded { until } = verdict else { panic!("{verdict:?}") };
        let wait = (until - Utc::now()).num_seconds();
        assert!((28..=30).contains(&wait), "{wait}");
    }

    #[test]
    fn running_low_pauses_before_docusign_refuses() {
        let limits = RateLimits::new(50, 5, Duration::from_secs(30));
        let reset = Utc::now().timestamp() + 600;
        let h = headers(&[
            ("x-ratelimit-remaining", "40".into()),
            ("x-ratelimit-reset", reset.to_string()),
            ("x-burstlimit-remaining", "100".into()),
        ]);
        assert_eq!(limits.observe(account(), StatusCode::OK, &h, None), Verdict::Clear);
        assert_eq!(limits.paused_until(account()), DateTime::from_timestamp(reset, 0));

        let other = AccountId::parse("a2a3b4c5-d6e7-4f80-9a1b-2c3d4e5f6a7b").unwrap();
        let h = headers(&[("x-ratelimit-remaining", "2900".into()), ("x-burstlimit-remaining", "9".into())]);
        limits.observe(other, StatusCode::OK, &h, None);
        assert_eq!(limits.paused_until(other), None, "9 burst calls left is above the reserve of 5");
        let h = headers(&[("x-ratelimit-remaining", "2899".into()), ("x-burstlimit-remaining", "5".into())]);
        limits.observe(other, StatusCode::OK, &h, None);
        assert!(limits.paused_until(other).is_some());
    }
}
