//! `api-gateway --healthcheck`: the container image's health check. It is
//! built into the binary so that the image ships no curl (and none of the
//! libraries curl links): it asks the gateway on this machine for
//! `/healthz` and succeeds on a 200.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// The listener's port when `PORT` is unset, as in the shipped config.
const DEFAULT_PORT: u16 = 3000;

/// Where the probe goes: 127.0.0.1 on `PORT`, the variable the shipped
/// config listens on.
pub fn target(port_var: Option<&str>) -> Result<SocketAddr, String> {
    let port = match port_var {
        None | Some("") => DEFAULT_PORT,
        Some(text) => text
            .parse()
            .map_err(|_| format!("PORT `{text}` is not a port number"))?,
    };
    Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// One `GET /healthz` within `timeout` for each step; `Ok` on a 200.
pub fn probe(address: SocketAddr, timeout: Duration) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("{address}: {e}");
    let mut stream = TcpStream::connect_timeout(&address, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(fail)?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < head.len() && !head[..read].contains(&b'\n') {
        match stream.read(&mut head[read..]).map_err(fail)? {
            0 => break,
            n => read += n,
        }
    }
    status_line_ok(&head[..read]).then_some(()).ok_or_else(|| {
        format!(
            "{address}: /healthz answered `{}`",
            first_line(&head[..read])
        )
    })
}

fn status_line_ok(head: &[u8]) -> bool {
    head.starts_with(b"HTTP/1.1 200 ") || head.starts_with(b"HTTP/1.0 200 ")
}

fn first_line(head: &[u8]) -> String {
    let line = head
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or(&[]);
    String::from_utf8_lossy(line).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_comes_from_port() {
        assert_eq!(target(None).unwrap().port(), 3000);
        assert_eq!(target(Some("")).unwrap().port(), 3000);
        assert_eq!(target(Some("8080")).unwrap().to_string(), "127.0.0.1:8080");
        assert!(target(Some("http")).unwrap_err().contains("`http`"));
    }

    #[test]
    fn only_a_200_is_healthy() {
        assert!(status_line_ok(b"HTTP/1.1 200 OK\r\n"));
        assert!(!status_line_ok(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!status_line_ok(b"HTTP/1.1 2000"));
        assert_eq!(
            first_line(b"HTTP/1.1 503 Busy\r\nx: y"),
            "HTTP/1.1 503 Busy"
        );
    }
}
