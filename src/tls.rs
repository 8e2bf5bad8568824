//! TLS (`--certfile`, `--keyfile`, client certificates with `--cert-reqs`/`--ca-certs`)
//! with rustls: the server configuration is built once in the master (so a bad certificate
//! is a start-up error) and every accepted connection on every listener gets a session
//! from it, as Gunicorn wraps all listeners when `certfile` is set. TLS fails closed: a
//! setting rustls cannot apply exactly is refused at start-up.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

/// The TLS settings, as Gunicorn names them.
pub struct TlsOptions<'a> {
    pub certfile: &'a str,
    pub keyfile: Option<&'a str>,
    /// `ssl.CERT_NONE` (0), `CERT_OPTIONAL` (1) or `CERT_REQUIRED` (2).
    pub cert_reqs: i64,
    /// The CAs client certificates are checked against.
    pub ca_certs: Option<&'a str>,
    /// An OpenSSL cipher list: refused (rustls has its own suites).
    pub ciphers: Option<&'a str>,
    pub suppress_ragged_eofs: bool,
}

/// Loads the certificate chain and the private key (from `keyfile`, or from `certfile`
/// when no keyfile is given, as Python's `load_cert_chain` does), and the client
/// certificate policy. What rgunicorn cannot honour exactly is refused, never weakened.
///
/// # Errors
/// A missing or unreadable file, no certificate, no key, a key that does not match, a
/// client-certificate policy without CAs, or a setting rustls cannot apply.
pub fn server_config(o: &TlsOptions<'_>) -> Result<Arc<rustls::ServerConfig>, String> {
    if let Some(ciphers) = o.ciphers {
        return Err(format!(
            "ciphers = '{ciphers}' can't be applied: rgunicorn's TLS (rustls) offers only its \
             own cipher suites (TLS 1.3, and TLS 1.2 with ECDHE and AEAD), not an OpenSSL \
             cipher list; remove the setting"
        ));
    }
    if !o.suppress_ragged_eofs {
        return Err(
            "suppress_ragged_eofs = False can't be applied: rgunicorn treats a TLS \
                    connection closed without close_notify as the end of the stream"
                .to_string(),
        );
    }
    let certfile = o.certfile;
    let certs = read_certs(certfile, "certfile")?;
    let key_path = o.keyfile.unwrap_or(certfile);
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("can't read a private key from '{key_path}': {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = match o.cert_reqs {
        0 => builder.with_no_client_auth(),
        1 | 2 => {
            let ca_certs = o.ca_certs.ok_or_else(|| {
                format!(
                    "cert_reqs = {} asks for client certificates: set ca_certs to the CAs \
                     that issue them",
                    o.cert_reqs
                )
            })?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca_certs, "ca_certs")? {
                roots
                    .add(cert)
                    .map_err(|e| format!("bad CA certificate in '{ca_certs}': {e}"))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            // CERT_OPTIONAL: a client may present none, but one it presents must verify.
            let verifier = if o.cert_reqs == 1 {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| format!("can't use ca_certs '{ca_certs}': {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
        n => return Err(format!("Invalid value for cert_reqs: {n}")),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key from '{certfile}' don't match: {e}"))?;
    // The sync worker speaks HTTP/1.1 only; clients preferring h2 fall back.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Every certificate in a PEM file (at least one).
fn read_certs(path: &str, setting: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("can't read {setting} '{path}': {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in '{path}': {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in '{path}'"));
    }
    Ok(certs)
}
