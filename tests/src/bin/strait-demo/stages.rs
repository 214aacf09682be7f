//! The demo's stages, each a user's step with the user's tools: the `strait` CLI, kubectl
//! (through the cluster's admin kubeconfig) and the images. Each stage prints one line on
//! stderr when it starts and its time when it ends; the summary goes to stdout.

use anyhow::{Context as _, bail, ensure};
use serde_json::Value;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use strait_e2e::observe::{self, MC};
use strait_e2e::samples::{self, SAMPLE};
use strait_localcluster::{Cluster, ClusterConfig};

const NS: &str = "shop";
const ROLLOUT: Duration = Duration::from_secs(240);

pub struct Demo {
    strait: PathBuf,
    work: PathBuf,
    requests: u32,
    started: Instant,
}

/// The stages run so far, with their times.
#[derive(Default)]
struct Stages(Vec<(String, Duration)>);

/// What the client measured, and what the gateway saw.
struct Traffic {
    load: Value,
    grpc: Value,
    tcp: String,
    first_response: Duration,
    identities: Vec<String>,
}

impl Demo {
    pub fn new(strait: PathBuf, work: PathBuf, requests: u32) -> Self {
        Self {
            strait,
            work,
            requests,
            started: Instant::now(),
        }
    }

    /// `strait ARGS`; its stdout.
    async fn strait(&self, args: &[&str], cluster: Option<&Cluster>) -> anyhow::Result<String> {
        let mut cmd = tokio::process::Command::new(&self.strait);
        cmd.args(args).kill_on_drop(true);
        if let Some(c) = cluster {
            cmd.arg("--kubeconfig").arg(c.kubeconfig_path());
        }
        let out = cmd
            .output()
            .await
            .with_context(|| format!("running {}", self.strait.display()))?;
        if !out.status.success() {
            bail!(
                "strait {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub async fn run(self, keep: bool) -> anyhow::Result<()> {
        let mut stages = Stages::default();
        let (west, east) = stages
            .run("starting west and east (one real node each)", async {
                let (west, east) = tokio::try_join!(
                    Cluster::start(ClusterConfig::new("west").with_nodes(1)),
                    Cluster::start(ClusterConfig::new("east").with_nodes(1)),
                )?;
                Ok((west, east))
            })
            .await?;
        let pki = self.work.join("pki");
        let pki_s = pki.display().to_string();
        stages
            .run("one trust anchor for both (strait identity)", async {
                self.strait(&["identity", "--out", &pki_s], None).await
            })
            .await?;
        stages
            .run(
                "installing Strait in both (strait install | kubectl apply)",
                async {
                    tokio::try_join!(self.install(&west, &pki), self.install(&east, &pki))?;
                    Ok(())
                },
            )
            .await?;
        stages
            .run(
                "samples in east, injected and exported (strait export)",
                async {
                    east.apply(&samples(true)).await?;
                    west.apply(&samples(false)).await?;
                    for (c, d) in [
                        (&east, "web"),
                        (&east, "greeter"),
                        (&east, "echo"),
                        (&west, "client"),
                    ] {
                        c.wait_rollout(NS, d, ROLLOUT).await?;
                    }
                    self.strait(&["export", "web", "greeter", "echo", "-n", NS], Some(&east))
                        .await
                },
            )
            .await?;
        stages
            .run("linking west to east (strait multicluster link)", async {
                let link = self
                    .strait(
                        &["multicluster", "link", "--cluster-name", "east"],
                        Some(&east),
                    )
                    .await?;
                west.apply(&link).await?;
                wait_for(
                    Duration::from_secs(120),
                    "the mirrors web-east, greeter-east and echo-east",
                    || async {
                        let out = west
                            .kubectl(&["-n", NS, "get", "services", "-o", "name"])
                            .await
                            .ok()?;
                        ["web-east", "greeter-east", "echo-east"]
                            .iter()
                            .all(|m| out.contains(&format!("service/{m}")))
                            .then_some(())
                    },
                )
                .await
            })
            .await?;
        let traffic = stages
            .run(
                "west's client calls the mirrors by DNS name",
                self.traffic(&west, &east),
            )
            .await?;
        let gateways = stages
            .run(
                "west's probes of east's gateway (strait multicluster gateways)",
                async {
                    wait_for(
                        Duration::from_secs(60),
                        "a probe result for east's gateway",
                        || async {
                            let out = self
                                .strait(&["multicluster", "gateways", "-o", "json"], Some(&west))
                                .await
                                .ok()?;
                            let rows: Value = serde_json::from_str(&out).ok()?;
                            rows[0]["alive"].is_boolean().then_some(())
                        },
                    )
                    .await?;
                    self.strait(&["multicluster", "gateways"], Some(&west))
                        .await
                },
            )
            .await?;
        print!(
            "{}",
            self.summary(&west, &traffic, &gateways, &stages).await
        );
        if keep {
            println!("\nThe clusters keep running until Ctrl-C:");
            for c in [&west, &east] {
                let kc = c.kubeconfig_path().display().to_string();
                println!("  {}: export KUBECONFIG={kc}", c.name());
            }
            let (wk, ek) = (
                west.kubeconfig_path().display(),
                east.kubeconfig_path().display(),
            );
            println!("  kubectl --kubeconfig {wk} -n shop get services,endpointslices");
            println!(
                "  {} check --multicluster --kubeconfig {wk}",
                self.strait.display()
            );
            println!(
                "  {} multicluster gateways --kubeconfig {wk}",
                self.strait.display()
            );
            println!("  kubectl --kubeconfig {ek} -n shop get pods");
            std::future::pending::<()>().await;
        }
        drop((west, east));
        println!("clusters stopped and cleaned up");
        Ok(())
    }

    /// `strait install` and `strait multicluster install` with the shared anchor, applied,
    /// then every Deployment rolled out.
    async fn install(&self, c: &Cluster, pki: &Path) -> anyhow::Result<()> {
        let f = |n: &str| pki.join(n).display().to_string();
        let (ca, crt, key) = (f("ca.crt"), f("issuer.crt"), f("issuer.key"));
        let cp = self
            .strait(
                &[
                    "install",
                    "--identity-trust-anchors-file",
                    &ca,
                    "--identity-issuer-certificate-file",
                    &crt,
                    "--identity-issuer-key-file",
                    &key,
                ],
                None,
            )
            .await?;
        c.apply(&cp).await?;
        let mc = self
            .strait(
                &[
                    "multicluster",
                    "install",
                    "--identity-trust-anchors-file",
                    &ca,
                ],
                None,
            )
            .await?;
        c.apply(&mc).await?;
        for (ns, d) in [
            ("strait", "strait-control-plane"),
            (MC, "strait-gateway"),
            (MC, "strait-mirror"),
        ] {
            c.wait_rollout(ns, d, ROLLOUT).await?;
        }
        Ok(())
    }

    /// The first response, a bounded load over HTTP, a few gRPC calls, one TCP echo, and the identities that
    /// east's gateway counted connections from.
    async fn traffic(&self, west: &Cluster, east: &Cluster) -> anyhow::Result<Traffic> {
        let client = observe::running_pod(west, NS, "app=client").await?;
        let exec = |args: Vec<String>| {
            let client = client.clone();
            async move {
                let mut a = vec!["-n", NS, "exec", &client, "-c", "client", "--", SAMPLE];
                a.extend(args.iter().map(String::as_str));
                west.kubectl(&a).await
            }
        };
        let web = format!("web-east.{NS}.svc.cluster.local:80");
        wait_for(
            Duration::from_secs(120),
            "a first answer from web-east",
            || async { exec(vec!["get".into(), web.clone()]).await.ok() },
        )
        .await?;
        let first_response = self.started.elapsed();
        let load = exec(vec!["load".into(), web.clone(), self.requests.to_string()]).await?;
        let load: Value = serde_json::from_str(load.trim()).context("reading the load summary")?;
        let grpc = exec(vec![
            "load".into(),
            format!("greeter-east.{NS}.svc.cluster.local:8080"),
            "20".into(),
            "1".into(),
            "grpc".into(),
        ])
        .await?;
        let grpc: Value = serde_json::from_str(grpc.trim()).context("reading the gRPC summary")?;
        let tcp = exec(vec![
            "tcp".into(),
            format!("echo-east.{NS}.svc.cluster.local:9000"),
            "hello over raw TCP".into(),
        ])
        .await?;
        let identities = observe::client_ids(&observe::gateway_metrics(east).await?)
            .into_iter()
            .collect();
        Ok(Traffic {
            load,
            grpc,
            tcp: tcp.trim().to_owned(),
            first_response,
            identities,
        })
    }

    async fn summary(
        &self,
        west: &Cluster,
        t: &Traffic,
        gateways: &str,
        stages: &Stages,
    ) -> String {
        let bold = |s: &str| {
            if std::io::stdout().is_terminal() {
                format!("\x1b[1m{s}\x1b[0m")
            } else {
                s.to_owned()
            }
        };
        let mirrors = west
            .kubectl(&["-n", NS, "get", "services", "-l", "mirror.strait.dev/mirrored-service=true", "-o", "custom-columns=MIRROR:.metadata.name,REMOTE:.metadata.annotations.mirror\\.strait\\.dev/remote-svc-fq-name", "--no-headers"])
            .await
            .unwrap_or_default();
        let l = &t.load;
        let ms = |v: &Value| v.as_f64().map_or("-".into(), |v| format!("{v:.1} ms"));
        let sent = l["sent"].as_u64().unwrap_or(0);
        let ok = l["ok"].as_u64().unwrap_or(0);
        let mut out = String::new();
        out.push_str(&format!(
            "\n{}\n",
            bold("Strait demo: west → east through east's gateway")
        ));
        out.push_str("mirrors in west (shop):\n");
        for line in mirrors.lines() {
            out.push_str(&format!(
                "  {}\n",
                line.split_whitespace().collect::<Vec<_>>().join("  ←  ")
            ));
        }
        out.push_str(&format!(
            "HTTP through the gateway: {ok}/{sent} ok ({:.1}%), p50 {}, p99 {}; answered by {}\n",
            if sent == 0 {
                0.0
            } else {
                100.0 * ok as f64 / sent as f64
            },
            ms(&l["p50_ms"]),
            ms(&l["p99_ms"]),
            l["pods"]
        ));
        let g = &t.grpc;
        let answered: Vec<&str> = g["pods"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(pod, _)| pod.as_str())
            .collect();
        out.push_str(&format!(
            "gRPC through the gateway: {}/{} ok; answered by {}\n",
            g["ok"],
            g["sent"],
            answered.join(", ")
        ));
        out.push_str(&format!("TCP through the gateway: {}\n", t.tcp));
        out.push_str(&format!(
            "identities east's gateway saw: {}\n",
            t.identities.join(", ")
        ));
        out.push_str(&format!(
            "first cross-cluster response {:.1}s after start\n",
            t.first_response.as_secs_f64()
        ));
        out.push_str("strait multicluster gateways (west):\n");
        for line in gateways.lines() {
            out.push_str(&format!("  {line}\n"));
        }
        out.push_str("stages:\n");
        for (name, took) in &stages.0 {
            out.push_str(&format!("  {:>6.1}s  {name}\n", took.as_secs_f64()));
        }
        out
    }
}

impl Stages {
    /// Runs `f` as the stage `name`: a line when it starts, its time when it ends.
    async fn run<T>(
        &mut self,
        name: &str,
        f: impl std::future::Future<Output = anyhow::Result<T>>,
    ) -> anyhow::Result<T> {
        let n = self.0.len() + 1;
        eprintln!("[{n}/7] {name} …");
        let t = Instant::now();
        let out = f.await.with_context(|| format!("stage {n} ({name})"))?;
        let took = t.elapsed();
        eprintln!("[{n}/7] {name}: done in {:.1}s", took.as_secs_f64());
        self.0.push((name.to_owned(), took));
        Ok(out)
    }
}

/// Polls `f` until it answers, for at most `limit`; the error names what never came.
async fn wait_for<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Ok(v);
        }
        ensure!(
            Instant::now() < deadline,
            "{what} did not come within {}s",
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The shop namespace, injected: in east an HTTP/1+2 echo (`web`), a gRPC service
/// (`greeter`) and a TCP echo (`echo`); in west the client.
fn samples(east: bool) -> String {
    let mut out = samples::namespace(NS, true);
    out.push_str(&if east {
        samples::servers(NS)
    } else {
        samples::client(NS)
    });
    out
}
