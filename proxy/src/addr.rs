//! Address newtypes, so a client's address is never passed where a target was meant.

use std::fmt;
use std::net::SocketAddr;

/// The address the application meant to reach: `SO_ORIGINAL_DST` of a redirected
/// connection, or the configured target in explicit mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrigDstAddr(pub SocketAddr);

/// The remote address of a connection we accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub SocketAddr);

/// The address of an endpoint we connect to (a pod, a gateway, or the original address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointAddr(pub SocketAddr);

macro_rules! display {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    )*};
}
display!(OrigDstAddr, ClientAddr, EndpointAddr);
