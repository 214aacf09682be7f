//! Turns `gatewayAddress` into IP addresses. Hostnames are resolved with hickory-resolver and
//! re-resolved when their TTL runs out (and at least every [`MAX_REFRESH`]).

use crate::plan::GatewayAddr;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// The longest an answer is trusted, whatever its TTL says.
pub const MAX_REFRESH: Duration = Duration::from_secs(30);
/// The shortest time between resolutions.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

pub type Resolver = hickory_resolver::Resolver<TokioRuntimeProvider>;

/// Why a resolver could not be built or a name not resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("building the DNS resolver")]
    Build(#[source] hickory_resolver::net::NetError),
    #[error("resolving {host}")]
    Lookup {
        host: String,
        #[source]
        source: hickory_resolver::net::NetError,
    },
}

/// A resolver using the system configuration, or only `nameserver` when given (tests use a
/// responder on loopback).
pub fn resolver(nameserver: Option<SocketAddr>) -> Result<Resolver, ResolveError> {
    let provider = TokioRuntimeProvider::default();
    let builder = match nameserver {
        None => Resolver::builder(provider).map_err(ResolveError::Build)?,
        Some(ns) => {
            let mut udp = ConnectionConfig::udp();
            udp.port = ns.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = ns.port();
            let cfg = ResolverConfig::from_name_servers(vec![NameServerConfig::new(
                ns.ip(),
                true,
                vec![udp, tcp],
            )]);
            Resolver::builder_with_config(cfg, provider)
        }
    };
    builder.build().map_err(ResolveError::Build)
}

/// Resolves every address; returns the sorted, deduplicated IPs and when to resolve again.
/// A name that fails to resolve is reported and skipped; the others still count.
pub async fn resolve_all(
    resolver: &Resolver,
    addrs: &[GatewayAddr],
) -> (Vec<IpAddr>, Instant, Vec<ResolveError>) {
    let mut ips = Vec::new();
    let mut errors = Vec::new();
    let now = Instant::now();
    let mut next = now + MAX_REFRESH;
    for a in addrs {
        match a {
            GatewayAddr::Ip(ip) => ips.push(*ip),
            GatewayAddr::Host(host) => {
                let fqdn = format!("{host}.");
                match resolver.lookup_ip(fqdn.as_str()).await {
                    Ok(lookup) => {
                        ips.extend(lookup.iter());
                        next = next.min(lookup.valid_until().max(now + MIN_REFRESH));
                    }
                    Err(source) => {
                        next = next.min(now + MIN_REFRESH * 5);
                        errors.push(ResolveError::Lookup {
                            host: host.clone(),
                            source,
                        });
                    }
                }
            }
        }
    }
    ips.sort();
    ips.dedup();
    (ips, next, errors)
}
