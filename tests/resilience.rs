//! Upstream resilience against the real binary and real upstreams on
//! 127.0.0.1 that fail in patterns: outlier ejection, retries and their
//! budget, per-try timeouts and deadlines, the concurrency limit, and the
//! balancing strategies (weights, least request, consistent hashing).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use support::*;

/// One upstream `svc` of the given instances and extra keys (indented
/// under it), and one route `/svc` with extra keys.
fn config(instances: &[&Upstream], upstream: &str, route: &str) -> String {
    let urls: Vec<String> = instances.iter().map(|u| format!("'{}'", u.url())).collect();
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
            (r.status().as_u16(), retry_after)
        }));
    }
    let mut counts: HashMap<u16, usize> = HashMap::new();
    for call in calls {
        let (status, retry_after) = call.await.unwrap();
        if status == 503 {
            assert_eq!(retry_after, "1");
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
