//! Identity issuance: Certify latency (p50/p99) and calls per second against an in-process
//! identity server over loopback gRPC, beside a baseline in the same run — the same issuance
//! done directly in process (`Issuer::issue`, no gRPC, no token review), the least any
//! Certify can cost.
//!
//! ```text
//! cargo run -p strait-bench --bin identity [-- --count 2000 --concurrency 8]
//! ```
//!
//! No cluster: tokens are reviewed by an in-memory table. Bounded: at most 20,000 calls per
//! phase and `--max-seconds` (default 20 s) per phase; traffic goes to 127.0.0.1 only.

use anyhow::Context;
use clap::Parser;
use linkerd2_proxy_api::identity::CertifyRequest;
use linkerd2_proxy_api::identity::identity_client::IdentityClient;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use strait_control_plane::identity::{
    IDENTITY_AUDIENCE, IdentityService, IdentitySettings, Metrics, StaticTokenReviewer,
};
use strait_core::identity::Identity;
use strait_tls::{DEFAULT_ANCHOR_LIFETIME, DEFAULT_ISSUER_LIFETIME, DEFAULT_LEAF_LIFETIME, Issuer};

#[derive(Parser, Debug)]
struct Args {
    /// Calls per phase (at most 20,000).
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Concurrent callers in the throughput phase (at most 64).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Time limit per phase, in seconds (at most 120).
    #[arg(long, default_value_t = 20)]
    max_seconds: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let count = args.count.clamp(1, 20_000);
    let concurrency = args.concurrency.clamp(1, 64);
    let limit = Duration::from_secs(args.max_seconds.clamp(1, 120));

    let now = SystemTime::now();
    let anchor = Issuer::generate_anchor("cluster.local", DEFAULT_ANCHOR_LIFETIME, now)?;
    let issuer = Arc::new(anchor.generate_issuer(
        "identity.strait.cluster.local",
        DEFAULT_ISSUER_LIFETIME,
        now,
    )?);
    let id: Identity = "web.shop.serviceaccount.identity.strait.cluster.local".parse()?;
    // CSRs are made before timing: the bench measures the server, not the client's keygen.
    let csrs: Vec<Vec<u8>> = (0..count.min(256))
        .map(|_| strait_tls::generate_csr(&id).map(|k| k.csr))
        .collect::<Result<_, _>>()?;

    // Baseline: issuance in process.
    let mut base = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        if started.elapsed() > limit {
            break;
        }
        let t = Instant::now();
        issuer.issue(
            &csrs[i % csrs.len()],
            &id,
            DEFAULT_LEAF_LIFETIME,
            SystemTime::now(),
        )?;
        base.push(t.elapsed());
    }
    let base_rate = base.len() as f64 / started.elapsed().as_secs_f64();

    // The server, on loopback.
    let svc = IdentityService::new(
        IdentitySettings {
            trust_domain: "cluster.local".into(),
            control_namespace: "strait".into(),
            lifetime: DEFAULT_LEAF_LIFETIME,
        },
        tokio::sync::watch::channel(issuer.clone()).1,
        Arc::new(StaticTokenReviewer::default().with(
            "web-token",
            Some(IDENTITY_AUDIENCE),
            "system:serviceaccount:shop:web",
        )),
        Metrics::new(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(strait_control_plane::identity::serve(
        listener,
        svc,
        std::future::pending(),
    ));
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .context("connecting to the in-process identity server")?;
    let request = |i: usize| CertifyRequest {
        identity: id.to_string(),
        token: b"web-token".to_vec(),
        certificate_signing_request: csrs[i % csrs.len()].clone(),
    };

    // Latency: one call at a time.
    let mut client = IdentityClient::new(channel.clone());
    let mut lat = Vec::with_capacity(count);
    let started = Instant::now();
    for i in 0..count {
        if started.elapsed() > limit {
            break;
        }
        let t = Instant::now();
        client.certify(request(i)).await?;
        lat.push(t.elapsed());
    }
    let seq_rate = lat.len() as f64 / started.elapsed().as_secs_f64();

    // Throughput: `concurrency` callers sharing one HTTP/2 connection.
    let started = Instant::now();
    let per = count.div_ceil(concurrency);
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..concurrency {
        let mut client = IdentityClient::new(channel.clone());
        let reqs: Vec<_> = (0..per).map(|i| request(w * per + i)).collect();
        tasks.spawn(async move {
            let mut done = 0usize;
            for r in reqs {
                if started.elapsed() > limit {
                    break;
                }
                client.certify(r).await?;
                done += 1;
            }
            Ok::<_, tonic::Status>(done)
        });
    }
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        done += r??;
    }
    let par_rate = done as f64 / started.elapsed().as_secs_f64();

    println!("identity issuance (ECDSA P-256 leaf, 24 h), {count} calls per phase");
    println!(
        "  baseline  Issuer::issue in process   p50 {:>8.3} ms  p99 {:>8.3} ms  {:>7.0} /s  (n={})",
        ms(pct(&mut base, 50.0)),
        ms(pct(&mut base, 99.0)),
        base_rate,
        base.len()
    );
    println!(
        "  strait    Certify over loopback       p50 {:>8.3} ms  p99 {:>8.3} ms  {:>7.0} /s  (n={}, 1 caller)",
        ms(pct(&mut lat, 50.0)),
        ms(pct(&mut lat, 99.0)),
        seq_rate,
        lat.len()
    );
    println!(
        "  strait    Certify, {concurrency} callers          {par_rate:>7.0} calls/s (n={done})"
    );
    Ok(())
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort_unstable();
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
