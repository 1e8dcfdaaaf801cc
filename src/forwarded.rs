//! Who the client is, and what the upstream is told about it:
//! `X-Forwarded-For`, the client address behind trusted proxies, and the
//! request id that ties one request's log lines together across services.
//!
//! Pingora does no `X-Forwarded-For` handling. A client-sent value is only
//! believed when the TCP peer is a configured trusted proxy; otherwise a
//! client could pick the address that logs, rate limits and services see.

use std::io::Write;
use std::net::IpAddr;

use ipnet::IpNet;

#[derive(Debug, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: the TCP peer, or, when the peer is a trusted
    /// proxy, the right-most `X-Forwarded-For` entry that is not itself a
    /// trusted proxy. Entries to the left of that one were written by the
    /// client and prove nothing.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        if !self.contains(peer) {
            return peer;
        }
        let Some(list) = forwarded_for else {
            return peer;
        };
        let mut client = peer;
        for entry in list.rsplit(',') {
            match parse_entry(entry) {
                Some(ip) if self.contains(ip) => client = ip,
                Some(ip) => return ip,
                None => return client,
            }
        }
        client
    }

    /// The `X-Forwarded-For` the upstream receives: the trusted chain with
    /// the peer appended, or just the peer when the peer is not trusted.
    pub fn forwarded_for(&self, peer: IpAddr, client_sent: Option<&str>) -> String {
        let peer = canonical(peer);
        let peer_text = IpText::new(peer);
        match client_sent.map(str::trim).filter(|v| !v.is_empty()) {
            Some(chain) if self.contains(peer) => [chain, peer_text.as_str()].join(", "),
            _ => peer_text.as_str().to_owned(),
        }
    }
}

/// An address as text, for the headers, rate-limit keys and log lines that
/// carry one on every request: `Display` for an IPv4 address goes through
/// `core::fmt` padding support and costs about ten times as much.
pub struct IpText {
    // The longest form is an IPv4-mapped IPv6 address: 45 characters.
    buf: [u8; 45],
    len: usize,
}

impl IpText {
    pub fn new(ip: IpAddr) -> Self {
        let mut text = IpText {
            buf: [0; 45],
            len: 0,
        };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            // Rare enough behind most load balancers to take the slow path.
            IpAddr::V6(v6) => {
                let mut rest = &mut text.buf[..];
                write!(rest, "{v6}").expect("an IPv6 address fits 45 bytes");
                text.len = 45 - rest.len();
            }
        }
        text
    }

    fn push(&mut self, byte: u8) {
        self.buf[self.len] = byte;
        self.len += 1;
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("an address is ASCII")
    }
}

/// IPv4 clients of a dual-stack listener arrive as `::ffff:a.b.c.d`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_entry(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

/// Keeps a client's `X-Request-Id` when it is short and plain (so it can be
/// logged and passed on without escaping), or makes a new one.
pub fn request_id(client_sent: Option<&[u8]>) -> String {
    match client_sent {
        Some(id) if is_sane_request_id(id) => String::from_utf8_lossy(id).into_owned(),
        // Encoded straight into a buffer: `to_string` goes through
        // `core::fmt` and cost about 300 instructions a request.
        _ => uuid::Uuid::new_v4()
            .hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer())
            .to_owned(),
    }
}

fn is_sane_request_id(id: &[u8]) -> bool {
    (1..=128).contains(&id.len())
        && id.iter().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/' | b'+' | b'=')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "127.0.0.1/32".parse().unwrap(),
        ])
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_sends() {
        let t = trusted();
        assert_eq!(
            t.client_ip(ip("203.0.113.9"), Some("1.2.3.4")),
            ip("203.0.113.9")
        );
        assert_eq!(
            t.forwarded_for(ip("203.0.113.9"), Some("1.2.3.4")),
            "203.0.113.9"
        );
        let nobody = TrustedProxies::default();
        assert_eq!(
            nobody.client_ip(ip("127.0.0.1"), Some("1.2.3.4")),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_entry_is_the_client() {
        let t = trusted();
        assert_eq!(
            t.client_ip(ip("10.1.1.1"), Some("6.6.6.6, 1.2.3.4, 10.0.0.5")),
            ip("1.2.3.4")
        );
        assert_eq!(
            t.client_ip(ip("10.1.1.1"), Some("10.0.0.7")),
            ip("10.0.0.7")
        );
        assert_eq!(t.client_ip(ip("10.1.1.1"), None), ip("10.1.1.1"));
        assert_eq!(
            t.client_ip(ip("10.1.1.1"), Some("garbage, 10.0.0.5")),
            ip("10.0.0.5")
        );
        assert_eq!(
            t.client_ip(ip("::ffff:10.1.1.1"), Some("1.2.3.4:5678")),
            ip("1.2.3.4")
        );
        assert_eq!(
            t.forwarded_for(ip("10.1.1.1"), Some("1.2.3.4")),
            "1.2.3.4, 10.1.1.1"
        );
        assert_eq!(t.forwarded_for(ip("10.1.1.1"), None), "10.1.1.1");
    }

    #[test]
    fn addresses_as_text_match_display() {
        for s in [
            "0.0.0.0",
            "127.0.0.1",
            "203.0.113.255",
            "10.99.100.9",
            "::1",
            "2001:db8::8a2e:370:7334",
        ] {
            assert_eq!(IpText::new(ip(s)).as_str(), ip(s).to_string());
        }
        let longest = ip("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255");
        assert_eq!(IpText::new(longest).as_str(), longest.to_string());
    }

    #[test]
    fn request_ids() {
        assert_eq!(request_id(Some(b"abc-123")), "abc-123");
        assert_ne!(request_id(Some(b"has space")), "has space");
        assert_ne!(request_id(Some(&[b'a'; 129])).len(), 129);
        let fresh = request_id(None);
        assert_eq!(fresh.len(), 36);
        assert!(uuid::Uuid::parse_str(&fresh).is_ok_and(|u| u.get_version_num() == 4));
        assert_ne!(request_id(None), request_id(None));
    }
}
