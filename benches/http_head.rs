//! What reading an HTTP/1.1 head costs in Pingora, on both sides of the
//! proxy: a client's request head read by the server session, and an
//! upstream's response head read by the client session. Both parse with
//! `httparse`, which `patches/pingora-core` calls without first
//! initialising 256 header slots (see patches/README.md): build once with
//! the patch and once without it (remove the `[patch.crates-io]` lines in
//! Cargo.toml) to compare.
//!
//! Each iteration makes an in-memory duplex stream, writes the head into
//! one end and reads it from the other with a new session, as a connection
//! does for its first request; the stream and session set-up are the same
//! with and without the patch.
//!
//! Run with: `cargo bench --bench http_head`

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pingora::protocols::http::v1::client::HttpSession as UpstreamSession;
use pingora::protocols::http::v1::server::HttpSession as ClientSession;
use tokio::io::AsyncWriteExt;

/// A browser's request as it reaches the gateway.
const REQUEST: &[u8] = b"GET /users/me HTTP/1.1\r\n\
Host: shop.example\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: application/json\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Origin: https://shop.example\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1LTEifQ.c2lnbmF0dXJl\r\n\
Connection: keep-alive\r\n\
\r\n";

/// A service's JSON answer.
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Content-Type: application/json; charset=utf-8\r\n\
Content-Length: 21\r\n\
Date: Fri, 04 Dec 2026 12:00:00 GMT\r\n\
ETag: W/\"15-abc\"\r\n\
Connection: keep-alive\r\n\
Keep-Alive: timeout=5\r\n\
\r\n";

fn heads(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    c.bench_function("request head: read by the server session", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let (mut client, server) = tokio::io::duplex(4096);
                client.write_all(REQUEST).await.unwrap();
                let mut session = ClientSession::new(Box::new(server));
                session.read_request().await.unwrap().unwrap();
                black_box(session.req_header().headers.len());
            })
        })
    });
    c.bench_function("response head: read by the upstream session", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let (mut upstream, ours) = tokio::io::duplex(4096);
                upstream.write_all(RESPONSE).await.unwrap();
                let mut session = UpstreamSession::new(Box::new(ours));
                session.read_response().await.unwrap();
                black_box(session.resp_header().map(|h| h.headers.len()));
            })
        })
    });
}

criterion_group!(benches, heads);
criterion_main!(benches);
