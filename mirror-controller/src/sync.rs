//! One Link's sync loop: on every change (remote, local, gateway; coalesced) and at least
//! every [`RESYNC`], a pass asks the pure [`diff`](crate::diff) what to write, runs those
//! writes (at most `write_concurrency` in flight, each proving ownership, [`crate::write`]),
//! and publishes the status. A pass with a failed write is retried with backoff.

use crate::diff::{self, Key, Local, Memory, Op, Shape};
use crate::gateway::GatewayState;
use crate::mirror::{self, GatewayView, Via};
use crate::plan::Plan;
use crate::session::RemoteView;
use crate::write::{WriteError, delete, write};
use crate::{Context, source_of};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use strait_k8s_api::LinkStatus;
use tokio::sync::{Notify, watch};

/// A full pass at least this often, even when nothing was notified.
const RESYNC: Duration = Duration::from_secs(300);
/// Changes arriving within this window are handled in one pass.
const COALESCE: Duration = Duration::from_millis(100);

/// What one write did: the mirror it was for (to report errors), what was written (is a
/// Service, key, spec hash) and how it ended.
struct Outcome {
    key: Option<Key>,
    wrote: Vec<(bool, Key, String)>,
    result: Result<(), WriteError>,
}

pub(crate) struct Sync {
    ctx: Arc<Context>,
    link: String,
    plan: Arc<Plan>,
    memory: Memory,
}

impl Sync {
    pub fn new(ctx: Arc<Context>, link: String, plan: Arc<Plan>) -> Self {
        Self {
            ctx,
            link,
            plan,
            memory: Memory::default(),
        }
    }

    /// Runs passes until a channel closes (the worker stops).
    pub async fn run(
        &mut self,
        trigger: Arc<Notify>,
        mut gw: watch::Receiver<GatewayState>,
        remote: watch::Receiver<Option<RemoteView>>,
        status: watch::Sender<LinkStatus>,
    ) {
        let mut local = self.ctx.local.changed.clone();
        let mut federation = self.ctx.federation.decision();
        let mut retry: Option<tokio::time::Instant> = None;
        let mut backoff = Duration::from_millis(500);
        loop {
            let retry_at = retry.unwrap_or_else(|| tokio::time::Instant::now() + RESYNC);
            tokio::select! {
                _ = trigger.notified() => {}
                r = local.changed() => if r.is_err() { return },
                r = gw.changed() => if r.is_err() { return },
                r = federation.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(retry_at) => {}
            }
            tokio::time::sleep(COALESCE).await;
            let view = remote.borrow().clone();
            let Some(view) = view else { continue };
            let gateway = gw.borrow_and_update().clone();
            let decision = federation.borrow_and_update().clone();
            let Some((s, failed)) = self.pass(&view, &gateway, &decision).await else {
                continue;
            };
            status.send_if_modified(|st| {
                let changed = st.services != s.services
                    || st.not_mirrored != s.not_mirrored
                    || st.not_mirrored_omitted != s.not_mirrored_omitted;
                st.services = s.services.clone();
                st.not_mirrored = s.not_mirrored.clone();
                st.not_mirrored_omitted = s.not_mirrored_omitted;
                changed
            });
            if failed {
                retry = Some(tokio::time::Instant::now() + backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            } else {
                retry = None;
                backoff = Duration::from_millis(500);
            }
        }
    }

    /// Writes what the diff decided. Returns the status counts and whether anything failed
    /// (to retry with backoff); `None` while the remote view is incomplete.
    async fn pass(
        &mut self,
        view: &RemoteView,
        gateway: &GatewayState,
        decision: &crate::federation::Decision,
    ) -> Option<(LinkStatus, bool)> {
        let ctx = self.ctx.clone();
        let local = Local {
            services: &ctx.local.services,
            slices: &ctx.local.slices,
            namespaces: &ctx.local.namespaces,
        };
        let gwv = GatewayView {
            addrs: gateway.addrs.clone(),
            alive: gateway.alive != Some(false),
        };
        let d = self
            .memory
            .diff(&self.plan, view, local, &gwv, decision, Instant::now())?;
        // The view is complete: its federated members are what the reconciler should know.
        ctx.federation
            .report(&self.link, crate::federation::report(&self.plan, view));
        for _ in 0..d.new_conflicts {
            ctx.metrics.error(&self.link, "conflict");
        }
        let n_ops = d.ops.len();
        let started = Instant::now();
        let gwv = Arc::new(gwv);
        let results: Vec<Outcome> =
            futures::stream::iter(d.ops.into_iter().map(|op| self.execute(op, gwv.clone())))
                .buffer_unordered(ctx.write_concurrency.max(1))
                .collect()
                .await;
        let mut failed = false;
        let mut errors: HashMap<Key, String> = HashMap::new();
        let now = Instant::now();
        for Outcome { key, wrote, result } in results {
            for (is_svc, k, hash) in wrote {
                self.memory.wrote(is_svc, k, hash, now);
            }
            match result {
                Ok(()) => {
                    if let Some(k) = &key {
                        self.memory.resolved(k);
                    }
                }
                Err(e @ WriteError::Conflict { .. }) => {
                    tracing::warn!(link = %self.link, error = %e, "mirror name taken");
                    if let Some(k) = key {
                        if self.memory.note_conflict(&k, e.to_string(), now) {
                            ctx.metrics.error(&self.link, "conflict");
                        }
                        errors.insert(k, e.to_string());
                    }
                }
                Err(e) => {
                    failed = true;
                    ctx.metrics.error(&self.link, e.metric_label());
                    tracing::warn!(link = %self.link, error = %e, source = %source_of(&e), "write failed; will retry");
                    if let Some(k) = key {
                        errors.insert(k, format!("{e}: {}", source_of(&e)));
                    }
                }
            }
        }
        if n_ops > 0 {
            tracing::info!(link = %self.link, writes = n_ops, elapsed_ms = started.elapsed().as_millis() as u64, "sync pass wrote changes");
        }
        self.memory.expire(Instant::now());
        let status = diff::status(d.not_mirrored, &d.mirrored, &errors);
        ctx.metrics
            .mirrors
            .get_or_create(&crate::metrics::Metrics::link(&self.link))
            .set(i64::from(status.services.mirrored));
        Some((status, failed))
    }

    fn execute(
        &self,
        op: Op,
        gateway: Arc<GatewayView>,
    ) -> impl std::future::Future<Output = Outcome> + use<> {
        let client = self.ctx.client.clone();
        let metrics = self.ctx.metrics.clone();
        let plan = self.plan.clone();
        async move {
            let cluster = &plan.cluster;
            match op {
                Op::Mirror {
                    key,
                    remote,
                    shape,
                    remote_ready,
                    write_svc,
                    claim_svc,
                    write_slice,
                    claim_slice,
                } => {
                    let fail = |key, wrote, e| Outcome {
                        key: Some(key),
                        wrote,
                        result: Err(e),
                    };
                    // The Service first: a slice is never written for a name that is not ours.
                    let svc = diff::derive(&remote, &plan, Via::Gateway);
                    let svc = match &shape {
                        Shape::Pod { hostname } => {
                            mirror::headless::pod_service(&svc, hostname, key.1.clone(), &plan)
                        }
                        Shape::Plain | Shape::Headless(_) => svc,
                    };
                    let mut wrote = Vec::new();
                    let mut created = None;
                    if write_svc {
                        match write(&client, &metrics, &svc, claim_svc, cluster).await {
                            Ok(w) => {
                                created = w.created_uid;
                                wrote.push((true, key.clone(), w.hash));
                            }
                            Err(e) => return fail(key, wrote, e),
                        }
                    }
                    if write_slice {
                        let es = match &shape {
                            Shape::Headless(endpoints) => {
                                mirror::headless::headless_slice(&svc, &plan, endpoints)
                            }
                            Shape::Plain | Shape::Pod { .. } => {
                                mirror::slice(&svc, &plan, &gateway, remote_ready)
                            }
                        };
                        match write(&client, &metrics, &es, claim_slice, cluster).await {
                            Ok(w) => wrote.push((false, key.clone(), w.hash)),
                            // Someone else's slice has the mirror's name: it would lend its
                            // endpoints to the Service we just created, so take that back.
                            Err(e @ WriteError::Conflict { .. }) => {
                                take_back(&client, &metrics, &key, created, &mut wrote).await;
                                return fail(key, wrote, e);
                            }
                            Err(e) => return fail(key, wrote, e),
                        }
                    }
                    Outcome {
                        key: Some(key),
                        wrote,
                        result: Ok(()),
                    }
                }
                Op::RdMirror {
                    key,
                    remote,
                    groups,
                    write_svc,
                    claim_svc,
                    slices,
                } => {
                    let ns = key.0.clone();
                    let mut wrote = Vec::new();
                    let mut created = None;
                    let result = async {
                        // The Service first: no slice is written for a name that is not ours.
                        let svc = diff::derive(&remote, &plan, Via::RemoteDiscovery);
                        if write_svc {
                            let w = write(&client, &metrics, &svc, claim_svc, cluster).await?;
                            created = w.created_uid;
                            wrote.push((true, key.clone(), w.hash));
                        }
                        for es in mirror::rd_slices(&svc, &plan, &groups) {
                            let name = es.metadata.name.clone().unwrap_or_default();
                            let Some((_, new)) = slices.iter().find(|(n, _)| *n == name) else {
                                continue;
                            };
                            let w = write(&client, &metrics, &es, *new, cluster).await?;
                            wrote.push((false, (ns.clone(), name), w.hash));
                        }
                        Ok(())
                    }
                    .await;
                    if let Err(WriteError::Conflict { .. }) = &result {
                        take_back(&client, &metrics, &key, created, &mut wrote).await;
                    }
                    Outcome {
                        key: Some(key),
                        wrote,
                        result,
                    }
                }
                Op::FederatedSlices {
                    key,
                    remote,
                    remote_ready,
                    remote_discovery,
                    slices,
                } => {
                    let ns = key.0.clone();
                    let mut wrote = Vec::new();
                    let desired = match &remote_discovery {
                        Some(groups) => mirror::federated_rd_slices(&remote, &plan, groups),
                        None => vec![mirror::federated_slice(
                            &remote,
                            &plan,
                            &gateway,
                            remote_ready,
                        )],
                    };
                    let result = async {
                        for es in desired {
                            let name = es.metadata.name.clone().unwrap_or_default();
                            let Some((_, new)) = slices.iter().find(|(n, _)| *n == name) else {
                                continue;
                            };
                            let w = write(&client, &metrics, &es, *new, cluster).await?;
                            wrote.push((false, (ns.clone(), name), w.hash));
                        }
                        Ok(())
                    }
                    .await;
                    Outcome {
                        key: Some(key),
                        wrote,
                        result,
                    }
                }
                Op::DeleteService(key, uid) => {
                    remove::<Service>(client, &metrics, "Service", key, uid).await
                }
                Op::DeleteSlice(key, uid) => {
                    remove::<EndpointSlice>(client, &metrics, "EndpointSlice", key, uid).await
                }
                Op::CreateNamespace(ns) => {
                    metrics.count_request("create");
                    let obj = Namespace {
                        metadata: kube::api::ObjectMeta {
                            name: Some(ns.clone()),
                            ..Default::default()
                        },
                        ..Default::default()
                    };
                    let r = match Api::<Namespace>::all(client)
                        .create(&PostParams::default(), &obj)
                        .await
                    {
                        Ok(_) => Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                        Err(e) => Err(WriteError::CreateNamespace(ns, e)),
                    };
                    Outcome {
                        key: None,
                        wrote: Vec::new(),
                        result: r,
                    }
                }
            }
        }
    }
}

/// Deletes an orphan of ours, by uid.
async fn remove<K>(
    client: kube::Client,
    metrics: &crate::Metrics,
    kind: &'static str,
    (ns, name): Key,
    uid: Option<String>,
) -> Outcome
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    metrics.count_request("delete");
    let result = delete::<K>(client, &ns, &name, uid)
        .await
        .map_err(|source| WriteError::Delete {
            kind,
            namespace: ns,
            name,
            source,
        });
    Outcome {
        key: None,
        wrote: Vec::new(),
        result,
    }
}

/// Someone else's slice has a name our new mirror needs: it would lend its endpoints to the
/// Service this write just `created`, so delete that Service again (by uid) and forget what
/// this write wrote.
async fn take_back(
    client: &kube::Client,
    metrics: &crate::Metrics,
    key: &Key,
    created: Option<String>,
    wrote: &mut Vec<(bool, Key, String)>,
) {
    let Some(uid) = created else { return };
    metrics.count_request("delete");
    if let Err(e) = delete::<Service>(client.clone(), &key.0, &key.1, Some(uid)).await {
        tracing::warn!(namespace = %key.0, name = %key.1, error = %e, "taking back a mirror Service");
    }
    wrote.clear();
}
