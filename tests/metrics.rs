//! Prometheus metrics on the admin listener, scraped from the real binary
//! after traffic of every kind the metrics count.

mod support;

use std::time::Duration;

use serde_json::json;
use support::jwt::{claims, mint, one};
use support::*;

const SECRET: &str = "metrics-test-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_rejections_limits_and_upstream_failures() {
    let upstream = Upstream::start("svc").await;
    let admin = free_port();
    let gw = Gateway::start(&format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
admin: {{address: '127.0.0.1:{admin}'}}
jwt: {{keys: [{{secret: '{SECRET}'}}]}}
upstreams:
  svc: {{instances: ['{}'], timeouts: {{read: 1s}}}}
  dead: {{instances: ['http://127.0.0.1:{}'], timeouts: {{connect: 1s}}}}
routes:
  - {{prefix: /users, upstream: svc, auth: required}}
  - {{prefix: /limited, upstream: svc, rate_limit: {{requests: 1, per: 1h}}}}
  - {{prefix: /open, upstream: svc}}
  - {{prefix: /dead, upstream: dead}}
",
        upstream.url(),
        free_port()
    ))
    .await;
    let token = one(mint("HS256", SECRET, claims("u", json!({}))));
    let c = client();
    let token = Some(token.as_str());
    let requests = [
        ("GET", "/users/me", token),
        ("GET", "/users/me", token),
        ("GET", "/users/me", None),
        ("GET", "/users/me", Some("junk")),
        ("GET", "/limited/a", None),
        ("GET", "/limited/a", None),
        ("GET", "/dead/x", None),
        ("GET", "/open/slow", None),
        ("GET", "/nowhere", None),
        ("BREW", "/open/x", None),
    ];
    let mut statuses = Vec::new();
    for (method, path, bearer) in requests {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = c.request(method, gw.url(path));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        statuses.push(request.send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 401, 401, 200, 429, 502, 504, 404, 200]);

    // Off the public port.
    assert_eq!(
        c.get(gw.url("/metrics")).send().await.unwrap().status(),
        404
    );

    let metrics_url = format!("http://127.0.0.1:{admin}/metrics");
    let scrape = || async {
        client()
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // The health gauges are set once a second.
    wait_until(Duration::from_secs(5), "the health gauges", || async {
        scrape()
            .await
            .contains("gateway_upstream_instance_healthy{")
    })
    .await;
    let text = scrape().await;

    let requests = |route: &str, method: &str, status: &str| {
        metric(
            &text,
            "gateway_requests_total",
            &[("route", route), ("method", method), ("status", status)],
        )
    };
    assert_eq!(requests("/users", "GET", "2xx"), Some(2.0), "{text}");
    assert_eq!(requests("/users", "GET", "4xx"), Some(2.0));
    assert_eq!(requests("/limited", "GET", "4xx"), Some(1.0));
    assert_eq!(requests("/dead", "GET", "5xx"), Some(1.0));
    // /nowhere, and /metrics asked of the public port.
    assert_eq!(requests("none", "GET", "4xx"), Some(2.0));
    assert_eq!(requests("/open", "OTHER", "2xx"), Some(1.0));
    let reason = |r: &str| metric(&text, "gateway_jwt_rejections_total", &[("reason", r)]);
    assert_eq!(reason("missing_token"), Some(1.0));
    assert_eq!(reason("malformed"), Some(1.0));
    // The same refusals, counted by the core without naming any plugin.
    let refused = |plugin: &str, reason: &str| {
        metric(
            &text,
            "gateway_refusals_total",
            &[("plugin", plugin), ("reason", reason)],
        )
    };
    assert_eq!(refused("jwt", "missing_token"), Some(1.0));
    assert_eq!(refused("jwt", "malformed"), Some(1.0));
    assert_eq!(refused("rate_limit", "over_limit"), Some(1.0));
    assert_eq!(
        metric(
            &text,
            "gateway_rate_limited_total",
            &[("route", "/limited")]
        ),
        Some(1.0)
    );
    let errors = |up: &str, kind: &str| {
        metric(
            &text,
            "gateway_upstream_errors_total",
            &[("upstream", up), ("kind", kind)],
        )
    };
    assert!(errors("dead", "connect") >= Some(1.0), "{text}");
    assert_eq!(errors("svc", "timeout"), Some(1.0));
    assert_eq!(
        metric(
            &text,
            "gateway_request_duration_seconds_count",
            &[("route", "/users")]
        ),
        Some(4.0)
    );
    assert_eq!(metric(&text, "gateway_requests_in_flight", &[]), Some(0.0));
    let instance = upstream.url().replace("http://", "");
    assert_eq!(
        metric(
            &text,
            "gateway_upstream_instance_healthy",
            &[("upstream", "svc"), ("instance", &instance)]
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_are_labelled_by_name_in_metrics_and_the_log() {
    let upstream = Upstream::start("svc").await;
    let admin = free_port();
    // Three routes with one prefix: two bound to hosts (one named), and
    // the fallback. Labelled by prefix alone they would share one label.
    let gw = Gateway::start(&format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
admin: {{address: '127.0.0.1:{admin}'}}
access_log: {{format: json, output: '{{dir}}/access.log'}}
upstreams:
  svc: {{instances: ['{}']}}
routes:
  - {{prefix: /users, host: a.example, upstream: svc}}
  - {{prefix: /users, host: b.example, upstream: svc, name: users-b}}
  - {{prefix: /users, upstream: svc}}
",
        upstream.url()
    ))
    .await;
    let c = client();
    for (host, times) in [("a.example", 1), ("b.example", 2), ("c.example", 3)] {
        for _ in 0..times {
            let r = c
                .get(gw.url("/users/me"))
                .header("host", host)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
        }
    }
    // Metrics are counted once the response is out, so the last request's
    // may lag the client's view of it.
    let metrics_url = format!("http://127.0.0.1:{admin}/metrics");
    wait_until(Duration::from_secs(10), "each route's own count", || {
        let url = metrics_url.clone();
        async move {
            let text = client()
                .get(&url)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let count = |route: &str| {
                metric(
                    &text,
                    "gateway_requests_total",
                    &[("route", route), ("status", "2xx")],
                )
            };
            count("a.example/users") == Some(1.0)
                && count("users-b") == Some(2.0)
                && count("/users") == Some(3.0)
        }
    })
    .await;

    let log = gw.dir().join("access.log");
    let mut routes = Vec::new();
    wait_until(Duration::from_secs(10), "six access log lines", || {
        routes = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            // Not the readiness checks of `/`.
            .filter(|v| v["path"] == "/users/me")
            .map(|v| v["route"].as_str().unwrap_or_default().to_string())
            .collect();
        let done = routes.len() == 6;
        async move { done }
    })
    .await;
    assert_eq!(
        routes,
        [
            "a.example/users",
            "users-b",
            "users-b",
            "/users",
            "/users",
            "/users"
        ]
    );
}
