//! The one crypto provider every configuration, key and verifier in this crate uses: ring.
//! The bottom of the crate; it depends on nothing here.

use std::sync::{Arc, OnceLock};

/// The ring crypto provider, shared.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    static P: OnceLock<Arc<rustls::crypto::CryptoProvider>> = OnceLock::new();
    P.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}
