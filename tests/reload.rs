//! Live reload against the real binary: SIGHUP and `-s reload` swap the
//! config in the running process under load without losing a request;
//! bad files are refused while the old config serves; what a reload keeps
//! (budgets, health, pooled connections, fetched JWKS) and what it renews
//! (secrets, certificates, the access log file).

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::jwt::{claims, mint, one, JwksServer};
use support::*;

/// The outcome the gateway reported for its latest load: generation, ok,
/// message.
fn status(gw: &Gateway) -> Option<(u64, bool, String)> {
    let text = std::fs::read_to_string(gw.dir().join("gw.pid.status")).ok()?;
    let mut parts = text.trim_end().splitn(3, ' ');
    let generation = parts.next()?.parse().ok()?;
    let ok = parts.next()? == "ok";
    Some((generation, ok, parts.next().unwrap_or_default().to_string()))
}

/// Sends SIGHUP and waits for the reload's outcome.
async fn hangup(gw: &Gateway) -> (bool, String) {
    let before = status(gw).map_or(0, |s| s.0);
    gw.signal("HUP");
    let mut outcome = None;
    wait_until(Duration::from_secs(30), "the reload's outcome", || {
        outcome = status(gw).filter(|s| s.0 > before);
        let done = outcome.is_some();
        async move { done }
    })
    .await;
    let (_, ok, message) = outcome.unwrap();
    (ok, message)
}

async fn get(gw: &Gateway, path: &str) -> reqwest::Response {
    client().get(gw.url(path)).send().await.unwrap()
}

/// `/users` to `users`, plus `/extra` when asked for.
fn two_configs(users: &Upstream, extra: bool) -> String {
    let extra = if extra {
        "  - {prefix: /extra, upstream: users}\n"
    } else {
        ""
    };
    format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
upstreams:
  users: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: users}}
{extra}",
        users.url()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_reloads_under_load_lose_no_request() {
    let one = Upstream::start("one").await;
    let two = Upstream::start("two").await;
    let mut gw = Gateway::start(&two_configs(&one, false)).await;
    let pid = gw.pid();

    // Four keep-alive clients until told to stop, each bounded.
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, answered, failures) = (stop.clone(), answered.clone(), failures.clone());
        let url = gw.url("/users/load");
        clients.push(tokio::spawn(async move {
            let c = client();
            for _ in 0..200_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                match c.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let _ = r.bytes().await;
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => failures
                        .lock()
                        .unwrap()
                        .push(format!("status {}", r.status())),
                    Err(e) => failures.lock().unwrap().push(e.to_string()),
                }
            }
        }));
    }

    let mut slowest = Duration::ZERO;
    for i in 0..20 {
        // Even rounds add /extra and move /users to the second instance;
        // odd ones take both back.
        let with_extra = i % 2 == 0;
        let serving = if with_extra { &two } else { &one };
        gw.rewrite(&two_configs(serving, with_extra));
        let signalled = Instant::now();
        if i % 4 < 2 {
            let (ok, message) = hangup(&gw).await;
            assert!(ok, "{message}");
        } else {
            let out = gw.reload();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("reloaded"), "{stdout}");
        }
        // Once reported, the new routes serve: no request sees a half-built
        // state, and no waiting is needed.
        let extra = get(&gw, "/extra/x").await.status();
        assert_eq!(extra, if with_extra { 200 } else { 404 }, "round {i}");
        let r = get(&gw, "/users/x").await;
        assert_eq!(
            header(&r, "x-upstream"),
            if with_extra { "two" } else { "one" }
        );
        slowest = slowest.max(signalled.elapsed());
    }
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(answered.load(Ordering::SeqCst) > 100, "the load ran");
    assert_eq!(gw.pid(), pid);
    assert!(gw.running(), "the same process serves throughout");
    eprintln!(
        "{} requests during 20 reloads, 0 failed; slowest signal-to-serving {slowest:?}",
        answered.load(Ordering::SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_file_is_refused_named_and_counted_while_the_old_config_serves() {
    let users = Upstream::start("users").await;
    let admin = free_port();
    let good = format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
admin: {{address: '127.0.0.1:{admin}'}}
upstreams:
  users: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: users}}
",
        users.url()
    );
    let gw = Gateway::start(&good).await;
    let conf = gw.conf().display().to_string();
    let bad = [
        (format!("{good}routes: [\n"), "invalid YAML"),
        (format!("{good}routez: []\n"), "routez: unknown field `routez`"),
        (
            format!("{good}jwt: {{keys: [{{public_key_file: {{dir}}/none.pem, algorithms: [RS256]}}]}}\n"),
            "jwt.keys[0].public_key_file: cannot read",
        ),
        (
            good.replace(&users.url(), "http://no-such-host.invalid:3001"),
            "upstreams.users.instances[0]: `no-such-host.invalid` does not resolve",
        ),
    ];
    for (yaml, expected) in &bad {
        gw.rewrite(yaml);
        let (ok, message) = hangup(&gw).await;
        assert!(!ok, "accepted:\n{yaml}");
        assert!(
            message.starts_with(&conf) && message.contains(expected),
            "{message}"
        );
        assert_eq!(
            get(&gw, "/users/me").await.status(),
            200,
            "the old config serves"
        );
    }
    // `-s reload` prints the running gateway's verdict (this file passes
    // the checks the command itself can make: only the gateway resolves).
    let out = gw.reload();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("does not resolve"), "{stderr}");

    let logged = gw.stderr();
    let refusals: Vec<&str> = logged
        .lines()
        .filter(|l| l.contains("reload refused"))
        .collect();
    assert_eq!(refusals.len(), bad.len() + 1, "{logged}");
    assert!(refusals.iter().all(|l| l.contains(&conf)), "{refusals:?}");

    let text = scrape(admin).await;
    let reloads = |result| metric(&text, "gateway_config_reloads_total", &[("result", result)]);
    assert_eq!(reloads("error"), Some((bad.len() + 1) as f64), "{text}");
    assert_eq!(reloads("ok"), Some(0.0));

    // The good file again: accepted, and it serves.
    gw.rewrite(&good);
    assert!(hangup(&gw).await.0);
    assert_eq!(get(&gw, "/users/me").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_name_the_loaded_file_and_when_it_was_loaded() {
    let users = Upstream::start("users").await;
    let admin = free_port();
    let config = |extra: &str| {
        format!(
            "listeners: [{{address: '127.0.0.1:{{port}}'}}]
admin: {{address: '127.0.0.1:{admin}'}}
upstreams:
  users: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: users}}
{extra}",
            users.url()
        )
    };
    let gw = Gateway::start(&config("")).await;
    let sha256 = || {
        let out = Command::new("sha256sum").arg(gw.conf()).output().unwrap();
        String::from_utf8_lossy(&out.stdout)[..64].to_string()
    };
    let loaded_at = |text: &str| {
        metric(
            text,
            "gateway_config_last_reload_success_timestamp_seconds",
            &[],
        )
        .unwrap()
    };
    let text = scrape(admin).await;
    assert_eq!(
        metric(&text, "gateway_config_info", &[("sha256", &sha256())]),
        Some(1.0),
        "{text}"
    );
    let started = loaded_at(&text);

    gw.rewrite(&config("  - {prefix: /more, upstream: users}\n"));
    let (ok, message) = hangup(&gw).await;
    assert!(ok && message.contains(&sha256()), "{message}");
    let text = scrape(admin).await;
    assert_eq!(
        metric(&text, "gateway_config_info", &[("sha256", &sha256())]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        text.matches("gateway_config_info{").count(),
        1,
        "only the running file"
    );
    assert_eq!(
        metric(&text, "gateway_config_reloads_total", &[("result", "ok")]),
        Some(1.0)
    );
    assert!(loaded_at(&text) >= started);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_limit_keeps_its_budgets_and_a_changed_one_starts_afresh() {
    let users = Upstream::start("users").await;
    let config = |requests: u32, extra: &str| {
        format!(
            "listeners: [{{address: '127.0.0.1:{{port}}'}}]
upstreams:
  users: {{instances: ['{}']}}
routes:
  - {{prefix: /limited, upstream: users, rate_limit: {{requests: {requests}, per: 1h}}}}
{extra}",
            users.url()
        )
    };
    let gw = Gateway::start(&config(1, "")).await;
    assert_eq!(get(&gw, "/limited/a").await.status(), 200);
    assert_eq!(get(&gw, "/limited/a").await.status(), 429);

    // Another route added; the policy itself unchanged.
    gw.rewrite(&config(1, "  - {prefix: /other, upstream: users}\n"));
    assert!(hangup(&gw).await.0);
    assert_eq!(get(&gw, "/other").await.status(), 200);
    assert_eq!(
        get(&gw, "/limited/a").await.status(),
        429,
        "still exhausted"
    );

    // The policy changed: a fresh budget of two.
    gw.rewrite(&config(2, ""));
    assert!(hangup(&gw).await.0);
    assert_eq!(get(&gw, "/limited/a").await.status(), 200);
    assert_eq!(get(&gw, "/limited/a").await.status(), 200);
    assert_eq!(get(&gw, "/limited/a").await.status(), 429);
}

/// Spends the budget of `key` on `/limited` (one request an hour).
async fn spend(gw: &Gateway, key: &str) -> u16 {
    let r = client()
        .get(gw.url("/limited/a"))
        .header("x-key", key)
        .send()
        .await
        .unwrap();
    r.status().as_u16()
}

/// Two hundred other clients, seen after any before: with the store shrunk
/// to one client per shard (16 shards), each shard's last one would be
/// one of these, so a shrink would forget every client seen before them.
async fn crowd(gw: &Gateway, round: &str) {
    for i in 0..200 {
        assert_eq!(spend(gw, &format!("{round}-{i}")).await, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_reload_leaves_the_budgets_as_they_were() {
    let users = Upstream::start("users").await;
    let admin = free_port();
    let config = |max_keys: u32, instance: &str| {
        format!(
            "listeners: [{{address: '127.0.0.1:{{port}}'}}]
admin: {{address: '127.0.0.1:{admin}'}}
rate_limit_backends: {{local: {{max_keys: {max_keys}}}}}
upstreams:
  users: {{instances: ['{instance}']}}
routes:
  - {{prefix: /limited, upstream: users, rate_limit: {{requests: 1, per: 1h, key: {{by: header, name: X-Key}}}}}}
  - {{prefix: /open, upstream: users}}
"
        )
    };
    let gw = Gateway::start(&config(100_000, &users.url())).await;
    assert_eq!(spend(&gw, "victim").await, 200);
    assert_eq!(spend(&gw, "victim").await, 429);
    crowd(&gw, "first").await;

    // A smaller store, in a file refused only after the new state is built:
    // its upstream does not resolve.
    gw.rewrite(&config(16, "http://no-such-host.invalid:3001"));
    let (ok, message) = hangup(&gw).await;
    assert!(!ok && message.contains("does not resolve"), "{message}");
    assert_eq!(spend(&gw, "victim").await, 429, "the budget was forgotten");
    assert_eq!(
        get(&gw, "/open/x").await.status(),
        200,
        "the old config serves"
    );
    let text = scrape(admin).await;
    let reloads = |result| metric(&text, "gateway_config_reloads_total", &[("result", result)]);
    assert_eq!(reloads("error"), Some(1.0), "{text}");
    assert_eq!(reloads("ok"), Some(0.0), "{text}");

    // Accepted, the smaller store applies: only the crowd's last fit.
    crowd(&gw, "second").await;
    gw.rewrite(&config(16, &users.url()));
    let (ok, message) = hangup(&gw).await;
    assert!(ok, "{message}");
    assert_eq!(spend(&gw, "victim").await, 200, "the store was not shrunk");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_secret_takes_over_at_the_reload() {
    let users = Upstream::start("users").await;
    let config = |secret: &str| {
        format!(
            "listeners: [{{address: '127.0.0.1:{{port}}'}}]
jwt: {{keys: [{{secret: '{secret}'}}]}}
upstreams:
  users: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: users, auth: required}}
",
            users.url()
        )
    };
    let (old, new) = (
        "old-secret-0123456789abcdefghijkl",
        "new-secret-0123456789abcdefghijkl",
    );
    let token = |secret| one(mint("HS256", secret, claims("u-1", json!({}))));
    let (old_token, new_token) = (token(old), token(new));
    let gw = Gateway::start(&config(old)).await;
    let call = |t: String| {
        let gw = &gw;
        async move {
            client()
                .get(gw.url("/users/me"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(call(old_token.clone()).await, 200);
    assert_eq!(call(new_token.clone()).await, 401);

    gw.rewrite(&config(new));
    assert!(hangup(&gw).await.0);
    assert_eq!(call(new_token).await, 200);
    // Verified and cached under the old secret, and still refused: a new
    // key drops the verified-token cache.
    assert_eq!(call(old_token).await, 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unchanged_upstream_keeps_its_health_and_its_pooled_connections() {
    let healthy = Upstream::start("healthy").await;
    let sick = Upstream::start("sick").await;
    sick.set_healthy(false);
    // Checked once at start, then not for an hour: what a reload keeps is
    // what the first check found.
    let config = |extra: &str| {
        format!(
            "listeners: [{{address: '127.0.0.1:{{port}}'}}]
upstreams:
  users:
    instances: ['{}', '{}']
    health_check: {{path: /health, interval: 1h}}
routes:
  - {{prefix: /users, upstream: users}}
{extra}",
            healthy.url(),
            sick.url()
        )
    };
    let gw = Gateway::start(&config("")).await;
    let to_healthy = || async {
        let mut seen = Vec::new();
        for _ in 0..6 {
            seen.push(header(&get(&gw, "/users/x").await, "x-upstream").to_string());
        }
        seen.iter().all(|s| s == "healthy")
    };
    wait_until(
        Duration::from_secs(10),
        "the first health check",
        to_healthy,
    )
    .await;
    let connections = healthy.connections();

    gw.rewrite(&config("  - {prefix: /more, upstream: users}\n"));
    assert!(hangup(&gw).await.0);
    assert!(
        to_healthy().await,
        "the sick instance is still known to be sick"
    );
    assert_eq!(
        healthy.connections(),
        connections,
        "the pooled connections were used again"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_url_is_fetched_again_only_when_it_changes() {
    let users = Upstream::start("users").await;
    let idp = JwksServer::start(
        r#"{"keys":[{"kty":"oct","kid":"h1","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQ","alg":"HS256"}]}"#,
    )
    .await;
    let config = |url: &str, extra: &str| {
        format!(
            "listeners: [{{address: '127.0.0.1:{{port}}'}}]
jwt: {{keys: [{{jwks_url: '{url}', algorithms: [HS256], jwks: {{refresh_interval: 1h}}}}]}}
upstreams:
  users: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: users, auth: required}}
{extra}",
            users.url()
        )
    };
    let gw = Gateway::start(&config(&idp.url(), "")).await;
    assert_eq!(idp.hits(), 1);
    gw.rewrite(&config(
        &idp.url(),
        "  - {prefix: /more, upstream: users}\n",
    ));
    assert!(hangup(&gw).await.0);
    assert_eq!(idp.hits(), 1, "the fetched set was kept");
    gw.rewrite(&config(&format!("{}?v=2", idp.url()), ""));
    assert!(hangup(&gw).await.0);
    assert_eq!(idp.hits(), 2, "a new URL is fetched before it serves");

    // A new URL that cannot be fetched is refused, not served empty.
    idp.set(503, "down");
    gw.rewrite(&config(&format!("{}?v=3", idp.url()), ""));
    let (ok, message) = hangup(&gw).await;
    assert!(!ok && message.contains("jwt.keys[0].jwks_url"), "{message}");
}

#[tokio::test(flavor = "multi_thread")]
async fn what_only_a_restart_changes_is_reported_and_kept() {
    let users = Upstream::start("users").await;
    let config = |port: &str| {
        format!(
            "listeners: [{{address: '127.0.0.1:{port}'}}]
upstreams:
  users: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: users}}
  - {{prefix: /new, upstream: users}}
",
            users.url()
        )
    };
    let gw = Gateway::start(&config("{port}")).await;
    let elsewhere = free_port();
    gw.rewrite(&config(&elsewhere.to_string()));
    let (ok, message) = hangup(&gw).await;
    assert!(ok, "{message}");
    assert_eq!(
        get(&gw, "/new").await.status(),
        200,
        "the rest of the file applies"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", elsewhere)).is_err(),
        "no new listener"
    );
    let logged = gw.stderr();
    assert!(
        logged.contains("listeners changed from 127.0.0.1:")
            && logged.contains("only a restart or an upgrade (-u) applies this"),
        "{logged}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_is_reopened_after_a_rotation() {
    let users = Upstream::start("users").await;
    let gw = Gateway::start(&format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
access_log: {{format: json, output: '{{dir}}/access.log'}}
upstreams:
  users: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: users}}
",
        users.url()
    ))
    .await;
    let log = gw.dir().join("access.log");
    let rotated = gw.dir().join("access.log.1");
    let lines_with = |path: &std::path::Path, id: &str| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(id))
            .count()
    };
    let logged = |id: &'static str| {
        let gw = &gw;
        async move {
            client()
                .get(gw.url("/users/me"))
                .header("x-request-id", id)
                .send()
                .await
                .unwrap();
        }
    };
    logged("before-rotation").await;
    wait_until(Duration::from_secs(10), "the first line", || {
        let n = lines_with(&log, "before-rotation");
        async move { n == 1 }
    })
    .await;
    std::fs::rename(&log, &rotated).unwrap();
    let out = run_binary(&["-s", "reopen", "-c", gw.conf().to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until(Duration::from_secs(10), "a new file at the path", || {
        let exists = log.exists();
        async move { exists }
    })
    .await;
    logged("after-rotation").await;
    wait_until(Duration::from_secs(10), "the line in the new file", || {
        let n = lines_with(&log, "after-rotation");
        async move { n == 1 }
    })
    .await;
    assert_eq!(lines_with(&rotated, "after-rotation"), 0);
    assert_eq!(lines_with(&rotated, "before-rotation"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_certificate_is_served_after_the_reload() {
    let first = tempfile::tempdir().unwrap();
    let renewed = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(first.path());
    let (new_cert, new_key) = certificate(renewed.path());
    let users = Upstream::start("users").await;
    let tls_port = free_port();
    let gw = Gateway::start(&format!(
        "listeners:
  - {{address: '127.0.0.1:{{port}}'}}
  - {{address: '127.0.0.1:{tls_port}', tls: {{cert_file: '{}', key_file: '{}'}}}}
upstreams:
  users: {{instances: ['{}']}}
routes:
  - {{prefix: /users, upstream: users}}
",
        cert.display(),
        key.display(),
        users.url()
    ))
    .await;
    let url = format!("https://127.0.0.1:{tls_port}/users/me");
    // A new client each time: a fresh handshake.
    let over_tls = |trusted: &std::path::Path| {
        let client = trusting(trusted).build().unwrap();
        let url = url.clone();
        async move { client.get(&url).send().await.map(|r| r.status()) }
    };
    assert_eq!(over_tls(&cert).await.unwrap(), 200);
    assert!(
        over_tls(&new_cert).await.is_err(),
        "not yet the renewed one"
    );

    // Renewed in place, as certbot or cert-manager would.
    let old_cert = first.path().join("old.pem");
    std::fs::copy(&cert, &old_cert).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    std::fs::copy(&new_key, &key).unwrap();
    assert!(hangup(&gw).await.0);
    assert_eq!(over_tls(&new_cert).await.unwrap(), 200);
    assert!(
        over_tls(&old_cert).await.is_err(),
        "the old one is not served"
    );
}
