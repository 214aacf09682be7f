//! A throw-away PKI for tests (feature `testing`): one anchor, one issuer, leaves on demand.
//! Every crate's tests build their certificates here instead of repeating the set-up.

use crate::{Credentials, Issuer, TrustAnchors};
use std::time::SystemTime;
use strait_core::identity::Identity;

/// An anchor for `cluster.local`, its issuer `identity.strait.cluster.local`, and leaves.
#[derive(Debug)]
pub struct TestPki {
    pub anchor: Issuer,
    pub anchors: TrustAnchors,
    pub issuer: Issuer,
}

impl TestPki {
    /// A fresh anchor and issuer with the default lifetimes.
    ///
    /// # Panics
    /// If generation fails, which only a broken crypto provider causes.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let now = SystemTime::now();
        let anchor = Issuer::generate_anchor("cluster.local", crate::DEFAULT_ANCHOR_LIFETIME, now)
            .expect("generating a test anchor");
        let issuer = anchor
            .generate_issuer(
                "identity.strait.cluster.local",
                crate::DEFAULT_ISSUER_LIFETIME,
                now,
            )
            .expect("generating a test issuer");
        let anchors = anchor.as_anchors().expect("the test anchor as anchors");
        Self {
            anchor,
            anchors,
            issuer,
        }
    }

    /// A leaf for `id`, issued now with the default leaf lifetime.
    ///
    /// # Panics
    /// If issuance fails.
    #[allow(clippy::expect_used)]
    pub fn leaf(&self, id: &Identity) -> Credentials {
        let req = crate::generate_csr(id).expect("generating a CSR");
        let leaf = self
            .issuer
            .issue(
                &req.csr,
                id,
                crate::DEFAULT_LEAF_LIFETIME,
                SystemTime::now(),
            )
            .expect("issuing a test leaf");
        Credentials::new(id.clone(), leaf.chain(), req.key).expect("a test leaf's credentials")
    }
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
