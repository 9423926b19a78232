//! `countersign healthcheck`: the container's HEALTHCHECK. Minimal images
//! carry no shell and no curl, so the binary asks the running service itself.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use crate::config::Settings;

use super::ConfigArg;

/// Asks the service listening on the configured `server.listen` for
/// `/healthz` (or `/readyz`); exit 0 on a 200, 1 on anything else. One line
/// says what happened: Docker keeps it in the container's health log.
pub(super) async fn healthcheck(arg: &ConfigArg, ready: bool, timeout: Duration) -> anyhow::Result<ExitCode> {
    let listen = Settings::load_listen(arg.config.as_deref())?;
    let path = if ready { "/readyz" } else { "/healthz" };
    let url = format!("http://{}{path}", reachable(listen));
    // A proxy from the environment (HTTP_PROXY) must not stand between the
    // probe and a service on this host.
    let client = reqwest::Client::builder().no_proxy().timeout(timeout).build()?;
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => {
            println!("healthy: {url} answered {}", response.status());
            Ok(ExitCode::SUCCESS)
        }
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            println!("unhealthy: {url} answered {status}: {}", body.trim());
            Ok(ExitCode::FAILURE)
        }
        Err(error) => {
            println!("unhealthy: {url}: {}", describe(&error));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Where a listener bound to `listen` is reached from this host: a wildcard
/// address (`0.0.0.0`, `::`) is reached on the loopback address of its family.
fn reachable(listen: SocketAddr) -> SocketAddr {
    match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), listen.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), listen.port()),
        _ => listen,
    }
}

fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "no answer in time".into();
    }
    crate::telemetry::error_chain(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback() {
        let reach = |text: &str| reachable(text.parse().unwrap()).to_string();
        assert_eq!(reach("0.0.0.0:8080"), "127.0.0.1:8080");
        assert_eq!(reach("[::]:9000"), "[::1]:9000");
        assert_eq!(reach("10.1.2.3:8080"), "10.1.2.3:8080");
    }
}
