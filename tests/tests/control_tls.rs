//! The control plane over TLS, with process pods on a real kube-apiserver: a proxy is issued
//! its certificate over TLS and its service-account token never crosses the wire in the clear
//! (a relay between proxy and identity records every byte); a client that expects another
//! identity for the identity service refuses to send its token; destination refuses a client
//! without a certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails loudly

mod wire_support;

use linkerd2_proxy_api::destination::GetDestination;
use linkerd2_proxy_api::destination::destination_client::DestinationClient;
use std::time::Duration;
use strait_core::identity::Identity;
use strait_identity_client::{IdentityClient, Settings, Target, channel};
use strait_lab::{Binaries, Lab};
use strait_localcluster::{Cluster, ClusterConfig, PodSpec};
use strait_tls::TrustAnchors;
use wire_support::{assert_token_absent, relay};

type Error = Box<dyn std::error::Error + Send + Sync>;

const NS: &str = "shop";
const TIMEOUT: Duration = Duration::from_secs(5);

fn bins() -> Binaries {
    Binaries {
        proxy: env!("CARGO_BIN_EXE_e2e-proxy").into(),
        gateway: env!("CARGO_BIN_EXE_e2e-gateway").into(),
        tool: env!("CARGO_BIN_EXE_strait-sample").into(),
        tool_args: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_over_tls() -> Result<(), Error> {
    strait_localcluster::require_root()?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info,kube=warn")
        .with_test_writer()
        .try_init();
    let lab = Lab::new(bins())?;
    let cluster = Cluster::start(ClusterConfig::new("tls")).await?;
    let mut cp = lab.control_plane(&cluster).await?;
    cluster.ensure_namespace(NS).await?;
    let anchors = TrustAnchors::from_pem(lab.anchors_pem().as_bytes(), "the lab's anchor")?;
    let identity_addr = cp.identity;

    // 1. A meshed proxy certifies through a recording relay: it becomes ready (it holds its
    //    certificate), and its token never appears on the wire.
    let (via, wire) = relay(cluster.host_addr(), identity_addr).await;
    cp.identity = via;
    let web = lab
        .meshed_pod(
            &cluster,
            &cp,
            PodSpec::new(NS, "web-1").service_account("web"),
        )
        .await?;
    cp.identity = identity_addr;
    let token = std::fs::read(web.pod.identity_token_path())?;
    assert!(token.len() > 100, "a projected token");
    let seen = wire.lock().unwrap().clone();
    assert!(
        seen.len() > 1000,
        "the Certify crossed the relay: {} bytes",
        seen.len()
    );
    assert_token_absent(&seen, &token);

    // 2. The same Certify in process through a relay: issued over TLS, and again no token.
    let (via, wire) = relay(cluster.host_addr(), identity_addr).await;
    let identity_tls = |server: &Identity| -> Result<_, Error> {
        Ok(channel(
            Target::Tls {
                addr: via.to_string(),
                server: server.clone(),
                config: strait_tls::anonymous_client_config(&anchors, &[])?,
            },
            TIMEOUT,
        )?)
    };
    let settings = Settings::new(web.identity.clone(), web.pod.identity_token_path());
    let mut client = IdentityClient::new(
        settings.clone(),
        identity_tls(&cp.identity_name)?,
        anchors.clone(),
    );
    let creds = client.certify().await?;
    assert_eq!(creds.identity(), &web.identity);
    assert_token_absent(&wire.lock().unwrap(), &token);

    // 3. Expecting another identity for the identity service (a real one under the same
    //    anchor: destination's) the client refuses the handshake and sends no token.
    let (via_wrong, wire_wrong) = relay(cluster.host_addr(), identity_addr).await;
    let wrong = cp.destination_name.clone();
    let mut client = IdentityClient::new(
        settings,
        channel(
            Target::Tls {
                addr: via_wrong.to_string(),
                server: wrong.clone(),
                config: strait_tls::anonymous_client_config(&anchors, &[])?,
            },
            TIMEOUT,
        )?,
        anchors.clone(),
    );
    let refused = client
        .certify()
        .await
        .expect_err("a wrong identity service");
    let message = refused.to_string();
    assert!(message.contains(&wrong.to_string()), "{message}");
    let seen = wire_wrong.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the handshake was attempted");
    assert_token_absent(&seen, &token);

    // 4. Destination: without a client certificate, refused; with the issued one, answered.
    let get = |channel| async move {
        let mut dst = DestinationClient::new(channel);
        let req = GetDestination {
            path: format!("web.{NS}.svc.cluster.local:80"),
            ..Default::default()
        };
        tokio::time::timeout(TIMEOUT, dst.get(req)).await
    };
    let anonymous = channel(
        Target::Tls {
            addr: cp.destination.to_string(),
            server: cp.destination_name.clone(),
            config: strait_tls::anonymous_client_config(&anchors, &[])?,
        },
        TIMEOUT,
    )?;
    match get(anonymous).await {
        Ok(Ok(_)) => panic!("destination answered a client without a certificate"),
        Ok(Err(status)) => assert!(
            !matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::InvalidArgument
            ),
            "the service itself answered a client without a certificate: {status:?}"
        ),
        Err(_) => {} // the connection never completed: refused as well
    }
    let (_keep, mine) = strait_tls::credentials_channel(Some(creds));
    let mutual = channel(
        Target::Tls {
            addr: cp.destination.to_string(),
            server: cp.destination_name.clone(),
            config: strait_tls::client_config(&anchors, mine, &[])?,
        },
        TIMEOUT,
    )?;
    match get(mutual).await? {
        Ok(_) => {}
        Err(status) => assert!(
            matches!(
                status.code(),
                tonic::Code::NotFound | tonic::Code::InvalidArgument
            ),
            "destination over mTLS: {status:?}"
        ),
    }
    Ok(())
}
