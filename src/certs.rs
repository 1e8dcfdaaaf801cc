//! The TLS listeners' certificates, held where a reload can replace them.
//!
//! Pingora 0.9's rustls listener builds its `ServerConfig` once, when the
//! service starts, from files or from a certificate resolver. The gateway
//! gives it a resolver that answers every handshake with the certificate
//! and key it holds now, so a renewed certificate is served from the next
//! handshake after a reload; connections already open keep theirs.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_rustls::sign::CertifiedKey;
use pingora_rustls::{ClientHello, CryptoProvider, ResolvesServerCert};

use crate::config::TlsFiles;

pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn load(files: &TlsFiles) -> Result<Self, String> {
        Ok(CertStore {
            current: ArcSwap::new(certified_key(files)?),
        })
    }

    /// `files` read and checked now, to be served once `apply`ed: a reload
    /// reads every certificate before it changes anything.
    pub fn renewal(self: &Arc<Self>, files: &TlsFiles) -> Result<Renewal, String> {
        Ok(Renewal {
            store: self.clone(),
            key: certified_key(files)?,
        })
    }
}

/// A certificate read for a store, not served yet.
pub struct Renewal {
    store: Arc<CertStore>,
    key: Arc<CertifiedKey>,
}

impl Renewal {
    /// Serves the new certificate from the next handshake on.
    pub fn apply(self) {
        self.store.current.store(self.key);
    }
}

/// The chain and key of `files`, read and checked against each other.
fn certified_key(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let loaded = pingora_rustls::load_certs_and_key_files(&files.cert_file, &files.key_file)
        .map_err(|e| format!("{} / {}: {e}", files.cert_file, files.key_file))?;
    let Some((chain, key)) = loaded else {
        return Err(format!(
            "{} / {}: no certificate, or no private key",
            files.cert_file, files.key_file
        ));
    };
    pingora_rustls::install_default_crypto_provider();
    let provider = CryptoProvider::get_default().ok_or("no TLS crypto provider")?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: {e}", files.key_file))?;
    let certified = CertifiedKey::new(chain, key);
    certified.keys_match().map_err(|e| {
        format!(
            "{} does not belong to {}: {e}",
            files.key_file, files.cert_file
        )
    })?;
    Ok(Arc::new(certified))
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}
