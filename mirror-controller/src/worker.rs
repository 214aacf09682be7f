//! One Link's worker: its own tasks, so a broken remote never slows another Link.
//!
//! ```text
//!  credentials Secret ──► remote session (credentials.rs, session.rs) ───────┐
//!  gatewayAddress ──► resolve (TTL) ──┐                                      │ notify
//!  probe every period ± jitter ───────┴─► GatewayState (gateway.rs) ─────────┤
//!  local reflectors (our Services, our EndpointSlices, Namespaces) ──────────┤
//!                                                                            ▼
//!      sync loop (sync.rs): diff (diff.rs, pure) ─► ≤N writes in flight, each proving
//!      ownership (write.rs: create, or a JSON patch that tests our labels; GC by uid)
//!                                                                            │
//!                          status (counts, capped list) ◄────────────────────┘ ─► debounced write
//! ```
//!
//! The worker lives as long as its Link's spec: the controller replaces it (aborting every
//! task here) when the spec changes, and drops it when the Link goes.

use crate::credentials::CredentialsError;
use crate::gateway::GatewayState;
use crate::plan::Plan;
use crate::session::RemoteView;
use crate::write::WriteError;
use crate::{Context, credentials, gateway, mirror, source_of, sync};
use kube::api::{Api, Patch, PatchParams};
use std::sync::Arc;
use strait_k8s_api::{Link, LinkStatus};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

/// Why one step of a Link's work failed. Reported in status and metrics, then retried.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("writing the Link status")]
    Status(#[source] kube::Error),
}

impl Error {
    /// A bounded label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Credentials(e) => e.metric_label(),
            Error::Write(e) => e.metric_label(),
            Error::Status(_) => "status",
        }
    }
}

/// Runs one Link until the task is aborted.
pub(crate) async fn run(ctx: Arc<Context>, link: Arc<Link>) {
    let name = link.metadata.name.clone().unwrap_or_default();
    let (status_tx, status_rx) = watch::channel(LinkStatus {
        observed_generation: link.metadata.generation,
        ..Default::default()
    });
    let mut tasks = JoinSet::new();
    tasks.spawn(write_status(ctx.clone(), name.clone(), status_rx));
    let plan = match Plan::new(&link.spec) {
        Ok(plan) => Arc::new(plan),
        Err(e) => {
            tracing::warn!(link = %name, error = %e, "Link is invalid; not serving it");
            ctx.metrics.error(&name, "invalid_link");
            status_tx.send_modify(|s| s.link_error = Some(e.to_string()));
            // It has no members; federated Services must not wait for it.
            ctx.federation
                .report(&name, crate::federation::Report::default());
            // Keep the status writer alive until the Link changes (the worker is then replaced).
            let _ = tasks.join_next().await;
            return;
        }
    };
    for w in &plan.warnings {
        tracing::warn!(link = %name, "{w}");
    }
    status_tx.send_if_modified(|s| {
        let changed = s.warnings != plan.warnings;
        s.warnings.clone_from(&plan.warnings);
        changed
    });
    let trigger = Arc::new(Notify::new());
    let (gw_tx, gw_rx) = watch::channel(GatewayState::default());
    let (remote_tx, remote_rx) = watch::channel::<Option<RemoteView>>(None);
    tasks.spawn(gateway::run(
        ctx.clone(),
        name.clone(),
        plan.clone(),
        gw_tx,
        status_tx.clone(),
    ));
    tasks.spawn(credentials::run(
        ctx.clone(),
        name.clone(),
        plan.clone(),
        remote_tx,
        status_tx.clone(),
        trigger.clone(),
    ));
    sync::Sync::new(ctx, name, plan)
        .run(trigger, gw_rx, remote_rx, status_tx)
        .await;
}

/// Writes the Link status at most once per `ctx.status_interval`, only when it changed.
/// The status alone is written with server-side apply: one small object per Link, whose
/// fields the controller owns.
async fn write_status(ctx: Arc<Context>, link: String, mut rx: watch::Receiver<LinkStatus>) {
    let api: Api<Link> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let mut last: Option<LinkStatus> = None;
    loop {
        if rx.changed().await.is_err() {
            return;
        }
        tokio::time::sleep(ctx.status_interval).await;
        let status = rx.borrow_and_update().clone();
        if last.as_ref() == Some(&status) {
            continue;
        }
        let body = serde_json::json!({
            "apiVersion": "multicluster.strait.dev/v1alpha1",
            "kind": "Link",
            "status": status,
        });
        ctx.metrics.count_request("patch");
        let pp = PatchParams::apply(mirror::FIELD_MANAGER).force();
        match api.patch_status(&link, &pp, &Patch::Apply(&body)).await {
            Ok(_) => last = Some(status),
            Err(e) => {
                let e = Error::Status(e);
                tracing::warn!(%link, error = %e, source = %source_of(&e), "status write failed");
                ctx.metrics.error(&link, e.metric_label());
                // Try again at the next interval.
                rx.mark_changed();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_messages_and_labels() {
        let e = Error::from(CredentialsError::NoKubeconfig);
        assert_eq!(
            e.to_string(),
            "the credentials Secret has no key `kubeconfig`"
        );
        assert_eq!(e.metric_label(), "credentials");
        let e = Error::from(WriteError::Conflict {
            kind: "EndpointSlice",
            namespace: "ns".into(),
            name: "web-east".into(),
        });
        assert_eq!(e.metric_label(), "conflict");
        assert!(
            e.to_string()
                .starts_with("conflict: EndpointSlice ns/web-east")
        );
    }
}
