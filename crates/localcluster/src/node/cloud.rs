//! The cloud, for LoadBalancer Services: as cloud-provider-kind or MetalLB would, it gives
//! every Service of type LoadBalancer an ingress address from the cluster's range
//! (`198.18.(64·i+60).0/24`, routed to node 0 in the root namespace) and writes it to
//! `status.loadBalancer.ingress`; kube-proxy on the node then serves that address.
//!
//! The allocation is derived from the Services themselves on every event (addresses in use
//! are those in some Service's status), so the task keeps no state that a restart could lose.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

/// Assigns addresses until the task is aborted. `addr(n)` is the `n`th address of the range.
pub(crate) async fn run(client: kube::Client, addr: impl Fn(u8) -> Option<Ipv4Addr>) {
    let api = Api::<Service>::all(client);
    let mut services: BTreeMap<(String, String), Service> = BTreeMap::new();
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut listing: BTreeMap<(String, String), Service> = BTreeMap::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(s)) => {
                listing.insert(key(&s), s);
            }
            Ok(watcher::Event::InitDone) => services = std::mem::take(&mut listing),
            Ok(watcher::Event::Apply(s)) => {
                services.insert(key(&s), s);
            }
            Ok(watcher::Event::Delete(s)) => {
                services.remove(&key(&s));
            }
            Err(e) => {
                tracing::debug!(error = %e, "LoadBalancer watch");
                continue;
            }
        }
        for (ns, name, ip) in assign(&services, &addr) {
            let patch = serde_json::json!({"status": {"loadBalancer": {"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]}}});
            match Api::<Service>::namespaced(api.clone().into_client(), &ns)
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(s) => {
                    tracing::info!(%ns, %name, %ip, "LoadBalancer address assigned");
                    services.insert(key(&s), s);
                }
                Err(e) => tracing::warn!(%ns, %name, error = %e, "writing LoadBalancer status"),
            }
        }
    }
}

fn key(s: &Service) -> (String, String) {
    (
        s.metadata.namespace.clone().unwrap_or_default(),
        s.metadata.name.clone().unwrap_or_default(),
    )
}

fn ingress_ips(s: &Service) -> Vec<Ipv4Addr> {
    s.status
        .as_ref()
        .and_then(|st| st.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|i| {
            i.iter()
                .filter_map(|x| x.ip.as_deref()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn wants_address(s: &Service) -> bool {
    s.spec.as_ref().and_then(|sp| sp.type_.as_deref()) == Some("LoadBalancer")
        && ingress_ips(s).is_empty()
}

/// The Services that need an address, each with the lowest free one (pure).
pub(crate) fn assign(
    services: &BTreeMap<(String, String), Service>,
    addr: &impl Fn(u8) -> Option<Ipv4Addr>,
) -> Vec<(String, String, Ipv4Addr)> {
    let mut used: BTreeSet<Ipv4Addr> = services.values().flat_map(ingress_ips).collect();
    let mut out = Vec::new();
    let mut n = 0u8;
    for ((ns, name), s) in services {
        if !wants_address(s) {
            continue;
        }
        let ip = loop {
            match addr(n) {
                Some(ip) if used.contains(&ip) => n += 1,
                other => break other,
            }
        };
        let Some(ip) = ip else {
            tracing::warn!(%ns, %name, "no LoadBalancer addresses left");
            break;
        };
        used.insert(ip);
        out.push((ns.clone(), name.clone(), ip));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, type_: &str, ip: Option<&str>) -> ((String, String), Service) {
        let mut v = serde_json::json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"type": type_},
        });
        if let Some(ip) = ip {
            v["status"] = serde_json::json!({"loadBalancer": {"ingress": [{"ip": ip}]}});
        }
        (
            ("ns".into(), name.into()),
            serde_json::from_value(v).unwrap(),
        )
    }

    #[test]
    fn load_balancers_get_the_lowest_free_address_and_others_none() {
        let range = |n: u8| (n < 3).then(|| Ipv4Addr::new(198, 18, 60, 2 + n));
        let services: BTreeMap<_, _> = [
            svc("a", "LoadBalancer", Some("198.18.60.2")),
            svc("b", "LoadBalancer", None),
            svc("c", "ClusterIP", None),
            svc("d", "LoadBalancer", None),
            svc("e", "LoadBalancer", None),
        ]
        .into_iter()
        .collect();
        let got = assign(&services, &range);
        assert_eq!(
            got,
            vec![
                ("ns".into(), "b".into(), Ipv4Addr::new(198, 18, 60, 3)),
                ("ns".into(), "d".into(), Ipv4Addr::new(198, 18, 60, 4)),
            ],
            "e finds the range exhausted; c is no LoadBalancer; a keeps its address"
        );
    }
}
