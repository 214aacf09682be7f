//! A throw-away PKI for tests (feature `testing`): one anchor, one issuer, leaves on demand.
//! Every crate's tests build their certificates here instead of repeating the set-up.
//!
//! Everything panics on failure (a test should fail loudly), and nothing here is reachable
//! from a build without the feature: production code never sees it.
//!
//! ```
//! use strait_tls::testing::TestPki;
//! let pki = TestPki::new();
//! let web = "web.shop.serviceaccount.identity.strait.cluster.local".parse().unwrap();
//! // A client presenting `web`'s certificate and trusting the test anchor.
//! let client = pki.client(Some(&web), &[]);
//! // The same PKI as files, for a binary or a chart that reads them.
//! let dir = tempfile::tempdir().unwrap();
//! let files = pki.write_issuer_files(dir.path());
//! assert!(files.key.ends_with("issuer.key"));
//! # let _ = client;
//! ```

use crate::{Credentials, CredentialsReceiver, Issuer, TrustAnchors, write_pem};
use rustls::ClientConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;

/// An anchor for `cluster.local`, its issuer `identity.strait.cluster.local`, and leaves.
#[derive(Debug)]
pub struct TestPki {
    /// The self-signed trust anchor (root), default anchor lifetime.
    pub anchor: Issuer,
    /// [`TestPki::anchor`] as the trust anchors a verifier takes.
    pub anchors: TrustAnchors,
    /// The issuer under the anchor, default issuer lifetime; it signs every leaf here.
    pub issuer: Issuer,
}

/// Where [`TestPki::write_issuer_files`] or [`TestPki::write_leaf_files`] put the PEM files.
#[derive(Clone, Debug)]
pub struct PemFiles {
    /// `ca.crt`: the trust anchors.
    pub anchors: PathBuf,
    /// The certificate chain (issuer, or leaf then issuer).
    pub cert: PathBuf,
    /// The PKCS#8 private key of that certificate (mode 0600).
    pub key: PathBuf,
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
        let issuer = Self::issuer_under(&anchor, now);
        let anchors = anchor.as_anchors().expect("the test anchor as anchors");
        Self {
            anchor,
            anchors,
            issuer,
        }
    }

    /// Another issuer under the same anchor, issued now (what an issuer rotation installs).
    ///
    /// # Panics
    /// If generation fails.
    pub fn new_issuer(&self) -> Issuer {
        Self::issuer_under(&self.anchor, SystemTime::now())
    }

    #[allow(clippy::expect_used)]
    fn issuer_under(anchor: &Issuer, now: SystemTime) -> Issuer {
        anchor
            .generate_issuer(
                "identity.strait.cluster.local",
                crate::DEFAULT_ISSUER_LIFETIME,
                now,
            )
            .expect("generating a test issuer")
    }

    /// A leaf for `id`, issued now with the default leaf lifetime.
    ///
    /// # Panics
    /// If issuance fails.
    pub fn leaf(&self, id: &Identity) -> Credentials {
        self.leaf_at(id, crate::DEFAULT_LEAF_LIFETIME, SystemTime::now())
    }

    /// A leaf for `id`, valid from `now` (less the clock skew) for `lifetime`: expired or
    /// not yet valid when `now` is far enough from the present.
    ///
    /// # Panics
    /// If issuance fails.
    #[allow(clippy::expect_used)]
    pub fn leaf_at(&self, id: &Identity, lifetime: Duration, now: SystemTime) -> Credentials {
        let req = crate::generate_csr(id).expect("generating a CSR");
        let leaf = self
            .issuer
            .issue(&req.csr, id, lifetime, now)
            .expect("issuing a test leaf");
        Credentials::new(id.clone(), leaf.chain(), req.key).expect("a test leaf's credentials")
    }

    /// A credentials channel that holds a fresh [`TestPki::leaf`] for `id`, as the TLS
    /// configs take it (the sending half is dropped: it never rotates).
    ///
    /// # Panics
    /// If issuance fails.
    pub fn receiver(&self, id: &Identity) -> CredentialsReceiver {
        crate::credentials_channel(Some(self.leaf(id))).1
    }

    /// A client config trusting this PKI's anchors that presents a fresh leaf for `id`, or no
    /// certificate at all for `None`, and offers `alpn`.
    ///
    /// # Panics
    /// If issuance or the config fails.
    #[allow(clippy::expect_used)]
    pub fn client(&self, id: Option<&Identity>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
        let (_tx, rx) = crate::credentials_channel(id.map(|id| self.leaf(id)));
        crate::client_config(&self.anchors, rx, alpn).expect("a test client config")
    }

    /// Writes `ca.crt` (the anchors), `issuer.crt` and `issuer.key` into `dir`, replacing
    /// any that exist: the files `strait install` or the identity service read.
    ///
    /// # Panics
    /// If a file cannot be written.
    pub fn write_issuer_files(&self, dir: &Path) -> PemFiles {
        write_files(
            dir,
            "issuer",
            &self.anchors,
            &self.issuer.cert_pem(),
            self.issuer.key_pem(),
        )
    }

    /// Issues a fresh leaf for `id` and writes `ca.crt` (the anchors), `<name>.crt` (the leaf
    /// then the issuer) and `<name>.key` into `dir`, replacing any that exist: the files a
    /// proxy or gateway given its certificate as files reads.
    ///
    /// # Panics
    /// If issuance fails or a file cannot be written.
    #[allow(clippy::expect_used)]
    pub fn write_leaf_files(&self, id: &Identity, dir: &Path, name: &str) -> PemFiles {
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
        let chain: String = leaf.chain().iter().map(|c| crate::der_to_pem(c)).collect();
        let key = crate::ca::pem_block("PRIVATE KEY", req.key.secret_der());
        write_files(dir, name, &self.anchors, &chain, &key)
    }
}

#[allow(clippy::expect_used)]
fn write_files(dir: &Path, name: &str, anchors: &TrustAnchors, cert: &str, key: &str) -> PemFiles {
    let files = PemFiles {
        anchors: dir.join("ca.crt"),
        cert: dir.join(format!("{name}.crt")),
        key: dir.join(format!("{name}.key")),
    };
    write_pem(&files.anchors, &anchors.to_pem(), false, true).expect("writing ca.crt");
    write_pem(&files.cert, cert, false, true).expect("writing a test certificate");
    write_pem(&files.key, key, true, true).expect("writing a test key");
    files
}

impl Default for TestPki {
    fn default() -> Self {
        Self::new()
    }
}
