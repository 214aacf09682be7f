//! `SO_ORIGINAL_DST`: where a connection redirected by iptables was headed.
//!
//! Read through nix's safe `sockopt::OriginalDst` wrapper; no unsafe code here.

use crate::addr::OrigDstAddr;
use nix::sys::socket::{getsockopt, sockopt};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tokio::net::TcpStream;

/// The original destination of `tcp` (IPv4 only, as the iptables rules are).
pub fn original_dst(tcp: &TcpStream) -> std::io::Result<OrigDstAddr> {
    let sin = getsockopt(tcp, sockopt::OriginalDst).map_err(std::io::Error::from)?;
    let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
    let port = u16::from_be(sin.sin_port);
    Ok(OrigDstAddr(SocketAddr::V4(SocketAddrV4::new(ip, port))))
}
