//! TLS (`--certfile`, `--keyfile`) with rustls: the server configuration is built once in the
//! master (so a bad certificate is a start-up error) and every accepted connection on every
//! listener gets a session from it, as Gunicorn wraps all listeners when `certfile` is set.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Loads the certificate chain and the private key (from `keyfile`, or from `certfile`
/// when no keyfile is given, as Python's `load_cert_chain` does).
///
/// # Errors
/// A missing or unreadable file, no certificate, no key, or a key that does not match.
pub fn server_config(
    certfile: &str,
    keyfile: Option<&str>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certfile)
        .map_err(|e| format!("can't read certfile '{certfile}': {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in '{certfile}': {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in '{certfile}'"));
    }
    let key_path = keyfile.unwrap_or(certfile);
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|e| format!("can't read a private key from '{key_path}': {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("certificate and key from '{certfile}' don't match: {e}"))?;
    // The sync worker speaks HTTP/1.1 only; clients preferring h2 fall back.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
