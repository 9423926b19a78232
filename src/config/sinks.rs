//! `[[sinks]]`: where events go, one table per sink.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkKind {
    Webhook,
    Nats,
    Amqp,
    Sqs,
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSettings {
    pub name: String,
    pub kind: SinkKind,
    /// May carry credentials (`amqp://user:password@host`): printed redacted.
    /// sqs: the queue URL, `https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`.
    pub url: String,
    /// webhook: the signing secret (`whsec_...`); nats: an auth token;
    /// amqp: the password, replacing any in `url`; sqs: the secret access
    /// key that goes with `access_key_id`.
    #[serde(default)]
    pub secret: Option<Secret>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// webhook: more signing secrets, used together with `secret` while a
    /// secret is rotated (every request carries one signature per secret).
    #[serde(default)]
    pub secrets: Vec<Secret>,
    /// The bearer token this sink's consumers fetch documents with.
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Overrides `delivery.timeout` for this sink.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Deliveries to this sink running at once in this process; the rest
    /// wait, so a slow sink cannot take every worker. Default: half of `queue.workers`.
    #[serde(default)]
    pub max_in_flight: Option<usize>,
    /// nats: subjects are `{subject_prefix}.{event type}` (just the type without it).
    #[serde(default)]
    pub subject_prefix: Option<String>,
    /// amqp: the topic exchange published to (declared durable); the routing key is the event type.
    #[serde(default)]
    pub exchange: Option<String>,
    /// sqs: the access key id of static credentials, with `secret`; without
    /// it the usual AWS chain (environment, web identity, container, instance).
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// sqs: the region requests are signed for. Default: the region in the
    /// queue URL's host (`sqs.REGION.amazonaws.com`), else `AWS_REGION` /
    /// `AWS_DEFAULT_REGION`, else `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
}

impl std::fmt::Debug for SinkSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkSettings")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &crate::store::redact_url(&self.url))
            .field("secrets", &self.signing_secrets().len())
            .field("token", &self.token)
            .field("timeout", &self.timeout)
            .field("max_in_flight", &self.max_in_flight)
            .field("subject_prefix", &self.subject_prefix)
            .field("exchange", &self.exchange)
            .field("access_key_id", &self.access_key_id.as_ref().map(|_| "[redacted]"))
            .field("region", &self.region)
            .finish()
    }
}

/// An `sqs` sink's `url`, parsed: checked at load time, then used by the
/// sink, so neither side parses the other's strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqsQueue {
    /// Where requests go: the URL's scheme, host and port, and `/`.
    pub endpoint: String,
    pub account: String,
    pub name: String,
    /// The region named in an AWS host (`sqs.REGION.amazonaws.com`).
    pub region: Option<String>,
}

impl SqsQueue {
    /// FIFO queues are the ones whose name ends in `.fifo` (SQS's own rule).
    pub fn fifo(&self) -> bool {
        self.name.ends_with(".fifo")
    }
}

impl SinkSettings {
    /// AWS region names: `us-east-1`, `eu-central-2`, `us-gov-west-1`.
    pub fn is_aws_region(text: &str) -> bool {
        !text.is_empty()
            && text.len() <= 50
            && text.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    }

    /// `url` as a queue URL, `http(s)://HOST/ACCOUNT/NAME`; the error says what is wrong.
    pub fn sqs_queue(&self) -> Result<SqsQueue, String> {
        let url = url::Url::parse(&self.url).map_err(|_| "is not a URL".to_string())?;
        if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
            return Err("an sqs sink needs the queue's http:// or https:// URL".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not carry credentials: use access_key_id and secret".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("must be the queue URL alone, without ?query or #fragment".into());
        }
        let segments: Vec<&str> = url.path().trim_start_matches('/').split('/').collect();
        let [account, name] = segments.as_slice() else {
            return Err(
                "the path must be /ACCOUNT/QUEUE, as in https://sqs.us-east-1.amazonaws.com/123456789012/provisioning"
                    .into(),
            );
        };
        if account.len() != 12 || !account.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!("{account:?} is not an AWS account id (12 digits) in /ACCOUNT/QUEUE"));
        }
        let base = name.strip_suffix(".fifo").unwrap_or(name);
        let name_ok = !base.is_empty()
            && name.len() <= 80
            && base.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(format!(
                "{name:?} is not a queue name: 1 to 80 letters, digits, '-' or '_', ending in .fifo for a FIFO queue"
            ));
        }
        let region = url.host_str().and_then(region_in_host);
        Ok(SqsQueue {
            endpoint: format!("{}/", url.origin().ascii_serialization()),
            account: (*account).to_string(),
            name: (*name).to_string(),
            region,
        })
    }
}

/// The region in an SQS host: `sqs.REGION.amazonaws.com` (and `.com.cn`),
/// `sqs-fips.REGION…`, a VPC endpoint `vpce-ID.sqs.REGION.vpce.amazonaws.com`,
/// or the legacy `REGION.queue.amazonaws.com`.
fn region_in_host(host: &str) -> Option<String> {
    let labels: Vec<&str> = host.split('.').collect();
    let aws = labels.iter().position(|label| *label == "amazonaws")?;
    let before = labels.get(..aws)?;
    let region = match before.iter().position(|label| matches!(*label, "sqs" | "sqs-fips")) {
        Some(at) => before.get(at + 1)?,
        None if before.len() == 2 && before.get(1) == Some(&"queue") => before.first()?,
        None => return None,
    };
    SinkSettings::is_aws_region(region).then(|| (*region).to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn sink(url: &str) -> SinkSettings {
        let toml = format!("name = \"q\"\nkind = \"sqs\"\nurl = \"{url}\"\n");
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(&toml)).extract().unwrap()
    }

    #[test]
    fn queue_urls_give_endpoint_region_and_fifo() {
        let queue = sink("https://sqs.eu-central-1.amazonaws.com/123456789012/provisioning.fifo").sqs_queue().unwrap();
        assert_eq!(queue.endpoint, "https://sqs.eu-central-1.amazonaws.com/");
        assert_eq!((queue.account.as_str(), queue.name.as_str()), ("123456789012", "provisioning.fifo"));
        assert_eq!(queue.region.as_deref(), Some("eu-central-1"));
        assert!(queue.fifo());
        let local = sink("http://127.0.0.1:5000/123456789012/events").sqs_queue().unwrap();
        assert_eq!(
            (local.endpoint.as_str(), local.region.as_deref(), local.fifo()),
            ("http://127.0.0.1:5000/", None, false)
        );
        for (host, region) in [
            ("sqs.cn-north-1.amazonaws.com.cn", Some("cn-north-1")),
            ("sqs-fips.us-gov-west-1.amazonaws.com", Some("us-gov-west-1")),
            ("vpce-0a1b-2c3d.sqs.ap-south-1.vpce.amazonaws.com", Some("ap-south-1")),
            ("eu-west-1.queue.amazonaws.com", Some("eu-west-1")),
            ("queue.amazonaws.com", None),
            ("sqs.amazonaws.com", None),
            ("localhost", None),
        ] {
            assert_eq!(region_in_host(host).as_deref(), region, "{host}");
        }
    }

    #[test]
    fn bad_queue_urls_say_what_is_wrong() {
        for (url, says) in [
            ("sqs://x/123456789012/q", "http"),
            ("https://sqs.us-east-1.amazonaws.com/", "/ACCOUNT/QUEUE"),
            ("https://sqs.us-east-1.amazonaws.com/123456789012", "/ACCOUNT/QUEUE"),
            ("https://sqs.us-east-1.amazonaws.com/123456789012/q/x", "/ACCOUNT/QUEUE"),
            ("https://sqs.us-east-1.amazonaws.com/1234/q", "account id"),
            ("https://sqs.us-east-1.amazonaws.com/123456789012/a%20b", "queue name"),
            ("https://sqs.us-east-1.amazonaws.com/123456789012/.fifo", "queue name"),
            ("https://key:pw@sqs.us-east-1.amazonaws.com/123456789012/q", "credentials"),
            ("https://sqs.us-east-1.amazonaws.com/123456789012/q?x=1", "query"),
        ] {
            let error = sink(url).sqs_queue().unwrap_err();
            assert!(error.contains(says), "{url}: {error}");
        }
    }
}
