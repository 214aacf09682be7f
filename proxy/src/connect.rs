//! The connector: how the proxy (and the gateway) reaches an endpoint.
//!
//! ```text
//!  Endpoint { addr, identity?, transport_header? }
//!    └─ TCP connect (bounded by the connect timeout, TCP_NODELAY)
//!        └─ identity? ── mTLS, SNI = identity, only that identity's certificate accepted
//!             └─ transport_header? ── ALPN transport.l5d.io/v1 must be negotiated,
//!                                      then the header is written before any app byte
//! ```
//!
//! Streams are opened by a [`Dial`]: TCP ([`TcpDial`]) unless a test hands in pipes.
//!
//! A transport header is only ever sent inside mTLS: asking for one without an identity is
//! an error, not a plaintext header.

use crate::addr::EndpointAddr;
use crate::io::{BoxIo, Io};
use futures::future::BoxFuture;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use strait_core::identity::Identity;
use strait_core::transport_header::{self, TransportHeader};
use strait_tls::rustls::ClientConfig;
use strait_tls::{CredentialsReceiver, TlsError, TrustAnchors};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Where to connect and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: EndpointAddr,
    /// The identity the endpoint must prove; `None` connects in plaintext.
    pub identity: Option<Identity>,
    /// A header to send right after the handshake (requires `identity`).
    pub transport_header: Option<TransportHeader>,
}

impl Endpoint {
    /// A plaintext endpoint.
    pub fn plain(addr: EndpointAddr) -> Self {
        Self {
            addr,
            identity: None,
            transport_header: None,
        }
    }
}

/// Opens byte streams to addresses: TCP in production, in-memory pipes in tests.
pub trait Dial: Send + Sync + 'static {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxIo>>;
}

/// Dials TCP with `TCP_NODELAY`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDial;

impl Dial for TcpDial {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'static, io::Result<BoxIo>> {
        Box::pin(async move {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            Ok(Box::new(tcp) as BoxIo)
        })
    }
}

/// Connects to endpoints; cheap to clone.
#[derive(Clone)]
pub struct Connector {
    dial: Arc<dyn Dial>,
    mtls: Arc<ClientConfig>,
    transport: Arc<ClientConfig>,
    timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Why a connection could not be made; `metric_label` gives a bounded label.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} timed out after {timeout:?}")]
    Timeout {
        addr: EndpointAddr,
        timeout: Duration,
    },
    #[error("connect to {addr}")]
    Tcp {
        addr: EndpointAddr,
        #[source]
        source: io::Error,
    },
    #[error("TLS handshake with {addr} as {identity}")]
    Tls {
        addr: EndpointAddr,
        identity: Identity,
        #[source]
        source: TlsError,
    },
    #[error("{addr} did not negotiate ALPN transport.l5d.io/v1")]
    NoTransportAlpn { addr: EndpointAddr },
    #[error("a transport header to {addr} needs an identity to verify")]
    HeaderWithoutIdentity { addr: EndpointAddr },
    #[error("write transport header to {addr}")]
    WriteHeader {
        addr: EndpointAddr,
        #[source]
        source: io::Error,
    },
}

impl ConnectError {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "connect_timeout",
            Self::Tcp { .. } => "connect_refused",
            Self::Tls { .. } => "tls_handshake",
            Self::NoTransportAlpn { .. } => "no_transport_alpn",
            Self::HeaderWithoutIdentity { .. } => "header_without_identity",
            Self::WriteHeader { .. } => "write_header",
        }
    }

    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. })
    }
}

impl Connector {
    /// A connector presenting the newest certificate from `creds` and trusting `anchors`.
    pub fn new(
        anchors: &TrustAnchors,
        creds: CredentialsReceiver,
        timeout: Duration,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            dial: Arc::new(TcpDial),
            mtls: strait_tls::client_config(anchors, creds.clone(), &[])?,
            transport: strait_tls::client_config(anchors, creds, &[transport_header::ALPN])?,
            timeout,
        })
    }

    /// The same connector, opening its streams with `dial` (tests: in-memory pipes).
    pub fn with_dial(mut self, dial: Arc<dyn Dial>) -> Self {
        self.dial = dial;
        self
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Connects to `ep`; the whole exchange (TCP, TLS, header) is bounded by the timeout.
    pub async fn connect(&self, ep: &Endpoint) -> Result<Connection, ConnectError> {
        let addr = ep.addr;
        match tokio::time::timeout(self.timeout, self.connect_inner(ep)).await {
            Ok(res) => res,
            Err(_) => Err(ConnectError::Timeout {
                addr,
                timeout: self.timeout,
            }),
        }
    }

    async fn connect_inner(&self, ep: &Endpoint) -> Result<Connection, ConnectError> {
        let addr = ep.addr;
        let tcp = self
            .dial
            .dial(addr.0)
            .await
            .map_err(|source| ConnectError::Tcp { addr, source })?;
        let Some(identity) = &ep.identity else {
            if ep.transport_header.is_some() {
                return Err(ConnectError::HeaderWithoutIdentity { addr });
            }
            return Ok(Connection {
                io: tcp,
                server_id: None,
                h2: false,
            });
        };
        let config = if ep.transport_header.is_some() {
            self.transport.clone()
        } else {
            self.mtls.clone()
        };
        let mut tls = strait_tls::connect(config, identity, tcp)
            .await
            .map_err(|source| ConnectError::Tls {
                addr,
                identity: identity.clone(),
                source,
            })?;
        if let Some(header) = &ep.transport_header {
            if tls.get_ref().1.alpn_protocol() != Some(transport_header::ALPN) {
                return Err(ConnectError::NoTransportAlpn { addr });
            }
            tls.write_all(&header.encode())
                .await
                .map_err(|source| ConnectError::WriteHeader { addr, source })?;
        }
        Ok(Connection {
            io: Box::new(tls),
            server_id: Some(identity.clone()),
            h2: false,
        })
    }
}

/// Connects to `ep` with `connector` (see [`Connector::connect`]).
pub async fn connect(connector: &Connector, ep: &Endpoint) -> Result<Connection, ConnectError> {
    connector.connect(ep).await
}

/// An established connection to an endpoint.
pub struct Connection {
    io: BoxIo,
    server_id: Option<Identity>,
    h2: bool,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("server_id", &self.server_id)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// The identity the endpoint proved, when the connection is mTLS.
    pub fn server_id(&self) -> Option<&Identity> {
        self.server_id.as_ref()
    }

    pub fn is_tls(&self) -> bool {
        self.server_id.is_some()
    }

    /// Marks the connection as carrying HTTP/2 (for hyper's pool).
    pub fn with_h2(mut self, h2: bool) -> Self {
        self.h2 = h2;
        self
    }

    pub fn into_io(self) -> BoxIo {
        self.io
    }
}

impl AsyncRead for Connection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Connection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl hyper_util::client::legacy::connect::Connection for Connection {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        let c = hyper_util::client::legacy::connect::Connected::new();
        if self.h2 { c.negotiated_h2() } else { c }
    }
}

// Keeps `Io` in the public signature honest: a Connection is itself an `Io`.
const _: fn() = || {
    fn is_io<T: Io>() {}
    is_io::<Connection>();
};
