//! The multicluster checks: the extension's Deployments and leader, each Link (read through
//! its own credentials), and every mirror.

use super::control_plane::{TRUST_ROOTS, TRUST_ROOTS_KEY, deployment_available};
use super::{Report, until};
use crate::multicluster::gateways::MIRROR_LEASE;
use crate::multicluster::{is_denied, is_not_found};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};
use strait_core::identity::GATEWAY_SERVICE_ACCOUNT as GATEWAY;
use strait_core::labels;
use strait_k8s_api::{Link, ServiceAccountToken};

const GROUP: &str = "multicluster";
const MIRRORS: &str = "mirrors";
const MIRROR: &str = crate::install::multicluster::MIRROR;

pub(super) async fn check(client: &kube::Client, cp_ns: &str, ns: &str, r: &mut Report) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    match deployments.get(GATEWAY).await {
        Ok(d) => deployment_available(r, GROUP, "the gateway is available", &d, ns),
        Err(e) if is_not_found(&e) => r.warn(
            GROUP,
            "the gateway is available",
            format!("no deployment {ns}/{GATEWAY}"),
            "without a gateway, other clusters cannot link to this one: install the multicluster chart with gateway.enabled=true",
        ),
        Err(e) => r.fail(GROUP, "the gateway is available", e.to_string(), "check your access to the cluster"),
    }
    match deployments.get(MIRROR).await {
        Ok(d) => deployment_available(r, GROUP, "the service mirror controller is available", &d, ns),
        Err(e) => r.fail(
            GROUP,
            "the service mirror controller is available",
            format!("reading deployment {ns}/{MIRROR}: {e}"),
            "install the multicluster extension: `helm install strait-multicluster charts/strait-multicluster ...`",
        ),
    }
    leader(client, ns, r).await;

    let links = match Api::<Link>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            r.fail(
                GROUP,
                "the Links can be read",
                e.to_string(),
                "install the multicluster extension (it brings the Link CRD)",
            );
            Vec::new()
        }
    };
    let local_anchors = Api::<ConfigMap>::namespaced(client.clone(), cp_ns)
        .get(TRUST_ROOTS)
        .await
        .ok()
        .and_then(|cm| anchor_set(&cm));
    let mut remotes = BTreeMap::new();
    for link in &links {
        if let Some(remote) = check_link(client, link, cp_ns, ns, local_anchors.as_ref(), r).await {
            remotes.insert(link.spec.target_cluster_name.clone(), remote);
        }
    }
    mirrors(client, &links, &remotes, r).await;
}

/// The leader Lease is held, renewed within its duration, by a pod that exists.
async fn leader(client: &kube::Client, ns: &str, r: &mut Report) {
    const CHECK: &str = "the service mirror controller has a leader";
    let hint = format!(
        "`kubectl -n {ns} logs deploy/{MIRROR}`; a replica takes the Lease {MIRROR_LEASE} within its duration"
    );
    let lease = match Api::<Lease>::namespaced(client.clone(), ns)
        .get(MIRROR_LEASE)
        .await
    {
        Ok(l) => l.spec.unwrap_or_default(),
        Err(e) => {
            return r.fail(
                GROUP,
                CHECK,
                format!("reading lease {ns}/{MIRROR_LEASE}: {e}"),
                hint,
            );
        }
    };
    let holder = lease.holder_identity.unwrap_or_default();
    let duration = Duration::from_secs(
        lease
            .lease_duration_seconds
            .unwrap_or(15)
            .max(1)
            .unsigned_abs()
            .into(),
    );
    let renewed = lease.renew_time.map(|t| SystemTime::from(t.0));
    let fresh = renewed
        .is_some_and(|t| SystemTime::now().duration_since(t).unwrap_or_default() <= duration);
    if holder.is_empty() || !fresh {
        return r.fail(
            GROUP,
            CHECK,
            format!("lease {ns}/{MIRROR_LEASE} is not held (holder {holder:?})"),
            hint,
        );
    }
    match Api::<Pod>::namespaced(client.clone(), ns)
        .get(&holder)
        .await
    {
        Ok(p) if p.metadata.deletion_timestamp.is_none() => {
            r.ok(GROUP, CHECK, format!("pod {holder}"))
        }
        _ => r.fail(
            GROUP,
            CHECK,
            format!("the lease holder {holder:?} is not a running pod"),
            hint,
        ),
    }
}

/// The DER of every certificate in a trust-roots ConfigMap.
fn anchor_set(cm: &ConfigMap) -> Option<BTreeSet<Vec<u8>>> {
    let pem = cm.data.as_ref()?.get(TRUST_ROOTS_KEY)?;
    let anchors = strait_tls::TrustAnchors::from_pem(pem.as_bytes(), "trust roots").ok()?;
    Some(anchors.certs().iter().map(|c| c.to_vec()).collect())
}

/// The checks of one Link; the remote client when its credentials work.
async fn check_link(
    client: &kube::Client,
    link: &Link,
    cp_ns: &str,
    ns: &str,
    local_anchors: Option<&BTreeSet<Vec<u8>>>,
    r: &mut Report,
) -> Option<kube::Client> {
    let cluster = &link.spec.target_cluster_name;
    let group = format!("link {cluster}");
    let relink = format!(
        "run `strait multicluster link --cluster-name {cluster}` against {cluster} and apply its output here"
    );
    let status = link.status.clone().unwrap_or_default();
    match (&status.link_error, status.warnings.is_empty()) {
        (Some(e), _) => r.fail(
            &group,
            "the Link is served",
            e.clone(),
            format!(
                "`kubectl -n {ns} describe link {}`",
                link.metadata.name.as_deref().unwrap_or_default()
            ),
        ),
        (None, false) => r.warn(
            &group,
            "the Link is served",
            status.warnings.join("; "),
            "the Link asks for something this controller does not do; it is served without it",
        ),
        (None, true) => r.ok(&group, "the Link is served", None),
    }
    match status.gateway_alive {
        Some(true) => r.ok(&group, &format!("{cluster}'s gateway is alive"), status.gateway_latency_ms.map(|l| format!("last probe {l}ms"))),
        Some(false) => r.fail(&group, &format!("{cluster}'s gateway is alive"), format!("probes of {}:{} fail", link.spec.gateway_address, link.spec.probe_spec.port), format!("in {cluster}: `kubectl -n {ns} get deploy,svc {GATEWAY}` (pods ready? load balancer address?)")),
        None => r.warn(&group, &format!("{cluster}'s gateway is alive"), "not probed yet".into(), "wait a probe period, then check again"),
    }

    let secret_name = &link.spec.cluster_credentials_secret;
    const PRESENT: &str = "the credentials Secret is present";
    let kubeconfig = match Api::<Secret>::namespaced(client.clone(), ns)
        .get(secret_name)
        .await
    {
        Ok(s) => match s.data.as_ref().and_then(|d| d.get("kubeconfig")) {
            Some(b) => String::from_utf8_lossy(&b.0).into_owned(),
            None => {
                r.fail(
                    &group,
                    PRESENT,
                    format!("secret {ns}/{secret_name} has no key kubeconfig"),
                    relink,
                );
                return None;
            }
        },
        Err(e) => {
            r.fail(
                &group,
                PRESENT,
                format!("reading secret {ns}/{secret_name}: {e}"),
                relink,
            );
            return None;
        }
    };
    r.ok(&group, PRESENT, format!("secret {ns}/{secret_name}"));

    const REACH: &str = "the credentials reach the remote API";
    let remote = match remote_client(&kubeconfig).await {
        Ok(c) => c,
        Err(e) => {
            r.fail(
                &group,
                REACH,
                format!("the kubeconfig in secret {ns}/{secret_name} is unusable: {e}"),
                relink,
            );
            return None;
        }
    };
    let token = token_of(&kubeconfig);
    match remote.apiserver_version().await {
        Ok(v) => r.ok(&group, REACH, format!("Kubernetes {}", v.git_version)),
        Err(e) if is_denied(&e) => {
            r.fail(
                &group,
                REACH,
                format!("{cluster} refuses the credentials (revoked, or expired): {e}"),
                relink,
            );
            return None;
        }
        Err(e) => {
            r.fail(&group, REACH, format!("{cluster}'s API server does not answer: {e}"), "check that this cluster can reach the server in the Link's kubeconfig (`--api-server-address` when linking)");
            return None;
        }
    }
    const TOKEN: &str = "the credentials are fresh";
    match &token {
        Some(t) => {
            let now = SystemTime::now();
            if t.remaining(now).is_zero() {
                r.fail(
                    &group,
                    TOKEN,
                    format!("the token expired {}", until(t.expires_at)),
                    relink.clone(),
                );
            } else if now > t.renew_at(90) {
                r.warn(&group, TOKEN, format!("the token expires {} and has not been renewed", until(t.expires_at)), format!("the mirror controller renews it at 80% of its lifetime: `kubectl -n {ns} logs deploy/{MIRROR}`; or {relink}"));
            } else {
                r.ok(
                    &group,
                    TOKEN,
                    format!(
                        "token of {}/{}, expires {}",
                        t.namespace,
                        t.name,
                        until(t.expires_at)
                    ),
                );
            }
        }
        None => r.warn(
            &group,
            TOKEN,
            "the kubeconfig has no service-account token (it is not renewed)".into(),
            format!("{relink}, so the Link uses the limited, renewable remote-access credentials"),
        ),
    }
    let remote_discovery = link
        .spec
        .remote_discovery_selector
        .as_ref()
        .is_some_and(|s| *s != Default::default());
    super::rights::rights(
        &remote,
        token.as_ref(),
        cp_ns,
        remote_discovery,
        &group,
        &relink,
        r,
    )
    .await;

    const ANCHORS: &str = "the trust anchors match this cluster's";
    match Api::<ConfigMap>::namespaced(remote.clone(), cp_ns).get(TRUST_ROOTS).await {
        Ok(cm) => match (anchor_set(&cm), local_anchors) {
            (Some(theirs), Some(ours)) if &theirs == ours => r.ok(&group, ANCHORS, None),
            (Some(_), Some(_)) => r.fail(&group, ANCHORS, format!("{cluster}'s anchors ({cp_ns}/{TRUST_ROOTS}) differ from this cluster's: cross-cluster mTLS is refused"), "install every linked cluster with the same --identity-trust-anchors-file (during a rotation, a bundle holding both anchors)"),
            _ => r.fail(&group, ANCHORS, "the trust anchors of one side do not parse".into(), "reinstall the control plane with a PEM --identity-trust-anchors-file"),
        },
        Err(e) if is_denied(&e) => r.warn(&group, ANCHORS, format!("the credentials may not read {cluster}'s {cp_ns}/{TRUST_ROOTS}"), format!("upgrade the multicluster extension in {cluster} (it grants that read), then {relink}")),
        Err(e) => r.fail(&group, ANCHORS, format!("reading {cluster}'s {cp_ns}/{TRUST_ROOTS}: {e}"), format!("is the control plane installed in {cluster}, in namespace {cp_ns}?")),
    }
    Some(remote)
}

async fn remote_client(kubeconfig: &str) -> Result<kube::Client, String> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).map_err(|e| e.to_string())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut cfg = cfg;
    cfg.connect_timeout = Some(Duration::from_secs(5));
    cfg.read_timeout = Some(Duration::from_secs(10));
    kube::Client::try_from(cfg).map_err(|e| e.to_string())
}

/// The claims of the kubeconfig's current user's token, when it is a service-account JWT.
fn token_of(kubeconfig: &str) -> Option<ServiceAccountToken> {
    let kc = kube::config::Kubeconfig::from_yaml(kubeconfig).ok()?;
    ServiceAccountToken::peek(strait_k8s_api::token::current_token(&kc)?).ok()
}

/// Every mirror has a ready endpoint; none belongs to a Link that is gone or mirrors a
/// remote Service that is gone.
async fn mirrors(
    client: &kube::Client,
    links: &[Link],
    remotes: &BTreeMap<String, kube::Client>,
    r: &mut Report,
) {
    let selector = ListParams::default().labels(&format!("{}=true", labels::MIRRORED_SERVICE));
    let services = match Api::<Service>::all(client.clone()).list(&selector).await {
        Ok(l) => l.items,
        Err(e) => {
            return r.fail(
                MIRRORS,
                "every mirror has ready endpoints",
                e.to_string(),
                "check your access to the cluster",
            );
        }
    };
    let slices = Api::<EndpointSlice>::all(client.clone())
        .list(&selector)
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    let mut ready: BTreeSet<(String, String)> = BTreeSet::new();
    for s in &slices {
        let svc = s
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("kubernetes.io/service-name"))
            .cloned()
            .unwrap_or_default();
        if s.endpoints
            .iter()
            .any(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        {
            ready.insert((s.metadata.namespace.clone().unwrap_or_default(), svc));
        }
    }
    let key = |s: &Service| {
        (
            s.metadata.namespace.clone().unwrap_or_default(),
            s.metadata.name.clone().unwrap_or_default(),
        )
    };
    let without: Vec<String> = services
        .iter()
        .map(key)
        .filter(|k| !ready.contains(k))
        .map(|(ns, n)| format!("{ns}/{n}"))
        .collect();
    if without.is_empty() {
        r.ok(
            MIRRORS,
            "every mirror has ready endpoints",
            format!("{} mirror(s)", services.len()),
        );
    } else {
        r.fail(MIRRORS, "every mirror has ready endpoints", format!("no ready endpoint: {}", without.join(", ")), "the remote Service has no ready pods, or its cluster's gateway is down: `strait multicluster gateways`, then the remote Deployment");
    }

    let linked: BTreeSet<&str> = links
        .iter()
        .map(|l| l.spec.target_cluster_name.as_str())
        .collect();
    let mut orphans = Vec::new();
    for svc in &services {
        let (ns, name) = key(svc);
        let cluster = svc
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::CLUSTER_NAME))
            .cloned()
            .unwrap_or_default();
        if !linked.contains(cluster.as_str()) {
            orphans.push(format!("{ns}/{name} (no Link to cluster {cluster:?})"));
            continue;
        }
        let Some(remote) = remotes.get(&cluster) else {
            continue;
        };
        // A pod's mirror is a mirror of its headless parent's remote Service.
        let mirror_of = svc
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::HEADLESS_MIRROR_SVC_NAME))
            .unwrap_or(&name);
        let remote_name = mirror_of
            .strip_suffix(&format!("-{cluster}"))
            .unwrap_or(mirror_of);
        match Api::<Service>::namespaced(remote.clone(), &ns)
            .get(remote_name)
            .await
        {
            Err(e) if is_not_found(&e) => orphans.push(format!(
                "{ns}/{name} ({cluster} has no Service {ns}/{remote_name})"
            )),
            _ => {}
        }
    }
    if orphans.is_empty() {
        r.ok(MIRRORS, "no mirror is orphaned", None);
    } else {
        r.fail(MIRRORS, "no mirror is orphaned", orphans.join(", "), "a mirror left by a deleted Link (kept with mirror.strait.dev/keep-mirrors-on-delete) or a missed update: delete it with `kubectl -n NS delete service NAME` once nothing calls it");
    }
}
