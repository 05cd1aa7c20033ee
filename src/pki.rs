//! Mutual TLS on the control channels (`[tls]`): OpenFlow from the bridges
//! (`ssl:` controller targets) and OVSDB to their servers (`ssl:` targets).
//!
//! Both ends prove who they are with certificates signed by the configured
//! CA (`[tls] ca`): a switch whose certificate is not signed by it is
//! refused in the TLS handshake. Signed is not enough to be a host's switch:
//! the names in the switch's certificate (its common name and DNS
//! alternative names) must include the `switch_certificate` configured for
//! the host whose datapath id it claims, or the controller refuses the
//! session (`controller::switch_events`). A certificate stolen from one host
//! therefore cannot take over another host's bridge.
//!
//! rustls with the `ring` provider, as the REST API's TLS; x509-parser reads
//! the names out of the peer's certificate (rustls verifies it, but does not
//! expose its subject).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsConfig;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("tls.{field} {path}: {message}")]
    File {
        field: &'static str,
        path: PathBuf,
        message: String,
    },
    #[error("[tls] does not make a usable configuration: {0}")]
    Config(String),
}

/// The controller's side of both channels.
#[derive(Clone)]
pub struct Pki {
    /// For switches connecting to the OpenFlow listener: client
    /// certificates required, verified against the CA.
    pub server: Arc<ServerConfig>,
    /// For connecting to OVSDB servers: this certificate presented, theirs
    /// verified against the CA.
    pub client: Arc<ClientConfig>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pki")
    }
}

fn certs(field: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let err = |message: String| PkiError::File {
        field,
        path: path.to_path_buf(),
        message,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    Ok(certs)
}

impl Pki {
    pub fn load(c: &TlsConfig) -> Result<Pki, PkiError> {
        let chain = certs("cert", &c.cert)?;
        let key = PrivateKeyDer::from_pem_file(&c.key).map_err(|e| PkiError::File {
            field: "key",
            path: c.key.clone(),
            message: e.to_string(),
        })?;
        let mut roots = RootCertStore::empty();
        for ca in certs("ca", &c.ca)? {
            roots.add(ca).map_err(|e| PkiError::File {
                field: "ca",
                path: c.ca.clone(),
                message: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let bad = |e: rustls::Error| PkiError::Config(e.to_string());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| PkiError::Config(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(bad)?;
        let client = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(bad)?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(bad)?;
        Ok(Pki {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// The names a certificate is issued to: its subject's common names and its
/// DNS alternative names (empty if it cannot be read).
pub fn names(cert: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, x)) = x509_parser::parse_x509_certificate(cert.as_ref()) else {
        return Vec::new();
    };
    let mut out: Vec<String> = x
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_string))
        .collect();
    if let Ok(Some(san)) = x.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                out.push(d.to_string());
            }
        }
    }
    out
}

/// Whether a certificate issued to `names` may be the switch of a host that
/// expects `expected`. OVS's `ovs-pki` writes common names such as
/// `h1-switch id:5c4b...`: the first word counts as the name.
pub fn certifies(names: &[String], expected: &str) -> bool {
    names
        .iter()
        .any(|n| n == expected || n.split_whitespace().next() == Some(expected))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_is_known_by_its_certificate_names() {
        let names = vec!["h1-switch id:5c4b0e".to_string(), "h1.example".to_string()];
        assert!(certifies(&names, "h1-switch"));
        assert!(certifies(&names, "h1.example"));
        assert!(!certifies(&names, "h2-switch"));
        assert!(!certifies(&names, "h1"));
        assert!(!certifies(&[], "h1-switch"));
    }

    #[test]
    fn names_are_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["h1.example".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "h1-switch");
        let cert = params.self_signed(&key).unwrap();
        let der = CertificateDer::from(cert.der().to_vec());
        assert_eq!(names(&der), vec!["h1-switch", "h1.example"]);
        assert!(names(&CertificateDer::from(vec![1, 2, 3])).is_empty());
    }
}
