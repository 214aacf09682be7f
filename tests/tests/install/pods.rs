//! What the install test checks pods with: the projected token a proxy holds, a pod whose
//! identity traffic is tapped, an injected pod's spec without the webhook's variable parts,
//! and one request through a gateway.

use crate::install_support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use strait_core::identity::Identity;
use strait_core::transport_header::{ALPN, SessionProtocol, TransportHeader};
use strait_localcluster::node::images;
use strait_tls::testing::TestPki;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
/// What every service-account token (a JWT) starts with: `{"alg":`, base64url.
pub const JWT_PREFIX: &[u8] = b"eyJhbGciOi";

/// The token the kubelet projected into pod `name`'s proxy, read through the proxy
/// process's root (the kubelet's tmpfs is mounted in the node's mount namespace, not ours).
pub fn projected_token(name: &str) -> Option<Vec<u8>> {
    let want = format!("POD_NAME={name}");
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let proc = entry.path();
        let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
        if comm.trim() != "strait-proxy" {
            continue;
        }
        let environ = std::fs::read(proc.join("environ")).unwrap_or_default();
        if environ.split(|b| *b == 0).any(|v| v == want.as_bytes()) {
            return std::fs::read(proc.join("root/var/run/secrets/tokens/strait-identity-token"))
                .ok();
        }
    }
    None
}

/// A pod written out by `strait inject --manual`, whose proxy reaches identity through `tap`
/// and expects the identity service to be `identity_name`.
pub fn tapped_pod(
    name: &str,
    ns: &str,
    anchors: &str,
    tap: SocketAddr,
    identity_name: &str,
) -> String {
    let sample = images::reference("sample");
    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}}}
spec:
  serviceAccountName: web
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {sample}
    imagePullPolicy: IfNotPresent
    args: [serve, "8080"]
    securityContext: {{runAsNonRoot: true, runAsUser: 1000}}
"#
    );
    let out = strait(
        &[
            "inject",
            "--manual",
            "--identity-trust-anchors-file",
            anchors,
            "-o",
            "json",
            "-",
        ],
        &pod,
    )
    .unwrap();
    let mut list: Value = serde_json::from_str(&out).unwrap();
    let pod = &mut list["items"][0];
    let proxy = pod["spec"]["initContainers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "strait-proxy")
        .unwrap();
    for e in proxy["env"].as_array_mut().unwrap() {
        match e["name"].as_str().unwrap() {
            "STRAIT_PROXY_IDENTITY_SVC_ADDR" => e["value"] = tap.to_string().into(),
            "STRAIT_PROXY_IDENTITY_SVC_NAME" => e["value"] = identity_name.into(),
            _ => {}
        }
    }
    list.to_string()
}

/// The pod's init containers as the API server stored them, without what differs between
/// any two pods (the service-account volume's random name).
pub fn injected_spec(pod: &Value) -> Value {
    let mut init = pod["spec"]["initContainers"].clone();
    for c in init.as_array_mut().into_iter().flatten() {
        if let Some(mounts) = c["volumeMounts"].as_array_mut() {
            mounts.retain(|m| {
                !m["name"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("kube-api-access-")
            });
        }
    }
    let volumes: Vec<Value> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| {
            v["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("strait-")
        })
        .cloned()
        .collect();
    serde_json::json!({"initContainers": init, "volumes": volumes, "annotations": pod["metadata"]["annotations"]})
}

/// mTLS to east's gateway as `client` (None: no certificate), a transport header for
/// `web.shop:80`, and one HTTP/1 GET; the body.
pub async fn through_gateway(
    gw: SocketAddr,
    pki: &TestPki,
    client: Option<&str>,
) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let creds = client.map(|c| pki.leaf(&c.parse::<Identity>().unwrap()));
    let (_tx, rx) = strait_tls::credentials_channel(creds);
    let cfg = strait_tls::client_config(&pki.anchors, rx, &[ALPN]).unwrap();
    let tcp = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(gw)).await??;
    let gateway: Identity = id("strait-gateway", "strait-multicluster").parse()?;
    let mut tls = strait_tls::connect(cfg, &gateway, tcp).await?;
    let header = TransportHeader {
        port: 80,
        name: Some("web.shop.svc.cluster.local".into()),
        protocol: Some(SessionProtocol::Http1),
    };
    tls.write_all(&header.encode()).await?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let rsp = send
        .send_request(
            http::Request::get("/")
                .header("host", "web-east.shop.svc.cluster.local")
                .body(Empty::<Bytes>::new())?,
        )
        .await?;
    let status = rsp.status();
    let body = rsp.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Err(format!("{status}: {body}").into());
    }
    Ok(body)
}
