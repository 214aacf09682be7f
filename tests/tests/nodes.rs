//! Real nodes: two clusters whose pods are containers from locally built images, run by
//! kubelet and containerd, with kube-proxy's Services, CoreDNS and LoadBalancer addresses;
//! and clean-up that leaves nothing, also when a test panics.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first unexpected error

mod nodes_support;

use nodes_support::{
    Traces, eventually, get_eventually, get_from_client, load_balancer_ip, pod_names, ready,
    workloads,
};
use std::time::Duration;
use strait_localcluster::node::images;
use strait_localcluster::{Cluster, ClusterConfig};

fn iptables_in(netns: Option<&str>, chain: &str) -> bool {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns, "iptables"]);
            c
        }
        None => std::process::Command::new("iptables"),
    };
    cmd.args(["-t", "nat", "-S", chain])
        .output()
        .unwrap()
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_nodes_run_deployments_services_dns_and_load_balancers() {
    let mut traces = Traces::default();
    {
        let started = std::time::Instant::now();
        let (west, mut east) = tokio::try_join!(
            Cluster::start(ClusterConfig::new("west").with_nodes(1)),
            Cluster::start(ClusterConfig::new("east").with_nodes(1)),
        )
        .expect("two clusters with real nodes start");
        eprintln!(
            "two real-node clusters Ready (nodes Ready, CoreDNS rolled out) in {:?}",
            started.elapsed()
        );
        // `kubectl logs` reaches each node's kubelet and the container's log, kept in that
        // node's own directory (a shared /var/log/pods loses pods' logs to the other kubelet).
        for c in [&west, &east] {
            let logs = c
                .kubectl(&["-n", "kube-system", "logs", "deployment/coredns"])
                .await
                .unwrap();
            assert!(logs.contains("CoreDNS"), "coredns in {}: {logs}", c.name());
            let own: Vec<String> = c
                .nodes()
                .iter()
                .flat_map(|n| std::fs::read_dir(n.pod_logs_dir()).into_iter().flatten())
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|d| d.starts_with("kube-system_coredns-"))
                .collect();
            assert!(
                !own.is_empty(),
                "coredns's logs are not in {}'s own node directories",
                c.name()
            );
        }
        traces.record(&west);
        traces.record(&east);

        // Every image was imported; nothing else is in the node's containerd.
        for c in [&west, &east] {
            let held = c.nodes()[0].images();
            for want in ["pause", "coredns", "sample"] {
                assert!(
                    held.iter().any(|i| i == &images::reference(want)),
                    "{want} missing from {held:?}"
                );
            }
            assert!(
                held.iter()
                    .all(|i| i.starts_with("strait.local/") || i.starts_with("sha256:")),
                "{held:?}"
            );
        }

        let (west_yaml, east_yaml) = (workloads(false), workloads(true));
        let (w, e) = tokio::join!(west.apply(&west_yaml), east.apply(&east_yaml));
        w.unwrap();
        e.unwrap();
        tokio::join!(ready(&west), ready(&east));

        // By ClusterIP, by full DNS name and by the namespace's search path.
        let west_web = pod_names(&west, "app=web").await;
        assert_eq!(west_web.len(), 2, "{west_web:?}");
        let cluster_ip = west
            .kubectl(&[
                "-n",
                "shop",
                "get",
                "svc",
                "web",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ])
            .await
            .unwrap();
        assert!(cluster_ip.starts_with("198.19."), "{cluster_ip}");
        for addr in [
            format!("{cluster_ip}:80"),
            "web.shop.svc.cluster.local:80".to_owned(),
            "web:80".to_owned(),
        ] {
            let body = get_eventually(&west, &addr).await.unwrap();
            let pod = body.strip_prefix("hello from ").unwrap_or_default();
            assert!(
                west_web.contains(pod),
                "{addr} answered {body:?}, not one of {west_web:?}"
            );
        }
        // A name outside the cluster is not resolved: nothing reaches the machine's resolver.
        let outside = get_from_client(&west, "example.com:80").await.unwrap_err();
        assert!(
            outside.contains("resolv") || outside.contains("address"),
            "{outside}"
        );

        // A pod in west reaches east's LoadBalancer address, and east's pods answer.
        let lb_ip = load_balancer_ip(&east, "shop", "web-lb").await;
        assert!(lb_ip.starts_with("198.18."), "{lb_ip}");
        let east_web = pod_names(&east, "app=web").await;
        let body = get_eventually(&west, &format!("{lb_ip}:80")).await.unwrap();
        let pod = body.strip_prefix("hello from ").unwrap_or_default();
        assert!(
            east_web.contains(pod),
            "east's LB answered {body:?}, not one of {east_web:?}"
        );

        // A deleted pod is replaced by the ReplicaSet, and the Service follows.
        let victim = west_web.iter().next().unwrap().clone();
        west.kubectl(&["-n", "shop", "delete", "pod", &victim, "--wait=true"])
            .await
            .unwrap();
        let replaced = eventually(Duration::from_secs(90), || async {
            let now = pod_names(&west, "app=web").await;
            (now.len() == 2 && !now.contains(&victim)).then_some(now)
        })
        .await
        .expect("the deleted pod is replaced");
        west.wait_rollout("shop", "web", Duration::from_secs(90))
            .await
            .unwrap();
        let body = get_eventually(&west, "web:80").await.unwrap();
        assert!(
            replaced.contains(body.strip_prefix("hello from ").unwrap_or_default()),
            "{body}"
        );

        // kube-proxy's chains are in the node's namespace, never in the root namespace.
        assert!(iptables_in(Some(west.nodes()[0].netns()), "KUBE-SERVICES"));
        assert!(
            !iptables_in(None, "KUBE-SERVICES"),
            "KUBE-SERVICES leaked into the root namespace"
        );

        // A restarted kubelet takes its running pods back; the Service still answers.
        east.restart_kubelet(0).unwrap();
        east.wait_rollout("shop", "web", Duration::from_secs(90))
            .await
            .unwrap();
        get_eventually(&west, &format!("{lb_ip}:80")).await.unwrap();

        // Nothing was pulled: no event says so, in any namespace of either cluster.
        for c in [&west, &east] {
            let events = c
                .kubectl(&[
                    "get",
                    "events",
                    "-A",
                    "-o",
                    "jsonpath={range .items[*]}{.reason} {.message}{\"\\n\"}{end}",
                ])
                .await
                .unwrap();
            let pulls: Vec<_> = events
                .lines()
                .filter(|l| {
                    l.starts_with("Pulling")
                        || l.contains("ErrImagePull")
                        || l.contains("ImagePullBackOff")
                })
                .collect();
            assert!(
                pulls.is_empty(),
                "cluster {} tried to pull: {pulls:?}",
                c.name()
            );
        }
        traces.record(&west);
        traces.record(&east);
        let memory = nodes_support::memory_by_process(&east);
        let total: u64 = memory.iter().map(|(_, mb)| mb).sum();
        eprintln!("memory of cluster east with its node: {total} MB: {memory:?}");
    }
    let left = traces.left();
    assert!(
        left.is_empty(),
        "left behind after the clusters were dropped: {left:?}"
    );
}
