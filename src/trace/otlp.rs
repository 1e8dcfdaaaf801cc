//! Spans as OTLP/HTTP carries them: an `ExportTraceServiceRequest` in
//! protobuf, encoded by hand.
//!
//! A span is encoded when it ends, straight from what the request has at
//! hand (borrowed strings, no copies), into one buffer per request; the
//! queue holds those buffers, and an export request is the resource and
//! scope, encoded once, around a batch of them. Which OpenTelemetry
//! attribute each fact becomes, and whether the span's status is an error,
//! is decided here. The message is small and fixed (resource, one scope,
//! spans with attributes, events and a status), so a page of wire format
//! replaces a code generator; the tests decode it with the official
//! `opentelemetry-proto` package. Field numbers are those of
//! `opentelemetry/proto/trace/v1/trace.proto` and `common/v1/common.proto`.

use std::net::{IpAddr, SocketAddr};

use http::HeaderValue;

use crate::context::Refusal;
use crate::forwarded::IpText;
use crate::host::strip_port;

/// An attribute's key as it goes on the wire, framed at compile time: the
/// `KeyValue.key` field and the tag of the `KeyValue.value` after it.
/// Attributes are the bulk of a span, so they cost as little as can be.
macro_rules! key {
    ($key:literal) => {{
        const FRAMED: [u8; $key.len() + 3] = frame_key($key);
        &FRAMED
    }};
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
}

/// One request, as the gateway served it.
pub struct ServerSpan<'a> {
    pub ids: Ids,
    pub trace_state: Option<&'a HeaderValue>,
    pub start_ns: u64,
    pub end_ns: u64,
    pub facts: ServerFacts<'a>,
}

/// What the server span says of a finished request.
pub struct ServerFacts<'a> {
    pub method: &'a str,
    /// The route's prefix (its `http.route`) and name.
    pub route: Option<(&'a str, &'a str)>,
    pub upstream: Option<&'a str>,
    pub path: &'a str,
    pub scheme: &'static str,
    /// The `Host` the client named, port and all.
    pub host: Option<&'a str>,
    /// The port the request came in on.
    pub port: Option<u16>,
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<&'a str>,
    pub protocol: &'static str,
    pub status: u16,
    pub refusal: Option<Refusal>,
    pub request_id: &'a str,
}

/// One try of a request on an upstream instance.
pub struct ClientSpan<'a> {
    pub ids: Ids,
    pub start_ns: u64,
    pub end_ns: u64,
    pub method: &'a str,
    /// The instance's host, as configured.
    pub host: &'a str,
    /// The URL sent to it, once the request was written.
    pub url: Option<&'a str>,
    pub addr: SocketAddr,
    /// 0 for the first try.
    pub resend: u8,
    pub status: Option<u16>,
    /// How the try failed, when it did: `connect`, `reset`, `timeout`,
    /// `status`.
    pub failure: Option<&'static str>,
}

/// A request's spans, encoded, which are queued, exported or dropped
/// together so that no try outlives the request it belongs to.
pub struct Encoded {
    /// `ScopeSpans.spans` entries, one after another.
    pub bytes: Vec<u8>,
    pub spans: usize,
}

/// What every export request says before its spans, encoded once: the
/// resource (the gateway's attributes) and the instrumentation scope.
pub struct Preamble {
    resource: Vec<u8>,
    scope: Vec<u8>,
}

impl Preamble {
    pub fn new(resource: &[(String, String)]) -> Self {
        let mut r = Vec::new();
        message(&mut r, 1, |r| {
            for (key, value) in resource {
                str_attribute(r, 1, &frame(key), value);
            }
        });
        let mut scope = Vec::new();
        message(&mut scope, 1, |scope| {
            string(scope, 1, env!("CARGO_PKG_NAME"));
            string(scope, 2, env!("CARGO_PKG_VERSION"));
        });
        Preamble { resource: r, scope }
    }
}

/// The export request for a batch of requests' spans: one `ResourceSpans`
/// holding one `ScopeSpans`, whose lengths are known before either is
/// written.
pub fn export_request(preamble: &Preamble, batch: &[Encoded]) -> Vec<u8> {
    let spans: usize = batch.iter().map(|e| e.bytes.len()).sum();
    let scope_spans = preamble.scope.len() + spans;
    let resource_spans = preamble.resource.len() + field_len(scope_spans);
    let mut out = Vec::with_capacity(field_len(resource_spans));
    tag(&mut out, 1, LEN);
    varint(&mut out, resource_spans as u64);
    out.extend_from_slice(&preamble.resource);
    tag(&mut out, 2, LEN);
    varint(&mut out, scope_spans as u64);
    out.extend_from_slice(&preamble.scope);
    for encoded in batch {
        out.extend_from_slice(&encoded.bytes);
    }
    out
}

const SERVER: u64 = 2;
const CLIENT: u64 = 3;

/// Appends the server span, with the HTTP server attributes of the
/// semantic conventions.
pub fn server_span(out: &mut Vec<u8>, span: &ServerSpan) {
    message(out, 2, |out| server(out, span));
}

/// Appends a try's client span, with the HTTP client attributes.
pub fn client_span(out: &mut Vec<u8>, span: &ClientSpan) {
    message(out, 2, |out| client(out, span));
}

fn server(out: &mut Vec<u8>, span: &ServerSpan) {
    let f = &span.facts;
    // `{method} {http.route}`, as the conventions name a server span.
    let name: &[&str] = match f.route {
        Some((prefix, _)) => &[f.method, " ", prefix],
        None => &[f.method],
    };
    head(
        out,
        &span.ids,
        span.trace_state,
        name,
        SERVER,
        span.start_ns,
        span.end_ns,
    );
    str_attribute(out, 9, key!("http.request.method"), f.method);
    str_attribute(out, 9, key!("url.path"), f.path);
    str_attribute(out, 9, key!("url.scheme"), f.scheme);
    str_attribute(out, 9, key!("network.protocol.version"), f.protocol);
    int_attribute(out, 9, key!("http.response.status_code"), f.status.into());
    str_attribute(out, 9, key!("gateway.request_id"), f.request_id);
    if let Some((prefix, name)) = f.route {
        str_attribute(out, 9, key!("http.route"), prefix);
        str_attribute(out, 9, key!("gateway.route"), name);
    }
    if let Some(upstream) = f.upstream {
        str_attribute(out, 9, key!("gateway.upstream"), upstream);
    }
    if let Some(host) = f.host {
        str_attribute(out, 9, key!("server.address"), strip_port(host));
    }
    if let Some(port) = f.port {
        int_attribute(out, 9, key!("server.port"), port.into());
    }
    if let Some(ip) = f.client_ip {
        str_attribute(out, 9, key!("client.address"), IpText::new(ip).as_str());
    }
    if let Some(agent) = f.user_agent {
        str_attribute(out, 9, key!("user_agent.original"), agent);
    }
    if let Some(refusal) = &f.refusal {
        str_attribute(out, 9, key!("gateway.refusal.plugin"), refusal.plugin);
        str_attribute(out, 9, key!("gateway.refusal.reason"), refusal.reason);
        message(out, 11, |event| {
            fixed64(event, 1, span.end_ns);
            string(event, 2, "gateway.refusal");
            str_attribute(event, 3, key!("gateway.refusal.plugin"), refusal.plugin);
            str_attribute(event, 3, key!("gateway.refusal.reason"), refusal.reason);
        });
    }
    // A server's 5xx is an error; a 4xx is the client's.
    if f.status >= 500 {
        error(out, itoa::Buffer::new().format(f.status));
    }
}

fn client(out: &mut Vec<u8>, span: &ClientSpan) {
    head(
        out,
        &span.ids,
        None,
        &[span.method],
        CLIENT,
        span.start_ns,
        span.end_ns,
    );
    str_attribute(out, 9, key!("http.request.method"), span.method);
    str_attribute(out, 9, key!("server.address"), span.host);
    int_attribute(out, 9, key!("server.port"), span.addr.port().into());
    if let Some(url) = span.url {
        str_attribute(out, 9, key!("url.full"), url);
    }
    let peer = IpText::new(span.addr.ip());
    str_attribute(out, 9, key!("network.peer.address"), peer.as_str());
    if span.resend > 0 {
        int_attribute(
            out,
            9,
            key!("http.request.resend_count"),
            span.resend.into(),
        );
    }
    if let Some(status) = span.status {
        int_attribute(out, 9, key!("http.response.status_code"), status.into());
    }
    // A client's 4xx and 5xx are errors, and so is a try that failed.
    match (span.failure, span.status) {
        (Some("status") | None, Some(status)) if status >= 400 => {
            error(out, itoa::Buffer::new().format(status));
        }
        (Some(kind), _) if kind != "status" => error(out, kind),
        _ => {}
    }
}

/// The fields every span starts with; its name is `name`'s parts joined.
fn head(
    out: &mut Vec<u8>,
    ids: &Ids,
    trace_state: Option<&HeaderValue>,
    name: &[&str],
    kind: u64,
    start_ns: u64,
    end_ns: u64,
) {
    field_bytes(out, 1, &ids.trace_id);
    field_bytes(out, 2, &ids.span_id);
    if let Some(state) = trace_state {
        field_bytes(out, 3, state.as_bytes());
    }
    if let Some(parent) = &ids.parent {
        field_bytes(out, 4, parent);
    }
    tag(out, 5, LEN);
    varint(out, name.iter().map(|p| p.len() as u64).sum());
    for part in name {
        out.extend_from_slice(part.as_bytes());
    }
    tag(out, 6, VARINT);
    varint(out, kind);
    fixed64(out, 7, start_ns);
    fixed64(out, 8, end_ns);
}

/// An `error.type` attribute and an error status, both saying `kind`.
fn error(out: &mut Vec<u8>, kind: &str) {
    str_attribute(out, 9, key!("error.type"), kind);
    message(out, 15, |status| {
        string(status, 2, kind);
        // STATUS_CODE_ERROR
        tag(status, 3, VARINT);
        varint(status, 2);
    });
}

/// A `KeyValue` whose value is an `AnyValue` holding a string; `key` is
/// framed (`key!`, or `frame` for one known only at run time). Inlined, so
/// that copying a `key!` (of a length known at compile time) is a few moves.
#[inline(always)]
fn str_attribute(out: &mut Vec<u8>, field: u32, key: &[u8], value: &str) {
    let any = field_len(value.len());
    tag(out, field, LEN);
    varint(out, (key.len() + field_len(any) - 1) as u64);
    out.extend_from_slice(key);
    varint(out, any as u64);
    string(out, 1, value);
}

/// A `KeyValue` whose value is an `AnyValue` holding an integer.
#[inline(always)]
fn int_attribute(out: &mut Vec<u8>, field: u32, key: &[u8], value: i64) {
    let any = 1 + varint_len(value as u64);
    tag(out, field, LEN);
    varint(out, (key.len() + field_len(any) - 1) as u64);
    out.extend_from_slice(key);
    varint(out, any as u64);
    tag(out, 3, VARINT);
    varint(out, value as u64);
}

/// A key framed at run time: what `key!` does at compile time.
fn frame(key: &str) -> Vec<u8> {
    let mut framed = Vec::new();
    string(&mut framed, 1, key);
    tag(&mut framed, 2, LEN);
    framed
}

const fn frame_key<const N: usize>(key: &str) -> [u8; N] {
    let key = key.as_bytes();
    assert!(key.len() < 0x80 && N == key.len() + 3);
    let mut framed = [0; N];
    framed[0] = 1 << 3 | LEN as u8;
    framed[1] = key.len() as u8;
    let mut i = 0;
    while i < key.len() {
        framed[2 + i] = key[i];
        i += 1;
    }
    framed[N - 1] = 2 << 3 | LEN as u8;
    framed
}

const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

#[inline]
fn tag(out: &mut Vec<u8>, field: u32, wire_type: u32) {
    varint(out, u64::from(field << 3 | wire_type));
}

#[inline]
fn varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn varint_len(n: u64) -> usize {
    (64 - (n | 1).leading_zeros() as usize).div_ceil(7)
}

/// The size of a length-delimited field (of a field number below 16)
/// holding `len` bytes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn fixed64(out: &mut Vec<u8>, field: u32, n: u64) {
    tag(out, field, FIXED64);
    out.extend_from_slice(&n.to_le_bytes());
}

#[inline]
fn field_bytes(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    tag(out, field, LEN);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

#[inline]
fn string(out: &mut Vec<u8>, field: u32, s: &str) {
    field_bytes(out, field, s.as_bytes());
}

/// A nested message whose length is not known before it is written: the
/// length, which comes first, is given one byte and filled in when the
/// body is done; a body of 128 bytes or more is moved along to make room
/// for a longer one.
fn message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    tag(out, field, LEN);
    let at = out.len();
    out.push(0);
    body(out);
    let len = out.len() - at - 1;
    let extra = varint_len(len as u64) - 1;
    if extra > 0 {
        let end = out.len();
        out.resize(end + extra, 0);
        out.copy_within(at + 1..end, at + 1 + extra);
    }
    let mut n = len;
    for byte in &mut out[at..at + extra] {
        *byte = (n as u8) | 0x80;
        n >>= 7;
    }
    out[at + extra] = n as u8;
}

/// A request to `/users` that got a 502, after `tries` tries that each
/// got a 503.
#[cfg(test)]
pub fn example(tries: u8) -> Encoded {
    let trace_id = [1; 16];
    let mut bytes = Vec::new();
    for resend in 0..tries {
        client_span(
            &mut bytes,
            &ClientSpan {
                ids: Ids {
                    trace_id,
                    span_id: [2; 8],
                    parent: Some([3; 8]),
                },
                start_ns: 1,
                end_ns: 2,
                method: "GET",
                host: "127.0.0.1",
                url: Some("http://127.0.0.1:3001/"),
                addr: "127.0.0.1:3001".parse().unwrap(),
                resend,
                status: Some(503),
                failure: Some("status"),
            },
        );
    }
    server_span(
        &mut bytes,
        &ServerSpan {
            ids: Ids {
                trace_id,
                span_id: [3; 8],
                parent: None,
            },
            trace_state: None,
            start_ns: 1,
            end_ns: 3,
            facts: ServerFacts {
                method: "GET",
                route: Some(("/users", "users")),
                upstream: Some("users"),
                path: "/users/1",
                scheme: "http",
                host: Some("shop.example:8080"),
                port: Some(8080),
                client_ip: Some("10.0.0.7".parse().unwrap()),
                user_agent: Some("curl/8"),
                protocol: "1.1",
                status: 502,
                refusal: None,
                request_id: "r-1",
            },
        },
    );
    Encoded {
        bytes,
        spans: 1 + usize::from(tries),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_tags_and_nested_lengths_follow_the_wire_format() {
        let mut out = Vec::new();
        varint(&mut out, 300);
        assert_eq!(out, [0xac, 0x02]);
        let mut out = Vec::new();
        string(&mut out, 5, "GET");
        assert_eq!(out, [0x2a, 3, b'G', b'E', b'T']);
        // A body of 200 bytes: a two-byte length, the body after it.
        let mut out = Vec::new();
        message(&mut out, 1, |m| m.extend_from_slice(&[7; 200]));
        assert_eq!(&out[..3], [0x0a, 0xc8, 0x01]);
        assert_eq!(out.len(), 3 + 200);
        assert!(out[3..].iter().all(|&b| b == 7));
    }

    #[test]
    fn lengths_worked_out_first_match_lengths_patched_in() {
        assert_eq!(key!("url.path"), &frame("url.path")[..]);
        for n in [0u64, 1, 127, 128, 300, 16_383, 16_384, u64::MAX] {
            let mut out = Vec::new();
            varint(&mut out, n);
            assert_eq!(varint_len(n), out.len(), "{n}");
        }
        for len in [0, 5, 100, 130, 20_000] {
            let value = "v".repeat(len);
            let mut fast = Vec::new();
            str_attribute(&mut fast, 9, key!("url.path"), &value);
            let mut patched = Vec::new();
            message(&mut patched, 9, |kv| {
                string(kv, 1, "url.path");
                message(kv, 2, |any| string(any, 1, &value));
            });
            assert_eq!(fast, patched, "a value of {len} bytes");
        }
        for value in [0, 200, i64::MAX] {
            let mut fast = Vec::new();
            int_attribute(&mut fast, 9, key!("server.port"), value);
            let mut patched = Vec::new();
            message(&mut patched, 9, |kv| {
                string(kv, 1, "server.port");
                message(kv, 2, |any| {
                    tag(any, 3, VARINT);
                    varint(any, value as u64);
                });
            });
            assert_eq!(fast, patched, "{value}");
        }
    }

    /// How many bytes the varint at the start of `bytes` takes.
    fn len_of_len(bytes: &[u8]) -> usize {
        1 + bytes.iter().take_while(|&&b| b & 0x80 != 0).count()
    }

    #[test]
    fn a_request_encodes_its_spans_ids_names_times_and_attributes() {
        let preamble = Preamble::new(&[("service.name".into(), "api-gateway".into())]);
        let body = export_request(&preamble, &[example(2)]);
        // ResourceSpans, whose length is the rest of the body.
        let mut len = Vec::new();
        varint(&mut len, (body.len() - 1 - len_of_len(&body[1..])) as u64);
        assert_eq!(body[0], 0x0a);
        assert_eq!(&body[1..=len.len()], len);
        let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
        assert!(has(&[0x0a, 16, 1, 1, 1]), "trace id");
        // The server span's name, and the Host without its port.
        assert!(has(b"\x2a\x0aGET /users"));
        assert!(has(b"\x0a\x0eserver.address\x12\x0e\x0a\x0cshop.example"));
        assert!(has(b"\x0a\x06curl/8"));
        assert!(has(b"http.request.resend_count"));
        assert!(has(b"service.name"));
        // kind CLIENT, then the start time as fixed64.
        assert!(has(&[0x30, 3, 0x39, 1, 0, 0, 0, 0, 0, 0, 0]));
        // An error status with the status as its message.
        assert!(has(&[0x7a, 7, 0x12, 3, b'5', b'0', b'3', 0x18, 2]));
    }
}
