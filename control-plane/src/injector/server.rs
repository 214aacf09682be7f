//! The webhook's HTTPS server: TLS 1.3 (`strait_tls::webhook_server_config`), HTTP/1.1,
//! `POST /inject` with a bounded body; every other path is 404.

use super::{Metrics, parse, respond};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// An AdmissionReview of one Pod is a few KiB; the API server sends at most 3 MiB objects.
const MAX_BODY: usize = 4 << 20;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Well inside the webhook's own timeout (see the install).
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(2);

/// What every request needs.
#[derive(Clone)]
pub struct State {
    pub config: Arc<strait_inject::Config>,
    pub client: kube::Client,
    pub metrics: Metrics,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").finish_non_exhaustive()
    }
}

/// Serves until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    state: State,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let state = state.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "webhook TLS handshake");
                    return;
                }
                Err(_) => return,
            };
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(req, &state).await) }
            });
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await
            {
                tracing::debug!(%peer, %error, "webhook connection");
            }
        });
    }
}

async fn handle(req: Request<hyper::body::Incoming>, state: &State) -> Response<Full<Bytes>> {
    if req.uri().path() != "/inject" {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    if req.method() != hyper::Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview");
    }
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let request = match parse(&body) {
        Ok(r) => r,
        Err(message) => {
            state.metrics.refused("bad_request");
            return text(StatusCode::BAD_REQUEST, &message);
        }
    };
    let annotations = match request.namespace.as_deref() {
        Some(ns) => namespace_annotations(&state.client, ns).await,
        None => None,
    };
    let review = respond(
        &request,
        annotations.as_ref(),
        &state.config,
        &state.metrics,
    );
    match serde_json::to_vec(&review) {
        Ok(json) => Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(json)))
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response")),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "response"),
    }
}

async fn namespace_annotations(
    client: &kube::Client,
    ns: &str,
) -> Option<BTreeMap<String, String>> {
    let api = Api::<Namespace>::all(client.clone());
    match tokio::time::timeout(NAMESPACE_TIMEOUT, api.get(ns)).await {
        Ok(Ok(n)) => Some(n.metadata.annotations.unwrap_or_default()),
        Ok(Err(error)) => {
            tracing::warn!(namespace = ns, %error, "reading the namespace; the pod goes on unchanged");
            None
        }
        Err(_) => {
            tracing::warn!(
                namespace = ns,
                "reading the namespace timed out; the pod goes on unchanged"
            );
            None
        }
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r
}
