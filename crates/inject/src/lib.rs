//! # strait-inject
//!
//! How a pod joins the mesh, as pure functions from a pod (or pod template) and the install's
//! settings to the pod with Strait's proxy added. The admission webhook and `strait inject
//! --manual` both call [`inject`], so a pod injected by either is the same.
//!
//! ```text
//!  pod ──► decide (annotations on pod and namespace) ──► Skip(reason) | Inject
//!              │                                              │
//!              └─ bad annotation value ──► Err (names it)      ▼
//!      initContainers: strait-proxy-init (iptables; NET_ADMIN, NET_RAW, uid 0, then exits)
//!                      strait-proxy (restartPolicy: Always: a native sidecar, uid 2102)
//!      volumes: strait-identity-token (projected, audience identity.l5d.io),
//!               strait-trust-anchors (ConfigMap), strait-identity (memory emptyDir)
//!      annotations: strait.dev/proxy-version (the destination service reads it: "meshed")
//! ```
//!
//! Start with [`decide`], then [`inject`] (or [`patch`] for the webhook's JSON patch);
//! [`uninject`] removes all of it again.

mod config;
mod decide;
mod pod;

pub use config::{Annotations, Config, Install, Resources};
pub use decide::{Decision, SkipReason, decide};
pub use pod::{PROXY_CONTAINER, PROXY_INIT_CONTAINER, inject, is_injected, patch, uninject};

/// A value the pod or the install got wrong, by annotation or setting.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("annotation {annotation}={value:?} is invalid: {reason}")]
    Annotation {
        annotation: &'static str,
        value: String,
        reason: String,
    },
    #[error("the pod cannot be read: {0}")]
    Pod(String),
}
