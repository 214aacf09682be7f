//! Identity end to end, on a real kube-apiserver: pods' projected tokens are reviewed by the
//! API server, leaves are issued for the token's own service account only, and a workload
//! that renews its certificate keeps its open connections while new handshakes see the new
//! certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly

use linkerd2_proxy_api::identity::CertifyRequest;
use linkerd2_proxy_api::identity::identity_client::IdentityClient as Grpc;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use strait_control_plane::identity::{
    IdentityService, IdentitySettings, KubeTokenReviewer, Metrics,
};
use strait_core::identity::Identity;
use strait_identity_client::{IdentityClient, Settings};
use strait_localcluster::{Cluster, ClusterConfig, PodSpec};
use strait_tls::testing::TestPki;
use strait_tls::{ClientAuth, TrustAnchors, credentials_channel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const LIFETIME: Duration = Duration::from_secs(60);

fn identity(sa: &str, ns: &str) -> Identity {
    Identity::new(sa, ns, "strait", "cluster.local").unwrap()
}

/// The identity gRPC service, in process, on loopback, against the cluster's API server.
async fn serve_identity(cluster: &Cluster) -> (SocketAddr, TrustAnchors, Metrics) {
    let TestPki {
        anchors, issuer, ..
    } = TestPki::new();
    let metrics = Metrics::new();
    let svc = IdentityService::new(
        IdentitySettings {
            trust_domain: "cluster.local".into(),
            control_namespace: "strait".into(),
            lifetime: LIFETIME,
        },
        tokio::sync::watch::channel(Arc::new(issuer)).1,
        Arc::new(KubeTokenReviewer::new(cluster.client())),
        metrics.clone(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(strait_control_plane::identity::serve(
        listener,
        svc,
        std::future::pending(),
    ));
    (addr, anchors, metrics)
}

fn channel(addr: SocketAddr) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy()
}

/// An echo server over mTLS on loopback, presenting whatever `creds` holds at each handshake.
async fn echo_server(anchors: &TrustAnchors, creds: strait_tls::CredentialsReceiver) -> SocketAddr {
    let config = strait_tls::server_config(anchors, creds, ClientAuth::Required, &[]).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Bounded: the test makes a handful of connections.
        for _ in 0..16 {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let config = config.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = strait_tls::accept(config, tcp).await else {
                    return;
                };
                let mut buf = [0u8; 64];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 || tls.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

async fn issuer_secret_reload(cluster: &Cluster) {
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    use strait_control_plane::identity::{IssuerSource, watch_issuer};
    cluster.ensure_namespace("strait").await.unwrap();
    let pki = TestPki::new();
    let make = |issuer: &strait_tls::Issuer| -> Secret {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
            "metadata": {"name": "strait-identity-issuer", "namespace": "strait"},
            "stringData": {
                "tls.crt": issuer.cert_pem(),
                "tls.key": issuer.key_pem(),
                "ca.crt": pki.anchor.cert_pem(),
            },
        }))
        .unwrap()
    };
    let (first, second) = (&pki.issuer, pki.new_issuer());
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), "strait");
    secrets
        .create(&PostParams::default(), &make(first))
        .await
        .unwrap();
    let (mut rx, task) = watch_issuer(
        IssuerSource::Secret {
            client: cluster.client(),
            namespace: "strait".into(),
            name: "strait-identity-issuer".into(),
        },
        Duration::from_millis(200),
        Metrics::new(),
    )
    .await
    .unwrap();
    assert_eq!(rx.borrow_and_update().cert(), first.cert());
    let mut next = make(&second);
    next.metadata.resource_version = secrets
        .get("strait-identity-issuer")
        .await
        .unwrap()
        .metadata
        .resource_version;
    secrets
        .replace("strait-identity-issuer", &PostParams::default(), &next)
        .await
        .unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        rx.wait_for(|i| i.cert() == second.cert()),
    )
    .await
    .expect("the issuer from the updated Secret is published")
    .unwrap();
    task.abort();
}

async fn echo(tls: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(buf, msg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_on_a_real_api_server() {
    let cluster = Cluster::start(ClusterConfig::new("id")).await.unwrap();
    let (addr, anchors, metrics) = serve_identity(&cluster).await;
    let web_pod = cluster
        .pod(
            PodSpec::new("shop", "web")
                .service_account("web")
                .label("app", "web"),
        )
        .await
        .unwrap();
    let billing_pod = cluster
        .pod(PodSpec::new("shop", "billing").service_account("billing"))
        .await
        .unwrap();
    let (web, billing) = (identity("web", "shop"), identity("billing", "shop"));

    // 1. A pod's identity token gets a leaf with the right SAN, chained to the anchor.
    let mut client = IdentityClient::new(
        Settings::new(web.clone(), web_pod.identity_token_path()),
        channel(addr),
        anchors.clone(),
    );
    let creds = client.certify().await.unwrap();
    assert_eq!(creds.identity(), &web);
    assert_eq!(
        strait_tls::dns_names(&creds.chain()[0]).unwrap(),
        vec![web.to_string()]
    );
    // The API-server-audience token works too (the review falls back to no audience).
    let mut legacy = IdentityClient::new(
        Settings::new(web.clone(), web_pod.service_account_dir().join("token")),
        channel(addr),
        anchors.clone(),
    );
    legacy.certify().await.unwrap();

    // 2. billing's token asking for web's identity: PermissionDenied.
    let mut grpc = Grpc::new(channel(addr));
    let token = std::fs::read(billing_pod.identity_token_path()).unwrap();
    let e = grpc
        .certify(CertifyRequest {
            identity: web.to_string(),
            token: token.clone(),
            certificate_signing_request: strait_tls::generate_csr(&web).unwrap().csr,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("shop/billing"), "{}", e.message());

    // 3. An invalid CSR: InvalidArgument, both garbage and a CSR for another name.
    for csr in [
        b"not a csr".to_vec(),
        strait_tls::generate_csr(&web).unwrap().csr,
    ] {
        let e = grpc
            .certify(CertifyRequest {
                identity: billing.to_string(),
                token: token.clone(),
                certificate_signing_request: csr,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    }
    // A forged token: Unauthenticated.
    let e = grpc
        .certify(CertifyRequest {
            identity: billing.to_string(),
            token: b"eyJhbGciOiJSUzI1NiJ9.e30.forged".to_vec(),
            certificate_signing_request: strait_tls::generate_csr(&billing).unwrap().csr,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // 4. The issuer is reloaded when its Secret (cert-manager's kubernetes.io/tls shape)
    //    changes.
    issuer_secret_reload(&cluster).await;

    // 5. Rotation: web renews at 70% of a 1-minute lifetime (~42 s).
    let (tx, mut rx) = credentials_channel(None);
    let renewer = tokio::spawn(
        IdentityClient::new(
            Settings::new(web.clone(), web_pod.identity_token_path()),
            channel(addr),
            anchors.clone(),
        )
        .run(tx),
    );
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(Option::is_some))
        .await
        .expect("first certificate in time")
        .unwrap();
    let server = echo_server(&anchors, rx.clone()).await;
    let billing_creds = IdentityClient::new(
        Settings::new(billing.clone(), billing_pod.identity_token_path()),
        channel(addr),
        anchors.clone(),
    )
    .certify()
    .await
    .unwrap();
    let client_cfg =
        strait_tls::client_config(&anchors, credentials_channel(Some(billing_creds)).1, &[])
            .unwrap();
    let dial = || async {
        let tcp = tokio::net::TcpStream::connect(server).await.unwrap();
        strait_tls::connect(client_cfg.clone(), &web, tcp)
            .await
            .unwrap()
    };
    let mut old = dial().await;
    echo(&mut old, b"before renewal").await;
    let first = old.get_ref().1.peer_certificates().unwrap()[0].clone();
    rx.mark_unchanged();

    tokio::time::timeout(Duration::from_secs(55), rx.changed())
        .await
        .expect("renewed within 55 s (70% of 60 s is 42 s)")
        .unwrap();
    let renewed = rx.borrow().as_ref().unwrap().chain()[0].clone();
    assert_ne!(renewed, first);

    echo(&mut old, b"after renewal, same connection").await;
    let mut new = dial().await;
    echo(&mut new, b"new handshake").await;
    assert_eq!(new.get_ref().1.peer_certificates().unwrap()[0], renewed);

    renewer.abort();
    let text = metrics.encode();
    assert!(text.contains(r#"reason="permission_denied"} 1"#), "{text}");
    assert!(text.contains(r#"reason="invalid_csr"} 2"#), "{text}");
}
