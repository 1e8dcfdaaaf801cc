//! The `listeners:` list: addresses, TLS files and HTTP/2, checked at
//! startup so that a missing or unreadable certificate or key stops the
//! gateway with the key path named, before Pingora would fail on it later.

use std::net::SocketAddr;

use super::raw::RawListener;
use crate::yaml::Invalid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    pub address: SocketAddr,
    pub tls: Option<TlsFiles>,
    /// With TLS: HTTP/2 by ALPN next to HTTP/1.1.
    pub http2: bool,
    /// The HTTPS port plain requests are redirected to.
    pub redirect_to: Option<u16>,
    /// Client connections open at once, at least 1.
    pub max_connections: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: String,
    pub key_file: String,
}

pub(super) fn validate_listeners(raw: Vec<RawListener>) -> Result<Vec<ListenerSettings>, Invalid> {
    if raw.is_empty() {
        return Err(Invalid::at("listeners", "at least one listener is needed"));
    }
    let mut listeners = Vec::new();
    for (i, l) in raw.iter().enumerate() {
        let at = format!("listeners[{i}]");
        let address = l.address.parse::<SocketAddr>().map_err(|_| {
            Invalid::at(
                format!("{at}.address"),
                format!(
                    "`{}` is not an IP:port address (e.g. 0.0.0.0:3000)",
                    l.address
                ),
            )
        })?;
        let tls = match &l.tls {
            Some(tls) => {
                check_pem(
                    &format!("{at}.tls.cert_file"),
                    &tls.cert_file,
                    "CERTIFICATE-----",
                )?;
                check_pem(
                    &format!("{at}.tls.key_file"),
                    &tls.key_file,
                    "PRIVATE KEY-----",
                )?;
                Some(TlsFiles {
                    cert_file: tls.cert_file.clone(),
                    key_file: tls.key_file.clone(),
                })
            }
            None => None,
        };
        if l.redirect_to_https && tls.is_some() {
            return Err(Invalid::at(
                format!("{at}.redirect_to_https"),
                "only a plain listener redirects to HTTPS",
            ));
        }
        if l.max_connections == 0 {
            return Err(Invalid::at(
                format!("{at}.max_connections"),
                "must be at least 1",
            ));
        }
        listeners.push(ListenerSettings {
            address,
            tls,
            http2: l.http2,
            redirect_to: None,
            max_connections: l.max_connections,
        });
    }
    let https_port = listeners
        .iter()
        .find(|l| l.tls.is_some())
        .map(|l| l.address.port());
    for (i, l) in raw.iter().enumerate() {
        if l.redirect_to_https {
            listeners[i].redirect_to = Some(https_port.ok_or_else(|| {
                Invalid::at(
                    format!("listeners[{i}].redirect_to_https"),
                    "there is no TLS listener to redirect to",
                )
            })?);
        }
    }
    Ok(listeners)
}

/// The file is readable and holds a PEM block ending in `marker`.
fn check_pem(at: &str, file: &str, marker: &str) -> Result<(), Invalid> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| Invalid::at(at, format!("cannot read {file}: {e}")))?;
    if !text.contains(marker) {
        return Err(Invalid::at(
            at,
            format!(
                "{file} holds no PEM `{}` block",
                marker.trim_end_matches('-')
            ),
        ));
    }
    Ok(())
}
