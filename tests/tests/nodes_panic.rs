//! Clean-up of a real node when the test that made it panics. A binary of its own, so that
//! cargo runs it after the two-cluster test rather than beside it on a 2-core machine.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod nodes_support;

use nodes_support::{Traces, ready, workloads};
use strait_localcluster::{Cluster, ClusterConfig};

/// A test that panics while a node runs pods still leaves nothing: no process, container,
/// mount, cgroup, namespace, veth, route or data folder.
#[test]
fn node_cleanup_holds_when_a_test_panics() {
    let traces = std::sync::Arc::new(std::sync::Mutex::new(Traces::default()));
    let traces_in = traces.clone();
    let result = std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let cluster = Cluster::start(ClusterConfig::new("doomed").with_nodes(1))
                .await
                .unwrap();
            cluster.apply(&workloads(false)).await.unwrap();
            ready(&cluster).await;
            let mut t = traces_in.lock().unwrap();
            t.record(&cluster);
            // Containers of three pods (two web, one client, plus CoreDNS) and their sandboxes.
            assert!(t.pids.len() > 8, "{t:?}");
            drop(t);
            panic!("deliberate panic while the node runs pods");
        });
    })
    .join();
    assert!(result.is_err(), "the scope was meant to panic");
    let t = traces.lock().unwrap();
    assert!(!t.netns.is_empty(), "the scope recorded what it made");
    let left = t.left();
    assert!(left.is_empty(), "a panic left behind: {left:?}");
}
