//! Inbound translation, table-driven: fixtures are the Kubernetes objects a user writes
//! (through each kind's `from_object` projection), answers are summarized as one line per
//! authorization so a table row reads like the policy it expects.

use super::*;
use crate::policy::fixtures::*;
use serde_json::json;

fn net_line(n: &pb::Network) -> String {
    let show = |n: &linkerd2_proxy_api::net::IpNetwork| {
        IpNet::try_from(*n).map_or_else(|_| "?".to_owned(), |n| n.to_string())
    };
    let mut out = n.net.as_ref().map(show).unwrap_or_default();
    for e in &n.except {
        out.push('!');
        out.push_str(&show(e));
    }
    out
}

/// `<kind>/<name> nets=<cidr>,… <authn>` where authn is `unauthenticated` or
/// `mesh ids=<a>,<b> suffixes=<*.x>,<*>`.
fn authz_line(a: &pb::Authz) -> String {
    use pb::authn::Permit;
    use pb::authn::permit_mesh_tls::Clients;
    let label = |k: &str| a.labels.get(k).cloned().unwrap_or_default();
    let nets: Vec<_> = a.networks.iter().map(net_line).collect();
    let authn = match a.authentication.as_ref().and_then(|a| a.permit.as_ref()) {
        Some(Permit::Unauthenticated(_)) => "unauthenticated".to_owned(),
        Some(Permit::MeshTls(m)) => match &m.clients {
            Some(Clients::Identities(c)) => {
                let ids: Vec<_> = c.identities.iter().map(|i| i.name.as_str()).collect();
                let suffixes: Vec<_> = c
                    .suffixes
                    .iter()
                    .map(|s| match s.parts.as_slice() {
                        [] => "*".to_owned(),
                        parts => format!("*.{}", parts.join(".")),
                    })
                    .collect();
                format!("mesh ids={} suffixes={}", ids.join(","), suffixes.join(","))
            }
            other => format!("mesh {other:?}"),
        },
        other => format!("{other:?}"),
    };
    format!(
        "{}/{} nets={} {authn}",
        label("kind"),
        label("name"),
        nets.join(",")
    )
}

fn protocol_name(s: &pb::Server) -> String {
    use pb::proxy_protocol::Kind;
    match s.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(Kind::Detect(d)) => format!(
            "detect({}s)",
            d.timeout.as_ref().map(|t| t.seconds).unwrap_or(-1)
        ),
        Some(Kind::Http1(_)) => "HTTP/1".to_owned(),
        Some(Kind::Http2(_)) => "HTTP/2".to_owned(),
        Some(Kind::Grpc(_)) => "gRPC".to_owned(),
        Some(Kind::Opaque(_)) => "opaque".to_owned(),
        Some(Kind::Tls(_)) => "TLS".to_owned(),
        None => "none".to_owned(),
    }
}

/// The routes of an HTTP answer: `<name>[<paths>]=<authz count>`.
fn routes(s: &pb::Server) -> Vec<String> {
    use pb::proxy_protocol::Kind;
    let routes = match s.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(Kind::Detect(d)) => &d.http_routes,
        Some(Kind::Http1(h)) => &h.routes,
        Some(Kind::Http2(h)) => &h.routes,
        _ => return vec![],
    };
    routes
        .iter()
        .map(|r| {
            let name = match r.metadata.as_ref().and_then(|m| m.kind.as_ref()) {
                Some(meta::metadata::Kind::Default(n)) => n.clone(),
                other => format!("{other:?}"),
            };
            let paths: Vec<_> = r
                .rules
                .iter()
                .flat_map(|rule| &rule.matches)
                .filter_map(|m| match m.path.as_ref()?.kind.as_ref()? {
                    route_pb::path_match::Kind::Exact(p) => Some(p.clone()),
                    route_pb::path_match::Kind::Prefix(p) => Some(format!("{p}*")),
                    route_pb::path_match::Kind::Regex(p) => Some(format!("~{p}")),
                })
                .collect();
            format!("{name}[{}]={}", paths.join(","), r.authorizations.len())
        })
        .collect()
}

struct Case {
    name: &'static str,
    default: DefaultPolicy,
    setup: fn(&mut State),
    pod: (&'static str, &'static str),
    port: u32,
    /// `<kind>/<name>` of the answer's labels.
    server: &'static str,
    protocol: &'static str,
    authz: &'static [&'static str],
}

fn nothing(_: &mut State) {}

fn run(cases: &[Case]) {
    for c in cases {
        let mut state = base();
        (c.setup)(&mut state);
        let key = (c.pod.0.to_owned(), c.pod.1.to_owned());
        let got = server(&state, &key, c.port, &cfg(c.default))
            .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        let label = |k: &str| got.labels.get(k).cloned().unwrap_or_default();
        assert_eq!(
            format!("{}/{}", label("kind"), label("name")),
            c.server,
            "{}: server",
            c.name
        );
        assert_eq!(protocol_name(&got), c.protocol, "{}: protocol", c.name);
        let lines: Vec<_> = got.authorizations.iter().map(authz_line).collect();
        assert_eq!(lines, c.authz, "{}: authorizations", c.name);
        // HTTP authorizes per route: the default route carries the same authorizations.
        if let Some(last) = routes(&got).last() {
            assert_eq!(
                last,
                &format!("default[/*]={}", c.authz.len()),
                "{}: default route",
                c.name
            );
        }
    }
}

#[test]
fn default_policies_and_their_overrides() {
    use DefaultPolicy::*;
    run(&[
        Case {
            name: "all-unauthenticated",
            default: AllUnauthenticated,
            setup: nothing,
            pod: ("shop", "users"),
            port: 8080,
            server: "default/all-unauthenticated",
            protocol: "detect(10s)",
            authz: &["default/all-unauthenticated nets=0.0.0.0/0,::/0 unauthenticated"],
        },
        Case {
            name: "all-authenticated",
            default: AllAuthenticated,
            setup: nothing,
            pod: ("shop", "users"),
            port: 8080,
            server: "default/all-authenticated",
            protocol: "detect(10s)",
            authz: &["default/all-authenticated nets=0.0.0.0/0,::/0 mesh ids= suffixes=*"],
        },
        Case {
            name: "cluster-unauthenticated",
            default: ClusterUnauthenticated,
            setup: nothing,
            pod: ("shop", "users"),
            port: 8080,
            server: "default/cluster-unauthenticated",
            protocol: "detect(10s)",
            authz: &["default/cluster-unauthenticated nets=10.0.0.0/8 unauthenticated"],
        },
        Case {
            name: "cluster-authenticated",
            default: ClusterAuthenticated,
            setup: nothing,
            pod: ("shop", "users"),
            port: 8080,
            server: "default/cluster-authenticated",
            protocol: "detect(10s)",
            authz: &["default/cluster-authenticated nets=10.0.0.0/8 mesh ids= suffixes=*"],
        },
        Case {
            name: "deny",
            default: Deny,
            setup: nothing,
            pod: ("shop", "users"),
            port: 8080,
            server: "default/deny",
            protocol: "detect(10s)",
            authz: &[],
        },
        Case {
            name: "the namespace's annotation wins over the cluster's setting",
            default: AllUnauthenticated,
            setup: nothing,
            pod: ("quiet", "api"),
            port: 8080,
            server: "default/deny",
            protocol: "detect(10s)",
            authz: &[],
        },
        Case {
            name: "the pod's annotation wins over its namespace's",
            default: AllUnauthenticated,
            setup: nothing,
            pod: ("quiet", "open"),
            port: 8080,
            server: "default/all-authenticated",
            protocol: "detect(10s)",
            authz: &["default/all-authenticated nets=0.0.0.0/0,::/0 mesh ids= suffixes=*"],
        },
        Case {
            name: "an invalid pod annotation is ignored",
            default: ClusterUnauthenticated,
            setup: nothing,
            pod: ("shop", "odd"),
            port: 8080,
            server: "default/cluster-unauthenticated",
            protocol: "detect(10s)",
            authz: &["default/cluster-unauthenticated nets=10.0.0.0/8 unauthenticated"],
        },
        Case {
            name: "a namespace annotation set later applies",
            default: AllUnauthenticated,
            setup: |s| add_ns(s, "shop", Some("cluster-authenticated")),
            pod: ("shop", "users"),
            port: 8080,
            server: "default/cluster-authenticated",
            protocol: "detect(10s)",
            authz: &["default/cluster-authenticated nets=10.0.0.0/8 mesh ids= suffixes=*"],
        },
        Case {
            name: "an opaque port of the pod is opaque",
            default: AllUnauthenticated,
            setup: nothing,
            pod: ("shop", "db"),
            port: 3306,
            server: "default/all-unauthenticated",
            protocol: "opaque",
            authz: &["default/all-unauthenticated nets=0.0.0.0/0,::/0 unauthenticated"],
        },
    ]);
}

#[test]
fn servers_select_by_port_number_and_name() {
    use DefaultPolicy::*;
    run(&[
        Case {
            name: "by number: the Server's protocol, nothing allowed without a policy",
            default: AllUnauthenticated,
            setup: users_server,
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-http",
            protocol: "HTTP/1",
            authz: &[],
        },
        Case {
            name: "by number: another port keeps the default",
            default: AllUnauthenticated,
            setup: users_server,
            pod: ("shop", "users"),
            port: 9990,
            server: "default/all-unauthenticated",
            protocol: "detect(10s)",
            authz: &["default/all-unauthenticated nets=0.0.0.0/0,::/0 unauthenticated"],
        },
        Case {
            name: "by number: a pod the selector does not match keeps the default",
            default: AllUnauthenticated,
            setup: users_server,
            pod: ("shop", "web"),
            port: 8080,
            server: "default/all-unauthenticated",
            protocol: "detect(10s)",
            authz: &["default/all-unauthenticated nets=0.0.0.0/0,::/0 unauthenticated"],
        },
        Case {
            name: "by number: a Server selects only pods of its namespace",
            default: Deny,
            setup: |s| add_server(s, "all", "api", json!(8080), json!({})),
            pod: ("quiet", "api"),
            port: 8080,
            server: "default/deny",
            protocol: "detect(10s)",
            authz: &[],
        },
        Case {
            name: "by name: the container port named http",
            default: AllUnauthenticated,
            setup: |s| {
                add_server(
                    s,
                    "users-named",
                    "users",
                    json!("http"),
                    json!({"proxyProtocol": "HTTP/2"}),
                )
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-named",
            protocol: "HTTP/2",
            authz: &[],
        },
        Case {
            name: "by name: the name does not select another port",
            default: Deny,
            setup: |s| add_server(s, "users-named", "users", json!("http"), json!({})),
            pod: ("shop", "users"),
            port: 9990,
            server: "default/deny",
            protocol: "detect(10s)",
            authz: &[],
        },
        Case {
            name: "by name: a name no container has selects nothing",
            default: Deny,
            setup: |s| add_server(s, "users-grpc", "users", json!("grpc"), json!({})),
            pod: ("shop", "users"),
            port: 8080,
            server: "default/deny",
            protocol: "detect(10s)",
            authz: &[],
        },
        Case {
            name: "accessPolicy admits beside the policies",
            default: Deny,
            setup: |s| {
                add_server(
                    s,
                    "users-open",
                    "users",
                    json!(8080),
                    json!({"proxyProtocol": "opaque", "accessPolicy": "all-authenticated"}),
                )
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-open",
            protocol: "opaque",
            authz: &["default/all-authenticated nets=0.0.0.0/0,::/0 mesh ids= suffixes=*"],
        },
    ]);
}

#[test]
fn authorization_policies_and_authentications() {
    use DefaultPolicy::*;
    run(&[
        Case {
            name: "MeshTLS by identity, by `*.` suffix and `*`",
            default: Deny,
            setup: |s| {
                users_server(s);
                add_mesh(
                    s,
                    "callers",
                    json!({"identities": [
                    format!("web.shop.{ID}"), format!("*.billing.{ID}"), "*"]}),
                );
                add_policy(
                    s,
                    "users",
                    ("Server", "users-http"),
                    &[("MeshTLSAuthentication", "callers")],
                );
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-http",
            protocol: "HTTP/1",
            authz: &[
                "authorizationpolicy/users nets=0.0.0.0/0,::/0 mesh ids=web.shop.serviceaccount.identity.strait.cluster.local suffixes=*.billing.serviceaccount.identity.strait.cluster.local,*",
            ],
        },
        Case {
            name: "MeshTLS by service account, `*` account and namespace",
            default: Deny,
            setup: |s| {
                users_server(s);
                add_mesh(
                    s,
                    "callers",
                    json!({"identityRefs": [
                    {"kind": "ServiceAccount", "name": "web"},
                    {"kind": "ServiceAccount", "name": "*", "namespace": "billing"},
                    {"kind": "Namespace", "name": "ops"}]}),
                );
                add_policy(
                    s,
                    "users",
                    ("Server", "users-http"),
                    &[("MeshTLSAuthentication", "callers")],
                );
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-http",
            protocol: "HTTP/1",
            authz: &[
                "authorizationpolicy/users nets=0.0.0.0/0,::/0 mesh ids=web.shop.serviceaccount.identity.strait.cluster.local suffixes=*.billing.serviceaccount.identity.strait.cluster.local,*.ops.serviceaccount.identity.strait.cluster.local",
            ],
        },
        Case {
            name: "a ServiceAccount reference",
            default: Deny,
            setup: |s| {
                users_server(s);
                add_policy(
                    s,
                    "users",
                    ("Server", "users-http"),
                    &[("ServiceAccount", "web")],
                );
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-http",
            protocol: "HTTP/1",
            authz: &[
                "authorizationpolicy/users nets=0.0.0.0/0,::/0 mesh ids=web.shop.serviceaccount.identity.strait.cluster.local suffixes=",
            ],
        },
        Case {
            name: "NetworkAuthentication: CIDRs with an exception, one address; no identity",
            default: Deny,
            setup: |s| {
                users_server(s);
                add_network(
                    s,
                    "office",
                    json!([
                    {"cidr": "10.1.0.0/16", "except": ["10.1.2.0/24"]},
                    {"cidr": "192.168.7.7"}]),
                );
                add_policy(
                    s,
                    "users",
                    ("Server", "users-http"),
                    &[("NetworkAuthentication", "office")],
                );
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-http",
            protocol: "HTTP/1",
            authz: &[
                "authorizationpolicy/users nets=10.1.0.0/16!10.1.2.0/24,192.168.7.7/32 unauthenticated",
            ],
        },
        Case {
            name: "MeshTLS and NetworkAuthentication together: both must hold",
            default: Deny,
            setup: |s| {
                users_server(s);
                add_network(s, "office", json!([{"cidr": "10.1.0.0/16"}]));
                add_mesh(
                    s,
                    "callers",
                    json!({"identities": [format!("web.shop.{ID}")]}),
                );
                add_policy(
                    s,
                    "users",
                    ("Server", "users-http"),
                    &[
                        ("MeshTLSAuthentication", "callers"),
                        ("NetworkAuthentication", "office"),
                    ],
                );
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-http",
            protocol: "HTTP/1",
            authz: &[
                "authorizationpolicy/users nets=10.1.0.0/16 mesh ids=web.shop.serviceaccount.identity.strait.cluster.local suffixes=",
            ],
        },
        Case {
            name: "a namespace target covers every Server of the namespace, in name order",
            default: Deny,
            setup: |s| {
                users_server(s);
                add_mesh(s, "callers", json!({"identities": ["*"]}));
                add_policy(
                    s,
                    "b-all",
                    ("Namespace", "shop"),
                    &[("MeshTLSAuthentication", "callers")],
                );
                add_network(s, "office", json!([{"cidr": "10.1.0.0/16"}]));
                add_policy(
                    s,
                    "a-office",
                    ("Server", "users-http"),
                    &[("NetworkAuthentication", "office")],
                );
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-http",
            protocol: "HTTP/1",
            authz: &[
                "authorizationpolicy/a-office nets=10.1.0.0/16 unauthenticated",
                "authorizationpolicy/b-all nets=0.0.0.0/0,::/0 mesh ids= suffixes=*",
            ],
        },
        Case {
            name: "a namespace target does not open a port no Server selects",
            default: Deny,
            setup: |s| {
                add_mesh(s, "callers", json!({"identities": ["*"]}));
                add_policy(
                    s,
                    "all",
                    ("Namespace", "shop"),
                    &[("MeshTLSAuthentication", "callers")],
                );
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "default/deny",
            protocol: "detect(10s)",
            authz: &[],
        },
        Case {
            name: "a policy for another Server grants nothing here",
            default: Deny,
            setup: |s| {
                users_server(s);
                add_server(s, "web-http", "web", json!(8080), json!({}));
                add_mesh(s, "callers", json!({"identities": ["*"]}));
                add_policy(
                    s,
                    "web",
                    ("Server", "web-http"),
                    &[("MeshTLSAuthentication", "callers")],
                );
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-http",
            protocol: "HTTP/1",
            authz: &[],
        },
        Case {
            name: "a missing MeshTLSAuthentication grants nothing",
            default: Deny,
            setup: |s| {
                users_server(s);
                add_policy(
                    s,
                    "users",
                    ("Server", "users-http"),
                    &[("MeshTLSAuthentication", "ghost")],
                );
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-http",
            protocol: "HTTP/1",
            authz: &[],
        },
        Case {
            name: "a missing NetworkAuthentication grants nothing, not even with a valid MeshTLS",
            default: Deny,
            setup: |s| {
                users_server(s);
                add_mesh(s, "callers", json!({"identities": ["*"]}));
                add_policy(
                    s,
                    "users",
                    ("Server", "users-http"),
                    &[
                        ("MeshTLSAuthentication", "callers"),
                        ("NetworkAuthentication", "ghost"),
                    ],
                );
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-http",
            protocol: "HTTP/1",
            authz: &[],
        },
        Case {
            name: "an invalid CIDR grants nothing",
            default: Deny,
            setup: |s| {
                users_server(s);
                add_network(s, "office", json!([{"cidr": "10.1.0.0/99"}]));
                add_policy(
                    s,
                    "users",
                    ("Server", "users-http"),
                    &[("NetworkAuthentication", "office")],
                );
            },
            pod: ("shop", "users"),
            port: 8080,
            server: "server/users-http",
            protocol: "HTTP/1",
            authz: &[],
        },
    ]);
}

#[test]
fn resolve_says_why_a_policy_is_not_accepted() {
    struct Case {
        name: &'static str,
        setup: fn(&mut State),
        want: Result<(), (&'static str, &'static str)>,
    }
    let cases = [
        Case {
            name: "everything resolves",
            setup: |s| {
                users_server(s);
                add_mesh(s, "callers", json!({"identities": ["*"]}));
                add_policy(
                    s,
                    "p",
                    ("Server", "users-http"),
                    &[("MeshTLSAuthentication", "callers")],
                );
            },
            want: Ok(()),
        },
        Case {
            name: "the Server is missing",
            setup: |s| {
                add_mesh(s, "callers", json!({"identities": ["*"]}));
                add_policy(
                    s,
                    "p",
                    ("Server", "users-http"),
                    &[("MeshTLSAuthentication", "callers")],
                );
            },
            want: Err(("TargetNotFound", "Server shop/users-http does not exist")),
        },
        Case {
            name: "another namespace is targeted",
            setup: |s| add_policy(s, "p", ("Namespace", "quiet"), &[("ServiceAccount", "web")]),
            want: Err(("TargetNotFound", "only its own namespace")),
        },
        Case {
            name: "the MeshTLSAuthentication is missing",
            setup: |s| {
                users_server(s);
                add_policy(
                    s,
                    "p",
                    ("Server", "users-http"),
                    &[("MeshTLSAuthentication", "ghost")],
                );
            },
            want: Err((
                "AuthenticationNotFound",
                "MeshTLSAuthentication shop/ghost does not exist",
            )),
        },
        Case {
            name: "the NetworkAuthentication is missing",
            setup: |s| {
                users_server(s);
                add_policy(
                    s,
                    "p",
                    ("Server", "users-http"),
                    &[("NetworkAuthentication", "ghost")],
                );
            },
            want: Err((
                "AuthenticationNotFound",
                "NetworkAuthentication shop/ghost does not exist",
            )),
        },
        Case {
            name: "a MeshTLSAuthentication that names nobody",
            setup: |s| {
                users_server(s);
                add_mesh(s, "empty", json!({}));
                add_policy(
                    s,
                    "p",
                    ("Server", "users-http"),
                    &[("MeshTLSAuthentication", "empty")],
                );
            },
            want: Err(("InvalidAuthentication", "names no identity")),
        },
        Case {
            name: "an invalid CIDR",
            setup: |s| {
                users_server(s);
                add_network(s, "office", json!([{"cidr": "10.1.0.0/99"}]));
                add_policy(
                    s,
                    "p",
                    ("Server", "users-http"),
                    &[("NetworkAuthentication", "office")],
                );
            },
            want: Err(("InvalidAuthentication", "is not a CIDR")),
        },
    ];
    for c in cases {
        let mut state = base();
        (c.setup)(&mut state);
        let key = ("shop".to_owned(), "p".to_owned());
        let p = state
            .authz_policies
            .get(&key)
            .expect("fixture has policy p");
        let got = resolve(&state, "shop", p, &cfg(DefaultPolicy::Deny));
        match (got, c.want) {
            (Ok(_), Ok(())) => {}
            (Err(e), Err((reason, message))) => {
                assert_eq!(e.reason, reason, "{}", c.name);
                assert!(
                    e.message.contains(message),
                    "{}: {:?} lacks {message:?}",
                    c.name,
                    e.message
                );
            }
            (got, want) => panic!("{}: got {got:?}, want {want:?}", c.name),
        }
    }
}

#[test]
fn probe_paths_stay_open_under_any_policy() {
    for policy in DefaultPolicy::ALL {
        let state = base();
        let key = ("shop".to_owned(), "users".to_owned());
        let got = server(&state, &key, 9990, &cfg(policy)).expect("answer");
        let want_default = usize::from(policy != DefaultPolicy::Deny);
        assert_eq!(
            routes(&got),
            vec![
                "probe[/ready]=1".to_owned(),
                format!("default[/*]={want_default}")
            ],
            "{policy}"
        );
        // The port without a probe has only the default route.
        let got = server(&state, &key, 8080, &cfg(policy)).expect("answer");
        assert_eq!(
            routes(&got),
            vec![format!("default[/*]={want_default}")],
            "{policy}"
        );
    }
}

#[test]
fn the_oldest_of_two_servers_wins() {
    let mut state = base();
    users_server(&mut state);
    add_server(&mut state, "a-newer", "users", json!("http"), json!({}));
    if let Some(s) = state
        .servers
        .get_mut(&("shop".to_owned(), "a-newer".to_owned()))
    {
        s.created = "2025-06-01T00:00:00Z".parse().ok();
    }
    if let Some(s) = state
        .servers
        .get_mut(&("shop".to_owned(), "users-http".to_owned()))
    {
        s.created = "2025-01-01T00:00:00.5Z".parse().ok();
    }
    let key = ("shop".to_owned(), "users".to_owned());
    let got = server(&state, &key, 8080, &cfg(DefaultPolicy::Deny)).expect("answer");
    assert_eq!(
        got.labels.get("name").map(String::as_str),
        Some("users-http")
    );
}

#[test]
fn lookups_that_have_no_answer() {
    let state = base();
    let cfg = cfg(DefaultPolicy::Deny);
    let users = ("shop".to_owned(), "users".to_owned());
    assert_eq!(
        server(&state, &users, 0, &cfg).err(),
        Some(LookupError::BadPort(0))
    );
    assert_eq!(
        server(&state, &users, 65536, &cfg).err(),
        Some(LookupError::BadPort(65536))
    );
    let ghost = ("shop".to_owned(), "ghost".to_owned());
    assert_eq!(
        server(&state, &ghost, 8080, &cfg).err(),
        Some(LookupError::PodNotFound(ghost))
    );
}

#[test]
fn workloads() {
    let ok = |ns: &str, pod: &str| Ok((ns.to_owned(), pod.to_owned()));
    assert_eq!(parse_workload("shop:users"), ok("shop", "users"));
    assert_eq!(
        parse_workload(r#"{"ns":"shop","pod":"users"}"#),
        ok("shop", "users")
    );
    for bad in [
        "",
        "shop",
        ":users",
        "shop:",
        "a:b:c",
        r#"{"ns":"shop"}"#,
        r#"{"ns":"","pod":"x"}"#,
        "{",
    ] {
        assert_eq!(
            parse_workload(bad),
            Err(LookupError::BadWorkload(bad.to_owned())),
            "{bad:?}"
        );
    }
}
