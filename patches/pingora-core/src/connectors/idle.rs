// Not part of the published crate: added by api-gateway's patch to
// pingora-core 0.9.1 (see patches/README.md), under the crate's licence,
// the Apache License, Version 2.0 (http://www.apache.org/licenses/LICENSE-2.0).

//! Idle upstream streams kept for reuse (api-gateway's patch).
//!
//! Upstream 0.9.1 puts each released stream into a `pingora_pool::ConnectionPool`
//! and spawns a task per release that watches it (a read, a timer, an eviction
//! notification and a reuse notification), and the next request that takes the
//! stream waits on a mutex until that task has run and let go. Under keep-alive
//! that is a spawn, a timer and an extra wake-up per request.
//!
//! Here a released stream goes into a bounded list. Taking one checks it there
//! and then: past its idle timeout it is dropped, and the caller's
//! `test_reusable_stream` drops one the server has closed. A sweep once a second
//! closes what expired or was closed meanwhile, so an idle stream outlives its
//! timeout, or the server's close, by at most a second. The newest stream of a
//! key is taken first; the oldest of all is evicted when the list is full.

use super::{test_reusable_stream, PoolCallback};
use crate::protocols::Stream;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

const SWEEP_EVERY: Duration = Duration::from_secs(1);

struct Idle {
    key: u64,
    stream: Stream,
    since: Instant,
    deadline: Option<Instant>,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        self.deadline.is_some_and(|d| d <= now)
    }
}

pub(crate) struct IdlePool {
    streams: Mutex<VecDeque<Idle>>,
    size: usize,
    /// Told how long an evicted stream idled, as `ConnectorOptions` documents.
    evicted: Option<PoolCallback>,
    sweeping: AtomicBool,
}

impl IdlePool {
    pub(crate) fn new(size: usize, evicted: Option<PoolCallback>) -> Self {
        IdlePool {
            streams: Mutex::new(VecDeque::new()),
            size,
            evicted,
            sweeping: AtomicBool::new(false),
        }
    }

    /// Keeps `stream` for a later `take(key)`, for at most `idle_timeout`.
    pub(crate) fn put(self: &Arc<Self>, key: u64, stream: Stream, idle_timeout: Option<Duration>) {
        if self.size == 0 {
            return;
        }
        let since = Instant::now();
        let idle = Idle {
            key,
            stream,
            since,
            deadline: idle_timeout.and_then(|t| since.checked_add(t)),
        };
        let evicted = {
            let mut streams = self.streams.lock();
            let evicted = (streams.len() >= self.size)
                .then(|| streams.pop_front())
                .flatten();
            streams.push_back(idle);
            evicted
        };
        // Closed outside the lock.
        if let (Some(evicted), Some(callback)) = (evicted, &self.evicted) {
            callback(evicted.since.elapsed());
        }
        self.start_sweeping();
    }

    /// The newest stream kept under `key` that has not expired.
    pub(crate) fn take(&self, key: u64) -> Option<Stream> {
        loop {
            let idle = {
                let mut streams = self.streams.lock();
                let at = streams.iter().rposition(|s| s.key == key)?;
                streams.remove(at)?
            };
            if !idle.expired(Instant::now()) {
                return Some(idle.stream);
            }
        }
    }

    fn start_sweeping(self: &Arc<Self>) {
        if self.sweeping.swap(true, Ordering::Relaxed) {
            return;
        }
        let pool = Arc::downgrade(self);
        pingora_runtime::current_handle().spawn(sweep_while_alive(pool));
    }

    /// Drops what expired or what the server closed (or wrote to) while idle.
    fn sweep(&self, unexpected_data: &AtomicU64) {
        let now = Instant::now();
        let gone: Vec<Idle> = {
            let mut streams = self.streams.lock();
            let mut kept = VecDeque::with_capacity(streams.len());
            let mut gone = Vec::new();
            for mut idle in streams.drain(..) {
                if idle.expired(now) || !test_reusable_stream(&mut idle.stream, unexpected_data) {
                    gone.push(idle);
                } else {
                    kept.push_back(idle);
                }
            }
            *streams = kept;
            gone
        };
        drop(gone);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.streams.lock().len()
    }
}

async fn sweep_while_alive(pool: Weak<IdlePool>) {
    // Data on an idle stream is counted by the connector when the stream is
    // taken; the sweep only closes such a stream.
    let unexpected_data = AtomicU64::new(0);
    loop {
        tokio::time::sleep(SWEEP_EVERY).await;
        let Some(pool) = pool.upgrade() else {
            return;
        };
        pool.sweep(&unexpected_data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    /// A connected pair: the client side as a `Stream`, and the server side.
    async fn pair() -> (Stream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        let client = crate::protocols::l4::stream::Stream::from(client.unwrap());
        (Box::new(client), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn takes_the_newest_of_its_key() {
        let pool = Arc::new(IdlePool::new(8, None));
        let (a, _sa) = pair().await;
        let (b, _sb) = pair().await;
        let (c, _sc) = pair().await;
        let (a_id, b_id) = (a.id(), b.id());
        pool.put(1, a, None);
        pool.put(1, b, None);
        pool.put(2, c, None);
        assert_eq!(pool.take(1).map(|s| s.id()), Some(b_id));
        assert_eq!(pool.take(1).map(|s| s.id()), Some(a_id));
        assert!(pool.take(1).is_none());
        assert!(pool.take(2).is_some());
    }

    #[tokio::test]
    async fn evicts_the_oldest_when_full_and_says_so() {
        let evictions = Arc::new(AtomicU64::new(0));
        let counted = evictions.clone();
        let callback: PoolCallback = Arc::new(move |_| {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        let pool = Arc::new(IdlePool::new(2, Some(callback)));
        let (a, _sa) = pair().await;
        let (b, _sb) = pair().await;
        let (c, _sc) = pair().await;
        let (b_id, c_id) = (b.id(), c.id());
        pool.put(1, a, None);
        pool.put(1, b, None);
        pool.put(1, c, None);
        assert_eq!(evictions.load(Ordering::Relaxed), 1);
        assert_eq!(pool.take(1).map(|s| s.id()), Some(c_id));
        assert_eq!(pool.take(1).map(|s| s.id()), Some(b_id));
        assert!(pool.take(1).is_none());
    }

    #[tokio::test]
    async fn an_expired_stream_is_not_taken() {
        let pool = Arc::new(IdlePool::new(8, None));
        let (a, _sa) = pair().await;
        pool.put(1, a, Some(Duration::ZERO));
        assert!(pool.take(1).is_none());
        assert_eq!(pool.len(), 0);
    }

    #[tokio::test]
    async fn a_size_of_zero_keeps_nothing() {
        let pool = Arc::new(IdlePool::new(0, None));
        let (a, _sa) = pair().await;
        pool.put(1, a, None);
        assert!(pool.take(1).is_none());
    }

    #[tokio::test]
    async fn the_sweep_closes_what_expired_or_the_server_closed() {
        let pool = Arc::new(IdlePool::new(8, None));
        let (kept, _server_kept) = pair().await;
        let (closed, mut server_closed) = pair().await;
        let (expired, mut server_expired) = pair().await;
        pool.put(1, kept, None);
        pool.put(1, closed, None);
        pool.put(1, expired, Some(Duration::ZERO));
        server_closed.shutdown().await.unwrap();
        drop(server_closed);
        // Let the close reach the client side's readiness.
        tokio::time::sleep(Duration::from_millis(50)).await;
        pool.sweep(&AtomicU64::new(0));
        assert_eq!(pool.len(), 1);
        // The expired stream was closed, not just forgotten.
        let mut buf = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(&mut server_expired, &mut buf).await;
        assert_eq!(read.unwrap(), 0);
    }
}
