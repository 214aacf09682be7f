//! The two-cluster suite on real nodes: what Linkerd's multicluster suite checks on its two
//! k3d clusters, then the faults a production pair meets. Both clusters are installed with
//! helm (one trust anchor) and linked both ways with `strait multicluster link`: west → east
//! through east's gateway, east → west in remote-discovery mode (pod to pod, the flat network
//! the harness gives every cluster).
//!
//! ```text
//!  west                                    east
//!  client ──HTTP/1, gRPC, TCP──► gateway ──► web, greeter, echo   (mirrors *-east)
//!  users  ◄───────── pod to pod, mTLS ─────── caller               (mirror users-west)
//! ```
//!
//! In order: `check --multicluster` passes and `gateways` shows the peer alive, on each side;
//! traffic by DNS name reaches each exported service with the client's identity seen at the
//! gateway; the Link's label and annotation exclusions hold on the mirror; remote discovery
//! reaches west's pod directly, that pod's proxy seeing the caller's own identity. Then the
//! faults, each with its outcome: east's gateway gone (mirrors not ready, calls refused at
//! once; back, the same client is served again), east's API server stopped across an export
//! and an unexport (nothing deleted meanwhile, traffic keeps flowing, converges when back),
//! west's mirror leader deleted during changes (another replica takes over; no orphan, no
//! duplicate), east's kubelet restarted (pods and mirrors recover). Unexport and unlink
//! remove their mirrors; east's trust anchor replaced refuses cross-cluster traffic and
//! `check` says why. Nothing of the run is left on the machine afterwards.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod install_support;
mod linked_support;
mod nodes_support;

use install_support::*;
use linked_support::*;
use nodes_support::{Traces, eventually};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use strait_e2e::samples::{self, Workload};
use strait_localcluster::Cluster;
use strait_tls::testing::TestPki;

const NS: &str = "shop";
/// What east exports through its gateway, as west's mirrors.
const WEB: &str = "web-east.shop.svc.cluster.local:80";
const GREETER: &str = "greeter-east.shop.svc.cluster.local:8080";
const ECHO: &str = "echo-east.shop.svc.cluster.local:9000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_linked_clusters_carry_traffic_both_ways_and_recover_from_faults() {
    let mut clock = Clock::default();
    let mut traces = Traces::default();
    let mut pair = Pair::start().await;
    // West runs two mirror replicas (the leader fault) and lets east's Link read its Pods
    // (remote discovery).
    pair.install_with(&["mirror.replicas=2", "remoteAccess.pods=true"], &[])
        .await;
    workloads(&pair).await;
    traces.record(&pair.west);
    traces.record(&pair.east);

    clock.lap("clusters, charts and samples");
    link_both_ways(&pair).await;
    clock.lap("links both ways, checks and gateways");
    traffic_through_the_gateway(&pair).await;
    clock.lap("HTTP/1, gRPC and TCP through the gateway");
    remote_discovery(&pair).await;
    clock.lap("remote discovery");
    gateway_gone(&pair).await;
    clock.lap("fault: east's gateway gone and back");
    api_server_outage(&mut pair).await;
    clock.lap("fault: east's API server stopped and started");
    leader_deleted(&pair).await;
    clock.lap("fault: west's mirror leader deleted");
    kubelet_restarted(&mut pair).await;
    clock.lap("fault: east's kubelet restarted");
    unexport_and_unlink(&pair).await;
    clock.lap("unexport and unlink");
    anchor_replaced(&pair).await;
    clock.lap("fault: east's trust anchor replaced");

    drop(pair);
    let left = traces.left();
    assert!(left.is_empty(), "the suite left behind: {left:?}");
}

/// East serves web (HTTP), greeter (gRPC) and echo (TCP) and runs `caller`; west runs
/// `client` and serves `users`. All injected; east's three exported through the gateway,
/// west's users for remote discovery. East's web Service carries labels and annotations the
/// Link excludes.
async fn workloads(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let east_yaml = [
        samples::namespace(NS, true),
        samples::servers(NS),
        Workload::new(NS, "caller", &["serve-http", "8081"]).yaml(),
        // A second Service on web's pods, exported later (during an outage).
        samples::service_of(NS, "web-v2", "web", &[("http", 80, "http")]),
    ]
    .concat();
    let west_yaml = [
        samples::namespace(NS, true),
        samples::client(NS),
        Workload::new(NS, "users", &["serve-echo-http", "8080"])
            .port("http", 8080)
            .yaml(),
        samples::service(NS, "users", &[("http", 80, "http")]),
    ]
    .concat();
    east.apply(&east_yaml).await.unwrap();
    west.apply(&west_yaml).await.unwrap();
    tokio::join!(
        async {
            for d in ["web", "greeter", "echo", "caller"] {
                rollout(east, NS, d).await;
            }
        },
        async {
            for d in ["client", "users"] {
                rollout(west, NS, d).await;
            }
        },
    );
    east.kubectl(&[
        "-n",
        NS,
        "label",
        "service",
        "web",
        "tier=backend",
        "team.example.com/owner=payments",
    ])
    .await
    .unwrap();
    east.kubectl(&[
        "-n",
        NS,
        "annotate",
        "service",
        "web",
        "docs.example.com/runbook=web-oncall",
        "secret.example.com/token=not-for-other-clusters",
    ])
    .await
    .unwrap();
    let out = strait_at(east, &["export", "web", "greeter", "echo", "-n", NS])
        .await
        .unwrap();
    assert!(out.contains("service/echo exported"), "{out}");
    strait_at(west, &["export", "users", "-n", NS, "--remote-discovery"])
        .await
        .unwrap();
}

/// West links to east (with label and annotation exclusions set on the Link) and east to
/// west (remote discovery, which west's chart allows); both `check`s pass and each side's
/// `gateways` shows the other alive.
async fn link_both_ways(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let link = strait_at(
        east,
        &[
            "multicluster",
            "link",
            "--cluster-name",
            "east",
            "-o",
            "json",
        ],
    )
    .await
    .unwrap();
    let mut objects: Value = serde_json::from_str(&link).unwrap();
    let spec = &mut objects["items"][1]["spec"];
    spec["excludedLabels"] = serde_json::json!(["team.example.com/*"]);
    spec["excludedAnnotations"] = serde_json::json!(["secret.example.com/token"]);
    west.apply(&objects.to_string()).await.unwrap();

    let link = strait_at(
        west,
        &[
            "multicluster",
            "link",
            "--cluster-name",
            "west",
            "-o",
            "json",
        ],
    )
    .await
    .unwrap();
    let objects: Value = serde_json::from_str(&link).unwrap();
    assert_eq!(
        objects["items"][1]["spec"]["remoteDiscoverySelector"]["matchLabels"]["mirror.strait.dev/exported"],
        "remote-discovery",
        "west's account may read Pods, so the Link discovers remotely: {link}"
    );
    east.apply(&link).await.unwrap();

    for (c, peer) in [(west, "east"), (east, "west")] {
        check_passes(c, "after linking both ways").await;
        let alive = eventually(CONVERGE, || async {
            let out = strait_at(c, &["multicluster", "gateways", "-o", "json"])
                .await
                .ok()?;
            let rows: Value = serde_json::from_str(&out).ok()?;
            rows.as_array()?
                .iter()
                .any(|r| r["cluster"] == peer && r["alive"] == true)
                .then_some(())
        })
        .await;
        assert!(
            alive.is_some(),
            "{}: gateways never showed {peer} alive:\n{}",
            c.name(),
            diagnose(c, if c.name() == "west" { east } else { west }).await
        );
    }
}

/// HTTP/1, gRPC and TCP from west's client by the mirrors' DNS names, each answered by the
/// exported service's pod in east, the client's identity counted at east's gateway; the
/// mirror carries web's labels and annotations except the excluded ones.
async fn traffic_through_the_gateway(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let web_pod = running_pod(east, NS, "app=web").await.unwrap();
    let body = sample_eventually((west, east), NS, "client", &["get", WEB]).await;
    assert!(body.contains(&format!("pod={web_pod}")), "{body}");

    let greeter_pod = running_pod(east, NS, "app=greeter").await.unwrap();
    let grpc = sample_eventually((west, east), NS, "client", &["grpc", GREETER, "5"]).await;
    let grpc: Value = serde_json::from_str(grpc.trim()).unwrap();
    assert_eq!(grpc["ok"], 5, "{grpc}");
    let bodies = grpc["by_body"].as_object().unwrap();
    assert!(
        bodies
            .keys()
            .all(|b| b.contains(&format!("pod={greeter_pod}")) && b.contains("HTTP/2")),
        "every gRPC call reached east's greeter over HTTP/2: {grpc}"
    );

    let echo_pod = running_pod(east, NS, "app=echo").await.unwrap();
    let echoed =
        sample_eventually((west, east), NS, "client", &["tcp", ECHO, "over raw TCP"]).await;
    assert_eq!(echoed.trim(), "over raw TCP", "echoed by {echo_pod}");

    let ids = client_ids(&gateway_metrics(east).await);
    assert!(
        ids.contains(&id("client", NS)),
        "east's gateway saw west's client by its identity: {ids:?}"
    );

    let mirror = json(west, &["-n", NS, "get", "service", "web-east"]).await;
    let (labels, annotations) = (
        &mirror["metadata"]["labels"],
        &mirror["metadata"]["annotations"],
    );
    assert_eq!(labels["tier"], "backend", "{mirror}");
    assert!(labels.get("team.example.com/owner").is_none(), "{mirror}");
    assert_eq!(
        annotations["docs.example.com/runbook"], "web-oncall",
        "{mirror}"
    );
    assert!(
        annotations.get("secret.example.com/token").is_none(),
        "an excluded annotation never reaches the other cluster: {mirror}"
    );
}

/// East's caller reaches west's users pod by the mirror's name, pod to pod: the mirror's
/// endpoints are west's pod addresses, each side's proxy verifies the other's identity over
/// mTLS, and west's gateway plays no part.
async fn remote_discovery(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let users = &pods(west, NS, "app=users").await[0];
    let users_ip = pod_ip(users);
    let users_name = users["metadata"]["name"].as_str().unwrap();
    let before = client_ids(&gateway_metrics(west).await);
    let body = sample_eventually(
        (east, west),
        NS,
        "caller",
        &["get", "users-west.shop.svc.cluster.local:80"],
    )
    .await;
    assert!(body.contains(&format!("pod={users_name}")), "{body}");
    let slices = json(
        east,
        &[
            "-n",
            NS,
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=users-west",
        ],
    )
    .await;
    let addresses: Vec<&str> = slices["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(addresses, [users_ip.as_str()], "{slices}");

    let admin: SocketAddr = format!("{users_ip}:{}", strait_core::ports::ADMIN)
        .parse()
        .unwrap();
    let metrics = http_get(admin, "/metrics").await.unwrap();
    let caller = format!("client_id=\"{}\"", id("caller", NS));
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("direction=\"inbound\"") && l.contains(&caller)),
        "west's users proxy saw east's caller itself over mTLS:\n{metrics}"
    );
    let caller_ip = pod_ip(&pods(east, NS, "app=caller").await[0]);
    let admin: SocketAddr = format!("{caller_ip}:{}", strait_core::ports::ADMIN)
        .parse()
        .unwrap();
    let metrics = http_get(admin, "/metrics").await.unwrap();
    let users_id = format!("server_id=\"{}\"", id("users", NS));
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("direction=\"outbound\"") && l.contains(&users_id)),
        "east's caller proxy verified west's users pod by its identity:\n{metrics}"
    );
    let after = client_ids(&gateway_metrics(west).await);
    assert_eq!(
        before.contains(&id("caller", NS)),
        after.contains(&id("caller", NS)),
        "west's gateway carried none of it"
    );
    assert!(!after.contains(&id("caller", NS)), "{after:?}");
}

/// East's gateway scaled to zero: west's mirrors turn not ready and a call is refused at
/// once (503, not a timeout); back, the same client pod is served again.
async fn gateway_gone(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let client = running_pod(west, NS, "app=client").await.unwrap();
    scale(east, MC, "strait-gateway", 0).await;
    let not_ready = eventually(CONVERGE, || async {
        let slices = json(
            west,
            &[
                "-n",
                NS,
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web-east",
            ],
        )
        .await;
        let ready: Vec<bool> = slices["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
            .map(|e| e["conditions"]["ready"] == true)
            .collect();
        (!ready.is_empty() && ready.iter().all(|r| !r)).then_some(())
    })
    .await;
    assert!(
        not_ready.is_some(),
        "web-east's endpoints never turned not ready:\n{}",
        diagnose(west, east).await
    );
    let refused = eventually(CONVERGE, || async {
        let err = sample(west, NS, "client", &["get", WEB]).await.err()?;
        err.contains("503").then_some(err)
    })
    .await;
    assert!(
        refused.is_some(),
        "calls to web-east are refused with 503 while the gateway is gone:\n{}",
        diagnose(west, east).await
    );
    scale(east, MC, "strait-gateway", 1).await;
    rollout(east, MC, "strait-gateway").await;
    sample_eventually((west, east), NS, "client", &["get", WEB]).await;
    let now = pods(west, NS, "app=client").await;
    assert_eq!(now.len(), 1);
    assert_eq!(now[0]["metadata"]["name"], client.as_str());
    assert_eq!(
        now[0]["status"]["containerStatuses"][0]["restartCount"], 0,
        "served again without a client restart"
    );
}

/// East's API server stops right after web-v2 is exported and echo unexported: west deletes
/// nothing while it cannot read east, reports it in the Link's status, and traffic through
/// the gateway keeps flowing; once the server is back the mirrors converge.
async fn api_server_outage(pair: &mut Pair) {
    strait_at(&pair.east, &["export", "web-v2", "-n", NS])
        .await
        .unwrap();
    strait_at(&pair.east, &["unexport", "echo", "-n", NS])
        .await
        .unwrap();
    pair.east.stop_api_server();
    let west = &pair.west;
    let status = eventually(CONVERGE, || async {
        let link = json(west, &["-n", MC, "get", "link", "east"]).await;
        (link["status"]["remoteApi"]["reachable"] == false).then_some(link["status"].clone())
    })
    .await;
    assert!(
        status.is_some(),
        "the Link reports east's API unreachable:\n{}",
        json(west, &["-n", MC, "get", "link", "east"]).await
    );
    let mirrors = set(mirrors_of(west, "east").await);
    assert!(
        mirrors.contains("web-east") && mirrors.contains("greeter-east"),
        "nothing is deleted while east cannot be read: {mirrors:?}"
    );
    let body = sample(west, NS, "client", &["get", WEB]).await;
    assert!(
        body.is_ok(),
        "east's gateway serves while east's API server is down: {body:?}"
    );
    pair.east.start_api_server().await.unwrap();
    let (west, east) = (&pair.west, &pair.east);
    let want = set(["web-east", "greeter-east", "web-v2-east"]);
    let converged = eventually(CONVERGE, || async {
        (set(mirrors_of(west, "east").await) == want).then_some(())
    })
    .await;
    assert!(
        converged.is_some(),
        "west's mirrors of east converge to {want:?} once east's API server is back:\n{}",
        diagnose(west, east).await
    );
    sample_eventually(
        (west, east),
        NS,
        "client",
        &["get", "web-v2-east.shop.svc.cluster.local:80"],
    )
    .await;
}

/// West's mirror leader is deleted while east exports echo again and unexports web-v2:
/// another replica takes the Lease, and the mirrors converge with no orphan and no duplicate.
async fn leader_deleted(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let lease = || async {
        json(west, &["-n", MC, "get", "lease", "strait-mirror"]).await["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let leader = lease().await;
    let replicas = running_pods(west, MC, "app.kubernetes.io/name=strait-mirror").await;
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    assert!(replicas.contains(&leader), "{leader} of {replicas:?}");
    west.kubectl(&["-n", MC, "delete", "pod", &leader, "--wait=false"])
        .await
        .unwrap();
    strait_at(east, &["export", "echo", "-n", NS])
        .await
        .unwrap();
    strait_at(east, &["unexport", "web-v2", "-n", NS])
        .await
        .unwrap();
    // The standby or the Deployment's replacement pod, whichever asks first once the deleted
    // leader has released the Lease.
    let took = eventually(CONVERGE, || async {
        let holder = lease().await;
        let running = running_pods(west, MC, "app.kubernetes.io/name=strait-mirror").await;
        (holder != leader && running.contains(&holder)).then_some(holder)
    })
    .await;
    assert!(
        took.is_some(),
        "a running replica takes the Lease from the deleted {leader}:\n{}\n{}",
        json(west, &["-n", MC, "get", "lease", "strait-mirror"]).await,
        west.kubectl(&[
            "-n",
            MC,
            "logs",
            "-l",
            "app.kubernetes.io/name=strait-mirror",
            "--tail=20",
            "--prefix"
        ])
        .await
        .unwrap_or_else(|e| e.to_string())
    );
    let want = set(["web-east", "greeter-east", "echo-east"]);
    let converged = eventually(CONVERGE, || async {
        (set(mirrors_of(west, "east").await) == want).then_some(())
    })
    .await;
    assert!(
        converged.is_some(),
        "the new leader converges to {want:?}:\n{}",
        diagnose(west, east).await
    );
    for mirror in &want {
        let slices = json(
            west,
            &[
                "-n",
                NS,
                "get",
                "endpointslices",
                "-l",
                &format!("kubernetes.io/service-name={mirror}"),
            ],
        )
        .await;
        assert_eq!(
            slices["items"].as_array().map(Vec::len),
            Some(1),
            "one EndpointSlice for {mirror}: {slices}"
        );
    }
    check_passes(west, "after the leader changed").await;
    sample_eventually(
        (west, east),
        NS,
        "client",
        &["tcp", ECHO, "after the handover"],
    )
    .await;
}

/// East's kubelet restarts: its pods keep running (the same pods), the new kubelet reports
/// the node and starts a new pod, and traffic through the gateway carries on.
async fn kubelet_restarted(pair: &mut Pair) {
    let heartbeat = |nodes: Value| {
        nodes["items"][0]["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Ready" && c["status"] == "True")
            .map(|c| c["lastHeartbeatTime"].clone())
    };
    let before = pod_names(&pair.east).await;
    let beat = heartbeat(json(&pair.east, &["get", "nodes"]).await);
    assert!(beat.is_some(), "east's node is Ready before");
    pair.east.restart_kubelet(0).unwrap();
    let (west, east) = (&pair.west, &pair.east);
    let reported = eventually(CONVERGE, || async {
        let now = heartbeat(json(east, &["get", "nodes"]).await)?;
        (Some(&now) != beat.as_ref()).then_some(())
    })
    .await;
    assert!(
        reported.is_some(),
        "the restarted kubelet reports east's node Ready:\n{}",
        east.log_tails(20)
    );
    scale(east, NS, "web", 2).await;
    rollout(east, NS, "web").await;
    let load = sample_eventually((west, east), NS, "client", &["load", WEB, "20"]).await;
    let load: Value = serde_json::from_str(load.trim()).unwrap();
    assert_eq!(load["ok"], 20, "{load}");
    check_passes(west, "after east's kubelet restarted").await;
    let after = pod_names(east).await;
    assert!(
        before.is_subset(&after) && after.len() == before.len() + 1,
        "the same pods run on, and the new kubelet started one more: {before:?} → {after:?}"
    );
}

/// Unexport removes that mirror; unlink removes every mirror of its Link.
async fn unexport_and_unlink(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    strait_at(east, &["unexport", "greeter", "-n", NS])
        .await
        .unwrap();
    let gone = eventually(CONVERGE, || async {
        (!mirrors_of(west, "east")
            .await
            .contains(&"greeter-east".to_owned()))
        .then_some(())
    })
    .await;
    assert!(gone.is_some(), "unexport removes greeter-east");
    let unlink = strait_at(east, &["multicluster", "unlink", "--cluster-name", "west"])
        .await
        .unwrap();
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("unlink-west.yaml");
    std::fs::write(&file, &unlink).unwrap();
    east.kubectl(&[
        "delete",
        "-f",
        file.to_str().unwrap(),
        "--wait=true",
        "--timeout=120s",
    ])
    .await
    .unwrap();
    assert!(
        mirrors_of(east, "west").await.is_empty(),
        "unlink removed every mirror of west"
    );
}

/// East moves to a trust anchor of its own (helm upgrade, pods restarted): west's calls to
/// east are refused, and west's `check` says the anchors differ.
async fn anchor_replaced(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let other = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, pem: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    };
    let ca = file("ca.crt", other.anchors.to_pem());
    let crt = file("issuer.crt", other.issuer.cert_pem());
    let key = file("issuer.key", other.issuer.key_pem().to_owned());
    let cp = charts().join("strait-control-plane");
    let mc = charts().join("strait-multicluster");
    for (release, chart, sets) in [
        (
            "strait-control-plane",
            &cp,
            vec![
                format!("identityTrustAnchorsPEM={ca}"),
                format!("identity.issuer.tls.crtPEM={crt}"),
                format!("identity.issuer.tls.keyPEM={key}"),
            ],
        ),
        (
            "strait-multicluster",
            &mc,
            vec![format!("identityTrustAnchorsPEM={ca}")],
        ),
    ] {
        let mut args = vec![
            "upgrade",
            release,
            chart.to_str().unwrap(),
            "--reuse-values",
        ];
        for s in &sets {
            args.extend(["--set-file", s]);
        }
        helm(east, &pair.east_home, &args)
            .await
            .unwrap_or_else(|e| panic!("helm upgrade {release}: {e}"));
    }
    east.kubectl(&["-n", "strait", "rollout", "restart", "deployment"])
        .await
        .unwrap();
    rollout(east, "strait", "strait-control-plane").await;
    for ns in [MC, NS] {
        east.kubectl(&["-n", ns, "rollout", "restart", "deployment"])
            .await
            .unwrap();
    }
    control_plane_ready(east).await;
    rollout(east, NS, "web").await;

    check_fails(west, "the trust anchors match this cluster's", "differ").await;
    let refused = eventually(CONVERGE, || async {
        let err = sample(west, NS, "client", &["get", WEB]).await.err()?;
        (err.contains("502") || err.contains("503")).then_some(err)
    })
    .await;
    assert!(
        refused.is_some(),
        "west's calls to east are refused once east trusts another anchor:\n{}",
        diagnose(west, east).await
    );
    eprintln!(
        "suite: with east on another anchor, west's call: {}",
        refused.unwrap().trim()
    );
}

/// Prints each stage's time, for the record (never asserted).
struct Clock(std::time::Instant);

impl Default for Clock {
    fn default() -> Self {
        Self(std::time::Instant::now())
    }
}

impl Clock {
    fn lap(&mut self, stage: &str) {
        eprintln!("suite: {:>6.1}s  {stage}", self.0.elapsed().as_secs_f64());
        self.0 = std::time::Instant::now();
    }
}

/// The names of the running pods matching `selector`.
async fn running_pods(c: &Cluster, ns: &str, selector: &str) -> BTreeSet<String> {
    set(pods(c, ns, selector)
        .await
        .iter()
        .filter(|p| {
            p["status"]["phase"] == "Running" && p["metadata"]["deletionTimestamp"].is_null()
        })
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()))
}

/// The pods of east's and west's samples, by name.
async fn pod_names(c: &Cluster) -> BTreeSet<String> {
    set(pods(c, NS, "app")
        .await
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()))
}

fn set<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> BTreeSet<String> {
    items.into_iter().map(Into::into).collect()
}
