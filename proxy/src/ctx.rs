//! The proxy's shared state, handed to every connection handler, and the accept loop that
//! hands it out.

use crate::addr::EndpointAddr;
use crate::balance::Balancers;
use crate::connect::{Connector, Endpoint};
use crate::discover::Resolver;
use crate::env::Config;
use crate::http_client::EndpointClient;
use crate::metrics::Metrics;
use std::future::Future;
use std::sync::Arc;
use strait_tls::rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Everything a connection handler needs; cheap to clone.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub cfg: Arc<Config>,
    pub connector: Connector,
    pub resolver: Resolver,
    pub metrics: Metrics,
    pub tls_server: Arc<ServerConfig>,
    pub balancers: Balancers,
    /// Inbound and outbound policy (off without a workload).
    pub policies: crate::policy::Policies,
    /// Pooled clients to the local application, by address, shared by inbound connections.
    pub app_clients: AppClients,
    /// Cancelled on shutdown: listeners stop accepting, HTTP connections go away gracefully.
    pub stop: CancellationToken,
    pub tracker: TaskTracker,
}

/// Pooled HTTP clients to the application, one per address.
#[derive(Clone, Debug, Default)]
pub struct AppClients(
    Arc<std::sync::Mutex<std::collections::HashMap<std::net::SocketAddr, EndpointClient>>>,
);

impl AppClients {
    pub fn get(&self, connector: &Connector, addr: std::net::SocketAddr) -> EndpointClient {
        let make = || EndpointClient::new(connector, &Endpoint::plain(EndpointAddr(addr)));
        match self.0.lock() {
            Ok(mut m) => m.entry(addr).or_insert_with(make).clone(),
            Err(_) => make(),
        }
    }
}

/// Accepts on `listener` until `ctx.stop`, spawning `handle` for each connection.
pub async fn accept_loop<F, Fut>(listener: TcpListener, ctx: Ctx, what: &'static str, handle: F)
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr, Ctx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let (tcp, peer) = tokio::select! {
            res = listener.accept() => match res {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, what, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = ctx.stop.cancelled() => return,
        };
        let _ = tcp.set_nodelay(true);
        ctx.tracker.spawn(handle(tcp, peer, ctx.clone()));
    }
}
