//! The real parts the integration tests run against: HTTP upstreams on
//! 127.0.0.1 (hyper), the real `api-gateway` binary with a config written
//! for the test, and a raw HTTP/1.1 client for paths that ordinary clients
//! would normalize before sending.

#![allow(dead_code)] // each test file uses its own subset

pub mod jwt;
pub mod otlp;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const BIG_BODY: usize = 5 << 20;

/// The byte at offset `i` of the `/big` response.
pub fn big_byte(i: usize) -> u8 {
    (i % 251) as u8
}

struct UpstreamState {
    name: String,
    /// TCP connections accepted.
    connections: AtomicUsize,
    hits: AtomicUsize,
    /// Echo requests whose whole body arrived.
    completed: AtomicUsize,
    healthy: AtomicBool,
    /// Answer every request (but `/health`) with this status; 0: echo.
    status: std::sync::atomic::AtomicU16,
    /// Wait this long before answering, in milliseconds.
    delay_ms: std::sync::atomic::AtomicU64,
}

/// A real HTTP/1.1 server. By received path: `/health` answers per
/// `set_healthy`; `/big` streams 5 MiB; `/slow` answers after 3 s; anything
/// else echoes the request body and reports what it saw in `x-seen-*`.
pub struct Upstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
    stop: watch::Sender<bool>,
}

impl Upstream {
    pub async fn start(name: &str) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(UpstreamState {
            name: name.to_string(),
            connections: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            status: std::sync::atomic::AtomicU16::new(0),
            delay_ms: std::sync::atomic::AtomicU64::new(0),
        });
        let (stop, mut stopped) = watch::channel(false);
        let accept_state = state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = stopped.changed() => return,
                };
                let state = accept_state.clone();
                state.connections.fetch_add(1, Ordering::SeqCst);
                let mut conn_stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(state.clone(), req));
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stopped.changed() => {}
                    }
                });
            }
        });
        Upstream { addr, state, stop }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far: pooled keep-alive connections are
    /// counted once.
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Requests whose body arrived complete (a streamed body cut off
    /// midway counts in `hits` but not here).
    pub fn completed(&self) -> usize {
        self.state.completed.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// From now on every request but `/health` gets this status (0: the
    /// usual echo), after reading its body.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::SeqCst);
    }

    /// From now on every request but `/health` waits this long.
    pub fn set_delay(&self, delay: Duration) {
        self.state
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    /// Stops listening and drops open connections: later connects are refused.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop();
    }
}

type Body = BoxBody<Bytes, Infallible>;

async fn handle(
    state: Arc<UpstreamState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/health" {
        let status = if state.healthy.load(Ordering::SeqCst) {
            200
        } else {
            503
        };
        return Ok(Response::builder()
            .status(status)
            .body(full(Bytes::new()))
            .unwrap());
    }
    state.hits.fetch_add(1, Ordering::SeqCst);
    let delay = state.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let response = Response::builder().header("x-upstream", &state.name);
    let status = state.status.load(Ordering::SeqCst);
    if status != 0 {
        let _ = req.into_body().collect().await;
        return Ok(response.status(status).body(full(Bytes::new())).unwrap());
    }
    match path.as_str() {
        "/big" => {
            let chunks = (0..BIG_BODY).step_by(64 << 10).map(|start| {
                let end = (start + (64 << 10)).min(BIG_BODY);
                Ok::<_, Infallible>(Frame::data(Bytes::from(
                    (start..end).map(big_byte).collect::<Vec<u8>>(),
                )))
            });
            Ok(response
                .body(BodyExt::boxed(StreamBody::new(stream::iter(chunks))))
                .unwrap())
        }
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(response.body(full(Bytes::from_static(b"slow"))).unwrap())
        }
        _ => {
            let mut seen = serde_json::Map::new();
            for (name, value) in req.headers() {
                let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
                match seen.get_mut(name.as_str()) {
                    Some(serde_json::Value::String(existing)) => {
                        *existing = format!("{existing}, {value}")
                    }
                    _ => {
                        seen.insert(name.as_str().to_string(), value.into());
                    }
                }
            }
            let content_type = req
                .headers()
                .get("content-type")
                .cloned()
                .unwrap_or_else(|| "application/octet-stream".parse().unwrap());
            // `x-reply-header: name: value` asks for that header in the
            // response, like a service that sets its own (e.g. CORS ones).
            let mut response = response;
            for ask in req.headers().get_all("x-reply-header") {
                if let Some((name, value)) = ask.to_str().unwrap_or("").split_once(':') {
                    response = response.header(name.trim(), value.trim());
                }
            }
            let response = response
                .header("x-seen-method", req.method().as_str())
                .header("x-seen-uri", req.uri().to_string())
                .header(
                    "x-seen-host",
                    req.headers()
                        .get("host")
                        .cloned()
                        .unwrap_or_else(|| "".parse().unwrap()),
                )
                .header(
                    "x-seen-headers",
                    serde_json::Value::Object(seen).to_string(),
                )
                .header("content-type", content_type);
            match req.into_body().collect().await {
                Ok(body) => {
                    state.completed.fetch_add(1, Ordering::SeqCst);
                    Ok(response.body(full(body.to_bytes())).unwrap())
                }
                Err(_) => Ok(response.status(400).body(full(Bytes::new())).unwrap()),
            }
        }
    }
}

fn full(bytes: Bytes) -> Body {
    BodyExt::boxed(Full::new(bytes))
}

/// The four services of the shipped config, in its order: user, product,
/// order, notification.
pub async fn four_services() -> Vec<Upstream> {
    let mut services = Vec::new();
    for name in [
        "user-service",
        "product-service",
        "order-service",
        "notification-service",
    ] {
        services.push(Upstream::start(name).await);
    }
    services
}

/// An HTTP client whose requests cannot hang a test.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// A response header's value, `""` when absent.
pub fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers().get(name).map_or("", |v| v.to_str().unwrap())
}

/// A port nothing listens on, for the gateway (or a dead instance) to use.
/// Not `bind(:0)`: that hands out an ephemeral port, which the kernel may
/// give to another test's client socket before the gateway binds it. These
/// come from below the ephemeral range (32768+), each used once per process,
/// with a per-process offset so concurrent test binaries rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 40) as u16 * 300;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::SeqCst) % 300;
        let free = |ip: &str| std::net::TcpListener::bind((ip, port)).is_ok();
        if free("127.0.0.1") && free("0.0.0.0") {
            return port;
        }
    }
}

/// Polls `check` every 20 ms until it holds; panics after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_api-gateway")
}

/// The real gateway binary, stopped (by its PID) when dropped.
pub struct Gateway {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    /// The `server:` section `start` wrote, kept for `rewrite`.
    server: String,
}

impl Gateway {
    /// Writes `yaml` (with `{port}` and `{dir}` filled in, after a `server:`
    /// section of private pid/upgrade paths, so tests must not write one)
    /// and starts the gateway on it.
    pub async fn start(yaml: &str) -> Gateway {
        Gateway::start_with_server_keys("", yaml).await
    }

    /// Like `start`, with more `server:` keys (indented lines, e.g.
    /// `"  ca_file: /x.pem\n"`).
    pub async fn start_with_server_keys(server_keys: &str, yaml: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let d = dir.path().display();
        let server = format!("server:\n  threads: 2\n  pid_file: {d}/gw.pid\n  upgrade_sock: {d}/gw.sock\n{server_keys}");
        let conf = dir.path().join("gateway.yaml");
        std::fs::write(&conf, fill(&server, yaml, port, dir.path())).unwrap();
        let args = ["-c".to_string(), conf.display().to_string()];
        Gateway::spawn(dir, port, &args, &[], None, server).await
    }

    /// The config file `start` wrote.
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("gateway.yaml")
    }

    /// Replaces the config file as `start` writes it (same `server:`
    /// section, `{port}` and `{dir}` filled in); the gateway reads it on its
    /// next reload.
    pub fn rewrite(&self, yaml: &str) {
        let text = fill(&self.server, yaml, self.port, self.dir.path());
        std::fs::write(self.conf(), text).unwrap();
    }

    /// `api-gateway -s reload -c <the config>`, run to completion.
    pub fn reload(&self) -> std::process::Output {
        run_binary(&["-s", "reload", "-c", self.conf().to_str().unwrap()])
    }

    /// Sends `signal` (`HUP`, `USR1`, ...) to the gateway process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal} failed");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Starts the binary with explicit arguments, environment and working
    /// directory (the shipped config, a `.env` file), listening on `port`.
    pub async fn start_with(args: &[&str], env: &[(&str, &str)], cwd: &Path, port: u16) -> Gateway {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let dir = tempfile::tempdir().unwrap();
        Gateway::spawn(dir, port, &args, env, Some(cwd), String::new()).await
    }

    async fn spawn(
        dir: tempfile::TempDir,
        port: u16,
        args: &[String],
        env: &[(&str, &str)],
        cwd: Option<&Path>,
        server: String,
    ) -> Gateway {
        let mut command = Command::new(binary());
        command
            .args(args)
            .current_dir(cwd.unwrap_or(dir.path()))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
        for var in [
            "PORT",
            "USER_SERVICE_URL",
            "PRODUCT_SERVICE_URL",
            "ORDER_SERVICE_URL",
            "NOTIFICATION_SERVICE_URL",
            "JWT_SECRET",
        ] {
            command.env_remove(var);
        }
        command.envs(env.iter().copied());
        let child = command.spawn().unwrap();
        let mut gateway = Gateway {
            child,
            port,
            dir,
            server,
        };
        gateway.wait_ready().await;
        gateway
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("gateway exited early ({status}):\n{}", self.stderr());
            }
            if let Ok(r) = client
                .get(self.url("/"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready after 60 s:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The shipped `conf/gateway.yaml`, run from the repository as a user
    /// would, with the four service URLs and `JWT_SECRET` in the
    /// environment.
    pub async fn start_shipped(services: &[Upstream], jwt_secret: &str) -> Gateway {
        let port = free_port();
        let port_text = port.to_string();
        let urls: Vec<String> = services.iter().map(Upstream::url).collect();
        let env = [
            ("PORT", port_text.as_str()),
            ("USER_SERVICE_URL", &urls[0]),
            ("PRODUCT_SERVICE_URL", &urls[1]),
            ("ORDER_SERVICE_URL", &urls[2]),
            ("NOTIFICATION_SERVICE_URL", &urls[3]),
            ("JWT_SECRET", jwt_secret),
        ];
        Gateway::start_with(&[], &env, &repo_path(""), port).await
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr")).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the sample of metric `name` in the Prometheus text `text`
/// whose labels include all of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The Prometheus text the admin listener on `port` serves.
pub async fn scrape(port: u16) -> String {
    client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A self-signed certificate for 127.0.0.1 (not a CA: webpki refuses a CA
/// certificate as a server's own).
pub fn certificate(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

pub fn trusting(cert: &Path) -> reqwest::ClientBuilder {
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .timeout(Duration::from_secs(15))
}

/// A test's config as the gateway gets it: the `server:` section, then
/// `yaml` with `{port}` and `{dir}` filled in.
fn fill(server: &str, yaml: &str, port: u16, dir: &Path) -> String {
    let body = yaml
        .replace("{port}", &port.to_string())
        .replace("{dir}", &dir.display().to_string());
    format!("{server}{body}")
}

/// Runs the binary to completion, e.g. `-t -c file`.
pub fn run_binary(args: &[&str]) -> std::process::Output {
    Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Sends `GET {target}` exactly as written (no client-side normalization)
/// with `Connection: close`, and reads the whole response.
pub async fn raw_get(port: u16, target: &str) -> RawResponse {
    raw_request(
        port,
        &format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Writes `request` byte for byte (the caller ends it with a blank line and
/// `Connection: close`) and reads the whole response.
pub async fn raw_request(port: u16, request: &str) -> RawResponse {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    if headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
    {
        body = dechunk(&body);
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
}
