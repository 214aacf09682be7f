//! A client without a certificate of its own: it proves nothing about itself, and still
//! accepts a server only as [`client_config`] does (TLS 1.3, the one expected identity,
//! chained to the anchors, a full handshake every time). For a caller that holds the trust
//! anchors but no identity, such as the service mirror probing a remote gateway.

use crate::{TlsError, TrustAnchors, client_config, credentials_channel};
use rustls::ClientConfig;
use std::sync::Arc;

/// A TLS 1.3 client that presents no certificate and accepts only a server certificate for
/// the identity it connects to (see [`crate::connect`]), chained to `anchors`.
pub fn anonymous_client_config(
    anchors: &TrustAnchors,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    // No credentials, ever: the resolver then has no certificate to offer.
    let (_never, none) = credentials_channel(None);
    client_config(anchors, none, alpn)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::TestPki;
    use crate::{ClientAuth, HandshakeFailure, accept, connect, peer_identity, server_config};
    use strait_core::identity::Identity;

    fn id(s: &str) -> Identity {
        s.parse().unwrap()
    }

    /// Trust anchors, and a server presenting the gateway's identity issued under them.
    fn gateway() -> (TrustAnchors, Identity, Arc<rustls::ServerConfig>) {
        let pki = TestPki::new();
        let gw =
            id("strait-gateway.strait-multicluster.serviceaccount.identity.strait.cluster.local");
        let server =
            server_config(&pki.anchors, pki.receiver(&gw), ClientAuth::Optional, &[]).unwrap();
        (pki.anchors, gw, server)
    }

    #[tokio::test]
    async fn verifies_the_server_and_presents_nothing() {
        let (anchors, gw, server) = gateway();
        let client = anonymous_client_config(&anchors, &[]).unwrap();
        let (c, s) = tokio::io::duplex(64 * 1024);
        let accepted = tokio::spawn(async move {
            let tls = accept(server, s).await.unwrap();
            matches!(
                peer_identity(tls.get_ref().1),
                Err(TlsError::NoPeerCertificate)
            )
        });
        let tls = connect(client, &gw, c).await.unwrap();
        assert_eq!(peer_identity(tls.get_ref().1).unwrap(), gw);
        assert!(
            accepted.await.unwrap(),
            "the client presented no certificate"
        );
    }

    #[tokio::test]
    async fn refuses_another_identity() {
        let (anchors, _gw, server) = gateway();
        let client = anonymous_client_config(&anchors, &[]).unwrap();
        let (c, s) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            let _ = accept(server, s).await;
        });
        let other = id("web.shop.serviceaccount.identity.strait.cluster.local");
        let e = connect(client, &other, c).await.unwrap_err();
        assert_eq!(e.handshake_kind(), Some(HandshakeFailure::WrongIdentity));
    }
}
