#![allow(clippy::unwrap_used)]

use super::*;

fn cfg() -> strait_inject::Config {
    strait_inject::Config::for_install(strait_inject::Install {
        proxy_image: "strait.local/proxy:dev".into(),
        proxy_init_image: "strait.local/proxy-init:dev".into(),
        image_pull_policy: "IfNotPresent".into(),
        control_namespace: "strait".into(),
        cluster_domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
        trust_anchors_pem: "PEM".into(),
        log_level: "warn".into(),
    })
}

fn review(pod_annotations: serde_json::Value, operation: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "b3b0c5f4-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "web-", "namespace": "shop", "annotations": pod_annotations},
                "spec": {"containers": [{"name": "app", "image": "app"}]},
            },
            "dryRun": false,
        }
    }))
    .unwrap()
}

fn answer(body: &[u8], ns: Option<&BTreeMap<String, String>>, m: &Metrics) -> serde_json::Value {
    let req = parse(body).unwrap();
    serde_json::to_value(respond(&req, ns, &cfg(), m)).unwrap()
}

fn enabled() -> BTreeMap<String, String> {
    [(strait_core::labels::INJECT.to_owned(), "enabled".to_owned())].into()
}

#[test]
fn a_pod_in_an_enabled_namespace_gets_the_patch() {
    let m = Metrics::default();
    let a = answer(
        &review(serde_json::json!({}), "CREATE"),
        Some(&enabled()),
        &m,
    );
    let r = &a["response"];
    assert_eq!(r["uid"], "b3b0c5f4-0000-4000-8000-000000000001");
    assert_eq!(r["allowed"], true);
    assert_eq!(r["patchType"], "JSONPatch");
    // kube-core writes the patch bytes as serde writes a Vec<u8>; accept base64 too.
    let patch: Vec<u8> = match &r["patch"] {
        serde_json::Value::String(b64) => {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
        }
        other => serde_json::from_value(other.clone()).unwrap(),
    };
    let patch: serde_json::Value = serde_json::from_slice(&patch).unwrap();
    let text = patch.to_string();
    assert!(
        text.contains("strait-proxy-init") && text.contains("strait.dev~1proxy-version"),
        "{text}"
    );
    assert_eq!(m.totals(), (1, 0, 0));
}

#[test]
fn skips_and_refusals_are_answered_and_counted() {
    let m = Metrics::default();
    // Not enabled anywhere: allowed, no patch.
    let a = answer(
        &review(serde_json::json!({}), "CREATE"),
        Some(&BTreeMap::new()),
        &m,
    );
    assert_eq!(a["response"]["allowed"], true);
    assert!(a["response"]["patch"].is_null());
    // Opted out on the pod.
    let a = answer(
        &review(
            serde_json::json!({strait_core::labels::INJECT: "disabled"}),
            "CREATE",
        ),
        Some(&enabled()),
        &m,
    );
    assert!(a["response"]["patch"].is_null());
    // The namespace could not be read: unchanged (the install's policy decides).
    let a = answer(&review(serde_json::json!({}), "CREATE"), None, &m);
    assert!(a["response"]["patch"].is_null());
    assert_eq!(m.totals(), (0, 3, 0));
    // A bad annotation: refused with a message that names it.
    let a = answer(
        &review(
            serde_json::json!({strait_core::labels::PROXY_CPU_LIMIT: "lots"}),
            "CREATE",
        ),
        Some(&enabled()),
        &m,
    );
    assert_eq!(a["response"]["allowed"], false);
    let message = a["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains(strait_core::labels::PROXY_CPU_LIMIT),
        "{message}"
    );
    assert_eq!(m.totals(), (0, 3, 1));
}

#[test]
fn what_is_not_an_admission_review_is_a_bad_request() {
    assert!(parse(b"{}").is_err());
    assert!(parse(b"not json").unwrap_err().contains("AdmissionReview"));
}
