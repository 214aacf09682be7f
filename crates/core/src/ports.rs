//! Well-known ports (see the design's port table).

/// The proxy's outbound listener, reached through iptables `REDIRECT`.
pub const PROXY_OUTBOUND: u16 = 4140;
/// The proxy's inbound listener; on the gateway, mTLS is required here.
pub const PROXY_INBOUND: u16 = 4143;
/// The multicluster gateway's port (the gateway is the proxy in gateway mode).
pub const GATEWAY: u16 = PROXY_INBOUND;
/// Admin: `/live`, `/ready`, `/metrics`.
pub const ADMIN: u16 = 4191;
/// The control plane's identity gRPC service.
pub const IDENTITY_GRPC: u16 = 8080;
/// The control plane's destination gRPC service.
pub const DESTINATION_GRPC: u16 = 8086;
/// The control plane's policy gRPC service (linkerd2-proxy-api's `InboundServerPolicies` and
/// `OutboundPolicies`).
pub const POLICY_GRPC: u16 = 8090;
/// The mirror controller's `/metrics` and `/ready`.
pub const MIRROR_ADMIN: u16 = 9999;
/// The control plane's `/metrics`.
pub const CONTROL_PLANE_ADMIN: u16 = 9990;
/// The proxy injector (admission webhook, HTTPS).
pub const INJECTOR: u16 = 8443;
