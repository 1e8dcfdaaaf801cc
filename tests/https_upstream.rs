//! `https://` instances, and a JWKS on an `https://` URL: the gateway speaks
//! TLS and verifies the certificate, against `server.ca_file` when given. The upstream is
//! Python's own HTTPS server with a certificate from a private CA made by `openssl`, so
//! neither side of the handshake is this crate's code.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use support::*;

const SERVER: &str = r#"
import http.server, json, ssl, sys
class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = json.dumps({"path": self.path, "host": self.headers.get("host")}).encode()
        if self.path == "/jwks.json":
            body = open(sys.argv[3], "rb").read()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[1], sys.argv[2])
server.socket = context.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
"#;

/// A Python HTTPS server, stopped by its PID when dropped.
struct TlsUpstream {
    child: Child,
    port: u16,
}

impl TlsUpstream {
    /// Serves `jwks_file` at `/jwks.json`, and echoes elsewhere.
    fn start(cert: &Path, key: &Path, jwks_file: &Path) -> TlsUpstream {
        let mut child = Command::new("python3")
            .args(["-c", SERVER])
            .arg(cert)
            .arg(key)
            .arg(jwks_file)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server's port");
        TlsUpstream { child, port }
    }
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl {args:?}");
}

/// A private CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by
/// it (`cert.pem`, `key.pem`): what an internal service would have.
fn private_ca(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let days = ["-days", "2"];
    openssl(
        dir,
        &[
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=test CA",
            ][..],
            &days,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat(),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "key.pem",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
            ][..],
            &days,
            &["-extfile", "server.ext", "-out", "cert.pem"],
        ]
        .concat(),
    );
    (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    )
}

fn config(upstream: &TlsUpstream) -> String {
    format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
upstreams:
  secure: {{instances: ['https://127.0.0.1:{}'], timeouts: {{connect: 2s}}}}
routes:
  - {{prefix: /secure, upstream: secure}}
",
        upstream.port
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn https_instances_are_verified_against_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let upstream = TlsUpstream::start(&cert, &key, &dir.path().join("none"));

    let ca = format!("  ca_file: {}\n", ca.display());
    let gw = Gateway::start_with_server_keys(&ca, &config(&upstream)).await;
    let r = reqwest::get(gw.url("/secure/me?x=1")).await.unwrap();
    assert_eq!(r.status(), 200, "{}", gw.stderr());
    let seen: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
    assert_eq!(seen["path"], "/me?x=1");
    assert_eq!(seen["host"], format!("127.0.0.1:{}", upstream.port));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_untrusted_upstream_certificate_is_a_502() {
    let dir = tempfile::tempdir().unwrap();
    let (_ca, cert, key) = private_ca(dir.path());
    let upstream = TlsUpstream::start(&cert, &key, &dir.path().join("none"));

    // No ca_file: the system store does not know the private CA.
    let gw = Gateway::start(&config(&upstream)).await;
    let r = reqwest::get(gw.url("/secure/me")).await.unwrap();
    assert_eq!(r.status(), 502);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_url_on_https_is_verified_against_ca_file() {
    use serde_json::json;
    use support::jwt::{claims, jwks, mint_with_headers, one, Keys};

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(dir.path());
    let keys = Keys::generate();
    let jwks_file = dir.path().join("jwks.json");
    std::fs::write(&jwks_file, jwks(&[(&keys.rsa.public, "k1", "RS256")])).unwrap();
    let idp = TlsUpstream::start(&cert, &key, &jwks_file);
    let service = Upstream::start("svc").await;
    let yaml = format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
jwt: {{keys: [{{jwks_url: 'https://127.0.0.1:{}/jwks.json', algorithms: [RS256]}}]}}
upstreams: {{svc: {{instances: ['{}']}}}}
routes: [{{prefix: /orders, upstream: svc, auth: required}}]
",
        idp.port,
        service.url()
    );
    let token = one(mint_with_headers(
        "RS256",
        &keys.rsa.private,
        claims("u", json!({})),
        json!({"kid": "k1"}),
    ));
    let call = |gw: &Gateway| client().get(gw.url("/orders/1")).bearer_auth(&token).send();

    let ca = format!("  ca_file: {}\n", ca.display());
    let gw = Gateway::start_with_server_keys(&ca, &yaml).await;
    assert_eq!(call(&gw).await.unwrap().status(), 200, "{}", gw.stderr());

    // Without the CA the provider's certificate is not trusted: no keys.
    let gw = Gateway::start(&yaml).await;
    assert_eq!(call(&gw).await.unwrap().status(), 401);
    assert!(
        gw.stderr().contains("unreachable at startup"),
        "{}",
        gw.stderr()
    );
}
