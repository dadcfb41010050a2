//! Where Redis is: the plain URL's host resolved (again and again on a thread of its own while
//! it does not resolve), and the TLS client configuration of `rediss://`.
//!
//! Owns: turning the URL into addresses and a TLS configuration, at start. Does not touch:
//! connections (the reactors' halves make them) or the sentinels' answers (`sentinel`).

use std::net::{SocketAddr, ToSocketAddrs};

use super::state::Shared;
use crate::cluster::resp::Tls;
use crate::config::{Config, RedisUrl};

pub(super) fn resolve(host: &str, port: u16) -> std::io::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("redis host {host:?} has no address")))
}

/// Resolves the plain URL's host every second until it resolves, then hands the address to
/// the reactors (which connect on their next retry). Logged once per change of reason.
pub(super) fn resolve_until_found(shared: &std::sync::Arc<Shared>) {
    let mut last: Option<String> = None;
    loop {
        if std::sync::Arc::strong_count(shared) == 1 {
            // Only this thread still holds the engine: the server is gone.
            return;
        }
        match resolve(&shared.url.host, shared.url.port) {
            Ok(addr) => {
                log::info!("cluster: redis host {:?} resolves to {addr}", shared.url.host);
                *shared.master.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
                return;
            }
            Err(e) => {
                let why = e.to_string();
                if last.as_deref() != Some(why.as_str()) {
                    log::warn!(
                        "cluster: cannot resolve redis host {:?}: {why}; trying again every second",
                        shared.url.host
                    );
                    last = Some(why);
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

/// The TLS client configuration of `rediss://` (read once, at start).
pub(super) fn tls_of(config: &Config, url: &RedisUrl) -> std::io::Result<Tls> {
    let roots = match &config.redis_ca {
        Some(path) => crate::client::Roots::Pem(
            std::fs::read(path).map_err(|e| std::io::Error::other(format!("--redis-ca {}: {e}", path.display())))?,
        ),
        None => crate::client::Roots::System,
    };
    let config =
        crate::client::stream::tls_config(&roots, Vec::new()).map_err(|e| std::io::Error::other(e.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| std::io::Error::other(format!("redis host {:?}: {e}", url.host)))?;
    Ok(Tls { config, name })
}
