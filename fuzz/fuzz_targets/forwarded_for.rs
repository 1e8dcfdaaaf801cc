//! `X-Forwarded-For` handling (`api_gateway::forwarded`): the client
//! address behind trusted proxies, the chain passed upstream, addresses as
//! text, and the request id.
//!
//! The input is text: line 1 the trusted networks (CIDRs or addresses,
//! separated by commas or spaces, as `trusted_proxies` lists them), line 2
//! the TCP peer, the rest the header the client sent.
//!
//! Beyond "no panic": an untrusted peer is the client whatever it sends;
//! otherwise the client is the peer or an address from the header; the
//! chain passed on ends with the peer and is a valid header value when the
//! client's was.

#![no_main]

use std::net::IpAddr;

use api_gateway::forwarded::{request_id, IpText, TrustedProxies};
use http::HeaderValue;
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;

fn net(text: &str) -> Option<IpNet> {
    text.parse()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
}

/// How an entry of the header may name an address: bare, or with a port.
fn entry_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fuzz_target!(|data: &[u8]| {
    // Whatever the bytes, a request id is short and plain, or a new UUID.
    let id = request_id(Some(data));
    assert!((1..=128).contains(&id.len()), "{id:?}");
    assert!(HeaderValue::from_str(&id).is_ok(), "{id:?}");

    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(3, '\n');
    let nets: Vec<IpNet> = lines
        .next()
        .unwrap_or_default()
        .split([',', ' '])
        .filter_map(net)
        .collect();
    let peer: IpAddr = lines
        .next()
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or(IpAddr::from([10, 1, 1, 1]));
    let header = lines.next();
    let trusted = TrustedProxies::new(nets);

    let peer_text = IpText::new(canonical(peer));
    assert_eq!(peer_text.as_str(), canonical(peer).to_string());

    let client = trusted.client_ip(peer, header);
    let chain = trusted.forwarded_for(peer, header);
    if !trusted.contains(peer) {
        assert_eq!(client, peer);
        assert_eq!(chain, peer_text.as_str());
        return;
    }
    let from_header = || {
        header
            .into_iter()
            .flat_map(|h| h.split(','))
            .filter_map(entry_ip)
            .any(|ip| canonical(ip) == client)
    };
    assert!(client == peer || from_header(), "{client} from {header:?}");
    assert!(
        chain == peer_text.as_str() || chain.ends_with(&format!(", {}", peer_text.as_str())),
        "{chain:?}"
    );
    // The proxy only hands over a header that is text; what it sends on
    // must be a header value too.
    if header.is_some_and(|h| HeaderValue::from_str(h).is_ok()) {
        assert!(HeaderValue::from_str(&chain).is_ok(), "{chain:?}");
    }
});
