//! Which policies' `Accepted` condition the writer patches, and to what.

use super::*;
use crate::policy::fixtures::*;
use serde_json::json;
use strait_k8s_api::policy::DefaultPolicy;

fn key(name: &str) -> ObjKey {
    ("shop".to_owned(), name.to_owned())
}

/// `ok` resolves, `ghost` names a missing MeshTLSAuthentication, `lost` a missing Server.
fn state() -> State {
    let mut s = base();
    users_server(&mut s);
    add_mesh(&mut s, "callers", json!({"identities": ["*"]}));
    add_policy(
        &mut s,
        "ok",
        ("Server", "users-http"),
        &[("MeshTLSAuthentication", "callers")],
    );
    add_policy(
        &mut s,
        "ghost",
        ("Server", "users-http"),
        &[("MeshTLSAuthentication", "ghost")],
    );
    add_policy(
        &mut s,
        "lost",
        ("Server", "gone"),
        &[("MeshTLSAuthentication", "callers")],
    );
    s
}

fn summary(changes: &[(ObjKey, Accepted)]) -> Vec<(String, &'static str, &'static str)> {
    changes
        .iter()
        .map(|((_, name), a)| (name.clone(), a.status, a.reason))
        .collect()
}

#[test]
fn every_policy_without_the_right_condition_is_patched() {
    let cfg = cfg(DefaultPolicy::Deny);
    let got = changes(&state(), &cfg);
    assert_eq!(
        summary(&got),
        [
            ("ghost".to_owned(), "False", "AuthenticationNotFound"),
            ("lost".to_owned(), "False", "TargetNotFound"),
            ("ok".to_owned(), "True", "Accepted"),
        ]
    );
    assert!(
        got[0]
            .1
            .message
            .contains("MeshTLSAuthentication shop/ghost")
    );
    assert!(got[1].1.message.contains("Server shop/gone"));
    assert!(got.iter().all(|(_, a)| a.observed_generation == Some(1)));
}

#[test]
fn a_policy_that_carries_its_condition_is_left_alone_until_it_changes() {
    let cfg = cfg(DefaultPolicy::Deny);
    let mut s = state();
    // The writer's patches land: each policy now carries what it should.
    for (k, want) in changes(&s, &cfg) {
        if let Some(p) = s.authz_policies.get_mut(&k) {
            p.accepted = Some((
                want.status.to_owned(),
                want.reason.to_owned(),
                want.message.clone(),
                want.observed_generation,
            ));
        }
    }
    assert_eq!(changes(&s, &cfg), vec![]);
    // The missing authentication appears: only `ghost` changes, to accepted.
    add_mesh(&mut s, "ghost", json!({"identities": ["*"]}));
    assert_eq!(
        summary(&changes(&s, &cfg)),
        [("ghost".to_owned(), "True", "Accepted")]
    );
    // A new generation of `ok` is observed again.
    if let Some(p) = s.authz_policies.get_mut(&key("ok")) {
        p.generation = Some(2);
    }
    let got = changes(&s, &cfg);
    assert_eq!(
        got.iter()
            .map(|(k, a)| (k.1.as_str(), a.observed_generation))
            .collect::<Vec<_>>(),
        [("ghost", Some(1)), ("ok", Some(2))]
    );
}
