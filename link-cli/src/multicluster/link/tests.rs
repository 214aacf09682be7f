use super::*;
use clap::Parser as _;

#[derive(clap::Parser, Debug)]
struct Cli {
    #[command(flatten)]
    link: LinkArgs,
}

fn args(extra: &[&str]) -> LinkArgs {
    let mut argv = vec!["link", "--cluster-name", "east"];
    argv.extend_from_slice(extra);
    Cli::parse_from(argv).link
}

fn gateway_service(type_: &str, ingress: serde_json::Value) -> Service {
    serde_json::from_value(json!({
        "metadata": {"name": "strait-gateway", "namespace": "strait-multicluster", "annotations": {
            "mirror.strait.dev/gateway-identity": "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local",
            "mirror.strait.dev/probe-path": "/ready",
            "mirror.strait.dev/probe-period": "5s",
        }},
        "spec": {"type": type_, "ports": [
            {"name": "mc-gateway", "port": 4143, "nodePort": 30143},
            {"name": "mc-probe", "port": 4191, "nodePort": 30191},
        ]},
        "status": {"loadBalancer": {"ingress": ingress}},
    }))
    .unwrap()
}

#[test]
fn the_gateway_service_says_where_and_who_the_gateway_is() {
    let svc = gateway_service(
        "LoadBalancer",
        json!([{"ip": "198.18.48.1"}, {"hostname": "gw.example"}]),
    );
    let info = gateway_info(&svc, &args(&[])).unwrap();
    assert_eq!(info.addresses, ["198.18.48.1", "gw.example"]);
    assert_eq!(info.port, 4143);
    assert_eq!(
        info.identity,
        "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local"
    );
    assert_eq!((info.probe.port, info.probe.period.as_str()), (4191, "5s"));

    let flags = args(&[
        "--gateway-addresses",
        "198.18.0.9,198.18.0.10",
        "--gateway-port",
        "9",
    ]);
    let info = gateway_info(&svc, &flags).unwrap();
    assert_eq!((info.addresses.len(), info.port), (2, 9));

    let node_port = gateway_service("NodePort", json!([]));
    let info = gateway_info(&node_port, &args(&["--gateway-addresses", "198.18.0.9"])).unwrap();
    assert_eq!((info.port, info.probe.port), (30143, 30191));
}

#[test]
fn a_gateway_without_an_address_says_what_to_wait_for() {
    let pending = gateway_service("LoadBalancer", json!([]));
    let err = gateway_info(&pending, &args(&[])).unwrap_err().to_string();
    assert!(err.contains("no load-balancer address yet"), "{err}");
    assert!(err.contains("--gateway-addresses"), "{err}");
    let cluster_ip = gateway_service("ClusterIP", json!([]));
    let err = gateway_info(&cluster_ip, &args(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("type ClusterIP"), "{err}");
    let mut anonymous = gateway_service("LoadBalancer", json!([{"ip": "198.18.48.1"}]));
    anonymous.metadata.annotations = None;
    let err = gateway_info(&anonymous, &args(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("mirror.strait.dev/gateway-identity"), "{err}");
}
