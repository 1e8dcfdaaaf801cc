//! The gateway assembled from a validated config: the `State` requests
//! are served from, and every service (the proxy on its listeners, the
//! access log, metrics, background work, the reloader) added to Pingora's
//! `Server`.
//!
//! The proxy reads the state through one `ArcSwap`, and each request keeps
//! the state it started on until it is done, so a new state can replace the
//! old one whole.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use log::{info, warn};
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::HttpProxy;
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use pingora_prometheus::prometheus_http_service;

use crate::access_log::AccessLog;
use crate::background::{Spawner, Task};
use crate::certs::CertStore;
use crate::config::{Config, ListenerSettings};
use crate::control::{self, Status};
use crate::drain::{Draining, PhaseWatch};
use crate::edge::connections::Edge;
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::reload::{Fixed, Reloader};
use crate::state::State;
use crate::yaml::Invalid;

/// The running gateway, as `main` keeps it.
pub struct Gateway {
    access_log: Arc<AccessLog>,
}

impl Gateway {
    /// Builds everything `config` (read from `conf_file`) describes,
    /// resolves and fetches what the first request needs, and adds every
    /// service to `server`, the reloader among them. The error names the
    /// key path of what could not be set up.
    pub fn build(
        config: Config,
        conf_file: &Path,
        server: &mut Server,
    ) -> Result<Gateway, Invalid> {
        let access_log = AccessLog::open(&config.access_log)
            .map(Arc::new)
            .map_err(|e| Invalid::at("access_log.output", e.to_string()))?;
        server.add_service(background_service("access log", access_log.writer()));
        let background = background_service("background", Spawner::default());
        let spawner = background.task();
        server.add_service(background);

        let metrics = match config.admin {
            Some(address) => {
                let metrics = Arc::new(Metrics::register().map_err(|e| Invalid::at("admin", e))?);
                let mut exporter = prometheus_http_service();
                exporter.add_tcp(&address.to_string());
                server.add_service(exporter);
                info!("metrics on http://{address}/metrics");
                Some(metrics)
            }
            None => None,
        };
        if let Some(metrics) = &metrics {
            metrics.config_loaded(&config.sha256, false);
        }

        let (state, fresh) = State::build(config.routing, metrics.clone(), None)?;
        // Pingora's runtimes do not exist yet, hence a short-lived one.
        let tasks = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Invalid::here(format!("a runtime for startup: {e}")))?
            .block_on(fresh.prepare(false))?;
        spawner.spawn(tasks);
        let state = Arc::new(ArcSwap::from_pointee(state));
        if let Some(metrics) = &metrics {
            let gauges = health_gauges(metrics.clone(), Arc::downgrade(&state));
            spawner.spawn([Box::pin(gauges) as Task]);
        }

        let draining = Draining::default();
        let phase_watch = PhaseWatch::new(
            server.watch_execution_phase(),
            draining.clone(),
            access_log.clone(),
        );
        server.add_service(background_service("phase watch", phase_watch));

        let proxy = Proxy::new(
            state.clone(),
            &config.listeners,
            metrics.clone(),
            access_log.clone(),
            draining,
        );
        let mut proxy = HttpProxy::new(proxy, server.configuration.clone());
        proxy.handle_init_modules();
        if config.server.h2c {
            let mut options = HttpServerOptions::default();
            options.h2c = true;
            proxy.server_options = Some(options);
        }
        let edge = Edge::new(
            proxy,
            state.clone(),
            &config.listeners,
            config.server.h2c,
            metrics.as_deref(),
        );
        let mut service = Service::new("api-gateway".into(), edge);
        let certs = listen(&mut service, &config.listeners)?;
        server.add_service(service);

        let status_file = control::status_path(&config.server.pid_file);
        let started = Status {
            generation: 0,
            ok: true,
            message: format!(
                "started with {} (sha256 {})",
                conf_file.display(),
                config.sha256
            ),
        };
        if let Err(e) = started.write(&status_file) {
            warn!(
                "cannot write {}: {e}; `-s reload` will not see outcomes",
                status_file.display()
            );
        }
        let reloader = Reloader {
            conf_file: conf_file.to_path_buf(),
            state,
            access_log: access_log.clone(),
            spawner,
            metrics,
            fixed: Fixed {
                server: config.server,
                listeners: config.listeners,
                admin: config.admin,
            },
            certs,
            status_file,
            generation: AtomicU64::new(0),
        };
        server.add_service(background_service("reloader", reloader));
        Ok(Gateway { access_log })
    }

    /// Writes out what the access log still holds; for the way out.
    pub fn flush(&self) {
        self.access_log.flush();
    }
}

/// Binds the configured listeners: plain, or TLS with HTTP/2 offered by
/// ALPN. Returns each TLS listener's certificate store, for reloads to
/// renew.
fn listen(
    service: &mut Service<Edge>,
    listeners: &[ListenerSettings],
) -> Result<Vec<(SocketAddr, Arc<CertStore>)>, Invalid> {
    let mut certs = Vec::new();
    for (i, listener) in listeners.iter().enumerate() {
        let address = listener.address.to_string();
        match &listener.tls {
            Some(files) => {
                let at = || format!("listeners[{i}].tls");
                let store = Arc::new(CertStore::load(files).map_err(|e| Invalid::at(at(), e))?);
                let mut settings = TlsSettings::intermediate(&files.cert_file, &files.key_file)
                    .map_err(|e| Invalid::at(at(), e.to_string()))?;
                settings.set_cert_resolver(store.clone());
                if listener.http2 {
                    settings.enable_h2();
                }
                service.add_tls_with_settings(&address, None, settings);
                certs.push((listener.address, store));
                info!("listening on https://{address}");
            }
            None => {
                service.add_tcp(&address);
                info!("listening on http://{address}");
            }
        }
    }
    Ok(certs)
}

/// Copies each upstream's and instance's state (health, ejection, requests
/// in flight) into its gauges once a second; after a reload, instances that
/// are gone lose their gauges.
async fn health_gauges(metrics: Arc<Metrics>, state: Weak<ArcSwap<State>>) {
    // A weak pointer keeps its allocation, so no later state can take its
    // address and pass for it.
    let mut last: Weak<State> = Weak::new();
    loop {
        let Some(state) = state.upgrade() else { return };
        let current = state.load_full();
        if !Weak::ptr_eq(&last, &Arc::downgrade(&current)) {
            metrics.forget_upstreams();
            last = Arc::downgrade(&current);
        }
        for upstream in current.upstreams() {
            let (in_flight, instances) = upstream.report();
            metrics.record_upstream(&upstream.name, in_flight, &instances);
        }
        drop((current, state));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
