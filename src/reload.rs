//! Live reload in the running process. SIGHUP (or `api-gateway -s reload`)
//! reads the config file again, with `.env` and the environment, builds a
//! new state beside the serving one, resolves and fetches what it needs, and
//! only then swaps it in whole: requests in flight finish on the old state,
//! new ones see the new one, and a file that fails anywhere is refused with
//! the old state untouched. SIGUSR1 (or `-s reopen`) reopens the access log.
//!
//! What the new state can take over from the old one it does (upstreams with
//! their health and pooled connections, budgets of unchanged policies,
//! fetched JWKS, verified tokens while the keys are the same); see
//! `State::build`. What only a restart can change (listener addresses,
//! threads, ...) is reported and left as it runs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::{error, info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};

use crate::access_log::AccessLog;
use crate::background::Spawner;
use crate::certs::{CertStore, Renewal};
use crate::config::{self, Config, ConfigError, ListenerSettings, ServerSettings};
use crate::control::Status;
use crate::metrics::Metrics;
use crate::state::State;
use crate::yaml::Invalid;

pub struct Reloader {
    pub conf_file: PathBuf,
    pub state: Arc<ArcSwap<State>>,
    pub access_log: Arc<AccessLog>,
    pub spawner: Arc<Spawner>,
    pub metrics: Option<Arc<Metrics>>,
    /// What the process was started with and a reload cannot change.
    pub fixed: Fixed,
    /// The certificate of each TLS listener, by its address.
    pub certs: Vec<(SocketAddr, Arc<CertStore>)>,
    pub status_file: PathBuf,
    pub generation: AtomicU64,
}

/// The settings only a restart (or an upgrade, `-u`) applies.
pub struct Fixed {
    pub server: ServerSettings,
    pub listeners: Vec<ListenerSettings>,
    pub admin: Option<SocketAddr>,
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (Ok(mut hangup), Ok(mut user1)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::user_defined1()),
        ) else {
            error!("reload: cannot listen for SIGHUP and SIGUSR1; reloads are off");
            return;
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => self.reload().await,
                _ = user1.recv() => self.reopen_access_log(),
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl Reloader {
    async fn reload(&self) {
        let started = Instant::now();
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let file = self.conf_file.display();
        let status = match self.try_reload().await {
            Ok(sha256) => {
                let ms = started.elapsed().as_secs_f64() * 1000.0;
                let message = format!("reloaded {file} (sha256 {sha256}) in {ms:.1} ms");
                info!("{message}");
                if let Some(metrics) = &self.metrics {
                    metrics.config_loaded(&sha256, true);
                }
                Status {
                    generation,
                    ok: true,
                    message,
                }
            }
            Err(e) => {
                error!("reload refused, the running config keeps serving: {e}");
                if let Some(metrics) = &self.metrics {
                    metrics.reload_refused();
                }
                Status {
                    generation,
                    ok: false,
                    message: e.to_string(),
                }
            }
        };
        if let Err(e) = status.write(&self.status_file) {
            warn!("reload: cannot write {}: {e}", self.status_file.display());
        }
    }

    /// Everything that can fail, before anything changes; then the swap,
    /// which cannot. Returns the new file's SHA-256.
    async fn try_reload(&self) -> Result<String, ConfigError> {
        let config = config::load(&self.conf_file)?;
        let in_file = |problem| ConfigError {
            file: self.conf_file.clone(),
            problem,
        };
        for warning in &config.warnings {
            warn!("{}: {warning}", self.conf_file.display());
        }
        for change in self.fixed.changes(&config) {
            warn!(
                "{}: {change}: only a restart or an upgrade (-u) applies this; kept as it runs",
                self.conf_file.display()
            );
        }
        let certs = self.renewed_certs(&config).map_err(in_file)?;
        let current = self.state.load_full();
        let (state, fresh) =
            State::build(config.routing, self.metrics.clone(), Some(&current)).map_err(in_file)?;
        let tasks = fresh.prepare(true).await.map_err(in_file)?;
        // Reopened on every reload, so a reload also follows a rotated file.
        self.access_log
            .reopen(&config.access_log)
            .map_err(|e| in_file(Invalid::at("access_log.output", e.to_string())))?;

        state.commit();
        self.state.store(Arc::new(state));
        for renewal in certs {
            renewal.apply();
        }
        self.spawner.spawn(tasks);
        Ok(config.sha256)
    }

    /// The certificates of the running TLS listeners, read again from the
    /// files the new config names for them.
    fn renewed_certs(&self, config: &Config) -> Result<Vec<Renewal>, Invalid> {
        let mut renewed = Vec::new();
        for (address, store) in &self.certs {
            let found =
                config.listeners.iter().enumerate().find_map(|(i, l)| {
                    Some((i, l.tls.as_ref()?)).filter(|_| l.address == *address)
                });
            // A listener that lost its TLS or moved is a change only a
            // restart applies; it keeps its certificate.
            let Some((i, files)) = found else { continue };
            let renewal = store
                .renewal(files)
                .map_err(|reason| Invalid::at(format!("listeners[{i}].tls"), reason))?;
            renewed.push(renewal);
        }
        Ok(renewed)
    }

    fn reopen_access_log(&self) {
        match self.access_log.reopen(&self.access_log.settings()) {
            Ok(()) => info!("access log reopened"),
            Err(e) => error!("access log: cannot reopen, still writing where it was: {e}"),
        }
    }
}

impl Fixed {
    /// What `config` changes of these settings, as key paths with the old
    /// and the new value.
    fn changes(&self, config: &Config) -> Vec<String> {
        let (old, new) = (&self.server, &config.server);
        let mut changes = Vec::new();
        let mut differs = |key: &str, old: String, new: String| {
            if old != new {
                changes.push(format!("{key} changed from {old} to {new}"));
            }
        };
        differs(
            "server.threads",
            old.threads.to_string(),
            new.threads.to_string(),
        );
        differs(
            "server.work_stealing",
            old.work_stealing.to_string(),
            new.work_stealing.to_string(),
        );
        differs(
            "server.pid_file",
            old.pid_file.clone(),
            new.pid_file.clone(),
        );
        differs(
            "server.upgrade_sock",
            old.upgrade_sock.clone(),
            new.upgrade_sock.clone(),
        );
        differs(
            "server.error_log",
            format!("{:?}", old.error_log),
            format!("{:?}", new.error_log),
        );
        differs(
            "server.ca_file",
            format!("{:?}", old.ca_file),
            format!("{:?}", new.ca_file),
        );
        differs(
            "server.grace_period",
            format!("{:?}", old.grace_period),
            format!("{:?}", new.grace_period),
        );
        differs(
            "server.graceful_shutdown_timeout",
            format!("{:?}", old.graceful_shutdown_timeout),
            format!("{:?}", new.graceful_shutdown_timeout),
        );
        differs(
            "server.upstream_keepalive_pool_size",
            old.upstream_keepalive_pool_size.to_string(),
            new.upstream_keepalive_pool_size.to_string(),
        );
        differs("server.h2c", old.h2c.to_string(), new.h2c.to_string());
        // Certificate files reload; the rest of a listener does not.
        let shape = |l: &ListenerSettings| {
            format!(
                "{} (tls: {}, http2: {}, redirect: {:?})",
                l.address,
                l.tls.is_some(),
                l.http2,
                l.redirect_to
            )
        };
        let shapes = |ls: &[ListenerSettings]| ls.iter().map(shape).collect::<Vec<_>>().join(", ");
        differs(
            "listeners",
            shapes(&self.listeners),
            shapes(&config.listeners),
        );
        differs(
            "admin.address",
            format!("{:?}", self.admin),
            format!("{:?}", config.admin),
        );
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::parsed;

    fn config(listener: &str, threads: u32) -> Config {
        parsed(&format!(
            "server: {{threads: {threads}}}
listeners: [{{address: '{listener}'}}]
upstreams: {{users: {{instances: ['http://127.0.0.1:3001']}}}}
routes: [{{prefix: /users, upstream: users}}]
"
        ))
    }

    #[test]
    fn changes_only_a_restart_applies_are_named() {
        let running = config("127.0.0.1:3000", 2);
        let fixed = Fixed {
            server: running.server,
            listeners: running.listeners,
            admin: running.admin,
        };
        assert!(fixed.changes(&config("127.0.0.1:3000", 2)).is_empty());
        let changes = fixed.changes(&config("127.0.0.1:4000", 4));
        assert_eq!(changes.len(), 2, "{changes:?}");
        assert_eq!(changes[0], "server.threads changed from 2 to 4");
        assert!(
            changes[1].starts_with("listeners changed from 127.0.0.1:3000"),
            "{changes:?}"
        );
    }
}
