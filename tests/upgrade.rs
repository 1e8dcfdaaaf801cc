//! Zero-downtime reloads with `scripts/upgrade.sh`, against the real binary
//! under a steady, bounded load over keep-alive connections, the drain on
//! SIGTERM, and the fast exit on SIGINT.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::*;

fn config(upstream: &Upstream, dir: &Path, port: u16, extra_routes: &[&str]) -> String {
    let d = dir.display();
    let mut routes = String::from("  - {prefix: /a, upstream: svc}\n");
    for prefix in extra_routes {
        routes.push_str(&format!("  - {{prefix: {prefix}, upstream: svc}}\n"));
    }
    format!(
        "server: {{threads: 2, pid_file: {d}/gw.pid, upgrade_sock: {d}/gw.sock, grace_period: 1s, graceful_shutdown_timeout: 1s}}
listeners: [{{address: '127.0.0.1:{port}'}}]
access_log: {{format: off}}
upstreams: {{svc: {{instances: ['{}']}}}}
routes:
{routes}",
        upstream.url()
    )
}

/// Stops whichever gateway the pid file names at the end of the test (the
/// last upgrade started it, not the test).
struct PidFileGuard(PathBuf);

impl Drop for PidFileGuard {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
    }
}

async fn upgrade(conf: &Path, log: &Path) -> std::process::Output {
    let (conf, log) = (conf.to_path_buf(), log.to_path_buf());
    tokio::task::spawn_blocking(move || {
        Command::new(repo_path("scripts/upgrade.sh"))
            .arg("-c")
            .arg(conf)
            .args(["-b", binary()])
            .arg("-l")
            .arg(log)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: Mutex<Vec<String>>,
}

#[tokio::test(flavor = "multi_thread")]
async fn reloads_under_load_lose_no_request() {
    let upstream = Upstream::start("svc").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("gateway.yaml");
    std::fs::write(&conf, config(&upstream, dir.path(), port, &[])).unwrap();
    let first = Gateway::start_with(&["-c", conf.to_str().unwrap()], &[], dir.path(), port).await;
    let _last = PidFileGuard(dir.path().join("gw.pid"));

    // Eight keep-alive clients in a loop, each bounded in requests and time.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let url = first.url("/a/x");
    let load: Vec<_> = (0..8)
        .map(|_| {
            let (stop, tally, url) = (stop.clone(), tally.clone(), url.clone());
            tokio::spawn(async move {
                let client = client();
                let deadline = Instant::now() + Duration::from_secs(90);
                for _ in 0..50_000 {
                    if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                        break;
                    }
                    match client.get(&url).send().await {
                        Ok(r) if r.status() == 200 => {
                            tally.ok.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(r) => tally
                            .failed
                            .lock()
                            .unwrap()
                            .push(format!("status {}", r.status())),
                        Err(e) => tally.failed.lock().unwrap().push(format!("{e:?}")),
                    }
                }
            })
        })
        .collect();

    let log = dir.path().join("upgrades.log");
    let mut routes = Vec::new();
    for reload in 1..=3 {
        let prefix = format!("/new{reload}");
        routes.push(prefix.clone());
        let prefixes: Vec<&str> = routes.iter().map(String::as_str).collect();
        std::fs::write(&conf, config(&upstream, dir.path(), port, &prefixes)).unwrap();
        let out = upgrade(&conf, &log).await;
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let r = client()
            .get(first.url(&format!("{prefix}/x")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{prefix} after reload {reload}");
    }

    // A bad config is refused and the running gateway keeps serving.
    std::fs::write(&conf, "routes: [oops").unwrap();
    let out = upgrade(&conf, &log).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("upgrade refused"));
    let r = client().get(first.url("/new3/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let ok = tally.ok.load(Ordering::SeqCst);
    let failed = tally.failed.lock().unwrap();
    eprintln!(
        "under 3 reloads and 1 refused reload: {ok} requests answered 200, {} failed",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 1000, "only {ok} requests");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_and_exits() {
    let upstream = Upstream::start("svc").await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = dir.path().join("gateway.yaml");
    let yaml =
        config(&upstream, dir.path(), port, &[]).replace("grace_period: 1s", "grace_period: 5s");
    std::fs::write(&conf, yaml).unwrap();
    let gw = Gateway::start_with(&["-c", conf.to_str().unwrap()], &[], dir.path(), port).await;
    let pid = std::fs::read_to_string(dir.path().join("gw.pid")).unwrap();

    // The upstream's /slow answers after 3 s.
    let slow = tokio::spawn({
        let url = gw.url("/a/slow");
        async move { client().get(url).send().await }
    });
    wait_until(
        Duration::from_secs(5),
        "the slow request to arrive",
        || async { upstream.hits() == 1 },
    )
    .await;
    let started = Instant::now();
    assert!(Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()
        .unwrap()
        .success());

    let r = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "slow");
    // New connections are refused once draining started.
    assert!(client().get(gw.url("/a/x")).send().await.is_err());
    wait_until(Duration::from_secs(15), "the gateway to exit", || async {
        has_exited(&pid)
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5 + 1 + 5),
        "{:?}",
        started.elapsed()
    );
}

/// Gone, or a zombie (its parent, the test, has not reaped it yet).
fn has_exited(pid: &str) -> bool {
    let pid = pid.trim();
    !Path::new(&format!("/proc/{pid}")).exists()
        || std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_exits_at_once_and_keeps_the_access_log() {
    let upstream = Upstream::start("svc").await;
    // Several single-threaded runtimes: the setup whose fast shutdown could
    // spin in Pingora's accept loop and never exit.
    let gw = Gateway::start_with_server_keys(
        "  work_stealing: false\n",
        &format!(
            "listeners: [{{address: '127.0.0.1:{{port}}'}}]
access_log: {{format: json, output: '{{dir}}/access.log'}}
upstreams: {{svc: {{instances: ['{}']}}}}
routes: [{{prefix: /a, upstream: svc}}]
",
            upstream.url()
        ),
    )
    .await;
    let pid = std::fs::read_to_string(gw.dir().join("gw.pid")).unwrap();

    // Keep-alive connections spread over both runtimes, still open at the
    // signal.
    let clients: Vec<_> = (0..8).map(|_| client()).collect();
    for round in 0..25 {
        let requests = clients
            .iter()
            .map(|c| c.get(gw.url(&format!("/a/{round}"))).send());
        for r in futures_util::future::join_all(requests).await {
            assert_eq!(r.unwrap().status(), 200);
        }
    }
    assert!(Command::new("kill")
        .args(["-INT", pid.trim()])
        .status()
        .unwrap()
        .success());
    wait_until(Duration::from_secs(3), "the gateway to exit", || async {
        has_exited(&pid)
    })
    .await;

    let log = std::fs::read_to_string(gw.dir().join("access.log")).unwrap();
    let proxied = log
        .lines()
        .filter(|l| l.contains("\"route\":\"/a\""))
        .count();
    assert_eq!(proxied, 200, "{log}");
    assert!(
        gw.stderr().contains("fast shutdown: exiting now"),
        "{}",
        gw.stderr()
    );
}
