//! A cuttable route from the controller to east's API server: a partition the test makes and
//! heals while it still reaches east itself, and the kubeconfig that sends the controller
//! through it.

use crate::mirror_support::Res;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use strait_localcluster::Cluster;

/// A TCP relay to the remote API server that the test can cut: a network partition between
/// the controller and east, while the test still reaches east directly.
pub struct Relay {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
        self.cut();
    }
}

impl Relay {
    pub async fn start(upstream: SocketAddr) -> Res<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (up2, conns2) = (up.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                if !up2.load(Ordering::SeqCst) {
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                if let Ok(mut c) = conns2.lock() {
                    c.retain(|h| !h.is_finished());
                    c.push(h);
                }
            }
        });
        Ok(Self {
            addr,
            up,
            conns,
            task,
        })
    }

    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        if let Ok(mut c) = self.conns.lock() {
            for h in c.drain(..) {
                h.abort();
            }
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A kubeconfig for `cluster` whose server is `server` (the relay), as the credentials Secret.
pub fn kubeconfig_via(cluster: &Cluster, server: SocketAddr) -> Res<String> {
    let text = std::fs::read_to_string(cluster.kubeconfig_path())?;
    let url = cluster.server_url();
    Ok(text.replace(&url, &format!("https://{server}")))
}

/// Where `cluster`'s API server listens, for a relay to forward to.
pub fn upstream_of(cluster: &Cluster) -> Res<SocketAddr> {
    let url = cluster.server_url();
    let hostport = url.trim_start_matches("https://").trim_end_matches('/');
    Ok(hostport.parse()?)
}
