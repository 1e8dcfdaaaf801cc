//! The gateway core against the real binary and real upstreams on 127.0.0.1:
//! routing and rewriting, bodies, path normalization, upstream failures,
//! load balancing, forwarding headers, request ids, limits, access log,
//! config checking, the shipped config and `.env`.

mod support;

use std::time::{Duration, Instant};

use futures_util::stream;
use reqwest::{Method, Response};
use serde_json::Value;
use support::jwt::{claims, mint, one};
use support::*;

/// One upstream service behind `/users`, plus `/products`.
fn two_routes(users: &Upstream, products: &Upstream, extra: &str) -> String {
    format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
upstreams:
  user-service: {{instances: ['{}'], timeouts: {{connect: 1s, read: 1s}}}}
  product-service: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: user-service}}
  - {{prefix: /products, upstream: product-service}}
{extra}",
        users.url(),
        products.url()
    )
}

async fn standard() -> (Upstream, Upstream, Gateway) {
    let users = Upstream::start("user-service").await;
    let products = Upstream::start("product-service").await;
    let gateway = Gateway::start(&two_routes(&users, &products, "")).await;
    (users, products, gateway)
}

async fn json_of(r: Response) -> Value {
    let bytes = r.bytes().await.unwrap();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)))
}

/// What the echo upstream saw: the x-seen-headers JSON.
fn seen_headers(r: &Response) -> Value {
    serde_json::from_str(header(r, "x-seen-headers")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn root_and_healthz_are_answered_by_the_gateway() {
    let (users, _products, gw) = standard().await;
    let r = client().get(gw.url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "API Gateway is running");
    let r = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(header(&r, "content-type").starts_with("application/json"));
    assert_eq!(json_of(r).await["status"], "ok");
    assert_eq!(users.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_prefix_is_stripped_and_the_query_kept() {
    let (_users, _products, gw) = standard().await;
    for (path, seen) in [
        ("/users/me?x=1&y=two%20words", "/me?x=1&y=two%20words"),
        ("/users", "/"),
        ("/users/", "/"),
        ("/users?page=2", "/?page=2"),
        ("/products/42", "/42"),
    ] {
        let r = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(header(&r, "x-seen-uri"), seen, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rewrites_are_configurable_per_route_and_the_longest_prefix_wins() {
    let users = Upstream::start("user-service").await;
    let admin = Upstream::start("admin-service").await;
    let gw = Gateway::start(&format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
upstreams:
  user-service: {{instances: ['{}']}}
  admin-service: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: user-service}}
  - {{prefix: /users/admin, upstream: admin-service, strip_prefix: false}}
  - {{prefix: /v1users, upstream: user-service, replace_prefix: /api/v1}}
",
        users.url(),
        admin.url()
    ))
    .await;
    let r = client().get(gw.url("/users/admin/7")).send().await.unwrap();
    assert_eq!(
        (header(&r, "x-upstream"), header(&r, "x-seen-uri")),
        ("admin-service", "/users/admin/7")
    );
    let r = client()
        .get(gw.url("/users/administrator"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (header(&r, "x-upstream"), header(&r, "x-seen-uri")),
        ("user-service", "/administrator")
    );
    let r = client()
        .get(gw.url("/v1users/me?a=b"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-seen-uri"), "/api/v1/me?a=b");
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_can_be_bound_to_a_host() {
    let users = Upstream::start("user-service").await;
    let partners = Upstream::start("partner-service").await;
    let gw = Gateway::start(&format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
upstreams:
  user-service: {{instances: ['{}']}}
  partner-service: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: user-service}}
  - {{prefix: /users, upstream: partner-service, host: '*.partners.example'}}
  - {{prefix: /admin, upstream: user-service, host: admin.example}}
",
        users.url(),
        partners.url()
    ))
    .await;
    let get = |host: &'static str, path: &'static str| {
        let url = gw.url(path);
        async move { client().get(url).header("host", host).send().await.unwrap() }
    };
    let r = get("eu.partners.example:8080", "/users/me").await;
    assert_eq!(header(&r, "x-upstream"), "partner-service");
    let r = get("shop.example", "/users/me").await;
    assert_eq!(header(&r, "x-upstream"), "user-service");
    assert_eq!(get("ADMIN.example", "/admin/x").await.status(), 200);
    assert_eq!(get("shop.example", "/admin/x").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_method_reaches_the_upstream() {
    let (users, _products, gw) = standard().await;
    for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"] {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let r = client()
            .request(method.clone(), gw.url("/users/item"))
            .body(if method == "HEAD" { "" } else { "x" })
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method}");
        assert_eq!(header(&r, "x-seen-method"), method.as_str());
    }
    assert_eq!(users.hits(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_arrive_byte_identical() {
    let (_users, _products, gw) = standard().await;
    let body: Vec<u8> = (0..(1 << 20))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let r = client()
        .post(gw.url("/users/upload"))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), body.as_slice());

    // A chunked body: reqwest sends a stream without Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..10u8).map(|i| Ok(vec![i; 30_000])).collect();
    let expected: Vec<u8> = (0..10u8).flat_map(|i| vec![i; 30_000]).collect();
    let r = client()
        .post(gw.url("/users/stream"))
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(seen_headers(&r)["transfer-encoding"], "chunked");
    assert_eq!(r.bytes().await.unwrap().as_ref(), expected.as_slice());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_response_streams_intact() {
    let (_users, _products, gw) = standard().await;
    let r = client().get(gw.url("/users/big")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), BIG_BODY);
    assert!(
        body.iter().enumerate().all(|(i, &b)| b == big_byte(i)),
        "body differs"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_paths_get_a_json_404() {
    let (users, _products, gw) = standard().await;
    for path in ["/usersX", "/nope", "/user", "/products-old/1"] {
        let r = client().get(gw.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{path}");
        let id = header(&r, "x-request-id").to_string();
        let body = json_of(r).await;
        assert!(body["error"].is_string(), "{path}");
        assert_eq!(body["request_id"], id.as_str());
    }
    assert_eq!(users.hits(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn dot_segments_are_resolved_before_routing() {
    let (users, products, gw) = standard().await;
    for (target, upstream, seen) in [
        ("/users/../products/1", "product-service", "/1"),
        ("/users/%2e%2e/products/1", "product-service", "/1"),
        (
            "/users/%2E%2E/%2e/products/1?q=1",
            "product-service",
            "/1?q=1",
        ),
        ("/users/./me", "user-service", "/me"),
        ("/../../users/me", "user-service", "/me"),
        ("//users//me", "user-service", "/me"),
        ("/users/%6de", "user-service", "/me"),
    ] {
        let r = raw_get(gw.port(), target).await;
        assert_eq!(r.status, 200, "{target}");
        assert_eq!(r.header("x-upstream"), Some(upstream), "{target}");
        assert_eq!(r.header("x-seen-uri"), Some(seen), "{target}");
    }
    let before = (users.hits(), products.hits());
    for target in [
        "/users/a%2Fb",
        "/users/a%2f..%2f..%2fproducts",
        "/users/a%5Cb",
        "/users/a%00",
        "/users/%zz",
        "/users/a\\b",
    ] {
        let r = raw_get(gw.port(), target).await;
        assert_eq!(r.status, 400, "{target}");
        assert!(r.json()["error"].is_string(), "{target}");
    }
    assert_eq!(
        (users.hits(), products.hits()),
        before,
        "a refused path reached an upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_upstream_gets_a_quick_502_and_the_gateway_keeps_serving() {
    let users = Upstream::start("user-service").await;
    let products = Upstream::start("product-service").await;
    let gw = Gateway::start(&two_routes(&users, &products, "")).await;
    users.stop();
    wait_until(
        Duration::from_secs(5),
        "the upstream to refuse connections",
        || async { std::net::TcpStream::connect(("127.0.0.1", users.port())).is_err() },
    )
    .await;
    let started = Instant::now();
    let r = client().get(gw.url("/users/me")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert!(json_of(r).await["error"].is_string());
    let r = client().get(gw.url("/products/1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upstream_gets_a_504_after_the_read_timeout() {
    let (_users, _products, gw) = standard().await;
    let started = Instant::now();
    let r = client().get(gw.url("/users/slow")).send().await.unwrap();
    assert_eq!(r.status(), 504);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2900),
        "took {took:?}"
    );
    assert!(json_of(r).await["error"].is_string());
    let r = client().get(gw.url("/users/me")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

fn pool_config(a: &Upstream, b_url: &str, extra: &str) -> String {
    format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
upstreams:
  user-service:
    instances: ['{}', '{b_url}']
    timeouts: {{connect: 1s}}
{extra}
routes:
  - {{prefix: /users, upstream: user-service}}
",
        a.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_go_round_robin_across_instances() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(&pool_config(&a, &b.url(), "")).await;
    for _ in 0..10 {
        assert_eq!(
            client()
                .get(gw.url("/users/me"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_connect_is_retried_on_another_instance_for_any_method() {
    let a = Upstream::start("a").await;
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::start(&pool_config(&a, &dead, "")).await;
    for _ in 0..10 {
        let r = client().get(gw.url("/users/me")).send().await.unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(a.hits(), 10);
    // A refused connect sent nothing, so a POST goes again too.
    for _ in 0..6 {
        let r = client()
            .post(gw.url("/users/me"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    assert_eq!(a.hits(), 16);
}

#[tokio::test(flavor = "multi_thread")]
async fn unhealthy_instances_are_skipped_until_they_recover() {
    let a = Upstream::start("a").await;
    let b = Upstream::start("b").await;
    let gw = Gateway::start(&pool_config(
        &a,
        &b.url(),
        "    health_check: {path: /health, interval: 100ms}",
    ))
    .await;
    let from = |r: Response| header(&r, "x-upstream").to_string();

    b.set_healthy(false);
    // Health checks flip b within an interval or two: wait for a run of a's.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut consecutive_a = 0;
    while consecutive_a < 6 {
        assert!(
            Instant::now() < deadline,
            "traffic never left the unhealthy instance"
        );
        let upstream = from(client().get(gw.url("/users/me")).send().await.unwrap());
        consecutive_a = if upstream == "a" {
            consecutive_a + 1
        } else {
            0
        };
    }
    let b_hits = b.hits();
    for _ in 0..20 {
        assert_eq!(
            from(client().get(gw.url("/users/me")).send().await.unwrap()),
            "a"
        );
    }
    assert_eq!(b.hits(), b_hits);

    b.set_healthy(true);
    wait_until(
        Duration::from_secs(10),
        "traffic to return to b",
        || async { from(client().get(gw.url("/users/me")).send().await.unwrap()) == "b" },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_and_host() {
    let (users, _products, gw) = standard().await;
    let r = client()
        .get(gw.url("/users/me"))
        .header("x-forwarded-for", "1.2.3.4")
        .header("x-forwarded-host", "evil.example")
        .send()
        .await
        .unwrap();
    let seen = seen_headers(&r);
    assert_eq!(
        seen["x-forwarded-for"], "127.0.0.1",
        "an untrusted client's X-Forwarded-For is dropped"
    );
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["x-forwarded-host"], format!("127.0.0.1:{}", gw.port()));
    // Like http-proxy-middleware's changeOrigin: the upstream's own host.
    assert_eq!(
        header(&r, "x-seen-host"),
        format!("127.0.0.1:{}", users.port())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_proxies_extend_the_chain_and_preserve_host_keeps_the_clients_host() {
    let users = Upstream::start("user-service").await;
    let products = Upstream::start("product-service").await;
    let config = two_routes(&users, &products, "trusted_proxies: ['127.0.0.0/8']\n").replace(
        "{prefix: /users, upstream: user-service}",
        "{prefix: /users, upstream: user-service, preserve_host: true}",
    );
    let gw = Gateway::start(&config).await;
    let r = client()
        .get(gw.url("/users/me"))
        .header("x-forwarded-for", "1.2.3.4")
        .header("host", "shop.example")
        .send()
        .await
        .unwrap();
    let seen = seen_headers(&r);
    assert_eq!(seen["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(header(&r, "x-seen-host"), "shop.example");
    let r = client().get(gw.url("/products/1")).send().await.unwrap();
    assert_eq!(
        header(&r, "x-seen-host"),
        format!("127.0.0.1:{}", products.port())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn request_ids_are_kept_when_sane_generated_otherwise_and_returned() {
    let (_users, _products, gw) = standard().await;
    let r = client().get(gw.url("/users/me")).send().await.unwrap();
    let id = header(&r, "x-request-id").to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(seen_headers(&r)["x-request-id"], id.as_str());

    let r = client()
        .get(gw.url("/users/me"))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), "abc-123");
    assert_eq!(seen_headers(&r)["x-request-id"], "abc-123");

    for insane in ["has spaces", &"x".repeat(200), "quote\"d"] {
        let r = client()
            .get(gw.url("/users/me"))
            .header("x-request-id", insane)
            .send()
            .await
            .unwrap();
        assert_ne!(header(&r, "x-request-id"), insane);
        assert_eq!(seen_headers(&r)["x-request-id"], header(&r, "x-request-id"));
    }

    let r = client()
        .get(gw.url("/nope"))
        .header("x-request-id", "err-1")
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-request-id"), "err-1");
    assert_eq!(json_of(r).await["request_id"], "err-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_get_413() {
    let users = Upstream::start("user-service").await;
    let products = Upstream::start("product-service").await;
    let gw = Gateway::start(&two_routes(&users, &products, "max_body_size: 1MiB\n")).await;

    // Over the limit by Content-Length: refused before the upstream is asked
    // and before the body is read, so sending only the head gets the answer.
    let r = raw_request(
        gw.port(),
        &format!(
            "POST /users/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            3 << 20
        ),
    )
    .await;
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].is_string());
    assert_eq!(
        users.hits(),
        0,
        "an oversized Content-Length reached the upstream"
    );

    // A chunked body is streamed, so the upstream sees the request start;
    // at the limit the gateway cuts it off and the client gets 413.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b'y'; 64 << 10])).collect();
    let r = client()
        .post(gw.url("/users/upload"))
        .body(reqwest::Body::wrap_stream(stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        users.completed(),
        0,
        "an oversized body reached the upstream whole"
    );

    let r = client()
        .post(gw.url("/users/upload"))
        .body(vec![b'x'; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(users.completed(), 1);
}

/// A client that writes its whole body before reading, as simple clients
/// do, still gets the 413: the gateway reads the rest of a refused body
/// before closing (a lingering close). Closed with the body unread, the
/// socket would answer the client's next writes with a reset, and the 413
/// would be lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_body_refused_midway_is_read_to_its_end_and_gets_413() {
    let users = Upstream::start("user-service").await;
    let products = Upstream::start("product-service").await;
    let gw = Gateway::start(&two_routes(&users, &products, "max_body_size: 1MiB\n")).await;
    let chunk = format!("10000\r\n{}\r\n", "y".repeat(64 << 10));
    let request = format!(
        "POST /users/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n{}0\r\n\r\n",
        chunk.repeat(48)
    );
    let r = raw_request(gw.port(), &request).await;
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].is_string());
    assert_eq!(
        users.completed(),
        0,
        "an oversized body reached the upstream whole"
    );
}

/// The same for the gateway's answers before any proxying (here a 413 by
/// Content-Length and a 404), sent with `Connection: close`: the body the
/// client goes on writing is read before the connection closes.
#[tokio::test(flavor = "multi_thread")]
async fn an_early_answer_to_a_request_still_sending_is_not_lost_to_a_reset() {
    let users = Upstream::start("user-service").await;
    let products = Upstream::start("product-service").await;
    let gw = Gateway::start(&two_routes(&users, &products, "max_body_size: 1MiB\n")).await;
    for (path, size, status) in [("/users/upload", 8 << 20, 413), ("/nowhere", 1 << 20, 404)] {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n{}",
            "z".repeat(size)
        );
        let r = raw_request(gw.port(), &request).await;
        assert_eq!(r.status, status, "{path}");
        assert!(r.json()["error"].is_string(), "{path}");
    }
    assert_eq!(users.hits(), 0, "a refused request reached the upstream");
}

/// Reading a refused body is bounded: a client that goes on sending after
/// its 413, on a kept-alive connection, is cut off once the 5 s of lingering
/// have passed, long before the gigabyte it declared.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_body_is_read_for_a_bounded_time() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let users = Upstream::start("user-service").await;
    let products = Upstream::start("product-service").await;
    let gw = Gateway::start(&two_routes(&users, &products, "max_body_size: 1MiB\n")).await;
    let declared: usize = 1 << 30;
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", gw.port()))
        .await
        .unwrap();
    let head = format!(
        "POST /users/upload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        let mut buf = [0; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before an answer");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(
        answer.starts_with(b"HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&answer)
    );

    // 64 KiB every 10 ms for at most 30 s: 192 MiB at most, far less than
    // declared, so only the gateway closing ends the body early.
    let chunk = vec![b'z'; 64 << 10];
    let (mut sent, mut closed) = (0, false);
    for _ in 0..3000 {
        if stream.write_all(&chunk).await.is_err() {
            closed = true;
            break;
        }
        sent += chunk.len();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        closed,
        "the gateway read {sent} bytes of a refused body and kept going"
    );
    assert!(sent < declared);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_has_one_json_line_per_request() {
    let users = Upstream::start("user-service").await;
    let products = Upstream::start("product-service").await;
    let gw = Gateway::start(&two_routes(
        &users,
        &products,
        "access_log: {format: json, output: '{dir}/access.log'}\n",
    ))
    .await;
    client()
        .get(gw.url("/users/me?x=1"))
        .header("x-request-id", "log-me-1")
        .header("user-agent", "tester/1")
        .send()
        .await
        .unwrap();
    let log = gw.dir().join("access.log");
    let mut line = Value::Null;
    wait_until(Duration::from_secs(10), "the access log line", || {
        let found = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["request_id"] == "log-me-1");
        let ready = found.is_some();
        if let Some(found) = found {
            line = found;
        }
        async move { ready }
    })
    .await;
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/users/me?x=1");
    assert_eq!(line["route"], "/users");
    assert_eq!(line["upstream"], "user-service");
    assert_eq!(line["status"], 200);
    assert_eq!(line["client_ip"], "127.0.0.1");
    assert_eq!(line["user_agent"], "tester/1");
    assert!(line["bytes"].as_u64().is_some() && line["duration_ms"].as_f64().is_some());
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dev_access_log_reads_like_morgan() {
    let users = Upstream::start("user-service").await;
    let products = Upstream::start("product-service").await;
    let gw = Gateway::start(&two_routes(
        &users,
        &products,
        "access_log: {format: dev, output: '{dir}/access.log'}\n",
    ))
    .await;
    client().get(gw.url("/users/me")).send().await.unwrap();
    client().get(gw.url("/missing")).send().await.unwrap();
    let log = gw.dir().join("access.log");
    wait_until(Duration::from_secs(10), "dev log lines", || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { text.contains("GET /users/me 200 ") && text.contains("GET /missing 404 ") }
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("GET /users/me 200 "))
        .unwrap();
    assert!(line.contains(" ms - "), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn config_check_names_file_key_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let good = "listeners: [{address: '127.0.0.1:1'}]\nupstreams:\n  user-service: {instances: ['http://127.0.0.1:2']}\nroutes:\n  - {prefix: /users, upstream: user-service}\n";
    let path = dir.path().join("good.yaml");
    std::fs::write(&path, good).unwrap();
    let out = run_binary(&["-t", "-c", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let cases = [
        (format!("{good}routez: []\n"), "routez"),
        (
            format!("{good}  - {{prefix: /x, upstream: nobody}}\n"),
            "routes[1].upstream",
        ),
        (
            good.replace("http://127.0.0.1:2", "ftp://x"),
            "upstreams.user-service.instances[0]",
        ),
        (
            good.replace("http://127.0.0.1:2", "${NOPE_NOT_SET}"),
            "NOPE_NOT_SET",
        ),
        (
            good.replace("127.0.0.1:1", "nowhere"),
            "listeners[0].address",
        ),
    ];
    for (i, (yaml, key)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        let out = run_binary(&["-t", "-c", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted:\n{yaml}");
        assert!(
            stderr.contains(path.to_str().unwrap()) && stderr.contains(key),
            "for `{key}`: {stderr}"
        );
    }
    // Starting (not just checking) with a bad config fails the same way.
    let out = run_binary(&["-c", dir.path().join("bad1.yaml").to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("routes[1].upstream"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_config_serves_the_four_services_from_the_environment() {
    let services = four_services().await;
    let gw = Gateway::start_shipped(&services, "shipped-secret").await;
    let token = one(mint(
        "HS256",
        "shipped-secret",
        claims("u", serde_json::json!({})),
    ));
    for (path, service, seen) in [
        ("/users/me", "user-service", "/me"),
        ("/products", "product-service", "/"),
        ("/orders/7", "order-service", "/7"),
        ("/notify", "notification-service", "/"),
    ] {
        let r = client()
            .get(gw.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            (header(&r, "x-upstream"), header(&r, "x-seen-uri")),
            (service, seen),
            "{path}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dotenv_file_in_the_working_directory_is_loaded() {
    let users = Upstream::start("user-service").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join(".env"),
        format!(
            "# like dotenv\nPORT={port}\nUSER_SERVICE_URL={}\nJWT_SECRET=from-dotenv\n",
            users.url()
        ),
    )
    .unwrap();
    let conf = repo_path("conf/gateway.yaml");
    let gw = Gateway::start_with(&["-c", conf.to_str().unwrap()], &[], dir.path(), port).await;
    let token = one(mint(
        "HS256",
        "from-dotenv",
        claims("u", serde_json::json!({})),
    ));
    let r = client()
        .get(gw.url("/users/me"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-upstream"), "user-service");
    assert_eq!(users.hits(), 1);
}
