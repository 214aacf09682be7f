//! The gRPC services: `io.linkerd.proxy.inbound.InboundServerPolicies` (GetPort, WatchPort)
//! and `io.linkerd.proxy.outbound.OutboundPolicies` (Get, Watch).
//!
//! - Inbound: a workload that does not parse, or a port outside 1–65535, is
//!   `InvalidArgument`; a pod the cache does not hold is `NotFound`. A watch sends the Server
//!   at once and again whenever any policy input changes its answer.
//! - Outbound: a target that is not a Service (by cluster IP or by name) is `NotFound`, which a
//!   proxy reads as "forward to the original destination". A watch follows the Service (ports,
//!   opaque annotation) through destination's cache; when the Service is deleted the stream
//!   ends with `NotFound`.
//!
//! Streams are `unfold`s over watch receivers: no task per stream.

use super::index::Index;
use super::{PolicyConfig, inbound, outbound};
use crate::destination::authority::{self, ServiceKey, Target};
use crate::destination::index::{Index as DstIndex, TopicKey, View};
use futures::Stream;
use linkerd2_proxy_api::inbound as in_pb;
use linkerd2_proxy_api::inbound::inbound_server_policies_server::InboundServerPolicies;
use linkerd2_proxy_api::outbound as out_pb;
use linkerd2_proxy_api::outbound::outbound_policies_server::OutboundPolicies;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tonic::{Request, Response, Status};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Both services share the caches. Build with [`super::Policies::inbound`] / `outbound`.
#[derive(Clone, Debug)]
pub struct PolicyService {
    pub(super) index: Arc<Index>,
    pub(super) destination: Arc<DstIndex>,
    pub(super) config: Arc<PolicyConfig>,
}

fn lookup_status(e: inbound::LookupError) -> Status {
    match e {
        inbound::LookupError::PodNotFound(_) => Status::not_found(e.to_string()),
        _ => Status::invalid_argument(e.to_string()),
    }
}

impl PolicyService {
    async fn synced(&self) -> Result<(), Status> {
        let both = async {
            self.index.synced().await;
            self.destination.synced().await;
        };
        tokio::time::timeout(self.config.sync_timeout, both)
            .await
            .map_err(|_| Status::unavailable("policy caches are not synced yet"))
    }

    fn port_answer(&self, spec: &in_pb::PortSpec) -> Result<in_pb::Server, Status> {
        let key = inbound::parse_workload(&spec.workload).map_err(lookup_status)?;
        self.index
            .read(|s| inbound::server(s, &key, spec.port, &self.config))
            .map_err(lookup_status)
    }

    /// The Service and port an outbound target names.
    fn outbound_target(&self, spec: &out_pb::TrafficSpec) -> Result<(ServiceKey, u16), Status> {
        use out_pb::traffic_spec::Target as T;
        let not_found = |what: &str| Status::not_found(format!("{what} is not a Service"));
        match spec.target.as_ref() {
            Some(T::Addr(addr)) => {
                let addr = SocketAddr::try_from(*addr)
                    .map_err(|e| Status::invalid_argument(format!("target address: {e}")))?;
                let (key, _) = self
                    .destination
                    .service_by_ip(addr.ip())
                    .ok_or_else(|| not_found(&addr.to_string()))?;
                Ok((key, addr.port()))
            }
            Some(T::Authority(a)) => {
                match authority::parse(a, &self.config.cluster_domain) {
                    Ok(Target::Service { service, port, .. }) => {
                        if self.destination.service(&service).is_none() {
                            return Err(not_found(a));
                        }
                        Ok((service, port))
                    }
                    Ok(Target::Addr { ip, port }) => {
                        let (key, _) = self
                            .destination
                            .service_by_ip(ip)
                            .ok_or_else(|| not_found(a))?;
                        Ok((key, port))
                    }
                    // Not a name of this cluster: the proxy forwards as asked.
                    Err(e) => Err(Status::not_found(format!("{a}: {e}"))),
                }
            }
            None => Err(Status::invalid_argument("no target")),
        }
    }

    fn outbound_answer(
        &self,
        key: &ServiceKey,
        port: u16,
    ) -> Result<out_pb::OutboundPolicy, Status> {
        match self.destination.service(key) {
            Some(svc) if !svc.external_name => Ok(outbound::policy(key, &svc, port, &self.config)),
            Some(_) => Err(Status::not_found(format!(
                "{key} is an ExternalName Service"
            ))),
            None => Err(Status::not_found(format!("Service {key} not found"))),
        }
    }
}

#[tonic::async_trait]
impl InboundServerPolicies for PolicyService {
    type WatchPortStream = BoxStream<in_pb::Server>;

    async fn get_port(
        &self,
        request: Request<in_pb::PortSpec>,
    ) -> Result<Response<in_pb::Server>, Status> {
        self.synced().await?;
        let spec = request.into_inner();
        let answer = self.port_answer(&spec)?;
        tracing::debug!(workload = %spec.workload, port = spec.port, "GetPort");
        Ok(Response::new(answer))
    }

    async fn watch_port(
        &self,
        request: Request<in_pb::PortSpec>,
    ) -> Result<Response<Self::WatchPortStream>, Status> {
        self.synced().await?;
        let spec = request.into_inner();
        let mut changes = self.index.changes();
        changes.mark_unchanged();
        let first = self.port_answer(&spec)?;
        tracing::debug!(workload = %spec.workload, port = spec.port, "WatchPort");
        let st = (
            self.clone(),
            spec,
            changes,
            None::<in_pb::Server>,
            Some(first),
        );
        let stream =
            futures::stream::unfold(st, |(svc, spec, mut changes, last, first)| async move {
                if let Some(first) = first {
                    return Some((Ok(first.clone()), (svc, spec, changes, Some(first), None)));
                }
                loop {
                    changes.changed().await.ok()?;
                    changes.mark_unchanged();
                    match svc.port_answer(&spec) {
                        Ok(next) if Some(&next) == last.as_ref() => continue,
                        Ok(next) => {
                            return Some((
                                Ok(next.clone()),
                                (svc, spec, changes, Some(next), None),
                            ));
                        }
                        // The pod went away: the stream ends with the reason.
                        Err(status) => {
                            return Some((Err(status), (svc, spec, changes, last, None)));
                        }
                    }
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[tonic::async_trait]
impl OutboundPolicies for PolicyService {
    type WatchStream = BoxStream<out_pb::OutboundPolicy>;

    async fn get(
        &self,
        request: Request<out_pb::TrafficSpec>,
    ) -> Result<Response<out_pb::OutboundPolicy>, Status> {
        self.synced().await?;
        let (key, port) = self.outbound_target(request.get_ref())?;
        Ok(Response::new(self.outbound_answer(&key, port)?))
    }

    async fn watch(
        &self,
        request: Request<out_pb::TrafficSpec>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        self.synced().await?;
        let (key, port) = self.outbound_target(request.get_ref())?;
        let first = self.outbound_answer(&key, port)?;
        tracing::debug!(service = %key, port, "outbound Watch");
        let sub = self.destination.subscribe(TopicKey::Service(key.clone()));
        let st = (
            self.clone(),
            key,
            port,
            sub,
            Some(first.clone()),
            Some(first),
            false,
        );
        let stream = futures::stream::unfold(st, |st| async move {
            let (svc, key, port, mut sub, last, first, ended) = st;
            if ended {
                return None;
            }
            if let Some(first) = first {
                return Some((Ok(first), (svc, key, port, sub, last, None, false)));
            }
            loop {
                sub.rx().changed().await.ok()?;
                let view = sub.rx().borrow_and_update().clone();
                let View::Service { service, .. } = &*view else {
                    return None;
                };
                let next = match service {
                    Some(info) if !info.external_name => {
                        outbound::policy(&key, info, port, &svc.config)
                    }
                    _ => {
                        let status = Status::not_found(format!("Service {key} was deleted"));
                        return Some((Err(status), (svc, key, port, sub, last, None, true)));
                    }
                };
                if Some(&next) == last.as_ref() {
                    continue;
                }
                return Some((
                    Ok(next.clone()),
                    (svc, key, port, sub, Some(next), None, false),
                ));
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests;
