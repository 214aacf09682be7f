//! Added latency at fixed rates: Strait's proxy pair beside HAProxy's and nginx's, and a
//! direct connection, all in one run, on the same upstream, pinned the same way.
//!
//! ```text
//!  fortio load ──────────────────────────────────────────────────────────► fortio server (direct)
//!  fortio load ──► strait client proxy ──mTLS (TLS 1.3), HTTP/2──► strait server proxy ──► server
//!  fortio load ──► strait client proxy ──mTLS──► strait gateway ──mTLS, HTTP/2──► strait server proxy ──► server
//!  fortio load ──► haproxy (client side) ──mTLS (TLS 1.3), HTTP/2──► haproxy (server side) ──► server
//!  fortio load ──► nginx (client side) ──mTLS (TLS 1.3), HTTP/1.1 keep-alive──► nginx (server side) ──► server
//! ```
//!
//! ```text
//! bench/run                        # installs fortio, haproxy, nginx; runs this; writes bench/RESULTS.md
//! cargo run --release -p strait-bench --bin peers -- --secs 10 --reps 3 --out bench/RESULTS.md
//! ```
//!
//! Beside latency: TCP throughput with iperf3 (1 and 8 streams, Gbit/s and CPU-seconds per GB)
//! through each pair's TCP path (Strait: a pair whose upstream is iperf3, detected as opaque;
//! HAProxy `mode tcp`; nginx `stream`), new mTLS connections per second at each server-side
//! proxy ([`strait_bench::mtls`]: handshake, one request, close), and the RSS a server-side
//! proxy adds per 1,000 idle and per 1,000 active mTLS connections.
//!
//! Every proxy verifies its peer's certificate under one trust anchor, with the identities
//! Strait's proxies use; none resumes TLS sessions (Strait never does). Proxies run on CPU 1,
//! the load generator and the server on CPU 0 (`taskset`); each proxy has that one CPU.
//! Each figure is the median of `--reps` runs of `--secs` seconds, with the spread (min–max).
//! Bounded: at most 60 s a run, 5 runs, 2,000 req/s; loopback only.

use anyhow::{Context, bail};
use clap::Parser;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use strait_bench::mtls;
use strait_bench::pair::{self, GatewayPath, Pair, Pki, SERVER_ID, free_port, pinned};
use strait_bench::procfs::{anon_kb, rss_kb};

/// The CPU the proxies run on, and the one the load generator and the server run on.
const PROXY_CPU: &str = "1";
const LOAD_CPU: &str = "0";
/// Requests a second, as Istio publishes them (1,000) and either side of it.
const RATES: [u32; 3] = [500, 1000, 2000];
/// Connections the load generator keeps open.
const CONNECTIONS: u32 = 16;
/// The response body, 1 KB.
const BODY: u32 = 1024;
/// iperf3's parallel streams: one, and eight sharing the path.
const STREAMS: [u32; 2] = [1, 8];
/// Connections held open for the memory figures.
const HELD: usize = 1000;
/// Concurrent handshakes of the connection-rate client.
const HANDSHAKERS: usize = 4;

#[derive(Parser, Debug)]
struct Args {
    /// Seconds each run lasts (1–60).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=60))]
    secs: u64,
    /// Runs of each figure (1–5); the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=5))]
    reps: u32,
    /// Where to write the results (markdown); printed to stdout too.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only these paths (`direct`, `strait`, `gateway`, `haproxy`, `nginx`); every path when
    /// absent.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Only these rates (req/s, at most 2,000); 500, 1,000 and 2,000 when absent.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=2000))]
    rates: Vec<u32>,
    /// The load's protocols: `h1` (HTTP/1.1 keep-alive), `h2` (HTTP/2, prior knowledge).
    #[arg(long, value_delimiter = ',', default_values = ["h1", "h2"])]
    protos: Vec<Proto>,
    /// Spread the load's connections evenly in time (`fortio load -uniform`) instead of
    /// fortio's default, where all of them send at the same instant (a diagnostic).
    #[arg(long)]
    uniform: bool,
    /// Only these figures (`latency`, `throughput`, `connections`, `memory`); all when
    /// absent.
    #[arg(long, value_delimiter = ',')]
    figures: Vec<Figure>,
    /// Record into this folder, for each run, `perf stat` of every proxy on the path
    /// (CPU, context switches, system calls) and `perf record` of Strait's proxies.
    #[arg(long)]
    profile: Option<PathBuf>,
}

/// What a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Figure {
    Latency,
    Throughput,
    Connections,
    Memory,
}

/// The protocol the load generator speaks to the first hop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    fn label(self) -> &'static str {
        match self {
            Self::H1 => "HTTP/1.1",
            Self::H2 => "HTTP/2",
        }
    }
}

fn main() -> anyhow::Result<()> {
    if let Some(proxy) = pair::run_as_proxy_if_asked() {
        return proxy;
    }
    let args = Args::parse();
    for tool in ["fortio", "haproxy", "nginx", "iperf3", "taskset"] {
        if which(tool).is_none() {
            bail!("{tool} is not on PATH: run bench/run, which installs it");
        }
    }
    // This process (the mTLS client, the Strait pair's destination service) runs where the
    // load generators run, never on the proxies' CPU; the proxies it starts are pinned anew.
    let mut load_cpu = nix::sched::CpuSet::new();
    load_cpu.set(LOAD_CPU.parse()?)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &load_cpu)
        .context("pinning the benchmark to the load CPU")?;
    // A thousand held connections on each side.
    mtls::raise_nofile()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?
        .block_on(bench(args))
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(name: &'static str, mut cmd: Command, log: &Path) -> anyhow::Result<Proc> {
    let log = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok(Proc(
        cmd.spawn().with_context(|| format!("starting {name}"))?,
    ))
}

/// Waits until `addr` accepts connections; says what `log` holds if it never does.
async fn listening(addr: SocketAddr, what: &str, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            bail!("{what} never listened on {addr}; its log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// A peer's pair: where the load goes in (HTTP/1.1, HTTP/2) and its two processes (server
/// side, client side).
struct PeerPair {
    front: SocketAddr,
    front_h2: SocketAddr,
    /// The server side's mTLS listener (HTTP).
    tls: SocketAddr,
    /// Where TCP goes in (client side, plain) towards `tcp_app`.
    tcp_front: SocketAddr,
    procs: [Proc; 2],
}

/// HAProxy as the client side (plain HTTP in, mTLS HTTP/2 out) and the server side (mTLS in,
/// plain HTTP to `app`), two processes.
async fn haproxy(
    pki: &Pki,
    dir: &Path,
    app: SocketAddr,
    tcp_app: SocketAddr,
) -> anyhow::Result<PeerPair> {
    let (front, front_h2, tls, tcp_front, tcp_tls) = (
        loopback(free_port()?),
        loopback(free_port()?),
        loopback(free_port()?),
        loopback(free_port()?),
        loopback(free_port()?),
    );
    let pem = |side: &str| -> anyhow::Result<PathBuf> {
        let d = pki.side(side);
        let both = std::fs::read_to_string(d.join("tls.crt"))?
            + &std::fs::read_to_string(d.join("tls.key"))?;
        let p = dir.join(format!("haproxy-{side}.pem"));
        std::fs::write(&p, both)?;
        Ok(p)
    };
    let ca = pki.side("client").join("ca.crt");
    let common = "global\n  maxconn 4096\n  tune.ssl.default-dh-param 2048\ndefaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n  http-reuse always\n";
    let (client_pem, server_pem) = (pem("client")?, pem("server")?);
    let client = format!(
        "{common}frontend out\n  bind {front}\n  bind {front_h2} proto h2\n  default_backend remote\nbackend remote\n  server s {tls} ssl crt {c} ca-file {ca} verify required verifyhost {SERVER_ID} sni str({SERVER_ID}) ssl-min-ver TLSv1.3 alpn h2 no-ssl-reuse\nfrontend tcpout\n  mode tcp\n  bind {tcp_front}\n  default_backend tcpremote\nbackend tcpremote\n  mode tcp\n  server s {tcp_tls} ssl crt {c} ca-file {ca} verify required verifyhost {SERVER_ID} sni str({SERVER_ID}) ssl-min-ver TLSv1.3 no-ssl-reuse\n",
        c = client_pem.display(),
        ca = ca.display()
    );
    let server = format!(
        "{common}frontend in\n  bind {tls} ssl crt {s} ca-file {ca} verify required ssl-min-ver TLSv1.3 alpn h2,http/1.1 no-tls-tickets\n  default_backend app\nbackend app\n  server a {app}\nfrontend tcpin\n  mode tcp\n  bind {tcp_tls} ssl crt {s} ca-file {ca} verify required ssl-min-ver TLSv1.3 no-tls-tickets\n  default_backend tcpapp\nbackend tcpapp\n  mode tcp\n  server a {tcp_app}\n",
        s = server_pem.display(),
        ca = ca.display()
    );
    let mut procs = Vec::new();
    for (side, cfg) in [("server", server), ("client", client)] {
        let path = dir.join(format!("haproxy-{side}.cfg"));
        std::fs::write(&path, cfg)?;
        let mut cmd = pinned(Some(PROXY_CPU), Path::new("haproxy"));
        cmd.arg("-db").arg("-f").arg(&path);
        procs.push(spawn(
            "haproxy",
            cmd,
            &dir.join(format!("haproxy-{side}.log")),
        )?);
    }
    let log = |side: &str| dir.join(format!("haproxy-{side}.log"));
    listening(tls, "haproxy (server side)", &log("server")).await?;
    listening(front, "haproxy (client side)", &log("client")).await?;
    let procs: [Proc; 2] = procs
        .try_into()
        .map_err(|_| anyhow::anyhow!("two haproxies"))?;
    Ok(PeerPair {
        front,
        front_h2,
        tls,
        tcp_front,
        procs,
    })
}

/// nginx as the client side (plain HTTP in, mTLS HTTP/1.1 keep-alive out) and the server side
/// (mTLS in, plain HTTP to `app`), two processes with one worker each.
async fn nginx(
    pki: &Pki,
    dir: &Path,
    app: SocketAddr,
    tcp_app: SocketAddr,
) -> anyhow::Result<PeerPair> {
    let (front, front_h2, tls, tcp_front, tcp_tls) = (
        loopback(free_port()?),
        loopback(free_port()?),
        loopback(free_port()?),
        loopback(free_port()?),
        loopback(free_port()?),
    );
    let (c, s) = (pki.side("client"), pki.side("server"));
    let mut procs = Vec::new();
    for side in ["server", "client"] {
        let prefix = dir.join(format!("nginx-{side}"));
        std::fs::create_dir_all(prefix.join("logs"))?;
        let common = format!(
            "load_module {STREAM_MODULE};\nworker_processes 1;\ndaemon off;\nmaster_process off;\npid {p}/nginx.pid;\nerror_log {p}/logs/error.log warn;\nevents {{ worker_connections 10000; }}\nhttp {{\n  access_log off;\n  keepalive_requests 10000000;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n  fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n",
            p = prefix.display()
        );
        let body = if side == "server" {
            format!(
                "  upstream app {{ server {app}; keepalive 64; }}\n  server {{\n    listen {tls} ssl;\n    ssl_certificate {crt};\n    ssl_certificate_key {key};\n    ssl_client_certificate {ca};\n    ssl_verify_client on;\n    ssl_verify_depth 3;\n    ssl_protocols TLSv1.3;\n    ssl_session_tickets off;\n    ssl_session_cache off;\n    location / {{ proxy_pass http://app; proxy_http_version 1.1; proxy_set_header Connection \"\"; }}\n  }}\n}}\nstream {{\n  server {{\n    listen {tcp_tls} ssl;\n    ssl_certificate {crt};\n    ssl_certificate_key {key};\n    ssl_client_certificate {ca};\n    ssl_verify_client on;\n    ssl_verify_depth 3;\n    ssl_protocols TLSv1.3;\n    ssl_session_tickets off;\n    ssl_session_cache off;\n    proxy_pass {tcp_app};\n  }}\n}}\n",
                crt = s.join("tls.crt").display(),
                key = s.join("tls.key").display(),
                ca = s.join("ca.crt").display()
            )
        } else {
            format!(
                "  upstream remote {{ server {tls}; keepalive 64; }}\n  server {{\n    listen {front};\n    listen {front_h2} http2;\n    location / {{\n      proxy_pass https://remote;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_ssl_certificate {crt};\n      proxy_ssl_certificate_key {key};\n      proxy_ssl_trusted_certificate {ca};\n      proxy_ssl_verify on;\n      proxy_ssl_verify_depth 3;\n      proxy_ssl_name {SERVER_ID};\n      proxy_ssl_server_name on;\n      proxy_ssl_protocols TLSv1.3;\n      proxy_ssl_session_reuse off;\n    }}\n  }}\n}}\nstream {{\n  server {{\n    listen {tcp_front};\n    proxy_pass {tcp_tls};\n    proxy_ssl on;\n    proxy_ssl_certificate {crt};\n    proxy_ssl_certificate_key {key};\n    proxy_ssl_trusted_certificate {ca};\n    proxy_ssl_verify on;\n    proxy_ssl_verify_depth 3;\n    proxy_ssl_name {SERVER_ID};\n    proxy_ssl_server_name on;\n    proxy_ssl_protocols TLSv1.3;\n    proxy_ssl_session_reuse off;\n  }}\n}}\n",
                crt = c.join("tls.crt").display(),
                key = c.join("tls.key").display(),
                ca = c.join("ca.crt").display()
            )
        };
        let path = prefix.join("nginx.conf");
        std::fs::write(&path, common + &body)?;
        let mut cmd = pinned(Some(PROXY_CPU), Path::new("nginx"));
        cmd.arg("-p").arg(&prefix).arg("-c").arg(&path);
        procs.push(spawn("nginx", cmd, &prefix.join("logs/stdout.log"))?);
    }
    let log = |side: &str| dir.join(format!("nginx-{side}/logs/error.log"));
    listening(tls, "nginx (server side)", &log("server")).await?;
    listening(front, "nginx (client side)", &log("client")).await?;
    let procs: [Proc; 2] = procs
        .try_into()
        .map_err(|_| anyhow::anyhow!("two nginxes"))?;
    Ok(PeerPair {
        front,
        front_h2,
        tls,
        tcp_front,
        procs,
    })
}

/// nginx's stream module (Debian's libnginx-mod-stream).
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

/// One fortio run: latencies in ms (p50, p90, p99, p99.9, max), and the requests that failed.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    ms: [f64; 5],
    failed: u64,
    /// Requests sent.
    count: u64,
    /// CPU the path's proxies used, in clock ticks (1/100 s).
    cpu_ticks: u64,
}

/// How fortio loads a path.
#[derive(Clone, Copy, Debug)]
struct Load {
    rate: u32,
    secs: u64,
    proto: Proto,
    uniform: bool,
}

fn fortio_load(target: SocketAddr, load: Load, out: &Path) -> anyhow::Result<Run> {
    let Load {
        rate,
        secs,
        proto,
        uniform,
    } = load;
    let mut cmd = pinned(Some(LOAD_CPU), Path::new("fortio"));
    cmd.args(["load", "-quiet"]);
    if proto == Proto::H2 {
        cmd.arg("-h2");
    }
    if uniform {
        cmd.arg("-uniform");
    }
    cmd.arg("-qps")
        .arg(rate.to_string())
        .arg("-t")
        .arg(format!("{secs}s"))
        .arg("-c")
        .arg(CONNECTIONS.to_string())
        .args(["-p", "50,90,99,99.9", "-json"])
        .arg(out)
        .arg(format!("http://{target}/?size={BODY}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let status = cmd.status().context("running fortio load")?;
    if !status.success() {
        bail!("fortio load against {target} failed ({status})");
    }
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out)?)?;
    let h = &v["DurationHistogram"];
    let pct = |p: f64| {
        h["Percentiles"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["Percentile"].as_f64() == Some(p))
            .and_then(|e| e["Value"].as_f64())
            .map_or(f64::NAN, |s| s * 1000.0)
    };
    let total = h["Count"].as_u64().unwrap_or(0);
    let ok = v["RetCodes"]["200"].as_u64().unwrap_or(0);
    Ok(Run {
        ms: [
            pct(50.0),
            pct(90.0),
            pct(99.0),
            pct(99.9),
            h["Max"].as_f64().map_or(f64::NAN, |s| s * 1000.0),
        ],
        failed: total.saturating_sub(ok),
        count: total,
        cpu_ticks: 0,
    })
}

/// Of several runs: the median of each figure and its spread (min, max), the failures, and
/// the CPU the path's proxies used per 1,000 requests (ms, median and spread).
struct Summary {
    med: [f64; 5],
    spread: [(f64, f64); 5],
    failed: u64,
    cpu: (f64, f64, f64),
}

fn med_spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    match (v.first(), v.get(v.len() / 2), v.last()) {
        (Some(lo), Some(m), Some(hi)) => (*m, *lo, *hi),
        _ => (f64::NAN, f64::NAN, f64::NAN),
    }
}

fn median(runs: &[Run]) -> Summary {
    let mut med = [0.0; 5];
    let mut spread = [(0.0, 0.0); 5];
    for i in 0..5 {
        let (m, lo, hi) = med_spread(runs.iter().map(|r| r.ms[i]).collect());
        med[i] = m;
        spread[i] = (lo, hi);
    }
    let cpu = med_spread(
        runs.iter()
            .map(|r| r.cpu_ticks as f64 * 10.0 / (r.count.max(1) as f64 / 1000.0))
            .collect(),
    );
    Summary {
        med,
        spread,
        failed: runs.iter().map(|r| r.failed).sum(),
        cpu,
    }
}

fn machine() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    // The machine's processors, not this process's: `peers` has pinned itself to one CPU.
    let cores = read("/proc/cpuinfo")
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .map(|l| l.trim().to_owned())
        .unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    format!("{cores} cores ({cpu}), {mem} memory, Linux {kernel}")
}

fn version(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(if o.stdout.is_empty() {
                &o.stderr
            } else {
                &o.stdout
            })
            .into_owned();
            text.lines().next().unwrap_or_default().trim().to_owned()
        })
        .unwrap_or_default()
}

/// One path the load goes through: where it enters (per protocol) and the proxies on it.
struct Route {
    key: &'static str,
    name: &'static str,
    h1: SocketAddr,
    h2: SocketAddr,
    /// The proxies on the path: (role, pid).
    procs: Vec<(&'static str, u32)>,
    /// Where TCP goes in towards iperf3's server, and the proxies on that path.
    tcp: Option<(SocketAddr, Vec<(&'static str, u32)>)>,
    /// The server side's mTLS listener and its pid.
    tls: Option<(SocketAddr, u32)>,
}

fn pid_of(p: &Proc) -> u32 {
    p.0.id()
}

fn ticks(procs: &[(&'static str, u32)]) -> u64 {
    procs
        .iter()
        .filter_map(|(_, pid)| strait_bench::procfs::cpu_ticks(Some(*pid)))
        .sum()
}

/// `perf stat` (and, when `record`, `perf record`) of `procs` for `secs`, into `dir`.
fn start_profile(
    dir: &Path,
    name: &str,
    procs: &[(&'static str, u32)],
    secs: u64,
    record: bool,
) -> anyhow::Result<Vec<Proc>> {
    std::fs::create_dir_all(dir)?;
    let pids = procs
        .iter()
        .map(|(_, p)| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut out = Vec::new();
    let mut stat = Command::new("perf");
    stat.args([
        "stat",
        "-e",
        "task-clock,context-switches,cpu-migrations,raw_syscalls:sys_enter",
        "-p",
        &pids,
        "-o",
    ])
    .arg(dir.join(format!("{name}.stat")))
    .args(["--", "sleep", &secs.to_string()]);
    out.push(spawn(
        "perf stat",
        stat,
        &dir.join(format!("{name}.stat.log")),
    )?);
    if record {
        let mut rec = Command::new("perf");
        rec.args([
            "record",
            "-F",
            "4999",
            "--call-graph",
            "dwarf,32768",
            "-p",
            &pids,
            "-o",
        ])
        .arg(dir.join(format!("{name}.data")))
        .args(["--", "sleep", &secs.to_string()]);
        out.push(spawn(
            "perf record",
            rec,
            &dir.join(format!("{name}.record.log")),
        )?);
    }
    // perf attaches within a few ms; give it that before the load starts.
    std::thread::sleep(Duration::from_millis(200));
    Ok(out)
}

/// Throughput of one path at one stream count: the medians and spreads of Gbit/s and of the
/// CPU-seconds its proxies spent per GB.
struct Throughput {
    key: &'static str,
    name: &'static str,
    streams: u32,
    gbps: (f64, f64, f64),
    cpu_s_per_gb: Option<(f64, f64, f64)>,
}

/// One iperf3 run into `front` with `streams` parallel streams: bytes received, seconds.
fn iperf3(front: SocketAddr, streams: u32, secs: u64, out: &Path) -> anyhow::Result<(f64, f64)> {
    let mut cmd = pinned(Some(LOAD_CPU), Path::new("iperf3"));
    cmd.args(["-c", "127.0.0.1", "-J", "-p"])
        .arg(front.port().to_string())
        .arg("-t")
        .arg(secs.to_string())
        .arg("-P")
        .arg(streams.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .stdout(std::fs::File::create(out)?);
    let status = cmd.status().context("running iperf3")?;
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(out)?)
        .with_context(|| format!("iperf3 through {front} ({status}) wrote no JSON"))?;
    if let Some(e) = v["error"].as_str() {
        bail!("iperf3 through {front}: {e}");
    }
    let r = &v["end"]["sum_received"];
    match (r["bytes"].as_f64(), r["seconds"].as_f64()) {
        (Some(b), Some(s)) if b > 0.0 && s > 0.0 => Ok((b, s)),
        _ => bail!("iperf3 through {front} ({status}) moved nothing"),
    }
}

fn measure_throughput(
    routes: &[Route],
    secs: u64,
    reps: u32,
    dir: &Path,
) -> anyhow::Result<Vec<Throughput>> {
    let mut out = Vec::new();
    for r in routes {
        let Some((front, procs)) = &r.tcp else {
            continue;
        };
        iperf3(*front, 1, 1, &dir.join("iperf3-warm.json"))
            .with_context(|| format!("warming {} (TCP)", r.name))?;
        for streams in STREAMS {
            let (mut gbps, mut cpu) = (Vec::new(), Vec::new());
            for rep in 0..reps {
                let before = ticks(procs);
                let (bytes, s) = iperf3(
                    *front,
                    streams,
                    secs,
                    &dir.join(format!("iperf3-{}-{streams}-{rep}.json", r.key)),
                )?;
                let used = ticks(procs).saturating_sub(before) as f64 / 100.0;
                gbps.push(bytes * 8.0 / s / 1e9);
                cpu.push(used / (bytes / 1e9));
            }
            let t = Throughput {
                key: r.key,
                name: r.name,
                streams,
                gbps: med_spread(gbps),
                cpu_s_per_gb: (!procs.is_empty()).then(|| med_spread(cpu)),
            };
            eprintln!(
                "TCP {} stream(s) {}: {:.2} Gbit/s",
                streams, r.name, t.gbps.0
            );
            out.push(t);
        }
    }
    Ok(out)
}

/// New mTLS connections a second at one server-side proxy, and its CPU per connection.
struct Connections {
    key: &'static str,
    name: &'static str,
    per_s: (f64, f64, f64),
    failed: u64,
    cpu_ms: (f64, f64, f64),
}

async fn measure_connections(
    routes: &[Route],
    client: &std::sync::Arc<strait_tls::rustls::ClientConfig>,
    server: &strait_core::identity::Identity,
    secs: u64,
    reps: u32,
) -> Vec<Connections> {
    let mut out = Vec::new();
    for r in routes {
        let Some((addr, pid)) = r.tls else {
            continue;
        };
        let (mut rate, mut cpu, mut failed) = (Vec::new(), Vec::new(), 0);
        for _ in 0..reps {
            let before = ticks(&[("server", pid)]);
            let (ok, bad) =
                mtls::connection_rate(client.clone(), server.clone(), addr, secs, HANDSHAKERS)
                    .await;
            let used = ticks(&[("server", pid)]).saturating_sub(before);
            failed += bad;
            rate.push(ok as f64 / secs as f64);
            cpu.push(used as f64 * 10.0 / ok.max(1) as f64);
        }
        let c = Connections {
            key: r.key,
            name: r.name,
            per_s: med_spread(rate),
            failed,
            cpu_ms: med_spread(cpu),
        };
        eprintln!("new mTLS connections {}: {:.0}/s", r.name, c.per_s.0);
        out.push(c);
    }
    out
}

/// The RSS one server-side proxy holds beyond its start for [`HELD`] idle, then [`HELD`]
/// active, mTLS connections (kB).
struct Held {
    key: &'static str,
    name: &'static str,
    idle_kb: i64,
    active_kb: i64,
}

async fn measure_held(
    routes: &[Route],
    client: &std::sync::Arc<strait_tls::rustls::ClientConfig>,
    server: &strait_core::identity::Identity,
) -> anyhow::Result<Vec<Held>> {
    let settle = || tokio::time::sleep(Duration::from_millis(500));
    let mut out = Vec::new();
    for r in routes {
        let Some((addr, pid)) = r.tls else {
            continue;
        };
        // Both from the RSS before the first connection: memory the idle ones freed stays
        // in the allocator's hands and serves the active ones.
        settle().await;
        let before = rss_kb(pid) as i64;
        let mut grew = [0i64; 2];
        for (i, active) in [false, true].into_iter().enumerate() {
            let conns = mtls::hold(client, server, addr, HELD, active).await?;
            settle().await;
            grew[i] = rss_kb(pid) as i64 - before;
            drop(conns);
            settle().await;
        }
        eprintln!(
            "RSS per {HELD} mTLS connections {}: idle {} kB, active {} kB",
            r.name, grew[0], grew[1]
        );
        out.push(Held {
            key: r.key,
            name: r.name,
            idle_kb: grew[0],
            active_kb: grew[1],
        });
    }
    Ok(out)
}

fn write_throughput(
    md: &mut String,
    rows: &[Throughput],
    secs: u64,
    reps: u32,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(md)?;
    writeln!(md, "## TCP throughput (iperf3)")?;
    writeln!(md)?;
    writeln!(
        md,
        "`iperf3 -c 127.0.0.1 -p FRONT -t {secs} -P STREAMS -J` through each pair's TCP path into one `iperf3 -s` (both on CPU {LOAD_CPU}); the median of {reps} runs (min–max). CPU: utime + stime of the path's proxies per GB received."
    )?;
    writeln!(md)?;
    writeln!(md, "| path | streams | Gbit/s | CPU-s / GB |")?;
    writeln!(md, "|---|---|---|---|")?;
    for t in rows {
        let cpu = t.cpu_s_per_gb.map_or("—".to_owned(), |c| {
            format!("{:.2} ({:.2}–{:.2})", c.0, c.1, c.2)
        });
        writeln!(
            md,
            "| {} | {} | {:.2} ({:.2}–{:.2}) | {cpu} |",
            t.name, t.streams, t.gbps.0, t.gbps.1, t.gbps.2
        )?;
    }
    Ok(())
}

fn write_connections(
    md: &mut String,
    rows: &[Connections],
    secs: u64,
    reps: u32,
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(md)?;
    writeln!(md, "## New mTLS connections per second (server side)")?;
    writeln!(md)?;
    writeln!(
        md,
        "{HANDSHAKERS} loops of the benchmark's own rustls client (`strait_bench::mtls`, on CPU {LOAD_CPU}) for {secs} s, each connection a full TLS 1.3 handshake with the client's certificate, one `GET` with `Connection: close`, and the close; the median of {reps} runs (min–max). CPU: utime + stime of the server-side proxy per connection."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| server side | connections / s | failed | CPU ms / connection |"
    )?;
    writeln!(md, "|---|---|---|---|")?;
    for c in rows {
        writeln!(
            md,
            "| {} | {:.0} ({:.0}–{:.0}) | {} | {:.3} ({:.3}–{:.3}) |",
            c.name, c.per_s.0, c.per_s.1, c.per_s.2, c.failed, c.cpu_ms.0, c.cpu_ms.1, c.cpu_ms.2
        )?;
    }
    Ok(())
}

fn write_held(md: &mut String, rows: &[Held]) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(md)?;
    writeln!(md, "## Memory per open mTLS connection (server side)")?;
    writeln!(md)?;
    writeln!(
        md,
        "How much the server-side proxy's RSS exceeds its RSS before the first connection while the benchmark holds {HELD} mTLS connections to it: idle (handshaken, no request), then, after those closed, active (each has carried one request to the upstream and stays open). One run."
    )?;
    writeln!(md)?;
    writeln!(
        md,
        "| server side | idle, kB per {HELD} | KiB per idle connection | active, kB per {HELD} |"
    )?;
    writeln!(md, "|---|---|---|---|")?;
    for h in rows {
        writeln!(
            md,
            "| {} | {} | {:.1} | {} |",
            h.name,
            h.idle_kb,
            h.idle_kb as f64 / HELD as f64,
            h.active_kb
        )?;
    }
    Ok(())
}

/// A latency row, for the goals.
struct LatencyRow {
    proto: Proto,
    rate: u32,
    key: &'static str,
    p99: f64,
    cpu: f64,
}

/// Where Strait stands against each goal of issue 20, computed from this run's figures.
fn write_goals(
    md: &mut String,
    latency: &[LatencyRow],
    idle: &[(&'static str, String, u64)],
    throughput: &[Throughput],
    connections: &[Connections],
    held: &[Held],
) -> anyhow::Result<()> {
    const PEERS: [&str; 2] = ["haproxy", "nginx"];
    let verdict = |met: bool| if met { "met" } else { "**not met**" };
    writeln!(md)?;
    writeln!(md, "## Goals")?;
    writeln!(md)?;
    writeln!(md, "| goal | where | Strait | better peer | |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    let direct = |proto: Proto, rate: u32| {
        latency
            .iter()
            .find(|l| l.proto == proto && l.rate == rate && l.key == "direct")
            .map(|l| l.p99)
    };
    for s in latency.iter().filter(|l| l.key == "strait") {
        let peers = latency
            .iter()
            .filter(|l| l.proto == s.proto && l.rate == s.rate && PEERS.contains(&l.key));
        let where_ = format!("{} {} req/s", s.proto.label(), s.rate);
        if let Some(d) = direct(s.proto, s.rate) {
            let best = peers.clone().map(|l| l.p99 - d).reduce(f64::min);
            if let Some(best) = best {
                let ours = s.p99 - d;
                writeln!(
                    md,
                    "| added p99 ≤ the better peer's | {where_} | {ours:+.3} ms | {best:+.3} ms | {} |",
                    verdict(ours <= best)
                )?;
            }
        }
        if let Some(best) = peers.map(|l| l.cpu).reduce(f64::min) {
            writeln!(
                md,
                "| CPU per request ≤ the peers' | {where_} | {:.0} ms / 1k | {best:.0} ms / 1k | {} |",
                s.cpu,
                verdict(s.cpu <= best)
            )?;
        }
    }
    for s in throughput.iter().filter(|t| t.key == "strait") {
        let best = throughput
            .iter()
            .filter(|t| t.streams == s.streams && PEERS.contains(&t.key))
            .map(|t| t.gbps.0)
            .reduce(f64::max);
        if let Some(best) = best {
            writeln!(
                md,
                "| throughput ≥ the better peer's | {} stream(s) | {:.2} Gbit/s | {best:.2} Gbit/s | {} |",
                s.streams,
                s.gbps.0,
                verdict(s.gbps.0 >= best)
            )?;
        }
    }
    if let Some(s) = connections.iter().find(|c| c.key == "strait") {
        let best = connections
            .iter()
            .filter(|c| PEERS.contains(&c.key))
            .map(|c| c.per_s.0)
            .reduce(f64::max);
        if let Some(best) = best {
            writeln!(
                md,
                "| new connections / s ≥ the better peer's | server side | {:.0} / s | {best:.0} / s | {} |",
                s.per_s.0,
                verdict(s.per_s.0 >= best)
            )?;
        }
    }
    for (_, name, kb) in idle.iter().filter(|(k, _, _)| *k == "strait") {
        writeln!(
            md,
            "| proxy idle RSS ≤ 5 MB | {name} | {kb} kB | — | {} |",
            verdict(*kb <= 5 * 1024)
        )?;
    }
    if let Some(h) = held.iter().find(|h| h.key == "strait") {
        let per = h.idle_kb as f64 / HELD as f64;
        writeln!(
            md,
            "| ≤ 16 KiB per idle mTLS connection | server side | {per:.1} KiB | — | {} |",
            verdict(per <= 16.0)
        )?;
    }
    Ok(())
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let pki = Pki::write(dir)?;
    let app = loopback(free_port()?);
    let mut server = pinned(Some(LOAD_CPU), Path::new("fortio"));
    server
        .arg("server")
        .arg("-http-port")
        .arg(app.to_string())
        .args([
            "-grpc-port",
            "disabled",
            "-redirect-port",
            "disabled",
            "-quiet",
        ]);
    let _server = spawn("fortio server", server, &dir.join("fortio-server.log"))?;
    listening(app, "fortio server", &dir.join("fortio-server.log")).await?;
    let iperf = loopback(free_port()?);
    let mut iperf_server = pinned(Some(LOAD_CPU), Path::new("iperf3"));
    iperf_server
        .args(["-s", "-B", "127.0.0.1", "-p"])
        .arg(iperf.port().to_string());
    let _iperf_server = spawn("iperf3 -s", iperf_server, &dir.join("iperf3-server.log"))?;
    listening(iperf, "iperf3 server", &dir.join("iperf3-server.log")).await?;
    let want = |key: &str| args.only.is_empty() || args.only.iter().any(|o| o == key);
    let figure = |f: Figure| args.figures.is_empty() || args.figures.contains(&f);
    let mut routes = Vec::new();
    if want("direct") {
        routes.push(Route {
            key: "direct",
            name: "direct",
            h1: app,
            h2: app,
            procs: Vec::new(),
            tcp: Some((iperf, Vec::new())),
            tls: None,
        });
    }
    let strait = if want("strait") {
        let pair = Pair::start(&pki, app, Some(PROXY_CPU)).await?;
        // The TCP path: a second pair whose upstream is iperf3 (detected as opaque).
        let tcp = Pair::start(&pki, iperf, Some(PROXY_CPU)).await?;
        routes.push(Route {
            key: "strait",
            name: "Strait proxy pair",
            h1: pair.outbound,
            h2: pair.outbound,
            procs: vec![("client", pair.client.pid()), ("server", pair.server.pid())],
            tcp: Some((
                tcp.outbound,
                vec![("client", tcp.client.pid()), ("server", tcp.server.pid())],
            )),
            tls: Some((pair.inbound, pair.server.pid())),
        });
        Some((pair, tcp))
    } else {
        None
    };
    let gateway = if want("gateway") {
        let path = GatewayPath::start(&pki, app, Some(PROXY_CPU)).await?;
        routes.push(Route {
            key: "gateway",
            name: "Strait through the gateway",
            h1: path.outbound,
            h2: path.outbound,
            procs: vec![
                ("client", path.client.pid()),
                ("gateway", path.gateway.pid()),
                ("server", path.server.pid()),
            ],
            tcp: None,
            tls: None,
        });
        Some(path)
    } else {
        None
    };
    let haproxy = if want("haproxy") {
        let p = haproxy(&pki, dir, app, iperf).await?;
        let procs = vec![
            ("client", pid_of(&p.procs[1])),
            ("server", pid_of(&p.procs[0])),
        ];
        routes.push(Route {
            key: "haproxy",
            name: "HAProxy pair",
            h1: p.front,
            h2: p.front_h2,
            procs: procs.clone(),
            tcp: Some((p.tcp_front, procs)),
            tls: Some((p.tls, pid_of(&p.procs[0]))),
        });
        Some(p)
    } else {
        None
    };
    let nginx = if want("nginx") {
        let p = nginx(&pki, dir, app, iperf).await?;
        let procs = vec![
            ("client", pid_of(&p.procs[1])),
            ("server", pid_of(&p.procs[0])),
        ];
        routes.push(Route {
            key: "nginx",
            name: "nginx pair",
            h1: p.front,
            h2: p.front_h2,
            procs: procs.clone(),
            tcp: Some((p.tcp_front, procs)),
            tls: Some((p.tls, pid_of(&p.procs[0]))),
        });
        Some(p)
    } else {
        None
    };
    // Idle RSS: started, before any request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle: Vec<(&'static str, String, u64)> = routes
        .iter()
        .flat_map(|r| {
            r.procs
                .iter()
                .map(|(role, pid)| (r.key, format!("{} ({role} side)", r.name), rss_kb(*pid)))
        })
        .collect();
    let idle_anon: Vec<u64> = routes
        .iter()
        .flat_map(|r| r.procs.iter().map(|(_, pid)| anon_kb(*pid)))
        .collect();
    let rates: Vec<u32> = if args.rates.is_empty() {
        RATES.to_vec()
    } else {
        args.rates.clone()
    };
    // Warm every path (connections, discovery, TLS).
    let latency_protos: &[Proto] = if figure(Figure::Latency) {
        &args.protos
    } else {
        &[]
    };
    for r in &routes {
        for proto in latency_protos {
            let target = if *proto == Proto::H2 { r.h2 } else { r.h1 };
            let load = Load {
                rate: 200,
                secs: 1,
                proto: *proto,
                uniform: false,
            };
            fortio_load(target, load, &dir.join("warm.json"))
                .with_context(|| format!("warming {} ({})", r.name, proto.label()))?;
        }
    }
    let mut table: BTreeMap<(usize, u32, usize), Summary> = BTreeMap::new();
    for (pi, proto) in latency_protos.iter().enumerate() {
        for &rate in &rates {
            for (i, r) in routes.iter().enumerate() {
                let target = if *proto == Proto::H2 { r.h2 } else { r.h1 };
                let load = Load {
                    rate,
                    secs: args.secs,
                    proto: *proto,
                    uniform: args.uniform,
                };
                let mut runs = Vec::new();
                for rep in 0..args.reps {
                    let tag = format!("{}-{}-{rate}-{rep}", r.key, proto.label().replace('/', ""));
                    let _perf = match &args.profile {
                        Some(pdir) if !r.procs.is_empty() => start_profile(
                            pdir,
                            &tag,
                            &r.procs,
                            args.secs,
                            r.key == "strait" && rep == 0,
                        )?,
                        _ => Vec::new(),
                    };
                    let before = ticks(&r.procs);
                    let mut run = fortio_load(target, load, &dir.join(format!("{tag}.json")))?;
                    run.cpu_ticks = ticks(&r.procs).saturating_sub(before);
                    runs.push(run);
                    if args.profile.is_some() {
                        // Let perf write its files before the next run.
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
                let m = median(&runs);
                eprintln!(
                    "{} {rate} req/s {}: p50 {:.3} ms, p99 {:.3} ms, CPU {:.1} ms/1k req",
                    proto.label(),
                    r.name,
                    m.med[0],
                    m.med[2],
                    m.cpu.0
                );
                table.insert((pi, rate, i), m);
            }
        }
    }

    let throughput = if figure(Figure::Throughput) {
        measure_throughput(&routes, args.secs, args.reps, dir)?
    } else {
        Vec::new()
    };
    let client = mtls::client(&pki.side("client"))?;
    let server_id: strait_core::identity::Identity = SERVER_ID.parse()?;
    let connections = if figure(Figure::Connections) {
        measure_connections(&routes, &client, &server_id, args.secs, args.reps).await
    } else {
        Vec::new()
    };
    let held = if figure(Figure::Memory) {
        measure_held(&routes, &client, &server_id).await?
    } else {
        Vec::new()
    };

    let mut md = String::new();
    writeln!(md, "# Benchmarks: Strait beside its peers")?;
    writeln!(md)?;
    writeln!(
        md,
        "Written by `bench/run` (`peers --secs {} --reps {}{}{}`).",
        args.secs,
        args.reps,
        if args.uniform { " --uniform" } else { "" },
        if args.only.is_empty() {
            String::new()
        } else {
            format!(" --only {}", args.only.join(","))
        }
    )?;
    writeln!(md)?;
    writeln!(md, "- machine: {}", machine())?;
    let shipped = |role: &str| match strait_bench::pair::program(role) {
        Ok(p) => p.display().to_string(),
        Err(e) => format!("({e})"),
    };
    writeln!(
        md,
        "- strait: {} (release build); proxies: `{}`, gateway: `{}`",
        version("git", &["describe", "--always", "--dirty"]),
        shipped("proxy"),
        shipped("gateway"),
    )?;
    writeln!(
        md,
        "- {}; {}; fortio {}",
        version("haproxy", &["-v"]),
        version("nginx", &["-v"]),
        version("fortio", &["version"])
    )?;
    writeln!(
        md,
        "- load: `fortio load [-h2] -qps RATE -c {CONNECTIONS} -t {}s{}` of `GET /?size={BODY}` (1 KB answers from `fortio server`); proxies pinned to CPU {PROXY_CPU}, load and server to CPU {LOAD_CPU}",
        args.secs,
        if args.uniform { " -uniform" } else { "" }
    )?;
    writeln!(
        md,
        "- each figure: the median of {} runs, (min–max) beside it; ms. CPU: utime + stime of every proxy on the path (/proc/PID/stat) per 1,000 requests, ms",
        args.reps
    )?;
    for (pi, proto) in latency_protos.iter().enumerate() {
        writeln!(md)?;
        writeln!(
            md,
            "## Added latency at fixed rates ({}, 1 KB)",
            proto.label()
        )?;
        for &rate in &rates {
            writeln!(md)?;
            writeln!(md, "### {rate} req/s, {}", proto.label())?;
            writeln!(md)?;
            writeln!(
                md,
                "| path | p50 | p90 | p99 | p99.9 | max | failed | added p50 | added p99 | CPU ms / 1k req |"
            )?;
            writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
            let direct = routes
                .iter()
                .position(|r| r.key == "direct")
                .and_then(|d| table.get(&(pi, rate, d)));
            for (i, r) in routes.iter().enumerate() {
                let Some(m) = table.get(&(pi, rate, i)) else {
                    continue;
                };
                let cells: Vec<String> = (0..5)
                    .map(|k| {
                        format!(
                            "{:.3} ({:.3}–{:.3})",
                            m.med[k], m.spread[k].0, m.spread[k].1
                        )
                    })
                    .collect();
                let added = |k: usize| match direct {
                    Some(d) if r.key != "direct" => format!("{:+.3}", m.med[k] - d.med[k]),
                    _ => "—".to_owned(),
                };
                let cpu = if r.procs.is_empty() {
                    "—".to_owned()
                } else {
                    format!("{:.0} ({:.0}–{:.0})", m.cpu.0, m.cpu.1, m.cpu.2)
                };
                writeln!(
                    md,
                    "| {} | {} | {} | {} | {} | {cpu} |",
                    r.name,
                    cells.join(" | "),
                    m.failed,
                    added(0),
                    added(2)
                )?;
            }
        }
    }
    writeln!(md)?;
    writeln!(md, "## Memory")?;
    writeln!(md)?;
    writeln!(
        md,
        "Started, before any request. RSS counts every resident page the process maps, its \
         binary's and libc's too, which every copy of the same image on a node shares; \
         anonymous is the memory that is the process's own (heap, stacks), what one more \
         sidecar costs (`/proc/PID/smaps_rollup`)."
    )?;
    writeln!(md)?;
    writeln!(md, "| proxy | RSS idle | anonymous idle |")?;
    writeln!(md, "|---|---|---|")?;
    for ((_, name, kb), anon) in idle.iter().zip(&idle_anon) {
        writeln!(md, "| {name} | {kb} kB | {anon} kB |")?;
    }
    write_throughput(&mut md, &throughput, args.secs, args.reps)?;
    write_connections(&mut md, &connections, args.secs, args.reps)?;
    write_held(&mut md, &held)?;
    let latency: Vec<LatencyRow> = table
        .iter()
        .map(|(&(pi, rate, i), m)| LatencyRow {
            proto: latency_protos[pi],
            rate,
            key: routes[i].key,
            p99: m.med[2],
            cpu: m.cpu.0,
        })
        .collect();
    write_goals(&mut md, &latency, &idle, &throughput, &connections, &held)?;
    print!("{md}");
    if let Some(out) = &args.out {
        std::fs::write(out, &md).with_context(|| format!("writing {}", out.display()))?;
    }
    drop((strait, gateway, haproxy, nginx));
    Ok(())
}
