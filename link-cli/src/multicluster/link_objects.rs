//! What `strait multicluster link` prints, as pure functions of what it read from the
//! target: the kubeconfig that holds only the target and the token, the credentials Secret
//! around it, the Link, and `--set` overrides on the Link's spec.

use anyhow::{Context as _, ensure};
use base64::Engine as _;
use serde_json::{Value, json};
use strait_core::labels;
use strait_k8s_api::{Link, LinkSpec};

/// The name of the credentials Secret of the Link to `cluster`.
pub fn credentials_secret(cluster: &str) -> String {
    format!("cluster-credentials-{cluster}")
}

/// A kubeconfig that holds only the target cluster and the token.
pub(super) fn remote_kubeconfig(
    name: &str,
    server: &str,
    ca_pem: Option<&str>,
    token: &str,
) -> anyhow::Result<String> {
    let mut cluster = json!({"server": server});
    if let Some(pem) = ca_pem {
        cluster["certificate-authority-data"] =
            base64::engine::general_purpose::STANDARD.encode(pem).into();
    }
    let kc = json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": format!("strait-mirror-{name}"), "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": format!("strait-mirror-{name}")}}],
        "current-context": name,
    });
    serde_saphyr::to_string(&kc).context("writing the kubeconfig")
}

pub(super) fn credentials_object(cluster: &str, ns: &str, kubeconfig: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "mirror.strait.dev/remote-kubeconfig",
        "metadata": {
            "name": credentials_secret(cluster),
            "namespace": ns,
            "labels": {
                "app.kubernetes.io/part-of": "strait",
                labels::CLUSTER_NAME: cluster,
            },
        },
        "data": {"kubeconfig": base64::engine::general_purpose::STANDARD.encode(kubeconfig)},
    })
}

pub(super) fn link_object(cluster: &str, ns: &str, spec: LinkSpec) -> anyhow::Result<Value> {
    let mut link = Link::new(cluster, spec);
    link.metadata.namespace = Some(ns.to_owned());
    link.metadata.labels = Some(
        [(
            "app.kubernetes.io/part-of".to_string(),
            "strait".to_string(),
        )]
        .into_iter()
        .collect(),
    );
    let mut v = serde_json::to_value(&link).context("writing the Link")?;
    if let Some(o) = v.as_object_mut() {
        o.remove("status");
    }
    Ok(v)
}

/// `--set field.path=value` on the Link's spec: numbers and booleans as such, the rest as
/// strings. A field the Link does not have is refused by name.
pub(super) fn apply_sets(spec: LinkSpec, sets: &[String]) -> anyhow::Result<LinkSpec> {
    let mut v = serde_json::to_value(&spec).context("writing the Link spec")?;
    let mut paths = Vec::new();
    for set in sets {
        let (path, raw) = set.split_once('=').with_context(|| {
            format!("--set {set:?}: expected FIELD=VALUE, e.g. probeSpec.period=10s")
        })?;
        let path: Vec<&str> = path.trim().split('.').collect();
        ensure!(
            path.iter().all(|p| !p.is_empty()),
            "--set {set:?}: the field path has an empty part"
        );
        let value = if let Ok(n) = raw.parse::<i64>() {
            json!(n)
        } else if let Ok(b) = raw.parse::<bool>() {
            json!(b)
        } else {
            json!(raw)
        };
        let mut cur = &mut v;
        for (i, p) in path.iter().enumerate() {
            if i + 1 == path.len() {
                cur[*p] = value.clone();
            } else {
                if !cur[*p].is_object() {
                    cur[*p] = json!({});
                }
                cur = &mut cur[*p];
            }
        }
        paths.push((set, path));
    }
    let parsed: LinkSpec = serde_json::from_value(v.clone())
        .map_err(|e| anyhow::anyhow!("--set: the Link spec does not accept it: {e}"))?;
    let back = serde_json::to_value(&parsed).context("writing the Link spec")?;
    for (set, path) in paths {
        let found = path.iter().try_fold(&back, |cur, p| cur.get(*p));
        ensure!(
            found.is_some(),
            "--set {set:?}: the Link spec has no field {} (see `kubectl explain links.spec`)",
            path.join(".")
        );
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
