//! The diff of this Link's members of federated Services ([`crate::federation`]): the
//! slice(s) in which each member lists its endpoints, `<svc>-federated-<cluster>`. The
//! federated Service itself is the reconciler's; a member's slice is written only once that
//! Service exists and is Strait's, and only while the reconciler accepts the member.

use super::{Diff, Key, Local, Memory, Mirrored, Mode, Op, Queue};
use crate::federation::{Decision, Verdict, verdict};
use crate::mirror::{self, GatewayView};
use crate::plan::Plan;
use crate::remote::RdSlice;
use crate::session::RemoteView;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;
use strait_core::labels;
use strait_k8s_api::link::{NotMirrored, Reason};

/// What the federated part of a pass reads.
pub(super) struct Cx<'a> {
    pub plan: &'a Plan,
    pub view: &'a RemoteView,
    pub local: Local<'a>,
    pub gateway: &'a GatewayView,
    pub decision: &'a Decision,
    pub ready: &'a HashSet<Key>,
    pub rd_slices: &'a HashMap<Key, Vec<Arc<RdSlice>>>,
    pub now: Instant,
}

impl Memory {
    /// Adds the slices of every member this Link's view holds to `desired_slices` (ours
    /// that are not are removed by the pass), their writes to `queue`, and refusals to
    /// `out`.
    pub(super) fn federated(
        &mut self,
        cx: Cx<'_>,
        out: &mut Diff,
        queue: &mut Queue,
        desired_slices: &mut HashSet<Key>,
    ) {
        let plan = cx.plan;
        for remote in cx.view.fed_services.values() {
            let (ns, name) = remote.key();
            let federated = labels::federated_name(&name);
            let nm = |reason, message: String| NotMirrored {
                namespace: ns.clone(),
                name: name.clone(),
                reason,
                message,
            };
            let rd = cx.view.rd_services.contains(&(ns.clone(), name.clone()));
            let is_ready = cx.ready.contains(&(ns.clone(), name.clone()));
            let mut groups_of = None;
            let slices: Vec<(String, String)> = if rd {
                let groups = mirror::rd_groups(
                    cx.rd_slices
                        .get(&(ns.clone(), name.clone()))
                        .map(Vec::as_slice)
                        .unwrap_or_default(),
                    &ns,
                    plan,
                    |pod| cx.view.pods.get(&(ns.clone(), pod.to_string())),
                );
                let v = mirror::federated_rd_slices(&remote, plan, &groups)
                    .iter()
                    .map(|es| {
                        let n = es.metadata.name.clone().unwrap_or_default();
                        (n, mirror::spec_hash(&es.metadata))
                    })
                    .collect();
                groups_of = Some(groups);
                v
            } else {
                let es = mirror::federated_slice(&remote, plan, cx.gateway, is_ready);
                vec![(
                    es.metadata.name.clone().unwrap_or_default(),
                    mirror::spec_hash(&es.metadata),
                )]
            };
            // A slice name a mirror of this Link already has (a remote Service named
            // `<svc>-federated`) stays the mirror's.
            if let Some((taken, _)) = slices
                .iter()
                .find(|(n, _)| desired_slices.contains(&(ns.clone(), n.clone())))
            {
                out.not_mirrored.push(nm(
                    Reason::FederationConflict,
                    format!("the slice name {taken} of federated Service {federated} is a mirror's of this Link; rename the Service"),
                ));
                continue;
            }
            let fkey = (ns.clone(), name.clone());
            match verdict(cx.decision, &fkey, &plan.cluster) {
                Verdict::Refused(why) => {
                    out.not_mirrored
                        .push(nm(Reason::FederationConflict, why.to_string()));
                    continue;
                }
                // Not decided yet: what is there stays, nothing is written.
                Verdict::Pending => {
                    desired_slices.extend(slices.iter().map(|(n, _)| (ns.clone(), n.clone())));
                    continue;
                }
                Verdict::Accepted => {}
            }
            desired_slices.extend(slices.iter().map(|(n, _)| (ns.clone(), n.clone())));
            if cx.local.namespaces.get("", &ns).is_none() {
                out.not_mirrored.push(nm(
                    Reason::MissingNamespace,
                    format!("namespace {ns} does not exist in this cluster"),
                ));
                continue;
            }
            // The Service first: a slice never lends endpoints to a Service not ours.
            match cx.local.services.get(&ns, &federated) {
                None => continue,
                Some(s) if !s.is_ours(labels::FEDERATED_OWNER) => {
                    out.not_mirrored.push(nm(
                        Reason::Error,
                        format!("conflict: Service {ns}/{federated} exists and is not a federated Service of Strait's; left alone"),
                    ));
                    continue;
                }
                Some(_) => {}
            }
            // The member's key, for conflicts and errors (kept by the pass like a slice's).
            let mkey = (
                ns.clone(),
                labels::federated_slice_name(&federated, &plan.cluster),
            );
            desired_slices.insert(mkey.clone());
            let foreign = slices.iter().find_map(|(n, _)| {
                let a = cx.local.slices.get(&ns, n)?;
                (!a.is_ours(&plan.cluster)).then_some(("EndpointSlice", n.as_str()))
            });
            if let Some(msg) = self.held_back(&mkey, foreign, cx.now, &mut out.new_conflicts) {
                out.not_mirrored.push(nm(Reason::Error, msg));
                continue;
            }
            out.mirrored.push(Mirrored {
                key: mkey.clone(),
                remote: name.clone(),
                mode: Mode::Federated,
            });
            let mut to_write = Vec::new();
            for (n, h) in &slices {
                let a = cx.local.slices.get(&ns, n);
                if self.stale(false, &(ns.clone(), n.clone()), a.as_ref(), h, cx.now) {
                    to_write.push((n.clone(), a.is_none()));
                }
            }
            if to_write.is_empty() {
                continue;
            }
            let new = to_write.iter().any(|(_, new)| *new);
            let op = Op::FederatedSlices {
                key: mkey,
                remote: remote.clone(),
                remote_ready: is_ready,
                remote_discovery: groups_of,
                slices: to_write,
            };
            queue.push(op, new);
        }
    }
}

#[cfg(test)]
mod tests;
