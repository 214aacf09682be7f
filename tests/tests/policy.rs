//! The policy services against a real kube-apiserver: the in-process gRPC server watches a
//! local cluster (with the policy CRDs installed from their Rust types), and tonic clients from
//! `linkerd2-proxy-api` ask what a proxy would ask: `OutboundPolicies/Watch` for a Service and
//! `InboundServerPolicies/WatchPort` for a pod's port.
//!
//! Pods here are API objects only (no process, no network namespace): policy reads their
//! labels, service account and container ports, never their addresses.
//!
//! All cases share one cluster and run in order. Every wait is bounded; no assertion is about
//! wall-clock time.

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::Api;
use kube::api::{Patch, PatchParams};
use linkerd2_proxy_api::inbound as in_pb;
use linkerd2_proxy_api::inbound::inbound_server_policies_client::InboundServerPoliciesClient;
use linkerd2_proxy_api::meta::metadata::Kind as MetaKind;
use linkerd2_proxy_api::outbound as out_pb;
use linkerd2_proxy_api::outbound::outbound_policies_client::OutboundPoliciesClient;
use std::net::SocketAddr;
use std::time::Duration;
use strait_control_plane::destination::Discovery;
use strait_control_plane::policy::{self, Policies, PolicyConfig};
use strait_core::labels;
use strait_k8s_api::policy::{
    AuthorizationPolicy, MeshTLSAuthentication, NetworkAuthentication, Server,
};
use strait_localcluster::{Cluster, ClusterConfig};
use tonic::Code;

#[path = "policy_support/mod.rs"]
mod policy_support;
use policy_support::{create, install_crds};

const WAIT: Duration = Duration::from_secs(30);
const NS: &str = "shop";
const WEB_ID: &str = "web.shop.serviceaccount.identity.strait.cluster.local";

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Running {
    addr: SocketAddr,
    _discovery: Discovery,
    _policies: std::sync::Arc<Policies>,
    _task: tokio::task::JoinHandle<()>,
}

async fn start(cluster: &Cluster) -> Result<Running, Error> {
    let discovery = Discovery::spawn(cluster.client());
    let config = PolicyConfig {
        cluster_domain: cluster.cluster_domain().to_owned(),
        ..PolicyConfig::default()
    };
    let policies = std::sync::Arc::new(Policies::spawn(cluster.client(), &discovery, config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let serving = policies.clone();
    let task = tokio::spawn(async move {
        if let Err(e) = policy::serve(listener, &serving, std::future::pending()).await {
            eprintln!("policy server failed: {e}");
        }
    });
    tokio::time::timeout(WAIT, discovery.synced()).await?;
    tokio::time::timeout(WAIT, policies.index().synced()).await?;
    Ok(Running {
        addr,
        _discovery: discovery,
        _policies: policies,
        _task: task,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy() -> Result<(), Error> {
    strait_localcluster::require_root()?;
    let cluster = Cluster::start(ClusterConfig::new("policy")).await?;
    cluster.ensure_namespace(NS).await?;
    cluster.ensure_service_account(NS, "users").await?;
    install_crds(&cluster.client()).await?;
    let running = start(&cluster).await?;

    let svc = objects(&cluster).await?;
    outbound(&cluster, &running, &svc).await?;
    inbound(&cluster, &running).await?;
    Ok(())
}

/// Service `users` (8080 `http`), its pod `users-1`, Server `users-http` (by port name),
/// MeshTLSAuthentication `web` (service account `web`) and AuthorizationPolicy `users`.
async fn objects(cluster: &Cluster) -> Result<Service, Error> {
    let c = cluster.client();
    let svc = create::<Service>(
        &c,
        serde_json::json!({
            "metadata": {"name": "users", "namespace": NS},
            "spec": {"selector": {"app": "users"},
                     "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]},
        }),
    )
    .await?;
    create::<Pod>(
        &c,
        serde_json::json!({
            "metadata": {"name": "users-1", "namespace": NS, "labels": {"app": "users"}},
            "spec": {"serviceAccountName": "users", "containers": [{
                "name": "users", "image": "users",
                "ports": [{"name": "http", "containerPort": 8080}],
            }]},
        }),
    )
    .await?;
    create::<Server>(
        &c,
        serde_json::json!({
            "apiVersion": "policy.strait.dev/v1beta3", "kind": "Server",
            "metadata": {"name": "users-http", "namespace": NS},
            "spec": {"podSelector": {"matchLabels": {"app": "users"}}, "port": "http",
                     "proxyProtocol": "HTTP/1"},
        }),
    )
    .await?;
    create::<MeshTLSAuthentication>(
        &c,
        serde_json::json!({
            "apiVersion": "policy.strait.dev/v1alpha1", "kind": "MeshTLSAuthentication",
            "metadata": {"name": "web", "namespace": NS},
            "spec": {"identityRefs": [{"kind": "ServiceAccount", "name": "web"}]},
        }),
    )
    .await?;
    create::<AuthorizationPolicy>(
        &c,
        serde_json::json!({
            "apiVersion": "policy.strait.dev/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "users", "namespace": NS},
            "spec": {"targetRef": {"group": "policy.strait.dev", "kind": "Server", "name": "users-http"},
                     "requiredAuthenticationRefs": [
                         {"group": "policy.strait.dev", "kind": "MeshTLSAuthentication", "name": "web"}]},
        }),
    )
    .await?;
    Ok(svc)
}

/// `<ns>/<name>:<port> <detect|opaque> <Destination.Get path>` of an outbound answer.
fn outbound_line(p: &out_pb::OutboundPolicy) -> String {
    use out_pb::proxy_protocol::Kind;
    let resource = match p.metadata.as_ref().and_then(|m| m.kind.as_ref()) {
        Some(MetaKind::Resource(r)) => format!("{}/{}:{}", r.namespace, r.name, r.port),
        other => format!("{other:?}"),
    };
    let (protocol, route_backend) = match p.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(Kind::Detect(d)) => {
            let h1 = d.http1.as_ref();
            let backend = h1
                .and_then(|h| h.routes.first())
                .and_then(|r| r.rules.first())
                .and_then(|r| r.backends.as_ref())
                .and_then(|b| match b.kind.as_ref()? {
                    out_pb::http_route::distribution::Kind::FirstAvailable(f) => {
                        f.backends.first()?.backend.clone()
                    }
                    _ => None,
                });
            let accrual = h1.is_some_and(|h| h.failure_accrual.is_some());
            let timeout = d.timeout.map(|t| t.seconds).unwrap_or_default();
            (format!("detect({timeout}s, accrual={accrual})"), backend)
        }
        Some(Kind::Opaque(o)) => {
            let backend = o
                .routes
                .first()
                .and_then(|r| r.rules.first())
                .and_then(|r| r.backends.as_ref())
                .and_then(|b| match b.kind.as_ref()? {
                    out_pb::opaque_route::distribution::Kind::FirstAvailable(f) => {
                        f.backends.first()?.backend.clone()
                    }
                    _ => None,
                });
            ("opaque".to_owned(), backend)
        }
        other => (format!("{other:?}"), None),
    };
    let path = route_backend
        .as_ref()
        .and_then(|b| {
            let queue = b.queue.as_ref()?;
            match b.kind.as_ref()? {
                out_pb::backend::Kind::Balancer(p2c) => {
                    match p2c.discovery.as_ref()?.kind.as_ref()? {
                        out_pb::backend::endpoint_discovery::Kind::Dst(d) => {
                            Some(format!("{} queue={}", d.path, queue.capacity))
                        }
                    }
                }
                _ => None,
            }
        })
        .unwrap_or_else(|| "no balancer".to_owned());
    format!("{resource} {protocol} {path}")
}

fn authority(a: &str) -> out_pb::TrafficSpec {
    out_pb::TrafficSpec {
        source_workload: "shop:web".into(),
        target: Some(out_pb::traffic_spec::Target::Authority(a.into())),
    }
}

/// Reads a stream until an answer's summary is `want`, bounded by [`WAIT`].
async fn until<T: std::fmt::Debug>(
    stream: &mut tonic::Streaming<T>,
    what: &str,
    line: impl Fn(&T) -> String,
    want: &str,
) -> Result<T, Error> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    loop {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(m))) => {
                let got = line(&m);
                if got == want {
                    return Ok(m);
                }
                last = Some(got);
            }
            Ok(Ok(None)) => return Err(format!("stream ended waiting for {what}").into()),
            Ok(Err(s)) => return Err(format!("stream failed waiting for {what}: {s}").into()),
            Err(_) => {
                return Err(
                    format!("timed out waiting for {what}: want {want:?}, last {last:?}").into(),
                );
            }
        }
    }
}

/// Watch by name and by cluster IP: detected, over Destination.Get of the Service; the opaque
/// annotation arrives on the open stream; a name that is no Service is NotFound.
async fn outbound(cluster: &Cluster, running: &Running, svc: &Service) -> Result<(), Error> {
    let mut client = OutboundPoliciesClient::connect(format!("http://{}", running.addr)).await?;
    let path = format!("users.shop.svc.{}:8080", cluster.cluster_domain());
    let detected = format!("shop/users:8080 detect(10s, accrual=true) {path} queue=100");
    let mut by_name = client
        .watch(authority(&format!(
            "users.shop.svc.{}:8080",
            cluster.cluster_domain()
        )))
        .await?
        .into_inner();
    until(&mut by_name, "the policy by name", outbound_line, &detected).await?;
    println!("OutboundPolicies/Watch users.shop.svc:8080 -> {detected}");

    let ip = svc
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.clone())
        .ok_or("the Service has no cluster IP")?;
    let addr: SocketAddr = format!("{ip}:8080").parse()?;
    let mut by_ip = client
        .watch(out_pb::TrafficSpec {
            source_workload: "shop:web".into(),
            target: Some(out_pb::traffic_spec::Target::Addr(addr.into())),
        })
        .await?
        .into_inner();
    until(
        &mut by_ip,
        "the policy by cluster IP",
        outbound_line,
        &detected,
    )
    .await?;

    // The opaque-ports annotation: both open streams turn opaque.
    let services: Api<Service> = Api::namespaced(cluster.client(), NS);
    services
        .patch(
            "users",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {labels::OPAQUE_PORTS: "8080"}},
            })),
        )
        .await?;
    let opaque = format!("shop/users:8080 opaque {path} queue=100");
    until(&mut by_name, "opaque by name", outbound_line, &opaque).await?;
    until(&mut by_ip, "opaque by cluster IP", outbound_line, &opaque).await?;

    for target in ["ghost.shop.svc.cluster.local:80", "example.com:443"] {
        let got = client.watch(authority(target)).await;
        assert_eq!(
            got.err().map(|s| s.code()),
            Some(Code::NotFound),
            "{target} is no Service"
        );
    }
    Ok(())
}

/// `<kind>/<name> <protocol> [<authorization>: <identities>]` of an inbound answer.
fn inbound_line(s: &in_pb::Server) -> String {
    use in_pb::authn::Permit;
    use in_pb::authn::permit_mesh_tls::Clients;
    let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
    let protocol = match s.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(in_pb::proxy_protocol::Kind::Http1(_)) => "HTTP/1".to_owned(),
        Some(in_pb::proxy_protocol::Kind::Detect(_)) => "detect".to_owned(),
        other => format!("{other:?}"),
    };
    let authz: Vec<_> = s
        .authorizations
        .iter()
        .map(|a| {
            let ids = match a.authentication.as_ref().and_then(|a| a.permit.as_ref()) {
                Some(Permit::MeshTls(m)) => match &m.clients {
                    Some(Clients::Identities(c)) => c
                        .identities
                        .iter()
                        .map(|i| i.name.clone())
                        .collect::<Vec<_>>()
                        .join(","),
                    other => format!("{other:?}"),
                },
                Some(Permit::Unauthenticated(_)) => "unauthenticated".to_owned(),
                None => "none".to_owned(),
            };
            format!(
                "{}: {ids}",
                a.labels.get("name").cloned().unwrap_or_default()
            )
        })
        .collect();
    format!(
        "{}/{} {protocol} [{}]",
        label("kind"),
        label("name"),
        authz.join("; ")
    )
}

/// The `Accepted` condition of AuthorizationPolicy `users`: `(status, reason, message)`.
async fn accepted(cluster: &Cluster) -> Result<Option<(String, String, String)>, Error> {
    let api: Api<AuthorizationPolicy> = Api::namespaced(cluster.client(), NS);
    let p = api.get("users").await?;
    Ok(p.status.and_then(|s| {
        s.conditions
            .into_iter()
            .find(|c| c.type_ == "Accepted")
            .map(|c| (c.status, c.reason, c.message))
    }))
}

async fn wait_accepted(
    cluster: &Cluster,
    what: &str,
    want: impl Fn(&(String, String, String)) -> bool,
) -> Result<(String, String, String), Error> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = None;
    while tokio::time::Instant::now() < deadline {
        last = accepted(cluster).await?;
        if let Some(c) = last.as_ref().filter(|c| want(c)) {
            return Ok(c.clone());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(format!("timed out waiting for {what}; last {last:?}").into())
}

/// WatchPort of the pod's 8080: the Server with the policy's authorization; the policy changes
/// to name a missing authentication (the open stream drops the authorization, the status
/// says which reference is missing), then back.
async fn inbound(cluster: &Cluster, running: &Running) -> Result<(), Error> {
    let mut client =
        InboundServerPoliciesClient::connect(format!("http://{}", running.addr)).await?;
    let mut stream = client
        .watch_port(in_pb::PortSpec {
            workload: "shop:users-1".into(),
            port: 8080,
        })
        .await?
        .into_inner();
    let allowed = format!("server/users-http HTTP/1 [users: {WEB_ID}]");
    until(
        &mut stream,
        "the Server and its policy",
        inbound_line,
        &allowed,
    )
    .await?;
    println!("InboundServerPolicies/WatchPort shop:users-1 8080 -> {allowed}");
    wait_accepted(cluster, "Accepted=True", |c| c.0 == "True").await?;

    // Another port of the pod: no Server, the default policy.
    let other = client
        .get_port(in_pb::PortSpec {
            workload: "shop:users-1".into(),
            port: 9090,
        })
        .await?
        .into_inner();
    assert_eq!(
        inbound_line(&other),
        "default/all-unauthenticated detect [all-unauthenticated: unauthenticated]"
    );
    let missing = client
        .get_port(in_pb::PortSpec {
            workload: "shop:ghost".into(),
            port: 8080,
        })
        .await;
    assert_eq!(missing.err().map(|s| s.code()), Some(Code::NotFound));

    // The policy now also requires a NetworkAuthentication that does not exist.
    let policies: Api<AuthorizationPolicy> = Api::namespaced(cluster.client(), NS);
    let refs = |extra: bool| {
        let mut refs = vec![serde_json::json!(
            {"group": "policy.strait.dev", "kind": "MeshTLSAuthentication", "name": "web"})];
        if extra {
            refs.push(serde_json::json!(
                {"group": "policy.strait.dev", "kind": "NetworkAuthentication", "name": "office"}));
        }
        serde_json::json!({"spec": {"requiredAuthenticationRefs": refs}})
    };
    policies
        .patch("users", &PatchParams::default(), &Patch::Merge(refs(true)))
        .await?;
    let denied = "server/users-http HTTP/1 []";
    until(
        &mut stream,
        "the policy to grant nothing",
        inbound_line,
        denied,
    )
    .await?;
    let (_, reason, message) = wait_accepted(cluster, "Accepted=False", |c| c.0 == "False").await?;
    assert_eq!(reason, "AuthenticationNotFound");
    assert!(
        message.contains("NetworkAuthentication shop/office"),
        "the status names what is missing: {message}"
    );
    println!("AuthorizationPolicy users: Accepted=False {reason}: {message}");

    // The missing NetworkAuthentication appears: accepted again, and the stream says so.
    create::<NetworkAuthentication>(
        &cluster.client(),
        serde_json::json!({
            "apiVersion": "policy.strait.dev/v1alpha1", "kind": "NetworkAuthentication",
            "metadata": {"name": "office", "namespace": NS},
            "spec": {"networks": [{"cidr": "0.0.0.0/0"}, {"cidr": "::/0"}]},
        }),
    )
    .await?;
    until(
        &mut stream,
        "the policy to allow again",
        inbound_line,
        &allowed,
    )
    .await?;
    wait_accepted(cluster, "Accepted=True again", |c| c.0 == "True").await?;
    Ok(())
}
