//! A cluster's own certificates: a CA, kube-apiserver's serving certificate, an admin client
//! certificate in `system:masters`, and the service-account signing key.

use crate::error::{Error, io};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use time::{Duration, OffsetDateTime};

/// The PEM files of one cluster, all in one folder. Its `Debug` names the files, never a key.
#[derive(Clone)]
pub struct ClusterPki {
    pub ca_cert: PathBuf,
    pub serving_cert: PathBuf,
    pub serving_key: PathBuf,
    pub admin_cert: PathBuf,
    pub admin_key: PathBuf,
    /// ECDSA key that signs service-account tokens (PKCS#8).
    pub service_account_key: PathBuf,
    /// Its public half, which verifies them.
    pub service_account_pub: PathBuf,
    pub ca_pem: String,
    pub admin_cert_pem: String,
    pub admin_key_pem: String,
    /// The CA's key, which signs the certificates of a real node's components.
    ca_key_pem: String,
    dir: PathBuf,
}

impl std::fmt::Debug for ClusterPki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPki")
            .field("dir", &self.dir)
            .field("ca_cert", &self.ca_cert)
            .finish_non_exhaustive()
    }
}

/// A certificate and key written as PEM files.
#[derive(Clone, Debug)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClusterPki {
    /// Generates a fresh CA and the certificates signed by it into `dir`.
    /// `host_ip` is the address kube-apiserver binds for real nodes; it is in the serving
    /// certificate beside 127.0.0.1.
    pub fn generate(
        dir: &Path,
        cluster: &str,
        service_ip: Ipv4Addr,
        host_ip: Ipv4Addr,
    ) -> Result<Self, Error> {
        let now = OffsetDateTime::now_utc();
        let ca_key = KeyPair::generate()?;
        let ca_key_pem = ca_key.serialize_pem();
        let mut ca = CertificateParams::default();
        ca.distinguished_name = dn(&format!("strait-localcluster {cluster} CA"), None);
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        ca.not_before = now - Duration::minutes(5);
        ca.not_after = now + Duration::days(30);
        let ca_cert = ca.self_signed(&ca_key)?;
        let ca_pem = ca_cert.pem();
        let issuer = Issuer::new(ca, ca_key);

        let serving_key = KeyPair::generate()?;
        let mut serving = CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            host_ip.to_string(),
            service_ip.to_string(),
            "kubernetes".to_owned(),
            "kubernetes.default".to_owned(),
            "kubernetes.default.svc".to_owned(),
            "kubernetes.default.svc.cluster.local".to_owned(),
        ])?;
        serving.distinguished_name = dn("kube-apiserver", None);
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        serving.not_before = now - Duration::minutes(5);
        serving.not_after = now + Duration::days(30);
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let admin_key = KeyPair::generate()?;
        let mut admin = CertificateParams::default();
        admin.distinguished_name = dn("strait-admin", Some("system:masters"));
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        admin.not_before = now - Duration::minutes(5);
        admin.not_after = now + Duration::days(30);
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let sa_key = KeyPair::generate()?;

        let write = |name: &str, pem: &str| -> Result<PathBuf, Error> {
            let p = dir.join(name);
            std::fs::write(&p, pem).map_err(io(format!("writing {}", p.display())))?;
            Ok(p)
        };
        Ok(Self {
            ca_cert: write("ca.crt", &ca_pem)?,
            serving_cert: write("apiserver.crt", &serving_cert.pem())?,
            serving_key: write("apiserver.key", &serving_key.serialize_pem())?,
            admin_cert: write("admin.crt", &admin_cert.pem())?,
            admin_key: write("admin.key", &admin_key.serialize_pem())?,
            service_account_key: write("sa.key", &sa_key.serialize_pem())?,
            service_account_pub: write("sa.pub", &sa_key.public_key_pem())?,
            ca_pem,
            admin_cert_pem: admin_cert.pem(),
            admin_key_pem: admin_key.serialize_pem(),
            ca_key_pem,
            dir: dir.to_path_buf(),
        })
    }

    /// Issues a client certificate (`CN=cn`, `O=org`) as `<file>.crt`/`<file>.key`, as the
    /// bootstrap RBAC identities of Kubernetes' components expect (`system:node:<name>` in
    /// `system:nodes`, `system:kube-proxy`, `system:kube-controller-manager`, ...).
    pub fn client(&self, file: &str, cn: &str, org: Option<&str>) -> Result<CertFiles, Error> {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(cn, org);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, params)
    }

    /// Issues a serving certificate for `ips` as `<file>.crt`/`<file>.key`.
    pub fn serving(&self, file: &str, cn: &str, ips: &[Ipv4Addr]) -> Result<CertFiles, Error> {
        let mut params =
            CertificateParams::new(ips.iter().map(ToString::to_string).collect::<Vec<_>>())?;
        params.distinguished_name = dn(cn, None);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(file, params)
    }

    fn sign(&self, file: &str, mut params: CertificateParams) -> Result<CertFiles, Error> {
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(30);
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, KeyPair::from_pem(&self.ca_key_pem)?)?;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &issuer)?;
        let files = CertFiles {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&files.cert, cert.pem())
            .map_err(io(format!("writing {}", files.cert.display())))?;
        std::fs::write(&files.key, key.serialize_pem())
            .map_err(io(format!("writing {}", files.key.display())))?;
        Ok(files)
    }
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}
