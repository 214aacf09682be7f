//! The `io.linkerd.proxy.destination.Destination` gRPC service.
//!
//! Answers follow Linkerd's destination controller:
//! - a path that is not a Service name of this cluster (or an IP that is neither a cluster IP
//!   nor a pod address) is `InvalidArgument`; a well-formed name of a Service that does not
//!   exist is `NotFound`. The proxy reads both as "not discoverable": it forwards to the
//!   original destination instead of failing the connection.
//! - `Get` streams the ready endpoint set, then Add/Remove/NoEndpoints as it changes.
//! - `GetProfile` streams a profile (`fully_qualified_name`, `opaque_protocol`, the default
//!   retry budget; for a pod address, the `endpoint`), and again whenever it changes.
//!
//! A stream is a future-driven `unfold` over its topic subscription: no task per stream.
//! When the proxy goes away, tonic drops the stream, which drops the subscription, which
//! closes the topic if it was the last.

use super::DestinationConfig;
use super::authority::{self, Target};
use super::index::{Index, Subscription, TopicKey, View};
use super::metrics::{LookupResult, Method, Metrics, OpenStream, UpdateKind};
use super::translate::{self, Diff};
use futures::Stream;
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_server::Destination;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The destination service. Build it with [`super::Discovery::service`].
#[derive(Clone, Debug)]
pub struct DestinationService {
    pub(super) index: Arc<Index>,
    pub(super) config: Arc<DestinationConfig>,
    pub(super) metrics: Metrics,
}

/// A resolved lookup: the topic to follow, the port asked for and, for one pod of a
/// headless Service, its hostname.
struct Resolved {
    topic: TopicKey,
    port: u16,
    hostname: Option<String>,
}

impl DestinationService {
    async fn resolve(&self, method: Method, path: &str) -> Result<Resolved, Status> {
        if tokio::time::timeout(self.config.sync_timeout, self.index.synced())
            .await
            .is_err()
        {
            self.metrics.lookup(method, LookupResult::Unavailable);
            return Err(Status::unavailable("discovery caches are not synced yet"));
        }
        let (resolved, result) = self.lookup(method, path)?;
        tracing::debug!(?method, %path, ?result, "lookup");
        self.metrics.lookup(method, result);
        Ok(resolved)
    }

    fn lookup(&self, method: Method, path: &str) -> Result<(Resolved, LookupResult), Status> {
        let invalid = |why: &dyn std::fmt::Display| {
            self.metrics.lookup(method, LookupResult::Invalid);
            tracing::debug!(?method, %path, %why, "invalid authority");
            Status::invalid_argument(format!("Invalid authority: {path}: {why}"))
        };
        let target =
            authority::parse(path, &self.config.cluster_domain).map_err(|e| invalid(&e))?;
        match target {
            Target::Service {
                service,
                port,
                hostname,
            } => {
                let info = self.index.service(&service);
                let result = match &info {
                    Some(svc) if svc.external_name => {
                        return Err(invalid(&"ExternalName services are not resolved"));
                    }
                    Some(svc) if svc.mirror.is_some() => LookupResult::Mirror,
                    Some(_) => LookupResult::Service,
                    // GetProfile answers a default profile for a missing Service, as
                    // Linkerd does; Get says NotFound.
                    None if method == Method::GetProfile => LookupResult::NotFound,
                    None => {
                        self.metrics.lookup(method, LookupResult::NotFound);
                        return Err(Status::not_found(format!(
                            "Service {}.{} not found",
                            service.name, service.namespace
                        )));
                    }
                };
                Ok((
                    Resolved {
                        topic: TopicKey::Service(service),
                        port,
                        hostname,
                    },
                    result,
                ))
            }
            Target::Addr { ip, port } => {
                if let Some((key, svc)) = self.index.service_by_ip(ip) {
                    let result = if svc.mirror.is_some() {
                        LookupResult::Mirror
                    } else {
                        LookupResult::Service
                    };
                    return Ok((
                        Resolved {
                            topic: TopicKey::Service(key),
                            port,
                            hostname: None,
                        },
                        result,
                    ));
                }
                let result = if self.index.has_pod_ip(ip) {
                    LookupResult::Pod
                } else if method == Method::GetProfile {
                    // Linkerd answers an endpoint profile for any address.
                    LookupResult::NotFound
                } else {
                    return Err(invalid(&"not a cluster IP or pod address"));
                };
                Ok((
                    Resolved {
                        topic: TopicKey::Pod(ip),
                        port,
                        hostname: None,
                    },
                    result,
                ))
            }
        }
    }
}

#[tonic::async_trait]
impl Destination for DestinationService {
    type GetStream = BoxStream<pb::Update>;
    type GetProfileStream = BoxStream<pb::DestinationProfile>;

    async fn get(
        &self,
        request: Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetStream>, Status> {
        let path = request.into_inner().path;
        let Resolved {
            topic,
            port,
            hostname,
        } = self.resolve(Method::Get, &path).await?;
        let state = GetState {
            sub: self.index.subscribe(topic),
            port,
            hostname,
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            diff: Diff::default(),
            queue: VecDeque::new(),
            _open: self.metrics.open(Method::Get),
        };
        let stream = futures::stream::unfold(state, |mut st| async move {
            loop {
                if let Some(update) = st.queue.pop_front() {
                    st.metrics.sent(update_kind(&update));
                    return Some((Ok(update), st));
                }
                // Fails only when the topic is gone, i.e. the server is shutting down.
                st.sub.rx().changed().await.ok()?;
                let view = st.sub.rx().borrow_and_update().clone();
                let next = translate::endpoints(&view, st.port, st.hostname.as_deref(), &st.config);
                let updates = st.diff.update(next);
                st.queue.extend(updates);
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_profile(
        &self,
        request: Request<pb::GetDestination>,
    ) -> Result<Response<Self::GetProfileStream>, Status> {
        let path = request.into_inner().path;
        // A pod by hostname has its Service's profile.
        let Resolved { topic, port, .. } = self.resolve(Method::GetProfile, &path).await?;
        let state = ProfileState {
            sub: self.index.subscribe(topic),
            port,
            config: self.config.clone(),
            metrics: self.metrics.clone(),
            last: None,
            _open: self.metrics.open(Method::GetProfile),
        };
        let stream = futures::stream::unfold(state, |mut st| async move {
            loop {
                st.sub.rx().changed().await.ok()?;
                let view = st.sub.rx().borrow_and_update().clone();
                let profile = profile(&view, st.port, &st.config);
                if st.last.as_ref() != Some(&profile) {
                    st.last = Some(profile.clone());
                    st.metrics.sent(UpdateKind::Profile);
                    return Some((Ok(profile), st));
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

struct GetState {
    sub: Subscription,
    port: u16,
    hostname: Option<String>,
    config: Arc<DestinationConfig>,
    metrics: Metrics,
    diff: Diff,
    queue: VecDeque<pb::Update>,
    _open: OpenStream,
}

struct ProfileState {
    sub: Subscription,
    port: u16,
    config: Arc<DestinationConfig>,
    metrics: Metrics,
    last: Option<pb::DestinationProfile>,
    _open: OpenStream,
}

fn update_kind(u: &pb::Update) -> UpdateKind {
    match u.update {
        Some(pb::update::Update::Add(_)) => UpdateKind::Add,
        Some(pb::update::Update::Remove(_)) => UpdateKind::Remove,
        _ => UpdateKind::NoEndpoints,
    }
}

/// Linkerd's default retry budget: 20 % extra load, at least 10 retries a second, over 10 s.
fn default_retry_budget() -> pb::RetryBudget {
    pb::RetryBudget {
        retry_ratio: 0.2,
        min_retries_per_second: 10,
        ttl: Some(prost_types::Duration {
            seconds: 10,
            nanos: 0,
        }),
    }
}

/// The profile of a target for `port`.
pub(super) fn profile(view: &View, port: u16, cfg: &DestinationConfig) -> pb::DestinationProfile {
    let mut p = pb::DestinationProfile {
        retry_budget: Some(default_retry_budget()),
        ..Default::default()
    };
    match view {
        View::Service { key, service, .. } => {
            p.fully_qualified_name = key.fqdn(&cfg.cluster_domain);
            p.opaque_protocol = service
                .as_ref()
                .is_some_and(|s| s.opaque_ports.contains(&port));
        }
        View::Pod { ip, pod } => {
            let eps = translate::endpoints(view, port, None, cfg);
            let addr = std::net::SocketAddr::new(*ip, port);
            p.opaque_protocol = pod
                .as_ref()
                .is_some_and(|(_, info)| info.opaque_ports.contains(&port));
            p.endpoint = Some(
                eps.addrs
                    .get(&addr)
                    .cloned()
                    .unwrap_or_else(|| pb::WeightedAddr {
                        addr: Some(addr.into()),
                        weight: translate::DEFAULT_WEIGHT,
                        ..Default::default()
                    }),
            );
        }
    }
    p
}
