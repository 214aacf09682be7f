//! Discovery: the destination service's endpoint sets, one watch per target.
//!
//! ```text
//!  Resolver::resolve("10.0.0.1:80") ─► cached watch::Receiver<Resolution>
//!     task: Get(path) ──stream──► Add / Remove / NoEndpoints ─► Endpoints(set)
//!           NotFound | InvalidArgument ─────────────────────► Fallback(NotDiscoverable)
//!           unreachable / stream broken ─► Fallback(Unreachable) if nothing was ever known,
//!                                          else keep the last set; retry with backoff
//!                                          (0.5 s … 10 s)
//! ```
//!
//! A new stream replaces the set only once it has said something, so a reconnect never
//! empties a healthy set. A "not discoverable" answer ends its watch; it is reused for
//! [`NOT_DISCOVERABLE_TTL`], then asked again (the Service may have been created since).
//!
//! The proxy falls back to the original address on any [`Fallback`]; the gateway, which has
//! no original address, refuses and reports the reason.

use crate::addr::EndpointAddr;
use crate::metrics::DstLabels;
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strait_core::identity::Identity;
use tokio::sync::watch;
use tonic::transport::Channel;

/// Targets whose watches are cached; beyond this, lookups are made per connection.
const MAX_CACHED: usize = 10_000;
/// How long a "not discoverable" answer is reused before the target is asked again.
pub const NOT_DISCOVERABLE_TTL: Duration = Duration::from_secs(5);

/// What the proxy knows about a target.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// No answer yet.
    Pending,
    /// Not discoverable (or discovery unreachable): use the original address.
    Fallback(Fallback),
    Endpoints(Arc<EndpointSet>),
}

/// Why there are no endpoints to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// No destination service is configured.
    NoDiscovery,
    /// The destination service says the target is not a Service (NotFound, InvalidArgument).
    NotDiscoverable,
    /// The destination service could not be reached, or did not answer in time.
    Unreachable,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EndpointSet {
    pub endpoints: BTreeMap<EndpointAddr, EndpointMeta>,
    pub dst: DstLabels,
}

/// How to reach one endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointMeta {
    pub identity: Option<Identity>,
    /// Meshed: HTTP/1 may be upgraded to HTTP/2.
    pub h2: bool,
    /// Connect to this port instead and name the original port in a transport header.
    pub opaque_transport: Option<u16>,
    /// A gateway in front: name this `host:port` in a transport header.
    pub authority_override: Option<(String, u16)>,
}

/// Translates one address of an update (no I/O); `None` for a malformed one, including
/// one whose TLS identity is not an identity name (never reached in plaintext instead).
pub fn endpoint(wa: &pb::WeightedAddr) -> Option<(EndpointAddr, EndpointMeta)> {
    let addr = SocketAddr::try_from(wa.addr?).ok()?;
    let identity = match wa.tls_identity.as_ref() {
        None => None,
        Some(t) => {
            let name = match &t.strategy {
                Some(pb::tls_identity::Strategy::DnsLikeIdentity(d)) => Some(d.name.as_str()),
                _ => t.server_name.as_ref().map(|d| d.name.as_str()),
            };
            match name {
                None => None,
                Some(n) => Some(n.parse::<Identity>().ok()?),
            }
        }
    };
    let hint = wa.protocol_hint.as_ref();
    let h2 = matches!(
        hint.and_then(|h| h.protocol.as_ref()),
        Some(pb::protocol_hint::Protocol::H2(_))
    );
    let opaque_transport = hint
        .and_then(|h| h.opaque_transport.as_ref())
        .and_then(|o| u16::try_from(o.inbound_port).ok())
        .filter(|p| *p != 0);
    let authority_override = wa.authority_override.as_ref().and_then(|a| {
        let (host, port) = a.authority_override.rsplit_once(':')?;
        Some((host.to_owned(), port.parse().ok()?))
    });
    Some((
        EndpointAddr(addr),
        EndpointMeta {
            identity,
            h2,
            opaque_transport,
            authority_override,
        },
    ))
}

fn dst_labels(l: &HashMap<String, String>) -> DstLabels {
    DstLabels {
        namespace: l.get("namespace").cloned().unwrap_or_default(),
        service: l.get("service").cloned().unwrap_or_default(),
    }
}

/// Applies one update to a set (no I/O).
pub fn apply(set: &mut EndpointSet, update: pb::update::Update) {
    use pb::update::Update as U;
    match update {
        U::Add(add) => {
            if !add.metric_labels.is_empty() {
                set.dst = dst_labels(&add.metric_labels);
            }
            set.endpoints.extend(add.addrs.iter().filter_map(endpoint));
        }
        U::Remove(rm) => {
            for a in rm.addrs {
                if let Ok(a) = SocketAddr::try_from(a) {
                    set.endpoints.remove(&EndpointAddr(a));
                }
            }
        }
        U::NoEndpoints(_) => set.endpoints.clear(),
    }
}

/// Looks targets up and keeps their answers current; cheap to clone.
#[derive(Clone, Debug)]
pub struct Resolver {
    source: Source,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
}

#[derive(Clone, Debug)]
enum Source {
    None,
    Destination(DestinationClient<Channel>),
    Fixed(Resolution),
}

#[derive(Debug)]
struct Cached {
    rx: watch::Receiver<Resolution>,
    since: tokio::time::Instant,
}

#[derive(Debug, thiserror::Error)]
#[error("destination address {addr:?}")]
pub struct ResolverError {
    addr: String,
    #[source]
    source: strait_identity_client::ChannelError,
}

impl Resolver {
    /// A resolver for the destination service at `addr` (`host:port`); `None` = no discovery.
    /// With `tls` (the identity destination must present, and the client configuration that
    /// presents this proxy's certificate) the channel is mTLS; without, plaintext (loopback).
    pub fn new(
        addr: Option<&str>,
        tls: Option<(Identity, Arc<strait_tls::rustls::ClientConfig>)>,
    ) -> Result<Self, ResolverError> {
        let Some(a) = addr else {
            return Ok(Self::with_source(Source::None));
        };
        let target = match tls {
            Some((server, config)) => strait_identity_client::Target::Tls {
                addr: a.to_owned(),
                server,
                config,
            },
            None => strait_identity_client::Target::Plain { addr: a.to_owned() },
        };
        let channel =
            strait_identity_client::channel(target, Duration::from_secs(2)).map_err(|source| {
                ResolverError {
                    addr: a.to_owned(),
                    source,
                }
            })?;
        Ok(Self::with_channel(channel))
    }

    /// A resolver over an existing channel to the destination service.
    pub fn with_channel(channel: Channel) -> Self {
        Self::with_source(Source::Destination(DestinationClient::new(channel)))
    }

    /// A resolver that answers every target with `answer`, without a destination service
    /// (tests and benchmarks that keep discovery out of the picture).
    pub fn fixed(answer: Resolution) -> Self {
        Self::with_source(Source::Fixed(answer))
    }

    fn with_source(source: Source) -> Self {
        Self {
            source,
            cache: Arc::default(),
        }
    }

    /// The answer for `target` (`ip:port` or `name:port`), kept current in the background.
    pub fn resolve(&self, target: &str) -> watch::Receiver<Resolution> {
        let client = match &self.source {
            Source::None => return watch::channel(Resolution::Fallback(Fallback::NoDiscovery)).1,
            Source::Fixed(answer) => return watch::channel(answer.clone()).1,
            Source::Destination(client) => client.clone(),
        };
        let Ok(mut cache) = self.cache.lock() else {
            return watch::channel(Resolution::Fallback(Fallback::Unreachable)).1;
        };
        if let Some(c) = cache.get(target) {
            // A closed sender means the watch ended on a final answer: reuse it for a while.
            let ended = c.rx.has_changed().is_err();
            if !ended || c.since.elapsed() < NOT_DISCOVERABLE_TTL {
                return c.rx.clone();
            }
            cache.remove(target);
        }
        let (tx, rx) = watch::channel(Resolution::Pending);
        tokio::spawn(watch_target(client, target.to_owned(), tx));
        if cache.len() < MAX_CACHED {
            let since = tokio::time::Instant::now();
            let rx = rx.clone();
            cache.insert(target.to_owned(), Cached { rx, since });
        }
        rx
    }
}

/// Waits up to `timeout` for a first answer; Pending after that reads as
/// `Fallback(Unreachable)`.
pub async fn first_answer(rx: &mut watch::Receiver<Resolution>, timeout: Duration) -> Resolution {
    let r = tokio::time::timeout(timeout, rx.wait_for(|r| *r != Resolution::Pending)).await;
    match r {
        Ok(Ok(r)) => r.clone(),
        _ => Resolution::Fallback(Fallback::Unreachable),
    }
}

async fn watch_target(
    mut client: DestinationClient<Channel>,
    path: String,
    tx: watch::Sender<Resolution>,
) {
    let mut backoff = Duration::from_millis(500);
    loop {
        if tx.is_closed() {
            return;
        }
        let req = pb::GetDestination {
            scheme: "k8s".into(),
            path: path.clone(),
            context_token: String::new(),
        };
        match client.get(req).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                let mut set = EndpointSet::default();
                loop {
                    match stream.message().await {
                        Ok(Some(pb::Update {
                            update: Some(update),
                        })) => {
                            backoff = Duration::from_millis(500);
                            apply(&mut set, update);
                            tracing::debug!(%path, endpoints = set.endpoints.len(), "discovered");
                            tx.send_replace(Resolution::Endpoints(Arc::new(set.clone())));
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            tracing::debug!(%path, "destination stream ended");
                            break;
                        }
                        Err(status) => {
                            if not_discoverable(&status) {
                                tx.send_replace(Resolution::Fallback(Fallback::NotDiscoverable));
                                return;
                            }
                            tracing::info!(%path, %status, "destination stream failed");
                            break;
                        }
                    }
                }
            }
            Err(status) if not_discoverable(&status) => {
                tracing::debug!(%path, code = ?status.code(), "not discoverable: original address");
                tx.send_replace(Resolution::Fallback(Fallback::NotDiscoverable));
                return;
            }
            Err(status) => {
                tracing::info!(%path, %status, "destination unreachable; using the original address meanwhile");
                tx.send_if_modified(|r| {
                    let was_pending = *r == Resolution::Pending;
                    if was_pending {
                        *r = Resolution::Fallback(Fallback::Unreachable);
                    }
                    was_pending
                });
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

fn not_discoverable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::NotFound | tonic::Code::InvalidArgument
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn wa(addr: &str, id: Option<&str>, h2: bool) -> pb::WeightedAddr {
        pb::WeightedAddr {
            addr: Some(addr.parse::<SocketAddr>().unwrap().into()),
            weight: 1,
            tls_identity: id.map(|n| pb::TlsIdentity {
                strategy: Some(pb::tls_identity::Strategy::DnsLikeIdentity(
                    pb::tls_identity::DnsLikeIdentity { name: n.into() },
                )),
                server_name: None,
            }),
            protocol_hint: h2.then_some(pb::ProtocolHint {
                protocol: Some(pb::protocol_hint::Protocol::H2(pb::protocol_hint::H2 {})),
                opaque_transport: None,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn updates_build_the_set() {
        use pb::update::Update as U;
        let id = "web.shop.serviceaccount.identity.strait.cluster.local";
        let mut set = EndpointSet::default();
        let mut labels = HashMap::new();
        labels.insert("namespace".to_owned(), "shop".to_owned());
        labels.insert("service".to_owned(), "web".to_owned());
        apply(
            &mut set,
            U::Add(pb::WeightedAddrSet {
                addrs: vec![
                    wa("10.0.0.1:8080", Some(id), true),
                    wa("10.0.0.2:8080", None, false),
                ],
                metric_labels: labels,
            }),
        );
        assert_eq!(set.endpoints.len(), 2);
        assert_eq!(set.dst.service, "web");
        let a1 = EndpointAddr("10.0.0.1:8080".parse().unwrap());
        assert!(set.endpoints[&a1].h2);
        assert_eq!(
            set.endpoints[&a1].identity.as_ref().unwrap().to_string(),
            id
        );
        apply(
            &mut set,
            U::Remove(pb::AddrSet {
                addrs: vec!["10.0.0.1:8080".parse::<SocketAddr>().unwrap().into()],
            }),
        );
        assert_eq!(set.endpoints.len(), 1);
        apply(&mut set, U::NoEndpoints(pb::NoEndpoints { exists: true }));
        assert!(set.endpoints.is_empty());
    }

    #[test]
    fn authority_override_and_opaque_transport() {
        let mut w = wa(
            "10.0.0.9:4143",
            Some("strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local"),
            true,
        );
        w.authority_override = Some(pb::AuthorityOverride {
            authority_override: "web.shop.svc.cluster.local:80".into(),
        });
        let (_, m) = endpoint(&w).unwrap();
        assert_eq!(
            m.authority_override,
            Some(("web.shop.svc.cluster.local".into(), 80))
        );
        let mut w = wa("10.0.0.3:3306", None, false);
        w.protocol_hint = Some(pb::ProtocolHint {
            protocol: None,
            opaque_transport: Some(pb::protocol_hint::OpaqueTransport { inbound_port: 4143 }),
        });
        assert_eq!(endpoint(&w).unwrap().1.opaque_transport, Some(4143));
    }

    #[test]
    fn an_endpoint_with_a_malformed_identity_is_dropped_not_plaintext() {
        assert!(endpoint(&wa("10.0.0.1:80", Some("not an identity"), false)).is_none());
        assert!(
            endpoint(&wa("10.0.0.1:80", None, false))
                .unwrap()
                .1
                .identity
                .is_none()
        );
    }

    #[tokio::test]
    async fn fixed_and_absent_discovery_answer_at_once() {
        let none = Resolver::new(None, None).unwrap();
        let mut rx = none.resolve("10.0.0.1:80");
        assert_eq!(
            first_answer(&mut rx, Duration::from_secs(1)).await,
            Resolution::Fallback(Fallback::NoDiscovery)
        );
        let fixed = Resolver::fixed(Resolution::Fallback(Fallback::NotDiscoverable));
        let mut rx = fixed.resolve("web.shop.svc.cluster.local:80");
        assert_eq!(
            first_answer(&mut rx, Duration::from_secs(1)).await,
            Resolution::Fallback(Fallback::NotDiscoverable)
        );
    }
}
