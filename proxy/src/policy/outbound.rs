//! Outbound policy: what `OutboundPolicies/Watch` says about a target, reduced to the one
//! decision this proxy takes from it: how to read the connection's bytes. Where to send them
//! stays with `Destination.Get` of the same Service (the policy's backends name it).

use super::Protocol;
use linkerd2_proxy_api::outbound as pb;
use std::time::Duration;

/// What the policy service says about an outbound target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// No answer yet.
    Pending,
    /// Not a Service (or policy is off): detect, and send to the original destination or
    /// what discovery says.
    NotAService,
    /// The policy service did not answer: detect, as without policy.
    Unavailable,
    Service(Protocol),
}

/// The detection timeout when a policy gives none.
pub const DEFAULT_DETECT: Duration = Duration::from_secs(10);

/// Translates an `OutboundPolicy`.
pub fn from_pb(p: &pb::OutboundPolicy) -> Outbound {
    use pb::proxy_protocol::Kind;
    let protocol = match p.protocol.as_ref().and_then(|p| p.kind.as_ref()) {
        Some(Kind::Detect(d)) => Protocol::Detect(
            d.timeout
                .and_then(|t| Duration::try_from(t).ok())
                .unwrap_or(DEFAULT_DETECT),
        ),
        Some(Kind::Opaque(_) | Kind::Tls(_)) => Protocol::Opaque,
        Some(Kind::Http1(_)) => Protocol::Http1,
        Some(Kind::Http2(_) | Kind::Grpc(_)) => Protocol::Http2,
        None => Protocol::Detect(DEFAULT_DETECT),
    };
    Outbound::Service(protocol)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use pb::proxy_protocol::{Detect, Kind, Opaque};

    fn policy(kind: Kind) -> pb::OutboundPolicy {
        pb::OutboundPolicy {
            protocol: Some(pb::ProxyProtocol { kind: Some(kind) }),
            metadata: None,
        }
    }

    #[test]
    fn opaque_and_detect_with_its_timeout() {
        assert_eq!(
            from_pb(&policy(Kind::Opaque(Opaque::default()))),
            Outbound::Service(Protocol::Opaque)
        );
        let detect = Detect {
            timeout: prost_types::Duration::try_from(Duration::from_secs(4)).ok(),
            ..Default::default()
        };
        assert_eq!(
            from_pb(&policy(Kind::Detect(detect))),
            Outbound::Service(Protocol::Detect(Duration::from_secs(4)))
        );
        assert_eq!(
            from_pb(&pb::OutboundPolicy::default()),
            Outbound::Service(Protocol::Detect(DEFAULT_DETECT))
        );
    }
}
