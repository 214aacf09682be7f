//! The suite's traffic: the samples, the links both ways, HTTP/1, gRPC and TCP through east's
//! gateway with the Link's exclusions, remote discovery pod to pod, unexport and unlink.

use crate::install_support::*;
use crate::linked_support::*;
use crate::nodes_support::eventually;
use crate::{ECHO, GREETER, NS, WEB};
use serde_json::Value;
use strait_e2e::samples::{self, Workload};

/// East serves web (HTTP), greeter (gRPC), echo (TCP) and StatefulSet db, and runs `caller`; west runs
/// `client` and serves `users`. All injected; east's three exported through the gateway,
/// west's users for remote discovery. East's web Service carries labels and annotations the
/// Link excludes.
pub async fn workloads(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let east_yaml = [
        samples::namespace(NS, true),
        samples::servers(NS),
        Workload::new(NS, "caller", &["serve", "8081"]).yaml(),
        // A second Service on web's pods, exported later (during an outage).
        samples::service_of(NS, "web-v2", "web", &[("http", 80, "http")]),
        crate::headless::statefulset(),
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
            crate::headless::rolled_out(east).await;
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
    let out = strait_at(east, &["export", "web", "greeter", "echo", "db", "-n", NS])
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
pub async fn link_both_ways(pair: &Pair) {
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
pub async fn traffic_through_the_gateway(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let web_pod = running_pod(east, NS, "app=web").await.unwrap();
    let body = sample_eventually((west, east), NS, "client", &["get", WEB]).await;
    assert!(body.contains(&format!("pod={web_pod}")), "{body}");

    let greeter_pod = running_pod(east, NS, "app=greeter").await.unwrap();
    let grpc = sample_eventually(
        (west, east),
        NS,
        "client",
        &["load", GREETER, "5", "1", "grpc"],
    )
    .await;
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
    assert_eq!(echoed, format!("{echo_pod}: over raw TCP"));

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
pub async fn remote_discovery(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    let users = &pods(west, NS, "app=users").await[0];
    let users_ip = pod_ip(users);
    let users_name = users["metadata"]["name"].as_str().unwrap();
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

    let inbound = proxy_metrics(users).await;
    let caller = format!("client_id=\"{}\"", id("caller", NS));
    assert!(
        series(&inbound, "inbound", &caller),
        "west's users proxy saw east's caller itself over mTLS:\n{inbound}"
    );
    let outbound = proxy_metrics(&pods(east, NS, "app=caller").await[0]).await;
    let users_id = format!("server_id=\"{}\"", id("users", NS));
    assert!(
        series(&outbound, "outbound", &users_id),
        "east's caller proxy verified west's users pod by its identity:\n{outbound}"
    );
    let at_gateway = client_ids(&gateway_metrics(west).await);
    assert!(
        !at_gateway.contains(&id("caller", NS)),
        "west's gateway carried none of it: {at_gateway:?}"
    );
}

/// Whether a sample of `metrics` in `direction` carries `label`.
fn series(metrics: &str, direction: &str, label: &str) -> bool {
    let direction = format!("direction=\"{direction}\"");
    metrics
        .lines()
        .any(|l| !l.starts_with('#') && l.contains(&direction) && l.contains(label))
}

/// Unexport removes that mirror; unlink removes every mirror of its Link.
pub async fn unexport_and_unlink(pair: &Pair) {
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
    unlink(east, "west").await;
    assert!(
        mirrors_of(east, "west").await.is_empty(),
        "unlink removed every mirror of west"
    );
}
