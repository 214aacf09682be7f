//! Leaf certificates: the workload's key and CSR, and the issuer's checks and signature.

use crate::TlsError;
use crate::ca::{CLOCK_SKEW, Issuer, random_serial, to_system_time};
use rcgen::{
    CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivateKeyDer};
use std::time::{Duration, SystemTime};
use strait_core::identity::Identity;

/// Default lifetime of a workload certificate.
pub const DEFAULT_LEAF_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// A workload's fresh key and the CSR that asks for its identity.
#[derive(Debug)]
pub struct KeyAndCsr {
    /// The private key, PKCS#8 DER.
    pub key: PrivateKeyDer<'static>,
    /// The CSR, DER; its only SAN is the identity.
    pub csr: Vec<u8>,
}

/// Generates an ECDSA P-256 key and a CSR whose only SAN is `identity`.
pub fn generate_csr(identity: &Identity) -> Result<KeyAndCsr, TlsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(TlsError::GenerateKey)?;
    let name = identity.to_string();
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, name.as_str());
    params.subject_alt_names = vec![SanType::DnsName(name.try_into().map_err(|source| {
        TlsError::Sign {
            what: "CSR",
            source,
        }
    })?)];
    let csr = params
        .serialize_request(&key)
        .map_err(|source| TlsError::Sign {
            what: "CSR",
            source,
        })?;
    Ok(KeyAndCsr {
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        csr: csr.der().to_vec(),
    })
}

/// An issued leaf: the certificate, the chain to send with it, and its validity.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert: CertificateDer<'static>,
    /// The issuer and any intermediates above it (never the anchor).
    pub intermediates: Vec<CertificateDer<'static>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl Leaf {
    /// The leaf followed by its intermediates.
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        std::iter::once(self.cert.clone())
            .chain(self.intermediates.iter().cloned())
            .collect()
    }
}

impl Issuer {
    /// Checks a CSR and signs a leaf for `identity`.
    ///
    /// The CSR must carry exactly one SAN, a DNS name equal to `identity`. The leaf is good for
    /// server and client authentication, from `now - 20s` for `lifetime`, and never outlives
    /// the issuer.
    pub fn issue(
        &self,
        csr_der: &[u8],
        identity: &Identity,
        lifetime: Duration,
        now: SystemTime,
    ) -> Result<Leaf, TlsError> {
        let csr =
            CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
                .map_err(TlsError::CsrParse)?;
        let expected = identity.to_string();
        let mut dns = Vec::new();
        for san in &csr.params.subject_alt_names {
            match san {
                SanType::DnsName(n) => dns.push(n.as_str().to_owned()),
                SanType::IpAddress(_) => return Err(TlsError::CsrForbiddenSan { kind: "IP" }),
                SanType::URI(_) => return Err(TlsError::CsrForbiddenSan { kind: "URI" }),
                SanType::Rfc822Name(_) => {
                    return Err(TlsError::CsrForbiddenSan { kind: "email" });
                }
                SanType::OtherName(_) => {
                    return Err(TlsError::CsrForbiddenSan { kind: "otherName" });
                }
                _ => return Err(TlsError::CsrForbiddenSan { kind: "unknown" }),
            }
        }
        if dns.len() != 1 || dns[0] != expected {
            return Err(TlsError::CsrSanMismatch {
                expected,
                found: dns,
            });
        }

        let not_before = now - CLOCK_SKEW;
        let not_after = (now + lifetime).min(self.not_after());
        if not_after <= now {
            return Err(TlsError::IssuerExpired {
                not_after: self.not_after(),
            });
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, expected.as_str());
        params.subject_alt_names = csr.params.subject_alt_names.clone();
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&csr.public_key, self.signer())
            .map_err(|source| TlsError::Sign {
                what: "leaf",
                source,
            })?;
        // X.509 times have whole seconds; report what the certificate says.
        let (nb, na) = cert_validity(cert.der())?;
        Ok(Leaf {
            cert: cert.der().clone(),
            intermediates: self.chain().to_vec(),
            not_before: nb,
            not_after: na,
        })
    }
}

/// The validity window written in a certificate.
pub fn cert_validity(der: &[u8]) -> Result<(SystemTime, SystemTime), TlsError> {
    let (_, x509) =
        x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::ParseCertificate {
            what: "certificate".into(),
            reason: e.to_string(),
        })?;
    let v = x509.validity();
    Ok((
        to_system_time(v.not_before.timestamp()),
        to_system_time(v.not_after.timestamp()),
    ))
}

/// The identity a certificate names: its only DNS SAN, which must be an identity name.
pub(crate) fn identity_of(der: &[u8]) -> Result<Identity, TlsError> {
    let names = dns_names(der)?;
    match names.as_slice() {
        [one] => one.parse().map_err(|_| TlsError::PeerIdentity {
            found: names.clone(),
        }),
        _ => Err(TlsError::PeerIdentity { found: names }),
    }
}

/// The DNS SANs of a certificate.
pub fn dns_names(der: &[u8]) -> Result<Vec<String>, TlsError> {
    use x509_parser::extensions::GeneralName;
    let (_, x509) =
        x509_parser::parse_x509_certificate(der).map_err(|e| TlsError::ParseCertificate {
            what: "certificate".into(),
            reason: e.to_string(),
        })?;
    let san = x509
        .subject_alternative_name()
        .map_err(|e| TlsError::ParseCertificate {
            what: "certificate".into(),
            reason: e.to_string(),
        })?;
    Ok(san
        .map(|s| {
            s.value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    GeneralName::DNSName(d) => Some((*d).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default())
}
