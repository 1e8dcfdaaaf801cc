//! Upstream resilience against the real binary and real upstreams on
//! 127.0.0.1 that fail in patterns: outlier ejection, retries and their
//! budget, per-try timeouts and deadlines, the concurrency limit, and the
//! balancing strategies (weights, least request, consistent hashing).

mod support;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::*;

/// One upstream `svc` of the given instances and extra keys (indented
/// under it), and one route `/svc` with extra keys.
fn config(instances: &[&Upstream], upstream: &str, route: &str) -> String {
    let urls: Vec<String> = instances.iter().map(|u| u.url()).collect();
    config_of(&urls, upstream, route)
}

/// Like `config`, with instance URLs of servers that need not be ours.
fn config_of(urls: &[String], upstream: &str, route: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("'{u}'")).collect();
    format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
admin: {{address: '127.0.0.1:{{admin}}'}}
upstreams:
  svc:
    instances: [{}]
{upstream}
routes:
  - {{prefix: /svc, upstream: svc{route}}}
",
        urls.join(", ")
    )
}

/// The gateway on `yaml`, with its admin port filled in.
async fn start(yaml: &str) -> (Gateway, u16) {
    let admin = free_port();
    let gw = Gateway::start(&yaml.replace("{admin}", &admin.to_string())).await;
    (gw, admin)
}

async fn get(gw: &Gateway, path: &str) -> reqwest::Response {
    client().get(gw.url(path)).send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_answering_503_is_ejected_and_retries_hide_it_meanwhile() {
    let (a, b, bad) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("bad").await,
    );
    bad.set_status(503);
    let (gw, admin) = start(&config(
        &[&a, &b, &bad],
        "    outlier_detection: {consecutive_failures: 3, base_ejection_time: 30s}",
        ", retry: {attempts: 3, on: [503]}",
    ))
    .await;
    let mut ok = 0;
    for _ in 0..300 {
        if get(&gw, "/svc/x").await.status() == 200 {
            ok += 1;
        }
    }
    assert!(ok >= 297, "{ok} of 300 succeeded");
    // Three failures in a row ejected it; it got nothing after that.
    assert_eq!(bad.hits(), 3, "the ejected instance got traffic");
    assert_eq!(a.hits() + b.hits(), 300);
    let text = scrape(admin).await;
    let bad_addr = bad.url().replace("http://", "");
    let labels = [("upstream", "svc"), ("instance", bad_addr.as_str())];
    assert_eq!(
        metric(&text, "gateway_upstream_ejections_total", &labels),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "gateway_upstream_failures_total",
            &[labels[0], labels[1], ("kind", "status")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &text,
            "gateway_upstream_retries_total",
            &[("upstream", "svc"), ("reason", "status")]
        ),
        Some(3.0)
    );
    wait_until(Duration::from_secs(5), "the ejection gauge", || {
        let text = scrape(admin);
        async move { metric(&text.await, "gateway_upstream_instance_ejected", &labels) == Some(1.0) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_refusing_connections_costs_no_get_request() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let dead = Upstream::start("dead").await;
    dead.stop();
    let (gw, _) = start(&config(&[&a, &b, &dead], "", "")).await;
    for _ in 0..100 {
        assert_eq!(get(&gw, "/svc/x").await.status(), 200);
    }
    assert_eq!(a.hits() + b.hits(), 100);
}

/// `instance` as the metrics label it: `127.0.0.1:port`.
fn label(url: &str) -> &str {
    url.trim_start_matches("http://")
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_after_a_refused_connect_are_counted() {
    let live = Upstream::start("live").await;
    // Nothing listens there: every connect is refused.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (gw, admin) = start(&config_of(&[live.url(), dead.clone()], "", "")).await;
    let requests = 40;
    for _ in 0..requests {
        assert_eq!(get(&gw, "/svc/x").await.status(), 200);
    }
    assert_eq!(live.hits(), requests);
    let text = scrape(admin).await;
    let on = |name, labels: &[(&str, &str)]| metric(&text, name, labels).unwrap_or(0.0);
    let retries = on(
        "gateway_upstream_retries_total",
        &[("upstream", "svc"), ("reason", "connect")],
    );
    let refused = on(
        "gateway_upstream_failures_total",
        &[("instance", label(&dead)), ("kind", "connect")],
    );
    let tries = |url| {
        on(
            "gateway_upstream_requests_total",
            &[("instance", label(url))],
        )
    };
    assert!(retries > 0.0, "{text}");
    // Each refused connect was retried, on the live instance.
    assert_eq!(retries, refused, "{text}");
    assert_eq!(tries(&dead), retries, "{text}");
    assert_eq!(tries(&live.url()), requests as f64, "{text}");
}

/// A keep-alive HTTP/1.1 server that answers the first request on each
/// connection and drops the connection when the second arrives, as a
/// server whose keep-alive timeout passed just as the gateway reused it.
struct Forgetful {
    url: String,
    connections: Arc<AtomicUsize>,
}

impl Forgetful {
    async fn start() -> Forgetful {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(Forgetful::serve(stream));
            }
        });
        Forgetful { url, connections }
    }

    async fn serve(mut stream: TcpStream) {
        if !read_head(&mut stream).await {
            return;
        }
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        if stream.write_all(answer).await.is_err() {
            return;
        }
        // The second request is read, then the connection dropped unanswered.
        read_head(&mut stream).await;
    }
}

/// Reads one request head (bodyless requests only), in at most 10 s.
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_on_a_pooled_connection_the_upstream_dropped_are_counted() {
    let forgetful = Forgetful::start().await;
    let (gw, admin) = start(&config_of(std::slice::from_ref(&forgetful.url), "", "")).await;
    let requests = 10;
    for _ in 0..requests {
        let r = get(&gw, "/svc/x").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    // Every request but the first found its pooled connection dropped and
    // went again on a new one.
    assert_eq!(forgetful.connections.load(Ordering::SeqCst), requests);
    let text = scrape(admin).await;
    let retries = metric(
        &text,
        "gateway_upstream_retries_total",
        &[("upstream", "svc"), ("reason", "reset")],
    );
    assert_eq!(retries, Some((requests - 1) as f64), "{text}");
    // Not the instance's fault: not counted against it.
    let resets = metric(
        &text,
        "gateway_upstream_failures_total",
        &[("instance", label(&forgetful.url)), ("kind", "reset")],
    );
    assert_eq!(resets.unwrap_or(0.0), 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn no_more_than_max_ejected_percent_of_the_pool_is_ejected() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.set_status(500);
    b.set_status(500);
    // The default max_ejected_percent, 50: one of two.
    let (gw, admin) = start(&config(
        &[&a, &b],
        "    outlier_detection: {consecutive_failures: 3}",
        "",
    ))
    .await;
    let requests = 40;
    for _ in 0..requests {
        assert_eq!(get(&gw, "/svc/x").await.status(), 500);
    }
    let (out, kept) = if a.hits() < b.hits() {
        (&a, &b)
    } else {
        (&b, &a)
    };
    // Ejected after its third failure; the other took every request since.
    assert_eq!((out.hits(), kept.hits()), (3, requests - 3));
    let text = scrape(admin).await;
    let ejections = |u: &Upstream| {
        let url = u.url();
        let labels = [("upstream", "svc"), ("instance", label(&url))];
        metric(&text, "gateway_upstream_ejections_total", &labels)
    };
    assert_eq!(ejections(out), Some(1.0), "{text}");
    assert_eq!(ejections(kept), Some(0.0), "{text}");
    let (out_url, kept_url) = (out.url(), kept.url());
    wait_until(Duration::from_secs(5), "the ejection gauges", || {
        let text = scrape(admin);
        let (out_url, kept_url) = (out_url.clone(), kept_url.clone());
        async move {
            let text = text.await;
            let ejected = |url: &str| {
                let labels = [("upstream", "svc"), ("instance", label(url))];
                metric(&text, "gateway_upstream_instance_ejected", &labels)
            };
            ejected(&out_url) == Some(1.0) && ejected(&kept_url) == Some(0.0)
        }
    })
    .await;
    // Still failing, still not ejected: requests keep reaching it.
    for _ in 0..10 {
        assert_eq!(get(&gw, "/svc/x").await.status(), 500);
    }
    assert_eq!((out.hits(), kept.hits()), (3, requests + 7));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fully_failing_upstream_gets_at_most_the_budget_in_retries() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    a.set_status(503);
    b.set_status(503);
    let (gw, admin) = start(&config(&[&a, &b], "", ", retry: {attempts: 5, on: [503]}")).await;
    let requests = 200;
    for _ in 0..requests {
        // The last try's answer is the upstream's own.
        assert_eq!(get(&gw, "/svc/x").await.status(), 503);
    }
    let received = a.hits() + b.hits();
    // 20% of the requests of the last 10 s, plus a floor of 3.
    assert!(received > requests, "retries happened: {received}");
    assert!(
        received <= requests * 12 / 10 + 3,
        "{received} for {requests} requests"
    );
    let exhausted = metric(
        &scrape(admin).await,
        "gateway_upstream_retry_budget_exhausted_total",
        &[("upstream", "svc")],
    );
    assert!(exhausted.unwrap_or(0.0) > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_big_post_is_never_replayed_and_a_small_one_is() {
    let a = Upstream::start("a").await;
    a.set_status(503);
    let (gw, _) = start(&config(
        &[&a],
        "",
        ", retry: {attempts: 2, on: [503], methods: [POST]}",
    ))
    .await;
    let post = |size: usize| {
        client()
            .post(gw.url("/svc/upload"))
            .body(vec![b'x'; size])
            .send()
    };
    assert_eq!(post(1 << 20).await.unwrap().status(), 503);
    assert_eq!(a.hits(), 1, "a 1 MiB body is sent once");
    assert_eq!(post(1 << 10).await.unwrap().status(), 503);
    assert_eq!(
        a.hits(),
        3,
        "a 1 KiB body fits the replay buffer and goes again"
    );
    // Not a method the route retries: sent once.
    let r = client()
        .put(gw.url("/svc/x"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(a.hits(), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_try_gives_way_to_the_next_and_the_deadline_gives_504() {
    let (slow, fast) = (Upstream::start("slow").await, Upstream::start("fast").await);
    slow.set_delay(Duration::from_secs(3));
    let (gw, _) = start(&config(
        &[&slow, &fast],
        "",
        ", retry: {attempts: 2, on: [timeout], per_try_timeout: 300ms}",
    ))
    .await;
    for _ in 0..4 {
        let r = get(&gw, "/svc/x").await;
        assert_eq!(r.status(), 200);
        assert_eq!(header(&r, "x-upstream"), "fast");
    }

    fast.set_delay(Duration::from_secs(3));
    let (gw, _) = start(&config(&[&slow, &fast], "", ", timeout: 500ms")).await;
    let r = get(&gw, "/svc/x").await;
    assert_eq!(r.status(), 504);
    assert!(r.text().await.unwrap().contains("\"error\""));
}

#[tokio::test(flavor = "multi_thread")]
async fn past_max_in_flight_requests_get_503_at_once() {
    let a = Upstream::start("a").await;
    // Long enough that all 50 are in before the first 10 are answered.
    a.set_delay(Duration::from_secs(2));
    let (gw, admin) = start(&config(&[&a], "    max_in_flight: 10", "")).await;
    let url = gw.url("/svc/x");
    let c = client();
    let mut calls = Vec::new();
    for _ in 0..50 {
        let (c, url) = (c.clone(), url.clone());
        calls.push(tokio::spawn(async move {
            let r = c.get(url).send().await.unwrap();
            let retry_after = header(&r, "retry-after").to_string();
            let content_type = header(&r, "content-type").to_string();
            let status = r.status().as_u16();
            (status, retry_after, content_type, r.text().await.unwrap())
        }));
    }
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for call in calls {
        let (status, retry_after, content_type, body) = call.await.unwrap();
        if status == 503 {
            assert_eq!(retry_after, "1");
            assert_eq!(content_type, "application/json");
            let body: serde_json::Value =
                serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
            assert_eq!(body["error"], "Upstream busy", "{body}");
        }
        *counts.entry(status).or_default() += 1;
    }
    assert_eq!(counts.get(&200), Some(&10), "{counts:?}");
    assert_eq!(counts.get(&503), Some(&40), "{counts:?}");
    assert_eq!(a.hits(), 10, "refused requests never reached it");
    let overloaded = metric(
        &scrape(admin).await,
        "gateway_upstream_overloaded_total",
        &[("upstream", "svc")],
    );
    assert_eq!(overloaded, Some(40.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn weights_share_the_traffic() {
    let (a, b) = (Upstream::start("a").await, Upstream::start("b").await);
    let yaml = format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
upstreams:
  svc:
    instances: [{{url: '{}', weight: 3}}, '{}']
routes:
  - {{prefix: /svc, upstream: svc}}
",
        a.url(),
        b.url()
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..40 {
        assert_eq!(get(&gw, "/svc/x").await.status(), 200);
    }
    assert_eq!((a.hits(), b.hits()), (30, 10));
}

#[tokio::test(flavor = "multi_thread")]
async fn least_request_sends_clearly_fewer_to_the_slow_instance() {
    let (a, b, slow) = (
        Upstream::start("a").await,
        Upstream::start("b").await,
        Upstream::start("slow").await,
    );
    slow.set_delay(Duration::from_millis(200));
    let (gw, _) = start(&config(
        &[&a, &b, &slow],
        "    load_balancing: least_request",
        "",
    ))
    .await;
    let url = Arc::new(gw.url("/svc/x"));
    let mut clients = Vec::new();
    for _ in 0..12 {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..25 {
                assert_eq!(c.get(url.as_str()).send().await.unwrap().status(), 200);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(a.hits() + b.hits() + slow.hits(), 300);
    eprintln!(
        "least_request: slow {}, fast {} and {}",
        slow.hits(),
        a.hits(),
        b.hits()
    );
    assert!(
        slow.hits() * 3 < a.hits().min(b.hits()),
        "slow {} against {} and {}",
        slow.hits(),
        a.hits(),
        b.hits()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hashing_keeps_keys_and_moves_a_quarter_when_one_of_four_goes() {
    let instances = [
        Upstream::start("i0").await,
        Upstream::start("i1").await,
        Upstream::start("i2").await,
        Upstream::start("i3").await,
    ];
    let all: Vec<&Upstream> = instances.iter().collect();
    let hashed = "    load_balancing: consistent_hash\n    hash_on: {by: header, name: X-Cart}";
    let (gw, admin) = start(&config(&all, hashed, "")).await;
    let owner = |cart: String| {
        let gw = &gw;
        async move {
            let r = client()
                .get(gw.url("/svc/cart"))
                .header("x-cart", cart)
                .send()
                .await
                .unwrap();
            header(&r, "x-upstream").to_string()
        }
    };
    let home = owner("cart-1".into()).await;
    for _ in 0..100 {
        assert_eq!(owner("cart-1".into()).await, home);
    }
    let mut before = HashMap::new();
    for i in 0..200 {
        before.insert(i, owner(format!("cart-{i}")).await);
    }
    let spread: std::collections::HashSet<&String> = before.values().collect();
    assert_eq!(spread.len(), 4, "keys spread over all four");

    // One instance leaves the pool (a reload without it).
    gw.rewrite(&config(&all[..3], hashed, "").replace("{admin}", &admin.to_string()));
    let out = gw.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut moved = 0;
    for i in 0..200 {
        let now = owner(format!("cart-{i}")).await;
        if before[&i] == "i3" {
            assert_ne!(now, "i3");
        } else if now != before[&i] {
            moved += 1;
        }
    }
    let gone = before.values().filter(|o| *o == "i3").count();
    assert!(
        (20..=80).contains(&gone),
        "{gone} of 200 keys were on the fourth"
    );
    assert_eq!(moved, 0, "keys of the other three stay where they were");
}

/// Which instance answered each of `rounds` requests of every client (and
/// its cookie), one set per client: a sticky key gives sets of one.
async fn owners(
    clients: &[(reqwest::Client, Option<String>)],
    url: &str,
    rounds: usize,
) -> Vec<HashSet<String>> {
    let mut owners = Vec::new();
    for (client, cookie) in clients {
        let mut seen = HashSet::new();
        for _ in 0..rounds {
            let mut request = client.get(url);
            if let Some(cookie) = cookie {
                request = request.header("cookie", cookie);
            }
            let r = request.send().await.unwrap();
            assert_eq!(r.status(), 200);
            seen.insert(header(&r, "x-upstream").to_string());
        }
        owners.push(seen);
    }
    owners
}

/// Each key stays on one instance, and the keys spread over more than one.
fn assert_sticky_and_spread(owners: &[HashSet<String>]) {
    assert!(owners.iter().all(|o| o.len() == 1), "{owners:?}");
    let spread: HashSet<&String> = owners.iter().flatten().collect();
    assert!(spread.len() > 1, "every key on {spread:?}");
}

async fn four_instances() -> Vec<Upstream> {
    let mut instances = Vec::new();
    for name in ["i0", "i1", "i2", "i3"] {
        instances.push(Upstream::start(name).await);
    }
    instances
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hashing_on_a_cookie_keeps_each_value_on_one_instance() {
    let instances = four_instances().await;
    let all: Vec<&Upstream> = instances.iter().collect();
    let hashed = "    load_balancing: consistent_hash\n    hash_on: {by: cookie, name: cart}";
    let (gw, _) = start(&config(&all, hashed, "")).await;
    // Ten carts (all on one of four by chance: 4^-9), among other cookies.
    let clients: Vec<_> = (0..10)
        .map(|i| (client(), Some(format!("theme=dark; cart=c-{i}; lang=en"))))
        .collect();
    let owners = owners(&clients, &gw.url("/svc/cart"), 20).await;
    assert_sticky_and_spread(&owners);
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_hashing_on_the_client_address_keeps_each_on_one_instance() {
    let instances = four_instances().await;
    let all: Vec<&Upstream> = instances.iter().collect();
    let hashed = "    load_balancing: consistent_hash\n    hash_on: {by: ip}";
    let (gw, _) = start(&config(&all, hashed, "")).await;
    // Eight client addresses, 127.0.0.2 to .9 (all on one instance by
    // chance: 4^-7).
    let clients: Vec<_> = (2..10)
        .map(|i| {
            let from: IpAddr = format!("127.0.0.{i}").parse().unwrap();
            let c = reqwest::Client::builder()
                .local_address(from)
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap();
            (c, None)
        })
        .collect();
    let owners = owners(&clients, &gw.url("/svc/cart"), 20).await;
    assert_sticky_and_spread(&owners);
}
