//! The sync pass's decision, as a pure function: from the remote view, the local stores, the
//! plan and the gateway, which writes to make and what the Link status says. No I/O, no
//! clock (the caller passes `now`); [`crate::sync`] runs the writes.
//!
//! ```text
//!  remote view ─┐  way in (plan::way_in) ─► derive (memo per resourceVersion) ─► compare
//!  local stores ┼─────────────────────────────────────────────────────────────► with ours
//!  plan, gateway┘                                                                  │
//!     ops: create namespaces, creates, updates, deletes of orphans ◄───────────────┤
//!     status: not mirrored (why), mirrored unless their write fails ◄──────────────┘
//! ```
//!
//! Level-triggered: every pass derives all mirrors and writes only those whose
//! [`mirror::SPEC_HASH`] differs from what the local store shows (or from what was written
//! within [`WRITE_GRACE`], while the store catches up). Nothing is decided before the remote
//! view is complete (after the first list and after every re-list), so orphans are never
//! deleted on a partial list. A name held by someone else's object is reported and left
//! alone, and checked again after [`CONFLICT_RECHECK`]. A headless Service with hostnames
//! gets a headless mirror and one mirror per pod ([`headless`]); a member of a federated
//! Service gets its slice(s) of that Service ([`federated`]).

use crate::federation::Decision;
use crate::mirror::headless::PodEndpoint;
use crate::mirror::{self, GatewayView, InvalidService, RdGroup, Via};
use crate::plan::{Plan, WayIn, way_in};
use crate::remote::RemoteSvc;
use crate::session::RemoteView;
use crate::store::{Compact, Meta};
use crate::write::WriteError;
use k8s_openapi::api::core::v1::Service;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use strait_k8s_api::link::{NotMirrored, Reason};

/// How long a write is trusted while the local reflector catches up.
pub(crate) const WRITE_GRACE: Duration = Duration::from_secs(10);
/// How long a name found taken by someone else is left alone before it is checked again.
pub(crate) const CONFLICT_RECHECK: Duration = Duration::from_secs(60);

/// (namespace, name).
pub(crate) type Key = (String, String);

/// The local cluster as a pass reads it: our mirror Services (with their cluster IPs) and
/// slices (and anything else that carries the mirror label), and the namespaces that exist.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Local<'a> {
    pub services: &'a Compact,
    pub slices: &'a Compact,
    /// Namespace names, keyed ("", name).
    pub namespaces: &'a Compact,
}

/// What a mirror through the gateway looks like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// A ClusterIP mirror of a ClusterIP Service; its slice lists the gateway.
    Plain,
    /// The headless mirror of a headless Service; its slice lists each pod's hostname at its
    /// per-pod mirror's cluster IP.
    Headless(Vec<PodEndpoint>),
    /// The mirror of the pod with `hostname` behind a headless mirror; its slice lists the
    /// gateway, ready while that pod is.
    Pod { hostname: Box<str> },
}

/// How a mirrored Service's traffic goes, for the Link status's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Gateway,
    RemoteDiscovery,
    Headless,
    /// One pod's mirror (counted apart: it is no remote Service of its own).
    Pod,
    /// A member's slice(s) of a federated Service (counted apart: no mirror).
    Federated,
}

/// A mirror the pass wants: its key, the remote Service it mirrors and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mirrored {
    pub key: Key,
    /// The remote Service's name (in the same namespace).
    pub remote: String,
    pub mode: Mode,
}

/// One write the pass decided on.
#[derive(Debug)]
pub(crate) enum Op {
    /// Apply a mirror's Service and/or slice, derived from `remote` only when the write runs
    /// (a cold start queues thousands; they stay small). `claim_*`: the name is not in our
    /// stores, so prove it is free (or already ours) before writing.
    Mirror {
        key: Key,
        remote: Arc<RemoteSvc>,
        shape: Shape,
        /// Whether the remote Service (for [`Shape::Pod`], the pod) has a ready endpoint.
        remote_ready: bool,
        write_svc: bool,
        claim_svc: bool,
        write_slice: bool,
        claim_slice: bool,
    },
    /// Apply a remote-discovery mirror's Service and/or the slices named in `slices` (with
    /// whether each must be claimed first), derived from `remote` and `groups` when the write
    /// runs.
    RdMirror {
        key: Key,
        remote: Arc<RemoteSvc>,
        groups: Vec<RdGroup>,
        write_svc: bool,
        claim_svc: bool,
        slices: Vec<(String, bool)>,
    },
    /// Apply the slices named in `slices` (with whether each must be claimed first) in which
    /// this Link lists its member `remote` of federated Service `<svc>-federated`: the
    /// gateway, or the remote pods when it is selected for remote discovery too.
    FederatedSlices {
        key: Key,
        remote: Arc<RemoteSvc>,
        /// Through the gateway: whether the remote Service has a ready endpoint.
        remote_ready: bool,
        /// Pod to pod: the remote pods, grouped as the slices list them.
        remote_discovery: Option<Vec<RdGroup>>,
        slices: Vec<(String, bool)>,
    },
    DeleteService(Key, Option<String>),
    DeleteSlice(Key, Option<String>),
    CreateNamespace(String),
}

/// What one pass decided.
#[derive(Debug, Default)]
pub(crate) struct Diff {
    /// In order: namespaces to create, then creates (new exports first, so a large update
    /// never starves them), updates, deletes.
    pub ops: Vec<Op>,
    /// Remote Services not mirrored, and why.
    pub not_mirrored: Vec<NotMirrored>,
    /// Mirrors that count as mirrored unless their write fails.
    pub mirrored: Vec<Mirrored>,
    /// Names found taken that were not known taken (each is counted once, as a conflict).
    pub new_conflicts: usize,
}

/// A derived mirror, as little as a pass needs to compare: its name and spec hash.
#[derive(Clone, Debug)]
struct Derived {
    name: String,
    hash: String,
    headless: bool,
}

/// What passes remember of each other.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    /// What we wrote recently, by (is a Service, ns, name): the spec hash and when.
    written: HashMap<(bool, String, String), (String, Instant)>,
    /// Derived mirrors by remote (ns, name), with the remote resourceVersion and the way
    /// they came from.
    memo: HashMap<Key, (String, Via, Result<Derived, InvalidService>)>,
    /// Derived slice hashes by mirror key, with what they were derived from (the Service's
    /// hash, a fingerprint of the gateway view or of a headless mirror's endpoints, remote
    /// readiness).
    slice_memo: HashMap<Key, (String, u64, bool, String)>,
    /// Derived per-pod mirrors by key, with the hash of the parent they were derived from.
    pod_memo: HashMap<Key, (String, Derived)>,
    /// Remote-discovery mirrors' slices (name, spec hash) by mirror key, with a fingerprint
    /// of what they were derived from (the Service's hash and the endpoint groups).
    rd_memo: HashMap<Key, (u64, Vec<(String, String)>)>,
    /// Mirror names taken by someone else's object: the message, and when last checked.
    conflicts: HashMap<Key, (String, Instant)>,
}

fn fingerprint<T: Hash>(t: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

impl Memory {
    /// Derives every mirror and compares it with what exists; `None` while the remote view
    /// is incomplete (nothing may be decided from a partial list).
    pub fn diff(
        &mut self,
        plan: &Plan,
        view: &RemoteView,
        local: Local<'_>,
        gateway: &GatewayView,
        federation: &Decision,
        now: Instant,
    ) -> Option<Diff> {
        if !view.synced() {
            return None;
        }
        let gw_fp = fingerprint(gateway);
        let ready: HashSet<Key> = crate::remote::ready(&view.slices);
        let hostnames = crate::remote::hostnames(&view.slices);
        let rd_slices = crate::remote::by_service(&view.rd_slices);
        let services = mirrored_services(view);
        let owners = headless::pod_owners(&services, &hostnames, plan);
        let mut out = Diff::default();
        // Mirror Services and mirror slices this pass wants (ours that are not are removed).
        let mut desired_keys: HashSet<Key> = HashSet::new();
        let mut desired_slices: HashSet<Key> = HashSet::new();
        let mut queue = Queue::default();
        let mut namespaces_to_create = BTreeMap::new();
        let mut seen: HashSet<Key> = HashSet::new();
        for (remote, via) in services {
            let (ns, name) = (&remote.namespace.to_string(), &remote.name.to_string());
            let nm = |reason, message: String| NotMirrored {
                namespace: ns.clone(),
                name: name.clone(),
                reason,
                message,
            };
            // Deriving a mirror serialises and hashes it; do it once per remote
            // resourceVersion, and keep only its name and hash between passes.
            let rv = remote
                .resource_version
                .as_deref()
                .unwrap_or_default()
                .to_string();
            let memo_key = (ns.clone(), name.clone());
            let mut desired_svc: Option<Service> = None;
            let derived = match self.memo.get(&memo_key) {
                Some((v, w, d)) if *v == rv && *w == via => d.clone(),
                _ => {
                    let d = mirror::service(&remote.to_service(), plan, via);
                    let summary = d.as_ref().map(derived_of).map_err(Clone::clone);
                    desired_svc = d.ok();
                    self.memo
                        .insert(memo_key.clone(), (rv, via, summary.clone()));
                    summary
                }
            };
            seen.insert(memo_key);
            let derived = match derived {
                Ok(d) => d,
                Err(e) => {
                    out.not_mirrored
                        .push(nm(Reason::InvalidService, e.to_string()));
                    continue;
                }
            };
            // A headless mirror needs pods to mirror.
            let hosts = match (derived.headless, hostnames.get(&(ns.clone(), name.clone()))) {
                (false, _) => None,
                (true, Some(hosts)) => Some(hosts),
                (true, None) => {
                    out.not_mirrored.push(nm(
                        Reason::InvalidService,
                        InvalidService::NoHostnames.to_string(),
                    ));
                    continue;
                }
            };
            let mname = derived.name.clone();
            let key = (ns.clone(), mname.clone());
            desired_keys.insert(key.clone());
            if via == Via::Gateway {
                desired_slices.insert(key.clone());
            }
            // Per-pod mirrors are wanted whatever holds their parent back below, so ours
            // stay; only scale-down, unexport or the parent's going removes them.
            let pods = hosts
                .map(|h| headless::pods(&remote, h, plan, &owners, &mut out.not_mirrored))
                .unwrap_or_default();
            for p in &pods {
                desired_keys.insert(p.key.clone());
                desired_slices.insert(p.key.clone());
            }
            if local.namespaces.get("", ns).is_none() {
                if plan.create_namespaces {
                    namespaces_to_create.insert(ns.clone(), ());
                }
                out.not_mirrored.push(nm(
                    Reason::MissingNamespace,
                    format!("namespace {ns} does not exist in this cluster"),
                ));
                continue;
            }
            if via == Via::RemoteDiscovery {
                let remote_slices = rd_slices.get(&(ns.clone(), name.clone()));
                let groups = mirror::rd_groups(
                    remote_slices.map(Vec::as_slice).unwrap_or_default(),
                    ns,
                    plan,
                    |pod| view.pods.get(&(ns.clone(), pod.to_string())),
                );
                let fp = fingerprint(&(&derived.hash, &groups));
                let slices = match self.rd_memo.get(&key) {
                    Some((f, v)) if *f == fp => v.clone(),
                    _ => {
                        let svc = desired_svc.get_or_insert_with(|| derive(&remote, plan, via));
                        let v: Vec<(String, String)> = mirror::rd_slices(svc, plan, &groups)
                            .iter()
                            .map(|es| {
                                (
                                    es.metadata.name.clone().unwrap_or_default(),
                                    mirror::spec_hash(&es.metadata),
                                )
                            })
                            .collect();
                        self.rd_memo.insert(key.clone(), (fp, v.clone()));
                        v
                    }
                };
                // Wanted even while the mirror is in conflict, so ours stay meanwhile.
                desired_slices.extend(slices.iter().map(|(n, _)| (ns.clone(), n.clone())));
                let actual = local.services.get(ns, &mname);
                let foreign = match &actual {
                    Some(a) if !a.is_ours(&plan.cluster) => Some(("Service", mname.clone())),
                    _ => slices.iter().find_map(|(n, _)| {
                        let a = local.slices.get(ns, n)?;
                        (!a.is_ours(&plan.cluster)).then(|| ("EndpointSlice", n.clone()))
                    }),
                };
                let foreign = foreign.as_ref().map(|(kind, n)| (*kind, n.as_str()));
                if let Some(msg) = self.held_back(&key, foreign, now, &mut out.new_conflicts) {
                    out.not_mirrored.push(nm(Reason::Error, msg));
                    continue;
                }
                out.mirrored.push(Mirrored {
                    key: key.clone(),
                    remote: name.clone(),
                    mode: Mode::RemoteDiscovery,
                });
                let write_svc = self.stale(true, &key, actual.as_ref(), &derived.hash, now);
                let mut new = actual.is_none();
                let mut to_write = Vec::new();
                for (n, h) in &slices {
                    let a = local.slices.get(ns, n);
                    let k = (ns.clone(), n.clone());
                    if self.stale(false, &k, a.as_ref(), h, now) {
                        new |= a.is_none();
                        to_write.push((n.clone(), a.is_none()));
                    }
                }
                if !write_svc && to_write.is_empty() {
                    continue;
                }
                let op = Op::RdMirror {
                    key: key.clone(),
                    remote: remote.clone(),
                    groups,
                    write_svc,
                    claim_svc: write_svc && actual.is_none(),
                    slices: to_write,
                };
                queue.push(op, new);
                continue;
            }
            let actual = local.services.get(ns, &mname);
            let actual_slice = local.slices.get(ns, &mname);
            let foreign = foreign(plan, actual.as_ref(), actual_slice.as_ref(), &mname);
            if let Some(msg) = self.held_back(&key, foreign, now, &mut out.new_conflicts) {
                out.not_mirrored.push(nm(Reason::Error, msg));
                continue;
            }
            // A cluster IP cannot be set or cleared in place: a mirror that must change between
            // headless and not (the remote Service was replaced) is deleted, and created anew
            // by the next pass.
            if let Some(a) = actual.as_ref().filter(|a| a.headless != derived.headless) {
                self.written.remove(&(true, ns.clone(), mname.clone()));
                queue.push(Op::DeleteService(key.clone(), a.uid.clone()), false);
                continue;
            }
            if derived.headless {
                let parent = headless::Parent {
                    key: &key,
                    remote: &remote,
                    hash: &derived.hash,
                    actual: (actual.as_ref(), actual_slice.as_ref()),
                    svc: &mut desired_svc,
                };
                let cx = headless::Cx {
                    plan,
                    local,
                    gateway,
                    gw_fp,
                    now,
                };
                self.headless(cx, parent, &pods, &mut out, &mut queue);
                continue;
            }
            let is_ready = ready.contains(&(ns.clone(), name.clone()));
            let slice_hash = match self.slice_memo.get(&key) {
                Some((h, g, r, sh)) if *h == derived.hash && *g == gw_fp && *r == is_ready => {
                    sh.clone()
                }
                _ => {
                    let svc = desired_svc.get_or_insert_with(|| derive(&remote, plan, via));
                    let es = mirror::slice(svc, plan, gateway, is_ready);
                    let sh = mirror::spec_hash(&es.metadata);
                    self.slice_memo.insert(
                        key.clone(),
                        (derived.hash.clone(), gw_fp, is_ready, sh.clone()),
                    );
                    sh
                }
            };
            out.mirrored.push(Mirrored {
                key: key.clone(),
                remote: name.clone(),
                mode: Mode::Gateway,
            });
            let write_svc = self.stale(true, &key, actual.as_ref(), &derived.hash, now);
            let write_slice = self.stale(false, &key, actual_slice.as_ref(), &slice_hash, now);
            if !(write_svc || write_slice) {
                continue;
            }
            let op = Op::Mirror {
                key: key.clone(),
                remote: remote.clone(),
                shape: Shape::Plain,
                remote_ready: is_ready,
                write_svc,
                claim_svc: write_svc && actual.is_none(),
                write_slice,
                claim_slice: write_slice && actual_slice.is_none(),
            };
            queue.push(op, actual.is_none() || actual_slice.is_none());
        }
        let cx = federated::Cx {
            plan,
            view,
            local,
            gateway,
            decision: federation,
            ready: &ready,
            rd_slices: &rd_slices,
            now,
        };
        self.federated(cx, &mut out, &mut queue, &mut desired_slices);
        self.memo.retain(|k, _| seen.contains(k));
        self.slice_memo.retain(|k, _| desired_keys.contains(k));
        self.rd_memo.retain(|k, _| desired_keys.contains(k));
        self.pod_memo.retain(|k, _| desired_keys.contains(k));
        self.conflicts
            .retain(|k, _| desired_keys.contains(k) || desired_slices.contains(k));
        // Orphans: ours, for this cluster, with no remote twin.
        // What we wrote of them no longer vouches for anything: were the same object wanted
        // again within the grace, it must be written again (remote-discovery slices come
        // and go with their pods).
        let mut deletes = Vec::new();
        for (key, uid) in local.services.ours(&plan.cluster) {
            if !desired_keys.contains(&key) {
                self.written.remove(&(true, key.0.clone(), key.1.clone()));
                deletes.push(Op::DeleteService(key, uid));
            }
        }
        for (key, uid) in local.slices.ours(&plan.cluster) {
            if !desired_slices.contains(&key) {
                self.written.remove(&(false, key.0.clone(), key.1.clone()));
                deletes.push(Op::DeleteSlice(key, uid));
            }
        }
        out.ops = namespaces_to_create
            .into_keys()
            .map(Op::CreateNamespace)
            .collect();
        out.ops.extend(queue.creates);
        out.ops.extend(queue.updates);
        out.ops.extend(deletes);
        Some(out)
    }

    /// Whether mirror `key` is held back by a name taken by someone else, and the message to
    /// report: `foreign` is the (kind, name) of someone else's object that holds one of its
    /// names now (a new conflict is counted in `new`); a conflict seen before holds it back
    /// until [`CONFLICT_RECHECK`] has passed.
    fn held_back(
        &mut self,
        key: &Key,
        foreign: Option<(&'static str, &str)>,
        now: Instant,
        new: &mut usize,
    ) -> Option<String> {
        if let Some((kind, name)) = foreign {
            let e = WriteError::Conflict {
                kind,
                namespace: key.0.clone(),
                name: name.to_string(),
            };
            *new += usize::from(self.note_conflict(key, e.to_string(), now));
        }
        let (msg, at) = self.conflicts.get(key)?;
        (foreign.is_some() || now.duration_since(*at) < CONFLICT_RECHECK).then(|| msg.clone())
    }

    /// Remembers that a write of `hash` to (`is_svc`, `key`) succeeded at `now`.
    pub fn wrote(&mut self, is_svc: bool, key: Key, hash: String, now: Instant) {
        self.written.insert((is_svc, key.0, key.1), (hash, now));
    }

    /// A write of mirror `key` succeeded: its name is ours (again).
    pub fn resolved(&mut self, key: &Key) {
        self.conflicts.remove(key);
    }

    /// Remembers that `key`'s name is taken; whether that is news (to count it once).
    pub fn note_conflict(&mut self, key: &Key, msg: String, now: Instant) -> bool {
        self.conflicts.insert(key.clone(), (msg, now)).is_none()
    }

    /// Forgets writes older than [`WRITE_GRACE`]: the local store shows them by now.
    pub fn expire(&mut self, now: Instant) {
        self.written
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < WRITE_GRACE);
    }

    /// Whether (`is_svc`, `key`) needs writing: `actual` does not carry `hash`, and we did not
    /// write exactly this a moment ago (the local reflector may not have caught up yet).
    fn stale(
        &self,
        is_svc: bool,
        key: &Key,
        actual: Option<&Meta>,
        hash: &str,
        now: Instant,
    ) -> bool {
        if actual.and_then(|a| a.hash.as_deref()) == Some(hash) {
            return false;
        }
        !self
            .written
            .get(&(is_svc, key.0.clone(), key.1.clone()))
            .is_some_and(|(h, at)| h == hash && now.duration_since(*at) < WRITE_GRACE)
    }
}

/// Every remote Service the Link mirrors, and how: each remote store holds the Services of
/// one way in, and [`way_in`] says which one a Service held by several comes through.
fn mirrored_services(view: &RemoteView) -> Vec<(Arc<RemoteSvc>, Via)> {
    let (rd, selected, exported) = (&view.rd_services, &view.services, &view.exported);
    let mut all = Vec::new();
    for (store, way) in [
        (rd, WayIn::RemoteDiscovery),
        (selected, WayIn::Selector),
        (exported, WayIn::ServiceExport),
    ] {
        for s in store.values() {
            let k = s.key();
            let by = way_in(
                rd.contains(&k),
                selected.contains(&k),
                exported.contains(&k) && view.is_exported(&k),
            );
            if by == Some(way) {
                all.push((s, way.into()));
            }
        }
    }
    all
}

/// Which of a mirror's Service and slice named `name` is someone else's, if either is
/// (labelled as a mirror, but of another cluster, is not ours either).
fn foreign<'n>(
    plan: &Plan,
    svc: Option<&Meta>,
    slice: Option<&Meta>,
    name: &'n str,
) -> Option<(&'static str, &'n str)> {
    let theirs = |m: Option<&Meta>| m.is_some_and(|m| !m.is_ours(&plan.cluster));
    if theirs(svc) {
        Some(("Service", name))
    } else if theirs(slice) {
        Some(("EndpointSlice", name))
    } else {
        None
    }
}

fn derived_of(svc: &Service) -> Derived {
    Derived {
        name: svc.metadata.name.clone().unwrap_or_default(),
        hash: mirror::spec_hash(&svc.metadata),
        headless: mirror::is_headless(svc),
    }
}

/// The writes of a pass, creates apart from updates (creates go first).
#[derive(Default)]
struct Queue {
    creates: Vec<Op>,
    updates: Vec<Op>,
}

impl Queue {
    fn push(&mut self, op: Op, create: bool) {
        if create {
            self.creates.push(op);
        } else {
            self.updates.push(op);
        }
    }
}

/// Derives a mirror the memo already found valid (so this cannot fail but for a race with a
/// newer remote version, which the next pass handles).
pub(crate) fn derive(remote: &RemoteSvc, plan: &Plan, via: Via) -> Service {
    mirror::service(&remote.to_service(), plan, via).unwrap_or_default()
}

mod federated;
mod headless;
mod status;
#[cfg(test)]
mod tests;

pub(crate) use status::status;
