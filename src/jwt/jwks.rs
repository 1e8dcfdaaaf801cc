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

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::Algorithm;
use log::{info, warn};
use tokio::sync::Mutex;

use super::keys::{parse_jwks, VerifyingKey};

/// A JWKS document larger than this is refused rather than parsed.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// One `jwks_url` key source, validated.
#[derive(Debug, Clone)]
pub struct JwksSource {
    /// Where the config names it (`jwt.keys[2].jwks_url`), for errors.
    pub key: String,
    pub url: String,
    pub algorithms: Vec<Algorithm>,
    pub fetch: JwksFetch,
    /// From `server.ca_file`: as for `https://` upstreams, these replace
    /// the system roots when verifying the identity provider; empty: the
    /// built-in web roots.
    pub roots: Vec<reqwest::Certificate>,
}

impl JwksSource {
    /// Whether `other` fetches the same keys the same way, so a reload can
    /// keep the set already fetched. (The roots come from `server.ca_file`,
    /// which a reload does not change.)
    pub fn same_as(&self, other: &JwksSource) -> bool {
        self.url == other.url && self.algorithms == other.algorithms && self.fetch == other.fetch
    }
}

/// How a JWKS URL is kept fresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksFetch {
    pub refresh_interval: Duration,
    /// Least time between fetches caused by an unknown `kid`, and between
    /// retries while the URL fails.
    pub refetch_cooldown: Duration,
    pub timeout: Duration,
}

pub struct RemoteJwks {
    settings: JwksSource,
    keys: ArcSwap<Vec<VerifyingKey>>,
    /// When the last fetch started; held across the fetch so concurrent
    /// callers wait for it instead of starting their own.
    last_fetch: Mutex<Option<Instant>>,
}

impl RemoteJwks {
    pub fn new(settings: JwksSource) -> Self {
        RemoteJwks {
            settings,
            keys: ArcSwap::from_pointee(Vec::new()),
            last_fetch: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> &JwksSource {
        &self.settings
    }

    pub fn keys(&self) -> arc_swap::Guard<Arc<Vec<VerifyingKey>>> {
        self.keys.load()
    }

    /// Fetches now unless a fetch started less than `refetch_cooldown` ago;
    /// a caller that finds a fetch in flight waits for it.
    pub async fn refetch(&self) {
        let mut last = self.last_fetch.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.settings.fetch.refetch_cooldown) {
            return;
        }
        *last = Some(Instant::now());
        let _ = self.fetch_and_swap().await;
    }

    /// A scheduled fetch, or the first one: the cooldown does not apply.
    /// `Err` says why it failed; the last good set is kept.
    pub async fn refresh(&self) -> Result<(), String> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_swap().await
    }

    async fn fetch_and_swap(&self) -> Result<(), String> {
        match self.fetch().await {
            Ok((keys, skipped)) => {
                for reason in skipped {
                    warn!("JWKS {}: skipped {reason}", self.settings.url);
                }
                info!("JWKS {}: {} key(s) loaded", self.settings.url, keys.len());
                self.keys.store(Arc::new(keys));
                Ok(())
            }
            Err(e) => {
                let kept = self.keys.load().len();
                warn!(
                    "JWKS {}: fetch failed: {e}; keeping the last {kept} key(s), retrying in {:?}",
                    self.settings.url, self.settings.fetch.refetch_cooldown
                );
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<(Vec<VerifyingKey>, Vec<String>), String> {
        // No idle pool: a connection kept from the startup runtime would be
        // dead on the server's runtime, and fetches are minutes apart.
        let mut builder = reqwest::Client::builder()
            .timeout(self.settings.fetch.timeout)
            .pool_max_idle_per_host(0);
        if !self.settings.roots.is_empty() {
            builder = builder.tls_built_in_root_certs(false);
            for root in &self.settings.roots {
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
}

/// Refreshes `source` on its interval, and retries while it fails on its
/// cooldown, for as long as anything still uses it.
pub async fn keep_fresh(source: Weak<RemoteJwks>) {
    loop {
        let Some(delay) = source.upgrade().map(|s| next_delay(&s)) else {
            return;
        };
        tokio::time::sleep(delay).await;
        let Some(source) = source.upgrade() else {
            return;
        };
        // A failure is logged, and retried on the cooldown.
        let _ = source.refresh().await;
    }
}

/// Refresh interval while the set is good; the cooldown while it is empty.
fn next_delay(source: &RemoteJwks) -> Duration {
    if source.keys.load().is_empty() {
        source.settings.fetch.refetch_cooldown
    } else {
        source.settings.fetch.refresh_interval
    }
}
