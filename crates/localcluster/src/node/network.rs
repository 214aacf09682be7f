//! A node's network: a namespace joined to the root namespace by a veth, with routes for its
//! pods and (node 0) the cluster's LoadBalancer addresses.
//!
//! ```text
//!  root ns                                   node ns strait-s<i>-node<k>
//!  sv<i>xn<k>  198.18.(64i).1/32  ◄──veth──►  eth0 198.18.(64i+48).(2+k)/32
//!    route 198.18.(64i+48).(2+k)/32 dev         route 198.18.(64i).1 dev eth0 scope link
//!    route 198.18.(64i+32+k).0/24 via node      route 198.18.0.0/15 via 198.18.(64i).1
//!    route 198.18.(64i+60).0/24 via node 0      cni0 198.18.(64i+32+k).1/24 ◄── pods
//! ```
//!
//! The node has no default route: its pods reach the test range and nothing else. The root
//! namespace keeps its blackhole for 198.18.0.0/15; these routes are more specific. Forwarding
//! is on for the node's veth and inside the node's namespace, never machine-wide.

use crate::error::Error;
use crate::net::{Slot, TEST_RANGE, kill_netns_processes, run, write_sysctl};
use std::net::Ipv4Addr;

/// Removed on drop: the namespace (which takes its end of the veth and the routes along).
#[derive(Debug)]
pub(crate) struct NodeNetwork {
    pub netns: String,
    pub host_veth: String,
    pub addr: Ipv4Addr,
}

impl NodeNetwork {
    pub fn create(slot: &Slot, k: u8, load_balancers: bool) -> Result<Self, Error> {
        let netns = slot.node_netns(k);
        let host_veth = slot.node_veth(k);
        let addr = slot.node_addr(k);
        run("ip", &["netns", "add", &netns])?;
        let net = Self {
            netns,
            host_veth,
            addr,
        };
        let (ns, veth) = (net.netns.as_str(), net.host_veth.as_str());
        let host = slot.host_addr().to_string();
        let node = addr.to_string();
        run(
            "ip",
            &[
                "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ],
        )?;
        run("ip", &["addr", "add", &format!("{host}/32"), "dev", veth])?;
        write_sysctl(&format!("net/ipv4/conf/{veth}/forwarding"), "1")?;
        run("ip", &["link", "set", veth, "up"])?;
        run(
            "ip",
            &[
                "route",
                "add",
                &format!("{node}/32"),
                "dev",
                veth,
                "src",
                &host,
            ],
        )?;
        run(
            "ip",
            &[
                "route",
                "add",
                &slot.node_pod_cidr(k),
                "via",
                &node,
                "dev",
                veth,
            ],
        )?;
        if load_balancers {
            run(
                "ip",
                &[
                    "route",
                    "add",
                    &slot.load_balancer_cidr(),
                    "via",
                    &node,
                    "dev",
                    veth,
                ],
            )?;
        }
        run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        run(
            "ip",
            &[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{node}/32"),
                "dev",
                "eth0",
            ],
        )?;
        run("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
        run(
            "ip",
            &[
                "-n", ns, "route", "add", &host, "dev", "eth0", "scope", "link",
            ],
        )?;
        run(
            "ip",
            &[
                "-n", ns, "route", "add", TEST_RANGE, "via", &host, "dev", "eth0", "src", &node,
            ],
        )?;
        // Inside the node: it routes for its pods, and bridged pod traffic passes iptables
        // (kube-proxy's Service rules). Both are per namespace.
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.bridge.bridge-nf-call-iptables", "1"),
            ("net.ipv4.conf.all.route_localnet", "1"),
        ] {
            run(
                "ip",
                &[
                    "netns",
                    "exec",
                    ns,
                    "sysctl",
                    "-q",
                    "-w",
                    &format!("{key}={value}"),
                ],
            )
            .or_else(|e| {
                if key.starts_with("net.bridge") {
                    // Only present once a bridge exists on kernels that load br_netfilter on
                    // demand; kube-proxy sets it again when it starts.
                    tracing::debug!(%e, "bridge-nf-call-iptables not settable yet");
                    Ok(())
                } else {
                    Err(e)
                }
            })?;
        }
        Ok(net)
    }
}

impl Drop for NodeNetwork {
    fn drop(&mut self) {
        kill_netns_processes(&self.netns);
        let _ = run("ip", &["netns", "delete", &self.netns]);
        let _ = run("ip", &["link", "delete", &self.host_veth]);
    }
}
