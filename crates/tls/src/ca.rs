//! Trust anchors and issuers: generate them, write them, read them back from files or from a
//! Secret's data.

use crate::TlsError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Default lifetime of a trust anchor: 10 years.
pub const DEFAULT_ANCHOR_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default lifetime of an issuer: 1 year.
pub const DEFAULT_ISSUER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far back `not_before` is set, for peers whose clocks run behind.
pub const CLOCK_SKEW: Duration = Duration::from_secs(20);

/// Secret keys holding the issuer certificate, in the order they are tried.
pub const SECRET_CERT_KEYS: &[&str] = &["tls.crt", "crt.pem", "issuer.crt"];
/// Secret keys holding the issuer's private key.
pub const SECRET_KEY_KEYS: &[&str] = &["tls.key", "key.pem", "issuer.key"];
/// Secret keys holding the trust anchors.
pub const SECRET_ANCHOR_KEYS: &[&str] = &["ca.crt", "ca-bundle.crt", "ca.pem"];

/// The roots every identity certificate must chain to.
#[derive(Clone, Debug)]
pub struct TrustAnchors {
    certs: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
}

impl TrustAnchors {
    /// Trust anchors from DER certificates.
    pub fn from_certs(certs: Vec<CertificateDer<'static>>) -> Result<Self, TlsError> {
        if certs.is_empty() {
            return Err(TlsError::NoCertificate {
                what: "trust anchors".into(),
            });
        }
        let mut roots = RootCertStore::empty();
        for c in &certs {
            roots.add(c.clone()).map_err(TlsError::Anchor)?;
        }
        Ok(Self {
            certs,
            roots: Arc::new(roots),
        })
    }

    /// Trust anchors from a PEM bundle (one or more certificates).
    pub fn from_pem(pem: &[u8], what: &str) -> Result<Self, TlsError> {
        Self::from_certs(parse_certs(pem, what)?)
    }

    /// Trust anchors from a PEM file.
    pub fn from_file(path: &Path) -> Result<Self, TlsError> {
        Self::from_pem(&read(path)?, &path.display().to_string())
    }

    /// Trust anchors from a Secret's data (`ca.crt`, `ca-bundle.crt` or `ca.pem`).
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, TlsError> {
        let (key, pem) = pick(data, SECRET_ANCHOR_KEYS)?;
        Self::from_pem(pem, &format!("secret key {key}"))
    }

    pub fn certs(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    pub fn root_store(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// The anchors as a PEM bundle.
    pub fn to_pem(&self) -> String {
        self.certs.iter().map(|c| der_to_pem(c)).collect()
    }
}

/// A certificate authority that signs: a trust anchor (self-signed) or a per-cluster issuer.
#[derive(Debug)]
pub struct Issuer {
    /// This CA's certificate first, then any intermediates above it (never the anchor).
    chain: Vec<CertificateDer<'static>>,
    key_pem: String,
    signer: rcgen::Issuer<'static, KeyPair>,
    not_after: SystemTime,
}

impl Issuer {
    /// Generates a self-signed trust anchor (ECDSA P-256), `root.<control-ns>.<trust-domain>`.
    pub fn generate_anchor(
        trust_domain: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(TlsError::GenerateKey)?;
        let params = ca_params(&format!("root.{trust_domain}"), None, lifetime, now);
        let cert = params.self_signed(&key).map_err(|source| TlsError::Sign {
            what: "trust anchor",
            source,
        })?;
        Self::assemble(vec![cert.der().clone()], key, "generated trust anchor")
    }

    /// Generates a per-cluster issuer signed by this CA, `identity.<control-ns>.<trust-domain>`.
    /// It never outlives its signer.
    pub fn generate_issuer(
        &self,
        name: &str,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Self, TlsError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(TlsError::GenerateKey)?;
        let params = ca_params(name, Some(0), lifetime, now);
        let mut params = params;
        params.not_after = params.not_after.min(self.not_after.into());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &self.signer)
            .map_err(|source| TlsError::Sign {
                what: "issuer",
                source,
            })?;
        // An issuer under the anchor sends only itself; one under an intermediate sends both.
        let mut chain = vec![cert.der().clone()];
        if self.chain.len() > 1 {
            chain.extend(self.chain.iter().cloned());
        }
        Self::assemble(chain, key, "generated issuer")
    }

    /// Reads a CA from a PEM certificate (chain) and a PEM private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8], what: &str) -> Result<Self, TlsError> {
        let chain = parse_certs(cert_pem, what)?;
        let key = parse_key(key_pem, what)?;
        Self::assemble(chain, key, what)
    }

    /// Reads a CA from a certificate file and a key file.
    pub fn from_files(cert: &Path, key: &Path) -> Result<Self, TlsError> {
        Self::from_pem(
            &read(cert)?,
            &read(key)?,
            &format!("{} / {}", cert.display(), key.display()),
        )
    }

    /// Reads a CA from a Secret's data: `kubernetes.io/tls` (`tls.crt`, `tls.key`, as
    /// cert-manager writes it) or plain PEM keys (`crt.pem`/`key.pem`, `issuer.crt`/`issuer.key`).
    pub fn from_secret_data(data: &BTreeMap<String, Vec<u8>>) -> Result<Self, TlsError> {
        let (ck, cert) = pick(data, SECRET_CERT_KEYS)?;
        let (kk, key) = pick(data, SECRET_KEY_KEYS)?;
        Self::from_pem(cert, key, &format!("secret keys {ck}/{kk}"))
    }

    fn assemble(
        chain: Vec<CertificateDer<'static>>,
        key: KeyPair,
        what: &str,
    ) -> Result<Self, TlsError> {
        let first = chain.first().ok_or_else(|| TlsError::NoCertificate {
            what: what.to_owned(),
        })?;
        let (not_after, is_ca, spki) = {
            let (_, x509) = x509_parser::parse_x509_certificate(first).map_err(|e| {
                TlsError::ParseCertificate {
                    what: what.to_owned(),
                    reason: e.to_string(),
                }
            })?;
            (
                to_system_time(x509.validity().not_after.timestamp()),
                x509.is_ca(),
                x509.public_key().subject_public_key.data.to_vec(),
            )
        };
        if !is_ca {
            return Err(TlsError::NotCa {
                what: what.to_owned(),
            });
        }
        if spki != key.public_key_raw() {
            return Err(TlsError::KeyMismatch {
                what: what.to_owned(),
            });
        }
        let key_pem = key.serialize_pem();
        let signer = rcgen::Issuer::from_ca_cert_der(first, key).map_err(|e| {
            TlsError::ParseCertificate {
                what: what.to_owned(),
                reason: e.to_string(),
            }
        })?;
        Ok(Self {
            chain,
            key_pem,
            signer,
            not_after,
        })
    }

    /// This CA's certificate.
    pub fn cert(&self) -> &CertificateDer<'static> {
        // `assemble` guarantees a non-empty chain.
        &self.chain[0]
    }

    /// This CA's certificate followed by its intermediates (what a leaf is sent with).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// The certificate chain as PEM.
    pub fn cert_pem(&self) -> String {
        self.chain.iter().map(|c| der_to_pem(c)).collect()
    }

    /// The private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// This CA as a trust anchor (for a self-signed root).
    pub fn as_anchors(&self) -> Result<TrustAnchors, TlsError> {
        TrustAnchors::from_certs(vec![self.cert().clone()])
    }

    pub(crate) fn signer(&self) -> &rcgen::Issuer<'static, KeyPair> {
        &self.signer
    }
}

/// Writes `contents` to `path` (mode 0600 for keys), refusing to replace a file unless `force`.
pub fn write_pem(path: &Path, contents: &str, secret: bool, force: bool) -> Result<(), TlsError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).mode(if secret { 0o600 } else { 0o644 });
    if force {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    let werr = |source| TlsError::WriteFile {
        path: path.to_owned(),
        source,
    };
    let mut f = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            TlsError::AlreadyExists {
                path: path.to_owned(),
            }
        } else {
            werr(e)
        }
    })?;
    f.write_all(contents.as_bytes()).map_err(werr)
}

fn ca_params(
    cn: &str,
    path_len: Option<u8>,
    lifetime: Duration,
    now: SystemTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(match path_len {
        Some(n) => BasicConstraints::Constrained(n),
        None => BasicConstraints::Unconstrained,
    });
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = (now - CLOCK_SKEW).into();
    p.not_after = (now + lifetime).into();
    p.serial_number = Some(random_serial());
    p
}

pub(crate) fn random_serial() -> SerialNumber {
    let mut b: [u8; 16] = rand::random();
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

pub(crate) fn to_system_time(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadFile {
        path: PathBuf::from(path),
        source,
    })
}

fn pick<'a>(
    data: &'a BTreeMap<String, Vec<u8>>,
    keys: &'static [&'static str],
) -> Result<(&'static str, &'a [u8]), TlsError> {
    keys.iter()
        .find_map(|k| data.get(*k).map(|v| (*k, v.as_slice())))
        .ok_or(TlsError::SecretMissingKey { tried: keys })
}

pub(crate) fn parse_certs(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what: what.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what: what.to_owned(),
        });
    }
    Ok(certs)
}

/// The first PEM private key block (PKCS#8, SEC1 or PKCS#1) of `pem`.
pub(crate) fn parse_private_key(
    pem: &[u8],
    what: &str,
) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|_| TlsError::NoKey {
        what: what.to_owned(),
    })
}

/// Parses a PKCS#8 or SEC1 (`EC PRIVATE KEY`, cert-manager's default) ECDSA key.
pub(crate) fn parse_key(pem: &[u8], what: &str) -> Result<KeyPair, TlsError> {
    let key = parse_private_key(pem, what)?;
    let pkcs8 = match &key {
        PrivateKeyDer::Pkcs8(k) => k.clone_key(),
        PrivateKeyDer::Sec1(k) => PrivatePkcs8KeyDer::from(sec1_to_pkcs8_p256(k.secret_sec1_der())),
        _ => {
            return Err(TlsError::NoKey {
                what: what.to_owned(),
            });
        }
    };
    KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8, &PKCS_ECDSA_P256_SHA256).map_err(|source| {
        TlsError::BadKey {
            what: what.to_owned(),
            source,
        }
    })
}

/// Wraps a SEC1 `ECPrivateKey` in a PKCS#8 `PrivateKeyInfo` for P-256 (RFC 5915, RFC 5208).
fn sec1_to_pkcs8_p256(sec1: &[u8]) -> Vec<u8> {
    const ALG: &[u8] = &[
        0x30, 0x13, // AlgorithmIdentifier
        0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, // id-ecPublicKey
        0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, // prime256v1
    ];
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(ALG);
    body.push(0x04);
    der_len(&mut body, sec1.len());
    body.extend_from_slice(sec1);
    let mut out = vec![0x30];
    der_len(&mut out, body.len());
    out.extend_from_slice(&body);
    out
}

fn der_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else if len < 0x100 {
        out.extend_from_slice(&[0x81, len as u8]);
    } else {
        out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
    }
}

/// One DER certificate as a PEM block (64-column base64).
pub fn der_to_pem(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// `der` as a PEM block labelled `label` (64-column base64).
pub(crate) fn pem_block(label: &str, der: &[u8]) -> String {
    use std::fmt::Write;
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len() * 4 / 3 + 4);
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        let _ = writeln!(out, "{}", String::from_utf8_lossy(line));
    }
    let _ = writeln!(out, "-----END {label}-----");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn anchor_and_issuer_round_trip_through_files_and_secrets() {
        let crate::testing::TestPki { anchor, issuer, .. } = crate::testing::TestPki::new();
        assert!(issuer.not_after() <= anchor.not_after());

        let dir = tempfile::tempdir().unwrap();
        let (c, k, a) = (
            dir.path().join("issuer.crt"),
            dir.path().join("issuer.key"),
            dir.path().join("ca.crt"),
        );
        write_pem(&c, &issuer.cert_pem(), false, false).unwrap();
        write_pem(&k, issuer.key_pem(), true, false).unwrap();
        write_pem(&a, &anchor.cert_pem(), false, false).unwrap();
        let e = write_pem(&c, "x", false, false).unwrap_err();
        assert!(matches!(e, TlsError::AlreadyExists { .. }), "{e}");

        let back = Issuer::from_files(&c, &k).unwrap();
        assert_eq!(back.cert(), issuer.cert());
        let anchors = TrustAnchors::from_file(&a).unwrap();
        assert_eq!(anchors.certs(), &[anchor.cert().clone()]);

        // cert-manager's kubernetes.io/tls shape, with a SEC1 key.
        let pkcs8 = PrivateKeyDer::from_pem_slice(issuer.key_pem().as_bytes()).unwrap();
        let sec1 = inner_sec1(pkcs8.secret_der());
        let sec1_pem = format!(
            "-----BEGIN EC PRIVATE KEY-----\n{}-----END EC PRIVATE KEY-----\n",
            der_to_pem(&sec1)
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
        );
        let tls: BTreeMap<String, Vec<u8>> = [
            ("tls.crt", issuer.cert_pem().into_bytes()),
            ("tls.key", sec1_pem.into_bytes()),
            ("ca.crt", anchor.cert_pem().into_bytes()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(
            Issuer::from_secret_data(&tls).unwrap().cert(),
            issuer.cert()
        );
        TrustAnchors::from_secret_data(&tls).unwrap();

        // Plain PEM keys.
        let plain: BTreeMap<String, Vec<u8>> = [
            ("crt.pem", issuer.cert_pem().into_bytes()),
            ("key.pem", issuer.key_pem().as_bytes().to_vec()),
            ("ca-bundle.crt", anchor.cert_pem().into_bytes()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Issuer::from_secret_data(&plain).unwrap();
        TrustAnchors::from_secret_data(&plain).unwrap();

        let e = Issuer::from_secret_data(&BTreeMap::new()).unwrap_err();
        assert!(matches!(e, TlsError::SecretMissingKey { .. }), "{e}");
        // A key from another pair is refused.
        let e = Issuer::from_pem(
            issuer.cert_pem().as_bytes(),
            anchor.key_pem().as_bytes(),
            "mixed",
        )
        .unwrap_err();
        assert!(matches!(e, TlsError::KeyMismatch { .. }), "{e}");
    }

    /// The ECPrivateKey inside ring's PKCS#8 output: the last OCTET STRING of the outer SEQUENCE.
    fn inner_sec1(pkcs8: &[u8]) -> Vec<u8> {
        // 30 len 02 01 00 30 13 <alg> 04 len <sec1>
        let mut i = 2 + if pkcs8[1] & 0x80 != 0 {
            (pkcs8[1] & 0x7f) as usize
        } else {
            0
        };
        i += 3 + 2 + 0x13;
        assert_eq!(pkcs8[i], 0x04);
        let (len, hdr) = if pkcs8[i + 1] & 0x80 != 0 {
            (pkcs8[i + 2] as usize, 3)
        } else {
            (pkcs8[i + 1] as usize, 2)
        };
        pkcs8[i + hdr..i + hdr + len].to_vec()
    }
}
