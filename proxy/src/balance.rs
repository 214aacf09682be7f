//! Request-level load balancing: power of two choices over peak-EWMA latency, one pooled
//! client per endpoint, the endpoint set fed from discovery.
//!
//! ```text
//!  watch<Resolution> ─diff─► Change::{Insert, Remove} ─► PeakEwmaDiscover ─► p2c Balance
//!                                                                 └─ EndpointSvc (hyper pool)
//! ```
//!
//! A removed endpoint leaves the balancer at the next readiness poll; requests already sent
//! to it finish on their own.

use crate::addr::EndpointAddr;
use crate::connect::{Connector, Endpoint};
use crate::discover::{EndpointMeta, Resolution};
use crate::http_client::{BoxError, EndpointClient};
use futures::channel::mpsc;
use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response, Version};
use hyper::body::Incoming;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use strait_core::identity::Identity;
use strait_core::transport_header::TransportHeader;
use tokio::sync::watch;
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover};
use tower::{Service, ServiceExt};

/// The header that carries an HTTP/1 request's protocol across an HTTP/2 hop between proxies.
pub const L5D_ORIG_PROTO: &str = "l5d-orig-proto";

/// Set on responses: which identity the endpoint proved (for metrics labels).
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub id: Option<Identity>,
}

/// How to reach `addr` for HTTP: mTLS when it has an identity, a transport header when a
/// gateway fronts it (the session protocol is filled in per client).
pub fn http_endpoint(addr: EndpointAddr, meta: &EndpointMeta) -> Endpoint {
    let transport_header = match (&meta.authority_override, &meta.identity) {
        (Some((host, port)), Some(_)) => Some(TransportHeader {
            port: *port,
            name: Some(host.clone()),
            protocol: None,
        }),
        _ => None,
    };
    Endpoint {
        addr,
        identity: meta.identity.clone(),
        transport_header,
    }
}

/// One endpoint as a service: upgrades HTTP/1 to HTTP/2 between meshed proxies.
#[derive(Clone, Debug)]
pub struct EndpointSvc {
    meta: Arc<EndpointMeta>,
    client: EndpointClient,
}

impl EndpointSvc {
    pub fn new(connector: &Connector, addr: EndpointAddr, meta: EndpointMeta) -> Self {
        let client = EndpointClient::new(connector, &http_endpoint(addr, &meta));
        Self {
            meta: Arc::new(meta),
            client,
        }
    }
}

impl Service<Request<Incoming>> for EndpointSvc {
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Incoming>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<Incoming>) -> Self::Future {
        let was_h2 = req.version() == Version::HTTP_2;
        let upgrade = !was_h2 && self.meta.h2 && self.meta.identity.is_some();
        if upgrade {
            req.headers_mut()
                .insert(L5D_ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
        }
        let fut = self.client.send(req, was_h2 || upgrade);
        let id = self.meta.identity.clone();
        Box::pin(async move {
            let mut rsp = fut.await?;
            if upgrade {
                rsp.headers_mut().remove(L5D_ORIG_PROTO);
                *rsp.version_mut() = Version::HTTP_11;
            }
            rsp.extensions_mut().insert(ServerInfo { id });
            Ok(rsp)
        })
    }
}

type Disco = PeakEwmaDiscover<
    mpsc::UnboundedReceiver<Result<Change<EndpointAddr, EndpointSvc>, BoxError>>,
    CompleteOnResponse,
>;

/// No endpoint became ready in time.
#[derive(Debug, thiserror::Error)]
#[error("no endpoint ready within {0:?}")]
pub struct Unavailable(pub Duration);

/// The balancer of one target, shared by every connection to it.
pub struct Balancer {
    inner: tokio::sync::Mutex<Balance<Disco, Request<Incoming>>>,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer").finish_non_exhaustive()
    }
}

impl Balancer {
    fn spawn(mut rx: watch::Receiver<Resolution>, connector: &Connector) -> Self {
        let (tx, changes) = mpsc::unbounded();
        let connector = connector.clone();
        tokio::spawn(async move {
            let mut known: BTreeMap<EndpointAddr, EndpointMeta> = BTreeMap::new();
            loop {
                let current = match &*rx.borrow_and_update() {
                    Resolution::Endpoints(set) => set.endpoints.clone(),
                    _ => BTreeMap::new(),
                };
                for addr in known.keys().filter(|a| !current.contains_key(a)) {
                    tracing::debug!(endpoint = %addr, "endpoint removed from balancer");
                    if tx.unbounded_send(Ok(Change::Remove(*addr))).is_err() {
                        return;
                    }
                }
                for (addr, meta) in &current {
                    if known.get(addr) != Some(meta) {
                        let svc = EndpointSvc::new(&connector, *addr, meta.clone());
                        if tx.unbounded_send(Ok(Change::Insert(*addr, svc))).is_err() {
                            return;
                        }
                    }
                }
                known = current;
                if rx.changed().await.is_err() || tx.is_closed() {
                    return;
                }
            }
        });
        let disco = PeakEwmaDiscover::new::<Request<Incoming>>(
            changes,
            Duration::from_millis(30),
            Duration::from_secs(10),
            CompleteOnResponse::default(),
        );
        Self {
            inner: tokio::sync::Mutex::new(Balance::new(disco)),
        }
    }

    /// Picks an endpoint (waiting at most `ready_timeout`) and sends `req` to it.
    pub async fn call(
        &self,
        req: Request<Incoming>,
        ready_timeout: Duration,
    ) -> Result<Response<Incoming>, BoxError> {
        let fut = {
            let mut b = self.inner.lock().await;
            match tokio::time::timeout(ready_timeout, b.ready()).await {
                Err(_) => return Err(Unavailable(ready_timeout).into()),
                Ok(Err(e)) => return Err(e),
                Ok(Ok(svc)) => svc.call(req),
            }
        };
        fut.await
    }
}

/// Balancers by target.
#[derive(Clone, Debug, Default)]
pub struct Balancers(Arc<Mutex<HashMap<String, Arc<Balancer>>>>);

impl Balancers {
    /// The balancer of `target`, started on first use with endpoints from `rx`, each reached
    /// through `connector`.
    pub fn get(
        &self,
        target: &str,
        rx: &watch::Receiver<Resolution>,
        connector: &Connector,
    ) -> Arc<Balancer> {
        let Ok(mut map) = self.0.lock() else {
            return Arc::new(Balancer::spawn(rx.clone(), connector));
        };
        if let Some(b) = map.get(target) {
            return b.clone();
        }
        map.entry(target.to_owned())
            .or_insert_with(|| Arc::new(Balancer::spawn(rx.clone(), connector)))
            .clone()
    }
}
