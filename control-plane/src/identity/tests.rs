#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use strait_tls::generate_csr;
use strait_tls::testing::TestPki;

const WEB: &str = "web.shop.serviceaccount.identity.strait.cluster.local";

fn service() -> IdentityService {
    let reviewer = StaticTokenReviewer::default()
        .with(
            "web-token",
            Some(IDENTITY_AUDIENCE),
            "system:serviceaccount:shop:web",
        )
        .with("legacy-web-token", None, "system:serviceaccount:shop:web")
        .with("admin-token", Some(IDENTITY_AUDIENCE), "kubernetes-admin");
    IdentityService::new(
        IdentitySettings {
            trust_domain: "cluster.local".into(),
            control_namespace: "strait".into(),
            lifetime: Duration::from_secs(3600),
        },
        watch::channel(Arc::new(TestPki::new().issuer)).1,
        Arc::new(reviewer),
        Metrics::new(),
    )
}

fn request(identity: &str, token: &str, csr_for: &str) -> tonic::Request<CertifyRequest> {
    let csr = generate_csr(&csr_for.parse().unwrap()).unwrap().csr;
    tonic::Request::new(CertifyRequest {
        identity: identity.into(),
        token: token.as_bytes().to_vec(),
        certificate_signing_request: csr,
    })
}

#[tokio::test]
async fn issues_a_leaf_for_the_tokens_own_identity() {
    let svc = service();
    for token in ["web-token", "legacy-web-token"] {
        let rsp = IdentityApi::certify(&svc, request(WEB, token, WEB))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            strait_tls::dns_names(&rsp.leaf_certificate).unwrap(),
            vec![WEB]
        );
        assert_eq!(rsp.intermediate_certificates.len(), 1);
        let until = SystemTime::try_from(rsp.valid_until.unwrap()).unwrap();
        let left = until.duration_since(SystemTime::now()).unwrap();
        assert!(left <= Duration::from_secs(3600) && left > Duration::from_secs(3500));
    }
    let text = svc.metrics().encode();
    assert!(
        text.contains("strait_identity_certificates_issued_total 2"),
        "{text}"
    );
}

#[tokio::test]
async fn refusals_carry_the_right_status_and_reason() {
    let svc = service();
    let billing = "billing.shop.serviceaccount.identity.strait.cluster.local";
    let cases = [
        (
            request(WEB, "", WEB),
            tonic::Code::Unauthenticated,
            "no token",
        ),
        (
            request(WEB, "forged", WEB),
            tonic::Code::Unauthenticated,
            "rejected the token",
        ),
        (
            request(billing, "web-token", billing),
            tonic::Code::PermissionDenied,
            "shop/web",
        ),
        (
            request(WEB, "admin-token", WEB),
            tonic::Code::PermissionDenied,
            "not a service account",
        ),
        (
            request(WEB, "web-token", billing),
            tonic::Code::InvalidArgument,
            "invalid CSR",
        ),
        (
            request("web.shop", "web-token", WEB),
            tonic::Code::InvalidArgument,
            "not a valid identity",
        ),
        (
            request(
                "web.shop.serviceaccount.identity.other.cluster.local",
                "web-token",
                WEB,
            ),
            tonic::Code::InvalidArgument,
            "not in this control plane's domain",
        ),
    ];
    for (req, code, says) in cases {
        let e = IdentityApi::certify(&svc, req).await.unwrap_err();
        assert_eq!(e.code(), code, "{e:?}");
        assert!(
            e.message().contains(says),
            "{:?} should say {says:?}",
            e.message()
        );
        assert!(
            !e.message().contains("web-token"),
            "a token leaked: {}",
            e.message()
        );
    }
    let mut garbage = request(WEB, "web-token", WEB).into_inner();
    garbage.certificate_signing_request = b"garbage".to_vec();
    let e = IdentityApi::certify(&svc, tonic::Request::new(garbage))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let text = svc.metrics().encode();
    assert!(
        text.contains(r#"strait_identity_certify_refusals_total{reason="permission_denied"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"{reason="invalid_csr"} 2"#), "{text}");
}

#[tokio::test]
async fn reloads_the_issuer_when_its_files_change() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let strait_tls::testing::PemFiles { cert, key, .. } = pki.write_issuer_files(dir.path());
    let metrics = Metrics::new();
    let (mut rx, task) = watch_issuer(
        IssuerSource::Files {
            cert: cert.clone(),
            key: key.clone(),
        },
        Duration::from_millis(50),
        metrics.clone(),
    )
    .await
    .unwrap();
    assert_eq!(rx.borrow_and_update().cert(), pki.issuer.cert());
    assert!(
        metrics
            .encode()
            .contains("strait_identity_issuer_expiry_seconds")
    );

    // mtime granularity: make sure the new files look newer.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = pki.new_issuer();
    strait_tls::write_pem(&key, second.key_pem(), true, true).unwrap();
    strait_tls::write_pem(&cert, &second.cert_pem(), false, true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while rx.borrow_and_update().cert() != second.cert() {
            rx.changed().await.unwrap();
        }
    })
    .await
    .expect("the new issuer is published");
    task.abort();
}
