//! AuthorizationPolicy status: whether each policy's references resolve (`Accepted`), written
//! when it differs from what the policy carries.
//!
//! Level-triggered: after every change of the cache (at most once a second) the writer
//! recomputes every policy's condition ([`changes`], pure) and patches only those that differ,
//! so a restart, a missed event or a second replica converge to the same status. A failed
//! patch is retried on the next pass.

use super::PolicyConfig;
use super::inbound;
use super::index::{Index, State};
use super::model::ObjKey;
use kube::Api;
use kube::api::{Patch, PatchParams};
use std::sync::Arc;
use std::time::Duration;
use strait_k8s_api::policy::AuthorizationPolicy;

/// The `Accepted` condition a policy should carry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub status: &'static str,
    pub reason: &'static str,
    pub message: String,
    pub observed_generation: Option<i64>,
}

/// The policies whose `Accepted` condition differs from the wanted one, with the wanted one.
pub fn changes(state: &State, cfg: &PolicyConfig) -> Vec<(ObjKey, Accepted)> {
    let mut out: Vec<_> = state
        .authz_policies
        .iter()
        .filter_map(|(key, p)| {
            let want = match inbound::resolve(state, &key.0, p, cfg) {
                Ok(_) => Accepted {
                    status: "True",
                    reason: "Accepted",
                    message: "every reference resolves".to_owned(),
                    observed_generation: p.generation,
                },
                Err(e) => Accepted {
                    status: "False",
                    reason: e.reason,
                    message: e.message,
                    observed_generation: p.generation,
                },
            };
            let have = p
                .accepted
                .as_ref()
                .map(|(s, r, m, g)| (s.as_str(), r.as_str(), m.as_str(), *g));
            let same = have
                == Some((
                    want.status,
                    want.reason,
                    want.message.as_str(),
                    want.observed_generation,
                ));
            (!same).then(|| (key.clone(), want))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// How soon a pass whose patches failed is retried when nothing changes meanwhile.
const RETRY: Duration = Duration::from_secs(5);

/// Writes statuses until the task is aborted.
pub async fn run(client: kube::Client, index: Arc<Index>, cfg: Arc<PolicyConfig>) {
    index.synced().await;
    let mut rx = index.changes();
    loop {
        let mut failed = false;
        for ((ns, name), want) in index.read(|s| changes(s, &cfg)) {
            let api: Api<AuthorizationPolicy> = Api::namespaced(client.clone(), &ns);
            let now = k8s_openapi::jiff::Timestamp::now();
            let patch = serde_json::json!({"status": {"conditions": [{
                "type": "Accepted",
                "status": want.status,
                "reason": want.reason,
                "message": want.message,
                "observedGeneration": want.observed_generation,
                "lastTransitionTime": now.to_string(),
            }]}});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    tracing::info!(%ns, %name, reason = want.reason, "AuthorizationPolicy status")
                }
                Err(error) => {
                    failed = true;
                    tracing::warn!(%ns, %name, %error, "writing AuthorizationPolicy status");
                }
            }
        }
        if failed {
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                () = tokio::time::sleep(RETRY) => {}
            }
        } else if rx.changed().await.is_err() {
            return;
        }
        // Let a burst of changes settle before the next pass.
        tokio::time::sleep(Duration::from_secs(1)).await;
        rx.mark_unchanged();
    }
}

#[cfg(test)]
mod tests;
