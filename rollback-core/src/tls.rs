//! One TLS stack for every connection the library makes: rustls with the `ring`
//! provider, roots from the system or a CA file, and libpq's verification levels.
//!
//! The levels are libpq's because that is what operators of managed databases already
//! write in their URLs: `require` encrypts without checking who answers (a server with
//! a self-signed certificate keeps working), `verify-ca` checks the chain only, and
//! `verify-full` checks the chain and that the certificate names the host.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::error::{Error, ErrorKind, Result};

/// Makes `ring` the process's provider, once. Harmless when a host application (the
/// Node or Python process embedding this library) installed one first.
pub(crate) fn install_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn provider() -> Arc<CryptoProvider> {
    install_provider();
    CryptoProvider::get_default().cloned().unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// How much of the server's certificate is checked.
// Only the postgres driver asks for less than `Full`.
#[cfg_attr(not(feature = "driver-postgres"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verify {
    /// Encrypted, whoever answers (libpq's `prefer` and `require`).
    None,
    /// The chain up to a trusted root, not the name (`verify-ca`).
    Chain,
    /// The chain and the host's name (`verify-full`, and https).
    Full,
}

impl Verify {
    #[cfg_attr(not(feature = "driver-postgres"), allow(dead_code))]
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Verify::None => "encrypted, server certificate not verified",
            Verify::Chain => "encrypted, certificate chain verified (not the host name)",
            Verify::Full => "encrypted, certificate and host name verified",
        }
    }
}

/// Where trusted roots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Roots {
    /// The operating system's store (`/etc/ssl/certs` here).
    System,
    /// Only the certificates of this PEM file (a private CA).
    // Only the postgres driver reads the file through here (http checks read it first).
    #[cfg_attr(not(feature = "driver-postgres"), allow(dead_code))]
    File(PathBuf),
    /// Only these certificates, already read from `file` (named in errors). A caller
    /// that keeps a configuration for long reads the file itself, to notice when it
    /// changes (a CA rotation).
    Pem {
        /// Where they were read from.
        file: PathBuf,
        /// The PEM text.
        pem: Vec<u8>,
    },
}

/// What a client needs to open a TLS connection.
#[derive(Debug, Clone)]
pub(crate) struct ClientTls {
    pub verify: Verify,
    pub roots: Roots,
    /// A client certificate and its key (PEM files), for servers that ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::new(ErrorKind::ConfigInvalid, format!("cannot read the {what} {}", path.display())).with_source(e)
    })?;
    parse_certs(&bytes, path, what)
}

fn parse_certs(bytes: &[u8], path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(bytes).filter_map(|c| c.ok()).collect();
    if certs.is_empty() {
        return Err(Error::new(
            ErrorKind::ConfigInvalid,
            format!("the {what} {} holds no PEM certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// The trusted roots.
pub(crate) fn root_store(roots: &Roots) -> Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    let add = |p: &Path, certs: Vec<CertificateDer<'static>>, store: &mut RootCertStore| {
        for c in certs {
            store.add(c).map_err(|e| {
                Error::new(
                    ErrorKind::ConfigInvalid,
                    format!("the CA file {} holds a certificate rustls refuses", p.display()),
                )
                .with_source(e)
            })?;
        }
        Ok::<(), Error>(())
    };
    match roots {
        Roots::File(p) => add(p, read_certs(p, "CA file")?, &mut store)?,
        Roots::Pem { file, pem } => add(file, parse_certs(pem, file, "CA file")?, &mut store)?,
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
        }
    }
    Ok(store)
}

/// A rustls client configuration for these settings.
pub(crate) fn client_config(t: &ClientTls) -> Result<ClientConfig> {
    let provider = provider();
    let inner = match t.verify {
        Verify::None => None,
        Verify::Chain | Verify::Full => {
            let store = root_store(&t.roots)?;
            if store.is_empty() {
                return Err(Error::new(
                    ErrorKind::ConfigInvalid,
                    "no trusted root certificate to verify the server with (give a CA file)",
                ));
            }
            Some(WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone()).build().map_err(
                |e| Error::new(ErrorKind::ConfigInvalid, "cannot build the certificate verifier").with_source(e),
            )?)
        }
    };
    let verifier = Arc::new(Verifier { inner, check_name: t.verify == Verify::Full, provider: provider.clone() });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::unexpected("rustls refuses its default protocol versions").with_source(e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match &t.identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certs = read_certs(cert, "client certificate")?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                Error::new(ErrorKind::ConfigInvalid, format!("cannot read a private key from {}", key.display()))
                    .with_source(e)
            })?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                Error::new(ErrorKind::ConfigInvalid, "the client certificate and key do not go together").with_source(e)
            })
        }
    }
}

/// libpq's levels over rustls's verifier. Handshake signatures are always checked: even
/// `require` must talk to the holder of the key it was shown.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else { return Ok(ServerCertVerified::assertion()) };
        match inner.verify_server_cert(end_entity, intermediates, name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            r => r,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

const UNKNOWN_ISSUER: &str = "the server's certificate is not signed by a trusted CA (wrong or missing CA file?)";
const NOT_FOR_NAME: &str = "the server's certificate does not name this host";

/// The reason a TLS failure happened, in words an operator acts on; `None` when `e`'s
/// chain holds no rustls error.
pub(crate) fn explain(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        // `io::Error::source` skips the error it wraps: look inside it.
        if let Some(s) = c.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()).and_then(|i| explain(i)) {
            return Some(s);
        }
        // Some clients (hyper's connect errors) keep the rustls error in a private
        // wrapper that no downcast reaches; its text is rustls's own.
        if c.source().is_none() {
            let text = c.to_string();
            if text.contains("invalid peer certificate: UnknownIssuer") {
                return Some(UNKNOWN_ISSUER.into());
            }
            if text.contains("invalid peer certificate: NotValidForName") {
                return Some(NOT_FOR_NAME.into());
            }
        }
        if let Some(t) = c.downcast_ref::<rustls::Error>() {
            return Some(match t {
                rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => UNKNOWN_ISSUER.into(),
                rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
                ) => NOT_FOR_NAME.into(),
                rustls::Error::InvalidCertificate(
                    CertificateError::Expired | CertificateError::ExpiredContext { .. },
                ) => "the server's certificate has expired".into(),
                other => format!("TLS: {other}"),
            });
        }
        cur = c.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_a_clear_error() {
        let t = ClientTls { verify: Verify::Full, roots: Roots::File("/nonexistent/ca.pem".into()), identity: None };
        let e = client_config(&t).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("empty.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let t = ClientTls { verify: Verify::Chain, roots: Roots::File(f), identity: None };
        assert!(client_config(&t).unwrap_err().to_string().contains("no PEM certificate"));
        // Encrypt-only needs no roots at all.
        let t = ClientTls { verify: Verify::None, roots: Roots::File("/nonexistent".into()), identity: None };
        assert!(client_config(&t).is_ok());
    }
}
