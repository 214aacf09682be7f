//! Policy: the control plane's `InboundServerPolicies` (whom each inbound port admits) and
//! `OutboundPolicies` (how to read traffic to a Service), one watch per port and per target.
//!
//! ```text
//!  inbound(8080) ─► cached watch::Receiver<Option<Arc<ServerPolicy>>>
//!     task: WatchPort{workload, 8080} ──stream──► ServerPolicy::from_pb ─► publish
//!           invalid update ─► keep the previous policy (logged)
//!           unreachable / stream broken / NotFound ─► the default policy if nothing was ever
//!                                                     known; retry with backoff (0.5 s … 10 s)
//!  outbound(198.18.0.10:80) ─► cached watch::Receiver<Outbound>
//!     task: Watch{addr} ──stream──► Protocol ─► publish
//!           NotFound ─► NotAService (the original destination; asked again after a TTL)
//!           Unimplemented ─► NotAService, and never asked again (a control plane without it)
//! ```
//!
//! Policy is on when the proxy knows its workload (`STRAIT_PROXY_POLICY_WORKLOAD`, set by the
//! injector from the pod's namespace and name). Without it every port admits everyone under
//! the trust anchor and outbound traffic is detected, as before policy existed.

pub mod enforce;
pub mod inbound;
pub mod outbound;

use crate::discover::NOT_DISCOVERABLE_TTL;
use inbound::ServerPolicy;
use linkerd2_proxy_api::inbound as in_pb;
use linkerd2_proxy_api::inbound::inbound_server_policies_client::InboundServerPoliciesClient;
use linkerd2_proxy_api::outbound as out_pb;
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use outbound::Outbound;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;

/// Outbound targets whose watches are cached; beyond this, lookups are made per connection.
const MAX_CACHED: usize = 10_000;

/// How the proxy reads a port's or a target's traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Detect HTTP/1 or HTTP/2 within the timeout, else TCP.
    Detect(Duration),
    Http1,
    Http2,
    /// Bytes, no detection (also TLS the application terminates itself).
    Opaque,
}

/// The inbound policy of one port: `None` until the first answer.
pub type InboundRx = watch::Receiver<Option<Arc<ServerPolicy>>>;

/// Looks policies up and keeps them current; cheap to clone.
#[derive(Clone, Debug)]
pub struct Policies {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    channel: Channel,
    workload: String,
    /// Applied on a port until the policy service answers for it, or when it cannot.
    default: Arc<ServerPolicy>,
    ports: Mutex<HashMap<u16, InboundRx>>,
    targets: Mutex<HashMap<SocketAddr, (watch::Receiver<Outbound>, tokio::time::Instant)>>,
    /// The policy service does not implement `OutboundPolicies`.
    no_outbound: std::sync::atomic::AtomicBool,
}

impl Policies {
    /// No policy: every port admits everyone, outbound is detected.
    pub fn disabled() -> Self {
        Self { inner: None }
    }

    /// Policies from the service on `channel`, for `workload` (`<namespace>:<pod>`).
    pub fn new(channel: Channel, workload: String, default: ServerPolicy) -> Self {
        Self {
            inner: Some(Arc::new(Inner {
                channel,
                workload,
                default: Arc::new(default),
                ports: Mutex::default(),
                targets: Mutex::default(),
                no_outbound: false.into(),
            })),
        }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The policy of inbound `port`, kept current; `None` when policy is off.
    pub fn inbound(&self, port: u16) -> Option<InboundRx> {
        let inner = self.inner.as_ref()?;
        let mut ports = inner.ports.lock().ok()?;
        let rx = ports.entry(port).or_insert_with(|| {
            let (tx, rx) = watch::channel(None);
            tokio::spawn(watch_port(inner.clone(), port, tx));
            rx
        });
        Some(rx.clone())
    }

    /// The policy of an outbound target, kept current; `NotAService` at once when policy is
    /// off or the policy service has no `OutboundPolicies`.
    pub fn outbound(&self, target: SocketAddr) -> watch::Receiver<Outbound> {
        let off = || watch::channel(Outbound::NotAService).1;
        let Some(inner) = self.inner.as_ref() else {
            return off();
        };
        if inner.no_outbound.load(std::sync::atomic::Ordering::Relaxed) {
            return off();
        }
        let Ok(mut targets) = inner.targets.lock() else {
            return off();
        };
        if let Some((rx, since)) = targets.get(&target) {
            let ended = rx.has_changed().is_err();
            if !ended || since.elapsed() < NOT_DISCOVERABLE_TTL {
                return rx.clone();
            }
            targets.remove(&target);
        }
        let (tx, rx) = watch::channel(Outbound::Pending);
        tokio::spawn(watch_target(inner.clone(), target, tx));
        if targets.len() < MAX_CACHED {
            targets.insert(target, (rx.clone(), tokio::time::Instant::now()));
        }
        rx
    }
}

impl Policies {
    /// The enforcer of inbound `port` for one client, once the port's first policy is known
    /// or `timeout` has passed (the default policy applies until then); `None` when policy
    /// is off.
    pub async fn enforcer(
        &self,
        port: u16,
        client: (
            std::net::IpAddr,
            bool,
            Option<strait_core::identity::Identity>,
        ),
        client_id: String,
        metrics: &crate::metrics::AuthzMetrics,
        timeout: Duration,
    ) -> Option<enforce::Enforcer> {
        let default = self.inner.as_ref()?.default.clone();
        let mut rx = self.inbound(port)?;
        let _ = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        Some(enforce::Enforcer::new(
            (rx, default),
            port,
            client,
            client_id,
            metrics.clone(),
        ))
    }
}

/// Waits up to `timeout` for a target's first answer; `Unavailable` after that.
pub async fn first_outbound(rx: &mut watch::Receiver<Outbound>, timeout: Duration) -> Outbound {
    match tokio::time::timeout(timeout, rx.wait_for(|o| *o != Outbound::Pending)).await {
        Ok(Ok(o)) => *o,
        _ => Outbound::Unavailable,
    }
}

fn backoff_next(b: Duration) -> Duration {
    (b * 2).min(Duration::from_secs(10))
}

async fn watch_port(inner: Arc<Inner>, port: u16, tx: watch::Sender<Option<Arc<ServerPolicy>>>) {
    let mut client = InboundServerPoliciesClient::new(inner.channel.clone());
    let mut backoff = Duration::from_millis(500);
    let spec = in_pb::PortSpec {
        workload: inner.workload.clone(),
        port: u32::from(port),
    };
    loop {
        match client.watch_port(spec.clone()).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(srv)) => match ServerPolicy::from_pb(&srv) {
                            Ok(p) => {
                                backoff = Duration::from_millis(500);
                                tracing::debug!(port, server = %p.meta.name, "inbound policy");
                                tx.send_replace(Some(Arc::new(p)));
                            }
                            Err(e) => {
                                tracing::warn!(port, error = %e, "inbound policy update ignored; keeping the previous one");
                            }
                        },
                        Ok(None) => break,
                        Err(status) => {
                            tracing::info!(port, %status, "inbound policy stream failed");
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::info!(port, %status, workload = %inner.workload, "inbound policy unavailable; the default policy applies meanwhile");
            }
        }
        tx.send_if_modified(|p| {
            let unknown = p.is_none();
            if unknown {
                *p = Some(inner.default.clone());
            }
            unknown
        });
        if tx.is_closed() {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff_next(backoff);
    }
}

async fn watch_target(inner: Arc<Inner>, target: SocketAddr, tx: watch::Sender<Outbound>) {
    let mut client = OutboundPoliciesClient::new(inner.channel.clone());
    let mut backoff = Duration::from_millis(500);
    let spec = out_pb::TrafficSpec {
        source_workload: inner.workload.clone(),
        target: Some(out_pb::traffic_spec::Target::Addr(target.into())),
    };
    loop {
        if tx.is_closed() {
            return;
        }
        let status = match client.watch(spec.clone()).await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(p)) => {
                            backoff = Duration::from_millis(500);
                            let o = outbound::from_pb(&p);
                            tracing::debug!(%target, policy = ?o, "outbound policy");
                            tx.send_replace(o);
                        }
                        Ok(None) => break None,
                        Err(status) => break Some(status),
                    }
                }
            }
            Err(status) => Some(status),
        };
        match status.as_ref().map(tonic::Status::code) {
            Some(tonic::Code::NotFound | tonic::Code::InvalidArgument) => {
                tx.send_replace(Outbound::NotAService);
                return;
            }
            Some(tonic::Code::Unimplemented) => {
                tracing::info!(
                    "the policy service has no OutboundPolicies; detecting outbound protocols"
                );
                inner
                    .no_outbound
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tx.send_replace(Outbound::NotAService);
                return;
            }
            _ => {
                if let Some(s) = &status {
                    tracing::info!(%target, status = %s, "outbound policy unavailable");
                }
                tx.send_if_modified(|o| {
                    let pending = *o == Outbound::Pending;
                    if pending {
                        *o = Outbound::Unavailable;
                    }
                    pending
                });
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = backoff_next(backoff);
    }
}
