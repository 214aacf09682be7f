#![allow(clippy::unwrap_used)]

use super::*;
use base64::Engine;
use serde_json::json;

fn rules_of<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    &objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))["rules"]
}

fn rule(group: &str, resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": [group], "resources": resources, "verbs": verbs})
}

fn generated() -> Rendered {
    render_control_plane(&Settings::default()).unwrap()
}

fn multicluster_with(sets: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    render_multicluster(&Settings {
        sets: sets.iter().map(|s| s.to_string()).collect(),
        trust_anchors_file: Some(ca),
        ..Settings::default()
    })
    .unwrap()
    .objects
}

/// The RBAC is exactly what the issue lists; adding a verb or a resource fails here.
#[test]
fn rbac_rules_are_exactly_the_listed_ones() {
    let read = ["get", "list", "watch"];
    let cp = generated().objects;
    let policy_kinds = [
        "servers",
        "authorizationpolicies",
        "meshtlsauthentications",
        "networkauthentications",
    ];
    let expected = json!([
        rule("authentication.k8s.io", &["tokenreviews"], &["create"]),
        rule("", &["services", "pods"], &read),
        rule("discovery.k8s.io", &["endpointslices"], &read),
        rule("", &["namespaces"], &read),
        rule("policy.strait.dev", &policy_kinds, &read),
        rule(
            "policy.strait.dev",
            &["authorizationpolicies/status"],
            &["get", "patch", "update"]
        ),
    ]);
    assert_eq!(
        rules_of(&cp, "ClusterRole", "strait-control-plane-strait"),
        &expected
    );
    // The policy service reads namespaces with or without the injector.
    let without_injector = render_control_plane(&Settings {
        sets: vec!["proxyInjector.enabled=false".into()],
        ..Settings::default()
    })
    .unwrap()
    .objects;
    assert_eq!(
        rules_of(
            &without_injector,
            "ClusterRole",
            "strait-control-plane-strait"
        ),
        &expected
    );
    assert_eq!(
        cp.iter()
            .filter(|o| o["kind"].as_str().unwrap_or_default().contains("Role"))
            .count(),
        2,
        "the control plane has one ClusterRole and its binding, nothing more"
    );

    let mc = multicluster_with(&[]);
    assert_eq!(
        rules_of(&mc, "Role", "strait-mirror"),
        &json!([
            rule(
                "multicluster.strait.dev",
                &["links"],
                &["get", "list", "watch", "patch"]
            ),
            rule(
                "multicluster.strait.dev",
                &["links/status"],
                &["get", "patch"]
            ),
            rule("", &["secrets"], &["get", "list", "watch", "patch"]),
            rule(
                "coordination.k8s.io",
                &["leases"],
                &["get", "create", "update"]
            ),
        ])
    );
    let write = ["get", "list", "watch", "create", "patch", "delete"];
    assert_eq!(
        rules_of(&mc, "ClusterRole", "strait-mirror-strait-multicluster"),
        &json!([
            rule("", &["services"], &write),
            rule("discovery.k8s.io", &["endpointslices"], &write),
            rule("", &["namespaces"], &["get", "list", "watch", "create"]),
            rule("events.k8s.io", &["events"], &["create", "patch"]),
        ])
    );
    let remote = json!([
        rule("", &["services"], &read),
        rule("discovery.k8s.io", &["endpointslices"], &read),
        rule("multicluster.x-k8s.io", &["serviceexports"], &read),
    ]);
    let name = "strait-service-mirror-remote-access-strait-multicluster";
    assert_eq!(rules_of(&mc, "ClusterRole", name), &remote);
    let mut with_pods = remote.as_array().unwrap().clone();
    with_pods.push(rule("", &["pods"], &read));
    let mc_pods = multicluster_with(&["remoteAccess.pods=true"]);
    assert_eq!(
        rules_of(&mc_pods, "ClusterRole", name),
        &Value::Array(with_pods)
    );
    // Its own next token, and the control plane's anchors: one named object each.
    let token = rules_of(&mc, "Role", multicluster::REMOTE_ACCESS_TOKEN_ROLE);
    assert_eq!(
        token,
        &json!([{
            "apiGroups": [""],
            "resources": ["serviceaccounts/token"],
            "verbs": ["create"],
            "resourceNames": [multicluster::REMOTE_ACCESS],
        }])
    );
    let anchors = mc
        .iter()
        .find(|o| {
            o["kind"] == "Role" && o["metadata"]["name"] == multicluster::REMOTE_ACCESS_ANCHORS_ROLE
        })
        .unwrap();
    assert_eq!(anchors["metadata"]["namespace"], "strait");
    assert_eq!(
        anchors["rules"],
        json!([{
            "apiGroups": [""],
            "resources": ["configmaps"],
            "verbs": ["get"],
            "resourceNames": ["strait-identity-trust-roots"],
        }])
    );
    let roles: Vec<_> = mc
        .iter()
        .filter(|o| o["kind"] == "Role" || o["kind"] == "ClusterRole")
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(roles.len(), 5, "{roles:?}");
    let no_remote = multicluster_with(&["remoteAccess.enabled=false"]);
    assert!(!no_remote.iter().any(|o| {
        o["metadata"]["name"]
            .as_str()
            .unwrap()
            .contains("remote-access")
    }));
    // No token Secret for the remote-access account: `strait link` requests tokens.
    assert!(!mc.iter().any(|o| o["kind"] == "Secret"));
}

/// The webhook never blocks a pod when the injector is down, never sees kube-system or
/// Strait's namespaces, trusts the anchors for the injector's certificate, and the policy
/// behind it refuses exactly the pods that asked for the proxy and lack it.
#[test]
fn the_injector_is_installed_to_fail_open_behind_a_policy() {
    let cp = generated().objects;
    let of = |kind: &str| {
        cp.iter()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let hook = &of("MutatingWebhookConfiguration")["webhooks"][0];
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["clientConfig"]["service"]["name"], "strait-injector");
    let anchors = of("ConfigMap")["data"]["ca-bundle.crt"].as_str().unwrap();
    let ca_bundle = base64::engine::general_purpose::STANDARD
        .decode(hook["clientConfig"]["caBundle"].as_str().unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(ca_bundle).unwrap(), anchors);
    let excluded = &hook["namespaceSelector"]["matchExpressions"][0];
    assert_eq!(excluded["operator"], "NotIn");
    assert_eq!(excluded["values"], json!(["kube-system", "strait"]));
    let ns = of("Namespace");
    assert_eq!(
        ns["metadata"]["labels"][strait_core::labels::ADMISSION_WEBHOOKS],
        "disabled"
    );
    let policy = of("ValidatingAdmissionPolicy");
    assert_eq!(
        policy["spec"]["matchConstraints"]["namespaceSelector"],
        hook["namespaceSelector"]
    );
    assert_eq!(
        of("ValidatingAdmissionPolicyBinding")["spec"]["validationActions"],
        json!(["Deny"])
    );
    let deployment = of("Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(args.contains(&"--injector"), "{args:?}");
    assert!(
        args.contains(&"--proxy-image=strait.local/proxy:dev"),
        "{args:?}"
    );
    let e = render_control_plane(&Settings {
        sets: vec!["proxyInjector.timeoutSeconds=31".into()],
        ..Settings::default()
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("proxyInjector.timeoutSeconds"),
        "{e}"
    );
}

#[test]
fn generated_identity_is_said_on_stderr_and_chains() {
    let r = generated();
    let notice = r.notice.unwrap();
    assert!(notice.contains("strait identity --out"), "{notice}");
    let secret = r.objects.iter().find(|o| o["kind"] == "Secret").unwrap();
    assert_eq!(secret["type"], "kubernetes.io/tls");
    assert!(
        secret["data"]["tls.key"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    );
}

#[test]
fn identity_flags_say_what_to_do() {
    let e = render_control_plane(&Settings {
        external_issuer: true,
        ..Settings::default()
    })
    .unwrap_err();
    assert!(
        e.to_string().contains("--identity-trust-anchors-file"),
        "{e}"
    );
    let e = render_control_plane(&Settings {
        issuer_cert_file: Some("x".into()),
        ..Settings::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("--identity-issuer-key-file"), "{e}");
    let e = render_control_plane(&Settings {
        trust_anchors_file: Some("/nonexistent/ca.crt".into()),
        ..Settings::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.crt"), "{e}");
    let e = render_multicluster(&Settings::default()).unwrap_err();
    assert!(
        e.to_string().contains("--identity-trust-anchors-file"),
        "{e}"
    );
}

#[test]
fn an_issuer_from_another_anchor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    let life = strait_tls::DEFAULT_ISSUER_LIFETIME;
    let a = strait_tls::Issuer::generate_anchor("cluster.local", life, now).unwrap();
    let b = strait_tls::Issuer::generate_anchor("cluster.local", life, now).unwrap();
    let issuer = b
        .generate_issuer("identity.strait.cluster.local", life, now)
        .unwrap();
    let (ca, crt, key) = (
        dir.path().join("ca"),
        dir.path().join("crt"),
        dir.path().join("key"),
    );
    std::fs::write(&ca, a.cert_pem()).unwrap();
    std::fs::write(&crt, issuer.cert_pem()).unwrap();
    std::fs::write(&key, issuer.key_pem()).unwrap();
    let e = render_control_plane(&Settings {
        trust_anchors_file: Some(ca),
        issuer_cert_file: Some(crt),
        issuer_key_file: Some(key),
        ..Settings::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("does not chain"), "{e}");
}

#[test]
fn bad_values_are_refused_with_the_key() {
    for (set, key) in [
        ("controlPlane.replicas=0", "controlPlane.replicas"),
        ("controlPlane.replicaz=2", "replicaz"),
        ("namespace=Not_A_Label", "namespace"),
        ("identity.issuanceLifetime=1d", "issuanceLifetime"),
        ("image.pullPolicy=Sometimes", "Sometimes"),
    ] {
        let e = render_control_plane(&Settings {
            sets: vec![set.into()],
            ..Settings::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains(key), "{set}: {e}");
    }
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.crt");
    std::fs::write(&ca, "x").unwrap();
    for (set, key) in [
        ("gateway.service.type=External", "External"),
        ("gateway.port=70000", "70000"),
        ("gateway.probe.port=0", "gateway.probe.port"),
        ("mirror.leaseDuration=soon", "mirror.leaseDuration"),
        (
            "mirror.credentialsRenewAtPercent=0",
            "mirror.credentialsRenewAtPercent",
        ),
        (
            "mirror.credentialsRenewAtPercent=100",
            "mirror.credentialsRenewAtPercent",
        ),
    ] {
        let e = render_multicluster(&Settings {
            sets: vec![set.into()],
            trust_anchors_file: Some(ca.clone()),
            ..Settings::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains(key), "{set}: {e}");
    }
}

/// Another account (`strait multicluster allow`) gets the chart's account's grants, each
/// restricted to itself, bound to the chart's shared ClusterRole and anchors Role.
#[test]
fn remote_access_accounts_are_made_alike() {
    let mc = multicluster_with(&["controlPlane.namespace=strait-prod"]);
    let own = multicluster::remote_access_account(
        multicluster::REMOTE_ACCESS,
        "strait-multicluster",
        "strait-prod",
    );
    for o in &own {
        assert!(mc.contains(o), "the chart's account lacks {o}");
    }
    let other = multicluster::remote_access_account("west-reader", "mc", "strait");
    let kinds: Vec<_> = other
        .iter()
        .map(|o| {
            format!(
                "{}/{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["namespace"].as_str().unwrap_or("-"),
                o["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount/mc/west-reader",
            "ClusterRoleBinding/-/west-reader-mc",
            "Role/mc/west-reader-token",
            "RoleBinding/mc/west-reader-token",
            "RoleBinding/strait/west-reader-anchors",
        ]
    );
    let subject = json!([{"kind": "ServiceAccount", "name": "west-reader", "namespace": "mc"}]);
    let role_refs: Vec<_> = other[1..]
        .iter()
        .filter(|o| o["kind"].as_str().unwrap().ends_with("Binding"))
        .map(|o| {
            assert_eq!(o["subjects"], subject);
            o["roleRef"]["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        role_refs,
        [
            "strait-service-mirror-remote-access-mc",
            "west-reader-token",
            multicluster::REMOTE_ACCESS_ANCHORS_ROLE,
        ]
    );
    assert_eq!(
        other[2]["rules"][0]["resourceNames"],
        json!(["west-reader"])
    );
    assert_eq!(other[0]["automountServiceAccountToken"], false);
    for o in &other {
        assert_eq!(
            o["metadata"]["labels"],
            json!({"app.kubernetes.io/name": "west-reader", "app.kubernetes.io/part-of": "strait"})
        );
    }
}

#[test]
fn the_mirror_is_told_when_to_renew() {
    let env_of = |mc: &[Value]| {
        let d = mc
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == "strait-mirror")
            .unwrap();
        d["spec"]["template"]["spec"]["containers"][0]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "STRAIT_MIRROR_CREDENTIALS_RENEW_AT_PERCENT")
            .unwrap()["value"]
            .clone()
    };
    assert_eq!(env_of(&multicluster_with(&[])), "80");
    assert_eq!(
        env_of(&multicluster_with(&["mirror.credentialsRenewAtPercent=50"])),
        "50"
    );
}

#[test]
fn uninstall_refuses_while_links_exist() {
    assert!(multicluster::refuse_while_links(&[]).is_ok());
    let links = [
        ("strait-multicluster".to_string(), "west".to_string()),
        ("strait-multicluster".to_string(), "east".to_string()),
    ];
    let e = multicluster::refuse_while_links(&links)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("2 Link(s) still exist"), "{e}");
    assert!(
        e.contains("strait-multicluster/east") && e.contains("strait-multicluster/west"),
        "{e}"
    );
    assert!(
        e.contains("kubectl -n strait-multicluster delete link east"),
        "{e}"
    );
}

#[test]
fn uninstall_lists_names_in_delete_order_without_the_crd() {
    let list = uninstall_multicluster(&[]).unwrap();
    assert_eq!(list.last().unwrap()["kind"], "Namespace");
    assert!(list.iter().all(|o| o["kind"] != "CustomResourceDefinition"));
    assert!(
        list.iter()
            .all(|o| o["metadata"].as_object().unwrap().len() <= 2)
    );
    let cp = uninstall_control_plane(&["namespace=strait-prod".into()]).unwrap();
    assert!(
        cp.iter()
            .any(|o| o["kind"] == "Deployment" && o["metadata"]["namespace"] == "strait-prod")
    );
}

#[test]
fn yaml_and_json_round_trip() {
    let objects = generated().objects;
    let yaml = format(&objects, Output::Yaml).unwrap();
    let back: Vec<Value> = serde_saphyr::from_multiple(&yaml).unwrap();
    assert_eq!(back, objects);
    let json: Value = serde_json::from_str(&format(&objects, Output::Json).unwrap()).unwrap();
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"], Value::Array(objects));
}
