#![allow(clippy::unwrap_used)]
use super::*;
use pb::authn::Permit;
use pb::authn::permit_mesh_tls::{Clients, PermitClientIdentities};

const WEB: &str = "web.shop.serviceaccount.identity.strait.cluster.local";
const ADMIN: &str = "admin.ops.serviceaccount.identity.strait.cluster.local";

fn net(s: &str) -> pb::Network {
    pb::Network {
        net: Some(s.parse::<IpNet>().unwrap().into()),
        except: vec![],
    }
}

fn resource(kind: &str, name: &str) -> Option<meta::Metadata> {
    Some(meta::Metadata {
        kind: Some(meta::metadata::Kind::Resource(meta::Resource {
            group: "policy.strait.dev".into(),
            kind: kind.into(),
            name: name.into(),
            ..Default::default()
        })),
    })
}

fn authz_pb(name: &str, nets: &[&str], permit: Permit) -> pb::Authz {
    pb::Authz {
        networks: nets.iter().map(|n| net(n)).collect(),
        authentication: Some(pb::Authn {
            permit: Some(permit),
        }),
        labels: HashMap::new(),
        metadata: resource("authorizationpolicy", name),
    }
}

fn mesh(ids: &[&str], suffixes: &[&[&str]]) -> Permit {
    Permit::MeshTls(pb::authn::PermitMeshTls {
        clients: Some(Clients::Identities(PermitClientIdentities {
            identities: ids
                .iter()
                .map(|n| pb::Identity { name: (*n).into() })
                .collect(),
            suffixes: suffixes
                .iter()
                .map(|s| pb::IdentitySuffix {
                    parts: s.iter().map(|p| (*p).to_owned()).collect(),
                })
                .collect(),
        })),
    })
}

fn unauthenticated() -> Permit {
    Permit::Unauthenticated(pb::authn::PermitUnauthenticated {})
}

fn path_match(kind: route_pb::path_match::Kind) -> route_pb::HttpRouteMatch {
    route_pb::HttpRouteMatch {
        path: Some(route_pb::PathMatch { kind: Some(kind) }),
        ..Default::default()
    }
}

/// A Server like the control plane sends: detect, authorizations on the server and on a
/// `/` route, and an open probe route.
fn server(authz: Vec<pb::Authz>) -> pb::Server {
    use route_pb::path_match::Kind as PK;
    let probe = pb::HttpRoute {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Default("probe".into())),
        }),
        hosts: vec![],
        authorizations: vec![authz_pb("probe", &["0.0.0.0/0"], unauthenticated())],
        rules: vec![pb::http_route::Rule {
            matches: vec![path_match(PK::Exact("/ready".into()))],
            filters: vec![],
        }],
    };
    let default = pb::HttpRoute {
        metadata: Some(meta::Metadata {
            kind: Some(meta::metadata::Kind::Default("default".into())),
        }),
        hosts: vec![],
        authorizations: authz.clone(),
        rules: vec![pb::http_route::Rule {
            matches: vec![path_match(PK::Prefix("/".into()))],
            filters: vec![],
        }],
    };
    pb::Server {
        protocol: Some(pb::ProxyProtocol {
            kind: Some(pb::proxy_protocol::Kind::Detect(
                pb::proxy_protocol::Detect {
                    timeout: prost_types::Duration::try_from(Duration::from_secs(10)).ok(),
                    http_routes: vec![probe, default],
                    http_local_rate_limit: None,
                },
            )),
        }),
        server_ips: vec![],
        authorizations: authz,
        labels: [
            ("group", "policy.strait.dev"),
            ("kind", "server"),
            ("name", "web-http"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect(),
    }
}

fn request(method: &str, uri: &str) -> http::request::Parts {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .unwrap()
        .into_parts()
        .0
}

#[test]
fn authorizations_permit_by_network_and_identity() {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let cases: Vec<(&str, Permit, &[&str], Client<'_>, bool)> = vec![
        (
            "unauthenticated, any address",
            unauthenticated(),
            &["0.0.0.0/0"],
            Client {
                ip: ip("198.18.0.5"),
                tls: false,
                id: None,
            },
            true,
        ),
        (
            "unauthenticated, address outside the network",
            unauthenticated(),
            &["198.18.0.0/24"],
            Client {
                ip: ip("198.19.0.5"),
                tls: false,
                id: None,
            },
            false,
        ),
        (
            "a listed identity",
            mesh(&[WEB], &[]),
            &["0.0.0.0/0"],
            Client {
                ip: ip("198.18.0.5"),
                tls: true,
                id: Some(WEB),
            },
            true,
        ),
        (
            "another identity",
            mesh(&[WEB], &[]),
            &["0.0.0.0/0"],
            Client {
                ip: ip("198.18.0.5"),
                tls: true,
                id: Some(ADMIN),
            },
            false,
        ),
        (
            "no identity where one is required",
            mesh(&[], &[&[]]),
            &["0.0.0.0/0"],
            Client {
                ip: ip("198.18.0.5"),
                tls: true,
                id: None,
            },
            false,
        ),
        (
            "the empty suffix: any identity",
            mesh(&[], &[&[]]),
            &["0.0.0.0/0"],
            Client {
                ip: ip("198.18.0.5"),
                tls: true,
                id: Some(ADMIN),
            },
            true,
        ),
        (
            "a namespace suffix",
            mesh(
                &[],
                &[&[
                    "shop",
                    "serviceaccount",
                    "identity",
                    "strait",
                    "cluster",
                    "local",
                ]],
            ),
            &["0.0.0.0/0"],
            Client {
                ip: ip("198.18.0.5"),
                tls: true,
                id: Some(WEB),
            },
            true,
        ),
        (
            "a namespace suffix, another namespace",
            mesh(
                &[],
                &[&[
                    "shop",
                    "serviceaccount",
                    "identity",
                    "strait",
                    "cluster",
                    "local",
                ]],
            ),
            &["0.0.0.0/0"],
            Client {
                ip: ip("198.18.0.5"),
                tls: true,
                id: Some(ADMIN),
            },
            false,
        ),
        (
            "IPv6 client, IPv4-only network",
            unauthenticated(),
            &["0.0.0.0/0"],
            Client {
                ip: ip("::1"),
                tls: false,
                id: None,
            },
            false,
        ),
    ];
    for (what, permit, nets, client, want) in cases {
        let a = authz(&authz_pb("p", nets, permit)).unwrap();
        assert_eq!(a.permits(&client), want, "{what}");
    }
}

#[test]
fn network_exceptions_are_refused() {
    let mut n = net("198.18.0.0/16");
    n.except = vec!["198.18.7.0/24".parse::<IpNet>().unwrap().into()];
    let mut a = authz_pb("p", &[], unauthenticated());
    a.networks = vec![n];
    let a = authz(&a).unwrap();
    let c = |s: &str| Client {
        ip: s.parse().unwrap(),
        tls: false,
        id: None,
    };
    assert!(a.permits(&c("198.18.6.1")));
    assert!(!a.permits(&c("198.18.7.1")));
}

#[test]
fn requests_take_the_most_specific_route() {
    let p = ServerPolicy::from_pb(&server(vec![authz_pb(
        "web-only",
        &["0.0.0.0/0", "::/0"],
        mesh(&[WEB], &[]),
    )]))
    .unwrap();
    assert_eq!(p.protocol, Protocol::Detect(Duration::from_secs(10)));
    assert_eq!(p.meta.name, "web-http");
    let ip = "198.18.0.9".parse().unwrap();
    let allowed = Client {
        ip,
        tls: true,
        id: Some(WEB),
    };
    let other = Client {
        ip,
        tls: true,
        id: Some(ADMIN),
    };
    let plain = Client {
        ip,
        tls: false,
        id: None,
    };

    let (route, a) = p.check_http(&allowed, &request("GET", "/users/1")).unwrap();
    assert_eq!(
        (route.meta.name.as_str(), a.meta.name.as_str()),
        ("default", "web-only")
    );
    match p.check_http(&other, &request("GET", "/users/1")) {
        Err(HttpDenied::Unauthorized(r)) => assert_eq!(r.meta.name, "default"),
        other => panic!("{other:?}"),
    }
    // The kubelet's probe is open; a path that only starts like it is not.
    let (route, _) = p.check_http(&plain, &request("GET", "/ready")).unwrap();
    assert_eq!(route.meta.name, "probe");
    assert!(p.check_http(&plain, &request("GET", "/readyz")).is_err());
    // TCP is checked against the server's authorizations.
    assert_eq!(p.check_tcp(&allowed).unwrap().meta.name, "web-only");
    assert!(p.check_tcp(&other).is_none());
}

#[test]
fn prefixes_match_whole_path_elements() {
    for (prefix, path, want) in [
        ("/", "/anything", true),
        ("/api", "/api", true),
        ("/api", "/api/v1", true),
        ("/api/", "/api/v1", true),
        ("/api", "/apis", false),
        ("/api", "/", false),
    ] {
        assert_eq!(prefix_matches(prefix, path), want, "{prefix} {path}");
    }
}

#[test]
fn matches_this_proxy_cannot_evaluate_never_hold() {
    use route_pb::path_match::Kind as PK;
    let route = pb::HttpRoute {
        metadata: resource("httproute", "regex"),
        hosts: vec![],
        authorizations: vec![authz_pb("open", &["0.0.0.0/0"], unauthenticated())],
        rules: vec![pb::http_route::Rule {
            matches: vec![path_match(PK::Regex("/admin.*".into()))],
            filters: vec![],
        }],
    };
    let r = http_route(&route).unwrap();
    let p = ServerPolicy {
        meta: Meta::default(),
        protocol: Protocol::Http1,
        authorizations: vec![],
        routes: vec![r],
    };
    let c = Client {
        ip: "198.18.0.1".parse().unwrap(),
        tls: false,
        id: None,
    };
    assert_eq!(
        p.check_http(&c, &request("GET", "/admin/x")),
        Err(HttpDenied::NoRoute)
    );
}

#[test]
fn defaults_have_linkerd_meanings() {
    fn c(ip: IpAddr, id: Option<&str>) -> Client<'_> {
        Client {
            ip,
            tls: id.is_some(),
            id,
        }
    }
    let cluster = ["198.18.0.0/15".parse().unwrap()];
    let inside = "198.18.0.4".parse().unwrap();
    let outside = "203.0.113.4".parse().unwrap();
    let cases = [
        (DefaultPolicy::AllUnauthenticated, c(outside, None), true),
        (DefaultPolicy::AllAuthenticated, c(outside, None), false),
        (DefaultPolicy::AllAuthenticated, c(outside, Some(WEB)), true),
        (DefaultPolicy::ClusterUnauthenticated, c(inside, None), true),
        (
            DefaultPolicy::ClusterUnauthenticated,
            c(outside, None),
            false,
        ),
        (DefaultPolicy::ClusterAuthenticated, c(inside, None), false),
        (
            DefaultPolicy::ClusterAuthenticated,
            c(inside, Some(WEB)),
            true,
        ),
        (DefaultPolicy::Deny, c(inside, Some(WEB)), false),
    ];
    for (name, client, want) in cases {
        let p = ServerPolicy::default_policy(name, &cluster, Duration::from_secs(3));
        assert_eq!(p.check_tcp(&client).is_some(), want, "{name:?} tcp");
        assert_eq!(
            p.check_http(&client, &request("GET", "/")).is_ok(),
            want,
            "{name:?} http"
        );
        assert_eq!(p.meta.name, name.as_str());
        assert_eq!(name.as_str().parse::<DefaultPolicy>().unwrap(), name);
    }
    assert!("allow".parse::<DefaultPolicy>().is_err());
    // The same five names the injector and the control plane accept.
    for name in strait_core::policy::DEFAULT_INBOUND_POLICIES {
        assert_eq!(name.parse::<DefaultPolicy>().unwrap().as_str(), name);
    }
}

#[test]
fn a_server_this_proxy_cannot_enforce_is_refused() {
    let mut no_protocol = server(vec![]);
    no_protocol.protocol = None;
    assert!(ServerPolicy::from_pb(&no_protocol).is_err());
    let mut no_authn = authz_pb("p", &["0.0.0.0/0"], unauthenticated());
    no_authn.authentication = None;
    assert!(ServerPolicy::from_pb(&server(vec![no_authn])).is_err());
    let mut bad_net = authz_pb("p", &[], unauthenticated());
    bad_net.networks = vec![pb::Network {
        net: None,
        except: vec![],
    }];
    assert!(ServerPolicy::from_pb(&server(vec![bad_net])).is_err());
}

#[test]
fn opaque_servers_have_no_routes() {
    let mut s = server(vec![authz_pb("p", &["0.0.0.0/0"], unauthenticated())]);
    s.protocol = Some(pb::ProxyProtocol {
        kind: Some(pb::proxy_protocol::Kind::Opaque(
            pb::proxy_protocol::Opaque {},
        )),
    });
    let p = ServerPolicy::from_pb(&s).unwrap();
    assert_eq!(p.protocol, Protocol::Opaque);
    assert!(p.routes.is_empty());
    assert_eq!(p.authorizations.len(), 1);
}
