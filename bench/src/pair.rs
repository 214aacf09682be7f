//! A Strait proxy pair on loopback, as two meshed pods would run it, for the benchmarks that
//! measure it (`proxy`, `peers`):
//!
//! ```text
//!  load ──► client proxy :outbound ──mTLS, HTTP/2──► server proxy :inbound ──► app
//! ```
//!
//! [`GatewayPath`] puts Strait's multicluster gateway between them, as a call to a mirror
//! crosses clusters:
//!
//! ```text
//!  load ──► client proxy ──mTLS, transport header──► gateway ──mTLS, HTTP/2──► server proxy ──► app
//! ```
//!
//! Explicit mode (no iptables): the client proxy's target is the server proxy's inbound
//! address, which an in-process destination service maps to one endpoint with the server's
//! identity and the HTTP/2 hint. Each proxy is its own process, so its RSS and CPU are its
//! own: the shipped `strait-proxy` and `strait-gateway` binaries when `STRAIT_BENCH_PROXY_BIN`
//! and `STRAIT_BENCH_GATEWAY_BIN` name them (what `bench/run` does: the binary's size is part
//! of its RSS), else the benchmark's own binary re-executed as one ([`run_as_proxy_if_asked`]).

use anyhow::bail;
use futures::StreamExt;
use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::destination::destination_server::{Destination, DestinationServer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use strait_core::identity::Identity;
use strait_tls::testing::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ROLE: &str = "STRAIT_BENCH_ROLE";

/// The server side's identity.
pub const SERVER_ID: &str = "web.bench.serviceaccount.identity.strait.cluster.local";
/// The client side's identity.
pub const CLIENT_ID: &str = "client.bench.serviceaccount.identity.strait.cluster.local";
/// The gateway's identity.
pub const GATEWAY_ID: &str =
    "strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local";
/// The name the client's transport header gives the gateway (the remote Service).
const REMOTE_SERVICE: &str = "web.bench.svc.cluster.local:80";

/// Runs the proxy (or the gateway) instead of the benchmark when this process was
/// re-executed as one; call first in `main`. `Some(exit)` when it ran.
pub fn run_as_proxy_if_asked() -> Option<anyhow::Result<()>> {
    let code = match std::env::var(ROLE).as_deref() {
        Ok("proxy") => strait_proxy::cli::main(),
        Ok("gateway") => strait_gateway::cli::main(),
        _ => return None,
    };
    Some(if code == std::process::ExitCode::SUCCESS {
        Ok(())
    } else {
        Err(anyhow::anyhow!("proxy failed"))
    })
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A trust anchor and an issuer, and under `dir` a folder per side (`server`, `client`)
/// holding `ca.crt` (the anchor), `tls.crt` (leaf and issuer) and `tls.key` (PKCS#8), as
/// [`TestPki::write_leaf_files`] writes them.
#[derive(Debug)]
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn write(dir: &Path) -> anyhow::Result<Self> {
        let pki = TestPki::new();
        for (side, id) in [
            ("server", SERVER_ID),
            ("client", CLIENT_ID),
            ("gateway", GATEWAY_ID),
        ] {
            let d = dir.join(side);
            std::fs::create_dir_all(&d)?;
            pki.write_leaf_files(&id.parse::<Identity>()?, &d, "tls");
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The folder of `side` (`server` or `client`).
    pub fn side(&self, side: &str) -> PathBuf {
        self.dir.join(side)
    }
}

/// A proxy process, killed when dropped.
#[derive(Debug)]
pub struct Proxy {
    child: Child,
    pub admin: SocketAddr,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_kb(&self) -> u64 {
        crate::procfs::rss_kb(self.child.id())
    }
}

/// `cmd`, pinned to `cpu` with taskset when given.
pub fn pinned(cpu: Option<&str>, program: &Path) -> Command {
    match cpu {
        Some(cpu) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpu).arg(program);
            c
        }
        None => Command::new(program),
    }
}

async fn spawn_proxy(
    creds: &Path,
    cpu: Option<&str>,
    env: &[(&str, String)],
) -> anyhow::Result<Proxy> {
    spawn_role("proxy", creds, cpu, env, None).await
}

/// The binary that runs as `role`: the shipped one its variable names, else this one.
pub fn program(role: &str) -> anyhow::Result<PathBuf> {
    let var = match role {
        "gateway" => "STRAIT_BENCH_GATEWAY_BIN",
        _ => "STRAIT_BENCH_PROXY_BIN",
    };
    match std::env::var_os(var) {
        Some(p) => {
            let p = PathBuf::from(p);
            if !p.is_file() {
                bail!(
                    "{var}={}: no such binary; build it with `cargo build --release -p strait-{role}`",
                    p.display()
                );
            }
            Ok(p)
        }
        None => Ok(std::env::current_exe()?),
    }
}

/// [`program`] run as `role` (`proxy` or `gateway`), ready: its admin's `/ready` answers
/// 200, or `ready_when_listening` accepts connections.
async fn spawn_role(
    role: &str,
    creds: &Path,
    cpu: Option<&str>,
    env: &[(&str, String)],
    ready_when_listening: Option<SocketAddr>,
) -> anyhow::Result<Proxy> {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    // `STRAIT_BENCH_LOG` (a tracing filter) shows more of what the processes do.
    let log = std::env::var("STRAIT_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned());
    let mut cmd = pinned(cpu, &program(role)?);
    cmd.env(ROLE, role)
        .env("STRAIT_LOG", &log)
        .env("STRAIT_PROXY_IDENTITY_TRUST_ANCHORS", creds.join("ca.crt"))
        .env("STRAIT_PROXY_IDENTITY_CERT", creds.join("tls.crt"))
        .env("STRAIT_PROXY_IDENTITY_KEY", creds.join("tls.key"))
        .env("STRAIT_PROXY_ADMIN_LISTEN_ADDR", admin.to_string())
        .env("STRAIT_PROXY_LOG", &log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let proxy = Proxy {
        child: cmd.spawn()?,
        admin,
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // The gateway's admin port speaks TLS only; it binds its listener once it holds its
        // certificate, which is what its readiness means.
        if let Some(listen) = ready_when_listening {
            if tokio::net::TcpStream::connect(listen).await.is_ok() {
                return Ok(proxy);
            }
        } else if let Ok(mut s) = tokio::net::TcpStream::connect(admin).await {
            s.write_all(b"GET /ready HTTP/1.0\r\n\r\n").await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            if out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200") {
                return Ok(proxy);
            }
        }
        if Instant::now() > deadline {
            bail!("{role} on admin {admin} never became ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A destination service that maps every target to one meshed endpoint (a gateway, when
/// `authority` names the remote Service its transport header carries).
struct OneEndpoint {
    addr: SocketAddr,
    identity: String,
    authority: Option<String>,
    /// The endpoint's proxy's inbound port, when `addr` is the app behind it (what a
    /// gateway connects to, with a transport header naming `addr`'s port).
    proxy_port: Option<u16>,
}

/// Serves `svc` on a loopback port; the address.
async fn serve_destination(svc: OneEndpoint) -> anyhow::Result<SocketAddr> {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DestinationServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    Ok(addr)
}

type Stream<T> = Pin<Box<dyn futures::Stream<Item = Result<T, tonic::Status>> + Send>>;

#[tonic::async_trait]
impl Destination for OneEndpoint {
    type GetStream = Stream<pb::Update>;
    type GetProfileStream = Stream<pb::DestinationProfile>;

    async fn get(
        &self,
        _: tonic::Request<pb::GetDestination>,
    ) -> Result<tonic::Response<Self::GetStream>, tonic::Status> {
        let wa = pb::WeightedAddr {
            addr: Some(self.addr.into()),
            weight: 10000,
            tls_identity: Some(pb::TlsIdentity {
                strategy: Some(pb::tls_identity::Strategy::DnsLikeIdentity(
                    pb::tls_identity::DnsLikeIdentity {
                        name: self.identity.clone(),
                    },
                )),
                server_name: None,
            }),
            protocol_hint: Some(pb::ProtocolHint {
                protocol: Some(pb::protocol_hint::Protocol::H2(pb::protocol_hint::H2 {})),
                opaque_transport: self.proxy_port.map(|p| pb::protocol_hint::OpaqueTransport {
                    inbound_port: u32::from(p),
                }),
            }),
            authority_override: self.authority.clone().map(|a| pb::AuthorityOverride {
                authority_override: a,
            }),
            ..Default::default()
        };
        let first = pb::Update {
            update: Some(pb::update::Update::Add(pb::WeightedAddrSet {
                addrs: vec![wa],
                metric_labels: Default::default(),
            })),
        };
        let s = futures::stream::iter([Ok(first)]).chain(futures::stream::pending());
        Ok(tonic::Response::new(Box::pin(s)))
    }

    async fn get_profile(
        &self,
        _: tonic::Request<pb::GetDestination>,
    ) -> Result<tonic::Response<Self::GetProfileStream>, tonic::Status> {
        Err(tonic::Status::not_found("no profiles"))
    }
}

/// A running pair in front of `app`: send to `outbound`.
#[derive(Debug)]
pub struct Pair {
    pub outbound: SocketAddr,
    /// The server proxy's mTLS listener.
    pub inbound: SocketAddr,
    pub client: Proxy,
    pub server: Proxy,
}

impl Pair {
    /// Starts the destination service (in this process) and both proxies (pinned to `cpu`).
    pub async fn start(pki: &Pki, app: SocketAddr, cpu: Option<&str>) -> anyhow::Result<Self> {
        let inbound = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let dst_addr = serve_destination(OneEndpoint {
            addr: inbound,
            identity: SERVER_ID.to_owned(),
            authority: None,
            proxy_port: None,
        })
        .await?;
        let loopback = |p: u16| SocketAddr::from(([127, 0, 0, 1], p)).to_string();
        let server = spawn_proxy(
            &pki.side("server"),
            cpu,
            &[
                ("STRAIT_PROXY_INBOUND_LISTEN_ADDR", inbound.to_string()),
                ("STRAIT_PROXY_INBOUND_TARGET", app.to_string()),
                ("STRAIT_PROXY_OUTBOUND_LISTEN_ADDR", loopback(free_port()?)),
            ],
        )
        .await?;
        let outbound = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let client = spawn_proxy(
            &pki.side("client"),
            cpu,
            &[
                ("STRAIT_PROXY_OUTBOUND_LISTEN_ADDR", outbound.to_string()),
                ("STRAIT_PROXY_OUTBOUND_TARGET", inbound.to_string()),
                ("STRAIT_PROXY_INBOUND_LISTEN_ADDR", loopback(free_port()?)),
                ("STRAIT_PROXY_DESTINATION_ADDR", dst_addr.to_string()),
            ],
        )
        .await?;
        Ok(Self {
            outbound,
            inbound,
            client,
            server,
        })
    }
}

/// Strait's gateway between a client and a server proxy, in front of `app`: send to
/// `outbound`. The client's destination answers with the gateway (its identity, and the
/// remote Service to name in the transport header); the gateway's, with the server proxy.
#[derive(Debug)]
pub struct GatewayPath {
    pub outbound: SocketAddr,
    pub client: Proxy,
    pub gateway: Proxy,
    pub server: Proxy,
}

impl GatewayPath {
    pub async fn start(pki: &Pki, app: SocketAddr, cpu: Option<&str>) -> anyhow::Result<Self> {
        let loopback = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let (inbound, gw, outbound) = (
            loopback(free_port()?),
            loopback(free_port()?),
            loopback(free_port()?),
        );
        let server = spawn_proxy(
            &pki.side("server"),
            cpu,
            &[
                ("STRAIT_PROXY_INBOUND_LISTEN_ADDR", inbound.to_string()),
                ("STRAIT_PROXY_INBOUND_TARGET", app.to_string()),
                (
                    "STRAIT_PROXY_OUTBOUND_LISTEN_ADDR",
                    loopback(free_port()?).to_string(),
                ),
            ],
        )
        .await?;
        let gw_dst = serve_destination(OneEndpoint {
            addr: app,
            identity: SERVER_ID.to_owned(),
            authority: None,
            proxy_port: Some(inbound.port()),
        })
        .await?;
        let creds = pki.side("gateway");
        let gateway = spawn_role(
            "gateway",
            &creds,
            cpu,
            &[
                ("STRAIT_PROXY_INBOUND_LISTEN_ADDR", gw.to_string()),
                ("STRAIT_PROXY_IDENTITY_LOCAL_NAME", GATEWAY_ID.to_owned()),
                (
                    "STRAIT_GATEWAY_CERT",
                    creds.join("tls.crt").display().to_string(),
                ),
                (
                    "STRAIT_GATEWAY_KEY",
                    creds.join("tls.key").display().to_string(),
                ),
                ("STRAIT_PROXY_DESTINATION_ADDR", gw_dst.to_string()),
            ],
            Some(gw),
        )
        .await?;
        let client_dst = serve_destination(OneEndpoint {
            addr: gw,
            identity: GATEWAY_ID.to_owned(),
            authority: Some(REMOTE_SERVICE.to_owned()),
            proxy_port: None,
        })
        .await?;
        let client = spawn_proxy(
            &pki.side("client"),
            cpu,
            &[
                ("STRAIT_PROXY_OUTBOUND_LISTEN_ADDR", outbound.to_string()),
                ("STRAIT_PROXY_OUTBOUND_TARGET", inbound.to_string()),
                (
                    "STRAIT_PROXY_INBOUND_LISTEN_ADDR",
                    loopback(free_port()?).to_string(),
                ),
                ("STRAIT_PROXY_DESTINATION_ADDR", client_dst.to_string()),
            ],
        )
        .await?;
        Ok(Self {
            outbound,
            client,
            gateway,
            server,
        })
    }
}
