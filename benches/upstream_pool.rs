//! What keeping an upstream connection alive costs a request in Pingora's
//! connector: the stream is released to the idle pool after a response and
//! taken back for the next request to the same peer. This is the piece
//! `patches/pingora-core` changes (see patches/README.md): build once with
//! the patch and once without it (remove the `[patch.crates-io]` lines in
//! Cargo.toml) to compare.
//!
//! A real loopback TCP connection on a current-thread runtime, as each of
//! the gateway's worker threads runs; the server side never writes, so the
//! stream stays reusable.
//!
//! Run with: `cargo bench --bench upstream_pool`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pingora::connectors::TransportConnector;
use pingora::protocols::l4::stream::Stream;
use pingora::upstreams::peer::{HttpPeer, Peer};
use tokio::net::{TcpListener, TcpStream};

fn release_and_take(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let connector = TransportConnector::new(None);
    let (peer, mut stream, _server) = runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let peer = HttpPeer::new(addr, false, String::new());
        let stream: pingora::protocols::Stream = Box::new(Stream::from(client.unwrap()));
        (peer, Some(stream), accepted.unwrap().0)
    });
    let key = peer.reuse_hash();
    c.bench_function("upstream pool: release a stream, take it back", |b| {
        b.iter(|| {
            runtime.block_on(async {
                let released = stream.take().unwrap();
                connector.release_stream(released, key, Some(Duration::from_secs(60)));
                stream = connector.reused_stream(&peer).await;
                assert!(stream.is_some(), "the stream was not reused");
            })
        })
    });
}

criterion_group!(benches, release_and_take);
criterion_main!(benches);
