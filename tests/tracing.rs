//! Distributed tracing against the real binary: a real OTLP/HTTP receiver
//! on 127.0.0.1 decodes what the gateway exports with the official
//! `opentelemetry-proto` package, and real upstreams report the
//! `traceparent` they were sent.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::otlp::OtlpReceiver;
use support::*;

fn config(receiver: &str, tracing: &str, instances: &[&str], route: &str) -> String {
    let instances: Vec<String> = instances.iter().map(|u| format!("'{u}'")).collect();
    format!(
        "listeners: [{{address: '127.0.0.1:{{port}}'}}]
access_log: {{format: json, output: '{{dir}}/access.log'}}
tracing: {{endpoint: '{receiver}', export_interval: 100ms{tracing}}}
upstreams:
  svc: {{instances: [{}]}}
routes:
  - {{prefix: /svc, upstream: svc{route}}}
",
        instances.join(", ")
    )
}

/// What the echo upstream was sent.
fn seen(r: &reqwest::Response) -> Value {
    serde_json::from_str(header(r, "x-seen-headers")).unwrap()
}

/// The trace id and parent span id of a `traceparent`.
fn ids(traceparent: &str) -> (String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    (
        parts[1].to_string(),
        parts[2].to_string(),
        parts[3].to_string(),
    )
}

/// The spans of `trace_id`, once `count` of them have arrived.
async fn spans_of(receiver: &OtlpReceiver, trace_id: &str, count: usize) -> Vec<Value> {
    let mut found = Vec::new();
    wait_until(Duration::from_secs(10), "the spans", || {
        found = receiver
            .spans()
            .into_iter()
            .filter(|s| s["trace_id"] == trace_id)
            .collect();
        let done = found.len() >= count;
        async move { done }
    })
    .await;
    found
}

fn kind(spans: &[Value], kind: u64) -> Vec<&Value> {
    spans.iter().filter(|s| s["kind"] == kind).collect()
}

const SERVER: u64 = 2;
const CLIENT: u64 = 3;

#[tokio::test(flavor = "multi_thread")]
async fn a_request_is_a_server_span_and_a_client_span_linked_to_the_upstream() {
    let receiver = OtlpReceiver::start();
    let svc = Upstream::start("svc").await;
    let resource = ", service_name: shop-edge, resource_attributes: {deployment.environment: test}";
    let gw = Gateway::start(&config(&receiver.endpoint(), resource, &[&svc.url()], "")).await;
    let r = client()
        .get(gw.url("/svc/items?page=2"))
        .header("user-agent", "tracing-test/1")
        .header("x-request-id", "traced-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let sent = seen(&r)["traceparent"].as_str().unwrap().to_string();
    let (trace_id, parent, flags) = ids(&sent);
    assert_eq!(flags, "01", "sampled");

    let spans = spans_of(&receiver, &trace_id, 2).await;
    let server = kind(&spans, SERVER)[0];
    let client = kind(&spans, CLIENT)[0];
    // The upstream's parent is the gateway's client span, whose parent is
    // the server span, which has none.
    assert_eq!(client["span_id"], parent.as_str());
    assert_eq!(client["parent_span_id"], server["span_id"]);
    assert_eq!(server["parent_span_id"], "");

    assert_eq!(server["name"], "GET /svc");
    let a = &server["attributes"];
    assert_eq!(a["http.request.method"], "GET");
    assert_eq!(a["http.route"], "/svc");
    assert_eq!(a["url.path"], "/svc/items");
    assert_eq!(a["url.scheme"], "http");
    assert_eq!(a["http.response.status_code"], 200);
    assert_eq!(a["client.address"], "127.0.0.1");
    assert_eq!(a["server.port"], gw.port());
    assert_eq!(a["user_agent.original"], "tracing-test/1");
    assert_eq!(a["gateway.request_id"], "traced-1");
    assert_eq!(a["gateway.route"], "/svc");
    assert_eq!(a["gateway.upstream"], "svc");
    assert_eq!(
        a["server.address"], "127.0.0.1",
        "the Host, without its port"
    );
    assert_eq!(a["network.protocol.version"], "1.1");
    assert_eq!(server["status"]["code"], 0);
    assert!(server["start"].as_u64() <= client["start"].as_u64());
    assert!(client["end"].as_u64() <= server["end"].as_u64());

    assert_eq!(client["name"], "GET");
    let a = &client["attributes"];
    assert_eq!(a["server.port"], svc.port());
    assert_eq!(
        a["url.full"],
        format!("http://127.0.0.1:{}/items?page=2", svc.port()),
        "the URL the upstream was sent, prefix stripped"
    );
    assert_eq!(a["network.peer.address"], "127.0.0.1");
    assert_eq!(a["http.response.status_code"], 200);
    let resource = &server["resource"];
    assert_eq!(resource["service.name"], "shop-edge");
    assert_eq!(resource["deployment.environment"], "test");
    assert_eq!(resource["service.version"], env!("CARGO_PKG_VERSION"));
    assert!(resource["service.instance.id"]
        .as_str()
        .unwrap()
        .contains(':'));
    assert_eq!(server["scope"], "api-gateway");
    assert_eq!(server["content_type"], "application/x-protobuf");

    // The access log line leads to the trace.
    let log = gw.dir().join("access.log");
    let mut line = Value::Null;
    wait_until(Duration::from_secs(10), "the access log line", || {
        line = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v["request_id"] == "traced-1")
            .unwrap_or(Value::Null);
        let found = !line.is_null();
        async move { found }
    })
    .await;
    assert_eq!(line["trace_id"], trace_id.as_str());
    assert_eq!(line["span_id"], server["span_id"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_trace_is_continued_or_restarted_as_configured() {
    let receiver = OtlpReceiver::start();
    let svc = Upstream::start("svc").await;
    let theirs = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let call = |gw: &Gateway| {
        client()
            .get(gw.url("/svc/x"))
            .header("traceparent", theirs)
            .header("tracestate", "vendor=abc")
            .send()
    };
    let gw = Gateway::start(&config(&receiver.endpoint(), "", &[&svc.url()], "")).await;
    let r = call(&gw).await.unwrap();
    let upstream = seen(&r);
    let (trace_id, parent, _) = ids(upstream["traceparent"].as_str().unwrap());
    assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        parent, "00f067aa0ba902b7",
        "the gateway's own span is the parent"
    );
    assert_eq!(upstream["tracestate"], "vendor=abc");
    let spans = spans_of(&receiver, &trace_id, 2).await;
    let server = kind(&spans, SERVER)[0];
    assert_eq!(server["parent_span_id"], "00f067aa0ba902b7");
    assert_eq!(server["trace_state"], "vendor=abc");

    let gw = Gateway::start(&config(
        &receiver.endpoint(),
        ", propagation: restart",
        &[&svc.url()],
        "",
    ))
    .await;
    let r = call(&gw).await.unwrap();
    let upstream = seen(&r);
    let (trace_id, _, _) = ids(upstream["traceparent"].as_str().unwrap());
    assert_ne!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(upstream.get("tracestate").is_none(), "{upstream}");
    let spans = spans_of(&receiver, &trace_id, 2).await;
    assert_eq!(kind(&spans, SERVER)[0]["parent_span_id"], "");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_traceparent_is_replaced_and_never_forwarded() {
    let receiver = OtlpReceiver::start();
    let svc = Upstream::start("svc").await;
    let gw = Gateway::start(&config(&receiver.endpoint(), "", &[&svc.url()], "")).await;
    for bad in [
        "garbage",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    ] {
        let r = client()
            .get(gw.url("/svc/x"))
            .header("traceparent", bad)
            .header("tracestate", "vendor=abc")
            .send()
            .await
            .unwrap();
        let upstream = seen(&r);
        let sent = upstream["traceparent"].as_str().unwrap();
        assert_ne!(sent, bad);
        let (trace_id, _, _) = ids(sent);
        assert_ne!(trace_id, "00000000000000000000000000000000");
        assert_eq!(trace_id, trace_id.to_lowercase());
        assert!(upstream.get("tracestate").is_none(), "{upstream}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sampling_ratio_of_0_records_no_new_trace() {
    let receiver = OtlpReceiver::start();
    let svc = Upstream::start("svc").await;
    let gw = Gateway::start(&config(
        &receiver.endpoint(),
        ", sampling_ratio: 0",
        &[&svc.url()],
        "",
    ))
    .await;
    for _ in 0..20 {
        let r = client().get(gw.url("/svc/x")).send().await.unwrap();
        let (_, _, flags) = ids(seen(&r)["traceparent"].as_str().unwrap());
        assert_eq!(flags, "00", "propagated, not sampled");
    }
    // A trace the client sampled is continued as sampled (parent-based):
    // once its spans are in, anything exported before them would be too.
    let marker = "00-11111111111111111111111111111111-2222222222222222-01";
    client()
        .get(gw.url("/svc/x"))
        .header("traceparent", marker)
        .send()
        .await
        .unwrap();
    spans_of(&receiver, "11111111111111111111111111111111", 2).await;
    let others: Vec<Value> = receiver
        .spans()
        .into_iter()
        .filter(|s| s["trace_id"] != "11111111111111111111111111111111")
        .collect();
    assert!(others.is_empty(), "{others:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_try_is_a_client_span_and_failures_are_errors() {
    let receiver = OtlpReceiver::start();
    let (bad, good) = (Upstream::start("bad").await, Upstream::start("good").await);
    bad.set_status(503);
    let gw = Gateway::start(&config(
        &receiver.endpoint(),
        "",
        &[&bad.url(), &good.url()],
        ", retry: {attempts: 2, on: [503]}",
    ))
    .await;
    // Round robin: one of two requests tries the bad instance first.
    let mut retried = None;
    for _ in 0..2 {
        let r = client().get(gw.url("/svc/x")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let (trace_id, parent, _) = ids(seen(&r)["traceparent"].as_str().unwrap());
        if bad.hits() == 1 && retried.is_none() {
            retried = Some((trace_id, parent));
        }
    }
    let (trace_id, parent) = retried.expect("a retried request");
    let spans = spans_of(&receiver, &trace_id, 3).await;
    let mut tries = kind(&spans, CLIENT);
    tries.sort_by_key(|s| s["start"].as_u64());
    assert_eq!(tries.len(), 2);
    assert_eq!(tries[0]["attributes"]["http.response.status_code"], 503);
    assert_eq!(tries[0]["status"]["code"], 2, "a failed try is an error");
    assert_eq!(tries[1]["attributes"]["http.request.resend_count"], 1);
    // Each try names the instance it went to, the retry too.
    assert_eq!(
        tries[0]["attributes"]["url.full"],
        format!("{}/x", bad.url())
    );
    assert_eq!(
        tries[1]["attributes"]["url.full"],
        format!("{}/x", good.url())
    );
    assert_eq!(
        tries[1]["span_id"],
        parent.as_str(),
        "the second try's span is the parent"
    );
    assert_eq!(kind(&spans, SERVER)[0]["status"]["code"], 0);

    // A refused connect, everywhere: the server span of a 502 is an error.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let gw = Gateway::start(&config(&receiver.endpoint(), "", &[&dead], "")).await;
    let r = client().get(gw.url("/svc/x")).send().await.unwrap();
    assert_eq!(r.status(), 502);
    let mut server = None;
    wait_until(Duration::from_secs(10), "the 502's span", || {
        server = receiver
            .spans()
            .into_iter()
            .find(|s| s["kind"] == SERVER && s["attributes"]["http.response.status_code"] == 502);
        let found = server.is_some();
        async move { found }
    })
    .await;
    let server = server.unwrap();
    assert_eq!(server["status"]["code"], 2);
    assert_eq!(server["attributes"]["error.type"], "502");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_is_an_event_on_the_server_span() {
    let receiver = OtlpReceiver::start();
    let svc = Upstream::start("svc").await;
    let yaml = config(&receiver.endpoint(), "", &[&svc.url()], ", auth: required").replace(
        "upstreams:",
        "jwt: {keys: [{secret: 'tracing-secret-0123456789abcdefgh'}]}\nupstreams:",
    );
    let gw = Gateway::start(&yaml).await;
    let r = client()
        .get(gw.url("/svc/x"))
        .header(
            "traceparent",
            "00-33333333333333333333333333333333-4444444444444444-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let spans = spans_of(&receiver, "33333333333333333333333333333333", 1).await;
    let server = kind(&spans, SERVER)[0];
    assert_eq!(server["events"][0]["name"], "gateway.refusal");
    assert_eq!(
        server["events"][0]["attributes"]["gateway.refusal.plugin"],
        "jwt"
    );
    assert_eq!(
        server["events"][0]["attributes"]["gateway.refusal.reason"],
        "missing_token"
    );
    assert_eq!(
        server["status"]["code"], 0,
        "a 4xx is the client's, not an error"
    );
    assert!(kind(&spans, CLIENT).is_empty(), "nothing went upstream");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_collector_down_or_stuck_the_gateway_serves_and_counts_what_it_drops() {
    // A collector that takes connections and never answers: exports hang
    // until their timeout, and the queue fills meanwhile.
    let stuck = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}/v1/traces", stuck.local_addr().unwrap());
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((conn, _)) = stuck.accept().await {
            open.push(conn);
        }
    });
    let svc = Upstream::start("svc").await;
    let admin = free_port();
    let yaml = config(
        &endpoint,
        ", max_queue: 8, max_batch: 4, export_timeout: 300ms",
        &[&svc.url()],
        "",
    )
    .replace(
        "upstreams:",
        &format!("admin: {{address: '127.0.0.1:{admin}'}}\nupstreams:"),
    );
    let gw = Gateway::start(&yaml).await;
    let c = client();
    for _ in 0..300 {
        assert_eq!(c.get(gw.url("/svc/x")).send().await.unwrap().status(), 200);
    }
    wait_until(Duration::from_secs(10), "drops counted", || async {
        let text = scrape(admin).await;
        let dropped = |reason| {
            metric(
                &text,
                "gateway_trace_spans_dropped_total",
                &[("reason", reason)],
            )
            .unwrap_or(0.0)
        };
        dropped("queue_full") > 0.0 && dropped("export_failed") > 0.0
    })
    .await;
    held.abort();

    // And with nothing listening at all: refused, counted, still serving.
    let mut receiver = OtlpReceiver::start();
    let endpoint = receiver.endpoint();
    receiver.stop();
    let admin = free_port();
    let yaml = config(&endpoint, "", &[&svc.url()], "").replace(
        "upstreams:",
        &format!("admin: {{address: '127.0.0.1:{admin}'}}\nupstreams:"),
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..50 {
        assert_eq!(c.get(gw.url("/svc/x")).send().await.unwrap().status(), 200);
    }
    wait_until(
        Duration::from_secs(10),
        "failed exports counted",
        || async {
            let text = scrape(admin).await;
            metric(
                &text,
                "gateway_trace_spans_dropped_total",
                &[("reason", "export_failed")],
            )
            .is_some_and(|n| n >= 100.0)
        },
    )
    .await;
}

#[test]
fn a_bad_tracing_section_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = "listeners: [{address: '127.0.0.1:1'}]
upstreams: {svc: {instances: ['http://127.0.0.1:2']}}
routes: [{prefix: /svc, upstream: svc}]
";
    for (tracing, key) in [
        (
            "{endpoint: 'http://127.0.0.1:4318/v1/traces', sampling_ratio: 2}",
            "tracing.sampling_ratio",
        ),
        ("{endpoint: 'grpc://127.0.0.1:4317'}", "tracing.endpoint"),
        (
            "{endpoint: 'http://127.0.0.1:4318/v1/traces', max_queue: 10, max_batch: 20}",
            "tracing.max_batch",
        ),
        (
            "{endpoint: 'http://127.0.0.1:4318/v1/traces', propagation: sometimes}",
            "tracing.propagation",
        ),
        (
            "{endpoint: 'http://127.0.0.1:4318/v1/traces', resource_attributes: {service.name: x}}",
            "tracing.resource_attributes",
        ),
        (
            "{endpoint: 'http://127.0.0.1:4318/v1/traces', sampler: always}",
            "sampler",
        ),
    ] {
        let path = dir.path().join("gw.yaml");
        std::fs::write(&path, format!("{base}tracing: {tracing}\n")).unwrap();
        let out = run_binary(&["-t", "-c", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {tracing}");
        assert!(stderr.contains(key), "for `{key}`: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reload_to_another_collector_still_exports_what_was_queued() {
    let first = OtlpReceiver::start();
    let second = OtlpReceiver::start();
    let svc = Upstream::start("svc").await;
    // Exports wait out a long interval (no batch fills), so the spans are
    // still queued when the reload replaces the tracer.
    let slow = |receiver: &OtlpReceiver| {
        config(&receiver.endpoint(), "", &[&svc.url()], "")
            .replace("export_interval: 100ms", "export_interval: 2s")
    };
    let gw = Gateway::start(&slow(&first)).await;
    let r = client().get(gw.url("/svc/before")).send().await.unwrap();
    let (before, _, _) = ids(seen(&r)["traceparent"].as_str().unwrap());
    assert!(first.spans().is_empty(), "exported before the interval");

    gw.rewrite(&slow(&second));
    let out = gw.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = client().get(gw.url("/svc/after")).send().await.unwrap();
    let (after, _, _) = ids(seen(&r)["traceparent"].as_str().unwrap());

    spans_of(&first, &before, 2).await;
    spans_of(&second, &after, 2).await;
    assert!(second
        .spans()
        .iter()
        .all(|s| s["trace_id"] != before.as_str()));
}
