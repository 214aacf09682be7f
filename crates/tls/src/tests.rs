//! In-memory handshakes (tokio duplex streams, no network) proving who is accepted and who is
//! refused, and why.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;
use testing::TestPki;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOUR: Duration = Duration::from_secs(3600);

fn id(sa: &str) -> Identity {
    Identity::new(sa, "shop", "strait", "cluster.local").unwrap()
}

fn creds(ca: &TestPki, who: &Identity) -> CredentialsReceiver {
    credentials_channel(Some(ca.leaf_at(who, HOUR, SystemTime::now()))).1
}

type Outcome = (
    Result<tokio_rustls::client::TlsStream<tokio::io::DuplexStream>, TlsError>,
    Result<tokio_rustls::server::TlsStream<tokio::io::DuplexStream>, TlsError>,
);

/// Runs both ends of a handshake; the client writes a byte and reads one back so that a
/// rejection of its certificate (which TLS 1.3 reports after the client's handshake) shows up.
async fn handshake(
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    expect: &Identity,
) -> Outcome {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let srv = async move {
        let mut tls = accept(server, s).await?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(TlsError::handshake)?;
        tls.write_all(&b).await.map_err(TlsError::handshake)?;
        tls.flush().await.map_err(TlsError::handshake)?;
        Ok(tls)
    };
    let cli = async move {
        let mut tls = connect(client, expect, c).await?;
        tls.write_all(b"x").await.map_err(TlsError::handshake)?;
        tls.flush().await.map_err(TlsError::handshake)?;
        let mut b = [0u8; 1];
        tls.read_exact(&mut b).await.map_err(TlsError::handshake)?;
        Ok(tls)
    };
    tokio::time::timeout(Duration::from_secs(10), async { tokio::join!(cli, srv) })
        .await
        .expect("handshake finished in time")
}

fn kind<T>(r: &Result<T, TlsError>) -> Option<HandshakeFailure> {
    r.as_ref().err().and_then(TlsError::handshake_kind)
}

#[tokio::test]
async fn matching_identity_connects_and_both_sides_learn_the_peer() {
    let ca = TestPki::new();
    let (web, gw) = (id("web"), id("gateway"));
    let server = server_config(
        &ca.anchors,
        creds(&ca, &gw),
        ClientAuth::Required,
        &[ALPN_TRANSPORT_HEADER],
    )
    .unwrap();
    let client = client_config(&ca.anchors, creds(&ca, &web), &[ALPN_TRANSPORT_HEADER]).unwrap();
    let (c, s) = handshake(server, client, &gw).await;
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!(peer_identity(c.get_ref().1).unwrap(), gw);
    assert_eq!(peer_identity(s.get_ref().1).unwrap(), web);
    assert_eq!(c.get_ref().1.alpn_protocol(), Some(ALPN_TRANSPORT_HEADER));
    assert_eq!(
        c.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn wrong_identity_is_refused() {
    let ca = TestPki::new();
    let server = server_config(
        &ca.anchors,
        creds(&ca, &id("gateway")),
        ClientAuth::Required,
        &[],
    )
    .unwrap();
    let client = client_config(&ca.anchors, creds(&ca, &id("web")), &[]).unwrap();
    let (c, _s) = handshake(server, client, &id("billing")).await;
    assert_eq!(kind(&c), Some(HandshakeFailure::WrongIdentity), "{c:?}");
}

#[tokio::test]
async fn another_trust_anchor_is_refused_both_ways() {
    let (ours, theirs) = (TestPki::new(), TestPki::new());
    let gw = id("gateway");
    // The server's certificate comes from another anchor.
    let server = server_config(
        &ours.anchors,
        creds(&theirs, &gw),
        ClientAuth::Required,
        &[],
    )
    .unwrap();
    let client = client_config(&ours.anchors, creds(&ours, &id("web")), &[]).unwrap();
    let (c, _) = handshake(server, client, &gw).await;
    assert_eq!(kind(&c), Some(HandshakeFailure::UnknownIssuer), "{c:?}");
    // The client's certificate comes from another anchor.
    let server =
        server_config(&ours.anchors, creds(&ours, &gw), ClientAuth::Required, &[]).unwrap();
    let client = client_config(&ours.anchors, creds(&theirs, &id("web")), &[]).unwrap();
    let (c, s) = handshake(server, client, &gw).await;
    assert_eq!(kind(&s), Some(HandshakeFailure::UnknownIssuer), "{s:?}");
    assert!(c.is_err(), "the client learns it was refused");
}

#[tokio::test]
async fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca = TestPki::new();
    let gw = id("gateway");
    let client = client_config(&ca.anchors, creds(&ca, &id("web")), &[]).unwrap();
    let day = Duration::from_secs(24 * 3600);
    for (when, expect) in [
        (SystemTime::now() - 2 * day, HandshakeFailure::Expired),
        (SystemTime::now() + day, HandshakeFailure::NotYetValid),
    ] {
        let rx = credentials_channel(Some(ca.leaf_at(&gw, HOUR, when))).1;
        let server = server_config(&ca.anchors, rx, ClientAuth::Required, &[]).unwrap();
        let (c, _) = handshake(server, client.clone(), &gw).await;
        assert_eq!(kind(&c), Some(expect), "{c:?}");
    }
    // An expired client certificate is refused by the server.
    let server = server_config(&ca.anchors, creds(&ca, &gw), ClientAuth::Required, &[]).unwrap();
    let old = credentials_channel(Some(ca.leaf_at(
        &id("web"),
        HOUR,
        SystemTime::now() - 2 * day,
    )))
    .1;
    let client = client_config(&ca.anchors, old, &[]).unwrap();
    let (_, s) = handshake(server, client, &gw).await;
    assert_eq!(kind(&s), Some(HandshakeFailure::Expired), "{s:?}");
}

#[tokio::test]
async fn missing_client_certificate_is_refused_unless_optional() {
    let ca = TestPki::new();
    let gw = id("gateway");
    let anonymous = client_config(&ca.anchors, credentials_channel(None).1, &[]).unwrap();
    let server = server_config(&ca.anchors, creds(&ca, &gw), ClientAuth::Required, &[]).unwrap();
    let (_, s) = handshake(server, anonymous.clone(), &gw).await;
    assert_eq!(kind(&s), Some(HandshakeFailure::NoCertificate), "{s:?}");

    let server = server_config(&ca.anchors, creds(&ca, &gw), ClientAuth::Optional, &[]).unwrap();
    let (c, s) = handshake(server, anonymous, &gw).await;
    c.unwrap();
    let e = peer_identity(s.unwrap().get_ref().1).unwrap_err();
    assert!(matches!(e, TlsError::NoPeerCertificate), "{e}");
}

#[tokio::test]
async fn plaintext_peers_are_refused() {
    let ca = TestPki::new();
    let gw = id("gateway");
    // A plaintext client talking to a TLS server.
    let server = server_config(&ca.anchors, creds(&ca, &gw), ClientAuth::Required, &[]).unwrap();
    let (mut c, s) = tokio::io::duplex(4096);
    let (_, r) = tokio::join!(
        c.write_all(b"GET / HTTP/1.1\r\nHost: web\r\n\r\n"),
        accept(server, s)
    );
    assert_eq!(kind(&r), Some(HandshakeFailure::NotTls), "{r:?}");

    // A TLS client talking to a plaintext server.
    let client = client_config(&ca.anchors, creds(&ca, &id("web")), &[]).unwrap();
    let (c, mut s) = tokio::io::duplex(4096);
    let plaintext_server = async move {
        let mut buf = [0u8; 512];
        let _ = s.read(&mut buf).await;
        let _ = s
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
        s
    };
    let (r, _s) = tokio::join!(connect(client, &gw, c), plaintext_server);
    assert_eq!(kind(&r), Some(HandshakeFailure::NotTls), "{r:?}");
}

#[tokio::test]
async fn tls12_only_peer_is_refused() {
    let ca = TestPki::new();
    let gw = id("gateway");
    let server = server_config(&ca.anchors, creds(&ca, &gw), ClientAuth::Required, &[]).unwrap();
    let old = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(ca.anchors.root_store())
    .with_no_client_auth();
    let (c, s) = handshake(server, Arc::new(old), &gw).await;
    assert_eq!(kind(&s), Some(HandshakeFailure::ProtocolVersion), "{s:?}");
    assert_eq!(kind(&c), Some(HandshakeFailure::ProtocolVersion), "{c:?}");
}

#[tokio::test]
async fn rotation_keeps_open_connections_and_serves_the_new_certificate() {
    let ca = TestPki::new();
    let gw = id("gateway");
    let (tx, rx) = credentials_channel(Some(ca.leaf_at(&gw, HOUR, SystemTime::now())));
    let server = server_config(&ca.anchors, rx, ClientAuth::Required, &[]).unwrap();
    let client = client_config(&ca.anchors, creds(&ca, &id("web")), &[]).unwrap();

    let (c, s) = handshake(server.clone(), client.clone(), &gw).await;
    let (mut c, mut s) = (c.unwrap(), s.unwrap());
    let first = c.get_ref().1.peer_certificates().unwrap()[0].clone();

    tx.send_replace(Some(Arc::new(ca.leaf_at(&gw, HOUR, SystemTime::now()))));

    // The open connection still carries data.
    c.write_all(b"still here").await.unwrap();
    c.flush().await.unwrap();
    let mut buf = [0u8; 10];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");

    // A new handshake sees the new certificate.
    let (c2, _) = handshake(server, client, &gw).await;
    let second = c2.unwrap().get_ref().1.peer_certificates().unwrap()[0].clone();
    assert_ne!(first, second);
    assert_eq!(&second, &tx.borrow().as_ref().unwrap().chain()[0]);
}

mod issuance {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, SanType};

    fn csr_with(sans: Vec<SanType>) -> Vec<u8> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = sans;
        p.serialize_request(&key).unwrap().der().to_vec()
    }

    #[test]
    fn a_leaf_has_one_san_both_usages_skew_and_lifetime() {
        let ca = TestPki::new();
        let web = id("web");
        let now = SystemTime::now();
        let req = generate_csr(&web).unwrap();
        let leaf = ca
            .issuer
            .issue(&req.csr, &web, DEFAULT_LEAF_LIFETIME, now)
            .unwrap();
        assert_eq!(dns_names(&leaf.cert).unwrap(), vec![web.to_string()]);
        let secs = |t: SystemTime| t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs(leaf.not_before), secs(now - CLOCK_SKEW));
        assert_eq!(secs(leaf.not_after), secs(now + DEFAULT_LEAF_LIFETIME));
        let (_, x) = x509_parser::parse_x509_certificate(&leaf.cert).unwrap();
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && eku.client_auth);
        assert!(!x.is_ca());
        assert_eq!(leaf.intermediates, ca.issuer.chain());
    }

    #[test]
    fn a_leaf_never_outlives_its_issuer() {
        let now = SystemTime::now();
        let anchor = Issuer::generate_anchor("cluster.local", HOUR, now).unwrap();
        let issuer = anchor
            .generate_issuer("identity.strait.cluster.local", 24 * HOUR, now)
            .unwrap();
        assert!(issuer.not_after() <= anchor.not_after());
        let web = id("web");
        let leaf = issuer
            .issue(&generate_csr(&web).unwrap().csr, &web, 48 * HOUR, now)
            .unwrap();
        assert!(leaf.not_after <= issuer.not_after());
        let e = issuer
            .issue(&generate_csr(&web).unwrap().csr, &web, HOUR, now + 2 * HOUR)
            .unwrap_err();
        assert!(matches!(e, TlsError::IssuerExpired { .. }), "{e}");
    }

    #[test]
    fn bad_csrs_are_refused_with_the_reason() {
        let ca = TestPki::new();
        let web = id("web");
        let now = SystemTime::now();
        let issue = |csr: &[u8]| ca.issuer.issue(csr, &web, HOUR, now).unwrap_err();

        let e = issue(b"not a csr");
        assert!(matches!(e, TlsError::CsrParse(_)) && e.is_bad_csr(), "{e}");
        let e = issue(&generate_csr(&id("billing")).unwrap().csr);
        assert!(matches!(e, TlsError::CsrSanMismatch { .. }), "{e}");
        let e = issue(&csr_with(vec![]));
        assert!(matches!(e, TlsError::CsrSanMismatch { .. }), "{e}");
        let dns = |s: &str| SanType::DnsName(s.try_into().unwrap());
        let e = issue(&csr_with(vec![
            dns(&web.to_string()),
            dns("evil.example.com"),
        ]));
        assert!(matches!(e, TlsError::CsrSanMismatch { .. }), "{e}");
        let e = issue(&csr_with(vec![
            dns(&web.to_string()),
            SanType::IpAddress([127, 0, 0, 1].into()),
        ]));
        assert!(matches!(e, TlsError::CsrForbiddenSan { kind: "IP" }), "{e}");
        let e = issue(&csr_with(vec![
            dns(&web.to_string()),
            SanType::URI("spiffe://cluster.local/ns/shop/sa/web".try_into().unwrap()),
        ]));
        assert!(
            matches!(e, TlsError::CsrForbiddenSan { kind: "URI" }),
            "{e}"
        );
        let e = issue(&csr_with(vec![
            dns(&web.to_string()),
            SanType::Rfc822Name("a@b.c".try_into().unwrap()),
        ]));
        assert!(
            matches!(e, TlsError::CsrForbiddenSan { kind: "email" }),
            "{e}"
        );
    }
}

#[test]
fn verify_chain_checks_anchor_name_and_time() {
    let (ours, theirs) = (TestPki::new(), TestPki::new());
    let web = id("web");
    let now = SystemTime::now();
    let req = generate_csr(&web).unwrap();
    let leaf = ours.issuer.issue(&req.csr, &web, HOUR, now).unwrap();
    verify_chain(&ours.anchors, &web, &leaf.chain(), now).unwrap();
    let k = |r: Result<(), TlsError>| r.unwrap_err().handshake_kind();
    assert_eq!(
        k(verify_chain(&theirs.anchors, &web, &leaf.chain(), now)),
        Some(HandshakeFailure::UnknownIssuer)
    );
    assert_eq!(
        k(verify_chain(&ours.anchors, &id("db"), &leaf.chain(), now)),
        Some(HandshakeFailure::WrongIdentity)
    );
    assert_eq!(
        k(verify_chain(
            &ours.anchors,
            &web,
            &leaf.chain(),
            now + 2 * HOUR
        )),
        Some(HandshakeFailure::Expired)
    );
}

#[test]
fn an_issuer_is_checked_against_the_anchors() {
    let (ours, theirs) = (TestPki::new(), TestPki::new());
    ours.issuer
        .verify_against(&ours.anchors, &id("probe"))
        .unwrap();
    let e = ours
        .issuer
        .verify_against(&theirs.anchors, &id("probe"))
        .unwrap_err();
    assert!(matches!(e, TlsError::IssuerNotTrusted { .. }), "{e}");
}

#[tokio::test]
async fn a_certificate_naming_more_than_the_identity_is_refused() {
    let ca = TestPki::new();
    let gw = id("gateway");
    // Signed by the real issuer, bypassing its CSR checks: two DNS SANs.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p =
        rcgen::CertificateParams::new(vec![gw.to_string(), "evil.example.com".into()]).unwrap();
    p.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    p.not_before = (SystemTime::now() - HOUR).into();
    p.not_after = (SystemTime::now() + HOUR).into();
    let cert = p.signed_by(&key, ca.issuer.signer()).unwrap();
    let chain = vec![cert.der().clone(), ca.issuer.cert().clone()];
    let two_names = Credentials::new(
        gw.clone(),
        chain.clone(),
        rustls_pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let server = server_config(
        &ca.anchors,
        credentials_channel(Some(two_names)).1,
        ClientAuth::Required,
        &[],
    )
    .unwrap();
    let client = client_config(&ca.anchors, creds(&ca, &id("web")), &[]).unwrap();
    let (c, _) = handshake(server, client, &gw).await;
    assert_eq!(kind(&c), Some(HandshakeFailure::WrongIdentity), "{c:?}");
    let e = verify_chain(&ca.anchors, &gw, &chain, SystemTime::now()).unwrap_err();
    assert_eq!(e.handshake_kind(), Some(HandshakeFailure::WrongIdentity));
}

#[test]
fn pem_credentials_need_exactly_one_identity_san() {
    let ca = TestPki::new();
    // An issuer certificate names no identity: it is not a workload's certificate.
    let e = Credentials::from_pem(
        ca.issuer.cert_pem().as_bytes(),
        ca.issuer.key_pem().as_bytes(),
        "issuer files",
    )
    .unwrap_err();
    assert!(matches!(e, TlsError::CertIdentity { .. }), "{e}");
    let e = Credentials::from_pem(b"", ca.issuer.key_pem().as_bytes(), "empty").unwrap_err();
    assert!(matches!(e, TlsError::NoCertificate { .. }), "{e}");
    let e = Credentials::from_pem(ca.issuer.cert_pem().as_bytes(), b"", "no key").unwrap_err();
    assert!(matches!(e, TlsError::NoKey { .. }), "{e}");
}
