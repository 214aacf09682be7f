//! The client retries while the identity service is down and publishes the certificate once
//! it is up. Loopback only; bounded by timeouts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;
use strait_control_plane::identity::{
    IDENTITY_AUDIENCE, IdentityService, IdentitySettings, Metrics, StaticTokenReviewer,
};
use strait_identity_client::{IdentityClient, Settings};
use strait_tls::testing::TestPki;

#[tokio::test]
async fn retries_until_the_service_is_up_then_publishes() {
    let TestPki {
        anchors, issuer, ..
    } = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "web-token\n").unwrap();

    // A port with nothing listening yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let id = "web.shop.serviceaccount.identity.strait.cluster.local"
        .parse()
        .unwrap();
    let mut settings = Settings::new(id, token);
    settings.backoff_min = Duration::from_millis(50);
    settings.backoff_max = Duration::from_millis(200);
    let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect_lazy();
    let (tx, mut rx) = strait_tls::credentials_channel(None);
    let client = tokio::spawn(IdentityClient::new(settings, channel, anchors).run(tx));

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        rx.borrow().is_none(),
        "nothing to publish while the service is down"
    );

    let svc = IdentityService::new(
        IdentitySettings {
            trust_domain: "cluster.local".into(),
            control_namespace: "strait".into(),
            lifetime: Duration::from_secs(3600),
        },
        tokio::sync::watch::channel(Arc::new(issuer)).1,
        Arc::new(StaticTokenReviewer::default().with(
            "web-token",
            Some(IDENTITY_AUDIENCE),
            "system:serviceaccount:shop:web",
        )),
        Metrics::new(),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(strait_control_plane::identity::serve(
        listener,
        svc,
        std::future::pending(),
    ));
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(Option::is_some))
        .await
        .expect("a certificate once the service is up")
        .unwrap();
    drop(rx);
    // With every receiver gone, the client stops by itself.
    tokio::time::timeout(Duration::from_secs(5), client)
        .await
        .expect("the client stops when nobody listens")
        .unwrap();
}
