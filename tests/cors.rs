//! CORS at the gateway: the headers on every kind of answer, against the real
//! binary and a real echo upstream, and then in a real browser: Debian's
//! headless chromium loads a page from another loopback origin whose script
//! calls the gateway with `fetch`.

mod support;

use std::process::Command;

use reqwest::Response;
use serde_json::json;
use support::jwt::*;
use support::*;

const SECRET: &str = "cors-test-secret-0123456789abcdef";

fn all(r: &Response, name: &str) -> Vec<String> {
    r.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// `/open` (no auth), `/secure` (token required, read timeout 1 s), `/dead`
/// (nothing listens), under the global `cors` section given.
async fn gateway(upstream: &Upstream, cors: &str, extra_routes: &str) -> Gateway {
    Gateway::start(&format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
max_body_size: 1KiB
cors: {cors}
jwt: {{keys: [{{secret: '{SECRET}'}}]}}
upstreams:
  svc: {{instances: ['{}'], timeouts: {{read: 1s}}}}
  dead: {{instances: ['http://127.0.0.1:{}'], timeouts: {{connect: 1s}}}}
routes:
  - {{prefix: /open, upstream: svc}}
  - {{prefix: /secure, upstream: svc, auth: required, require: {{roles: [admin]}}}}
  - {{prefix: /dead, upstream: dead}}
{extra_routes}",
        upstream.url(),
        free_port()
    ))
    .await
}

const SHOP: &str = "http://shop.test";
const LISTED: &str = "{allow_origins: ['http://shop.test', 'http://*.shop.test'], expose_headers: [X-Request-Id], max_age: 10m}";

async fn preflight(gw: &Gateway, path: &str, origin: &str, method: &str) -> Response {
    client()
        .request(reqwest::Method::OPTIONS, gw.url(path))
        .header("origin", origin)
        .header("access-control-request-method", method)
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn preflights_are_answered_at_the_gateway() {
    let upstream = Upstream::start("svc").await;
    let gw = gateway(&upstream, LISTED, "").await;

    // Allowed: 204 with the policy, no token needed, nothing proxied.
    let r = preflight(&gw, "/secure/orders", SHOP, "POST").await;
    assert_eq!(r.status(), 204);
    assert_eq!(header(&r, "access-control-allow-origin"), SHOP);
    assert_eq!(
        header(&r, "access-control-allow-methods"),
        "GET, HEAD, PUT, PATCH, POST, DELETE"
    );
    assert_eq!(
        header(&r, "access-control-allow-headers"),
        "authorization, content-type"
    );
    assert_eq!(header(&r, "access-control-max-age"), "600");
    assert!(all(&r, "vary").iter().any(|v| v == "Origin"));
    assert!(!header(&r, "x-request-id").is_empty());
    // Even for a path no route serves.
    assert_eq!(preflight(&gw, "/nowhere", SHOP, "GET").await.status(), 204);

    // Disallowed origins and methods get no allow headers.
    for (origin, method) in [
        ("http://evil.test", "POST"),
        ("http://shop.test.evil", "POST"),
        ("http://evilshop.test", "POST"),
        ("https://shop.test", "POST"),
        ("null", "POST"),
        (SHOP, "TRACE"),
    ] {
        let r = preflight(&gw, "/open/x", origin, method).await;
        assert!(
            r.headers().get("access-control-allow-origin").is_none()
                && r.headers().get("access-control-allow-methods").is_none(),
            "{origin} {method}: {:?}",
            r.headers()
        );
    }
    assert_eq!(upstream.hits(), 0);

    // A plain OPTIONS is an ordinary request, proxied.
    let r = client()
        .request(reqwest::Method::OPTIONS, gw.url("/open/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(header(&r, "x-seen-method"), "OPTIONS");
    assert_eq!(upstream.hits(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_the_cors_headers() {
    let upstream = Upstream::start("svc").await;
    let gw = gateway(&upstream, LISTED, "").await;
    let origin = "http://eu.shop.test";
    let tokens = tool(&[
        mint("HS256", SECRET, claims("u", json!({"roles": ["admin"]}))),
        mint("HS256", SECRET, claims("u", json!({"roles": ["customer"]}))),
    ]);
    let get = |path: &str| client().get(gw.url(path)).header("origin", origin);
    let cases = [
        ("proxied", get("/open/x"), 200),
        ("404", get("/nowhere"), 404),
        ("400", get("/open/%2F"), 400),
        ("401", get("/secure/x"), 401),
        ("403", get("/secure/x").bearer_auth(&tokens[1]), 403),
        (
            "413",
            client()
                .post(gw.url("/open/x"))
                .header("origin", origin)
                .body(vec![b'x'; 4096]),
            413,
        ),
        ("502", get("/dead/x"), 502),
        ("504", get("/secure/slow").bearer_auth(&tokens[0]), 504),
    ];
    for (what, request, status) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status, "{what}");
        assert_eq!(header(&r, "access-control-allow-origin"), origin, "{what}");
        assert_eq!(
            header(&r, "access-control-expose-headers"),
            "X-Request-Id",
            "{what}"
        );
        assert!(all(&r, "vary").iter().any(|v| v == "Origin"), "{what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_services_own_cors_headers_are_replaced() {
    let upstream = Upstream::start("svc").await;
    let gw = gateway(&upstream, LISTED, "").await;
    let ask = |origin: &str| {
        client()
            .get(gw.url("/open/x"))
            .header("origin", origin)
            .header("x-reply-header", "Access-Control-Allow-Origin: *")
            .header("x-reply-header", "Access-Control-Allow-Credentials: true")
            .header("x-reply-header", "Vary: Accept-Encoding")
    };
    let r = ask(SHOP).send().await.unwrap();
    assert_eq!(all(&r, "access-control-allow-origin"), [SHOP]);
    assert!(r
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    let vary = all(&r, "vary");
    assert!(vary.contains(&"Accept-Encoding".to_string()) && vary.contains(&"Origin".to_string()));
    // A disallowed origin does not get the service's `*` either.
    let r = ask("http://evil.test").send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // No Origin, no CORS headers.
    let r = client().get(gw.url("/open/x")).send().await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn any_origin_null_credentials_and_per_route_policies() {
    let upstream = Upstream::start("svc").await;
    let gw = gateway(
        &upstream,
        "{allow_origins: ['*']}",
        "  - {prefix: /partner, upstream: svc, cors: {allow_origins: ['http://partner.test', 'null'], allow_credentials: true, allow_headers: [Authorization]}}
  - {prefix: /internal, upstream: svc, cors: {enabled: false}}",
    )
    .await;
    let get = |path: &str, origin: &str| client().get(gw.url(path)).header("origin", origin).send();

    let r = get("/open/x", "http://anyone.test").await.unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), "*");
    assert!(all(&r, "vary").is_empty());
    let r = get("/open/x", "null").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());

    let r = get("/partner/x", "http://partner.test").await.unwrap();
    assert_eq!(
        header(&r, "access-control-allow-origin"),
        "http://partner.test"
    );
    assert_eq!(header(&r, "access-control-allow-credentials"), "true");
    let r = get("/partner/x", "null").await.unwrap();
    assert_eq!(header(&r, "access-control-allow-origin"), "null");
    let r = get("/partner/x", "http://anyone.test").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
    let r = preflight(&gw, "/partner/x", "http://partner.test", "PUT").await;
    assert_eq!(header(&r, "access-control-allow-headers"), "Authorization");

    let r = get("/internal/x", "http://anyone.test").await.unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_policies_are_refused_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    for (cors, expected) in [
        (
            "{allow_origins: ['*'], allow_credentials: true}",
            "cors.allow_credentials: credentials cannot be allowed for any origin",
        ),
        (
            "{allow_origins: ['https://shop.example/']}",
            "cors.allow_origins[0]: `https://shop.example/` is not an origin",
        ),
        (
            "{allow_origins: ['https://shop.*.example']}",
            "cors.allow_origins[0]: `https://shop.*.example` is not an origin",
        ),
    ] {
        let conf = dir.path().join("bad.yaml");
        std::fs::write(
            &conf,
            format!("listeners: [{{address: '127.0.0.1:1'}}]\ncors: {cors}\nupstreams: {{}}\nroutes: []\n"),
        )
        .unwrap();
        let out = run_binary(&["-t", "-c", conf.to_str().unwrap()]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// Loads `url` in headless chromium, lets its scripts run, and returns the
/// page's DOM afterwards.
fn browser_dom(url: &str) -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--virtual-time-budget=10000",
            "--timeout=30000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap_or_else(|e| panic!("{chromium}: {e} (apt-get install chromium)"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A page whose script calls the gateway as a web shop would, and writes
/// what it could read into `<pre id="N">`.
fn page(calls: &[(&str, &str)]) -> String {
    let scripts: String = calls
        .iter()
        .enumerate()
        .map(|(i, (url, token))| {
            format!(
                r#"fetch("{url}", {{method: "POST", headers: {{"Authorization": "Bearer {token}", "Content-Type": "application/json"}}, body: JSON.stringify({{item: "keyboard", qty: 2}})}})
  .then(r => r.text().then(t => {{ document.getElementById("{i}").textContent = "READ " + r.status + " " + (r.headers.get("x-request-id") ? "id " : "") + t; }}))
  .catch(e => {{ document.getElementById("{i}").textContent = "BLOCKED " + e.name; }});
"#
            )
        })
        .collect();
    let slots: String = (0..calls.len())
        .map(|i| format!(r#"<pre id="{i}">pending</pre>"#))
        .collect();
    format!("<!doctype html><html><body>{slots}<script>{scripts}</script></body></html>")
}

fn slot(dom: &str, i: usize) -> String {
    let start = dom
        .find(&format!(r#"<pre id="{i}">"#))
        .unwrap_or_else(|| panic!("slot {i} in {dom}"));
    let rest = &dom[start..];
    let text = &rest[rest.find('>').unwrap() + 1..rest.find("</pre>").unwrap()];
    text.replace("&quot;", "\"").replace("&amp;", "&")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_browser_on_another_origin_reads_the_answers_it_is_allowed_to() {
    let upstream = Upstream::start("svc").await;
    // The shop's pages come from 127.0.0.2 (allowed) and 127.0.0.3 (not).
    let shop = JwksServer::serve("127.0.0.2", 0, "text/html", "").await;
    let stranger = JwksServer::serve("127.0.0.3", 0, "text/html", "").await;
    let gw = Gateway::start(&format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
cors: {{allow_origins: ['{}'], expose_headers: [X-Request-Id]}}
jwt: {{keys: [{{secret: '{SECRET}'}}]}}
upstreams:
  svc: {{instances: ['{}']}}
routes:
  - {{prefix: /orders, upstream: svc, auth: required}}
",
        shop.origin(),
        upstream.url()
    ))
    .await;
    let tokens = tool(&[
        mint("HS256", SECRET, claims("u-1", json!({}))),
        mint("HS256", SECRET, claims("u-1", json!({"exp": now() - 3600}))),
    ]);
    let orders = gw.url("/orders/new");

    shop.set(200, &page(&[(&orders, &tokens[0]), (&orders, &tokens[1])]));
    let dom = browser_dom(&format!("{}/index.html", shop.origin()));
    // The page read the service's JSON (the echo of what it posted) and the
    // exposed request id.
    assert_eq!(
        slot(&dom, 0),
        r#"READ 200 id {"item":"keyboard","qty":2}"#,
        "{dom}"
    );
    // And the expired token's 401, which it can only read with the CORS
    // headers on the gateway's own answer.
    let refused = slot(&dom, 1);
    assert!(refused.starts_with("READ 401 id {"), "{refused}");
    assert!(refused.contains(r#""error":"Invalid token""#), "{refused}");
    assert!(refused.contains(r#""reason":"token expired""#), "{refused}");
    assert_eq!(upstream.hits(), 1, "preflights are not proxied");

    stranger.set(200, &page(&[(&orders, &tokens[0])]));
    let dom = browser_dom(&format!("{}/index.html", stranger.origin()));
    assert_eq!(slot(&dom, 0), "BLOCKED TypeError", "{dom}");
    assert_eq!(
        upstream.hits(),
        1,
        "the browser never sent the blocked call"
    );
}
