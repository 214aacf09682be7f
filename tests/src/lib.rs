//! # strait-e2e
//!
//! The two-cluster end-to-end suite. Each file under `tests/` starts real local clusters
//! with `strait-localcluster` (etcd and kube-apiserver processes, pods in network
//! namespaces) and proves one capability across them. Run it with the README's test command.

pub mod observe;
pub mod samples;
pub mod tool;
