//! Inbound and outbound policy enforced by real proxies in pods, the control plane's policy
//! service answering beside destination over mTLS.
//!
//! Pod `guarded-1` serves HTTP on 8080 and TCP echo on 7000. Server `guarded-http` (HTTP/1,
//! port `http`) and Server `guarded-tcp` (opaque, 7000) each admit only the `client` service
//! account (MeshTLSAuthentication `client-only`). `client` is let in; `billing` gets 403 over
//! HTTP and a closed connection over TCP; the test itself, in plaintext from the host, gets
//! 403 with the reason; the proxy's metrics count both. Then `billing` is added to the
//! authentication and is let in without a restart. Service `guarded-opaque` carries the
//! opaque-ports annotation: the client's proxy, told so by `OutboundPolicies`, proxies HTTP
//! sent to it as TCP. Last, an open TCP connection from `client` is closed when the
//! authentication stops naming it, and counted as terminated.

use crate::mesh::*;
use crate::policy_support::create;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use std::net::SocketAddr;
use std::time::Duration;
use strait_core::labels;
use strait_k8s_api::policy::{AuthorizationPolicy, MeshTLSAuthentication, Server};
use strait_localcluster::{Cluster, Pod, PodSpec};
use strait_proxy::addr::EndpointAddr;
use strait_proxy::connect::Endpoint;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn objects(cluster: &Cluster) -> Result<(), Error> {
    for (name, port, protocol) in [
        ("guarded-http", "http", "HTTP/1"),
        ("guarded-tcp", "echo", "opaque"),
    ] {
        create::<Server>(
            &cluster.client(),
            serde_json::json!({
                "apiVersion": "policy.strait.dev/v1beta3", "kind": "Server",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"podSelector": {"matchLabels": {"app": "guarded"}}, "port": port,
                         "proxyProtocol": protocol},
            }),
        )
        .await?;
        create::<AuthorizationPolicy>(&cluster.client(),
            serde_json::json!({
                "apiVersion": "policy.strait.dev/v1alpha1", "kind": "AuthorizationPolicy",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"targetRef": {"group": "policy.strait.dev", "kind": "Server", "name": name},
                         "requiredAuthenticationRefs": [{"group": "policy.strait.dev",
                             "kind": "MeshTLSAuthentication", "name": "client-only"}]},
            }),
        )
        .await?;
    }
    create::<MeshTLSAuthentication>(
        &cluster.client(),
        serde_json::json!({
            "apiVersion": "policy.strait.dev/v1alpha1", "kind": "MeshTLSAuthentication",
            "metadata": {"name": "client-only", "namespace": NS},
            "spec": {"identityRefs": [{"kind": "ServiceAccount", "name": "client"}]},
        }),
    )
    .await?;
    Ok(())
}

/// The value of the first sample line of `family` whose labels contain every one of `has`.
fn sample(metrics: &str, family: &str, has: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .find(|l| has.iter().all(|h| l.contains(h)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn tcp(pod: &Pod, addr: &str) -> Result<String, Error> {
    let out = pod.exec(TOOL, &["tcp", addr, "hello-policy"], WAIT).await?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub async fn enforced(
    cluster: &Cluster,
    mesh: &Mesh,
    client: &Pod,
    billing: &Pod,
) -> Result<(), Error> {
    objects(cluster).await?;
    let http_addr = service(cluster, "guarded", "guarded", 80, 8080).await?;
    let tcp_addr = service(cluster, "guarded-echo", "guarded", 7000, 7000).await?;
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "guarded-opaque", "namespace": NS,
                     "annotations": {labels::OPAQUE_PORTS: "7100"}},
        "spec": {"selector": {"app": "guarded"}, "ports": [{"name": "p", "port": 7100, "targetPort": 8080}]},
    }))?;
    let svc = Api::<Service>::namespaced(cluster.client(), NS)
        .create(&PostParams::default(), &svc)
        .await?;
    let opaque_addr = format!(
        "{}:7100",
        svc.spec.and_then(|s| s.cluster_ip).ok_or("no cluster IP")?
    );

    let guarded = cluster
        .pod(
            PodSpec::new(NS, "guarded-1")
                .label("app", "guarded")
                .annotation(labels::PROXY_VERSION, "test")
                .service_account("web")
                .port("http", 8080)
                .port("echo", 7000),
        )
        .await?;
    let mut app = guarded.command(TOOL);
    app.args(["serve", "8080"]);
    guarded.spawn("app", app)?;
    let mut echo = guarded.command(TOOL);
    echo.args(["echo", "7000"]);
    guarded.spawn("echo", echo)?;
    let pid = add_proxy(mesh, &guarded, "web").await?;

    // HTTP: the client in, billing refused.
    let r = load(client, &http_addr, 10, 2, false).await?;
    assert_eq!(
        r.ok,
        10,
        "client is allowed: {r:?}\n{}",
        guarded.log_tails(30)
    );
    let r = load(billing, &http_addr, 10, 2, false).await?;
    assert_eq!(
        r.statuses.get("403"),
        Some(&10),
        "billing is refused with 403: {r:?}"
    );
    // In plaintext, from outside the mesh: 403 and the reason.
    let direct = SocketAddr::new(guarded.ip().into(), 8080);
    assert_eq!(
        http_get(direct, "/").await?,
        (403, "unauthorized request on route\n".to_owned())
    );

    // TCP: the client's bytes echoed, billing's connection closed.
    assert_eq!(tcp(client, &tcp_addr).await?, "hello-policy");
    assert_eq!(
        tcp(billing, &tcp_addr).await?,
        "",
        "billing's connection is closed"
    );

    let m = metrics(&guarded).await;
    let client_id = format!("client_id=\"{}\"", id("client"));
    let allowed = sample(
        &m,
        "inbound_http_authz_allow_total",
        &[
            "srv_name=\"guarded-http\"",
            "authz_name=\"guarded-http\"",
            &client_id,
        ],
    );
    assert!(allowed >= Some(10.0), "allowed requests counted:\n{m}");
    let denied = sample(
        &m,
        "inbound_http_authz_deny_total",
        &["srv_name=\"guarded-http\""],
    );
    assert!(denied >= Some(11.0), "denied requests counted:\n{m}");
    assert!(
        sample(
            &m,
            "inbound_tcp_authz_allow_total",
            &["srv_name=\"guarded-tcp\"", &client_id]
        ) >= Some(1.0),
        "allowed connection counted:\n{m}"
    );
    assert!(
        sample(
            &m,
            "inbound_tcp_authz_deny_total",
            &["srv_name=\"guarded-tcp\""]
        ) >= Some(1.0),
        "refused connection counted:\n{m}"
    );

    // A policy change applies without a restart.
    Api::<MeshTLSAuthentication>::namespaced(cluster.client(), NS)
        .patch(
            "client-only",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"identityRefs": [
                {"kind": "ServiceAccount", "name": "client"},
                {"kind": "ServiceAccount", "name": "billing"}]}})),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = load(billing, &http_addr, 5, 1, false).await?;
        if r.ok == 5 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "billing still refused after the change: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(tcp(billing, &tcp_addr).await?, "hello-policy");
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the same proxy process"
    );

    // Outbound: the Service's opaque port, known only from OutboundPolicies, is proxied as
    // TCP by the client's proxy (HTTP inside it still reaches the app).
    let r = load(client, &opaque_addr, 5, 1, false).await?;
    assert_eq!(r.ok, 5, "{r:?}");
    let cm = metrics(client).await;
    let authority = format!("authority=\"{opaque_addr}\"");
    assert!(
        sample(
            &cm,
            "tcp_open_total",
            &["direction=\"outbound\"", &authority]
        ) >= Some(1.0),
        "the client's proxy opened TCP connections to the opaque Service:\n{cm}"
    );
    assert_eq!(
        sample(
            &cm,
            "request_total",
            &["direction=\"outbound\"", &authority]
        ),
        None,
        "and proxied no HTTP request to it"
    );

    // An open TCP connection the policy stops admitting is closed.
    let mut conn = mesh
        .connector(&id("client"))
        .connect(&Endpoint {
            addr: EndpointAddr(SocketAddr::new(guarded.ip().into(), 7000)),
            identity: Some(id("web")),
            transport_header: None,
        })
        .await?;
    conn.write_all(b"still-here").await?;
    let mut back = [0u8; 10];
    tokio::time::timeout(WAIT, conn.read_exact(&mut back)).await??;
    assert_eq!(&back, b"still-here");
    Api::<MeshTLSAuthentication>::namespaced(cluster.client(), NS)
        .patch(
            "client-only",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"identityRefs": [
                {"kind": "ServiceAccount", "name": "billing"}]}})),
        )
        .await?;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(WAIT, conn.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the revoked connection is closed: {closed:?} {rest:?}"
    );
    let m = metrics(&guarded).await;
    assert!(
        sample(
            &m,
            "inbound_tcp_authz_terminate_total",
            &["srv_name=\"guarded-tcp\""]
        ) >= Some(1.0),
        "the closed connection is counted:\n{m}"
    );
    Ok(())
}
