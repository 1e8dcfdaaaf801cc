//! Token material for the JWT tests: keys made by `openssl`, tokens and JWKs
//! made by PyJWT (`jwt_tool.py`, independent of the crate the gateway uses),
//! and a JWKS server on 127.0.0.1 whose key set can rotate or go away.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub struct KeyPair {
    pub private: String,
    pub public: String,
    pub public_file: PathBuf,
}

/// One key pair of each kind the gateway verifies, made fresh per test.
pub struct Keys {
    _dir: tempfile::TempDir,
    pub rsa: KeyPair,
    pub rsa_other: KeyPair,
    /// 1024 bits: below what the gateway's crypto backend verifies.
    pub rsa_weak: KeyPair,
    pub ec256: KeyPair,
    pub ec384: KeyPair,
    pub ed: KeyPair,
}

impl Keys {
    pub fn generate() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let pair = |name: &str, args: &[&str]| {
            let private_file = dir.path().join(format!("{name}.key"));
            let public_file = dir.path().join(format!("{name}.pub.pem"));
            let mut genpkey = vec!["genpkey", "-out", private_file.to_str().unwrap()];
            genpkey.extend_from_slice(args);
            openssl(&genpkey);
            openssl(&[
                "pkey",
                "-in",
                private_file.to_str().unwrap(),
                "-pubout",
                "-out",
                public_file.to_str().unwrap(),
            ]);
            KeyPair {
                private: read(&private_file),
                public: read(&public_file),
                public_file,
            }
        };
        let rsa = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
        Keys {
            rsa: pair("rsa", &rsa),
            rsa_other: pair("rsa-other", &rsa),
            rsa_weak: pair(
                "rsa-weak",
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"],
            ),
            ec256: pair(
                "ec256",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
            ),
            ec384: pair(
                "ec384",
                &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
            ),
            ed: pair("ed", &["-algorithm", "ED25519"]),
            _dir: dir,
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// `sub`, `iat` now and `exp` in an hour, plus `extra`.
pub fn claims(sub: &str, extra: Value) -> Value {
    let mut claims = json!({"sub": sub, "iat": now(), "exp": now() + 3600});
    for (k, v) in extra.as_object().unwrap() {
        claims[k] = v.clone();
    }
    claims
}

/// Runs `jwt_tool.py` on a batch of jobs (one Python start for all).
pub fn tool(jobs: &[Value]) -> Vec<String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/jwt_tool.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::from(jobs.to_vec()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "jwt_tool.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A mint job for `tool`.
pub fn mint(alg: &str, key: &str, claims: Value) -> Value {
    json!({"op": "mint", "alg": alg, "key": key, "claims": claims})
}

pub fn mint_with_headers(alg: &str, key: &str, claims: Value, headers: Value) -> Value {
    json!({"op": "mint", "alg": alg, "key": key, "claims": claims, "headers": headers})
}

pub fn one(job: Value) -> String {
    tool(&[job]).remove(0)
}

/// A JWKS document with one JWK per (public PEM, kid, alg).
pub fn jwks(keys: &[(&str, &str, &str)]) -> String {
    let jobs: Vec<Value> = keys
        .iter()
        .map(|(pem, kid, alg)| json!({"op": "jwk", "key": pem, "kid": kid, "alg": alg}))
        .collect();
    let keys: Vec<Value> = tool(&jobs)
        .iter()
        .map(|k| serde_json::from_str(k).unwrap())
        .collect();
    json!({ "keys": keys }).to_string()
}

struct Served {
    status: u16,
    content_type: &'static str,
    body: String,
}

/// Serves one document at every path and counts requests; the document and
/// status can change mid-test, and `stop` makes later connects fail. A JWKS
/// by default; `serve` for any document (a web page for the browser tests).
pub struct JwksServer {
    addr: SocketAddr,
    served: Arc<Mutex<Served>>,
    hits: Arc<AtomicUsize>,
    stop: watch::Sender<bool>,
}

impl JwksServer {
    pub async fn start(body: &str) -> JwksServer {
        JwksServer::start_on(0, body).await
    }

    pub async fn start_on(port: u16, body: &str) -> JwksServer {
        JwksServer::serve("127.0.0.1", port, "application/json", body).await
    }

    pub async fn serve(ip: &str, port: u16, content_type: &'static str, body: &str) -> JwksServer {
        let listener = TcpListener::bind((ip, port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(Mutex::new(Served {
            status: 200,
            content_type,
            body: body.to_string(),
        }));
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop, mut stopped) = watch::channel(false);
        let (served2, hits2) = (served.clone(), hits.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                let (served, hits) = (served2.clone(), hits2.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        let s = served.lock().unwrap();
                        let response = Response::builder()
                            .status(s.status)
                            .header("content-type", s.content_type)
                            .body(Full::new(Bytes::from(s.body.clone())))
                            .unwrap();
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        JwksServer {
            addr,
            served,
            hits,
            stop,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    /// `http://ip:port`, the origin of the pages it serves.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set(&self, status: u16, body: &str) {
        let mut s = self.served.lock().unwrap();
        s.status = status;
        s.body = body.to_string();
    }

    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}
