//! Certifying with the identity service: the one path by which the proxy and the gateway get
//! (and renew) the certificate for their service account.

use std::path::PathBuf;
use std::time::Duration;
use strait_core::identity::Identity;
use strait_identity_client::{IdentityClient, Settings, Target};
use strait_tls::{CredentialsSender, TrustAnchors};

/// Where and as whom to certify.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityService {
    /// The identity service's `host:port`.
    pub addr: String,
    /// The identity the identity service must present; `None` only on loopback (plaintext,
    /// tests). The configuration enforces that rule (see [`crate::env`]).
    pub svc_name: Option<Identity>,
    /// The identity to ask for.
    pub name: Identity,
    /// The service-account token file (projected with the identity audience).
    pub token: PathBuf,
}

/// Why certification could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CertifySetupError {
    #[error("TLS towards the identity service")]
    Tls(#[from] strait_tls::TlsError),
    #[error("the identity service address")]
    Channel(#[from] strait_identity_client::ChannelError),
}

/// Spawns the task that certifies now and renews at 70 % of each certificate's lifetime,
/// publishing every certificate on `tx`. The connection to the identity service is TLS that
/// accepts only `svc.svc_name`'s certificate, so the token goes to nobody else.
pub fn spawn(
    svc: &IdentityService,
    anchors: &TrustAnchors,
    tx: CredentialsSender,
) -> Result<tokio::task::JoinHandle<()>, CertifySetupError> {
    tracing::info!(
        identity = %svc.name,
        addr = %svc.addr,
        server = ?svc.svc_name.as_ref().map(ToString::to_string),
        "certifying with the identity service"
    );
    let target = match &svc.svc_name {
        Some(server) => Target::Tls {
            addr: svc.addr.clone(),
            server: server.clone(),
            config: strait_tls::anonymous_client_config(anchors, &[])?,
        },
        None => Target::Plain {
            addr: svc.addr.clone(),
        },
    };
    let channel = strait_identity_client::channel(target, Duration::from_secs(2))?;
    let settings = Settings::new(svc.name.clone(), svc.token.clone());
    Ok(tokio::spawn(
        IdentityClient::new(settings, channel, anchors.clone()).run(tx),
    ))
}
