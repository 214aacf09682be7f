//! `strait-k8s-assets [--node]`: builds (once) and prints the folder with etcd,
//! kube-apiserver and kubectl, the way the tests find them (`KUBEBUILDER_ASSETS` overrides
//! the build). With `--node`, the folder with kubelet, kube-proxy, kube-controller-manager,
//! kube-scheduler, CoreDNS and helm (`STRAIT_NODE_ASSETS` overrides).

fn main() {
    let node = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--node") => true,
        Some(other) => {
            eprintln!(
                "strait-k8s-assets: unknown argument {other:?}; usage: strait-k8s-assets [--node]"
            );
            std::process::exit(2);
        }
    };
    let dir = if node {
        strait_localcluster::assets::ensure_node().map(|a| a.kubelet)
    } else {
        strait_localcluster::assets::ensure().map(|a| a.kube_apiserver)
    };
    match dir {
        Ok(binary) => match binary.parent() {
            Some(dir) => println!("{}", dir.display()),
            None => println!("{}", binary.display()),
        },
        Err(e) => {
            eprintln!("strait-k8s-assets: {e}");
            std::process::exit(1);
        }
    }
}
