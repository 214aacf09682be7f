//! The proxy injector: a mutating admission webhook (HTTPS on 8443, `POST /inject`) that adds
//! Strait's proxy to pods, with the same code as `strait inject --manual` ([`strait_inject`]).
//!
//! ```text
//!  kube-apiserver ──AdmissionReview(Pod)──► review ──► namespace annotations (API, per request)
//!                                              │
//!            Skip(reason): allowed, no patch ◄─┼─► Inject: allowed + JSON patch
//!                                              └─► bad annotation: refused, message names it
//! ```
//!
//! Availability: the webhook is installed with `failurePolicy: Ignore` and a short timeout,
//! so an injector that is down never blocks a pod anywhere (kube-system and the control
//! plane's namespaces are excluded by `namespaceSelector` too). Where injection is required
//! (the namespace or pod says `strait.dev/inject: enabled`), a pod the injector never saw is
//! refused by the install's ValidatingAdmissionPolicy, which runs inside the API server and
//! says why. A namespace this webhook cannot read is treated the same way: the pod is let
//! through unchanged and the policy decides.

mod args;
mod metrics;
mod server;

pub use args::InjectorArgs;
pub use metrics::Metrics;
pub use server::{State, serve};

use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use std::collections::BTreeMap;
use strait_inject::{Decision, SkipReason};

/// What the injector concluded for one pod.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Injected(json_patch::Patch),
    Skipped(SkipReason),
    Refused(String),
}

/// Pure: the outcome for `pod` in a namespace with `namespace_annotations`.
pub fn review_pod(
    pod: &Pod,
    namespace_annotations: &BTreeMap<String, String>,
    cfg: &strait_inject::Config,
) -> Outcome {
    match strait_inject::decide(pod, namespace_annotations) {
        Decision::Skip(reason) => Outcome::Skipped(reason),
        Decision::Inject => match strait_inject::patch(pod, cfg) {
            Ok(patch) => Outcome::Injected(patch),
            Err(e) => Outcome::Refused(format!("strait proxy injector: {e}")),
        },
    }
}

/// Parses an AdmissionReview body; `Err` is the message for a 400.
pub fn parse(body: &[u8]) -> Result<AdmissionRequest<Pod>, String> {
    let review: AdmissionReview<Pod> = serde_json::from_slice(body)
        .map_err(|e| format!("not an AdmissionReview of a Pod: {e}"))?;
    review
        .try_into()
        .map_err(|e| format!("an AdmissionReview without a request: {e}"))
}

/// The response to `req`, given its namespace's annotations (`None`: they could not be read).
pub fn respond(
    req: &AdmissionRequest<Pod>,
    namespace_annotations: Option<&BTreeMap<String, String>>,
    cfg: &strait_inject::Config,
    metrics: &Metrics,
) -> AdmissionReview<DynamicObject> {
    let allow = AdmissionResponse::from(req);
    let Some(pod) = req
        .object
        .as_ref()
        .filter(|_| req.operation == Operation::Create)
    else {
        metrics.skipped(SkipReason::NotEnabled);
        return allow.into_review();
    };
    let empty = BTreeMap::new();
    let outcome = review_pod(pod, namespace_annotations.unwrap_or(&empty), cfg);
    let name = pod
        .metadata
        .name
        .clone()
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    let response = match outcome {
        Outcome::Injected(patch) => match allow.with_patch(patch) {
            Ok(r) => {
                metrics.injected();
                tracing::info!(namespace = ?req.namespace, pod = %name, "proxy injected");
                r
            }
            Err(e) => {
                metrics.refused("patch");
                AdmissionResponse::from(req).deny(format!("strait proxy injector: {e}"))
            }
        },
        Outcome::Skipped(reason) => {
            metrics.skipped(reason);
            tracing::debug!(namespace = ?req.namespace, pod = %name, reason = reason.as_str(), "not injected");
            allow
        }
        Outcome::Refused(message) => {
            metrics.refused("annotation");
            tracing::info!(namespace = ?req.namespace, pod = %name, %message, "pod refused");
            AdmissionResponse::from(req).deny(message)
        }
    };
    response.into_review()
}

#[cfg(test)]
mod tests;
