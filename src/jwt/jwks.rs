//! A JWKS fetched from the identity provider and kept fresh.
//!
//! The key set is swapped atomically, so requests read it without a lock.
//! It is fetched once before the gateway listens, then again every
//! `refresh_interval` in the background, and early when a token names a
//! `kid` nobody knows (key rotation), but at most once per `refetch_cooldown`
//! however many such tokens arrive: a flood of random kids cannot turn into
//! a flood of fetches. A failed fetch keeps the last good set.
//!
//! Startup rule: if the first fetch fails the gateway starts anyway, logs
//! it, and retries every `refetch_cooldown`; until a fetch succeeds, tokens
//! that need this key set are refused as invalid.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::{info, warn};
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::sync::Mutex;

use super::keys::{parse_jwks, VerifyingKey};
use crate::config::JwksUrlSettings;

/// A JWKS document larger than this is refused rather than parsed.
const MAX_JWKS_BYTES: usize = 1 << 20;

pub struct RemoteJwks {
    settings: JwksUrlSettings,
    /// From `ca_file`, read once; empty: the built-in web roots.
    roots: Vec<reqwest::Certificate>,
    keys: ArcSwap<Vec<VerifyingKey>>,
    /// When the last fetch started; held across the fetch so concurrent
    /// callers wait for it instead of starting their own.
    last_fetch: Mutex<Option<Instant>>,
}

impl RemoteJwks {
    /// Fails when `ca_file` cannot be read as PEM certificates.
    pub fn new(settings: JwksUrlSettings) -> Result<Self, String> {
        let roots = match &settings.ca_file {
            Some(file) => std::fs::read(file)
                .map_err(|e| e.to_string())
                .and_then(|pem| {
                    reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())
                })
                .map_err(|e| format!("server.ca_file: {file}: {e}"))?,
            None => Vec::new(),
        };
        Ok(RemoteJwks {
            settings,
            roots,
            keys: ArcSwap::from_pointee(Vec::new()),
            last_fetch: Mutex::new(None),
        })
    }

    pub fn keys(&self) -> arc_swap::Guard<Arc<Vec<VerifyingKey>>> {
        self.keys.load()
    }

    /// Fetches now unless a fetch started less than `refetch_cooldown` ago;
    /// a caller that finds a fetch in flight waits for it. Returns whether
    /// this call fetched successfully.
    pub async fn refetch(&self) -> bool {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.settings.fetch.refetch_cooldown) {
            return false;
        }
        *last = Some(Instant::now());
        self.fetch_and_swap().await
    }

    /// A scheduled fetch: the cooldown does not apply.
    async fn refresh(&self) -> bool {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_swap().await
    }

    async fn fetch_and_swap(&self) -> bool {
        match self.fetch().await {
            Ok((keys, skipped)) => {
                for reason in skipped {
                    warn!("JWKS {}: skipped {reason}", self.settings.url);
                }
                info!("JWKS {}: {} key(s) loaded", self.settings.url, keys.len());
                self.keys.store(Arc::new(keys));
                true
            }
            Err(e) => {
                let kept = self.keys.load().len();
                warn!(
                    "JWKS {}: fetch failed: {e}; keeping the last {kept} key(s), retrying in {:?}",
                    self.settings.url, self.settings.fetch.refetch_cooldown
                );
                false
            }
        }
    }

    async fn fetch(&self) -> Result<(Vec<VerifyingKey>, Vec<String>), String> {
        // No idle pool: a connection kept from the startup runtime would be
        // dead on the server's runtime, and fetches are minutes apart.
        let mut builder = reqwest::Client::builder()
            .timeout(self.settings.fetch.timeout)
            .pool_max_idle_per_host(0);
        if !self.roots.is_empty() {
            builder = builder.tls_built_in_root_certs(false);
            for root in &self.roots {
                builder = builder.add_root_certificate(root.clone());
            }
        }
        let client = builder.build().map_err(|e| e.to_string())?;
        let mut response = client
            .get(&self.settings.url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
            }
        }
        let text = String::from_utf8(body).map_err(|_| "not UTF-8".to_string())?;
        let (keys, skipped) = parse_jwks(&text, &self.settings.algorithms)?;
        if keys.is_empty() {
            return Err(format!("no usable key ({})", skipped.join("; ")));
        }
        Ok((keys, skipped))
    }

    /// The first fetch, before the gateway listens.
    pub async fn initial_fetch(&self) {
        if !self.refresh().await {
            warn!(
                "JWKS {}: unreachable at startup; starting anyway, tokens for its keys are refused until a fetch succeeds",
                self.settings.url
            );
        }
    }
}

/// Refreshes every JWKS on its interval, and retries failed ones on their
/// cooldown.
pub struct JwksRefresher {
    pub sources: Vec<Arc<RemoteJwks>>,
}

#[async_trait]
impl BackgroundService for JwksRefresher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut due: Vec<Instant> = self
            .sources
            .iter()
            .map(|s| Instant::now() + next_delay(s))
            .collect();
        loop {
            let next = due.iter().min().copied().unwrap_or_else(Instant::now);
            tokio::select! {
                _ = tokio::time::sleep_until(next.into()) => {}
                _ = shutdown.changed() => return,
            }
            for (source, due) in self.sources.iter().zip(due.iter_mut()) {
                if *due <= Instant::now() {
                    source.refresh().await;
                    *due = Instant::now() + next_delay(source);
                }
            }
        }
    }
}

/// Refresh interval while the set is good; the cooldown while it is empty.
fn next_delay(source: &RemoteJwks) -> std::time::Duration {
    if source.keys.load().is_empty() {
        source.settings.fetch.refetch_cooldown
    } else {
        source.settings.fetch.refresh_interval
    }
}
