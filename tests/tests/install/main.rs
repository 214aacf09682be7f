//! Installing Strait on real-node clusters, as a platform team would: the real helm installs
//! both charts in `west` and `east` with one shared trust anchor, on kubelet, containerd and
//! kube-proxy running the images built here; the proxy injector adds the proxy to the pods
//! of an annotated namespace; `strait install | kubectl apply -f -` gives a working control
//! plane too.
//!
//! In order: every Deployment becomes Ready; injected pods get their certificate and talk
//! mTLS (the server proxy's metrics name the client); opt-out, Jobs, bad annotations,
//! kube-system, `strait inject --manual` equal to the webhook; the identity port carries no
//! token in the clear, and a proxy told the wrong identity-service name sends none; east's
//! gateway answers west's identity through its LoadBalancer address and refuses another
//! anchor's; the injector restarted mid-run; `helm upgrade`, `helm uninstall` (only the CRDs
//! stay), then `strait install`.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

#[path = "../install_support/mod.rs"]
mod install_support;
#[path = "../nodes_support/mod.rs"]
mod nodes_support;
mod pods;
#[path = "../wire_support/mod.rs"]
mod wire_support;

use install_support::*;
use nodes_support::eventually;
use pods::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use strait_localcluster::node::images;
use strait_tls::testing::TestPki;
use wire_support::{assert_token_absent, contains, relay};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strait_installs_with_helm_and_the_cli_and_injects_pods() {
    let pair = Pair::start().await;
    let (ids, west, east) = (&pair.ids, &pair.west, &pair.east);
    let (west_home, east_home) = (&pair.west_home, &pair.east_home);

    // helm lint, then helm install of both charts in both clusters, one anchor.
    for chart in ["strait-control-plane", "strait-multicluster"] {
        let dir = charts().join(chart);
        let anchors = format!("identityTrustAnchorsPEM={}", ids.file("ca.crt"));
        helm(
            west,
            west_home,
            &["lint", dir.to_str().unwrap(), "--set-file", &anchors],
        )
        .await
        .unwrap_or_else(|e| panic!("helm lint {chart}: {e}"));
    }
    pair.install(&[]).await;

    // A namespace annotated for injection: its pods come up with the proxy.
    west.apply(&shop("shop", true)).await.unwrap();
    east.apply(&shop("shop", false)).await.unwrap();
    tokio::join!(
        rollout(west, "shop", "web"),
        rollout(west, "shop", "client"),
        rollout(east, "shop", "web"),
    );
    let web = pods(west, "shop", "app=web").await;
    let client = pods(west, "shop", "app=client").await;
    for p in web.iter().chain(&client) {
        assert_eq!(
            containers(p),
            [
                "strait-proxy-init",
                "strait-proxy",
                containers(p)[2].as_str()
            ],
            "{}",
            p["metadata"]["name"]
        );
        assert!(
            p["metadata"]["annotations"][strait_core::labels::PROXY_VERSION].is_string(),
            "the destination service's meshed mark: {}",
            p["metadata"]
        );
    }
    // The client reaches web through both proxies; the server proxy names the client's
    // identity, so the connection was mTLS with the certificate identity issued.
    let client_pod = client[0]["metadata"]["name"].as_str().unwrap().to_owned();
    let body = eventually(Duration::from_secs(60), || async {
        west.kubectl(&[
            "-n",
            "shop",
            "exec",
            &client_pod,
            "-c",
            "client",
            "--",
            "/usr/local/bin/strait-sample",
            "get",
            "web:80",
        ])
        .await
        .ok()
    })
    .await
    .expect("the meshed client reaches web");
    assert!(body.starts_with("hello from web-"), "{body}");
    let admin: SocketAddr = format!("{}:{}", pod_ip(&web[0]), strait_core::ports::ADMIN)
        .parse()
        .unwrap();
    let want = format!("client_id=\"{}\"", id("client", "shop"));
    let metrics = eventually(Duration::from_secs(30), || async {
        let m = http_get(admin, "/metrics").await.ok()?;
        m.lines()
            .any(|l| {
                l.contains("direction=\"inbound\"")
                    && l.contains(&want)
                    && l.contains("tls=\"true\"")
            })
            .then_some(m)
    })
    .await;
    assert!(
        metrics.is_some(),
        "web's proxy never counted an mTLS request from {want}: {}",
        http_get(admin, "/metrics").await.unwrap_or_default()
    );

    // Opt-out, a Job, a bad annotation, kube-system.
    let sample = images::reference("sample");
    west.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: optout
  namespace: shop
  annotations: {{strait.dev/inject: disabled}}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{{name: app, image: {sample}, imagePullPolicy: IfNotPresent, args: [serve, "8080"], securityContext: {{runAsNonRoot: true, runAsUser: 1000}}}}]
---
apiVersion: batch/v1
kind: Job
metadata: {{name: once, namespace: shop}}
spec:
  backoffLimit: 2
  template:
    spec:
      serviceAccountName: client
      restartPolicy: Never
      containers: [{{name: get, image: {sample}, imagePullPolicy: IfNotPresent, args: [get, "web:80"], securityContext: {{runAsNonRoot: true, runAsUser: 1000}}}}]
"#
    ))
    .await
    .unwrap();
    let optout = json(west, &["-n", "shop", "get", "pod", "optout"]).await;
    assert_eq!(containers(&optout), ["app"]);
    west.kubectl(&[
        "-n",
        "shop",
        "wait",
        "--for=condition=complete",
        "job/once",
        "--timeout=180s",
    ])
    .await
    .unwrap_or_else(|e| panic!("the injected Job never completed: {e}"));
    let job_pods = pods(west, "shop", "job-name=once").await;
    assert!(job_pods.iter().all(has_proxy), "the Job's pod was injected");

    let bad = west
        .apply(&format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: bad
  namespace: shop
  annotations: {{config.strait.dev/proxy-cpu-request: lots}}
spec:
  containers: [{{name: app, image: {sample}, args: [serve, "8080"]}}]
"#
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("config.strait.dev/proxy-cpu-request") && bad.contains("lots"),
        "the refusal names the annotation: {bad}"
    );

    west.kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "pods",
        "-l",
        "k8s-app=kube-dns",
        "--wait=true",
    ])
    .await
    .unwrap();
    rollout(west, "kube-system", "coredns").await;
    let dns = pods(west, "kube-system", "k8s-app=kube-dns").await;
    assert!(
        !dns.is_empty() && !dns.iter().any(has_proxy),
        "kube-system is never injected"
    );

    // `strait inject --manual` writes the pod the webhook makes.
    let manual = strait(
        &[
            "inject",
            "--manual",
            "--identity-trust-anchors-file",
            &ids.file("ca.crt"),
            "-",
        ],
        &web_deployment("web-manual", "shop"),
    )
    .unwrap();
    west.apply(&manual).await.unwrap();
    rollout(west, "shop", "web-manual").await;
    let by_hand = pods(west, "shop", "app=web-manual").await;
    assert_eq!(
        injected_spec(&by_hand[0]),
        injected_spec(&web[0]),
        "strait inject --manual and the webhook differ"
    );
    // Plain `strait inject` sets the annotation the webhook acts on.
    let annotated = strait(&["inject", "-"], &web_deployment("web-annotated", "plain")).unwrap();
    let annotated: Value = serde_saphyr::from_str(&annotated).unwrap();
    assert_eq!(
        annotated["spec"]["template"]["metadata"]["annotations"][strait_core::labels::INJECT],
        "enabled"
    );

    // The identity port carries TLS, never the token in the clear; a proxy that expects
    // another identity for the identity service sends no token at all.
    let cp = &pods(
        west,
        "strait",
        "app.kubernetes.io/name=strait-control-plane",
    )
    .await[0];
    let identity_addr: SocketAddr = format!("{}:{}", pod_ip(cp), strait_core::ports::IDENTITY_GRPC)
        .parse()
        .unwrap();
    let (tap, wire) = relay(west.host_addr(), identity_addr).await;
    let (wrong_tap, wrong_wire) = relay(west.host_addr(), identity_addr).await;
    west.kubectl(&["create", "namespace", "tap"]).await.unwrap();
    west.ensure_service_account("tap", "web").await.unwrap();
    let anchors = ids.file("ca.crt");
    west.apply(&tapped_pod(
        "tapped",
        "tap",
        &anchors,
        tap,
        &id("strait-identity", "strait"),
    ))
    .await
    .unwrap();
    west.apply(&tapped_pod(
        "wrong",
        "tap",
        &anchors,
        wrong_tap,
        &id("strait-destination", "strait"),
    ))
    .await
    .unwrap();
    west.kubectl(&[
        "-n",
        "tap",
        "wait",
        "--for=condition=Ready",
        "pod/tapped",
        "--timeout=120s",
    ])
    .await
    .unwrap_or_else(|e| panic!("the tapped pod was never certified: {e}"));
    let token = projected_token("tapped").expect("the pod's projected token");
    assert!(
        token.starts_with(JWT_PREFIX),
        "a service-account token is a JWT"
    );
    let wire = wire.lock().unwrap().clone();
    assert!(
        wire.len() > 100,
        "the proxy's identity request went through the tap"
    );
    assert_eq!(
        wire[0], 0x16,
        "the identity connection starts with a TLS handshake"
    );
    assert_token_absent(&wire, &token);
    assert!(
        !contains(&wire, JWT_PREFIX),
        "a JWT crossed the wire in the clear"
    );
    let refused = eventually(Duration::from_secs(60), || async {
        let logs = west
            .kubectl(&["-n", "tap", "logs", "wrong", "-c", "strait-proxy"])
            .await
            .ok()?;
        logs.contains("certify failed").then_some(logs)
    })
    .await;
    assert!(
        refused.is_some(),
        "the wrong-identity proxy never said its certify failed"
    );
    let wrong = json(west, &["-n", "tap", "get", "pod", "wrong"]).await;
    assert_ne!(
        wrong["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready")
            .map(|c| c["status"].clone()),
        Some("True".into()),
        "a proxy that could not verify identity became ready"
    );
    let wrong_wire = wrong_wire.lock().unwrap().clone();
    assert!(
        !wrong_wire.is_empty(),
        "the wrong-identity proxy tried to connect"
    );
    assert!(
        !contains(&wrong_wire, JWT_PREFIX),
        "a token went to an unverified server"
    );

    // East's gateway, through its LoadBalancer address: mTLS with west's identity reaches
    // east's web; a certificate from another anchor, or none, is refused.
    let gw: SocketAddr = format!(
        "{}:{}",
        nodes_support::load_balancer_ip(east, "strait-multicluster", "strait-gateway").await,
        strait_core::ports::GATEWAY
    )
    .parse()
    .unwrap();
    let east_web: Vec<String> = pods(east, "shop", "app=web")
        .await
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned())
        .collect();
    let client_id = id("client", "shop");
    let body = eventually(Duration::from_secs(60), || async {
        through_gateway(gw, &ids.west, Some(&client_id)).await.ok()
    })
    .await
    .expect("west's identity reaches east's web through the gateway");
    assert!(
        east_web.iter().any(|p| body == format!("hello from {p}")),
        "{body} is not from {east_web:?}"
    );
    assert!(
        through_gateway(gw, &TestPki::new(), Some(&client_id))
            .await
            .is_err()
    );
    assert!(through_gateway(gw, &ids.west, None).await.is_err());

    // The injector restarted mid-run: pods that need no injection are created while it is
    // down; pods that need it come up injected once it is back.
    west.kubectl(&[
        "-n",
        "strait",
        "delete",
        "pods",
        "-l",
        "app.kubernetes.io/name=strait-control-plane",
        "--wait=false",
    ])
    .await
    .unwrap();
    west.apply(&shop("plain", false)).await.unwrap();
    west.kubectl(&["-n", "shop", "scale", "deployment/web", "--replicas=3"])
        .await
        .unwrap();
    tokio::join!(
        rollout(west, "plain", "web"),
        rollout(west, "plain", "client"),
        rollout(west, "shop", "web"),
    );
    let plain = pods(west, "plain", "app=web").await;
    assert!(!plain.iter().any(has_proxy));
    let scaled = pods(west, "shop", "app=web").await;
    assert_eq!(scaled.len(), 3);
    assert!(
        scaled.iter().all(has_proxy),
        "a pod that asked for the proxy ran without it"
    );

    // What each component holds idle on a real node (RSS, MB), for the note.
    for (c, name) in [(&west, "west"), (&east, "east")] {
        let rss: Vec<_> = nodes_support::memory_by_process(c)
            .into_iter()
            .filter(|(p, _)| p.starts_with("strait"))
            .collect();
        eprintln!("RSS in {name}: {rss:?}");
    }

    // helm upgrade with a changed value rolls the gateway; helm uninstall leaves the CRDs.
    let mc = charts().join("strait-multicluster");
    helm(
        east,
        east_home,
        &[
            "upgrade",
            "strait-multicluster",
            mc.to_str().unwrap(),
            "--reuse-values",
            "--set",
            "gateway.logLevel=debug",
        ],
    )
    .await
    .unwrap();
    rollout(east, "strait-multicluster", "strait-gateway").await;
    let gateway = json(
        east,
        &[
            "-n",
            "strait-multicluster",
            "get",
            "deployment",
            "strait-gateway",
        ],
    )
    .await;
    let env = &gateway["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "STRAIT_LOG" && e["value"] == "debug"),
        "{env}"
    );
    eventually(Duration::from_secs(60), || async {
        through_gateway(gw, &ids.west, Some(&client_id)).await.ok()
    })
    .await
    .expect("the upgraded gateway serves");

    for release in ["strait-multicluster", "strait-control-plane"] {
        helm(east, east_home, &["uninstall", release, "--wait"])
            .await
            .unwrap_or_else(|e| panic!("helm uninstall {release}: {e}"));
    }
    for ns in ["strait", "strait-multicluster"] {
        east.kubectl(&[
            "wait",
            "--for=delete",
            &format!("namespace/{ns}"),
            "--timeout=120s",
        ])
        .await
        .unwrap_or_else(|e| panic!("namespace {ns} stayed: {e}"));
    }
    let left = east
        .kubectl(&[
            "get",
            "clusterroles,clusterrolebindings,mutatingwebhookconfigurations,validatingadmissionpolicies,validatingadmissionpolicybindings,customresourcedefinitions",
            "-l",
            "app.kubernetes.io/part-of=strait",
            "-o",
            "name",
        ])
        .await
        .unwrap();
    let crds = east
        .kubectl(&["get", "customresourcedefinitions", "-o", "name"])
        .await
        .unwrap();
    assert!(
        crds.contains("links.multicluster.strait.dev"),
        "helm keeps the CRDs: {crds}"
    );
    assert!(
        left.lines()
            .all(|l| l.starts_with("customresourcedefinition")),
        "helm uninstall left: {left}"
    );

    // `strait install | kubectl apply -f -` gives a working control plane: the webhook
    // injects again and identity certifies the pod.
    let install = strait(
        &[
            "install",
            "--identity-trust-anchors-file",
            &ids.file("ca.crt"),
            "--identity-issuer-certificate-file",
            &ids.file("east.crt"),
            "--identity-issuer-key-file",
            &ids.file("east.key"),
        ],
        "",
    )
    .unwrap();
    east.apply(&install).await.unwrap();
    rollout(east, "strait", "strait-control-plane").await;
    east.kubectl(&["annotate", "namespace", "shop", "strait.dev/inject=enabled"])
        .await
        .unwrap();
    // The webhook may take a moment to reach the new control plane: the policy refuses pods
    // meanwhile, and the ReplicaSet retries.
    east.kubectl(&["-n", "shop", "rollout", "restart", "deployment/web"])
        .await
        .unwrap();
    rollout(east, "shop", "web").await;
    let web = pods(east, "shop", "app=web").await;
    assert!(
        !web.is_empty() && web.iter().all(has_proxy),
        "the CLI-installed injector injected east's web: {:?}",
        web.iter().map(containers).collect::<Vec<_>>()
    );
}
