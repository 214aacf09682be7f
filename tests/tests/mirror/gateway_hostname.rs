//! A gateway given by hostname: resolved through the nameserver the controller is told of,
//! and followed when its address changes; a Link the schema refuses, and one whose
//! gatewayAddress is no host, reported in its status.

use crate::Controller;
use crate::mirror_support::*;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use strait_k8s_api::Link;

/// A DNS responder on loopback: answers A queries for `name` with the current address, TTL 1.
async fn dns_responder(
    name: &'static str,
    addr: Arc<Mutex<std::net::Ipv4Addr>>,
) -> Res<(SocketAddr, tokio::task::JoinHandle<()>)> {
    use hickory_resolver::proto::op::{Message, OpCode};
    use hickory_resolver::proto::rr::{Name, RData, Record, RecordType, rdata::A};
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let local = sock.local_addr()?;
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
                return;
            };
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut rsp = Message::response(q.metadata.id, OpCode::Query);
            rsp.metadata.recursion_desired = q.metadata.recursion_desired;
            rsp.metadata.recursion_available = true;
            rsp.metadata.authoritative = true;
            for query in &q.queries {
                rsp.add_query(query.clone());
                if query.query_type() == RecordType::A
                    && query.name().to_ascii().trim_end_matches('.') == name
                {
                    let ip = addr
                        .lock()
                        .map(|a| *a)
                        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
                    if let Ok(n) = Name::from_ascii(format!("{name}.")) {
                        rsp.add_answer(Record::from_rdata(n, 1, RData::A(A(ip))));
                    }
                }
            }
            if let Ok(bytes) = rsp.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    Ok((local, task))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_gateway_hostname() -> Res {
    init("info,kube=warn");
    let (west, east) = clusters(&["shop"], &["shop"]).await?;
    let (w, e) = (west.client(), east.client());
    let pki = pki()?;
    // Addresses in the benchmark range with no listener: nothing leaves the machine.
    let first: std::net::Ipv4Addr = "198.18.200.10".parse()?;
    let second: std::net::Ipv4Addr = "198.18.200.11".parse()?;
    let current = Arc::new(Mutex::new(first));
    let (dns, _dns_task) = dns_responder("gw.east.test", current.clone()).await?;
    let mut l = link("east", "east-credentials", IpAddr::V4(first), 1, GW_ID)?;
    l.spec.gateway_address = "gw.east.test".into();
    let links = put_link(&west, &east, &l).await?;
    Api::<Service>::namespaced(e.clone(), "shop")
        .create(
            &PostParams::default(),
            &service("shop", "web", 80, &[EXPORTED], None)?,
        )
        .await?;

    let mut config = strait_mirror::Config::new(LINK_NS, pki.anchor_pem.as_bytes().to_vec());
    config.admin_addr = "127.0.0.1:0".parse()?;
    config.holder_identity = "e2e-dns".into();
    config.nameserver = Some(dns);
    let metrics = Arc::new(strait_mirror::Metrics::new());
    let _ctl = Controller {
        task: tokio::spawn(strait_mirror::run(w.clone(), config, metrics.clone())),
        metrics,
    };

    // Schema validation: a malformed Link is refused by the API server.
    let mut bad = serde_json::to_value(link("bad-schema", "x", IpAddr::V4(first), 1, GW_ID)?)?;
    bad["spec"]["probeSpec"]["period"] = "three seconds".into();
    let refused = Api::<kube::api::DynamicObject>::namespaced_with(
        w.clone(),
        LINK_NS,
        &kube::api::ApiResource::erase::<Link>(&()),
    )
    .create(&PostParams::default(), &serde_json::from_value(bad)?)
    .await;
    assert!(
        matches!(refused, Err(kube::Error::Api(ref s)) if s.code == 422),
        "{refused:?}"
    );
    // Controller-side validation: reported in status, nothing crashes.
    let mut bad = link("bad-addr", "x", IpAddr::V4(first), 1, GW_ID)?;
    bad.spec.target_cluster_name = "nowhere".into();
    bad.spec.gateway_address = "not a host!".into();
    links.create(&PostParams::default(), &bad).await?;
    wait_for("bad gatewayAddress reported in status", T, || async {
        links
            .get_opt("bad-addr")
            .await
            .ok()
            .flatten()?
            .status?
            .link_error
            .filter(|e| e.contains("gatewayAddress"))
    })
    .await?;

    let addrs = |want: std::net::Ipv4Addr| {
        let w = w.clone();
        move || {
            let w = w.clone();
            async move {
                get_slice(&w, "shop", "web-east").await.filter(|s| {
                    s.endpoints
                        .iter()
                        .flat_map(|e| e.addresses.iter())
                        .eq([want.to_string()].iter())
                })
            }
        }
    };
    wait_for("slice at the resolved address", T, addrs(first)).await?;
    if let Ok(mut c) = current.lock() {
        *c = second;
    }
    wait_for(
        "slice follows the new address after the TTL",
        T,
        addrs(second),
    )
    .await?;
    wait_for("status shows the new address", T, || async {
        status(&w, "east")
            .await
            .filter(|s| s.gateway_addresses == vec![second.to_string()])
    })
    .await?;
    Ok(())
}
