//! # strait-k8s-api
//!
//! Strait's custom resources (the `Link` in `multicluster.strait.dev/v1alpha1` and its
//! friends), the authorization policy resources of `policy.strait.dev` ([`policy`]), as Rust
//! types, the one foreign resource Strait reads (the Multi-Cluster Services
//! API's `ServiceExport`), and re-exports of `kube` and `k8s-openapi` so that every crate in
//! the workspace builds against one version of each. The `crdgen` binary turns these types
//! into the CRD YAML under `charts/`; the YAML is never edited by hand. [`relist`] is how every
//! controller keeps a store of watched objects that recovers after a watch outage.

pub use k8s_openapi;
pub use kube;

pub mod link;
pub mod policy;
pub mod relist;
pub mod service_export;
pub mod token;

pub use link::{Link, LinkSpec, LinkStatus, ProbeSpec};
pub use service_export::ServiceExport;
pub use token::ServiceAccountToken;
