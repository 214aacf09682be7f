//! The diff of a headless mirror and its per-pod mirrors ([`crate::mirror::headless`]).
//!
//! Per-pod mirror names (`<hostname>-<cluster>`) share the namespace with every other mirror,
//! so who gets a name is decided once per pass, the same way every time: a name that is
//! some remote Service's own mirror name stays that Service's; among headless Services whose
//! pods share a hostname, the first by name gets it. The others are reported, not written.

use super::{Diff, Key, Memory, Mirrored, Mode, Op, Queue, Shape, derive, fingerprint};
use crate::diff::Local;
use crate::mirror::headless::{PodEndpoint, headless_slice, pod_mirror_name, pod_service};
use crate::mirror::{self, GatewayView, Via};
use crate::plan::Plan;
use crate::remote::RemoteSvc;
use crate::store::Meta;
use k8s_openapi::api::core::v1::Service;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use strait_core::labels;
use strait_k8s_api::link::{NotMirrored, Reason};

/// One pod of a headless remote Service that gets a mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Pod {
    pub hostname: Box<str>,
    /// Its mirror's (namespace, name).
    pub key: Key,
    /// Whether an endpoint with this hostname is ready.
    pub ready: bool,
}

/// Who each per-pod mirror name belongs to: (namespace, per-pod mirror name) → the name of
/// the remote headless Service whose pod it mirrors.
pub(super) fn pod_owners(
    services: &[(Arc<RemoteSvc>, Via)],
    hostnames: &HashMap<Key, BTreeMap<Box<str>, bool>>,
    plan: &Plan,
) -> HashMap<Key, String> {
    let taken: HashSet<Key> = services
        .iter()
        .map(|(s, _)| {
            (
                s.namespace.to_string(),
                labels::mirror_name(&s.name, &plan.cluster),
            )
        })
        .collect();
    let mut headless: Vec<(Key, &BTreeMap<Box<str>, bool>)> = services
        .iter()
        .filter(|(s, via)| s.headless && *via == Via::Gateway)
        .filter_map(|(s, _)| Some((s.key(), hostnames.get(&s.key())?)))
        .collect();
    headless.sort_by(|a, b| a.0.cmp(&b.0));
    let mut owners = HashMap::new();
    for ((ns, svc), hosts) in headless {
        for host in hosts.keys() {
            let key = (ns.clone(), labels::mirror_name(host, &plan.cluster));
            if !taken.contains(&key) {
                owners.entry(key).or_insert_with(|| svc.clone());
            }
        }
    }
    owners
}

/// The pods of headless `remote` (its `hosts`: hostname → ready) that get a mirror; the
/// others, with why, go to `not_mirrored`.
pub(super) fn pods(
    remote: &RemoteSvc,
    hosts: &BTreeMap<Box<str>, bool>,
    plan: &Plan,
    owners: &HashMap<Key, String>,
    not_mirrored: &mut Vec<NotMirrored>,
) -> Vec<Pod> {
    let (ns, name) = remote.key();
    let mut out = Vec::new();
    for (host, ready) in hosts {
        let nm = |reason, message: String| NotMirrored {
            namespace: ns.clone(),
            name: name.clone(),
            reason,
            message,
        };
        let mname = match pod_mirror_name(host, plan) {
            Ok(n) => n,
            Err(e) => {
                not_mirrored.push(nm(Reason::InvalidService, format!("pod {host}: {e}")));
                continue;
            }
        };
        let key = (ns.clone(), mname.clone());
        match owners.get(&key) {
            Some(owner) if *owner == name => out.push(Pod {
                hostname: host.clone(),
                key,
                ready: *ready,
            }),
            Some(owner) => not_mirrored.push(nm(
                Reason::Error,
                format!(
                    "pod {host}'s mirror name {mname} is taken by a pod of headless Service {owner}"
                ),
            )),
            None => not_mirrored.push(nm(
                Reason::Error,
                format!("pod {host}'s mirror name {mname} is the mirror of Service {host}"),
            )),
        }
    }
    out
}

/// What a pass knows around one headless mirror.
#[derive(Clone, Copy)]
pub(super) struct Cx<'a> {
    pub plan: &'a Plan,
    pub local: Local<'a>,
    pub gateway: &'a GatewayView,
    pub gw_fp: u64,
    pub now: Instant,
}

/// The headless mirror itself, as the pass found it.
pub(super) struct Parent<'a> {
    pub key: &'a Key,
    pub remote: &'a Arc<RemoteSvc>,
    /// Its spec hash.
    pub hash: &'a str,
    /// Its Service and slice in the local stores.
    pub actual: (Option<&'a Meta>, Option<&'a Meta>),
    /// The derived parent, when this pass derived it already.
    pub svc: &'a mut Option<Service>,
}

/// The headless mirror of `remote`, derived once a pass and only on a memo miss.
fn parent_service<'s>(
    svc: &'s mut Option<Service>,
    remote: &RemoteSvc,
    plan: &Plan,
) -> &'s Service {
    svc.get_or_insert_with(|| derive(remote, plan, Via::Gateway))
}

impl Memory {
    /// Decides the writes of headless mirror `parent` (not held back) and of its `pods`'
    /// mirrors, and counts them mirrored.
    pub(super) fn headless(
        &mut self,
        cx: Cx<'_>,
        parent: Parent<'_>,
        pods: &[Pod],
        out: &mut Diff,
        queue: &mut Queue,
    ) {
        let Cx {
            plan,
            local,
            gateway,
            gw_fp,
            now,
        } = cx;
        let (ns, remote_name) = parent.remote.key();
        let remote = parent.remote;
        for pod in pods {
            let pname = &pod.key.1;
            let actual = local.services.get(&ns, pname);
            let actual_slice = local.slices.get(&ns, pname);
            let foreign = super::foreign(plan, actual.as_ref(), actual_slice.as_ref(), pname);
            if let Some(msg) = self.held_back(&pod.key, foreign, now, &mut out.new_conflicts) {
                out.not_mirrored.push(NotMirrored {
                    namespace: ns.clone(),
                    name: remote_name.clone(),
                    reason: Reason::Error,
                    message: format!("pod {}: {msg}", pod.hostname),
                });
                continue;
            }
            let mut pod_svc: Option<Service> = None;
            let mut derive_pod = || {
                pod_svc
                    .get_or_insert_with(|| {
                        let p = parent_service(parent.svc, remote, plan);
                        pod_service(p, &pod.hostname, pname.clone(), plan)
                    })
                    .clone()
            };
            let pod_hash = match self.pod_memo.get(&pod.key) {
                Some((h, d)) if h == parent.hash => d.hash.clone(),
                _ => {
                    let d = super::derived_of(&derive_pod());
                    let h = d.hash.clone();
                    self.pod_memo
                        .insert(pod.key.clone(), (parent.hash.to_owned(), d));
                    h
                }
            };
            let slice_hash = match self.slice_memo.get(&pod.key) {
                Some((h, g, r, sh)) if *h == pod_hash && *g == gw_fp && *r == pod.ready => {
                    sh.clone()
                }
                _ => {
                    let svc = derive_pod();
                    let sh =
                        mirror::spec_hash(&mirror::slice(&svc, plan, gateway, pod.ready).metadata);
                    self.slice_memo.insert(
                        pod.key.clone(),
                        (pod_hash.clone(), gw_fp, pod.ready, sh.clone()),
                    );
                    sh
                }
            };
            out.mirrored.push(Mirrored {
                key: pod.key.clone(),
                remote: remote_name.clone(),
                mode: Mode::Pod,
            });
            let write_svc = self.stale(true, &pod.key, actual.as_ref(), &pod_hash, now);
            let write_slice = self.stale(false, &pod.key, actual_slice.as_ref(), &slice_hash, now);
            if write_svc || write_slice {
                let op = Op::Mirror {
                    key: pod.key.clone(),
                    remote: parent.remote.clone(),
                    shape: Shape::Pod {
                        hostname: pod.hostname.clone(),
                    },
                    remote_ready: pod.ready,
                    write_svc,
                    claim_svc: write_svc && actual.is_none(),
                    write_slice,
                    claim_slice: write_slice && actual_slice.is_none(),
                };
                queue.push(op, actual.is_none() || actual_slice.is_none());
            }
        }
        // The parent's slice: each pod whose mirror (ours) has a cluster IP by now.
        let endpoints: Vec<PodEndpoint> = pods
            .iter()
            .filter_map(|pod| {
                let m = local.services.get(&ns, &pod.key.1)?;
                Some(PodEndpoint {
                    hostname: pod.hostname.clone(),
                    ip: m.cluster_ip.filter(|_| m.is_ours(&plan.cluster))?,
                    ready: gateway.alive && pod.ready,
                })
            })
            .collect();
        let key = parent.key;
        let fp = fingerprint(&endpoints);
        let slice_hash = match self.slice_memo.get(key) {
            Some((h, f, _, sh)) if h == parent.hash && *f == fp => sh.clone(),
            _ => {
                let sh = mirror::spec_hash(
                    &headless_slice(parent_service(parent.svc, remote, plan), plan, &endpoints)
                        .metadata,
                );
                self.slice_memo
                    .insert(key.clone(), (parent.hash.to_owned(), fp, false, sh.clone()));
                sh
            }
        };
        out.mirrored.push(Mirrored {
            key: key.clone(),
            remote: remote_name,
            mode: Mode::Headless,
        });
        let (actual, actual_slice) = parent.actual;
        let write_svc = self.stale(true, key, actual, parent.hash, now);
        let write_slice = self.stale(false, key, actual_slice, &slice_hash, now);
        if write_svc || write_slice {
            let op = Op::Mirror {
                key: key.clone(),
                remote: parent.remote.clone(),
                shape: Shape::Headless(endpoints),
                remote_ready: true,
                write_svc,
                claim_svc: write_svc && actual.is_none(),
                write_slice,
                claim_slice: write_slice && actual_slice.is_none(),
            };
            queue.push(op, actual.is_none() || actual_slice.is_none());
        }
    }
}

#[cfg(test)]
mod tests;
