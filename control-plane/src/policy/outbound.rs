//! Outbound translation: a Service port → the `outbound.OutboundPolicy` a proxy routes by.
//! Pure; the Service comes from destination's cache ([`ServiceInfo`]).
//!
//! Every Service port (mirrors and federated Services are Services too) gets one route to one
//! backend: a p2c balancer over `Destination.Get` of `<svc>.<ns>.svc.<domain>:<port>`, with a
//! bounded queue that fails fast. The protocol is opaque on the Service's opaque ports
//! (annotation), else detected (HTTP/1, HTTP/2, or opaque when neither) within the timeout.
//! HTTP failure accrual is Linkerd's `consecutive` one with its defaults: an endpoint that fails
//! 7 requests in a row is ejected for 1 s, doubling up to 60 s (jitter 0.5), then probed.

use super::PolicyConfig;
use crate::destination::authority::ServiceKey;
use crate::destination::model::ServiceInfo;
use linkerd2_proxy_api::http_route as route_pb;
use linkerd2_proxy_api::meta;
use linkerd2_proxy_api::outbound as pb;
use std::time::Duration;

/// The queue of a backend: how many requests wait for an endpoint, and for how long.
pub const QUEUE_CAPACITY: u32 = 100;
pub const QUEUE_FAILFAST: Duration = Duration::from_secs(3);
/// The balancer's PeakEWMA parameters.
pub const EWMA_DEFAULT_RTT: Duration = Duration::from_millis(30);
pub const EWMA_DECAY: Duration = Duration::from_secs(10);
/// Failure accrual (Linkerd's defaults for `consecutive`).
pub const ACCRUAL_MAX_FAILURES: u32 = 7;
pub const ACCRUAL_MIN_PENALTY: Duration = Duration::from_secs(1);
pub const ACCRUAL_MAX_PENALTY: Duration = Duration::from_secs(60);
pub const ACCRUAL_JITTER: f32 = 0.5;

fn duration(d: Duration) -> Option<prost_types::Duration> {
    prost_types::Duration::try_from(d).ok()
}

fn service_metadata(key: &ServiceKey, port: u16) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "core".to_owned(),
            kind: "Service".to_owned(),
            name: key.name.clone(),
            namespace: key.namespace.clone(),
            section: String::new(),
            port: u32::from(port),
        })),
    })
}

fn default_metadata(name: &str) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Default(name.to_owned())),
    })
}

/// The one backend of every route: the Service's endpoints, balanced.
pub fn backend(key: &ServiceKey, port: u16, cfg: &PolicyConfig) -> pb::Backend {
    use pb::backend::{BalanceP2c, EndpointDiscovery, balance_p2c, endpoint_discovery};
    pb::Backend {
        metadata: service_metadata(key, port),
        queue: Some(pb::Queue {
            capacity: QUEUE_CAPACITY,
            failfast_timeout: duration(QUEUE_FAILFAST),
        }),
        kind: Some(pb::backend::Kind::Balancer(BalanceP2c {
            discovery: Some(EndpointDiscovery {
                kind: Some(endpoint_discovery::Kind::Dst(
                    endpoint_discovery::DestinationGet {
                        path: format!("{}:{port}", key.fqdn(&cfg.cluster_domain)),
                    },
                )),
            }),
            load: Some(balance_p2c::Load::PeakEwma(balance_p2c::PeakEwma {
                default_rtt: duration(EWMA_DEFAULT_RTT),
                decay: duration(EWMA_DECAY),
            })),
        })),
    }
}

/// Ejects an endpoint after consecutive failures, with an exponential penalty.
pub fn failure_accrual() -> pb::FailureAccrual {
    use pb::failure_accrual::{ConsecutiveFailures, Kind};
    pb::FailureAccrual {
        ejection: None,
        kind: Some(Kind::ConsecutiveFailures(ConsecutiveFailures {
            max_failures: ACCRUAL_MAX_FAILURES,
            backoff: Some(pb::ExponentialBackoff {
                min_backoff: duration(ACCRUAL_MIN_PENALTY),
                max_backoff: duration(ACCRUAL_MAX_PENALTY),
                jitter_ratio: ACCRUAL_JITTER,
                respect_retry_after_hint: false,
            }),
        })),
    }
}

fn opaque(backend: &pb::Backend) -> pb::proxy_protocol::Opaque {
    use pb::opaque_route::{Distribution, RouteBackend, Rule, distribution};
    pb::proxy_protocol::Opaque {
        routes: vec![pb::OpaqueRoute {
            metadata: default_metadata("opaq"),
            rules: vec![Rule {
                backends: Some(Distribution {
                    kind: Some(distribution::Kind::FirstAvailable(
                        distribution::FirstAvailable {
                            backends: vec![RouteBackend {
                                backend: Some(backend.clone()),
                                filters: vec![],
                            }],
                        },
                    )),
                }),
                filters: vec![],
            }],
        }],
    }
}

fn http_routes(backend: &pb::Backend) -> Vec<pb::HttpRoute> {
    use pb::http_route::{Distribution, RouteBackend, Rule, distribution};
    vec![pb::HttpRoute {
        metadata: default_metadata("http"),
        hosts: vec![],
        rules: vec![Rule {
            matches: vec![route_pb::HttpRouteMatch {
                path: Some(route_pb::PathMatch {
                    kind: Some(route_pb::path_match::Kind::Prefix("/".to_owned())),
                }),
                ..Default::default()
            }],
            filters: vec![],
            backends: Some(Distribution {
                kind: Some(distribution::Kind::FirstAvailable(
                    distribution::FirstAvailable {
                        backends: vec![RouteBackend {
                            backend: Some(backend.clone()),
                            filters: vec![],
                            #[allow(deprecated)]
                            request_timeout: None,
                        }],
                    },
                )),
            }),
            #[allow(deprecated)]
            request_timeout: None,
            timeouts: None,
            retry: None,
            allow_l5d_request_headers: false,
        }],
    }]
}

/// The policy of `port` of Service `key`.
pub fn policy(
    key: &ServiceKey,
    svc: &ServiceInfo,
    port: u16,
    cfg: &PolicyConfig,
) -> pb::OutboundPolicy {
    use pb::proxy_protocol::{Detect, Http1, Http2, Kind};
    let backend = backend(key, port, cfg);
    let kind = if svc.opaque_ports.contains(&port) {
        Kind::Opaque(opaque(&backend))
    } else {
        Kind::Detect(Detect {
            timeout: duration(cfg.detect_timeout),
            opaque: Some(opaque(&backend)),
            http1: Some(Http1 {
                routes: http_routes(&backend),
                failure_accrual: Some(failure_accrual()),
            }),
            http2: Some(Http2 {
                routes: http_routes(&backend),
                failure_accrual: Some(failure_accrual()),
            }),
        })
    };
    pb::OutboundPolicy {
        protocol: Some(pb::ProxyProtocol { kind: Some(kind) }),
        metadata: service_metadata(key, port),
    }
}

/// Whether `policy` says "opaque" (for tests and for Strait's own proxy).
pub fn is_opaque(policy: &pb::OutboundPolicy) -> bool {
    matches!(
        policy.protocol.as_ref().and_then(|p| p.kind.as_ref()),
        Some(pb::proxy_protocol::Kind::Opaque(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::destination::model::PortInfo;

    fn svc(opaque: &[u16]) -> ServiceInfo {
        ServiceInfo {
            cluster_ips: vec!["198.19.0.10".parse().expect("ip")],
            ports: vec![PortInfo {
                name: "http".into(),
                port: 80,
            }],
            external_name: false,
            mirror: None,
            opaque_ports: opaque.to_vec(),
            federated_local_member: None,
        }
    }

    fn dst_path(p: &pb::Backend) -> &str {
        use pb::backend::endpoint_discovery::Kind;
        match p.kind.as_ref() {
            Some(pb::backend::Kind::Balancer(b)) => {
                match b.discovery.as_ref().and_then(|d| d.kind.as_ref()) {
                    Some(Kind::Dst(d)) => &d.path,
                    None => "",
                }
            }
            _ => "",
        }
    }

    #[test]
    fn table() {
        let cfg = PolicyConfig::default();
        let key = ServiceKey::new("shop", "web-east");
        struct Case {
            name: &'static str,
            opaque: &'static [u16],
            port: u16,
            want_opaque: bool,
        }
        let cases = [
            Case {
                name: "detected",
                opaque: &[],
                port: 80,
                want_opaque: false,
            },
            Case {
                name: "opaque port",
                opaque: &[80],
                port: 80,
                want_opaque: true,
            },
            Case {
                name: "another port opaque",
                opaque: &[3306],
                port: 80,
                want_opaque: false,
            },
        ];
        for c in cases {
            let p = policy(&key, &svc(c.opaque), c.port, &cfg);
            assert_eq!(is_opaque(&p), c.want_opaque, "{}", c.name);
            assert_eq!(p.metadata, service_metadata(&key, c.port), "{}", c.name);
            match p.protocol.and_then(|p| p.kind) {
                Some(pb::proxy_protocol::Kind::Detect(d)) => {
                    assert_eq!(d.timeout, duration(cfg.detect_timeout), "{}", c.name);
                    let h1 = d.http1.expect("http1");
                    let rule = &h1.routes[0].rules[0];
                    let Some(pb::http_route::distribution::Kind::FirstAvailable(f)) =
                        rule.backends.as_ref().and_then(|b| b.kind.as_ref())
                    else {
                        panic!("{}: one first-available backend", c.name)
                    };
                    let b = f.backends[0].backend.as_ref().expect("backend");
                    assert_eq!(dst_path(b), "web-east.shop.svc.cluster.local:80");
                    let q = b.queue.expect("queue");
                    assert_eq!(q.capacity, QUEUE_CAPACITY);
                    assert_eq!(q.failfast_timeout, duration(QUEUE_FAILFAST));
                    let accrual = h1.failure_accrual.expect("HTTP/1 failure accrual");
                    let Some(pb::failure_accrual::Kind::ConsecutiveFailures(f)) = accrual.kind
                    else {
                        panic!("{}: consecutive failures", c.name)
                    };
                    assert_eq!(f.max_failures, 7, "{}", c.name);
                    let backoff = f.backoff.expect("backoff");
                    assert_eq!(
                        (
                            backoff.min_backoff,
                            backoff.max_backoff,
                            backoff.jitter_ratio
                        ),
                        (
                            duration(Duration::from_secs(1)),
                            duration(Duration::from_secs(60)),
                            0.5
                        ),
                        "{}",
                        c.name
                    );
                    let h2 = d.http2.expect("http2");
                    assert_eq!(h2.failure_accrual, Some(accrual), "{}", c.name);
                    assert_eq!(h2.routes, h1.routes, "{}: one route for both", c.name);
                    let opaque = d.opaque.expect("opaque when neither HTTP");
                    let Some(pb::opaque_route::distribution::Kind::FirstAvailable(f)) =
                        opaque.routes[0].rules[0]
                            .backends
                            .as_ref()
                            .and_then(|b| b.kind.as_ref())
                    else {
                        panic!("{}: one first-available backend", c.name)
                    };
                    assert_eq!(f.backends[0].backend.as_ref(), Some(b), "{}", c.name);
                }
                Some(pb::proxy_protocol::Kind::Opaque(o)) => {
                    let rule = &o.routes[0].rules[0];
                    let Some(pb::opaque_route::distribution::Kind::FirstAvailable(f)) =
                        rule.backends.as_ref().and_then(|b| b.kind.as_ref())
                    else {
                        panic!("{}: one first-available backend", c.name)
                    };
                    let b = f.backends[0].backend.as_ref().expect("backend");
                    assert_eq!(dst_path(b), "web-east.shop.svc.cluster.local:80");
                }
                other => panic!("{}: {other:?}", c.name),
            }
        }
    }
}
