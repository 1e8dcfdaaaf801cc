//! Four small sample services to put the gateway in front of: the user,
//! product, order and notification services of the shop, on ports
//! 3001-3004, answering plausible JSON. `scripts/demo.sh` starts them next to
//! the gateway so `curl localhost:3000/users/me` works on a fresh machine.
//! `POST /login` on the user service hands out an HS256 token signed with
//! `JWT_SECRET`, as a real user service would. Any request may ask for
//! `?delay_ms=N` (at most 10 s) to stand in for a slow service, e.g. to watch
//! the gateway drain it on shutdown.
//!
//!     cargo run --release -p demo-services [-- --host 0.0.0.0]

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

const SERVICES: [(&str, u16); 4] = [
    ("user-service", 3001),
    ("product-service", 3002),
    ("order-service", 3003),
    ("notification-service", 3004),
];

#[tokio::main]
async fn main() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
    let args: Vec<String> = std::env::args().collect();
    let host = match args.iter().position(|a| a == "--host") {
        Some(i) => args.get(i + 1).cloned().expect("--host needs an address"),
        None => "127.0.0.1".to_string(),
    };
    let mut servers = Vec::new();
    for (name, port) in SERVICES {
        let listener = TcpListener::bind((host.as_str(), port))
            .await
            .unwrap_or_else(|e| panic!("{name}: cannot listen on {host}:{port}: {e}"));
        println!("{name} listening on http://{host}:{port}");
        servers.push(tokio::spawn(serve(name, listener)));
    }
    for server in servers {
        let _ = server.await;
    }
}

async fn serve(name: &'static str, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| handle(name, req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    service: &'static str,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    if let Some(delay) = requested_delay(req.uri().query()) {
        println!("{service}: holding {method} {} for {delay:?}", req.uri());
        tokio::time::sleep(delay).await;
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let posted: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let (status, mut answer) = route(service, &method, &path, posted);
    answer["service"] = json!(service);
    let response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(answer.to_string())))
        .unwrap();
    Ok(response)
}

fn route(service: &str, method: &Method, path: &str, posted: Value) -> (u16, Value) {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get = method == Method::GET;
    let post = method == Method::POST;
    match (service, segments.as_slice()) {
        (_, ["health"]) if get => (200, json!({"status": "ok"})),

        ("user-service", ["me"]) if get => (200, user(1)),
        ("user-service", []) if get => (200, json!({"users": [user(1), user(2)]})),
        ("user-service", ["login"]) if post => match token_for(1) {
            Some(token) => (
                200,
                json!({"message": "Logged in", "user": user(1), "token": token}),
            ),
            None => (500, json!({"error": "JWT_SECRET is not set"})),
        },
        ("user-service", ["register"]) if post => {
            (201, json!({"message": "Registered", "user": posted}))
        }

        ("product-service", []) if get => (
            200,
            json!({"products": [product(1), product(2), product(3)]}),
        ),
        ("product-service", [id]) if get => match id.parse() {
            Ok(id @ 1..=3) => (200, product(id)),
            _ => (404, json!({"error": "Product not found"})),
        },
        ("product-service", []) if post => (201, json!({"product": posted})),

        ("order-service", []) if get => (200, json!({"orders": [order(7)]})),
        ("order-service", [id]) if get => match id.parse() {
            Ok(id) => (200, order(id)),
            Err(_) => (404, json!({"error": "Order not found"})),
        },
        ("order-service", []) if post => (201, json!({"order": posted, "status": "created"})),

        ("notification-service", []) if post => (202, json!({"queued": true})),

        _ => (404, json!({"error": "Not found"})),
    }
}

/// `delay_ms=N` in the query, capped so that no demo request hangs for long.
fn requested_delay(query: Option<&str>) -> Option<std::time::Duration> {
    let ms: u64 = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("delay_ms="))?
        .parse()
        .ok()?;
    Some(std::time::Duration::from_millis(ms.min(10_000)))
}

/// An hour-long token for user `id`, signed with `JWT_SECRET`.
fn token_for(id: u64) -> Option<String> {
    let secret = std::env::var("JWT_SECRET").ok().filter(|s| !s.is_empty())?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let claims = json!({"sub": id.to_string(), "role": "customer", "iat": now, "exp": now + 3600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .ok()
}

fn user(id: u64) -> Value {
    let (name, email) = if id == 1 {
        ("Ada Lovelace", "ada@example.com")
    } else {
        ("Alan Turing", "alan@example.com")
    };
    json!({"id": id, "name": name, "email": email})
}

fn product(id: u64) -> Value {
    let names = ["Mechanical keyboard", "USB-C hub", "27\" monitor"];
    let prices = [89.0, 34.5, 249.0];
    let i = (id as usize - 1) % names.len();
    json!({"id": id, "name": names[i], "price": prices[i], "currency": "EUR"})
}

fn order(id: u64) -> Value {
    json!({"id": id, "user_id": 1, "items": [{"product_id": 1, "quantity": 1}], "total": 89.0, "status": "shipped"})
}
