//! What a Link's credentials may do in the linked cluster, asked of its API server with
//! SelfSubjectAccessReviews: every right the mirror controller needs must be allowed, and
//! rights it must not have (reading Secrets, writing anything) are reported.

use super::Report;
use super::control_plane::TRUST_ROOTS;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use strait_k8s_api::ServiceAccountToken;

/// What the mirror controller needs (each must be allowed) and what it must not have.
fn wanted(
    token: Option<&ServiceAccountToken>,
    cp_ns: &str,
    remote_discovery: bool,
) -> (Vec<ResourceAttributes>, Vec<ResourceAttributes>) {
    let attr = |verb: &str,
                group: &str,
                resource: &str,
                ns: Option<&str>,
                name: Option<&str>,
                sub: Option<&str>| ResourceAttributes {
        verb: Some(verb.into()),
        group: Some(group.into()),
        resource: Some(resource.into()),
        namespace: ns.map(Into::into),
        name: name.map(Into::into),
        subresource: sub.map(Into::into),
        ..Default::default()
    };
    let mut need = vec![
        attr("list", "", "services", None, None, None),
        attr("watch", "", "services", None, None, None),
        attr(
            "list",
            "discovery.k8s.io",
            "endpointslices",
            None,
            None,
            None,
        ),
        attr(
            "watch",
            "discovery.k8s.io",
            "endpointslices",
            None,
            None,
            None,
        ),
        attr(
            "get",
            "",
            "configmaps",
            Some(cp_ns),
            Some(TRUST_ROOTS),
            None,
        ),
    ];
    if remote_discovery {
        need.push(attr("list", "", "pods", None, None, None));
        need.push(attr("watch", "", "pods", None, None, None));
    }
    if let Some(t) = token {
        need.push(attr(
            "create",
            "",
            "serviceaccounts",
            Some(&t.namespace),
            Some(&t.name),
            Some("token"),
        ));
    }
    let extra = vec![
        attr("get", "", "secrets", None, None, None),
        attr("list", "", "secrets", None, None, None),
        attr("create", "", "services", None, None, None),
        attr("update", "", "services", None, None, None),
        attr("delete", "", "services", None, None, None),
        attr("create", "", "pods", None, None, None),
        attr("create", "", "pods", None, None, Some("exec")),
        attr(
            "create",
            "",
            "serviceaccounts",
            Some("kube-system"),
            Some("default"),
            Some("token"),
        ),
        attr("get", "", "configmaps", Some("kube-system"), None, None),
    ];
    (need, extra)
}

fn describe(a: &ResourceAttributes) -> String {
    let resource = match (&a.group, &a.subresource) {
        (Some(g), None) if !g.is_empty() => {
            format!("{}.{g}", a.resource.as_deref().unwrap_or_default())
        }
        (_, Some(s)) => format!("{}/{s}", a.resource.as_deref().unwrap_or_default()),
        _ => a.resource.clone().unwrap_or_default(),
    };
    let mut s = format!("{} {resource}", a.verb.as_deref().unwrap_or_default());
    if let Some(n) = &a.name {
        s.push_str(&format!(" {n}"));
    }
    s.push_str(&match &a.namespace {
        Some(ns) => format!(" in {ns}"),
        None => " (all namespaces)".into(),
    });
    s
}

/// Asks the remote API server what the Link's credentials may do.
pub(super) async fn rights(
    remote: &kube::Client,
    token: Option<&ServiceAccountToken>,
    cp_ns: &str,
    remote_discovery: bool,
    group: &str,
    relink: &str,
    r: &mut Report,
) {
    const CHECK: &str = "the credentials hold exactly the rights they need";
    let api: Api<SelfSubjectAccessReview> = Api::all(remote.clone());
    let allowed = |a: ResourceAttributes| {
        let api = api.clone();
        async move {
            let review = SelfSubjectAccessReview {
                spec: SelfSubjectAccessReviewSpec {
                    resource_attributes: Some(a),
                    ..Default::default()
                },
                ..Default::default()
            };
            api.create(&PostParams::default(), &review)
                .await
                .map(|r| r.status.is_some_and(|s| s.allowed))
        }
    };
    let (need, extra) = wanted(token, cp_ns, remote_discovery);
    let (mut missing, mut excess) = (Vec::new(), Vec::new());
    for a in need {
        match allowed(a.clone()).await {
            Ok(true) => {}
            Ok(false) => missing.push(describe(&a)),
            Err(e) => {
                return r.fail(
                    group,
                    CHECK,
                    format!("asking the remote API server: {e}"),
                    relink.to_owned(),
                );
            }
        }
    }
    for a in extra {
        if let Ok(true) = allowed(a.clone()).await {
            excess.push(describe(&a));
        }
    }
    if !missing.is_empty() {
        r.fail(group, CHECK, format!("missing: {}", missing.join(", ")), format!("upgrade the multicluster extension in the linked cluster (its remote-access role grants these), then {relink}"));
    } else if !excess.is_empty() {
        r.warn(group, CHECK, format!("more than needed: {}", excess.join(", ")), "link with the chart's remote-access account (or one from `strait multicluster allow`), not an admin's credentials");
    } else {
        r.ok(group, CHECK, None);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    #[test]
    fn rights_are_described_as_a_person_reads_them() {
        let token = ServiceAccountToken {
            namespace: "strait-multicluster".into(),
            name: "west".into(),
            issued_at: SystemTime::UNIX_EPOCH,
            expires_at: SystemTime::UNIX_EPOCH,
        };
        let (need, extra) = wanted(Some(&token), "strait", false);
        let described =
            |list: &[ResourceAttributes]| -> Vec<String> { list.iter().map(describe).collect() };
        let (need, extra) = (described(&need), described(&extra));
        for want in [
            "list services (all namespaces)",
            "watch endpointslices.discovery.k8s.io (all namespaces)",
            "create serviceaccounts/token west in strait-multicluster",
            "get configmaps strait-identity-trust-roots in strait",
        ] {
            assert!(need.iter().any(|n| n == want), "{want} in {need:?}");
        }
        for want in [
            "get secrets (all namespaces)",
            "create services (all namespaces)",
        ] {
            assert!(extra.iter().any(|n| n == want), "{want} in {extra:?}");
        }
        let (need, _) = wanted(None, "strait", true);
        assert!(
            need.iter().any(|a| a.resource.as_deref() == Some("pods")),
            "remote discovery reads Pods"
        );
        assert!(
            !need.iter().any(|a| a.subresource.is_some()),
            "no token, no renewal right"
        );
    }
}
