//! `strait-proxy init`: the pod's iptables rules, as Linkerd's init container writes them.
//!
//! ```text
//!  nat PREROUTING ─► STRAIT_PROXY_INBOUND:  skip ports ─► RETURN; tcp ─► REDIRECT :4143
//!  nat OUTPUT     ─► STRAIT_PROXY_OUTPUT:   uid = proxy ─► RETURN; -o lo ─► RETURN;
//!                                           skip ports ─► RETURN; tcp ─► REDIRECT :4140
//! ```
//!
//! Idempotent: the chains are created if missing and flushed, then refilled, and the jumps
//! are added only when absent, so re-running leaves one set of rules. [`remove`] undoes it.

use std::process::Command;

pub const INBOUND_CHAIN: &str = "STRAIT_PROXY_INBOUND";
pub const OUTPUT_CHAIN: &str = "STRAIT_PROXY_OUTPUT";

/// What the rules redirect and what they leave alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitConfig {
    /// The proxy's uid: its own outbound connections are never redirected.
    pub proxy_uid: u32,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub admin_port: u16,
    pub skip_inbound_ports: Vec<u16>,
    pub skip_outbound_ports: Vec<u16>,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("run iptables {args:?}")]
    Spawn {
        args: Vec<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("iptables {args:?} failed: {stderr}")]
    Failed { args: Vec<String>, stderr: String },
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// The rules of each chain, as `iptables -t nat` arguments (no I/O).
pub fn plan(cfg: &InitConfig) -> Vec<Vec<String>> {
    let mut rules = Vec::new();
    let mut inbound_skip = vec![cfg.admin_port, cfg.inbound_port];
    inbound_skip.extend(&cfg.skip_inbound_ports);
    for p in inbound_skip {
        let p = p.to_string();
        rules.push(s(&[
            "-A",
            INBOUND_CHAIN,
            "-p",
            "tcp",
            "--dport",
            &p,
            "-j",
            "RETURN",
        ]));
    }
    let to = cfg.inbound_port.to_string();
    rules.push(s(&[
        "-A",
        INBOUND_CHAIN,
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        &to,
    ]));

    let uid = cfg.proxy_uid.to_string();
    rules.push(s(&[
        "-A",
        OUTPUT_CHAIN,
        "-m",
        "owner",
        "--uid-owner",
        &uid,
        "-j",
        "RETURN",
    ]));
    rules.push(s(&["-A", OUTPUT_CHAIN, "-o", "lo", "-j", "RETURN"]));
    rules.push(s(&[
        "-A",
        OUTPUT_CHAIN,
        "-d",
        "127.0.0.0/8",
        "-j",
        "RETURN",
    ]));
    for p in &cfg.skip_outbound_ports {
        let p = p.to_string();
        rules.push(s(&[
            "-A",
            OUTPUT_CHAIN,
            "-p",
            "tcp",
            "--dport",
            &p,
            "-j",
            "RETURN",
        ]));
    }
    let to = cfg.outbound_port.to_string();
    rules.push(s(&[
        "-A",
        OUTPUT_CHAIN,
        "-p",
        "tcp",
        "-j",
        "REDIRECT",
        "--to-ports",
        &to,
    ]));
    rules
}

fn jumps() -> [(&'static str, &'static str); 2] {
    [("PREROUTING", INBOUND_CHAIN), ("OUTPUT", OUTPUT_CHAIN)]
}

fn iptables(args: &[String]) -> Result<(), InitError> {
    let mut full = s(&["-w", "-t", "nat"]);
    full.extend_from_slice(args);
    let out = Command::new("iptables")
        .args(&full)
        .output()
        .map_err(|source| InitError::Spawn {
            args: full.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(InitError::Failed {
            args: full,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// Installs (or refreshes) the rules in the current network namespace.
pub fn apply(cfg: &InitConfig) -> Result<(), InitError> {
    for (_, chain) in jumps() {
        // Creating an existing chain fails; flushing it next makes the result the same.
        let _ = iptables(&s(&["-N", chain]));
        iptables(&s(&["-F", chain]))?;
    }
    for rule in plan(cfg) {
        iptables(&rule)?;
    }
    for (parent, chain) in jumps() {
        let jump = |op: &str| s(&[op, parent, "-p", "tcp", "-j", chain]);
        if iptables(&jump("-C")).is_err() {
            iptables(&jump("-A"))?;
        }
    }
    tracing::info!(?cfg, "iptables rules installed");
    Ok(())
}

/// Removes the jumps and the chains; succeeds when they are already gone.
pub fn remove() -> Result<(), InitError> {
    for (parent, chain) in jumps() {
        while iptables(&s(&["-D", parent, "-p", "tcp", "-j", chain])).is_ok() {}
        let _ = iptables(&s(&["-F", chain]));
        let _ = iptables(&s(&["-X", chain]));
    }
    tracing::info!("iptables rules removed");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_excludes_proxy_admin_loopback_and_skip_ports() {
        let cfg = InitConfig {
            proxy_uid: 2102,
            inbound_port: 4143,
            outbound_port: 4140,
            admin_port: 4191,
            skip_inbound_ports: vec![22],
            skip_outbound_ports: vec![443],
        };
        let text: Vec<String> = plan(&cfg).iter().map(|r| r.join(" ")).collect();
        let want = [
            "-A STRAIT_PROXY_INBOUND -p tcp --dport 4191 -j RETURN",
            "-A STRAIT_PROXY_INBOUND -p tcp --dport 22 -j RETURN",
            "-A STRAIT_PROXY_INBOUND -p tcp -j REDIRECT --to-ports 4143",
            "-A STRAIT_PROXY_OUTPUT -m owner --uid-owner 2102 -j RETURN",
            "-A STRAIT_PROXY_OUTPUT -o lo -j RETURN",
            "-A STRAIT_PROXY_OUTPUT -p tcp --dport 443 -j RETURN",
            "-A STRAIT_PROXY_OUTPUT -p tcp -j REDIRECT --to-ports 4140",
        ];
        for w in want {
            assert!(text.iter().any(|t| t == w), "missing {w}: {text:#?}");
        }
        // The redirects come last in each chain.
        let last_in = text
            .iter()
            .rposition(|t| t.contains("INBOUND"))
            .unwrap_or(0);
        assert!(text[last_in].contains("REDIRECT"));
        assert!(
            text.last()
                .is_some_and(|t| t.contains("REDIRECT --to-ports 4140"))
        );
    }
}
