//! Policy on real nodes: Servers and AuthorizationPolicies applied with kubectl, enforced by
//! the injected proxies and by east's gateway, changed without restarts.
//!
//! ```text
//!  east: Server web-http (web's `http`) ◄─ AuthorizationPolicy ─ MeshTLSAuthentication callers
//!        Server gateway (the gateway's 4143) ◄─ AuthorizationPolicy ─ MeshTLSAuthentication west-client
//! ```
//!
//! With only east's `caller` admitted to web, west's client (which reaches web through the
//! gateway, so web sees the gateway's identity) gets 403; once the gateway's identity is
//! added it is answered. With only west's `client` admitted at the gateway, west's `users`
//! pod is refused there while the client still crosses; the gateway counts the refusal.
//! Everything is deleted at the end, so the stages after this one see the default policy.

use crate::NS;
use crate::install_support::*;
use crate::linked_support::*;
use crate::nodes_support::eventually;
use serde_json::Value;
use strait_localcluster::Cluster;

const WEB_LOCAL: &str = "web.shop.svc.cluster.local:80";
const MC_NS: &str = "strait-multicluster";

/// `strait-sample get ADDR` in `app`'s pod: the body, or the error (its status among it).
async fn get(c: &Cluster, app: &str, addr: &str) -> Result<String, String> {
    sample(c, NS, app, &["get", addr]).await
}

/// Waits until `app`'s request to `addr` is answered (`want` = None) or fails with `want`
/// in its error ("403"), or fails with the last outcome.
async fn until_status(c: &Cluster, app: &str, addr: &str, want: Option<&str>, why: &str) {
    until_status_in((c, None), app, addr, want, why).await;
}

/// [`until_status`], and on failure what `server`'s web proxy logged.
async fn until_status_in(
    (c, server): (&Cluster, Option<&Cluster>),
    app: &str,
    addr: &str,
    want: Option<&str>,
    why: &str,
) {
    let last = std::sync::Mutex::new(String::new());
    let seen = eventually(CONVERGE, || async {
        let r = get(c, app, addr).await;
        *last.lock().unwrap() = format!("{r:?}");
        match (want, r) {
            (None, Ok(_)) => Some(()),
            (Some(s), Err(e)) if e.contains(s) => Some(()),
            _ => None,
        }
    })
    .await;
    if seen.is_none() {
        let mut diag = String::new();
        if let Some(s) = server {
            for args in [
                &[
                    "-n",
                    NS,
                    "logs",
                    "deploy/web",
                    "-c",
                    "strait-proxy",
                    "--tail=60",
                ][..],
                &[
                    "-n",
                    NS,
                    "get",
                    "pods",
                    "-l",
                    "app=web",
                    "-o",
                    "jsonpath={.items[0].spec.initContainers[1].env}",
                ][..],
                &["-n", NS, "get", "authorizationpolicy", "-o", "yaml"][..],
                &[
                    "-n",
                    "strait",
                    "logs",
                    "deploy/strait-control-plane",
                    "--tail=40",
                ][..],
            ] {
                diag.push_str(&format!(
                    "\n$ kubectl {}\n{}",
                    args.join(" "),
                    s.kubectl(args).await.unwrap_or_else(|e| e.to_string())
                ));
            }
        }
        panic!(
            "{why}: {app} → {addr} never gave {want:?}: {}{diag}",
            last.lock().unwrap()
        );
    }
}

fn web_policy(identities: &str) -> String {
    format!(
        r#"---
apiVersion: policy.strait.dev/v1beta3
kind: Server
metadata: {{name: web-http, namespace: {NS}}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  port: http
  proxyProtocol: HTTP/1
---
apiVersion: policy.strait.dev/v1alpha1
kind: MeshTLSAuthentication
metadata: {{name: callers, namespace: {NS}}}
spec:
  identityRefs: {identities}
---
apiVersion: policy.strait.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: web-callers, namespace: {NS}}}
spec:
  targetRef: {{group: policy.strait.dev, kind: Server, name: web-http}}
  requiredAuthenticationRefs:
  - {{group: policy.strait.dev, kind: MeshTLSAuthentication, name: callers}}
"#
    )
}

fn gateway_policy() -> String {
    format!(
        r#"---
apiVersion: policy.strait.dev/v1beta3
kind: Server
metadata: {{name: gateway, namespace: {MC_NS}}}
spec:
  podSelector: {{matchLabels: {{app.kubernetes.io/name: strait-gateway}}}}
  port: {port}
  proxyProtocol: opaque
---
apiVersion: policy.strait.dev/v1alpha1
kind: MeshTLSAuthentication
metadata: {{name: west-client, namespace: {MC_NS}}}
spec:
  identityRefs: [{{kind: ServiceAccount, name: client, namespace: {NS}}}]
---
apiVersion: policy.strait.dev/v1alpha1
kind: AuthorizationPolicy
metadata: {{name: gateway-west-client, namespace: {MC_NS}}}
spec:
  targetRef: {{group: policy.strait.dev, kind: Server, name: gateway}}
  requiredAuthenticationRefs:
  - {{group: policy.strait.dev, kind: MeshTLSAuthentication, name: west-client}}
"#,
        port = strait_core::ports::GATEWAY
    )
}

pub async fn enforced(pair: &crate::Pair) {
    let (west, east) = (&pair.west, &pair.east);

    // Only east's caller may call web.
    east.apply(&web_policy("[{kind: ServiceAccount, name: caller}]"))
        .await
        .unwrap();
    until_status(east, "caller", WEB_LOCAL, None, "caller is admitted").await;
    until_status_in(
        (west, Some(east)),
        "client",
        crate::WEB,
        Some("403"),
        "the gateway's identity is not admitted to web",
    )
    .await;
    let web_pod = running_pod(east, NS, "app=web").await.unwrap();
    let pod = json(east, &["-n", NS, "get", "pod", &web_pod]).await;
    let m = proxy_metrics(&pod).await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("inbound_http_authz_deny_total{")
                && l.contains("srv_name=\"web-http\"")),
        "web's proxy counted the refusals:\n{m}"
    );
    assert!(
        m.lines()
            .any(|l| l.starts_with("inbound_http_authz_allow_total{")
                && l.contains("authz_name=\"web-callers\"")
                && l.contains(&id("caller", NS))),
        "web's proxy counted caller's requests:\n{m}"
    );

    // The gateway's identity added: west's client is answered, nothing restarted.
    // Restarts of the app and of its proxy (a native sidecar, among the init containers).
    let restarts = |p: &Value| -> i64 {
        ["containerStatuses", "initContainerStatuses"]
            .iter()
            .flat_map(|k| p["status"][k].as_array().cloned().unwrap_or_default())
            .filter_map(|c| c["restartCount"].as_i64())
            .sum()
    };
    let before = restarts(&pod);
    east.apply(&web_policy(&format!(
        "[{{kind: ServiceAccount, name: caller}}, {{kind: ServiceAccount, name: strait-gateway, namespace: {MC_NS}}}]"
    )))
    .await
    .unwrap();
    until_status(
        west,
        "client",
        crate::WEB,
        None,
        "the gateway is admitted now",
    )
    .await;
    let pod = json(east, &["-n", NS, "get", "pod", &web_pod]).await;
    assert_eq!(
        restarts(&pod),
        before,
        "the policy change restarted nothing"
    );

    // Only west's client may cross east's gateway: west's users pod is refused there.
    east.apply(&gateway_policy()).await.unwrap();
    let refused = eventually(CONVERGE, || async {
        get(west, "users", crate::WEB).await.err().map(drop)
    })
    .await;
    assert!(
        refused.is_some(),
        "west's users still crosses east's gateway"
    );
    until_status(
        west,
        "client",
        crate::WEB,
        None,
        "west's client still crosses",
    )
    .await;
    let gm = gateway_metrics(east).await;
    assert!(
        gm.contains("gateway_refused_total{reason=\"unauthorized\"}"),
        "the gateway counted the refusal:\n{gm}"
    );
    assert!(
        gm.lines()
            .any(|l| l.starts_with("inbound_tcp_authz_deny_total{")
                && l.contains("srv_name=\"gateway\"")),
        "the gateway counted the policy's refusal:\n{gm}"
    );

    for (ns, kinds) in [
        (
            NS,
            "authorizationpolicy/web-callers meshtlsauthentication/callers server/web-http",
        ),
        (
            MC_NS,
            "authorizationpolicy/gateway-west-client meshtlsauthentication/west-client server/gateway",
        ),
    ] {
        let mut args = vec!["-n", ns, "delete"];
        args.extend(kinds.split(' '));
        east.kubectl(&args).await.unwrap();
    }
    until_status(west, "client", crate::WEB, None, "the default policy again").await;
}
