//! The control plane's checks: its Deployment, its trust anchors and its issuer.

use super::{EXPIRY_WARNING, Report, until};
use crate::install::control_plane::NAME as CONTROL_PLANE;
pub use crate::install::objects::TRUST_ROOTS_CONFIGMAP as TRUST_ROOTS;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::Api;
use std::collections::BTreeMap;
use std::time::SystemTime;
use strait_tls::TrustAnchors;

const GROUP: &str = "control plane";
/// The trust anchors' key in their ConfigMap (charts/strait-control-plane/templates/identity.yaml).
pub const TRUST_ROOTS_KEY: &str = "ca-bundle.crt";
/// The control plane's volume holding the issuer Secret.
const ISSUER_VOLUME: &str = "issuer";

pub(super) async fn check(client: &kube::Client, ns: &str, r: &mut Report) {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = match deployments.get(CONTROL_PLANE).await {
        Ok(d) => {
            deployment_available(r, GROUP, "the control plane is available", &d, ns);
            Some(d)
        }
        Err(e) => {
            r.fail(
                GROUP,
                "the control plane is available",
                format!("reading deployment {ns}/{CONTROL_PLANE}: {e}"),
                "install it: `helm install strait-control-plane charts/strait-control-plane ...` \
                 or `strait install | kubectl apply -f -`",
            );
            None
        }
    };
    let anchors = match Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get(TRUST_ROOTS)
        .await
    {
        Ok(cm) => anchors_valid(r, &cm, ns),
        Err(e) => {
            r.fail(
                GROUP,
                "the trust anchors are valid",
                format!("reading configmap {ns}/{TRUST_ROOTS}: {e}"),
                "reinstall the control plane with --identity-trust-anchors-file",
            );
            None
        }
    };
    let Some(anchors) = anchors else { return };
    let secret = deployment.as_ref().and_then(|d| {
        d.spec
            .as_ref()?
            .template
            .spec
            .as_ref()?
            .volumes
            .as_ref()?
            .iter()
            .find(|v| v.name == ISSUER_VOLUME)?
            .secret
            .as_ref()?
            .secret_name
            .clone()
    });
    let Some(secret) = secret else {
        r.fail(
            GROUP,
            "the issuer is valid and signed by the trust anchors",
            format!("deployment {ns}/{CONTROL_PLANE} mounts no issuer Secret"),
            "reinstall the control plane",
        );
        return;
    };
    match Api::<Secret>::namespaced(client.clone(), ns).get(&secret).await {
        Ok(s) => issuer_valid(r, &s, &anchors, ns),
        Err(e) => r.fail(
            GROUP,
            "the issuer is valid and signed by the trust anchors",
            format!("reading secret {ns}/{secret}: {e}"),
            "create the issuer Secret (cert-manager, or reinstall with --identity-issuer-certificate-file)",
        ),
    }
}

/// Available replicas equal the desired ones (at least one).
pub(super) fn deployment_available(
    r: &mut Report,
    group: &str,
    check: &str,
    d: &Deployment,
    ns: &str,
) {
    let name = d.metadata.name.clone().unwrap_or_default();
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    let available = status.available_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    if want > 0 && available >= want && updated >= want {
        r.ok(group, check, format!("{available}/{want} pods available"));
    } else {
        r.fail(
            group,
            check,
            format!("{available}/{want} pods of deployment {ns}/{name} available"),
            format!("`kubectl -n {ns} describe deployment {name}` and `kubectl -n {ns} logs deploy/{name}`"),
        );
    }
}

/// The ConfigMap's anchors parse and are in their validity period.
fn anchors_valid(r: &mut Report, cm: &ConfigMap, ns: &str) -> Option<TrustAnchors> {
    const CHECK: &str = "the trust anchors are valid";
    let pem = cm
        .data
        .as_ref()
        .and_then(|d| d.get(TRUST_ROOTS_KEY))
        .cloned()
        .unwrap_or_default();
    let anchors =
        match TrustAnchors::from_pem(pem.as_bytes(), &format!("configmap {ns}/{TRUST_ROOTS}")) {
            Ok(a) => a,
            Err(e) => {
                r.fail(
                    GROUP,
                    CHECK,
                    e.to_string(),
                    "reinstall the control plane with a PEM --identity-trust-anchors-file",
                );
                return None;
            }
        };
    let soonest = anchors
        .certs()
        .iter()
        .filter_map(|c| strait_tls::cert_validity(c).ok())
        .map(|(_, not_after)| not_after)
        .min();
    expiry(
        r,
        CHECK,
        soonest,
        anchors.certs().len(),
        "the trust anchors",
        "add a new anchor to the bundle of every linked cluster, then rotate the issuers",
    );
    Some(anchors)
}

/// The issuer parses, is a CA whose key matches, is in its validity period, and a leaf it
/// signs verifies under the anchors, as every proxy will verify it.
fn issuer_valid(r: &mut Report, secret: &Secret, anchors: &TrustAnchors, ns: &str) {
    const CHECK: &str = "the issuer is valid and signed by the trust anchors";
    let name = secret.metadata.name.clone().unwrap_or_default();
    let data: BTreeMap<String, Vec<u8>> = secret
        .data
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect();
    let issuer = match strait_tls::Issuer::from_secret_data(&data) {
        Ok(i) => i,
        Err(e) => {
            r.fail(GROUP, CHECK, format!("secret {ns}/{name}: {e}"), "write an ECDSA CA certificate and its key into the issuer Secret (tls.crt, tls.key)");
            return;
        }
    };
    let probe: strait_core::identity::Identity =
        match format!("check.{ns}.serviceaccount.identity.{ns}.cluster.local").parse() {
            Ok(id) => id,
            Err(_) => return,
        };
    let now = SystemTime::now();
    let signed = strait_tls::generate_csr(&probe)
        .and_then(|req| issuer.issue(&req.csr, &probe, strait_tls::DEFAULT_LEAF_LIFETIME, now))
        .and_then(|leaf| strait_tls::verify_chain(anchors, &probe, &leaf.chain(), now));
    if let Err(e) = signed {
        r.fail(
            GROUP,
            CHECK,
            format!("a certificate from issuer {ns}/{name} does not verify under the trust anchors: {e}"),
            "the issuer must be signed by one of the anchors in strait-identity-trust-roots: re-issue it, or fix the anchors",
        );
        return;
    }
    expiry(
        r,
        CHECK,
        Some(issuer.not_after()),
        1,
        "the issuer",
        "issue a new issuer certificate from the anchor and update the Secret (cert-manager renews it by itself)",
    );
}

fn expiry(
    r: &mut Report,
    check: &str,
    not_after: Option<SystemTime>,
    count: usize,
    what: &str,
    hint: &str,
) {
    let now = SystemTime::now();
    match not_after {
        Some(t) if t <= now => r.fail(GROUP, check, format!("{what} expired {}", until(t)), hint),
        Some(t) if t.duration_since(now).unwrap_or_default() < EXPIRY_WARNING => {
            r.warn(GROUP, check, format!("{what} expire {}", until(t)), hint);
        }
        Some(t) => r.ok(
            GROUP,
            check,
            format!(
                "{count} certificate(s), valid until {}",
                humantime::format_rfc3339_seconds(t)
            ),
        ),
        None => r.fail(
            GROUP,
            check,
            format!("{what}: no certificate could be read"),
            hint,
        ),
    }
}
