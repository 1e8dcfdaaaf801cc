//! TLS at the edge against the real binary: HTTPS listeners with a
//! certificate made by openssl, HTTP/1.1 and HTTP/2 (ALPN) over them, HTTP/2
//! cleartext, the redirect from plain HTTP, and clear startup errors for bad
//! certificate files.

mod support;

use reqwest::{redirect, Client, Version};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn https_with_http1_and_http2_h2c_and_the_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let upstream = Upstream::start("svc").await;
    let (tls_port, redirect_port) = (free_port(), free_port());
    let gw = Gateway::start_with_server_keys(
        "  h2c: true\n",
        &format!(
            "listeners:
  - {{address: '127.0.0.1:{{port}}'}}
  - {{address: '127.0.0.1:{tls_port}', tls: {{cert_file: '{}', key_file: '{}'}}}}
  - {{address: '127.0.0.1:{redirect_port}', redirect_to_https: true}}
upstreams: {{svc: {{instances: ['{}']}}}}
routes: [{{prefix: /users, upstream: svc}}]
",
            cert.display(),
            key.display(),
            upstream.url()
        ),
    )
    .await;
    let https = format!("https://127.0.0.1:{tls_port}/users/me?x=1");

    let h1 = trusting(&cert).http1_only().build().unwrap();
    let r = h1.get(&https).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, Version::HTTP_11));
    assert_eq!(header(&r, "x-seen-uri"), "/me?x=1");
    let seen: serde_json::Value = serde_json::from_str(header(&r, "x-seen-headers")).unwrap();
    assert_eq!(seen["x-forwarded-proto"], "https");

    let h2 = trusting(&cert).build().unwrap();
    let body = vec![7u8; 300_000];
    let r = h2.post(&https).body(body.clone()).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, Version::HTTP_2));
    assert_eq!(r.bytes().await.unwrap(), body);

    // Without the certificate trusted, no connection.
    assert!(client().get(&https).send().await.is_err());

    let h2c = Client::builder().http2_prior_knowledge().build().unwrap();
    let r = h2c.get(gw.url("/users/me")).send().await.unwrap();
    assert_eq!((r.status().as_u16(), r.version()), (200, Version::HTTP_2));

    let no_follow = Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    let r = no_follow
        .get(format!("http://127.0.0.1:{redirect_port}/users/me?x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(header(&r, "location"), https);
    assert_eq!(
        upstream.hits(),
        3,
        "the redirect is answered by the gateway"
    );
}

#[test]
fn bad_certificate_files_stop_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _key) = certificate(dir.path());
    let not_a_key = dir.path().join("not-a-key.pem");
    std::fs::write(&not_a_key, "hello").unwrap();
    for (key_file, expected) in [
        (
            dir.path().join("missing.pem"),
            "listeners[0].tls.key_file: cannot read",
        ),
        (not_a_key, "listeners[0].tls.key_file: "),
    ] {
        let conf = dir.path().join("gw.yaml");
        std::fs::write(
            &conf,
            format!(
                "listeners: [{{address: '127.0.0.1:1', tls: {{cert_file: '{}', key_file: '{}'}}}}]\nupstreams: {{}}\nroutes: []\n",
                cert.display(),
                key_file.display()
            ),
        )
        .unwrap();
        let out = run_binary(&["-c", conf.to_str().unwrap()]);
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}
