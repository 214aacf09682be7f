//! East's StatefulSet `db` (three pods under headless Service `db`) reached from west by pod
//! hostname: `db-N.db-east.shop.svc.cluster.local` is answered by east's pod db-N and no
//! other (CoreDNS answers the name from the headless mirror's slice with the per-pod mirror's
//! cluster IP; that mirror goes through east's gateway, whose destination resolves the pod's
//! own name). Scale 3 → 2 removes db-2's mirror and keeps the others; unexport removes them
//! all.

use crate::NS;
use crate::install_support::*;
use crate::linked_support::*;
use crate::nodes_support::eventually;
use crate::set;
use serde_json::Value;
use std::collections::BTreeSet;
use strait_e2e::samples::{self, Workload};

/// The StatefulSet and its headless Service, for east's workloads.
pub fn statefulset() -> String {
    [
        Workload::new(NS, "db", &["serve-echo-http", "8080"])
            .port("http", 8080)
            .replicas(3)
            .stateful("db")
            .yaml(),
        samples::headless_service(NS, "db", &[("http", 80, "http")]),
    ]
    .concat()
}

/// The mirrors of east's `db` in west: the headless one and the per-pod ones.
async fn db_mirrors(west: &strait_localcluster::Cluster) -> BTreeSet<String> {
    set(mirrors_of(west, "east")
        .await
        .into_iter()
        .filter(|m| m.starts_with("db-")))
}

/// West's Link to east, its status counts.
async fn counts(west: &strait_localcluster::Cluster) -> Value {
    json(west, &["-n", "strait-multicluster", "get", "link", "east"]).await["status"]["services"]
        .clone()
}

/// Waits for east's StatefulSet to have all its pods ready.
pub async fn rolled_out(east: &strait_localcluster::Cluster) {
    east.kubectl(&[
        "-n",
        NS,
        "rollout",
        "status",
        "statefulset/db",
        "--timeout=180s",
    ])
    .await
    .unwrap();
}

pub async fn statefulset_by_pod_name(pair: &Pair) {
    let (west, east) = (&pair.west, &pair.east);
    for i in 0..3 {
        let name = format!("db-{i}.db-east.shop.svc.cluster.local:80");
        // Several calls each: a name that reached any pod but its own would show here.
        for _ in 0..3 {
            let body = sample_eventually((west, east), NS, "client", &["get", &name]).await;
            assert!(body.contains(&format!("pod=db-{i}")), "{name}: {body}");
        }
    }
    let c = counts(west).await;
    assert_eq!(
        (&c["headless"], &c["podMirrors"]),
        (&Value::from(1), &Value::from(3)),
        "{c}"
    );

    east.kubectl(&["-n", NS, "scale", "statefulset", "db", "--replicas=2"])
        .await
        .unwrap();
    let want = set(["db-east", "db-0-east", "db-1-east"]);
    let scaled = eventually(CONVERGE, || async {
        (db_mirrors(west).await == want).then_some(())
    })
    .await;
    assert!(
        scaled.is_some(),
        "scale 3 → 2 leaves db-east, db-0-east and db-1-east: {:?}",
        db_mirrors(west).await
    );
    let body = sample_eventually(
        (west, east),
        NS,
        "client",
        &["get", "db-1.db-east.shop.svc.cluster.local:80"],
    )
    .await;
    assert!(body.contains("pod=db-1"), "{body}");

    strait_at(east, &["unexport", "db", "-n", NS])
        .await
        .unwrap();
    let gone = eventually(CONVERGE, || async {
        db_mirrors(west).await.is_empty().then_some(())
    })
    .await;
    assert!(
        gone.is_some(),
        "unexport removes every db mirror: {:?}",
        db_mirrors(west).await
    );
    // Gone before the faults that compare east's pods before and after.
    east.kubectl(&[
        "-n",
        NS,
        "delete",
        "statefulset",
        "db",
        "--cascade=foreground",
        "--timeout=120s",
    ])
    .await
    .unwrap();
}
