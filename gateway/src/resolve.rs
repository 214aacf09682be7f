//! Resolving a target Service through the local destination service.
//!
//! Each forwarded connection asks `Get <name>:<port>` afresh and takes the first answer
//! (an `Add` or `NoEndpoints`), then drops the stream. That keeps the gateway stateless and
//! always current, at the price of one in-cluster gRPC round trip per connection (the
//! destination server answers from its watch caches). Requests multiplexed on one HTTP/2
//! client connection share the endpoint chosen for that connection.

use crate::error::ResolveError;
use futures::future::BoxFuture;
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use strait_core::identity::Identity;
use tonic::transport::Channel;

/// A Service and port inside this cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    /// `<svc>.<ns>.svc.<cluster-domain>`.
    pub name: String,
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, self.port)
    }
}

/// One endpoint of a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The pod's address and the Service's target port.
    pub addr: SocketAddr,
    /// The pod proxy's identity, when the pod is meshed.
    pub identity: Option<Identity>,
    /// The meshed proxy's inbound port, when the destination service names one.
    pub opaque_transport_port: Option<u16>,
}

/// Resolves targets to endpoints.
pub trait Resolve: Send + Sync + 'static {
    /// The endpoints of `target`; never empty on success.
    fn resolve(&self, target: &Target) -> BoxFuture<'static, Result<Vec<Endpoint>, ResolveError>>;
}

/// Resolution through `io.linkerd.proxy.destination.Destination/Get`.
#[derive(Clone, Debug)]
pub struct DestinationResolver {
    client: DestinationClient<Channel>,
    timeout: Duration,
}

impl DestinationResolver {
    /// A resolver that connects lazily to `addr` (e.g. `http://127.0.0.1:8086`).
    pub fn new(channel: Channel, timeout: Duration) -> Self {
        Self {
            client: DestinationClient::new(channel),
            timeout,
        }
    }
}

impl Resolve for DestinationResolver {
    fn resolve(&self, target: &Target) -> BoxFuture<'static, Result<Vec<Endpoint>, ResolveError>> {
        let mut client = self.client.clone();
        let req = pb::GetDestination {
            scheme: "k8s".into(),
            path: target.to_string(),
            context_token: String::new(),
        };
        let timeout = self.timeout;
        Box::pin(async move {
            let ask = async {
                let mut stream = client.get(req).await.map_err(status)?.into_inner();
                loop {
                    match stream.message().await.map_err(status)? {
                        None => return Err(ResolveError::StreamEnded),
                        Some(u) => match u.update {
                            Some(pb::update::Update::Add(set)) => return endpoints(set),
                            Some(pb::update::Update::NoEndpoints(_)) => {
                                return Err(ResolveError::NoEndpoints);
                            }
                            _ => continue,
                        },
                    }
                }
            };
            tokio::time::timeout(timeout, ask)
                .await
                .map_err(|_| ResolveError::Timeout)?
        })
    }
}

/// NotFound and InvalidArgument mean the name is not a Service here (the client's fault);
/// anything else is the destination service's trouble.
fn status(s: tonic::Status) -> ResolveError {
    match s.code() {
        tonic::Code::NotFound | tonic::Code::InvalidArgument => ResolveError::Unknown(s),
        _ => ResolveError::Status(s),
    }
}

fn endpoints(set: pb::WeightedAddrSet) -> Result<Vec<Endpoint>, ResolveError> {
    let mut out = Vec::with_capacity(set.addrs.len());
    for wa in set.addrs {
        let Some(addr) = wa.addr.and_then(|a| SocketAddr::try_from(a).ok()) else {
            continue;
        };
        let identity = match wa.tls_identity.and_then(|t| t.strategy) {
            Some(pb::tls_identity::Strategy::DnsLikeIdentity(d)) => Some(
                d.name
                    .parse::<Identity>()
                    .map_err(|_| ResolveError::BadIdentity(d.name.clone()))?,
            ),
            _ => None,
        };
        let opaque_transport_port = wa
            .protocol_hint
            .and_then(|h| h.opaque_transport)
            .and_then(|o| u16::try_from(o.inbound_port).ok())
            .filter(|p| *p != 0);
        out.push(Endpoint {
            addr,
            identity,
            opaque_transport_port,
        });
    }
    if out.is_empty() {
        return Err(ResolveError::NoEndpoints);
    }
    Ok(out)
}

/// Picks endpoints round robin.
#[derive(Debug, Default)]
pub struct RoundRobin(AtomicUsize);

impl RoundRobin {
    pub fn pick<'a>(&self, eps: &'a [Endpoint]) -> Option<&'a Endpoint> {
        if eps.is_empty() {
            return None;
        }
        let i = self.0.fetch_add(1, Ordering::Relaxed);
        eps.get(i % eps.len())
    }
}
