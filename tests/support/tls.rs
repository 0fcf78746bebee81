//! A certificate authority made at test time (rcgen) with a server certificate for
//! `localhost` and 127.0.0.1, and the rustls configs built from it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

pub struct TestCa {
    /// PEM of the CA certificate: what the agent gets through `coordinator.ca_file`.
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    /// The server certificate (signed by the CA) and its key.
    pub server_cert: CertificateDer<'static>,
    server_key_der: Vec<u8>,
}

impl TestCa {
    /// A fresh CA and a server certificate for `localhost` and `127.0.0.1`.
    pub fn new() -> TestCa {
        TestCa::with_server_names(&["localhost", "127.0.0.1"])
    }

    pub fn with_server_names(names: &[&str]) -> TestCa {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "usepod-edge test CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
        let issuer = Issuer::new(ca_params, ca_key);

        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "usepod-edge test coordinator");
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = params.signed_by(&server_key, &issuer).expect("server cert");

        TestCa {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server_cert: server_cert.der().clone(),
            server_key_der: server_key.serialize_der(),
        }
    }

    /// Write the CA certificate as PEM into `dir`; returns the file's path.
    pub fn write_ca_pem(&self, dir: &Path) -> PathBuf {
        let path = dir.join("test-ca.pem");
        std::fs::write(&path, &self.ca_pem).expect("write CA pem");
        path
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        let cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![self.server_cert.clone()], key)
        .expect("server config");
        Arc::new(cfg)
    }

    /// A client config trusting only this CA (what the self-test client uses).
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).expect("add CA root");
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Arc::new(cfg)
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}
