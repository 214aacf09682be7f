//! The install's proxy settings, and what a pod's annotations change of them.

use crate::Error;
use std::collections::BTreeMap;
use strait_core::labels;

/// What every injected proxy gets, from the install (chart values or `strait install`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `strait.local/proxy:dev`
    pub proxy_image: String,
    /// `strait.local/proxy-init:dev`
    pub proxy_init_image: String,
    pub image_pull_policy: String,
    /// Written into `strait.dev/proxy-version`.
    pub proxy_version: String,
    /// The control plane's namespace (`strait`) and trust domain (`cluster.local`).
    pub control_namespace: String,
    pub trust_domain: String,
    /// `host:port` of identity and destination, and the identities they present.
    pub identity_addr: String,
    pub identity_name: String,
    pub destination_addr: String,
    pub destination_name: String,
    /// The trust anchors in PEM, given to the proxy in its environment (as Linkerd does):
    /// a ConfigMap could only be mounted from the pod's own namespace.
    pub trust_anchors_pem: String,
    pub proxy_uid: i64,
    pub resources: Resources,
    pub log_level: String,
    /// What an injected proxy admits on a port until (or while) the policy service does not
    /// answer for it: the control plane's `--default-inbound-policy`, unless the pod's
    /// annotation says otherwise.
    pub default_inbound_policy: String,
}

/// Where an install's control plane is and how its proxies are pulled: the inputs from which
/// [`Config::for_install`] derives every name and address, once for the webhook and the CLI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    pub proxy_image: String,
    pub proxy_init_image: String,
    pub image_pull_policy: String,
    pub control_namespace: String,
    pub cluster_domain: String,
    pub trust_domain: String,
    pub trust_anchors_pem: String,
    pub log_level: String,
}

impl Config {
    /// The proxy settings of an install: the control plane's Services
    /// (`strait-identity`, `strait-dst`) and identities, uid 2102, and default resources.
    pub fn for_install(i: Install) -> Self {
        let (ns, td, domain) = (&i.control_namespace, &i.trust_domain, &i.cluster_domain);
        Self {
            identity_addr: format!(
                "strait-identity.{ns}.svc.{domain}:{}",
                strait_core::ports::IDENTITY_GRPC
            ),
            identity_name: format!("strait-identity.{ns}.serviceaccount.identity.{ns}.{td}"),
            destination_addr: format!(
                "strait-dst.{ns}.svc.{domain}:{}",
                strait_core::ports::DESTINATION_GRPC
            ),
            destination_name: format!("strait-destination.{ns}.serviceaccount.identity.{ns}.{td}"),
            proxy_version: env!("CARGO_PKG_VERSION").into(),
            proxy_uid: 2102,
            resources: Resources {
                cpu_request: Some("10m".into()),
                cpu_limit: None,
                memory_request: Some("20Mi".into()),
                memory_limit: Some("250Mi".into()),
            },
            proxy_image: i.proxy_image,
            proxy_init_image: i.proxy_init_image,
            image_pull_policy: i.image_pull_policy,
            control_namespace: i.control_namespace,
            trust_domain: i.trust_domain,
            trust_anchors_pem: i.trust_anchors_pem,
            log_level: i.log_level,
            default_inbound_policy: "all-unauthenticated".into(),
        }
    }
}

/// Requests and limits of the proxy container; `None` leaves one unset.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
}

/// A pod's proxy annotations, parsed; every bad value is an error naming its annotation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Annotations {
    pub skip_inbound_ports: Vec<String>,
    pub skip_outbound_ports: Vec<String>,
    pub opaque_ports: Vec<String>,
    pub resources: Resources,
    pub log_level: Option<String>,
    pub default_inbound_policy: Option<String>,
}

impl Annotations {
    pub fn parse(annotations: &BTreeMap<String, String>) -> Result<Self, Error> {
        let get = |k: &str| annotations.get(k).map(|v| v.trim().to_owned());
        let quantity = |k: &'static str, cpu: bool| -> Result<Option<String>, Error> {
            get(k)
                .map(|v| {
                    if is_quantity(&v, cpu) {
                        Ok(v)
                    } else {
                        Err(Error::Annotation {
                            annotation: k,
                            value: v,
                            reason: if cpu {
                                "not a CPU quantity (for example 100m or 1)".into()
                            } else {
                                "not a memory quantity (for example 64Mi or 1Gi)".into()
                            },
                        })
                    }
                })
                .transpose()
        };
        Ok(Self {
            skip_inbound_ports: ports(labels::SKIP_INBOUND_PORTS, get(labels::SKIP_INBOUND_PORTS))?,
            skip_outbound_ports: ports(
                labels::SKIP_OUTBOUND_PORTS,
                get(labels::SKIP_OUTBOUND_PORTS),
            )?,
            opaque_ports: ports(labels::OPAQUE_PORTS, get(labels::OPAQUE_PORTS))?,
            resources: Resources {
                cpu_request: quantity(labels::PROXY_CPU_REQUEST, true)?,
                cpu_limit: quantity(labels::PROXY_CPU_LIMIT, true)?,
                memory_request: quantity(labels::PROXY_MEMORY_REQUEST, false)?,
                memory_limit: quantity(labels::PROXY_MEMORY_LIMIT, false)?,
            },
            log_level: get(labels::PROXY_LOG_LEVEL)
                .map(|v| {
                    if is_log_filter(&v) {
                        Ok(v)
                    } else {
                        Err(Error::Annotation {
                            annotation: labels::PROXY_LOG_LEVEL,
                            value: v,
                            reason: "not a log filter: a level (trace, debug, info, warn, error, off) or `target=level` items separated by commas".into(),
                        })
                    }
                })
                .transpose()?,
            default_inbound_policy: get(labels::DEFAULT_INBOUND_POLICY)
                .map(|v| {
                    if strait_core::policy::DEFAULT_INBOUND_POLICIES.contains(&v.as_str()) {
                        Ok(v)
                    } else {
                        Err(Error::Annotation {
                            annotation: labels::DEFAULT_INBOUND_POLICY,
                            value: v,
                            reason: format!(
                                "not a default policy; one of {}",
                                strait_core::policy::DEFAULT_INBOUND_POLICIES.join(", ")
                            ),
                        })
                    }
                })
                .transpose()?,
        })
    }
}

/// Comma-separated ports (the proxy and its init read single ports; a range is refused with
/// that said, not half-applied).
fn ports(annotation: &'static str, value: Option<String>) -> Result<Vec<String>, Error> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    value
        .split(',')
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .map(|item| {
            let reason = if item.contains('-') {
                format!("{item:?} is a range; list the ports one by one")
            } else {
                match item.parse::<u16>() {
                    Ok(n) if n > 0 => return Ok(n.to_string()),
                    _ => format!("{item:?} is not a port (1-65535)"),
                }
            };
            Err(Error::Annotation {
                annotation,
                value: value.clone(),
                reason,
            })
        })
        .collect()
}

/// A Kubernetes quantity: a decimal number and a suffix (`m` for CPU; binary or decimal
/// multiples for memory).
fn is_quantity(v: &str, cpu: bool) -> bool {
    let digits = v
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(v.len(), |(i, _)| i);
    let (number, suffix) = v.split_at(digits);
    let number_ok = !number.is_empty()
        && number.matches('.').count() <= 1
        && number.chars().any(|c| c.is_ascii_digit())
        && number.parse::<f64>().is_ok_and(|n| n > 0.0);
    let suffixes: &[&str] = if cpu {
        &["", "m"]
    } else {
        &["", "k", "M", "G", "T", "Ki", "Mi", "Gi", "Ti"]
    };
    number_ok && suffixes.contains(&suffix)
}

fn is_log_filter(v: &str) -> bool {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    !v.is_empty()
        && v.split(',').all(|item| {
            let level = match item.split_once('=') {
                Some((target, level)) => {
                    if target.is_empty()
                        || !target
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "_:-".contains(c))
                    {
                        return false;
                    }
                    level
                }
                None => item,
            };
            LEVELS.contains(&level.trim())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Annotations, Error> {
        Annotations::parse(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn good_annotations_parse() {
        let a = parse(&[
            (labels::SKIP_INBOUND_PORTS, "25, 3306"),
            (labels::SKIP_OUTBOUND_PORTS, "4000,4100"),
            (labels::OPAQUE_PORTS, "5432"),
            (labels::PROXY_CPU_REQUEST, "100m"),
            (labels::PROXY_CPU_LIMIT, "1"),
            (labels::PROXY_MEMORY_REQUEST, "20Mi"),
            (labels::PROXY_MEMORY_LIMIT, "0.5Gi"),
            (labels::PROXY_LOG_LEVEL, "warn,strait_proxy=debug"),
            (labels::DEFAULT_INBOUND_POLICY, "deny"),
        ])
        .unwrap();
        assert_eq!(a.default_inbound_policy.as_deref(), Some("deny"));
        assert_eq!(a.skip_inbound_ports, ["25", "3306"]);
        assert_eq!(a.skip_outbound_ports, ["4000", "4100"]);
        assert_eq!(a.opaque_ports, ["5432"]);
        assert_eq!(a.resources.cpu_request.as_deref(), Some("100m"));
        assert_eq!(a.resources.memory_limit.as_deref(), Some("0.5Gi"));
        assert_eq!(a.log_level.as_deref(), Some("warn,strait_proxy=debug"));
        assert_eq!(parse(&[]).unwrap(), Annotations::default());
    }

    #[test]
    fn each_bad_value_is_refused_by_its_annotation() {
        for (annotation, value, says) in [
            (
                labels::SKIP_INBOUND_PORTS,
                "25,http",
                "\"http\" is not a port",
            ),
            (labels::SKIP_OUTBOUND_PORTS, "0", "not a port"),
            (labels::SKIP_OUTBOUND_PORTS, "70000", "not a port"),
            (labels::OPAQUE_PORTS, "400-500", "is a range"),
            (labels::PROXY_CPU_REQUEST, "lots", "CPU quantity"),
            (labels::PROXY_CPU_LIMIT, "1Gi", "CPU quantity"),
            (labels::PROXY_MEMORY_REQUEST, "64MB", "memory quantity"),
            (labels::PROXY_MEMORY_LIMIT, "-1Mi", "memory quantity"),
            (labels::PROXY_LOG_LEVEL, "loud", "not a log filter"),
            (labels::PROXY_LOG_LEVEL, "a b=info", "not a log filter"),
            (
                labels::DEFAULT_INBOUND_POLICY,
                "allow",
                "not a default policy",
            ),
        ] {
            let err = parse(&[(annotation, value)]).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(annotation), "{text}");
            assert!(text.contains(says), "{annotation}={value}: {text}");
        }
    }
}
