//! The charts and `strait install` / `strait multicluster install` render the same objects
//! for the same values; the charts lint; values.schema.json refuses bad values.
//!
//! Runs the real helm (v4, built once from the Go module proxy by
//! `strait_localcluster::assets::ensure_node`, or found in `$STRAIT_NODE_ASSETS`).

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use strait_cli::install::{Settings, render_control_plane, render_multicluster};

fn helm() -> PathBuf {
    match strait_localcluster::assets::ensure_node() {
        Ok(assets) => assets.helm,
        Err(e) => panic!(
            "helm is needed for the chart tests and could not be found or built: {e}\n\
             build it with crates/localcluster/scripts/build-node.sh \
             (OUT=~/.cache/strait/k8s/node-v1.34.4-coredns-v1.15.0-helm-v4.3.1), or set \
             STRAIT_NODE_ASSETS to a folder holding a helm v4 binary"
        ),
    }
}

fn chart(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts")
        .join(name)
}

/// A trust anchor and an issuer, as files.
struct Identity {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    crt: PathBuf,
    key: PathBuf,
}

fn identity() -> Identity {
    let dir = tempfile::tempdir().unwrap();
    let files = strait_tls::testing::TestPki::new().write_issuer_files(dir.path());
    Identity {
        _dir: dir,
        ca: files.anchors,
        crt: files.cert,
        key: files.key,
    }
}

/// `helm template` of a chart; Err(stderr) when helm refuses.
fn helm_template(chart_name: &str, args: &[String]) -> Result<Vec<Value>, String> {
    let out = Command::new(helm())
        .arg("template")
        .arg("strait")
        .arg(chart(chart_name))
        .arg("--include-crds")
        .args(args)
        .output()
        .unwrap();
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout)).unwrap();
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn keyed(objects: &[Value]) -> BTreeMap<String, Value> {
    let mut map = BTreeMap::new();
    for o in objects {
        let key = format!(
            "{}/{}/{}",
            o["kind"].as_str().unwrap_or("?"),
            o["metadata"]["namespace"].as_str().unwrap_or("-"),
            o["metadata"]["name"].as_str().unwrap_or("?"),
        );
        assert!(map.insert(key.clone(), o.clone()).is_none(), "{key} twice");
    }
    map
}

fn assert_same(case: &str, helm: &[Value], cli: &[Value]) {
    let (h, c) = (keyed(helm), keyed(cli));
    let only_helm: Vec<_> = h.keys().filter(|k| !c.contains_key(*k)).collect();
    let only_cli: Vec<_> = c.keys().filter(|k| !h.contains_key(*k)).collect();
    assert!(
        only_helm.is_empty() && only_cli.is_empty(),
        "{case}: only in the chart: {only_helm:?}; only in the CLI: {only_cli:?}"
    );
    for (k, hv) in &h {
        assert!(
            hv == &c[k],
            "{case}: {k} differs\nchart: {}\ncli:   {}",
            serde_json::to_string_pretty(hv).unwrap(),
            serde_json::to_string_pretty(&c[k]).unwrap()
        );
    }
}

fn sets(sets: &[&str]) -> Vec<String> {
    sets.iter().map(|s| s.to_string()).collect()
}

fn helm_args(sets: &[String], ha: bool, chart_name: &str, files: &[(&str, &Path)]) -> Vec<String> {
    helm_args_with_strings(sets, &[], ha, chart_name, files)
}

fn helm_args_with_strings(
    sets: &[String],
    set_strings: &[String],
    ha: bool,
    chart_name: &str,
    files: &[(&str, &Path)],
) -> Vec<String> {
    let mut args = Vec::new();
    if ha {
        args.push("-f".into());
        args.push(
            chart(chart_name)
                .join("values-ha.yaml")
                .display()
                .to_string(),
        );
    }
    for s in sets {
        args.push("--set".into());
        args.push(s.clone());
    }
    for s in set_strings {
        args.push("--set-string".into());
        args.push(s.clone());
    }
    for (key, path) in files {
        args.push("--set-file".into());
        args.push(format!("{key}={}", path.display()));
    }
    args
}

#[test]
fn control_plane_chart_and_cli_render_the_same_objects() {
    let id = identity();
    let cases: [(&str, Vec<String>, bool, bool); 6] = [
        ("defaults", vec![], false, false),
        ("--ha", vec![], true, false),
        ("external issuer", vec![], false, true),
        (
            "namespace, images, replicas, resources, injector",
            sets(&[
                "proxyInjector.timeoutSeconds=5,proxy.logLevel=debug",
                "namespace=strait-prod,clusterDomain=example.org",
                "image.registry=ghcr.io/strait-dev,image.tag=v0.1.0,image.pullPolicy=Always",
                "controlPlane.replicas=2",
                "controlPlane.resources.limits.cpu=2,controlPlane.resources.requests.memory=1Gi",
                "identity.issuanceLifetime=48h,identity.issuer.secretName=my-issuer",
            ]),
            false,
            false,
        ),
        (
            "--ha with --set over it",
            sets(&["controlPlane.replicas=5"]),
            true,
            false,
        ),
        (
            "no injector",
            sets(&["proxyInjector.enabled=false"]),
            false,
            false,
        ),
    ];
    for (case, sets, ha, external) in cases {
        let mut files = vec![("identityTrustAnchorsPEM", id.ca.as_path())];
        let mut settings = Settings {
            sets: sets.clone(),
            ha,
            trust_anchors_file: Some(id.ca.clone()),
            external_issuer: external,
            ..Settings::default()
        };
        let mut helm_sets = sets.clone();
        if external {
            helm_sets.push("identity.issuer.external=true".into());
        } else {
            files.push(("identity.issuer.tls.crtPEM", &id.crt));
            files.push(("identity.issuer.tls.keyPEM", &id.key));
            settings.issuer_cert_file = Some(id.crt.clone());
            settings.issuer_key_file = Some(id.key.clone());
        }
        let chart_objects = helm_template(
            "strait-control-plane",
            &helm_args(&helm_sets, ha, "strait-control-plane", &files),
        )
        .unwrap_or_else(|e| panic!("{case}: helm template: {e}"));
        let cli = render_control_plane(&settings).unwrap().objects;
        assert_same(case, &chart_objects, &cli);
    }
}

#[test]
fn multicluster_chart_and_cli_render_the_same_objects() {
    let id = identity();
    let cases: [(&str, Vec<String>, bool); 6] = [
        ("defaults (LoadBalancer gateway)", vec![], false),
        ("--ha", vec![], true),
        (
            "ClusterIP gateway with annotations",
            sets(&[
                "gateway.service.type=ClusterIP",
                "gateway.service.annotations.service\\.beta\\.kubernetes\\.io/aws-load-balancer-type=nlb",
                "gateway.port=14143,gateway.probe.port=14191,gateway.probe.period=10s",
            ]),
            false,
        ),
        (
            "remote discovery, other namespaces",
            sets(&[
                "remoteAccess.pods=true",
                "namespace=mc,controlPlane.namespace=strait-prod,identity.trustDomain=example.org",
                "mirror.replicas=2,mirror.leaseDuration=30s,mirror.credentialsRenewAtPercent=50",
            ]),
            false,
        ),
        (
            "no gateway, no remote access",
            sets(&["gateway.enabled=false,remoteAccess.enabled=false"]),
            false,
        ),
        (
            "NodePort, --ha",
            sets(&["gateway.service.type=NodePort"]),
            true,
        ),
    ];
    for (case, sets, ha) in cases {
        let files = [("identityTrustAnchorsPEM", id.ca.as_path())];
        // Annotation values that look like a bool or a number must stay strings.
        let set_strings = self::sets(&[
            "gateway.service.annotations.example\\.com/internal=true,gateway.service.annotations.port=4143",
        ]);
        let chart_objects = helm_template(
            "strait-multicluster",
            &helm_args_with_strings(&sets, &set_strings, ha, "strait-multicluster", &files),
        )
        .unwrap_or_else(|e| panic!("{case}: helm template: {e}"));
        let cli = render_multicluster(&Settings {
            sets,
            set_strings,
            ha,
            trust_anchors_file: Some(id.ca.clone()),
            ..Settings::default()
        })
        .unwrap()
        .objects;
        assert_same(case, &chart_objects, &cli);
    }
}

/// A bad value fails `helm template` with the schema's message, and the CLI refuses it too.
#[test]
fn the_schema_refuses_bad_values() {
    let id = identity();
    let cp_files = [
        ("identityTrustAnchorsPEM", id.ca.as_path()),
        ("identity.issuer.tls.crtPEM", id.crt.as_path()),
        ("identity.issuer.tls.keyPEM", id.key.as_path()),
    ];
    for (set, message) in [
        (
            "controlPlane.replicas=0",
            "at '/controlPlane/replicas': minimum: got 0, want 1",
        ),
        (
            "controlPlane.replicaz=2",
            "additional properties 'replicaz' not allowed",
        ),
        ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
        ("identity.issuanceLifetime=1d", "/identity/issuanceLifetime"),
        (
            "proxyInjector.timeoutSeconds=0",
            "/proxyInjector/timeoutSeconds",
        ),
        ("proxyInjector.enabled=yes", "/proxyInjector/enabled"),
    ] {
        let e = helm_template(
            "strait-control-plane",
            &helm_args(&sets(&[set]), false, "strait-control-plane", &cp_files),
        )
        .expect_err(set);
        assert!(e.contains(message), "{set}: {e}");
        let cli = render_control_plane(&Settings {
            sets: sets(&[set]),
            trust_anchors_file: Some(id.ca.clone()),
            issuer_cert_file: Some(id.crt.clone()),
            issuer_key_file: Some(id.key.clone()),
            ..Settings::default()
        });
        assert!(cli.is_err(), "the CLI accepted {set}");
    }
    let mc_files = [("identityTrustAnchorsPEM", id.ca.as_path())];
    for (set, message) in [
        ("gateway.service.type=External", "/gateway/service/type"),
        (
            "gateway.port=70000",
            "at '/gateway/port': maximum: got 70,000, want 65,535",
        ),
        ("mirror.replicas=0", "/mirror/replicas"),
        (
            "mirror.credentialsRenewAtPercent=100",
            "/mirror/credentialsRenewAtPercent",
        ),
        ("remoteAccess.pods=maybe", "/remoteAccess/pods"),
    ] {
        let e = helm_template(
            "strait-multicluster",
            &helm_args(&sets(&[set]), false, "strait-multicluster", &mc_files),
        )
        .expect_err(set);
        assert!(e.contains(message), "{set}: {e}");
        let cli = render_multicluster(&Settings {
            sets: sets(&[set]),
            trust_anchors_file: Some(id.ca.clone()),
            ..Settings::default()
        });
        assert!(cli.is_err(), "the CLI accepted {set}");
    }
    // Without the trust anchors, the chart says what to pass.
    let e = helm_template("strait-multicluster", &[]).unwrap_err();
    assert!(
        e.contains("--set-file identityTrustAnchorsPEM=ca.crt"),
        "{e}"
    );
}

#[test]
fn helm_lint_passes() {
    let id = identity();
    for (name, files) in [
        (
            "strait-control-plane",
            vec![
                ("identityTrustAnchorsPEM", id.ca.as_path()),
                ("identity.issuer.tls.crtPEM", id.crt.as_path()),
                ("identity.issuer.tls.keyPEM", id.key.as_path()),
            ],
        ),
        (
            "strait-multicluster",
            vec![("identityTrustAnchorsPEM", id.ca.as_path())],
        ),
    ] {
        for ha in [false, true] {
            let out = Command::new(helm())
                .arg("lint")
                .arg("--strict")
                .arg(chart(name))
                .args(helm_args(&[], ha, name, &files))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "helm lint {name} (ha: {ha}):\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
