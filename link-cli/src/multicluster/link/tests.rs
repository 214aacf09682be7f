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

fn spec() -> LinkSpec {
    serde_json::from_value(json!({
        "targetClusterName": "east", "clusterCredentialsSecret": "cluster-credentials-east",
        "gatewayAddress": "198.18.48.1", "gatewayPort": 4143, "gatewayIdentity": "gw",
    }))
    .unwrap()
}

#[test]
fn set_overrides_fields_and_refuses_unknown_ones() {
    let s = apply_sets(
        spec(),
        &[
            "probeSpec.period=10s".into(),
            "gatewayPort=4144".into(),
            "createNamespaces=true".into(),
        ],
    )
    .unwrap();
    assert_eq!(s.probe_spec.period, "10s");
    assert_eq!(s.probe_spec.path, "/ready", "the rest of probeSpec stays");
    assert_eq!(s.gateway_port, 4144);
    assert_eq!(s.create_namespaces, Some(true));
    let err = apply_sets(spec(), &["gatewayPrt=1".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("no field gatewayPrt"), "{err}");
    let err = apply_sets(spec(), &["gatewayPort=big".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not accept"), "{err}");
    let err = apply_sets(spec(), &["gatewayPort".into()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("FIELD=VALUE"), "{err}");
}

#[test]
fn the_kubeconfig_holds_only_the_target_and_the_token() {
    let pem = strait_tls::der_to_pem(b"not really a certificate, but bytes");
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    let kc = remote_kubeconfig("east", "https://198.18.64.1:6443", Some(&pem), "tok").unwrap();
    let parsed = kube::config::Kubeconfig::from_yaml(&kc).unwrap();
    assert_eq!(parsed.clusters.len(), 1);
    assert_eq!(parsed.auth_infos.len(), 1);
    assert_eq!(parsed.current_context.as_deref(), Some("east"));
    let cluster = parsed.clusters[0].cluster.as_ref().unwrap();
    assert_eq!(cluster.server.as_deref(), Some("https://198.18.64.1:6443"));
    let ca = cluster.certificate_authority_data.as_ref().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(ca)
            .unwrap(),
        pem.as_bytes()
    );
    let secret = credentials_object("east", "strait-multicluster", &kc);
    assert_eq!(secret["metadata"]["name"], "cluster-credentials-east");
    let data = secret["data"]["kubeconfig"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .unwrap(),
        kc.as_bytes()
    );
    let link = link_object("east", "strait-multicluster", spec()).unwrap();
    assert_eq!(link["apiVersion"], "multicluster.strait.dev/v1alpha1");
    assert_eq!(
        link["spec"]["clusterCredentialsSecret"],
        "cluster-credentials-east"
    );
    assert!(link.get("status").is_none());
}
