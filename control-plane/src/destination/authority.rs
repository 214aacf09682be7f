//! Parsing the `path` of a `GetDestination`: which Service or address a proxy asks about.
//!
//! Accepted forms (the port defaults to 80, as in Linkerd):
//!
//! ```text
//! <svc>.<ns>.svc.<cluster-domain>[:port]   fully qualified, what proxies send
//! <host>.<svc>.<ns>.svc.<cluster-domain>[:port]
//!                                          one pod of a headless Service, by its hostname
//!                                          (a StatefulSet's pod; only fully qualified)
//! <svc>.<ns>.svc[:port]                    short forms, for people and tools
//! <svc>.<ns>[:port]
//! <ip>[:port], [<ipv6>][:port]             a Service's cluster IP or a pod address
//! ```
//!
//! Anything else is [`AuthorityError`], which the server answers with `InvalidArgument`: the
//! status the proxy reads as "not discoverable here, forward to the original destination".

use std::net::IpAddr;

/// A Service, named by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// `<name>.<namespace>.svc.<cluster-domain>`
    pub fn fqdn(&self, cluster_domain: &str) -> String {
        strait_core::labels::service_fqdn(&self.name, &self.namespace, cluster_domain)
    }
}

impl std::fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// What a lookup names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Service by name, and the Service port asked for; with `hostname`, only its
    /// endpoint of that hostname.
    Service {
        service: ServiceKey,
        port: u16,
        hostname: Option<String>,
    },
    /// An address: a cluster IP or a pod IP, and the port.
    Addr { ip: IpAddr, port: u16 },
}

/// Why a path names nothing this server can discover.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("authority is empty")]
    Empty,
    #[error("port {0:?} is not a number in 1-65535")]
    BadPort(String),
    #[error("{host:?} is not a Service name in cluster domain {cluster_domain:?}")]
    NotAService {
        host: String,
        cluster_domain: String,
    },
}

/// Parses a `GetDestination.path` against the cluster domain.
pub fn parse(path: &str, cluster_domain: &str) -> Result<Target, AuthorityError> {
    let path = path.trim();
    if path.is_empty() {
        return Err(AuthorityError::Empty);
    }
    let (host, port) = split_host_port(path)?;
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Target::Addr { ip, port });
    }
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let not_a_service = || AuthorityError::NotAService {
        host: host.clone(),
        cluster_domain: cluster_domain.to_owned(),
    };
    let labels: Vec<&str> = host.split('.').collect();
    let domain: Vec<&str> = cluster_domain.trim_end_matches('.').split('.').collect();
    let (host, svc, ns) = match labels.as_slice() {
        [svc, ns] => (None, *svc, *ns),
        [svc, ns, "svc"] => (None, *svc, *ns),
        [svc, ns, "svc", rest @ ..] if rest == domain.as_slice() => (None, *svc, *ns),
        [host, svc, ns, "svc", rest @ ..] if rest == domain.as_slice() => (Some(*host), *svc, *ns),
        _ => return Err(not_a_service()),
    };
    let is_label = strait_core::identity::is_dns_label;
    if !is_label(svc) || !is_label(ns) || host.is_some_and(|h| !is_label(h)) {
        return Err(not_a_service());
    }
    Ok(Target::Service {
        service: ServiceKey::new(ns, svc),
        port,
        hostname: host.map(str::to_owned),
    })
}

fn split_host_port(path: &str) -> Result<(&str, u16), AuthorityError> {
    // `[v6]:port` or `[v6]`
    if let Some(rest) = path.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| AuthorityError::BadPort(path.to_owned()))?;
        return match after.strip_prefix(':') {
            Some(p) => Ok((host, parse_port(p)?)),
            None if after.is_empty() => Ok((host, 80)),
            None => Err(AuthorityError::BadPort(after.to_owned())),
        };
    }
    // A bare IPv6 address has several colons and no port.
    if path.matches(':').count() > 1 {
        return Ok((path, 80));
    }
    match path.split_once(':') {
        Some((host, p)) => Ok((host, parse_port(p)?)),
        None => Ok((path, 80)),
    }
}

fn parse_port(p: &str) -> Result<u16, AuthorityError> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(AuthorityError::BadPort(p.to_owned())),
        Ok(port) => Ok(port),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, port: u16) -> Result<Target, AuthorityError> {
        Ok(Target::Service {
            service: ServiceKey::new(ns, name),
            port,
            hostname: None,
        })
    }

    #[test]
    fn service_forms() {
        let d = "cluster.local";
        assert_eq!(
            parse("web.shop.svc.cluster.local:8080", d),
            svc("shop", "web", 8080)
        );
        assert_eq!(
            parse("web.shop.svc.cluster.local.:81", d),
            svc("shop", "web", 81)
        );
        assert_eq!(
            parse("web.shop.svc.cluster.local", d),
            svc("shop", "web", 80)
        );
        assert_eq!(parse("web.shop.svc:9", d), svc("shop", "web", 9));
        assert_eq!(parse("web.shop:9", d), svc("shop", "web", 9));
        assert_eq!(parse("Web.Shop:9", d), svc("shop", "web", 9));
        assert_eq!(
            parse("web.shop.svc.east.example:9", "east.example"),
            svc("shop", "web", 9)
        );
    }

    #[test]
    fn a_pod_of_a_headless_service_by_hostname() {
        assert_eq!(
            parse("Web-0.web.shop.svc.cluster.local:5432", "cluster.local"),
            Ok(Target::Service {
                service: ServiceKey::new("shop", "web"),
                port: 5432,
                hostname: Some("web-0".into()),
            })
        );
    }

    #[test]
    fn addresses() {
        let d = "cluster.local";
        assert_eq!(
            parse("198.18.0.5:80", d),
            Ok(Target::Addr {
                ip: "198.18.0.5".parse().unwrap(),
                port: 80
            })
        );
        assert_eq!(
            parse("[fd00::1]:8080", d),
            Ok(Target::Addr {
                ip: "fd00::1".parse().unwrap(),
                port: 8080
            })
        );
        assert_eq!(
            parse("fd00::1", d),
            Ok(Target::Addr {
                ip: "fd00::1".parse().unwrap(),
                port: 80
            })
        );
    }

    #[test]
    fn rejects() {
        let d = "cluster.local";
        assert!(matches!(parse("", d), Err(AuthorityError::Empty)));
        assert!(matches!(
            parse("web.shop:0", d),
            Err(AuthorityError::BadPort(_))
        ));
        assert!(matches!(
            parse("web.shop:x", d),
            Err(AuthorityError::BadPort(_))
        ));
        assert!(matches!(
            parse("web.shop:70000", d),
            Err(AuthorityError::BadPort(_))
        ));
        for bad in [
            "www.example.com:80",
            "web:80",
            "a.b.c.d:80",
            "web.shop.svc.other.domain:80",
            "web.shop.svc.cluster:80",
            "web-0.web.shop.svc:80",
            "a_b.web.shop.svc.cluster.local:80",
            "x.web-0.web.shop.svc.cluster.local:80",
            "-x.shop:80",
        ] {
            assert!(
                matches!(parse(bad, d), Err(AuthorityError::NotAService { .. })),
                "{bad}"
            );
        }
    }
}
