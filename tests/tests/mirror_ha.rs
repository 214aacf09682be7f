//! Two replicas of the service mirror, each the real `strait-mirror` binary in its own
//! process (`e2e-mirror`), with different holder identities and one Lease on west's real API
//! server; east exports Services, its gateway stood in as in the `mirror` tests
//! ([`linked_pair`]).
//!
//! Proved, in order: exactly one replica holds the Lease and mirrors; the other writes
//! nothing, reports `strait_mirror_leader 0` and `/ready` 200 `standby`. The leader killed
//! (SIGKILL): the follower takes the Lease only after it went unrenewed for its duration, and
//! mirrors a Service exported and drops one unexported after the kill; no orphan, no
//! duplicate. A leader that is still running but lost the Lease (stopped with SIGSTOP while a
//! new replica takes over, then continued) stops serving and exits. A leader shut down
//! gracefully (SIGTERM) releases the Lease as it exits, and the next replica takes over.
//!
//! Run: `cargo test -p strait-e2e --test mirror_ha -- --nocapture` (as root).
#![allow(clippy::unwrap_used)]

mod mirror_support;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, PostParams};
use mirror_support::*;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use strait_core::labels;
use strait_localcluster::{Cluster, PodSpec, Process};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MIRROR: &str = env!("CARGO_BIN_EXE_e2e-mirror");
/// The Lease every replica contends for (the binary's default name).
const LEASE: &str = "strait-mirror";
/// Short, so that failover happens within the test; the replicas renew every fifth of it.
const LEASE_DURATION: Duration = Duration::from_secs(4);

/// One replica: the binary as its own process, with its own admin address. Killed (SIGKILL)
/// when dropped, also when the test fails.
struct Replica {
    id: String,
    admin: SocketAddr,
    process: Process,
}

impl Replica {
    fn start(id: &str, west: &Cluster, anchors: &Path, logs: &Path) -> Res<Self> {
        // A free loopback port for /metrics and /ready.
        let admin = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let mut cmd = std::process::Command::new(MIRROR);
        cmd.arg("--namespace")
            .arg(LINK_NS)
            .arg("--trust-anchors")
            .arg(anchors)
            .arg("--kubeconfig")
            .arg(west.kubeconfig_path())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--holder-identity")
            .arg(id)
            .arg("--lease-duration")
            .arg(format!("{}s", LEASE_DURATION.as_secs()))
            .env("RUST_LOG", "info,kube=warn,strait_mirror=debug");
        let process = Process::spawn(id, cmd, logs.join(format!("{id}.log")))?;
        Ok(Self {
            id: id.into(),
            admin,
            process,
        })
    }

    /// `(status, body)` of a GET on the admin server, if it answers.
    async fn get(&self, path: &str) -> Option<(u16, String)> {
        let ask = async {
            let mut s = tokio::net::TcpStream::connect(self.admin).await.ok()?;
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .ok()?;
            let mut rsp = Vec::new();
            s.read_to_end(&mut rsp).await.ok()?;
            let rsp = String::from_utf8(rsp).ok()?;
            let code = rsp.split(' ').nth(1)?.parse().ok()?;
            let (_, body) = rsp.split_once("\r\n\r\n")?;
            Some((code, body.to_string()))
        };
        tokio::time::timeout(Duration::from_secs(5), ask)
            .await
            .ok()
            .flatten()
    }

    async fn metrics(&self) -> Option<Metrics> {
        let (code, body) = self.get("/metrics").await?;
        (code == 200).then_some(Metrics(body))
    }

    /// Sends `signal` (a `kill` name: STOP, CONT, TERM).
    fn signal(&self, signal: &str) -> Res {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.process.pid().to_string())
            .status()?;
        if !status.success() {
            return Err(format!("kill -{signal} {}: {status}", self.id).into());
        }
        Ok(())
    }

    /// Waits for the process to exit on its own, up to `limit` (then kills it).
    fn wait_exit(&mut self, limit: Duration) -> Res<std::process::ExitStatus> {
        tokio::task::block_in_place(|| self.process.wait_timeout(limit))
            .ok_or_else(|| format!("{} did not exit within {limit:?}", self.id).into())
    }
}

/// A replica's Prometheus text.
struct Metrics(String);

impl Metrics {
    /// The sum of a metric's samples whose labels contain every one of `with`.
    fn sum(&self, name: &str, with: &[&str]) -> f64 {
        self.0
            .lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter(|l| with.iter().all(|w| l.contains(w)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn leader(&self) -> f64 {
        self.sum("strait_mirror_leader", &[])
    }

    /// Writes sent to the API server (everything but the Lease, which is not counted).
    fn writes(&self) -> f64 {
        ["apply", "create", "delete", "patch"]
            .iter()
            .map(|v| {
                self.sum(
                    "strait_mirror_api_requests_total",
                    &[&format!("verb=\"{v}\"")],
                )
            })
            .sum()
    }

    /// Every request to the API server but the Lease's.
    fn requests(&self) -> f64 {
        self.sum("strait_mirror_api_requests_total", &[])
    }
}

async fn lease(w: &Client) -> Option<LeaseSpec> {
    Api::<Lease>::namespaced(w.clone(), LINK_NS)
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()?
        .spec
}

/// The Lease's holder, if someone holds it.
async fn holder(w: &Client) -> Option<String> {
    lease(w).await?.holder_identity.filter(|h| !h.is_empty())
}

/// Waits until the mirrors labelled as ours (Services and slices alike) are exactly `want`
/// (`namespace/name` of east's Services, mirrored as `<name>-east`).
async fn mirrors_are(w: &Client, want: &[&str]) -> Res {
    let want: BTreeSet<String> = want.iter().map(|k| format!("{k}-east")).collect();
    wait_for(&format!("exactly the mirrors {want:?}"), T, || async {
        let (svcs, slices) = our_mirrors(w).await.ok()?;
        (svcs == want && slices == want).then_some(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mirror_replicas_fail_over() -> Res {
    init("info,kube=warn");
    let web = PodSpec::new("shop", "web").label("app", "web");
    // `_gw` answers the leader's probes until the test ends.
    let (west, east, Linked { pki, gw: _gw, .. }, [_web_pod]) =
        linked_pair(&["shop"], &["shop"], [web]).await?;
    let (w, e) = (west.client(), east.client());
    let pp = PostParams::default();
    let esvc = Api::<Service>::namespaced(e.clone(), "shop");
    let web = service("shop", "web", 80, &[EXPORTED], Some("web"))?;
    esvc.create(&pp, &web).await?;
    esvc.create(&pp, &service("shop", "old", 81, &[EXPORTED], None)?)
        .await?;

    let dir = tempfile::tempdir()?;
    let anchors = dir.path().join("anchors.pem");
    std::fs::write(&anchors, &pki.anchor_pem)?;
    let start = |id: &str| Replica::start(id, &west, &anchors, dir.path());
    let mut replicas = Vec::new();
    let test_start = Instant::now();
    let outcome: Res = async {
        // ---- two replicas: one leads, the other stands by and writes nothing
        replicas.push(start("replica-a")?);
        replicas.push(start("replica-b")?);
        let first = wait_for("one replica holds the Lease", T, || holder(&w)).await?;
        let (l, f) = match first.as_str() {
            "replica-a" => (0, 1),
            "replica-b" => (1, 0),
            other => return Err(format!("the Lease is held by {other}").into()),
        };
        mirrors_are(&w, &["shop/web", "shop/old"]).await?;
        wait_for(
            "web-east ready (the leader probes the gateway)",
            T,
            || async {
                get_slice(&w, "shop", "web-east")
                    .await
                    .filter(|s| slice_ready(s) == Some(true))
            },
        )
        .await?;
        wait_for("the leader reports itself leader and ready", T, || async {
            let m = replicas[l].metrics().await?;
            let ready = replicas[l].get("/ready").await?;
            (m.leader() == 1.0 && ready.0 == 200).then_some(())
        })
        .await?;
        // Let the leader renew a few times; the follower reads the Lease all along.
        let renewed = lease(&w).await.ok_or("no Lease")?.renew_time;
        wait_for("the leader renews", T, || async {
            lease(&w).await.filter(|s| s.renew_time != renewed)
        })
        .await?;
        assert_eq!(holder(&w).await.as_deref(), Some(first.as_str()));
        let fm = replicas[f].metrics().await.ok_or("follower /metrics")?;
        assert_eq!(fm.leader(), 0.0, "{}", fm.0);
        assert_eq!(fm.writes(), 0.0, "the follower wrote: {}", fm.0);
        assert_eq!(
            fm.requests(),
            0.0,
            "the follower did more than read the Lease"
        );
        let lm = replicas[l].metrics().await.ok_or("leader /metrics")?;
        assert!(lm.writes() > 0.0, "{}", lm.0);
        assert_eq!(
            replicas[f].get("/ready").await,
            Some((200, "standby\n".into()))
        );
        println!(
            "{first} leads; the follower sent no writes, the leader {}",
            lm.writes()
        );

        // ---- the leader dies (SIGKILL): the follower takes over, after the Lease expired
        replicas[l].process.kill();
        let last = lease(&w).await.ok_or("no Lease")?;
        assert_eq!(last.holder_identity.as_deref(), Some(first.as_str()));
        let killed = Instant::now();
        // Changes while nobody leads.
        esvc.create(&pp, &service("shop", "cart", 82, &[EXPORTED], None)?)
            .await?;
        set_labels(
            &e,
            "shop",
            "old",
            serde_json::json!({labels::EXPORTED: null}),
        )
        .await?;
        let second = replicas[f].id.clone();
        let taken = wait_for("the follower takes the Lease", T, || async {
            lease(&w)
                .await
                .filter(|s| s.holder_identity.as_ref() == Some(&second))
        })
        .await?;
        println!(
            "{second} took the Lease {:?} after the kill",
            killed.elapsed()
        );
        // Not before the old leader's last renewal had aged by the lease duration (one
        // machine, so both timestamps come from the same clock).
        let (Some(renewed), Some(acquired)) = (&last.renew_time, &taken.acquire_time) else {
            return Err(format!("Lease times missing: {last:?} {taken:?}").into());
        };
        let gap = acquired.0.duration_since(renewed.0);
        assert!(
            gap >= k8s_openapi::jiff::SignedDuration::try_from(LEASE_DURATION)?,
            "taken {gap:?} after the last renewal, before the lease expired"
        );
        assert_eq!(
            taken.lease_transitions,
            last.lease_transitions.map(|t| t + 1)
        );
        mirrors_are(&w, &["shop/web", "shop/cart"]).await?;
        wait_for("the new leader reports itself leader", T, || async {
            (replicas[f].metrics().await?.leader() == 1.0).then_some(())
        })
        .await?;

        // ---- a leader that is still running after losing the Lease stops
        replicas.push(start("replica-c")?);
        wait_for("replica-c stands by", T, || async {
            (replicas[2].get("/ready").await? == (200, "standby\n".into())).then_some(())
        })
        .await?;
        replicas[f].signal("STOP")?;
        esvc.create(&pp, &service("shop", "late", 83, &[EXPORTED], None)?)
            .await?;
        wait_for(
            "replica-c takes the Lease from the stopped leader",
            T,
            || async { (holder(&w).await? == "replica-c").then_some(()) },
        )
        .await?;
        mirrors_are(&w, &["shop/web", "shop/cart", "shop/late"]).await?;
        replicas[f].signal("CONT")?;
        let status = replicas[f].wait_exit(T)?;
        assert!(!status.success(), "{second} exited with {status}");
        let log = replicas[f].process.log_tail(50);
        assert!(log.contains("leadership lost"), "{log}");
        assert_eq!(holder(&w).await.as_deref(), Some("replica-c"));
        mirrors_are(&w, &["shop/web", "shop/cart", "shop/late"]).await?;

        // ---- a graceful shutdown (SIGTERM) releases the Lease on the way out
        replicas.push(start("replica-d")?);
        wait_for("replica-d stands by", T, || async {
            (replicas[3].get("/ready").await? == (200, "standby\n".into())).then_some(())
        })
        .await?;
        replicas[2].signal("TERM")?;
        let status = replicas[2].wait_exit(T)?;
        assert!(status.success(), "replica-c exited with {status}");
        // With a SIGKILL the Lease would still name replica-c here, until it expired.
        let after = holder(&w).await;
        assert_ne!(
            after.as_deref(),
            Some("replica-c"),
            "the Lease was not released"
        );
        assert!(
            replicas[2]
                .process
                .log_tail(50)
                .contains("released the leader Lease")
        );
        wait_for("replica-d takes the released Lease", T, || async {
            (holder(&w).await? == "replica-d").then_some(())
        })
        .await?;
        set_labels(
            &e,
            "shop",
            "cart",
            serde_json::json!({labels::EXPORTED: null}),
        )
        .await?;
        mirrors_are(&w, &["shop/web", "shop/late"]).await?;
        let dm = replicas[3].metrics().await.ok_or("replica-d /metrics")?;
        assert_eq!(dm.leader(), 1.0);
        Ok(())
    }
    .await;
    if outcome.is_err() {
        for r in &replicas {
            eprintln!(
                "---- {} ({})\n{}",
                r.id,
                r.process.log_path().display(),
                r.process.log_tail(40)
            );
        }
    }
    println!("two-replica scenario took {:?}", test_start.elapsed());
    drop(replicas);
    outcome
}
