//! The Link controller: one worker per Link, a finalizer that removes a deleted Link's mirrors.

use crate::{Context, mirror, source_of, worker, write};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use strait_core::labels;
use strait_k8s_api::Link;
use strait_k8s_api::link::{FINALIZER, KEEP_MIRRORS_ANNOTATION};

/// Why reconciling a Link failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("running the finalizer")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<CleanupError>>),
}

/// Why removing a deleted Link's mirrors failed.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("listing the mirrors of cluster {0}")]
    List(String, #[source] kube::Error),
    #[error("deleting mirror {0}")]
    Delete(String, #[source] kube::Error),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        "finalizer"
    }
}

/// A running worker and the spec it serves; dropping it stops the worker.
struct Running {
    spec_hash: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) struct State {
    ctx: Arc<Context>,
    workers: Mutex<HashMap<String, Running>>,
}

/// Runs the Link controller until the stream ends.
pub(crate) async fn run(ctx: Arc<Context>) {
    let api: Api<Link> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let state = Arc::new(State {
        ctx: ctx.clone(),
        workers: Mutex::new(HashMap::new()),
    });
    Controller::new(api, kube::runtime::watcher::Config::default())
        .run(reconcile, error_policy, state)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "Link reconcile did not complete");
            }
        })
        .await;
}

/// Idempotent: makes sure a worker serves exactly this spec, or cleans up a deleted Link.
#[tracing::instrument(skip_all, fields(link = link.metadata.name.as_deref().unwrap_or_default()))]
async fn reconcile(link: Arc<Link>, state: Arc<State>) -> Result<Action, Error> {
    let api: Api<Link> = Api::namespaced(state.ctx.client.clone(), &state.ctx.namespace);
    finalizer(&api, FINALIZER, link, |ev| async {
        match ev {
            Finalizer::Apply(link) => Ok(state.ensure_worker(link)),
            Finalizer::Cleanup(link) => state.cleanup(link).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

fn error_policy(link: Arc<Link>, e: &Error, state: Arc<State>) -> Action {
    let name = link.metadata.name.as_deref().unwrap_or_default();
    tracing::warn!(link = name, error = %e, source = %source_of(e), "reconcile failed");
    state.ctx.metrics.error(name, e.metric_label());
    Action::requeue(Duration::from_secs(5))
}

impl State {
    fn ensure_worker(&self, link: Arc<Link>) -> Action {
        let name = link.metadata.name.clone().unwrap_or_default();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        serde_json::to_string(&link.spec)
            .unwrap_or_default()
            .hash(&mut h);
        link.metadata.generation.hash(&mut h);
        let spec_hash = h.finish();
        let mut workers = self.workers.lock().unwrap_or_else(|p| p.into_inner());
        if workers
            .get(&name)
            .is_some_and(|w| w.spec_hash == spec_hash && !w.task.is_finished())
        {
            return Action::await_change();
        }
        tracing::info!(link = %name, "starting Link worker");
        self.ctx.federation.expect(&name);
        let task = tokio::spawn(worker::run(self.ctx.clone(), link));
        // Replacing the entry drops (aborts) the old worker; the mirrors stay.
        workers.insert(name, Running { spec_hash, task });
        Action::await_change()
    }

    async fn cleanup(&self, link: Arc<Link>) -> Result<Action, CleanupError> {
        let name = link.metadata.name.clone().unwrap_or_default();
        drop(
            self.workers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&name),
        );
        // Its members leave their federated Services (their slices go below).
        self.ctx.federation.forget(&name);
        // A deleted Link's token expiry would otherwise stay, and alert, forever.
        self.ctx
            .metrics
            .credentials_expiry
            .remove(&crate::Metrics::link(&name));
        let keep = self.ctx.keep_mirrors_on_delete
            || link
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(KEEP_MIRRORS_ANNOTATION))
                .is_some_and(|v| v == "true");
        if keep {
            tracing::info!(link = %name, "Link deleted; keeping its mirrors as asked");
            return Ok(Action::await_change());
        }
        let cluster = &link.spec.target_cluster_name;
        let selector = format!(
            "{}=true,{}={}",
            labels::MIRRORED_SERVICE,
            labels::CLUSTER_NAME,
            cluster
        );
        let lp = ListParams::default().labels(&selector);
        self.ctx.metrics.count_request("list");
        let svcs = Api::<Service>::all(self.ctx.client.clone())
            .list(&lp)
            .await
            .map_err(|e| CleanupError::List(cluster.clone(), e))?;
        self.ctx.metrics.count_request("list");
        let slices = Api::<EndpointSlice>::all(self.ctx.client.clone())
            .list(&lp)
            .await
            .map_err(|e| CleanupError::List(cluster.clone(), e))?;
        let client = self.ctx.client.clone();
        let metrics = self.ctx.metrics.clone();
        let svc_ops = svcs.items.into_iter().map(|s| (true, s.metadata));
        let slice_ops = slices.items.into_iter().map(|s| (false, s.metadata));
        let results: Vec<Result<(), CleanupError>> =
            futures::stream::iter(svc_ops.chain(slice_ops))
                .filter(|(_, m)| std::future::ready(mirror::is_ours(m, cluster)))
                .map(|(is_svc, m)| {
                    let client = client.clone();
                    let metrics = metrics.clone();
                    async move {
                        let ns = m.namespace.unwrap_or_default();
                        let n = m.name.unwrap_or_default();
                        metrics.count_request("delete");
                        let r = if is_svc {
                            write::delete::<Service>(client, &ns, &n, m.uid).await
                        } else {
                            write::delete::<EndpointSlice>(client, &ns, &n, m.uid).await
                        };
                        r.map_err(|e| CleanupError::Delete(format!("{ns}/{n}"), e))
                    }
                })
                .buffer_unordered(self.ctx.write_concurrency.max(1))
                .collect()
                .await;
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        tracing::info!(link = %name, %cluster, "Link deleted; its mirrors are removed");
        Ok(Action::await_change())
    }
}
