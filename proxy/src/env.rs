//! Every `STRAIT_PROXY_*` environment variable, parsed in one place into typed config.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `STRAIT_PROXY_OUTBOUND_LISTEN_ADDR` | `0.0.0.0:4140` | outbound listener |
//! | `STRAIT_PROXY_INBOUND_LISTEN_ADDR` | `0.0.0.0:4143` | inbound listener |
//! | `STRAIT_PROXY_ADMIN_LISTEN_ADDR` | `0.0.0.0:4191` | admin listener |
//! | `STRAIT_PROXY_OUTBOUND_TARGET` | — | explicit mode (tests, benches): every outbound connection targets this address instead of `SO_ORIGINAL_DST` |
//! | `STRAIT_PROXY_INBOUND_TARGET` | — | explicit mode: the app's address (else `127.0.0.1:<original port>`) |
//! | `STRAIT_PROXY_DESTINATION_ADDR` | — | destination service `host:port`; without it every target is its original address |
//! | `STRAIT_PROXY_DESTINATION_SVC_NAME` | required unless the address is loopback | the identity destination must present (mTLS; the proxy presents its own certificate); unset on loopback: plaintext (tests) |
//! | `STRAIT_PROXY_IDENTITY_TRUST_ANCHORS` | required unless `…_PEM` | PEM file of trust anchors |
//! | `STRAIT_PROXY_IDENTITY_TRUST_ANCHORS_PEM` | — | the trust anchors themselves, in PEM (what the injector sets, as Linkerd's injector does; wins over the file) |
//! | `STRAIT_PROXY_IDENTITY_SVC_ADDR` | — | identity service `host:port`: certify and renew (needs the two below) |
//! | `STRAIT_PROXY_IDENTITY_SVC_NAME` | required unless the address is loopback | the identity the identity service must present (TLS, checked against the anchors before the token is sent); unset on loopback: plaintext (tests) |
//! | `STRAIT_PROXY_IDENTITY_LOCAL_NAME` | — | the identity to ask for |
//! | `STRAIT_PROXY_IDENTITY_TOKEN_FILE` | — | the service-account token file |
//! | `STRAIT_PROXY_IDENTITY_CERT`, `STRAIT_PROXY_IDENTITY_KEY` | required without the identity service | PEM leaf chain and key (tests, benches) |
//! | `STRAIT_PROXY_POLICY_WORKLOAD` | — | `<namespace>:<pod>`: turns inbound and outbound policy on (the injector sets it) |
//! | `STRAIT_PROXY_POLICY_SVC_ADDR` | the destination address | policy service `host:port` (`InboundServerPolicies`, `OutboundPolicies`) |
//! | `STRAIT_PROXY_POLICY_SVC_NAME` | destination's identity when the address is destination's | the identity the policy service must present (mTLS); unset on loopback: plaintext (tests) |
//! | `STRAIT_PROXY_INBOUND_DEFAULT_POLICY` | `all-unauthenticated` | what a port admits until, or while, the policy service does not answer for it (Linkerd's values) |
//! | `STRAIT_PROXY_INBOUND_CLUSTER_NETWORKS` | the private ranges and 198.18.0.0/15 | the networks `cluster-*` default policies admit |
//! | `STRAIT_PROXY_INBOUND_REQUIRE_IDENTITY` | `false` | refuse inbound connections without a client certificate |
//! | `STRAIT_PROXY_OPAQUE_PORTS` | empty | comma-separated ports that skip protocol detection |
//! | `STRAIT_PROXY_DETECT_TIMEOUT` | `3s` | protocol detection |
//! | `STRAIT_PROXY_CONNECT_TIMEOUT` | `2s` | TCP + TLS + header to an endpoint |
//! | `STRAIT_PROXY_REQUEST_TIMEOUT` | `30s` | outbound response headers (504 after) |
//! | `STRAIT_PROXY_DISCOVERY_TIMEOUT` | `2s` | wait for a first answer before using the original address |
//! | `STRAIT_PROXY_SHUTDOWN_GRACE_PERIOD` | `10s` | drain on SIGTERM |
//! | `STRAIT_PROXY_CORES` | the CPUs the process may use (affinity, cgroup quota) | worker threads; `1` is a current-thread runtime ([`crate::runtime`]) |
//! | `STRAIT_PROXY_UID` | `2102` | (init) the proxy's uid, never redirected |
//! | `STRAIT_PROXY_INBOUND_SKIP_PORTS`, `STRAIT_PROXY_OUTBOUND_SKIP_PORTS` | empty | (init) ports left alone |

pub use crate::certify::IdentityService;
use crate::iptables::InitConfig;
pub use crate::policy::inbound::DefaultPolicy;
use ipnet::IpNet;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use strait_core::identity::Identity;
use strait_core::ports;

/// A variable that is missing or does not parse, by name.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error("{name} is required")]
    Missing { name: &'static str },
    #[error(
        "{name} is required: {addr_name}={addr} is not a loopback address, so the control plane \
         must prove its identity over TLS"
    )]
    ControlPlaneIdentity {
        name: &'static str,
        addr_name: &'static str,
        addr: String,
    },
    #[error("{name}={value:?}: {reason}")]
    Invalid {
        name: &'static str,
        value: String,
        reason: String,
    },
}

/// The proxy's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub outbound_listen: SocketAddr,
    pub inbound_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub outbound_target: Option<SocketAddr>,
    pub inbound_target: Option<SocketAddr>,
    pub destination_addr: Option<String>,
    /// The identity destination presents; `None` only on loopback (plaintext).
    pub destination_svc_name: Option<Identity>,
    pub trust_anchors: TrustAnchorsSource,
    pub identity: IdentitySource,
    /// Where policy comes from; `None`: no policy (everyone under the trust anchor is
    /// admitted, outbound protocols are detected).
    pub policy: Option<PolicySvc>,
    pub inbound_default_policy: DefaultPolicy,
    pub cluster_networks: Vec<IpNet>,
    pub inbound_require_identity: bool,
    pub opaque_ports: Vec<u16>,
    pub detect_timeout: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub discovery_timeout: Duration,
    pub shutdown_grace: Duration,
    /// Worker threads; `None`: as many CPUs as the process may use.
    pub cores: Option<NonZeroUsize>,
}

/// The policy service and the workload this proxy asks about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySvc {
    pub addr: String,
    /// The identity the policy service presents; `None` only on loopback (plaintext).
    pub svc_name: Option<Identity>,
    /// `<namespace>:<pod>`.
    pub workload: String,
}

/// Where the trust anchors come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrustAnchorsSource {
    File(PathBuf),
    Pem(String),
}

/// Where the proxy's certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentitySource {
    /// Fixed files (tests, benches; no renewal).
    Files { cert: PathBuf, key: PathBuf },
    /// The identity service: Certify with the token, renew at 70 % of the lifetime.
    Service(IdentityService),
}

struct Env<F>(F);

impl<F: Fn(&str) -> Option<String>> Env<F> {
    fn get(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn parse<T: FromStr>(&self, name: &'static str) -> Result<Option<T>, EnvError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(name)
            .map(|v| {
                v.trim().parse().map_err(|e: T::Err| EnvError::Invalid {
                    name,
                    value: v.clone(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    fn addr(&self, name: &'static str, default: u16) -> Result<SocketAddr, EnvError> {
        Ok(self
            .parse(name)?
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], default))))
    }

    fn path(&self, name: &'static str) -> Result<PathBuf, EnvError> {
        self.get(name)
            .map(PathBuf::from)
            .ok_or(EnvError::Missing { name })
    }

    fn duration(&self, name: &'static str, default: Duration) -> Result<Duration, EnvError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v.trim()).map_err(|e| EnvError::Invalid {
                name,
                value: v.clone(),
                reason: e.to_string(),
            }),
        }
    }

    fn ports(&self, name: &'static str) -> Result<Vec<u16>, EnvError> {
        let Some(v) = self.get(name) else {
            return Ok(Vec::new());
        };
        v.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(EnvError::Invalid {
                    name,
                    value: v.clone(),
                    reason: format!("{p:?} is not a port (1-65535)"),
                }),
            })
            .collect()
    }

    /// The identity a control-plane service at `addr` must present: required unless `addr`
    /// is on loopback, where plaintext stays possible (tests).
    fn svc_name(
        &self,
        name: &'static str,
        addr_name: &'static str,
        addr: &str,
    ) -> Result<Option<Identity>, EnvError> {
        match self.parse::<Identity>(name)? {
            Some(id) => Ok(Some(id)),
            None if is_loopback(addr) => Ok(None),
            None => Err(EnvError::ControlPlaneIdentity {
                name,
                addr_name,
                addr: addr.to_owned(),
            }),
        }
    }

    fn networks(&self, name: &'static str, default: &str) -> Result<Vec<IpNet>, EnvError> {
        let v = self.get(name).unwrap_or_else(|| default.to_owned());
        v.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| {
                n.parse::<IpNet>().map_err(|e| EnvError::Invalid {
                    name,
                    value: v.clone(),
                    reason: format!("{n:?} is not a CIDR: {e}"),
                })
            })
            .collect()
    }

    /// The policy service: on when the workload is set.
    fn policy(&self) -> Result<Option<PolicySvc>, EnvError> {
        const WORKLOAD: &str = "STRAIT_PROXY_POLICY_WORKLOAD";
        let Some(workload) = self.get(WORKLOAD) else {
            return Ok(None);
        };
        let w = workload.trim();
        if !matches!(w.split_once(':'), Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() && !pod.contains(':'))
        {
            return Err(EnvError::Invalid {
                name: WORKLOAD,
                value: workload.clone(),
                reason: "expected <namespace>:<pod>".to_owned(),
            });
        }
        let dst = self.get("STRAIT_PROXY_DESTINATION_ADDR");
        let addr = match (self.get("STRAIT_PROXY_POLICY_SVC_ADDR"), &dst) {
            (Some(a), _) => a,
            (None, Some(d)) => d.clone(),
            (None, None) => {
                return Err(EnvError::Missing {
                    name: "STRAIT_PROXY_POLICY_SVC_ADDR",
                });
            }
        };
        let svc_name = match self.parse::<Identity>("STRAIT_PROXY_POLICY_SVC_NAME")? {
            Some(id) => Some(id),
            // Destination serves policy too: the same address, the same identity.
            None if dst.as_deref() == Some(addr.as_str()) => {
                self.parse("STRAIT_PROXY_DESTINATION_SVC_NAME")?
            }
            None => None,
        };
        if svc_name.is_none() && !is_loopback(&addr) {
            return Err(EnvError::ControlPlaneIdentity {
                name: "STRAIT_PROXY_POLICY_SVC_NAME",
                addr_name: "STRAIT_PROXY_POLICY_SVC_ADDR",
                addr,
            });
        }
        Ok(Some(PolicySvc {
            addr,
            svc_name,
            workload: w.to_owned(),
        }))
    }

    fn bool(&self, name: &'static str) -> Result<bool, EnvError> {
        Ok(self.parse(name)?.unwrap_or(false))
    }
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, EnvError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads variables through `lookup` (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, EnvError> {
        let env = Env(lookup);
        Ok(Self {
            outbound_listen: env
                .addr("STRAIT_PROXY_OUTBOUND_LISTEN_ADDR", ports::PROXY_OUTBOUND)?,
            inbound_listen: env.addr("STRAIT_PROXY_INBOUND_LISTEN_ADDR", ports::PROXY_INBOUND)?,
            admin_listen: env.addr("STRAIT_PROXY_ADMIN_LISTEN_ADDR", ports::ADMIN)?,
            outbound_target: env.parse("STRAIT_PROXY_OUTBOUND_TARGET")?,
            inbound_target: env.parse("STRAIT_PROXY_INBOUND_TARGET")?,
            destination_svc_name: match env.get("STRAIT_PROXY_DESTINATION_ADDR") {
                Some(addr) => env.svc_name(
                    "STRAIT_PROXY_DESTINATION_SVC_NAME",
                    "STRAIT_PROXY_DESTINATION_ADDR",
                    &addr,
                )?,
                None => None,
            },
            destination_addr: env.get("STRAIT_PROXY_DESTINATION_ADDR"),
            trust_anchors: match env.get("STRAIT_PROXY_IDENTITY_TRUST_ANCHORS_PEM") {
                Some(pem) => TrustAnchorsSource::Pem(pem),
                None => TrustAnchorsSource::File(env.path("STRAIT_PROXY_IDENTITY_TRUST_ANCHORS")?),
            },
            identity: match env.get("STRAIT_PROXY_IDENTITY_SVC_ADDR") {
                Some(addr) => IdentitySource::Service(IdentityService {
                    svc_name: env.svc_name(
                        "STRAIT_PROXY_IDENTITY_SVC_NAME",
                        "STRAIT_PROXY_IDENTITY_SVC_ADDR",
                        &addr,
                    )?,
                    addr,
                    name: env.parse("STRAIT_PROXY_IDENTITY_LOCAL_NAME")?.ok_or(
                        EnvError::Missing {
                            name: "STRAIT_PROXY_IDENTITY_LOCAL_NAME",
                        },
                    )?,
                    token: env.path("STRAIT_PROXY_IDENTITY_TOKEN_FILE")?,
                }),
                None => IdentitySource::Files {
                    cert: env.path("STRAIT_PROXY_IDENTITY_CERT")?,
                    key: env.path("STRAIT_PROXY_IDENTITY_KEY")?,
                },
            },
            policy: env.policy()?,
            inbound_default_policy: env
                .parse("STRAIT_PROXY_INBOUND_DEFAULT_POLICY")?
                .unwrap_or(DefaultPolicy::AllUnauthenticated),
            cluster_networks: env.networks(
                "STRAIT_PROXY_INBOUND_CLUSTER_NETWORKS",
                strait_core::policy::DEFAULT_CLUSTER_NETWORKS,
            )?,
            inbound_require_identity: env.bool("STRAIT_PROXY_INBOUND_REQUIRE_IDENTITY")?,
            opaque_ports: env.ports("STRAIT_PROXY_OPAQUE_PORTS")?,
            detect_timeout: env.duration("STRAIT_PROXY_DETECT_TIMEOUT", Duration::from_secs(3))?,
            connect_timeout: env
                .duration("STRAIT_PROXY_CONNECT_TIMEOUT", Duration::from_secs(2))?,
            request_timeout: env
                .duration("STRAIT_PROXY_REQUEST_TIMEOUT", Duration::from_secs(30))?,
            discovery_timeout: env
                .duration("STRAIT_PROXY_DISCOVERY_TIMEOUT", Duration::from_secs(2))?,
            shutdown_grace: env.duration(
                "STRAIT_PROXY_SHUTDOWN_GRACE_PERIOD",
                Duration::from_secs(10),
            )?,
            cores: env
                .parse::<usize>("STRAIT_PROXY_CORES")?
                .map(|n| {
                    NonZeroUsize::new(n).ok_or(EnvError::Invalid {
                        name: "STRAIT_PROXY_CORES",
                        value: n.to_string(),
                        reason: "the proxy needs at least one worker thread; unset it to use \
                             every CPU the process may use"
                            .into(),
                    })
                })
                .transpose()?,
        })
    }
}

/// Whether a `host:port` (or a bare host) is on loopback: 127.0.0.0/8, `::1` or `localhost`.
pub fn is_loopback(addr: &str) -> bool {
    let addr = addr.trim();
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return sa.ip().is_loopback();
    }
    if let Ok(ip) = addr.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.eq_ignore_ascii_case("localhost")
}

/// The init command's configuration.
pub fn init_from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<InitConfig, EnvError> {
    let env = Env(lookup);
    Ok(InitConfig {
        proxy_uid: env.parse("STRAIT_PROXY_UID")?.unwrap_or(2102),
        inbound_port: ports::PROXY_INBOUND,
        outbound_port: ports::PROXY_OUTBOUND,
        admin_port: ports::ADMIN,
        skip_inbound_ports: env.ports("STRAIT_PROXY_INBOUND_SKIP_PORTS")?,
        skip_outbound_ports: env.ports("STRAIT_PROXY_OUTBOUND_SKIP_PORTS")?,
    })
}

pub fn init_from_env() -> Result<InitConfig, EnvError> {
    init_from_lookup(|k| std::env::var(k).ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| m.get(k).cloned()
    }

    const IDS: [(&str, &str); 3] = [
        ("STRAIT_PROXY_IDENTITY_TRUST_ANCHORS", "/ca.crt"),
        ("STRAIT_PROXY_IDENTITY_CERT", "/tls.crt"),
        ("STRAIT_PROXY_IDENTITY_KEY", "/tls.key"),
    ];

    #[test]
    fn defaults() {
        let c = Config::from_lookup(lookup(&IDS)).unwrap();
        assert_eq!(c.outbound_listen.port(), 4140);
        assert_eq!(c.inbound_listen.port(), 4143);
        assert_eq!(c.admin_listen.port(), 4191);
        assert!(!c.inbound_require_identity);
        assert_eq!(c.outbound_target, None);
    }

    #[test]
    fn errors_name_the_variable() {
        let e = Config::from_lookup(lookup(&[])).unwrap_err();
        assert_eq!(
            e,
            EnvError::Missing {
                name: "STRAIT_PROXY_IDENTITY_TRUST_ANCHORS"
            }
        );
        let mut bad = IDS.to_vec();
        bad.push(("STRAIT_PROXY_OPAQUE_PORTS", "3306, 0"));
        let e = Config::from_lookup(lookup(&bad)).unwrap_err();
        assert!(
            e.to_string().starts_with("STRAIT_PROXY_OPAQUE_PORTS="),
            "{e}"
        );
        let mut bad = IDS.to_vec();
        bad.push(("STRAIT_PROXY_CONNECT_TIMEOUT", "soon"));
        let e = Config::from_lookup(lookup(&bad)).unwrap_err();
        assert!(
            e.to_string().contains("STRAIT_PROXY_CONNECT_TIMEOUT"),
            "{e}"
        );
        for (value, says) in [
            ("0", "at least one worker thread"),
            ("two", "invalid digit"),
        ] {
            let mut bad = IDS.to_vec();
            bad.push(("STRAIT_PROXY_CORES", value));
            let e = Config::from_lookup(lookup(&bad)).unwrap_err().to_string();
            assert!(
                e.starts_with("STRAIT_PROXY_CORES=") && e.contains(says),
                "{e}"
            );
        }
    }

    #[test]
    fn cores_size_the_runtime() {
        assert_eq!(Config::from_lookup(lookup(&IDS)).unwrap().cores, None);
        let mut one = IDS.to_vec();
        one.push(("STRAIT_PROXY_CORES", "1"));
        let cores = Config::from_lookup(lookup(&one)).unwrap().cores;
        assert_eq!(crate::runtime::threads(cores), 1);
        let rt = crate::runtime::build(cores).unwrap();
        assert_eq!(
            rt.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::CurrentThread
        );
        let two = NonZeroUsize::new(2);
        let rt = crate::runtime::build(two).unwrap();
        assert_eq!(
            rt.handle().runtime_flavor(),
            tokio::runtime::RuntimeFlavor::MultiThread
        );
        assert_eq!(rt.metrics().num_workers(), 2);
    }

    #[test]
    fn parses_values() {
        let mut v = IDS.to_vec();
        v.extend([
            ("STRAIT_PROXY_OPAQUE_PORTS", "3306,5432"),
            ("STRAIT_PROXY_OUTBOUND_TARGET", "127.0.0.1:8080"),
            ("STRAIT_PROXY_INBOUND_REQUIRE_IDENTITY", "true"),
            ("STRAIT_PROXY_DETECT_TIMEOUT", "250ms"),
        ]);
        let c = Config::from_lookup(lookup(&v)).unwrap();
        assert_eq!(c.opaque_ports, vec![3306, 5432]);
        assert_eq!(c.outbound_target, Some("127.0.0.1:8080".parse().unwrap()));
        assert!(c.inbound_require_identity);
        assert_eq!(c.detect_timeout, Duration::from_millis(250));
        let mut v = vec![("STRAIT_PROXY_IDENTITY_TRUST_ANCHORS", "/ca.crt")];
        v.push(("STRAIT_PROXY_IDENTITY_SVC_ADDR", "10.0.0.1:8080"));
        v.push((
            "STRAIT_PROXY_IDENTITY_SVC_NAME",
            "strait-identity.strait.serviceaccount.identity.strait.cluster.local",
        ));
        let e = Config::from_lookup(lookup(&v)).unwrap_err();
        assert_eq!(
            e,
            EnvError::Missing {
                name: "STRAIT_PROXY_IDENTITY_LOCAL_NAME"
            }
        );
        v.push((
            "STRAIT_PROXY_IDENTITY_LOCAL_NAME",
            "web.shop.serviceaccount.identity.strait.cluster.local",
        ));
        v.push(("STRAIT_PROXY_IDENTITY_TOKEN_FILE", "/token"));
        let c = Config::from_lookup(lookup(&v)).unwrap();
        assert!(matches!(c.identity, IdentitySource::Service(_)));
        assert_eq!(c.trust_anchors, TrustAnchorsSource::File("/ca.crt".into()));
        // The injector hands the anchors over in the environment; they win over a file.
        v.push((
            "STRAIT_PROXY_IDENTITY_TRUST_ANCHORS_PEM",
            "-----BEGIN CERTIFICATE-----",
        ));
        let c = Config::from_lookup(lookup(&v)).unwrap();
        assert_eq!(
            c.trust_anchors,
            TrustAnchorsSource::Pem("-----BEGIN CERTIFICATE-----".into())
        );
        let i = init_from_lookup(lookup(&[("STRAIT_PROXY_OUTBOUND_SKIP_PORTS", "443")])).unwrap();
        assert_eq!((i.proxy_uid, i.skip_outbound_ports), (2102, vec![443]));
    }

    const ID_SVC: &str = "strait-identity.strait.serviceaccount.identity.strait.cluster.local";
    const DST_SVC: &str = "strait-destination.strait.serviceaccount.identity.strait.cluster.local";

    fn certified(addr: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![
            ("STRAIT_PROXY_IDENTITY_TRUST_ANCHORS", "/ca.crt"),
            ("STRAIT_PROXY_IDENTITY_SVC_ADDR", addr),
            (
                "STRAIT_PROXY_IDENTITY_LOCAL_NAME",
                "web.shop.serviceaccount.identity.strait.cluster.local",
            ),
            ("STRAIT_PROXY_IDENTITY_TOKEN_FILE", "/token"),
        ]
    }

    #[test]
    fn off_loopback_the_identity_service_must_name_its_identity() {
        let e = Config::from_lookup(lookup(&certified("10.0.0.1:8080"))).unwrap_err();
        assert_eq!(
            e,
            EnvError::ControlPlaneIdentity {
                name: "STRAIT_PROXY_IDENTITY_SVC_NAME",
                addr_name: "STRAIT_PROXY_IDENTITY_SVC_ADDR",
                addr: "10.0.0.1:8080".into(),
            }
        );
        assert!(
            e.to_string()
                .starts_with("STRAIT_PROXY_IDENTITY_SVC_NAME is required"),
            "{e}"
        );
        let e =
            Config::from_lookup(lookup(&certified("strait-identity.strait.svc:8080"))).unwrap_err();
        assert!(
            e.to_string().contains("STRAIT_PROXY_IDENTITY_SVC_NAME"),
            "{e}"
        );
        let mut v = certified("10.0.0.1:8080");
        v.push(("STRAIT_PROXY_IDENTITY_SVC_NAME", ID_SVC));
        let c = Config::from_lookup(lookup(&v)).unwrap();
        let IdentitySource::Service(IdentityService { svc_name, .. }) = c.identity else {
            panic!("not the identity service")
        };
        assert_eq!(svc_name, Some(ID_SVC.parse().unwrap()));
        let mut v = certified("10.0.0.1:8080");
        v.push(("STRAIT_PROXY_IDENTITY_SVC_NAME", "not an identity"));
        let e = Config::from_lookup(lookup(&v)).unwrap_err();
        assert!(
            e.to_string().starts_with("STRAIT_PROXY_IDENTITY_SVC_NAME="),
            "{e}"
        );
    }

    #[test]
    fn off_loopback_destination_must_name_its_identity() {
        let mut v = IDS.to_vec();
        v.push(("STRAIT_PROXY_DESTINATION_ADDR", "198.18.0.1:8086"));
        let e = Config::from_lookup(lookup(&v)).unwrap_err();
        assert_eq!(
            e,
            EnvError::ControlPlaneIdentity {
                name: "STRAIT_PROXY_DESTINATION_SVC_NAME",
                addr_name: "STRAIT_PROXY_DESTINATION_ADDR",
                addr: "198.18.0.1:8086".into(),
            }
        );
        assert!(
            e.to_string()
                .starts_with("STRAIT_PROXY_DESTINATION_SVC_NAME is required"),
            "{e}"
        );
        v.push(("STRAIT_PROXY_DESTINATION_SVC_NAME", DST_SVC));
        let c = Config::from_lookup(lookup(&v)).unwrap();
        assert_eq!(c.destination_svc_name, Some(DST_SVC.parse().unwrap()));
    }

    #[test]
    fn plaintext_only_on_loopback() {
        for addr in [
            "127.0.0.1:8080",
            "127.3.2.1:8080",
            "[::1]:8080",
            "localhost:8080",
        ] {
            let c = Config::from_lookup(lookup(&certified(addr))).unwrap();
            let IdentitySource::Service(IdentityService { svc_name, .. }) = c.identity else {
                panic!("not the identity service")
            };
            assert_eq!(svc_name, None, "{addr}");
            let mut v = IDS.to_vec();
            v.push(("STRAIT_PROXY_DESTINATION_ADDR", addr));
            let c = Config::from_lookup(lookup(&v)).unwrap();
            assert_eq!(c.destination_svc_name, None, "{addr}");
        }
        for addr in [
            "10.0.0.1:8080",
            "[fd00::1]:8080",
            "0.0.0.0:8080",
            "localhost.evil:8080",
        ] {
            assert!(!is_loopback(addr), "{addr}");
        }
    }

    #[test]
    fn policy_follows_destination_unless_told_otherwise() {
        let dst = [
            (
                "STRAIT_PROXY_DESTINATION_ADDR",
                "strait-dst.strait.svc.cluster.local:8086",
            ),
            (
                "STRAIT_PROXY_DESTINATION_SVC_NAME",
                "strait-destination.strait.serviceaccount.identity.strait.cluster.local",
            ),
        ];
        let mut v = IDS.to_vec();
        v.extend(dst);
        let c = Config::from_lookup(lookup(&v)).unwrap();
        assert_eq!(c.policy, None, "no workload: no policy");
        assert_eq!(c.inbound_default_policy, DefaultPolicy::AllUnauthenticated);
        v.push(("STRAIT_PROXY_POLICY_WORKLOAD", "shop:web-5d8f-x2"));
        let p = Config::from_lookup(lookup(&v)).unwrap().policy.unwrap();
        assert_eq!(p.addr, dst[0].1);
        assert_eq!(p.svc_name.unwrap().to_string(), dst[1].1);
        assert_eq!(p.workload, "shop:web-5d8f-x2");

        let mut other = v.clone();
        other.push((
            "STRAIT_PROXY_POLICY_SVC_ADDR",
            "strait-policy.strait.svc:8090",
        ));
        let e = Config::from_lookup(lookup(&other)).unwrap_err();
        assert!(
            e.to_string().contains("STRAIT_PROXY_POLICY_SVC_NAME"),
            "{e}"
        );

        for (name, value) in [
            ("STRAIT_PROXY_POLICY_WORKLOAD", "web-5d8f-x2"),
            ("STRAIT_PROXY_INBOUND_DEFAULT_POLICY", "allow"),
            (
                "STRAIT_PROXY_INBOUND_CLUSTER_NETWORKS",
                "10.0.0.0/8,not-a-net",
            ),
        ] {
            let mut bad: Vec<_> = v.iter().filter(|(k, _)| *k != name).copied().collect();
            bad.push((name, value));
            let e = Config::from_lookup(lookup(&bad)).unwrap_err();
            assert!(e.to_string().contains(name), "{e}");
        }
    }
}
