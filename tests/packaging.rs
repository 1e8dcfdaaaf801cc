//! What can be checked of the container setup without a Docker engine: the
//! gateway runs as an unprivileged user, the Dockerfile ships only the
//! binary, conf/ and the CA bundle as non-root with its built-in health
//! check and a draining stop signal, and the compose file wires services and
//! variables that exist. CI builds and runs both in a real engine too
//! (`.ci/containers.sh`); these checks run wherever the tests do.

mod support;

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_yaml::Value;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_runs_as_an_unprivileged_user() {
    let upstream = Upstream::start("svc").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let port = free_port();
    let d = dir.path().display();
    let conf = dir.path().join("gateway.yaml");
    std::fs::write(
        &conf,
        format!(
            "server: {{threads: 1, pid_file: {d}/gw.pid, upgrade_sock: {d}/gw.sock}}
listeners: [{{address: '127.0.0.1:{port}'}}]
upstreams: {{svc: {{instances: ['{}']}}}}
routes: [{{prefix: /users, upstream: svc}}]
",
            upstream.url()
        ),
    )
    .unwrap();
    // As the image's `USER`: here nobody (uid 65534), when the tests run as
    // root; otherwise the test user already is unprivileged.
    let root = String::from_utf8(Command::new("id").arg("-u").output().unwrap().stdout)
        .unwrap()
        .trim()
        == "0";
    // A copy, so that the binary is reachable whatever the permissions of
    // the build directory's parents.
    let copy = dir.path().join("api-gateway");
    std::fs::copy(binary(), &copy).unwrap();
    let mut command = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(&copy);
        c
    } else {
        Command::new(&copy)
    };
    let mut child = command
        .arg("-c")
        .arg(&conf)
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/users/me");
    wait_until(
        Duration::from_secs(30),
        "the unprivileged gateway",
        || async { matches!(client().get(&url).send().await, Ok(r) if r.status() == 200) },
    )
    .await;
    let uid = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    let _ = child.kill();
    let _ = child.wait();
    if root {
        assert!(uid.contains("65534"), "{uid}");
    }
}

#[test]
fn the_dockerfile_ships_binary_and_conf_as_non_root() {
    let text = std::fs::read_to_string(repo_path("Dockerfile")).unwrap();
    let last_stage = text.rsplit("\nFROM ").next().unwrap();
    assert!(
        last_stage.starts_with("debian:bookworm-slim"),
        "{last_stage}"
    );
    let copies: Vec<&str> = last_stage
        .lines()
        .filter(|l| l.starts_with("COPY"))
        .collect();
    assert_eq!(
        copies,
        [
            "COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/",
            "COPY --from=build /usr/local/bin/api-gateway /usr/local/bin/",
            "COPY conf ./conf"
        ]
    );
    assert!(last_stage.contains("\nUSER gateway\n"));
    assert!(last_stage.contains("--uid 10001"));
    assert!(last_stage.contains("STOPSIGNAL SIGTERM"));
    assert!(last_stage.contains(r#"CMD ["api-gateway", "--healthcheck"]"#));
    let ignored = std::fs::read_to_string(repo_path(".dockerignore")).unwrap();
    for entry in ["target", ".git", ".env"] {
        assert!(
            ignored.lines().any(|l| l == entry),
            "{entry} in .dockerignore"
        );
    }
}

#[test]
fn the_compose_file_wires_services_and_variables_that_exist() {
    let mut compose: Value =
        serde_yaml::from_str(&std::fs::read_to_string(repo_path("docker-compose.yml")).unwrap())
            .unwrap();
    // The replicas share their settings through a `<<` merge key.
    compose.apply_merge().unwrap();
    let services = compose["services"].as_mapping().unwrap();
    let mut names: BTreeSet<String> = services
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    for alias in compose["services"]["demo-services"]["networks"]["default"]["aliases"]
        .as_sequence()
        .unwrap()
    {
        names.insert(alias.as_str().unwrap().to_string());
    }
    let gateway = &compose["services"]["api-gateway"];
    assert_eq!(gateway["ports"][0], "3000:3000");
    let env = gateway["environment"].as_mapping().unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().unwrap().to_string(),
            )
        })
        .collect();

    // Every variable the shipped config reads is set, or has a default.
    let text = std::fs::read_to_string(repo_path("conf/gateway.yaml")).unwrap();
    let conf: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    for part in conf.split("${").skip(1) {
        let var = part.split(['}', ':']).next().unwrap();
        let has_default = part.split('}').next().unwrap().contains(":-");
        assert!(
            has_default || env.iter().any(|(k, _)| k == var),
            "{var} is neither set in compose nor defaulted"
        );
    }
    // ...and what compose sets is what the config and .env.example name.
    let example = std::fs::read_to_string(repo_path(".env.example")).unwrap();
    for (name, value) in &env {
        assert!(
            conf.contains(&format!("${{{name}")),
            "{name} is not read by the config"
        );
        assert!(
            example.contains(&format!("{name}=")),
            "{name} is not in .env.example"
        );
        // Service URLs point at services of this compose file.
        if let Some(rest) = value.split("://").nth(1) {
            let host = rest.split([':', '/']).next().unwrap();
            assert!(
                names.contains(host),
                "{name}: {host} is not a compose service"
            );
        }
    }
    for (dependency, _) in gateway["depends_on"].as_mapping().unwrap() {
        assert!(services.contains_key(dependency), "{dependency:?}");
    }
    assert_eq!(
        compose["services"]["api-gateway-2"]["environment"],
        gateway["environment"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_built_in_health_check_asks_the_gateway_on_port() {
    let upstream = Upstream::start("svc").await;
    let gateway = Gateway::start(&format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
upstreams: {{svc: {{instances: ['{}']}}}}
routes: [{{prefix: /users, upstream: svc}}]
",
        upstream.url()
    ))
    .await;
    let probe = |port: u16| {
        Command::new(binary())
            .arg("--healthcheck")
            .env("PORT", port.to_string())
            .output()
            .unwrap()
    };
    let healthy = probe(gateway.port());
    assert!(healthy.status.success(), "{healthy:?}");
    assert_eq!(upstream.hits(), 0, "/healthz is the gateway's own");

    let nobody = free_port();
    let down = probe(nobody);
    assert_eq!(down.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(stderr.contains(&format!("127.0.0.1:{nobody}")), "{stderr}");
}
