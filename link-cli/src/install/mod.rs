//! `strait install`, `strait multicluster install` and their `uninstall`s: print the objects
//! of `charts/strait-control-plane` and `charts/strait-multicluster` for the same values, ready
//! for `kubectl apply -f -` (a test renders both with `helm template` and compares them object
//! by object).
//!
//! ```text
//!  values.yaml (embedded) ─► --ha: values-ha.yaml ─► --set k=v ─► identity files ─► typed Values
//!                                                                                   │ checks of values.schema.json
//!                        control_plane::objects / multicluster::objects ◄───────────┘
//!                                   │
//!                                   └─► -o yaml | json on stdout; notes on stderr
//! ```

pub mod cli;
pub mod control_plane;
pub mod multicluster;
pub(crate) mod objects;
pub mod values;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use values::Chart;

/// What can go wrong, each with what to do next.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("--set {arg}: {reason}")]
    Set { arg: String, reason: String },
    #[error(
        "--set {key}: {chart} has no such value (known here: {known}); see charts/{chart}/values.yaml"
    )]
    UnknownKey {
        chart: &'static str,
        key: String,
        known: String,
    },
    #[error("values of {chart}: {reason}; see charts/{chart}/values.yaml for the keys and types")]
    Values { chart: &'static str, reason: String },
    #[error("values of {chart}: {key} {reason}")]
    Invalid {
        chart: &'static str,
        key: String,
        reason: String,
    },
    #[error("the embedded {what} does not parse ({reason}); this build of strait is broken")]
    EmbeddedValues { what: String, reason: String },
    #[error("{flag} {}: {source}", path.display())]
    ReadFile {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Flags(String),
    #[error("the identity files: {0}")]
    Tls(#[from] strait_tls::TlsError),
    #[error("writing {format}: {reason}")]
    Output {
        format: &'static str,
        reason: String,
    },
    #[error(
        "listing Links in the cluster: {0}; check that kubectl reaches it (--kubeconfig, --context)"
    )]
    Cluster(String),
    #[error(
        "{count} Link(s) still exist; unlink them first (`{example}`), then run this again:\n{list}"
    )]
    LinksExist {
        count: usize,
        list: String,
        example: String,
    },
}

/// The settings both `install` commands take, as flags.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `--set key=value`, in order.
    pub sets: Vec<String>,
    /// `--set-string key=value`, applied after the `--set`s (as Helm does).
    pub set_strings: Vec<String>,
    /// `--ha`: the chart's values-ha.yaml under the `--set`s.
    pub ha: bool,
    pub trust_anchors_file: Option<PathBuf>,
    pub issuer_cert_file: Option<PathBuf>,
    pub issuer_key_file: Option<PathBuf>,
    pub external_issuer: bool,
}

/// Objects to print, and what to tell the operator on stderr.
#[derive(Debug)]
pub struct Rendered {
    pub objects: Vec<Value>,
    pub notice: Option<String>,
}

fn read(flag: &'static str, path: &Path) -> Result<String, InstallError> {
    std::fs::read_to_string(path).map_err(|source| InstallError::ReadFile {
        flag,
        path: path.to_path_buf(),
        source,
    })
}

fn merged(chart: Chart, s: &Settings) -> Result<Value, InstallError> {
    let mut v = values::defaults(chart, s.ha)?;
    for arg in &s.sets {
        values::apply_set(chart, &mut v, arg)?;
    }
    for arg in &s.set_strings {
        values::apply_set_string(chart, &mut v, arg)?;
    }
    if let Some(p) = &s.trust_anchors_file {
        values::set_string(
            &mut v,
            "identityTrustAnchorsPEM",
            read("--identity-trust-anchors-file", p)?,
        );
    }
    Ok(v)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .try_fold(v, |node, k| node.get(*k))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `strait install`: the control plane's objects.
pub fn render_control_plane(s: &Settings) -> Result<Rendered, InstallError> {
    let chart = Chart::ControlPlane;
    let mut v = merged(chart, s)?;
    let notice = identity_values(&mut v, s)?;
    let values: control_plane::Values = values::typed_values(chart, v)?;
    if !values.identity.issuer.external {
        check_issuer(&values)?;
    }
    let mut objects = control_plane::crds().map_err(|e| InstallError::EmbeddedValues {
        what: "policy CRDs".into(),
        reason: e.to_string(),
    })?;
    objects.extend(control_plane::objects(&values));
    Ok(Rendered { objects, notice })
}

/// Fills the identity values from the files, or generates an anchor and an issuer.
fn identity_values(v: &mut Value, s: &Settings) -> Result<Option<String>, InstallError> {
    if s.external_issuer {
        values::set_value(v, "identity.issuer.external", Value::Bool(true));
    }
    let external = v["identity"]["issuer"]["external"].as_bool() == Some(true);
    match (&s.issuer_cert_file, &s.issuer_key_file) {
        (Some(crt), Some(key)) if !external => {
            values::set_string(
                v,
                "identity.issuer.tls.crtPEM",
                read("--identity-issuer-certificate-file", crt)?,
            );
            values::set_string(
                v,
                "identity.issuer.tls.keyPEM",
                read("--identity-issuer-key-file", key)?,
            );
        }
        (None, None) => {}
        _ if external => {
            return Err(InstallError::Flags(
                "--identity-external-issuer reads the issuer from an existing Secret; drop \
                 --identity-issuer-certificate-file and --identity-issuer-key-file"
                    .into(),
            ));
        }
        _ => {
            return Err(InstallError::Flags(
                "pass both --identity-issuer-certificate-file and --identity-issuer-key-file"
                    .into(),
            ));
        }
    }
    let anchors_given = !str_at(v, &["identityTrustAnchorsPEM"]).is_empty();
    let issuer_given = !str_at(v, &["identity", "issuer", "tls", "crtPEM"]).is_empty();
    if anchors_given || issuer_given || external {
        if !anchors_given {
            return Err(InstallError::Flags(if external {
                "--identity-external-issuer needs --identity-trust-anchors-file: the anchors \
                 the external issuer chains to"
                    .into()
            } else {
                "the issuer needs its trust anchors: pass --identity-trust-anchors-file".into()
            }));
        }
        return Ok(None);
    }
    let ns = str_at(v, &["namespace"]).to_string();
    let td = str_at(v, &["identity", "trustDomain"]).to_string();
    let now = SystemTime::now();
    let anchor =
        strait_tls::Issuer::generate_anchor(&td, strait_tls::DEFAULT_ANCHOR_LIFETIME, now)?;
    let issuer = anchor.generate_issuer(
        &format!("identity.{ns}.{td}"),
        strait_tls::DEFAULT_ISSUER_LIFETIME,
        now,
    )?;
    values::set_string(v, "identityTrustAnchorsPEM", anchor.cert_pem());
    values::set_string(v, "identity.issuer.tls.crtPEM", issuer.cert_pem());
    values::set_string(
        v,
        "identity.issuer.tls.keyPEM",
        issuer.key_pem().to_string(),
    );
    Ok(Some(format!(
        "strait install: generated a trust anchor and an issuer (valid until {until}); the \
         anchor's private key is not kept.\n\
         For production, make them once with `strait identity --out DIR` (or cert-manager), \
         keep DIR/issuer.key in a secret store and DIR/ca.crt where every linked cluster's \
         install can read it, and pass --identity-trust-anchors-file DIR/ca.crt \
         --identity-issuer-certificate-file DIR/issuer.crt --identity-issuer-key-file \
         DIR/issuer.key (or --identity-external-issuer).\n\
         Linked clusters must share the anchor: `strait multicluster install` needs it, from \
         kubectl -n {ns} get configmap strait-identity-trust-roots -o jsonpath='{{.data.ca-bundle\\.crt}}'",
        until = humantime::format_rfc3339_seconds(issuer.not_after()),
    )))
}

/// The issuer must chain to the anchors, or no proxy would trust what it signs.
fn check_issuer(v: &control_plane::Values) -> Result<(), InstallError> {
    let anchors = strait_tls::TrustAnchors::from_pem(
        v.identity_trust_anchors_pem.as_bytes(),
        "the trust anchors",
    )?;
    let issuer = strait_tls::Issuer::from_pem(
        v.identity.issuer.tls.crt_pem.as_bytes(),
        v.identity.issuer.tls.key_pem.as_bytes(),
        "the issuer",
    )?;
    let probe = strait_core::identity::Identity::new(
        "install-check",
        &v.namespace,
        &v.namespace,
        &v.identity.trust_domain,
    )
    .map_err(|e| InstallError::Flags(format!("the trust domain or namespace: {e}")))?;
    issuer.verify_against(&anchors, &probe).map_err(|e| {
        InstallError::Flags(format!(
            "the issuer does not chain to the trust anchors ({e}); pass the ca.crt that \
             signed the issuer certificate"
        ))
    })
}

/// `strait multicluster install`: the Link CRD, then the chart's objects.
pub fn render_multicluster(s: &Settings) -> Result<Rendered, InstallError> {
    let chart = Chart::Multicluster;
    let v = merged(chart, s)?;
    let values: multicluster::Values = values::typed_values(chart, v)?;
    let crd = multicluster::crd().map_err(|e| InstallError::EmbeddedValues {
        what: "Link CRD".into(),
        reason: e.to_string(),
    })?;
    let mut objects = vec![crd];
    objects.extend(multicluster::objects(&values));
    Ok(Rendered {
        objects,
        notice: None,
    })
}

/// What `uninstall` prints: each object's kind and name, in delete order (the reverse of
/// apply order), without the CRD (kept, as `helm uninstall` keeps it).
pub fn uninstall_list(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .rev()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .map(|o| {
            let mut meta = serde_json::json!({"name": o["metadata"]["name"]});
            if let Some(ns) = o["metadata"].get("namespace") {
                meta["namespace"] = ns.clone();
            }
            serde_json::json!({"apiVersion": o["apiVersion"], "kind": o["kind"], "metadata": meta})
        })
        .collect()
}

/// `strait uninstall`: what `strait install` with these `--set`s made.
pub fn uninstall_control_plane(sets: &[String]) -> Result<Vec<Value>, InstallError> {
    let v: control_plane::Values = names_only(
        Chart::ControlPlane,
        sets,
        &[
            "identityTrustAnchorsPEM",
            "identity.issuer.tls.crtPEM",
            "identity.issuer.tls.keyPEM",
        ],
    )?;
    Ok(uninstall_list(&control_plane::objects(&v)))
}

/// `strait multicluster uninstall`: what `strait multicluster install` with these `--set`s
/// made (call [`multicluster::refuse_while_links`] first).
pub fn uninstall_multicluster(sets: &[String]) -> Result<Vec<Value>, InstallError> {
    let v: multicluster::Values =
        names_only(Chart::Multicluster, sets, &["identityTrustAnchorsPEM"])?;
    Ok(uninstall_list(&multicluster::objects(&v)))
}

/// The values with placeholders for the identity material, which names no object.
fn names_only<T: for<'de> serde::Deserialize<'de> + values::Check>(
    chart: Chart,
    sets: &[String],
    placeholders: &[&str],
) -> Result<T, InstallError> {
    let settings = Settings {
        sets: sets.to_vec(),
        ..Settings::default()
    };
    let mut v = merged(chart, &settings)?;
    for key in placeholders {
        values::set_string(&mut v, key, "-".into());
    }
    values::typed_values(chart, v)
}

/// `-o yaml|json`
#[derive(Clone, Copy, Debug, Default, clap::ValueEnum, PartialEq, Eq)]
pub enum Output {
    #[default]
    Yaml,
    Json,
}

/// The objects as a YAML stream or a JSON `v1/List`, for `kubectl apply -f -`.
pub fn format(objects: &[Value], output: Output) -> Result<String, InstallError> {
    match output {
        Output::Yaml => {
            let mut out = String::new();
            for o in objects {
                out.push_str("---\n");
                out.push_str(
                    &serde_saphyr::to_string(o).map_err(|e| InstallError::Output {
                        format: "yaml",
                        reason: e.to_string(),
                    })?,
                );
            }
            Ok(out)
        }
        Output::Json => {
            let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": objects});
            let mut s = serde_json::to_string_pretty(&list).map_err(|e| InstallError::Output {
                format: "json",
                reason: e.to_string(),
            })?;
            s.push('\n');
            Ok(s)
        }
    }
}

#[cfg(test)]
mod tests;
