//! The `server:` section: Pingora's own settings, validated, from which its
//! `ServerConf` is built in code so that the gateway's file is the only one
//! and every key of it is checked.

use std::time::Duration;

use pingora::server::configuration::ServerConf;

use super::raw::RawServer;
use crate::yaml::Invalid;

#[derive(Debug)]
pub struct ServerSettings {
    /// Worker threads, at least one (`0` in the file: one per CPU core).
    pub threads: usize,
    pub work_stealing: bool,
    pub pid_file: String,
    pub upgrade_sock: String,
    pub error_log: Option<String>,
    pub ca_file: Option<String>,
    /// The certificates of `ca_file`, read once: they verify `https://`
    /// JWKS URLs as Pingora verifies `https://` upstreams with the file.
    pub ca_roots: Vec<reqwest::Certificate>,
    pub grace_period: Duration,
    pub graceful_shutdown_timeout: Duration,
    pub upstream_keepalive_pool_size: usize,
    pub h2c: bool,
}

impl TryFrom<RawServer> for ServerSettings {
    type Error = Invalid;

    fn try_from(raw: RawServer) -> Result<Self, Invalid> {
        let ca_roots = match &raw.ca_file {
            Some(file) => read_ca_file(file).map_err(|reason| Invalid::at("ca_file", reason))?,
            None => Vec::new(),
        };
        let threads = match raw.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        Ok(ServerSettings {
            threads,
            work_stealing: raw.work_stealing,
            pid_file: raw.pid_file,
            upgrade_sock: raw.upgrade_sock,
            error_log: raw.error_log,
            ca_file: raw.ca_file,
            ca_roots,
            grace_period: raw.grace_period,
            graceful_shutdown_timeout: raw.graceful_shutdown_timeout,
            upstream_keepalive_pool_size: raw.upstream_keepalive_pool_size,
            h2c: raw.h2c,
        })
    }
}

fn read_ca_file(file: &str) -> Result<Vec<reqwest::Certificate>, String> {
    let pem = std::fs::read(file).map_err(|e| format!("cannot read {file}: {e}"))?;
    let roots = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| format!("{file}: not a PEM certificate bundle: {e}"))?;
    if roots.is_empty() {
        return Err(format!("{file} holds no PEM certificate"));
    }
    Ok(roots)
}

impl ServerSettings {
    pub fn pingora_conf(&self) -> ServerConf {
        ServerConf {
            threads: self.threads,
            work_stealing: self.work_stealing,
            pid_file: self.pid_file.clone(),
            upgrade_sock: self.upgrade_sock.clone(),
            error_log: self.error_log.clone(),
            ca_file: self.ca_file.clone(),
            grace_period_seconds: Some(self.grace_period.as_secs()),
            graceful_shutdown_timeout_seconds: Some(self.graceful_shutdown_timeout.as_secs()),
            upstream_keepalive_pool_size: self.upstream_keepalive_pool_size,
            // Retries are decided per request by the route's policy; this is
            // only Pingora's ceiling on tries.
            max_retries: usize::from(super::routes::MAX_ATTEMPTS),
            ..ServerConf::default()
        }
    }
}
