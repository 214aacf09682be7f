//! The gRPC handlers on in-memory caches: what each lookup answers, and what an open stream
//! sends when the caches change. No sockets: the handlers are called as tonic would.

use super::*;
use crate::destination::model::ServiceInfo;
use crate::policy::fixtures::*;
use futures::{FutureExt, StreamExt};
use linkerd2_proxy_api::outbound::traffic_spec::Target as T;
use serde_json::json;
use strait_k8s_api::policy::DefaultPolicy;
use tonic::Code;

/// `shop/web` (198.19.0.10: http 80, mysql 3306 opaque), `shop/plain` (198.19.0.11: 80) and
/// `shop/ext` (ExternalName).
fn services() -> Vec<(ServiceKey, ServiceInfo)> {
    let svc = |name: &str, ip: Option<&str>, ports: &[u16], annotations: serde_json::Value| {
        let ports: Vec<_> = ports.iter().map(|p| json!({"port": p})).collect();
        let mut spec = json!({"ports": ports});
        match ip {
            Some(ip) => spec["clusterIP"] = json!(ip),
            None => {
                spec["type"] = json!("ExternalName");
                spec["externalName"] = json!("example.com");
            }
        }
        let s = obj(json!({
            "metadata": {"name": name, "namespace": "shop", "annotations": annotations},
            "spec": spec,
        }));
        ServiceInfo::from_object(&s).expect("named")
    };
    vec![
        svc(
            "web",
            Some("198.19.0.10"),
            &[80, 3306],
            json!({strait_core::labels::OPAQUE_PORTS: "3306"}),
        ),
        svc("plain", Some("198.19.0.11"), &[80], json!({})),
        svc("ext", None, &[80], json!({})),
    ]
}

fn service(default_policy: DefaultPolicy) -> PolicyService {
    let destination = Arc::new(DstIndex::default());
    destination.reset_services(services());
    destination.reset_slices([]);
    destination.reset_pods([]);
    let mut state = base();
    users_server(&mut state);
    PolicyService {
        index: Arc::new(Index::with_state(state)),
        destination,
        config: Arc::new(cfg(default_policy)),
    }
}

fn addr(a: &str) -> out_pb::TrafficSpec {
    let a: SocketAddr = a.parse().expect("fixture address");
    out_pb::TrafficSpec {
        source_workload: "shop:web".into(),
        target: Some(T::Addr(a.into())),
    }
}

fn authority(a: &str) -> out_pb::TrafficSpec {
    out_pb::TrafficSpec {
        source_workload: "shop:web".into(),
        target: Some(T::Authority(a.into())),
    }
}

/// `<ns>/<name>:<port> <opaque|detect>` of an outbound answer.
fn outbound_line(p: &out_pb::OutboundPolicy) -> String {
    let resource = match p.metadata.as_ref().and_then(|m| m.kind.as_ref()) {
        Some(linkerd2_proxy_api::meta::metadata::Kind::Resource(r)) => {
            format!("{}/{}/{}:{}", r.kind, r.namespace, r.name, r.port)
        }
        other => format!("{other:?}"),
    };
    let protocol = if outbound::is_opaque(p) {
        "opaque"
    } else {
        "detect"
    };
    format!("{resource} {protocol}")
}

#[tokio::test]
async fn outbound_lookups() {
    let svc = service(DefaultPolicy::Deny);
    let cases: &[(&str, out_pb::TrafficSpec, Result<&str, Code>)] = &[
        (
            "cluster IP",
            addr("198.19.0.10:80"),
            Ok("Service/shop/web:80 detect"),
        ),
        (
            "cluster IP, opaque port",
            addr("198.19.0.10:3306"),
            Ok("Service/shop/web:3306 opaque"),
        ),
        (
            "another Service's IP",
            addr("198.19.0.11:80"),
            Ok("Service/shop/plain:80 detect"),
        ),
        (
            "full name",
            authority("web.shop.svc.cluster.local:80"),
            Ok("Service/shop/web:80 detect"),
        ),
        (
            "short name, opaque port",
            authority("web.shop:3306"),
            Ok("Service/shop/web:3306 opaque"),
        ),
        (
            "IP as an authority",
            authority("198.19.0.11:80"),
            Ok("Service/shop/plain:80 detect"),
        ),
        (
            "an IP that is no Service",
            addr("198.19.0.99:80"),
            Err(Code::NotFound),
        ),
        (
            "a name that is no Service",
            authority("ghost.shop.svc.cluster.local:80"),
            Err(Code::NotFound),
        ),
        (
            "a name outside the cluster",
            authority("example.com:443"),
            Err(Code::NotFound),
        ),
        (
            "another cluster domain",
            authority("web.shop.svc.east.local:80"),
            Err(Code::NotFound),
        ),
        (
            "an ExternalName Service",
            authority("ext.shop:80"),
            Err(Code::NotFound),
        ),
        (
            "no target",
            out_pb::TrafficSpec {
                source_workload: String::new(),
                target: None,
            },
            Err(Code::InvalidArgument),
        ),
    ];
    for (name, spec, want) in cases {
        let got = OutboundPolicies::get(&svc, Request::new(spec.clone())).await;
        match (got, want) {
            (Ok(p), Ok(line)) => assert_eq!(outbound_line(p.get_ref()), *line, "{name}"),
            (Err(s), Err(code)) => assert_eq!(s.code(), *code, "{name}: {s:?}"),
            (Ok(p), Err(_)) => panic!("{name}: got {}", outbound_line(p.get_ref())),
            (Err(s), Ok(_)) => panic!("{name}: got {s:?}"),
        }
        // Watch answers the same at first.
        let watched = OutboundPolicies::watch(&svc, Request::new(spec.clone())).await;
        match (watched, want) {
            (Ok(stream), Ok(line)) => {
                let first = stream.into_inner().next().await;
                let first = first.and_then(Result::ok).expect("a first answer");
                assert_eq!(outbound_line(&first), *line, "{name}: watch");
            }
            (Err(s), Err(code)) => assert_eq!(s.code(), *code, "{name}: watch {s:?}"),
            (Ok(_), Err(_)) => panic!("{name}: watch answered"),
            (Err(s), Ok(_)) => panic!("{name}: watch {s:?}"),
        }
    }
}

#[tokio::test]
async fn an_outbound_watch_follows_the_service() {
    let svc = service(DefaultPolicy::Deny);
    let mut stream = OutboundPolicies::watch(&svc, Request::new(authority("plain.shop:80")))
        .await
        .expect("a Service")
        .into_inner();
    let first = stream.next().await.and_then(Result::ok).expect("first");
    assert_eq!(outbound_line(&first), "Service/shop/plain:80 detect");
    // A change that leaves the answer alone sends nothing.
    let mut same = services().remove(1);
    same.1.cluster_ips = vec!["198.19.0.12".parse().expect("ip")];
    svc.destination
        .apply_service(same.0.clone(), same.1.clone());
    assert!(stream.next().now_or_never().is_none(), "nothing new to say");
    // The opaque annotation arrives.
    let mut opaque = same;
    opaque.1.opaque_ports = vec![80];
    svc.destination.apply_service(opaque.0.clone(), opaque.1);
    let next = stream.next().await.and_then(Result::ok).expect("an update");
    assert_eq!(outbound_line(&next), "Service/shop/plain:80 opaque");
    // The Service goes: NotFound, then the stream ends.
    svc.destination.delete_service(&opaque.0);
    let end = stream.next().await.expect("a last message");
    assert_eq!(end.err().map(|s| s.code()), Some(Code::NotFound));
    assert!(stream.next().await.is_none());
}

fn port(workload: &str, port: u32) -> in_pb::PortSpec {
    in_pb::PortSpec {
        workload: workload.into(),
        port,
    }
}

fn server_name(s: &in_pb::Server) -> String {
    let label = |k: &str| s.labels.get(k).cloned().unwrap_or_default();
    format!(
        "{}/{} authz={}",
        label("kind"),
        label("name"),
        s.authorizations.len()
    )
}

#[tokio::test]
async fn inbound_lookups() {
    let svc = service(DefaultPolicy::AllUnauthenticated);
    let cases: &[(&str, in_pb::PortSpec, Result<&str, Code>)] = &[
        (
            "a Server's port",
            port("shop:users", 8080),
            Ok("server/users-http authz=0"),
        ),
        (
            "Linkerd's JSON workload",
            port(r#"{"ns":"shop","pod":"users"}"#, 8080),
            Ok("server/users-http authz=0"),
        ),
        (
            "a default port",
            port("shop:users", 9990),
            Ok("default/all-unauthenticated authz=1"),
        ),
        (
            "a pod that does not exist",
            port("shop:ghost", 8080),
            Err(Code::NotFound),
        ),
        (
            "a bad workload",
            port("users", 8080),
            Err(Code::InvalidArgument),
        ),
        ("port 0", port("shop:users", 0), Err(Code::InvalidArgument)),
    ];
    for (name, spec, want) in cases {
        let got = InboundServerPolicies::get_port(&svc, Request::new(spec.clone())).await;
        match (got, want) {
            (Ok(s), Ok(line)) => assert_eq!(server_name(s.get_ref()), *line, "{name}"),
            (Err(s), Err(code)) => assert_eq!(s.code(), *code, "{name}: {s:?}"),
            (Ok(s), Err(_)) => panic!("{name}: got {}", server_name(s.get_ref())),
            (Err(s), Ok(_)) => panic!("{name}: got {s:?}"),
        }
    }
}

#[tokio::test]
async fn an_inbound_watch_sends_when_its_answer_changes() {
    let svc = service(DefaultPolicy::Deny);
    let mut stream =
        InboundServerPolicies::watch_port(&svc, Request::new(port("shop:users", 8080)))
            .await
            .expect("a pod")
            .into_inner();
    let first = stream.next().await.and_then(Result::ok).expect("first");
    assert_eq!(server_name(&first), "server/users-http authz=0");
    // Something that changes no answer of this port: nothing is sent.
    svc.index.write(|s| add_ns(s, "elsewhere", None));
    assert!(stream.next().now_or_never().is_none(), "nothing new to say");
    // A policy whose authentication is missing grants nothing: still nothing to send.
    svc.index.write(|s| {
        add_policy(
            s,
            "users",
            ("Server", "users-http"),
            &[("MeshTLSAuthentication", "web")],
        );
    });
    assert!(
        stream.next().now_or_never().is_none(),
        "a policy not accepted grants nothing"
    );
    // The authentication appears: the policy now allows.
    svc.index
        .write(|s| add_mesh(s, "web", json!({"identities": [format!("web.shop.{ID}")]})));
    let next = stream.next().await.and_then(Result::ok).expect("an update");
    assert_eq!(server_name(&next), "server/users-http authz=1");
    // The pod goes: NotFound.
    svc.index.write(|s| {
        s.pods.remove(&("shop".to_owned(), "users".to_owned()));
    });
    let end = stream.next().await.expect("a last message");
    assert_eq!(end.err().map(|s| s.code()), Some(Code::NotFound));
}
