//! Budgets in Redis, shared by every gateway instance: each decision is one
//! atomic script (GCRA on the Redis server's own clock, so gateways with
//! skewed clocks still agree) over one multiplexed connection, which
//! pipelines concurrent requests.
//!
//! Redis trouble never hangs a request: each decision waits at most
//! `timeout`, a request without a connection is decided at once by
//! `on_failure`, and a background service reconnects by itself. Failures
//! are counted and logged once per interval, not once per request.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use log::{info, warn};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, Script};
use tokio::sync::Notify;

use super::config::{FailureMode, RedisSettings};
use super::{Decision, Gcra};

/// GCRA in microseconds; see `Gcra::decide`, which this mirrors.
const GCRA_SCRIPT: &str = r"
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local ahead = tat - now
if ahead > tolerance then
  return {0, 0, ahead, ahead - tolerance}
end
local new_tat = tat + interval
local used = new_tat - now
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(used / 1000))
return {1, math.floor((tolerance + interval - used) / interval), used, 0}
";

const KEY_PREFIX: &str = "api-gateway:ratelimit:";
const LOG_INTERVAL: Duration = Duration::from_secs(10);
const RECONNECT_INTERVAL: Duration = Duration::from_secs(1);

pub struct RedisStore {
    settings: RedisSettings,
    client: Client,
    script: Script,
    conn: ArcSwapOption<MultiplexedConnection>,
    /// Decisions Redis could not make since the last log line.
    failures: AtomicU64,
    broken: Notify,
}

impl RedisStore {
    /// Fails only on a URL that config validation would have refused.
    pub fn new(settings: RedisSettings) -> Result<Self, String> {
        let client = Client::open(settings.url.as_str()).map_err(|e| e.to_string())?;
        Ok(RedisStore {
            settings,
            client,
            script: Script::new(GCRA_SCRIPT),
            conn: ArcSwapOption::empty(),
            failures: AtomicU64::new(0),
            broken: Notify::new(),
        })
    }

    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    pub fn on_failure(&self) -> FailureMode {
        self.settings.on_failure
    }

    /// `None` when Redis could not decide in time.
    pub async fn decide(&self, key: &str, gcra: &Gcra) -> Option<Decision> {
        let Some(conn) = self.conn.load_full() else {
            self.failures.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let mut conn = (*conn).clone();
        let mut invocation = self.script.key(format!("{KEY_PREFIX}{key}"));
        invocation
            .arg(gcra.interval.div_ceil(1000))
            .arg(gcra.tolerance / 1000);
        let call = invocation.invoke_async::<(u8, u64, u64, u64)>(&mut conn);
        match tokio::time::timeout(self.settings.timeout, call).await {
            Ok(Ok((allowed, remaining, reset_us, retry_us))) => Some(Decision {
                allowed: allowed == 1,
                remaining,
                reset: Duration::from_micros(reset_us),
                retry_after: Duration::from_micros(retry_us),
            }),
            Ok(Err(_)) | Err(_) => {
                // Whatever broke, a fresh connection is the way back.
                self.conn.store(None);
                self.broken.notify_one();
                self.failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    async fn connect(&self) -> Result<(), String> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.timeout.max(Duration::from_millis(500))))
            .set_response_timeout(Some(self.settings.timeout));
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| e.to_string())?;
        self.conn.store(Some(Arc::new(conn)));
        Ok(())
    }
}

/// Keeps the Redis connection of `store` up and reports its failures once
/// per interval, for as long as anything still uses the store.
pub async fn keep_connected(store: Weak<RedisStore>) {
    let mut last_log = Instant::now();
    let mut down_since: Option<Instant> = None;
    loop {
        let Some(store) = store.upgrade() else {
            return;
        };
        if store.conn.load().is_none() {
            match store.connect().await {
                Ok(()) => {
                    info!("rate limit: connected to Redis at {}", store.settings.url);
                    down_since = None;
                }
                Err(e) if down_since.is_none() => {
                    warn!("rate limit: Redis at {} unreachable: {e}; retrying every {RECONNECT_INTERVAL:?}", store.settings.url);
                    down_since = Some(Instant::now());
                }
                Err(_) => {}
            }
        }
        if last_log.elapsed() >= LOG_INTERVAL {
            let failed = store.failures.swap(0, Ordering::Relaxed);
            if failed > 0 {
                let verdict = match store.settings.on_failure {
                    FailureMode::FailOpen => "let through (fail_open)",
                    FailureMode::FailClosed => "refused (fail_closed)",
                };
                warn!("rate limit: Redis could not decide {failed} request(s) in the last {LOG_INTERVAL:?}; they were {verdict}");
            }
            last_log = Instant::now();
        }
        tokio::select! {
            _ = tokio::time::sleep(RECONNECT_INTERVAL) => {}
            _ = store.broken.notified() => {}
        }
    }
}
