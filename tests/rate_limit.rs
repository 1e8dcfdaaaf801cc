//! Rate limiting against the real binary: clients on 127.0.0.2 and
//! 127.0.0.3 (each its own address), a real echo upstream, and for the
//! shared budget a real `redis-server` started by the test on a free port.

mod support;

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, Response};
use serde_json::{json, Value};
use support::jwt::{claims, mint, tool};
use support::*;

const SECRET: &str = "rate-limit-test-secret-0123456789";

/// A client whose connections come from `ip`.
fn client_from(ip: &str) -> Client {
    Client::builder()
        .local_address(ip.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

async fn gateway(upstream: &Upstream, rate_limit: &str, extra: &str) -> Gateway {
    Gateway::start(&format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
cors: {{allow_origins: ['*'], expose_headers: [Retry-After]}}
jwt: {{keys: [{{secret: '{SECRET}'}}]}}
rate_limit: {rate_limit}
{extra}
upstreams:
  svc: {{instances: ['{}']}}
routes:
  - {{prefix: /api, upstream: svc, auth: optional}}
",
        upstream.url()
    ))
    .await
}

/// Sends `n` GETs and counts the 200s and 429s.
async fn burst(client: &Client, url: &str, n: usize, headers: &[(&str, &str)]) -> (usize, usize) {
    let (mut ok, mut limited) = (0, 0);
    for _ in 0..n {
        let mut request = client.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        match request.send().await.unwrap().status().as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("unexpected {other}"),
        }
    }
    (ok, limited)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_over_the_limit_gets_429_per_client_address() {
    let upstream = Upstream::start("svc").await;
    // One per 10 s on average, five at once: nothing refills during the test.
    let gw = gateway(&upstream, "{requests: 6, per: 1m, burst: 5}", "").await;
    let (a, b) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    let url = gw.url("/api/items");

    let first = a.get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert_eq!(header(&first, "ratelimit-limit"), "6");
    assert_eq!(header(&first, "ratelimit-remaining"), "4");
    assert_eq!(header(&first, "ratelimit-reset"), "10");
    assert_eq!(burst(&a, &url, 4, &[]).await, (4, 0));

    let refused = a
        .get(&url)
        .header("origin", "http://shop.test")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), "10");
    assert_eq!(header(&refused, "ratelimit-remaining"), "0");
    assert_eq!(header(&refused, "ratelimit-reset"), "50");
    assert_eq!(header(&refused, "access-control-allow-origin"), "*");
    assert!(!header(&refused, "x-request-id").is_empty());
    let body: Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"], "Too many requests");
    assert_eq!(
        upstream.hits(),
        5,
        "refused requests never reach the service"
    );

    // Another address has its own budget; a spoofed X-Forwarded-For from an
    // untrusted peer changes nothing.
    assert_eq!(burst(&b, &url, 5, &[]).await, (5, 0));
    assert_eq!(
        burst(&a, &url, 3, &[("x-forwarded-for", "10.9.8.7")]).await,
        (0, 3)
    );
    assert_eq!(
        burst(&b, &url, 2, &[("x-forwarded-for", "10.1.1.1, 10.2.2.2")]).await,
        (0, 2)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_key() {
    let upstream = Upstream::start("svc").await;
    let gw = gateway(
        &upstream,
        "{requests: 2, per: 1h}",
        "trusted_proxies: [127.0.0.2]",
    )
    .await;
    let proxy = client_from("127.0.0.2");
    let url = gw.url("/api/x");
    // The right-most untrusted entry counts, whatever the client put first.
    let alice = [("x-forwarded-for", "6.6.6.6, 203.0.113.1")];
    let bob = [("x-forwarded-for", "6.6.6.6, 203.0.113.2")];
    assert_eq!(burst(&proxy, &url, 3, &alice).await, (2, 1));
    assert_eq!(burst(&proxy, &url, 3, &bob).await, (2, 1));
    // An untrusted client's chain is ignored: keyed by its own address.
    let direct = client_from("127.0.0.3");
    assert_eq!(burst(&direct, &url, 3, &alice).await, (2, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_budget_refills_smoothly() {
    let upstream = Upstream::start("svc").await;
    // One per 200 ms, two at once.
    let gw = gateway(&upstream, "{requests: 5, per: 1s, burst: 2}", "").await;
    let c = client_from("127.0.0.2");
    let url = gw.url("/api/x");
    assert_eq!(burst(&c, &url, 3, &[]).await, (2, 1));
    let refused = c.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(header(&refused, "retry-after"), "1");
    // A refill brings back one request at a time, not a whole window.
    let started = Instant::now();
    wait_until(
        Duration::from_secs(5),
        "one request to fit again",
        || async { c.get(&url).send().await.unwrap().status() == 200 },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(c.get(&url).send().await.unwrap().status(), 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_by_claim_and_by_header_fall_back_to_the_address() {
    let upstream = Upstream::start("svc").await;
    let gw = gateway(&upstream, "{requests: 2, per: 1h, key: {by: claim}}", "").await;
    let c = client_from("127.0.0.2");
    let url = gw.url("/api/x");
    let tokens = tool(&[
        mint("HS256", SECRET, claims("alice", json!({}))),
        mint("HS256", SECRET, claims("bob", json!({}))),
    ]);
    let as_user = |t: &str| format!("Bearer {t}");
    let alice = as_user(&tokens[0]);
    let bob = as_user(&tokens[1]);
    assert_eq!(
        burst(&c, &url, 3, &[("authorization", &alice)]).await,
        (2, 1)
    );
    assert_eq!(burst(&c, &url, 3, &[("authorization", &bob)]).await, (2, 1));
    // Anonymous: by address, with its own budget, and limited too.
    assert_eq!(burst(&c, &url, 3, &[]).await, (2, 1));

    let gw = gateway(
        &upstream,
        "{requests: 2, per: 1h, key: {by: header, name: X-Api-Key}}",
        "",
    )
    .await;
    let url = gw.url("/api/x");
    assert_eq!(burst(&c, &url, 3, &[("x-api-key", "k1")]).await, (2, 1));
    assert_eq!(burst(&c, &url, 3, &[("x-api-key", "k2")]).await, (2, 1));
    assert_eq!(burst(&c, &url, 3, &[]).await, (2, 1));
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_override_the_default_with_their_own_budget() {
    let upstream = Upstream::start("svc").await;
    let gw = Gateway::start(&format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
rate_limit: {{requests: 2, per: 1h}}
upstreams:
  svc: {{instances: ['{}']}}
routes:
  - {{prefix: /a, upstream: svc}}
  - {{prefix: /b, upstream: svc}}
  - {{prefix: /login, upstream: svc, rate_limit: {{requests: 1, per: 1h}}}}
  - {{prefix: /health, upstream: svc, rate_limit: {{enabled: false}}}}
",
        upstream.url()
    ))
    .await;
    let c = client_from("127.0.0.2");
    // /a and /b share the default budget; /login has its own.
    assert_eq!(burst(&c, &gw.url("/a/x"), 1, &[]).await, (1, 0));
    assert_eq!(burst(&c, &gw.url("/b/x"), 2, &[]).await, (1, 1));
    assert_eq!(burst(&c, &gw.url("/login"), 2, &[]).await, (1, 1));
    let r = c.get(gw.url("/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("ratelimit-limit").is_none());
}

/// A real redis-server on a loopback port, stopped by its PID.
struct Redis {
    child: Child,
    port: u16,
}

impl Redis {
    async fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        wait_until(Duration::from_secs(10), "redis-server", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        Redis { child, port }
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_config(port: u16, on_failure: &str) -> String {
    format!(
        "rate_limit_backends: {{redis: {{url: 'redis://127.0.0.1:{port}', timeout: 100ms, on_failure: {on_failure}}}}}"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_share_one_budget_in_redis() {
    let redis = Redis::start(free_port()).await;
    let upstream = Upstream::start("svc").await;
    let policy = "{requests: 10, per: 1h, backend: redis}";
    let extra = redis_config(redis.port, "fail_open");
    let one = gateway(&upstream, policy, &extra).await;
    let two = gateway(&upstream, policy, &extra).await;
    let c = client_from("127.0.0.2");
    // Interleaved, as behind a load balancer.
    let (mut ok, mut limited) = (0, 0);
    for i in 0..30 {
        let gw = if i % 2 == 0 { &one } else { &two };
        let (o, l) = burst(&c, &gw.url("/api/x"), 1, &[]).await;
        ok += o;
        limited += l;
    }
    assert_eq!((ok, limited), (10, 20));
    assert_eq!(upstream.hits(), 10);
    // Another client still has its whole budget on both.
    let other = client_from("127.0.0.3");
    assert_eq!(burst(&other, &one.url("/api/x"), 5, &[]).await, (5, 0));
    assert_eq!(burst(&other, &two.url("/api/x"), 6, &[]).await, (5, 1));
}

async fn status(c: &Client, gw: &Gateway) -> u16 {
    c.get(gw.url("/api/x"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_going_away_follows_the_failure_rule_and_limiting_resumes() {
    let port = free_port();
    let mut redis = Redis::start(port).await;
    let upstream = Upstream::start("svc").await;
    let policy = "{requests: 2, per: 1h, backend: redis}";
    let open = gateway(&upstream, policy, &redis_config(port, "fail_open")).await;
    let closed = gateway(&upstream, policy, &redis_config(port, "fail_closed")).await;
    let (a, b) = (client_from("127.0.0.2"), client_from("127.0.0.3"));
    wait_until(
        Duration::from_secs(10),
        "the gateways to reach Redis",
        || async {
            open.stderr().contains("connected to Redis")
                && closed.stderr().contains("connected to Redis")
        },
    )
    .await;
    assert_eq!(burst(&a, &open.url("/api/x"), 3, &[]).await, (2, 1));

    redis.stop();
    // fail_open lets everything through, fail_closed refuses everything;
    // neither hangs or crashes.
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(status(&a, &open).await, 200);
        assert_eq!(status(&b, &closed).await, 429);
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // Logged once per outage, not per request.
    let warnings = open.stderr().matches("unreachable").count();
    assert!(warnings <= 1, "{}", open.stderr());

    // Redis returns (empty): limiting resumes by itself.
    let _redis = Redis::start(port).await;
    wait_until(Duration::from_secs(10), "limiting to resume", || async {
        status(&a, &open).await == 429
    })
    .await;
    wait_until(
        Duration::from_secs(10),
        "fail_closed to recover",
        || async { status(&b, &closed).await == 200 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_config_limits_per_address() {
    let text = std::fs::read_to_string(repo_path("conf/gateway.yaml")).unwrap();
    assert!(
        text.contains("rate_limit:"),
        "the shipped config sets a default"
    );
    let services = four_services().await;
    let gw = Gateway::start_shipped(&services, SECRET).await;
    let c = client_from("127.0.0.2");
    let r: Response = c.post(gw.url("/users/login")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(!header(&r, "ratelimit-limit").is_empty());
    let limit: usize = header(&r, "ratelimit-remaining").parse().unwrap();
    // Spend the burst quickly: the next ones are refused.
    let (_, limited) = burst(&c, &gw.url("/"), 1, &[]).await;
    assert_eq!(limited, 0, "the gateway's own / is not limited");
    let mut refused = 0;
    for _ in 0..2 * limit + 50 {
        let r = c.post(gw.url("/users/login")).send().await.unwrap();
        if r.status() == 429 {
            refused += 1;
        }
    }
    assert!(refused > 0, "none of {} refused", 2 * limit + 50);
}
