//! The sidecar proxy on a real local cluster: pods with iptables interception, the
//! destination service in-process, certificates issued in-test.
//!
//! One cluster, cases in order (each bounded): HTTP/1.1, HTTP/2, raw TCP between meshed pods
//! through Services with mTLS proven by the server side's metrics; a slow endpoint gets
//! clearly less traffic; an endpoint removed mid-run loses no request; an unmeshed server
//! and an address outside the cluster still work; a wrong identity is refused; idle RSS and
//! RSS per 1,000 idle connections are printed; SIGTERM drains and exits.

#![allow(clippy::unwrap_used)]

mod mesh;
mod policy;
#[path = "../policy_support/mod.rs"]
mod policy_support;

use mesh::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};
use strait_control_plane::destination::{DestinationConfig, Discovery, Metrics};
use strait_core::labels;
use strait_localcluster::{Cluster, ClusterConfig, PodSpec};
use strait_proxy::addr::EndpointAddr;
use strait_proxy::connect::Endpoint;
use strait_tls::Issuer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy() -> Result<(), Error> {
    strait_localcluster::require_root()?;
    let cluster = Cluster::start(ClusterConfig::new("px")).await?;
    cluster.ensure_namespace(NS).await?;
    for sa in ["web", "client", "plain", "billing"] {
        cluster.ensure_service_account(NS, sa).await?;
    }

    // The destination service, reachable from pods.
    let discovery = Discovery::spawn(cluster.client());
    let mut registry = prometheus_client::registry::Registry::default();
    let dmetrics = Metrics::register(&mut registry);
    let config = DestinationConfig {
        cluster_domain: cluster.cluster_domain().to_owned(),
        ..DestinationConfig::default()
    };
    let svc = discovery.service(config, dmetrics);
    policy_support::install_crds(&cluster.client()).await?;
    let policies = strait_control_plane::policy::Policies::spawn(
        cluster.client(),
        &discovery,
        strait_control_plane::policy::PolicyConfig {
            cluster_domain: cluster.cluster_domain().to_owned(),
            ..Default::default()
        },
    );
    let now = SystemTime::now();
    let anchor =
        Issuer::generate_anchor("cluster.local", strait_tls::DEFAULT_ANCHOR_LIFETIME, now)?;
    let issuer = anchor.generate_issuer(
        "identity.strait.cluster.local",
        strait_tls::DEFAULT_ISSUER_LIFETIME,
        now,
    )?;
    // Pods reach it at the host address, so destination serves mTLS with its own identity.
    let (_dst_creds, dst_tls) = own_tls(&anchor, &issuer, &id_of(DST_SA), true)?;
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let dest = SocketAddr::new(cluster.host_addr().into(), listener.local_addr()?.port());
    let policies = std::sync::Arc::new(policies);
    let serving = policies.clone();
    tokio::spawn(async move {
        let _ = strait_control_plane::policy::serve_with_destination(
            listener,
            svc,
            &serving,
            Some(dst_tls),
            std::future::pending(),
        )
        .await;
    });
    tokio::time::timeout(WAIT, discovery.synced()).await?;
    tokio::time::timeout(WAIT, policies.index().synced()).await?;
    let mesh = Mesh {
        anchor,
        issuer,
        dest,
        dirs: tempfile::tempdir()?,
    };

    let web_addr = service(&cluster, "web", "web", 80, 8080).await?;
    let echo_addr = service(&cluster, "echo", "web", 7000, 7000).await?;
    let plain_addr = service(&cluster, "plain", "plain", 80, 8080).await?;
    let nobody_addr = service(&cluster, "nobody", "nobody", 80, 8080).await?;
    let dead_addr = service(&cluster, "dead", "plain", 80, 9090).await?;

    let mut webs = Vec::new();
    let mut web_pids = Vec::new();
    for (i, delay) in [(1, "0"), (2, "0"), (3, "100")] {
        let pod = cluster
            .pod(
                PodSpec::new(NS, format!("web-{i}"))
                    .label("app", "web")
                    .annotation(labels::PROXY_VERSION, "test")
                    .service_account("web")
                    .port("http", 8080),
            )
            .await?;
        let mut app = pod.command(TOOL);
        app.args(["serve", "8080", delay]);
        pod.spawn("app", app)?;
        let mut echo = pod.command(TOOL);
        echo.args(["echo", "7000"]);
        pod.spawn("echo", echo)?;
        // web-1's proxy runs on a current-thread runtime (what a sidecar limited to one CPU
        // gets), the others on a multi-thread one: the load below crosses both.
        let cores = if i == 1 { "1" } else { "2" };
        let extra = [("STRAIT_PROXY_CORES", cores.to_owned())];
        web_pids.push(add_proxy_env(&mesh, &pod, "web", mesh.dest, &extra).await?);
        webs.push(pod);
    }
    let client = cluster
        .pod(
            PodSpec::new(NS, "client-1")
                .label("app", "client")
                .annotation(labels::PROXY_VERSION, "test")
                .service_account("client"),
        )
        .await?;
    let client_pid = add_proxy(&mesh, &client, "client").await?;
    let plain = cluster
        .pod(
            PodSpec::new(NS, "plain-1")
                .label("app", "plain")
                .service_account("plain")
                .port("http", 8080),
        )
        .await?;
    let mut app = plain.command(TOOL);
    app.args(["serve", "8080"]);
    plain.spawn("app", app)?;

    // init twice left one set of rules.
    let rules = client.exec("iptables", &["-t", "nat", "-S"], WAIT).await?;
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    assert_eq!(
        rules.matches("-j STRAIT_PROXY_OUTPUT").count(),
        1,
        "{rules}"
    );
    assert_eq!(
        rules.matches("-j STRAIT_PROXY_INBOUND").count(),
        1,
        "{rules}"
    );
    assert_eq!(rules.matches("--to-ports 4140").count(), 1, "{rules}");

    // HTTP/1.1 through the Service, meshed on both sides.
    let r = load(&client, &web_addr, 60, 4, false).await?;
    println!("HTTP/1.1: {r:?}");
    assert_eq!((r.ok, r.failed), (60, 0));
    assert!(r.by_body.len() >= 2, "spread over endpoints: {r:?}");
    let client_id = format!("client_id=\"{}\"", id("client"));
    let mut seen_tls = false;
    for w in &webs {
        let m = metrics(w).await;
        seen_tls |= m.lines().any(|l| {
            l.starts_with("request_total{direction=\"inbound\"")
                && l.contains("tls=\"true\"")
                && l.contains(&client_id)
        });
    }
    assert!(
        seen_tls,
        "server side saw mTLS from the client's identity:\n{}",
        metrics(&webs[0]).await
    );
    let cm = metrics(&client).await;
    assert!(
        cm.lines()
            .any(|l| l.starts_with("response_total{direction=\"outbound\"")
                && l.contains(&format!("server_id=\"{}\"", id("web")))
                && l.contains("classification=\"success\"")),
        "client side saw the server's identity:\n{cm}"
    );

    // A proxy certified by the identity service (Certify with its pod's token): ready once
    // it holds the certificate, and the server side sees that identity.
    let id_issuer = mesh.anchor.generate_issuer(
        "identity.strait.cluster.local",
        strait_tls::DEFAULT_ISSUER_LIFETIME,
        SystemTime::now(),
    )?;
    let id_svc = strait_control_plane::identity::IdentityService::new(
        strait_control_plane::identity::IdentitySettings {
            trust_domain: "cluster.local".into(),
            control_namespace: "strait".into(),
            lifetime: strait_tls::DEFAULT_LEAF_LIFETIME,
        },
        tokio::sync::watch::channel(std::sync::Arc::new(id_issuer)).1,
        std::sync::Arc::new(strait_control_plane::identity::KubeTokenReviewer::new(
            cluster.client(),
        )),
        strait_control_plane::identity::Metrics::new(),
    );
    let id_listener = tokio::net::TcpListener::bind("0.0.0.0:0").await?;
    let id_addr = SocketAddr::new(cluster.host_addr().into(), id_listener.local_addr()?.port());
    let (_id_creds, id_tls) = own_tls(&mesh.anchor, &mesh.issuer, &id_of(ID_SA), false)?;
    tokio::spawn(strait_control_plane::identity::serve_tls(
        id_listener,
        id_svc,
        id_tls,
        std::future::pending(),
    ));
    let billing = cluster
        .pod(
            PodSpec::new(NS, "billing-1")
                .label("app", "billing")
                .annotation(labels::PROXY_VERSION, "test")
                .service_account("billing"),
        )
        .await?;
    let token = mesh.dirs.path().join("billing-token");
    std::fs::copy(billing.identity_token_path(), &token)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644))?;
    }
    add_proxy_env(
        &mesh,
        &billing,
        "billing",
        mesh.dest,
        &[
            ("STRAIT_PROXY_IDENTITY_SVC_ADDR", id_addr.to_string()),
            ("STRAIT_PROXY_IDENTITY_SVC_NAME", id_of(ID_SA).to_string()),
            (
                "STRAIT_PROXY_IDENTITY_LOCAL_NAME",
                id("billing").to_string(),
            ),
            (
                "STRAIT_PROXY_IDENTITY_TOKEN_FILE",
                token.display().to_string(),
            ),
        ],
    )
    .await?;
    let r = load(&billing, &web_addr, 20, 2, false).await?;
    assert_eq!(r.ok, 20, "{r:?}");
    let billing_id = format!("client_id=\"{}\"", id("billing"));
    let mut seen = false;
    for w in &webs {
        seen |= metrics(w).await.contains(&billing_id);
    }
    assert!(seen, "the server side saw the certified identity");

    // HTTP/2 (prior knowledge, as gRPC speaks it).
    let r = load(&client, &web_addr, 20, 2, true).await?;
    println!("HTTP/2: {r:?}");
    assert_eq!((r.ok, r.failed), (20, 0));

    // Raw TCP through the Service.
    let out = client
        .exec(TOOL, &["tcp", &echo_addr, "hello-strait"], WAIT)
        .await?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello-strait",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tcp_tls = false;
    for w in &webs {
        tcp_tls |= metrics(w).await.lines().any(|l| {
            l.starts_with("tcp_open_total{direction=\"inbound\",authority=\"127.0.0.1:7000\"")
                && l.contains("tls=\"true\"")
                && l.contains(&client_id)
        });
    }
    assert!(tcp_tls, "opaque TCP was mTLS with the client's identity");

    // Inbound and outbound policy.
    policy::enforced(&cluster, &mesh, &client, &billing).await?;

    // A slow endpoint gets clearly less traffic.
    let r = load(&client, &web_addr, 300, 4, false).await?;
    println!("with web-3 slowed by 100 ms: {:?}", r.by_body);
    assert_eq!(r.ok, 300);
    let count = |p: &str| {
        r.by_body
            .get(&format!("hello from {p}"))
            .copied()
            .unwrap_or(0)
    };
    let (f1, f2, slow) = (count("web-1"), count("web-2"), count("web-3"));
    assert!(
        slow * 3 < f1.min(f2),
        "slow endpoint not avoided: {:?}",
        r.by_body
    );

    // Unmeshed server (plaintext) and addresses outside any Service.
    let r = load(&client, &plain_addr, 10, 2, false).await?;
    assert_eq!(r.ok, 10);
    let r = load(&client, &format!("{}:8080", plain.ip()), 5, 1, false).await?;
    assert_eq!(r.ok, 5);
    let outside =
        tokio::net::TcpListener::bind(SocketAddr::new(cluster.host_addr().into(), 0)).await?;
    let outside_addr = outside.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = outside.accept().await {
            tokio::spawn(async move {
                // Read the whole request head before answering, and drain after: closing a
                // socket with unread bytes sends a reset, which can beat the answer.
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nconnection: close\r\n\r\noutside",
                    )
                    .await;
                let _ = s.shutdown().await;
                let _ = tokio::time::timeout(Duration::from_secs(5), async {
                    while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                })
                .await;
            });
        }
    });
    let r = load(&client, &outside_addr.to_string(), 5, 1, false).await?;
    assert_eq!(r.by_body.get("outside"), Some(&5), "{r:?}");

    // The proxy's own answers: 503 when a Service has no endpoint, 502 when none answers.
    let r = load(&client, &nobody_addr, 3, 1, false).await?;
    assert_eq!(r.statuses.get("503"), Some(&3), "{r:?}");
    let r = load(&client, &dead_addr, 3, 1, false).await?;
    assert_eq!(r.statuses.get("502"), Some(&3), "{r:?}");
    let cm = metrics(&client).await;
    assert!(
        cm.contains("http_errors_total{direction=\"outbound\",error=\"unavailable\"} 3"),
        "{cm}"
    );
    assert!(cm.contains("classification=\"failure\""), "{cm}");

    // Discovery unreachable: the proxy uses the original address (and keeps retrying).
    let lonely = cluster
        .pod(
            PodSpec::new(NS, "client-2")
                .label("app", "client")
                .annotation(labels::PROXY_VERSION, "test")
                .service_account("client"),
        )
        .await?;
    let nowhere = SocketAddr::new(cluster.host_addr().into(), 1);
    add_proxy_with(&mesh, &lonely, "client", nowhere).await?;
    let r = load(&lonely, &format!("{}:8080", plain.ip()), 5, 1, false).await?;
    assert_eq!(r.ok, 5, "{r:?}");
    let r = load(&lonely, &format!("{}:8080", webs[0].ip()), 5, 1, false).await?;
    assert_eq!(r.by_body.get("hello from web-1"), Some(&5), "{r:?}");

    // A peer with the wrong identity is refused; the right one answers, also through a
    // transport header naming the app port.
    let connector = mesh.connector(&id("client"));
    let web1 = EndpointAddr(SocketAddr::new(webs[0].ip().into(), 8080));
    let wrong = connector
        .connect(&Endpoint {
            addr: web1,
            identity: Some(id("evil")),
            transport_header: None,
        })
        .await;
    assert!(
        wrong.is_err(),
        "a peer proving another identity must be refused"
    );
    println!(
        "wrong identity: {}",
        wrong
            .err()
            .map(|e| format!("{e}: {:?}", std::error::Error::source(&e)))
            .unwrap_or_default()
    );
    let mut conn = connector
        .connect(&Endpoint {
            addr: EndpointAddr(SocketAddr::new(webs[0].ip().into(), 4143)),
            identity: Some(id("web")),
            transport_header: Some(strait_core::transport_header::TransportHeader {
                port: 8080,
                name: None,
                protocol: None,
            }),
        })
        .await?;
    conn.write_all(b"GET / HTTP/1.1\r\nhost: web\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    tokio::time::timeout(WAIT, conn.read_to_string(&mut out)).await??;
    assert!(out.ends_with("hello from web-1"), "{out}");

    // An endpoint removed mid-run loses no request.
    let mut cmd = tokio::process::Command::from(client.command(TOOL));
    cmd.args(["load", &web_addr, "400", "4"]).kill_on_drop(true);
    let run = tokio::spawn(async move { cmd.output().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    webs[1].set_ready(false).await?;
    let out = tokio::time::timeout(Duration::from_secs(60), run).await???;
    let text = String::from_utf8_lossy(&out.stdout);
    let r: Load = serde_json::from_str(text.trim())?;
    println!("removal mid-run: {r:?}");
    assert_eq!((r.ok, r.failed), (400, 0), "{text}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let r = load(&client, &web_addr, 40, 2, false).await?;
    assert_eq!(
        r.by_body.get("hello from web-2"),
        None,
        "removed endpoint still used: {r:?}"
    );

    // Memory: idle, then with 1,000 idle keep-alive connections through web-1's inbound.
    let idle = rss_kb(web_pids[0]);
    let mut conns = Vec::new();
    for _ in 0..1000 {
        let mut s = tokio::net::TcpStream::connect(web1.0).await?;
        s.write_all(b"GET / HTTP/1.1\r\nhost: web\r\n\r\n").await?;
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await?;
        conns.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = rss_kb(web_pids[0]);
    println!(
        "RSS: idle {idle} kB (client proxy {} kB); with 1,000 idle connections {busy} kB: {} kB per 1,000",
        rss_kb(client_pid),
        busy.saturating_sub(idle)
    );
    drop(conns);

    // SIGTERM: the proxy drains and exits within its grace period.
    let pid = web_pids[2].to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}/status")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| !s.contains("State:\tZ"))
            .unwrap_or(false)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "proxy did not exit on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // init --remove leaves no rules behind.
    let out = client.exec(PROXY, &["init", "--remove"], WAIT).await?;
    assert!(out.status.success());
    let rules = client.exec("iptables", &["-t", "nat", "-S"], WAIT).await?;
    assert!(!String::from_utf8_lossy(&rules.stdout).contains("STRAIT_PROXY"));
    Ok(())
}
