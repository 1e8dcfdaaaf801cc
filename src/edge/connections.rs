//! Client connections as they arrive, before any request on them is read:
//! each listener's are counted and capped at its `max_connections`, and an
//! HTTP/1 connection gets the `client` timeouts before its first read.
//!
//! Pingora accepts without a limit and hands each connection to the app;
//! `Edge` is that app, wrapped around the proxy. Past the cap a connection
//! is closed at once, counted, and logged (the log summarizes floods), so
//! one client cannot take every file descriptor. Pingora's own loop for an
//! HTTP/1 connection waits 60 s for each read of the first request's head;
//! `Edge` runs the same loop with `client.header_timeout` instead. HTTP/2
//! connections (ALPN h2, h2c) go to Pingora's loop unchanged.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::warn;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use pingora_prometheus::prometheus::{IntCounter, IntGauge};

use crate::config::ListenerSettings;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::state::State;

pub struct Edge {
    proxy: Arc<HttpProxy<Proxy>>,
    state: Arc<ArcSwap<State>>,
    gates: Vec<Gate>,
    /// Plain listeners also speak HTTP/2 with prior knowledge.
    h2c: bool,
}

/// One listener's connections.
struct Gate {
    port: u16,
    max: usize,
    open: AtomicUsize,
    gauges: Option<(IntGauge, IntCounter)>,
}

/// A connection counted on its gate, until it is dropped.
struct Held<'a>(&'a Gate);

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        if let Some((open, _)) = &self.0.gauges {
            open.dec();
        }
    }
}

impl Gate {
    fn enter(&self) -> Option<Held<'_>> {
        if self.open.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.open.fetch_sub(1, Ordering::Relaxed);
            if let Some((_, refused)) = &self.gauges {
                refused.inc();
            }
            return None;
        }
        if let Some((open, _)) = &self.gauges {
            open.inc();
        }
        Some(Held(self))
    }
}

impl Edge {
    pub fn new(
        proxy: HttpProxy<Proxy>,
        state: Arc<ArcSwap<State>>,
        listeners: &[ListenerSettings],
        h2c: bool,
        metrics: Option<&Metrics>,
    ) -> Self {
        let gates = listeners
            .iter()
            .map(|l| Gate {
                port: l.address.port(),
                max: l.max_connections,
                open: AtomicUsize::new(0),
                gauges: metrics.map(|m| m.listener(&l.address.to_string())),
            })
            .collect();
        Edge {
            proxy: Arc::new(proxy),
            state,
            gates,
            h2c,
        }
    }

    /// The listener a connection came in on, by its local port (listeners
    /// are told apart by port).
    fn gate_of(&self, stream: &Stream) -> Option<&Gate> {
        let digest = stream.get_socket_digest()?;
        let port = digest.local_addr()?.as_inet()?.port();
        self.gates.iter().find(|g| g.port == port)
    }

    /// HTTP/1.x for certain: TLS without h2 negotiated, or a plain
    /// listener without h2c (with it, Pingora peeks for the preface).
    fn is_http1(&self, stream: &Stream) -> bool {
        match stream.get_ssl_digest() {
            Some(_) => matches!(stream.selected_alpn_proto(), None | Some(ALPN::H1)),
            None => !self.h2c,
        }
    }

    /// Pingora's HTTP/1 connection loop, with the gateway's wait for the
    /// first request head; the proxy sets the other timeouts per request.
    async fn serve_http1(&self, stream: Stream, shutdown: &ShutdownWatch) {
        let mut session = ServerSession::new_http1(stream);
        session.set_read_timeout(Some(self.state.load().client.header_timeout));
        let mut reused = self.proxy.process_new_http(session, shutdown).await;
        while let Some((stream, settings)) = reused.map(|r| r.consume()) {
            let mut session = ServerSession::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
            reused = self.proxy.process_new_http(session, shutdown).await;
        }
    }
}

#[async_trait]
impl ServerApp for Edge {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let gate = self.gate_of(&stream);
        let _held = match gate.map(Gate::enter) {
            Some(None) => {
                let peer = peer_of(&stream);
                let gate = gate.map_or(0, |g| g.max);
                warn!(
                    "connection from {peer} refused: {gate} open on its listener (max_connections)"
                );
                return None;
            }
            held => held.flatten(),
        };
        if self.is_http1(&stream) {
            self.serve_http1(stream, shutdown).await;
            None
        } else {
            self.proxy.process_new(stream, shutdown).await
        }
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

fn peer_of(stream: &Stream) -> String {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())
        .map_or_else(|| "?".to_string(), |a: SocketAddr| a.to_string())
}
