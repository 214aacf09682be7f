//! `strait demo`: the design's picture on this machine. Two local clusters, west and east,
//! sharing a trust anchor; east exports `web` (a meshed pod) behind its gateway pod; west's
//! mirror controller follows a Link to east and creates `web-east`; a meshed client in west
//! calls `web-east` and the answers come back from east through the gateway.

use anyhow::Context;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use strait_lab::{Binaries, Lab, metric_lines};
use strait_localcluster::{Cluster, ClusterConfig, PodSpec};

const NS: &str = "shop";

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Stop by itself after this long (e.g. `30s`); by default, run until Ctrl-C.
    #[arg(long, value_parser = humantime::parse_duration)]
    exit_after: Option<Duration>,
    /// The `strait-proxy` binary for the pods. Default: next to this program.
    #[arg(long, env = "STRAIT_DEMO_PROXY_BIN")]
    proxy_bin: Option<PathBuf>,
    /// The `strait-gateway` binary for the gateway pod. Default: next to this program.
    #[arg(long, env = "STRAIT_DEMO_GATEWAY_BIN")]
    gateway_bin: Option<PathBuf>,
}

fn binaries(args: &DemoArgs) -> anyhow::Result<Binaries> {
    let me = std::env::current_exe().context("finding this program")?;
    let dir = me.parent().context("this program's folder")?.to_path_buf();
    let pick = |given: &Option<PathBuf>, name: &str| -> anyhow::Result<PathBuf> {
        let p = given.clone().unwrap_or_else(|| dir.join(name));
        anyhow::ensure!(
            p.is_file(),
            "{} not found: build it (scripts/demo does: cargo build -p strait-proxy -p strait-gateway) or pass --{name}-bin",
            p.display()
        );
        Ok(p)
    };
    Ok(Binaries {
        proxy: pick(&args.proxy_bin, "strait-proxy")?,
        gateway: pick(&args.gateway_bin, "strait-gateway")?,
        tool: me,
        tool_args: vec!["lab-tool".into()],
    })
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    strait_localcluster::require_root().context("the demo needs root (network namespaces)")?;
    let lab = Lab::new(binaries(&args)?)?;
    println!("strait demo: starting clusters west and east …");
    let started = Instant::now();
    let (west, east) = tokio::try_join!(
        Cluster::start(ClusterConfig::new("west")),
        Cluster::start(ClusterConfig::new("east")),
    )
    .context("starting the demo clusters")?;
    println!(
        "two clusters are up after {:.1}s:",
        started.elapsed().as_secs_f64()
    );
    for c in [&west, &east] {
        let kubectl = c
            .assets()
            .kubectl
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "kubectl".into());
        println!(
            "  {name:<5} {url}  pods {pods}  services {svcs}\n        {kubectl} --kubeconfig {kc} get svc -A",
            name = c.name(),
            url = c.server_url(),
            pods = c.pod_cidr(),
            svcs = c.service_cidr(),
            kc = c.kubeconfig_path().display(),
        );
    }
    let (west_cp, east_cp) = tokio::try_join!(lab.control_plane(&west), lab.control_plane(&east))
        .context("starting the control planes")?;
    println!(
        "control planes (one trust anchor, an issuer each): west destination {} identity {}; east destination {} identity {}",
        west_cp.destination, west_cp.identity, east_cp.destination, east_cp.identity
    );

    // East: web, exported, meshed; the gateway.
    east.ensure_namespace(NS).await?;
    let svc: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": NS,
            "labels": {strait_core::labels::EXPORTED: strait_core::labels::EXPORTED_GATEWAY}},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "grpc", "port": 9090, "targetPort": 9090},
            {"name": "tcp", "port": 7000, "targetPort": 7000},
        ]},
    }))?;
    Api::<Service>::namespaced(east.client(), NS)
        .patch(
            "web",
            &PatchParams::apply("strait-demo"),
            &Patch::Apply(&svc),
        )
        .await
        .context("creating east's web Service")?;
    let web = lab
        .meshed_pod(
            &east,
            &east_cp,
            PodSpec::new(NS, "web-1")
                .label("app", "web")
                .service_account("web")
                .port("http", 8080)
                .port("grpc", 9090)
                .port("tcp", 7000),
        )
        .await
        .context("starting east's web pod")?;
    web.pod
        .spawn("http", lab.tool_command(&web.pod, &["serve", "8080"]))?;
    web.pod
        .spawn("grpc", lab.tool_command(&web.pod, &["serve", "9090"]))?;
    web.pod
        .spawn("tcp", lab.tool_command(&web.pod, &["echo", "7000"]))?;
    println!(
        "east: pod {NS}/web-1 at {} meshed as {} (Service web exported: {}=true)",
        web.pod.ip(),
        web.identity,
        strait_core::labels::EXPORTED
    );
    let gateway = lab
        .gateway(&east, &east_cp)
        .await
        .context("starting east's gateway")?;
    println!(
        "east: gateway pod at {}:4143 (admin :4191) as {}",
        gateway.ip(),
        gateway.identity
    );

    // West: the Link; the mirror appears by itself.
    west.ensure_namespace(NS).await?;
    let linked = Instant::now();
    let link = lab
        .link(&west, &east, &gateway)
        .await
        .context("linking west to east")?;
    let mirror = link
        .wait_mirror(NS, "web")
        .await
        .context("waiting for web-east")?;
    println!(
        "west: Link east created; mirror {NS}/{} appeared after {:.1}s at {} (endpoints: {:?}, the east gateway)",
        mirror.name,
        linked.elapsed().as_secs_f64(),
        mirror.cluster_ip,
        mirror.endpoints
    );
    let client = lab
        .meshed_pod(
            &west,
            &west_cp,
            PodSpec::new(NS, "client-1")
                .label("app", "client")
                .service_account("client"),
        )
        .await
        .context("starting west's client pod")?;
    println!(
        "west: pod {NS}/client-1 at {} meshed as {}",
        client.pod.ip(),
        client.identity
    );

    // Traffic: west client → web-east → east gateway → web-1.
    let ip = mirror.cluster_ip;
    let mut all_ok = true;
    for (what, addr, mode) in [
        ("HTTP/1.1", format!("{ip}:80"), "h1"),
        ("gRPC (HTTP/2)", format!("{ip}:9090"), "grpc"),
    ] {
        let (ok, out, err) = lab.tool(&client.pod, &["http", &addr, "5", mode]).await?;
        all_ok &= ok;
        println!(
            "client-1 → web-east {what} {addr}: {}",
            if ok { out.trim() } else { err.trim() }
        );
    }
    let (ok, out, err) = lab
        .tool(
            &client.pod,
            &["tcp", &format!("{ip}:7000"), "hello over raw TCP"],
        )
        .await?;
    all_ok &= ok;
    println!(
        "client-1 → web-east TCP {ip}:7000: {:?}",
        if ok { out.trim() } else { err.trim() }
    );
    let metrics = gateway.metrics().await.context("the gateway's metrics")?;
    let who = format!("client_id=\"{}\"", client.identity);
    let lines = metric_lines(&metrics, "gateway_connections_total", &[&who]);
    println!("east gateway /metrics:");
    for l in metric_lines(&metrics, "gateway_", &[&who])
        .iter()
        .filter(|l| l.contains("_connections_total") || l.contains("_requests_total"))
    {
        println!("  {l}");
    }
    anyhow::ensure!(
        all_ok && !lines.is_empty(),
        "traffic did not cross the gateway\n{}\n{}",
        client.pod.log_tails(20),
        gateway.pod.log_tails(20)
    );
    println!(
        "traffic crossed the gateway: west client-1 ({}) → east gateway ({}) → east web-1 ({})",
        client.identity, gateway.identity, web.identity
    );

    match args.exit_after {
        Some(d) => {
            println!("stopping after {d:?} (--exit-after)");
            tokio::time::sleep(d).await;
        }
        None => {
            println!("press Ctrl-C to stop and clean up");
            tokio::signal::ctrl_c()
                .await
                .context("waiting for Ctrl-C")?;
        }
    }
    link.stop().await;
    drop((client, gateway, web, west_cp, east_cp));
    drop((west, east));
    println!("clusters stopped and cleaned up");
    Ok(())
}
