//! The policy cache: pods, namespaces and the four policy kinds, behind one lock, with a
//! generation counter that every change bumps.
//!
//! ```text
//!  watch Pods, Namespaces, Servers, ──► Index (one Mutex) ──► generation (watch channel)
//!  AuthorizationPolicies, MeshTLS…,                               │ changed()
//!  NetworkAuthentications                                         ▼
//!                                      WatchPort streams: recompute their Server, send if it differs
//!                                      status writer: recompute Accepted conditions
//! ```
//!
//! Unlike destination's per-target topics, a policy change can touch any port of any pod
//! (a namespace-wide AuthorizationPolicy, a MeshTLSAuthentication that many policies name),
//! so every stream re-reads the cache on every change and sends only when its answer differs.
//! The watch channel keeps only the newest generation: a slow stream skips intermediate
//! states, and nothing blocks the watchers.

use super::model::{
    AuthzPolicyInfo, MeshTlsInfo, NamespaceInfo, NetworkAuthnInfo, ObjKey, PodInfo, ServerInfo,
};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::watch;

/// Everything the translation reads.
#[derive(Clone, Debug, Default)]
pub struct State {
    pub pods: HashMap<ObjKey, PodInfo>,
    pub namespaces: HashMap<String, NamespaceInfo>,
    pub servers: HashMap<ObjKey, ServerInfo>,
    pub authz_policies: HashMap<ObjKey, AuthzPolicyInfo>,
    pub mesh_tls: HashMap<ObjKey, MeshTlsInfo>,
    pub networks: HashMap<ObjKey, NetworkAuthnInfo>,
}

/// The kinds the index watches; each must list once before the index is synced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Pod,
    Namespace,
    Server,
    AuthorizationPolicy,
    MeshTls,
    Network,
}

const KINDS: usize = 6;

/// The cache. Share it behind an `Arc`.
#[derive(Debug)]
pub struct Index {
    state: Mutex<State>,
    generation: watch::Sender<u64>,
    synced: watch::Sender<[bool; KINDS]>,
}

impl Default for Index {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            generation: watch::Sender::new(0),
            synced: watch::Sender::new([false; KINDS]),
        }
    }
}

impl Index {
    /// An index that holds `state` and counts as synced (tests).
    pub fn with_state(state: State) -> Self {
        let index = Self::default();
        *index.lock() = state;
        index.synced.send_replace([true; KINDS]);
        index
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every change is one map operation: a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads the state (keep the closure short: the watchers wait for it).
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock())
    }

    /// Changes the state and wakes every stream.
    pub fn write(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.generation.send_modify(|g| *g += 1);
    }

    /// Changes the state; wakes the streams only when `f` says it changed something.
    pub fn write_if(&self, f: impl FnOnce(&mut State) -> bool) {
        if f(&mut self.lock()) {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// A receiver that sees every change (as a new generation).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Marks one kind as listed.
    pub fn listed(&self, kind: Kind) {
        self.synced.send_modify(|s| s[kind as usize] = true);
    }

    /// Waits until every kind has listed once.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| s.iter().all(|b| *b)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_wakes_readers_and_sync_waits_for_every_kind() {
        let index = Index::default();
        let rx = index.changes();
        index.write(|s| {
            s.namespaces.insert("shop".into(), NamespaceInfo::default());
        });
        assert!(rx.has_changed().unwrap_or(false));
        assert_eq!(index.read(|s| s.namespaces.len()), 1);
        for kind in [
            Kind::Pod,
            Kind::Namespace,
            Kind::Server,
            Kind::AuthorizationPolicy,
            Kind::MeshTls,
        ] {
            index.listed(kind);
        }
        let early = tokio::time::timeout(std::time::Duration::from_millis(20), index.synced());
        assert!(early.await.is_err(), "one kind has not listed yet");
        index.listed(Kind::Network);
        index.synced().await;
    }
}
