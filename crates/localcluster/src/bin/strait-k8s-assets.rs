//! `strait-k8s-assets`: builds (once) and prints the folder with etcd, kube-apiserver and
//! kubectl, the way the tests find them. `KUBEBUILDER_ASSETS` overrides the build.

fn main() {
    match strait_localcluster::assets::ensure() {
        Ok(a) => match a.kube_apiserver.parent() {
            Some(dir) => println!("{}", dir.display()),
            None => println!("{}", a.kube_apiserver.display()),
        },
        Err(e) => {
            eprintln!("strait-k8s-assets: {e}");
            std::process::exit(1);
        }
    }
}
