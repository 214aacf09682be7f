//! Clients to one endpoint over [`Connector`]: HTTP/1 through hyper's pool, HTTP/2 as one
//! connection that every request shares ([`H2Conn`]).
//!
//! Every request goes to the same endpoint whatever its URI says; the URI is made absolute
//! because hyper's pool keys on it and HTTP/2 sends it as `:scheme` and `:authority`.

use crate::connect::{ConnectError, Connection, Connector, Endpoint};
use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use strait_core::transport_header::SessionProtocol;
use tower::Service as _;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// The hyper connector: always `endpoint`, whatever the URI.
#[derive(Clone, Debug)]
pub struct EndpointConnect {
    connector: Connector,
    endpoint: Endpoint,
    h2: bool,
}

impl tower::Service<Uri> for EndpointConnect {
    type Response = TokioIo<Connection>;
    type Error = ConnectError;
    type Future = BoxFuture<'static, Result<Self::Response, ConnectError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let conn = this.connector.connect(&this.endpoint).await?;
            Ok(TokioIo::new(conn.with_h2(this.h2)))
        })
    }
}

/// An HTTP/1 and an HTTP/2 client to one endpoint; connections are made on first use.
#[derive(Clone, Debug)]
pub struct EndpointClient {
    h1: Client<EndpointConnect, Incoming>,
    h2: H2Conn,
}

/// One HTTP/2 connection to an endpoint, shared by every request, made on first use and made
/// again once it has closed. A request takes a clone of the sender: no pool, no checkout.
#[derive(Clone, Debug)]
struct H2Conn {
    connect: EndpointConnect,
    sender: Arc<std::sync::Mutex<Option<SendRequest<Incoming>>>>,
    /// Held while connecting, so that requests arriving meanwhile wait for one connection.
    connecting: Arc<tokio::sync::Mutex<()>>,
}

impl H2Conn {
    fn new(connect: EndpointConnect) -> Self {
        Self {
            connect,
            sender: Arc::default(),
            connecting: Arc::default(),
        }
    }

    /// The open connection's sender, if there is one.
    fn open(&self) -> Option<SendRequest<Incoming>> {
        let slot = self.sender.lock().unwrap_or_else(|e| e.into_inner());
        slot.as_ref().filter(|tx| !tx.is_closed()).cloned()
    }

    /// The open connection's sender, connecting first when there is none.
    async fn sender(&self) -> Result<SendRequest<Incoming>, BoxError> {
        if let Some(tx) = self.open() {
            return Ok(tx);
        }
        let _connecting = self.connecting.lock().await;
        if let Some(tx) = self.open() {
            return Ok(tx);
        }
        let io = self.connect.clone().call(Uri::default()).await?;
        let (tx, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "HTTP/2 connection to an endpoint closed");
            }
        });
        *self.sender.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx.clone());
        Ok(tx)
    }

    async fn send(&self, req: Request<Incoming>) -> Result<Response<Incoming>, BoxError> {
        let mut tx = self.sender().await?;
        tx.ready().await?;
        match tx.try_send_request(req).await {
            Ok(rsp) => Ok(rsp),
            // The connection closed before the request left: it is sent once more, on a new
            // connection (as hyper's pool retries a canceled request).
            Err(mut e) => match e.take_message() {
                Some(req) if tx.is_closed() => {
                    let mut tx = self.sender().await?;
                    tx.ready().await?;
                    Ok(tx.send_request(req).await?)
                }
                _ => Err(e.into_error().into()),
            },
        }
    }
}

impl EndpointClient {
    pub fn new(connector: &Connector, endpoint: &Endpoint) -> Self {
        let build = |h2: bool| {
            let mut endpoint = endpoint.clone();
            if let Some(h) = &mut endpoint.transport_header {
                h.protocol = Some(if h2 {
                    SessionProtocol::Http2
                } else {
                    SessionProtocol::Http1
                });
            }
            EndpointConnect {
                connector: connector.clone(),
                endpoint,
                h2,
            }
        };
        Self {
            h1: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(build(false)),
            h2: H2Conn::new(build(true)),
        }
    }

    /// Sends `req` as HTTP/2 when `h2`, else HTTP/1.1.
    pub fn send(
        &self,
        mut req: Request<Incoming>,
        h2: bool,
    ) -> BoxFuture<'static, Result<Response<Incoming>, BoxError>> {
        absolute_uri(&mut req);
        *req.version_mut() = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        if h2 {
            let h2 = self.h2.clone();
            Box::pin(async move { h2.send(req).await })
        } else {
            let fut = self.h1.request(req);
            Box::pin(async move { fut.await.map_err(Into::into) })
        }
    }
}

/// Makes the URI absolute (scheme and authority from the Host header) as hyper's pool needs,
/// reusing the request's path bytes rather than formatting and parsing a new URI.
fn absolute_uri<B>(req: &mut Request<B>) {
    if req.uri().authority().is_some() && req.uri().scheme().is_some() {
        return;
    }
    let authority = match req.uri().authority() {
        Some(a) => a.clone(),
        None => req
            .headers()
            .get(http::header::HOST)
            .and_then(|h| {
                http::uri::Authority::from_maybe_shared(bytes::Bytes::copy_from_slice(h.as_bytes()))
                    .ok()
            })
            .unwrap_or_else(|| http::uri::Authority::from_static("localhost")),
    };
    let mut parts = req.uri().clone().into_parts();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    match http::Uri::from_parts(parts) {
        Ok(uri) => *req.uri_mut() = uri,
        Err(e) => tracing::debug!(error = %e, "request URI left as it was"),
    }
}

/// Walks an error's causes looking for a `T`.
pub fn is_caused_by<'a, T: std::error::Error + 'static>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<T>() {
            return Some(t);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn absolute(uri: &str, host: Option<&str>) -> String {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(http::header::HOST, h);
        }
        let mut req = b.body(()).unwrap();
        absolute_uri(&mut req);
        req.uri().to_string()
    }

    #[test]
    fn a_uri_is_made_absolute_from_the_host_header() {
        assert_eq!(
            absolute("/a/b?x=1", Some("web.shop:8080")),
            "http://web.shop:8080/a/b?x=1"
        );
        assert_eq!(absolute("/", None), "http://localhost/");
        assert_eq!(
            absolute("http://api:80/p", Some("other")),
            "http://api:80/p",
            "an absolute URI is kept"
        );
        assert_eq!(
            absolute("/p", Some("bad host")),
            "http://localhost/p",
            "a Host that is no authority is not used"
        );
    }
}
