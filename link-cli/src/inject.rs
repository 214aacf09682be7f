//! `strait inject` and `strait uninject`: manifests in, manifests out.
//!
//! Linkerd's model: by default `inject` only sets `strait.dev/inject: enabled` on each pod
//! template, and the admission webhook does the work when the pods are created; `--manual`
//! writes the proxy out in full with the same code the webhook runs ([`strait_inject::inject`]),
//! so both give the same pod. `uninject` removes both forms. Deployments, StatefulSets,
//! DaemonSets, ReplicaSets, Jobs, CronJobs, Pods and `v1/List`s are walked, in multi-document
//! YAML or JSON; any other Kubernetes object passes through unchanged. Input that is not
//! Kubernetes YAML is an error, and nothing is written.

use crate::install::values::{self, Chart};
use crate::install::{InstallError, Output, control_plane};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use std::io::Read;
use std::path::PathBuf;
use strait_core::labels;

#[derive(clap::Args, Debug)]
pub struct InjectArgs {
    /// A manifest file, or `-` for standard input.
    pub file: String,
    /// Write the proxy containers out instead of the annotation the webhook acts on.
    #[arg(long)]
    pub manual: bool,
    /// With --manual: the trust anchors (PEM) the control plane was installed with
    /// (`kubectl -n strait get configmap strait-identity-trust-roots -o jsonpath='{.data.ca-bundle\.crt}'`).
    #[arg(long)]
    pub identity_trust_anchors_file: Option<PathBuf>,
    /// With --manual: control-plane values, as for `strait install` (image.*, namespace, ...).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub sets: Vec<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

#[derive(clap::Args, Debug)]
pub struct UninjectArgs {
    /// A manifest file, or `-` for standard input.
    pub file: String,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Yaml)]
    pub output: Output,
}

/// What goes wrong, each with what to do.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("reading {what}: {source}")]
    Read {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} is not Kubernetes YAML or JSON: {reason}; nothing was written")]
    NotKubernetes { what: String, reason: String },
    #[error("{kind} {name}: {source}; fix the annotation and run strait inject again")]
    Pod {
        kind: String,
        name: String,
        #[source]
        source: strait_inject::Error,
    },
    #[error(
        "--manual needs --identity-trust-anchors-file: the proxy verifies the control plane with them (read them with `kubectl -n strait get configmap strait-identity-trust-roots -o jsonpath='{{.data.ca-bundle\\.crt}}'`)"
    )]
    NoAnchors,
    #[error(transparent)]
    Install(#[from] InstallError),
}

/// How one pod template is changed.
enum Action<'a> {
    Annotate,
    Manual(&'a strait_inject::Config),
    Remove,
}

pub fn inject(args: InjectArgs) -> Result<(), InjectError> {
    let input = read(&args.file)?;
    let cfg;
    let action = if args.manual {
        let anchors = args
            .identity_trust_anchors_file
            .as_ref()
            .ok_or(InjectError::NoAnchors)?;
        let pem = std::fs::read_to_string(anchors).map_err(|source| InjectError::Read {
            what: format!("--identity-trust-anchors-file {}", anchors.display()),
            source,
        })?;
        strait_tls::TrustAnchors::from_pem(pem.as_bytes(), "--identity-trust-anchors-file")
            .map_err(InstallError::from)?;
        cfg = config(&args.sets, pem)?;
        Action::Manual(&cfg)
    } else {
        Action::Annotate
    };
    let out = transform(&args.file, &input, &action)?;
    print(&out, args.output)
}

pub fn uninject(args: UninjectArgs) -> Result<(), InjectError> {
    let input = read(&args.file)?;
    let out = transform(&args.file, &input, &Action::Remove)?;
    print(&out, args.output)
}

/// The proxy settings of an install with these control-plane values (the chart's defaults
/// and `--set`s), as the webhook of that install injects them.
pub fn config(
    sets: &[String],
    trust_anchors_pem: String,
) -> Result<strait_inject::Config, InjectError> {
    let mut v = values::defaults(Chart::ControlPlane, false)?;
    for s in sets {
        values::apply_set(Chart::ControlPlane, &mut v, s)?;
    }
    // The issuer does not matter to a proxy: only the anchors, names and images do.
    values::set_string(&mut v, "identityTrustAnchorsPEM", trust_anchors_pem.clone());
    values::set_value(&mut v, "identity.issuer.external", Value::Bool(true));
    let v: control_plane::Values = values::typed_values(Chart::ControlPlane, v)?;
    Ok(strait_inject::Config::for_install(strait_inject::Install {
        proxy_image: v.image.of("proxy"),
        proxy_init_image: v.image.of("proxy-init"),
        image_pull_policy: v.image.pull_policy.as_str().into(),
        control_namespace: v.namespace.clone(),
        cluster_domain: v.cluster_domain.clone(),
        trust_domain: v.identity.trust_domain.clone(),
        trust_anchors_pem,
        log_level: v.proxy.log_level.clone(),
    }))
}

fn read(file: &str) -> Result<String, InjectError> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|source| InjectError::Read {
                what: "standard input".into(),
                source,
            })?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).map_err(|source| InjectError::Read {
            what: file.into(),
            source,
        })
    }
}

fn print(objects: &[Value], output: Output) -> Result<(), InjectError> {
    let text = crate::install::format(objects, output)?;
    print!("{text}");
    Ok(())
}

/// Every document of `input`, changed by `action` (pure: the tests call it).
fn transform(what: &str, input: &str, action: &Action<'_>) -> Result<Vec<Value>, InjectError> {
    let not_k8s = |reason: String| InjectError::NotKubernetes {
        what: what.into(),
        reason,
    };
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(input).map_err(|e| not_k8s(e.to_string()))?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    if docs.is_empty() {
        return Err(not_k8s("it holds no object".into()));
    }
    docs.into_iter()
        .map(|mut d| {
            if !(d.get("apiVersion").is_some_and(Value::is_string)
                && d.get("kind").is_some_and(Value::is_string))
            {
                return Err(not_k8s("an object without apiVersion and kind".into()));
            }
            object(&mut d, action)?;
            Ok(d)
        })
        .collect()
}

fn object(o: &mut Value, action: &Action<'_>) -> Result<(), InjectError> {
    let kind = o["kind"].as_str().unwrap_or_default().to_owned();
    let name = o["metadata"]["name"]
        .as_str()
        .unwrap_or("(unnamed)")
        .to_owned();
    let template = match kind.as_str() {
        "List" => {
            if let Some(items) = o.get_mut("items").and_then(Value::as_array_mut) {
                for item in items {
                    object(item, action)?;
                }
            }
            return Ok(());
        }
        "Pod" => Some(&mut *o),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            o.get_mut("spec").and_then(|s| s.get_mut("template"))
        }
        "CronJob" => o.pointer_mut("/spec/jobTemplate/spec/template"),
        _ => None,
    };
    let Some(template) = template else {
        return Ok(());
    };
    pod_template(template, action).map_err(|source| InjectError::Pod { kind, name, source })
}

/// A Pod or a pod template (`metadata` + `spec`).
fn pod_template(t: &mut Value, action: &Action<'_>) -> Result<(), strait_inject::Error> {
    match action {
        Action::Annotate => {
            let meta = t
                .as_object_mut()
                .map(|m| m.entry("metadata").or_insert_with(|| serde_json::json!({})));
            if let Some(meta) = meta.and_then(Value::as_object_mut) {
                let a = meta
                    .entry("annotations")
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(a) = a.as_object_mut() {
                    a.insert(labels::INJECT.into(), "enabled".into());
                }
            }
            // The webhook will read the proxy annotations; refuse bad ones now, not then.
            let pod = as_pod(t)?;
            strait_inject::Annotations::parse(&pod.metadata.annotations.unwrap_or_default())?;
            Ok(())
        }
        Action::Manual(cfg) => {
            let pod = strait_inject::inject(&as_pod(t)?, cfg)?;
            merge_pod(t, &pod)
        }
        Action::Remove => {
            let pod = strait_inject::uninject(&as_pod(t)?);
            merge_pod(t, &pod)
        }
    }
}

fn as_pod(t: &Value) -> Result<Pod, strait_inject::Error> {
    let mut v = serde_json::json!({"metadata": t.get("metadata").cloned().unwrap_or_default(), "spec": t.get("spec").cloned()});
    if v["metadata"].is_null() {
        v["metadata"] = serde_json::json!({});
    }
    serde_json::from_value(v).map_err(|e| strait_inject::Error::Pod(e.to_string()))
}

/// Writes the pod's metadata annotations and spec back into the template, keeping every
/// other field of the input as it was.
fn merge_pod(t: &mut Value, pod: &Pod) -> Result<(), strait_inject::Error> {
    let spec =
        serde_json::to_value(&pod.spec).map_err(|e| strait_inject::Error::Pod(e.to_string()))?;
    let annotations = serde_json::to_value(&pod.metadata.annotations)
        .map_err(|e| strait_inject::Error::Pod(e.to_string()))?;
    if let Some(obj) = t.as_object_mut() {
        obj.insert("spec".into(), spec);
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| serde_json::json!({}));
        if let Some(meta) = meta.as_object_mut() {
            if annotations.is_null() {
                meta.remove("annotations");
            } else {
                meta.insert("annotations".into(), annotations);
            }
        }
        if obj
            .get("metadata")
            .and_then(Value::as_object)
            .is_some_and(|m| m.is_empty())
        {
            obj.remove("metadata");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const MANIFESTS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: web}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: "0 0 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: job}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
"#;

    fn cfg() -> strait_inject::Config {
        config(&[], "PEM".into()).unwrap()
    }

    #[test]
    fn inject_annotates_every_template_and_passes_the_rest() {
        let out = transform("t", MANIFESTS, &Action::Annotate).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(
            out[0]["spec"]["template"]["metadata"]["annotations"][labels::INJECT],
            "enabled"
        );
        assert_eq!(
            out[1]
                .pointer("/spec/jobTemplate/spec/template/metadata/annotations")
                .unwrap()[labels::INJECT],
            "enabled"
        );
        assert_eq!(
            out[2],
            serde_saphyr::from_multiple::<Value>(MANIFESTS).unwrap()[2]
        );
        // A list's items are walked too.
        let list =
            serde_json::json!({"apiVersion": "v1", "kind": "List", "items": [out[0].clone()]});
        let out = transform("t", &list.to_string(), &Action::Annotate).unwrap();
        assert_eq!(
            out[0]["items"][0]["spec"]["template"]["metadata"]["annotations"][labels::INJECT],
            "enabled"
        );
    }

    #[test]
    fn manual_is_the_webhooks_pod_and_uninject_reverses_it() {
        let cfg = cfg();
        let manual = transform("t", MANIFESTS, &Action::Manual(&cfg)).unwrap();
        let template = &manual[0]["spec"]["template"];
        let pod: Pod = as_pod(template).unwrap();
        let original = as_pod(
            &serde_saphyr::from_multiple::<Value>(MANIFESTS).unwrap()[0]["spec"]["template"],
        )
        .unwrap();
        assert_eq!(
            pod,
            strait_inject::inject(&original, &cfg).unwrap(),
            "same code, same pod"
        );
        assert_eq!(cfg.proxy_image, "strait.local/proxy:dev");
        let yaml = crate::install::format(&manual, Output::Yaml).unwrap();
        let back = transform("t", &yaml, &Action::Remove).unwrap();
        let expected: Vec<Value> = serde_saphyr::from_multiple(MANIFESTS).unwrap();
        assert_eq!(back[0]["spec"], expected[0]["spec"]);
        assert_eq!(back[1], expected[1]);
    }

    #[test]
    fn input_that_is_not_kubernetes_is_refused() {
        for bad in ["just: [a, map", "hello: world\n", ""] {
            let err = transform("in.yaml", bad, &Action::Annotate)
                .unwrap_err()
                .to_string();
            assert!(err.contains("in.yaml is not Kubernetes"), "{err}");
        }
    }

    #[test]
    fn a_bad_annotation_is_refused_with_its_name() {
        let bad = MANIFESTS.replacen(
            "metadata: {labels: {app: web}}",
            "metadata: {labels: {app: web}, annotations: {config.strait.dev/proxy-cpu-limit: lots}}",
            1,
        );
        let err = transform("t", &bad, &Action::Annotate)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Deployment web") && err.contains("proxy-cpu-limit"),
            "{err}"
        );
    }
}
