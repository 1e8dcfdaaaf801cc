//! What the gateway's own per-request work costs, piece by piece: path
//! normalization, the route lookup, the CORS response hook, the rate-limit
//! decision, one access-log line, choosing an upstream instance, and a
//! request's part of a trace. (Token verification has its own benchmark,
//! `benches/jwt.rs`.)
//!
//! The pieces are built from a config document through `config::load`, as
//! the gateway builds them: the shipped four routes plus a longer prefix and
//! a host-bound route, an origin list with a wildcard, and the shipped rate
//! limit. A whole proxied request costs about 50 µs of CPU
//! (`benches/compare.sh`), which is the scale to read these against.
//!
//! Run with: `cargo bench --bench hot_path`

use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api_gateway::access_log::{format_dev, format_json, LogEntry};
use api_gateway::config::{self, Config};
use api_gateway::context::RequestCtx;
use api_gateway::path;
use api_gateway::plugin::chain::PluginConfig;
use api_gateway::plugin::cors::Cors;
use api_gateway::plugin::rate_limit::local::LocalStore;
use api_gateway::plugin::rate_limit::{Gcra, RateLimit, Store};
use api_gateway::plugin::Plugin;
use api_gateway::routing::{Entry, Route, RouteTable};
use api_gateway::trace::{ServerFacts, Tracer, TryEnd};
use api_gateway::upstream::Upstream;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use futures_util::FutureExt;
use pingora::http::{RequestHeader, ResponseHeader};

const CONFIG: &str = r#"
listeners: [{address: "127.0.0.1:3000"}]
cors:
  allow_origins: ["http://localhost:5173", "https://*.shop.example"]
  expose_headers: [X-Request-Id, Retry-After]
rate_limit: {requests: 100, per: 1s, burst: 200}
upstreams:
  users: {instances: ["http://127.0.0.1:3001"]}
  products: {instances: ["http://127.0.0.1:3002"]}
  orders: {instances: ["http://127.0.0.1:3003"]}
  notify: {instances: ["http://127.0.0.1:3004"]}
routes:
  - {prefix: /users, upstream: users}
  - {prefix: /products, upstream: products}
  - {prefix: /products/reviews, upstream: products}
  - {prefix: /orders, upstream: orders}
  - {prefix: /notify, upstream: notify}
  - {prefix: /admin, host: admin.shop.example, upstream: users}
"#;

fn load() -> Config {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(CONFIG.as_bytes()).unwrap();
    config::load(file.path()).unwrap()
}

/// The global policy of one kind, from the config of requests that match
/// no route.
fn plugin_config(config: &Config, want: fn(&PluginConfig) -> bool) -> PluginConfig {
    config
        .routing
        .unmatched_plugins
        .iter()
        .find(|p| want(p))
        .cloned()
        .expect("the global policy")
}

fn request(method: &str, path: &str, headers: &[(&'static str, &str)]) -> RequestHeader {
    let mut req = RequestHeader::build(method, path.as_bytes(), None).unwrap();
    for (name, value) in headers {
        req.insert_header(*name, *value).unwrap();
    }
    req
}

/// What NGINX's `return 200` upstream in the load benchmark answers.
fn upstream_response() -> ResponseHeader {
    let mut resp = ResponseHeader::build(200, None).unwrap();
    resp.insert_header("Server", "nginx/1.22.1").unwrap();
    resp.insert_header("Date", "Mon, 23 Nov 2026 12:00:00 GMT")
        .unwrap();
    resp.insert_header("Content-Type", "application/json")
        .unwrap();
    resp.insert_header("Content-Length", "21").unwrap();
    resp
}

fn routing(c: &mut Criterion) {
    let config = load();
    let routes = RouteTable::new(
        config
            .routing
            .routes
            .iter()
            .map(|r| Entry {
                route: Route::new(r),
                target: (),
            })
            .collect(),
    );
    let mut group = c.benchmark_group("routing");
    for raw in ["/users/me", "/products/123", "/orders/42/items/./7/../8"] {
        group.bench_function(format!("normalize {raw}"), |b| {
            b.iter(|| path::normalize(black_box(raw)).unwrap())
        });
    }
    for (host, path) in [
        (Some("localhost"), "/users/me"),
        (Some("localhost"), "/products/reviews/9"),
        (Some("admin.shop.example"), "/admin/stats"),
        (Some("localhost"), "/nowhere"),
    ] {
        group.bench_function(format!("find {path}"), |b| {
            b.iter(|| routes.find(black_box(host), black_box(path)))
        });
    }
    let users = &routes.get(routes.find(None, "/users/me").unwrap()).route;
    group.bench_function("upstream_uri /users/me", |b| {
        b.iter(|| users.upstream_uri(black_box("/users/me"), black_box(Some("a=1"))))
    });
    group.finish();
}

fn cors(c: &mut Criterion) {
    let config = load();
    let PluginConfig::Cors(policy) = plugin_config(&config, |p| matches!(p, PluginConfig::Cors(_)))
    else {
        unreachable!()
    };
    let cors = Cors::new(policy);
    let ctx = RequestCtx::default();
    let mut group = c.benchmark_group("cors");
    for (name, origin) in [
        ("exact origin", "http://localhost:5173"),
        ("wildcard origin", "https://eu.shop.example"),
        ("refused origin", "https://evil.example"),
    ] {
        let req = request("GET", "/users/me", &[("Origin", origin)]);
        group.bench_function(format!("response, {name}"), |b| {
            b.iter_batched_ref(
                upstream_response,
                |resp| cors.response(&req, resp, &ctx).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    let preflight = request(
        "OPTIONS",
        "/users/me",
        &[
            ("Origin", "http://localhost:5173"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
    );
    group.bench_function("preflight answer headers", |b| {
        b.iter_batched_ref(
            || ResponseHeader::build(204, None).unwrap(),
            |resp| cors.response(&preflight, resp, &ctx).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn rate_limit(c: &mut Criterion) {
    let config = load();
    let PluginConfig::RateLimit(policy) =
        plugin_config(&config, |p| matches!(p, PluginConfig::RateLimit(_)))
    else {
        unreachable!()
    };
    let mut group = c.benchmark_group("rate_limit");
    let gcra = Gcra::new(policy.requests, policy.per, policy.burst);
    group.bench_function("gcra decide", |b| {
        b.iter(|| gcra.decide(black_box(Some(1_000_000)), black_box(2_000_000)))
    });

    // Far above the shipped limit, so every request is allowed.
    let mut generous = policy.clone();
    generous.requests = 1_000_000_000;
    generous.burst = 1_000_000_000;
    let limiter = RateLimit::new(
        generous,
        Store::Local(Arc::new(LocalStore::new(100_000))),
        None,
    );
    let req = request("GET", "/users/me", &[]);
    // One client, and 50,000 clients taking turns (an LRU that misses its
    // CPU caches).
    for (name, clients) in [("one client", 1u32), ("50k clients", 50_000)] {
        let mut ctx = RequestCtx::default();
        let mut next = 0u32;
        group.bench_function(format!("request hook, local store, {name}"), |b| {
            b.iter(|| {
                next = (next + 1) % clients;
                ctx.client_ip = Some(IpAddr::from((0x0a00_0000 + next).to_be_bytes()));
                ctx.response_headers.clear();
                // The local store never waits: one poll decides.
                limiter
                    .request(&req, &mut ctx)
                    .now_or_never()
                    .expect("decided without waiting")
            })
        });
    }
    group.finish();
}

fn access_log(c: &mut Criterion) {
    let entry = LogEntry {
        timestamp: SystemTime::now(),
        request_id: "2fd1e856-b94d-4e7f-9a84-8435f3ade7e9",
        client_ip: Some("203.0.113.7".parse().unwrap()),
        method: "GET",
        path: "/users/me?fields=name,email",
        route: Some("/users"),
        upstream: Some("users"),
        upstream_addr: Some("127.0.0.1:3001".parse().unwrap()),
        status: 200,
        bytes: 56,
        duration_ms: Duration::from_micros(1234),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
        trace: None,
    };
    let mut group = c.benchmark_group("access_log");
    let mut line = Vec::with_capacity(512);
    group.bench_function("format json", |b| {
        b.iter(|| {
            line.clear();
            format_json(black_box(&entry), &mut line);
        })
    });
    group.bench_function("format dev", |b| {
        b.iter(|| {
            line.clear();
            format_dev(black_box(&entry), false, &mut line);
        })
    });
    group.finish();
}

/// One try's choice and bookkeeping: pick an instance of three (skipping
/// none tried yet), count it in flight, record its success, let it go.
fn balancing(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("balancing");
    for (name, extra) in [
        ("round_robin", ""),
        ("least_request", "\n    load_balancing: least_request"),
        (
            "consistent_hash",
            "\n    load_balancing: consistent_hash\n    hash_on: {by: header, name: X-Cart}",
        ),
        (
            "round_robin, outlier detection",
            "\n    outlier_detection: {consecutive_failures: 5}",
        ),
    ] {
        let text = format!(
            "listeners: [{{address: '127.0.0.1:3000'}}]
upstreams:
  svc:
    instances: ['http://127.0.0.1:3001', 'http://127.0.0.1:3002', 'http://127.0.0.1:3003']{extra}
routes: [{{prefix: /svc, upstream: svc}}]
"
        );
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let config = config::load(file.path()).unwrap();
        let (upstream, _tasks) = Upstream::new(&config.routing.upstreams[0], None);
        runtime.block_on(upstream.prepare(false)).unwrap();
        group.bench_function(format!("select and record, {name}"), |b| {
            b.iter(|| {
                let selected = upstream
                    .select(black_box(Some(b"cart-42".as_slice())), &[], None)
                    .unwrap();
                upstream.record(&selected.attempt, Ok(()));
                selected
            })
        });
    }
    group.finish();
}

/// What tracing adds to a request: its trace begun, one try with its
/// `traceparent`, and (when sampled) both spans encoded and queued. The
/// queue is never exported here, so once full it drops: the encoding,
/// which comes first, is measured all the same.
fn tracing(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracing");
    let req = request(
        "GET",
        "/users/1",
        &[("host", "shop.example"), ("user-agent", "curl/8.5")],
    );
    for (name, ratio) in [("sampled", 1), ("unsampled", 0)] {
        let text = format!(
            "listeners: [{{address: '127.0.0.1:3000'}}]
tracing: {{endpoint: 'http://127.0.0.1:4318/v1/traces', sampling_ratio: {ratio}}}
upstreams: {{users: {{instances: ['http://127.0.0.1:3001']}}}}
routes: [{{prefix: /users, upstream: users}}]
"
        );
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        let mut config = config::load(file.path()).unwrap();
        let instance = Arc::new(config.routing.upstreams[0].instances[0].clone());
        let (tracer, _export) = Tracer::new(config.routing.tracing.take().unwrap(), None);
        let addr = "127.0.0.1:3001".parse().unwrap();
        group.bench_function(format!("a request, {name}"), |b| {
            b.iter_batched_ref(
                || req.clone(),
                |upstream| {
                    let mut trace = tracer.begin(&req);
                    trace.try_started(addr, &instance, &req.method, 0);
                    trace.write_upstream_headers(upstream).unwrap();
                    trace.try_status(200);
                    trace.end_try(TryEnd::Done);
                    tracer.finish(trace, || ServerFacts {
                        method: req.method.as_str(),
                        route: Some(("/users", "users")),
                        upstream: Some("users"),
                        path: req.uri.path(),
                        scheme: "http",
                        host: Some("shop.example"),
                        port: Some(3000),
                        client_ip: Some(IpAddr::from([203, 0, 113, 7])),
                        user_agent: Some("curl/8.5"),
                        protocol: "1.1",
                        status: 200,
                        refusal: None,
                        request_id: "0b5c2f0e-6a1d-4f4e-9d7a-1f2e3d4c5b6a",
                    });
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, routing, cors, rate_limit, access_log, balancing, tracing);
criterion_main!(benches);
