//! The client side: opening a connection to a resolved endpoint.
//!
//! A meshed endpoint (it has a TLS identity) is reached over mTLS at its proxy's inbound port
//! (the `opaque_transport` hint, else 4143), with ALPN `transport.l5d.io/v1` and a transport
//! header naming the endpoint's port and the session protocol, so the inbound proxy forwards
//! to the application. An unmeshed endpoint gets plain TCP (unless the operator forbade it,
//! which the listener checks before calling here).

use crate::error::ConnectError;
use crate::resolve::Endpoint;
use futures::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use strait_core::transport_header::{SessionProtocol, TransportHeader};
use strait_tls::rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// A byte stream in either direction.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A boxed [`Io`].
pub type BoxIo = Box<dyn Io>;

/// Opens byte streams to addresses: TCP in production, in-memory pipes in tests.
pub trait Dial: Send + Sync + 'static {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'static, std::io::Result<BoxIo>>;
}

/// Dials TCP with `TCP_NODELAY`.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpDial;

impl Dial for TcpDial {
    fn dial(&self, addr: SocketAddr) -> BoxFuture<'static, std::io::Result<BoxIo>> {
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            s.set_nodelay(true)?;
            Ok(Box::new(s) as BoxIo)
        })
    }
}

/// The default inbound port of a meshed pod's proxy.
pub const DEFAULT_INBOUND_PORT: u16 = strait_core::ports::GATEWAY;

/// Connects to endpoints.
#[derive(Clone)]
pub struct Connector {
    dial: Arc<dyn Dial>,
    /// Presents the gateway's certificate, ALPN `transport.l5d.io/v1`.
    tls: Arc<ClientConfig>,
    timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Connector {
    pub fn new(dial: Arc<dyn Dial>, tls: Arc<ClientConfig>, timeout: Duration) -> Self {
        Self { dial, tls, timeout }
    }

    /// Opens a stream to `ep` that carries `protocol` (or opaque bytes) to its application.
    pub async fn connect(
        &self,
        ep: &Endpoint,
        protocol: Option<SessionProtocol>,
    ) -> Result<BoxIo, ConnectError> {
        let addr = match ep.identity {
            Some(_) => SocketAddr::new(
                ep.addr.ip(),
                ep.opaque_transport_port.unwrap_or(DEFAULT_INBOUND_PORT),
            ),
            None => ep.addr,
        };
        let io = match tokio::time::timeout(self.timeout, self.dial.dial(addr)).await {
            Ok(Ok(io)) => io,
            Ok(Err(source)) => return Err(ConnectError::Tcp { addr, source }),
            Err(_) => return Err(ConnectError::Timeout(addr)),
        };
        let Some(id) = &ep.identity else {
            return Ok(io);
        };
        let handshake = strait_tls::connect(self.tls.clone(), id, io);
        let mut tls = match tokio::time::timeout(self.timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(source)) => return Err(ConnectError::Tls { addr, source }),
            Err(_) => return Err(ConnectError::Timeout(addr)),
        };
        let header = TransportHeader {
            port: ep.addr.port(),
            name: None,
            protocol,
        };
        tls.write_all(&header.encode())
            .await
            .map_err(ConnectError::Header)?;
        tls.flush().await.map_err(ConnectError::Header)?;
        Ok(Box::new(tls))
    }
}
