//! Spans leave the request path into a bounded queue and are exported in
//! batches by a background task, so a slow or absent collector costs a
//! request nothing: a full queue drops the span (counted), a failed export
//! drops its batch (counted), and both are logged once per interval, never
//! once per span.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use log::warn;
use tokio::sync::Notify;

use super::otlp::{self, Encoded};
use super::Tracer;

const LOG_EVERY: Duration = Duration::from_secs(10);

/// Requests' spans waiting for export; the limits count spans.
pub struct Queue {
    queued: Mutex<Queued>,
    max: usize,
    batch: usize,
    /// Woken when a batch is ready before the interval is up.
    ready: Notify,
    /// Dropped because the queue was full, since the last log line.
    overflowed: AtomicU64,
}

#[derive(Default)]
struct Queued {
    requests: Vec<Encoded>,
    spans: usize,
}

impl Queue {
    pub fn new(max: usize, batch: usize) -> Self {
        Queue {
            queued: Mutex::default(),
            max,
            batch,
            ready: Notify::new(),
            overflowed: AtomicU64::new(0),
        }
    }

    /// Queues a request's spans, or drops them all when they do not fit;
    /// returns how many were dropped.
    pub fn push(&self, request: Encoded) -> u64 {
        let count = request.spans;
        let mut queued = self.lock();
        if queued.spans + count > self.max {
            drop(queued);
            self.overflowed.fetch_add(count as u64, Ordering::Relaxed);
            return count as u64;
        }
        queued.requests.push(request);
        queued.spans += count;
        let ready = queued.spans >= self.batch;
        drop(queued);
        if ready {
            self.ready.notify_one();
        }
        0
    }

    /// The oldest requests, up to a batch of spans (or one request, should
    /// it have more).
    fn take_batch(&self) -> Vec<Encoded> {
        let mut queued = self.lock();
        let (mut n, mut spans) = (0, 0);
        for request in &queued.requests {
            if n > 0 && spans + request.spans > self.batch {
                break;
            }
            n += 1;
            spans += request.spans;
        }
        queued.spans -= spans;
        queued.requests.drain(..n).collect()
    }

    fn is_empty(&self) -> bool {
        self.lock().requests.is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.queued.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Exports `tracer`'s queue every interval (or sooner, when a batch is
/// ready). Once nothing else holds the tracer (a reload replaced it and its
/// last request is done), what is left is exported and the task ends.
pub async fn export_loop(tracer: Arc<Tracer>) {
    let mut client = None;
    let mut failed = 0u64;
    let mut last_error = String::new();
    let mut last_log = Instant::now();
    loop {
        let interval = tracer.settings.export_interval;
        let _ = tokio::time::timeout(interval, tracer.queue.ready.notified()).await;
        let retired = Arc::strong_count(&tracer) == 1;
        let client = client.get_or_insert_with(|| {
            reqwest::Client::builder()
                .timeout(tracer.settings.export_timeout)
                .build()
                .expect("an HTTP client")
        });
        loop {
            let batch = tracer.queue.take_batch();
            if batch.is_empty() {
                break;
            }
            let count = batch.iter().map(|e| e.spans).sum::<usize>() as u64;
            let body = otlp::export_request(&tracer.preamble, &batch);
            let sent = client
                .post(&tracer.settings.endpoint)
                .header("content-type", "application/x-protobuf")
                .body(body)
                .send()
                .await;
            match sent {
                Ok(r) if r.status().is_success() => tracer.exported(count),
                Ok(r) => {
                    failed += count;
                    last_error = format!("HTTP {}", r.status());
                    tracer.export_failed(count);
                }
                Err(e) => {
                    failed += count;
                    last_error = e.to_string();
                    tracer.export_failed(count);
                }
            }
            if tracer.queue.is_empty() {
                break;
            }
        }
        if retired {
            return;
        }
        if last_log.elapsed() >= LOG_EVERY {
            let overflowed = tracer.queue.overflowed.swap(0, Ordering::Relaxed);
            if failed > 0 || overflowed > 0 {
                warn!(
                    "tracing: {failed} span(s) lost to failed exports to {} ({last_error}) and {overflowed} to a full queue in the last {LOG_EVERY:?}",
                    tracer.settings.endpoint
                );
            }
            failed = 0;
            last_log = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::otlp::example;

    #[test]
    fn a_request_that_does_not_fit_is_dropped_whole_and_counted() {
        let queue = Queue::new(5, 2);
        assert_eq!(queue.push(example(1)), 0);
        assert_eq!(queue.push(example(2)), 0);
        // Two spans more would make 7.
        assert_eq!(queue.push(example(1)), 2);
        assert_eq!(queue.overflowed.load(Ordering::Relaxed), 2);
        // A batch of 2 spans holds the first request; the second, of 3
        // spans, goes alone.
        assert_eq!(queue.take_batch().len(), 1);
        assert_eq!(queue.take_batch()[0].spans, 3);
        assert!(queue.is_empty());
        assert_eq!(queue.push(example(4)), 0, "the room is back");
    }
}
