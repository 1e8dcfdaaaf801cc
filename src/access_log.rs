//! One line per request, written after the response in Pingora's `logging`
//! phase: morgan's `dev` format for people, JSON for log shippers.
//!
//! Requests never touch the output stream. They append their line to a
//! shared buffer (a short mutex hold, no syscall, no wake-up), and a writer
//! background service swaps the buffer out and writes it every `FLUSH_EVERY`. A writer
//! woken per line cost a context switch or two per request in measurements;
//! this costs a memcpy. If the output stalls the buffer is capped and lines
//! beyond the cap are counted and reported rather than held without bound.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::io::{self, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use log::warn;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Serialize;

use crate::config::{AccessLogSettings, LogFormat, LogOutput};

const FLUSH_EVERY: Duration = Duration::from_millis(100);
const BUFFER_CAP: usize = 32 << 20;

/// What is known about a finished request.
#[derive(Debug, Serialize)]
pub struct LogEntry<'a> {
    #[serde(serialize_with = "rfc3339")]
    pub timestamp: SystemTime,
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub upstream: Option<&'a str>,
    pub upstream_addr: Option<SocketAddr>,
    pub status: u16,
    pub bytes: usize,
    #[serde(serialize_with = "millis")]
    pub duration_ms: Duration,
    pub user_agent: Option<&'a str>,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1_000_000.0).round() / 1000.0)
}

pub struct AccessLog {
    format: LogFormat,
    /// Colour the status as morgan does, only when a person is watching.
    color: bool,
    sink: Option<Arc<Sink>>,
}

impl AccessLog {
    /// Opens the output (a file is created or appended to), so a bad path
    /// fails at startup, not at the first request. Lines are written once
    /// the service from [`AccessLog::writer`] runs.
    pub fn open(settings: &AccessLogSettings) -> io::Result<AccessLog> {
        if settings.format == LogFormat::Off {
            return Ok(AccessLog {
                format: LogFormat::Off,
                color: false,
                sink: None,
            });
        }
        let (out, color): (Box<dyn Write + Send>, bool) = match &settings.output {
            LogOutput::Stdout => (Box::new(io::stdout()), io::stdout().is_terminal()),
            LogOutput::Stderr => (Box::new(io::stderr()), io::stderr().is_terminal()),
            LogOutput::File(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("access_log.output {}: {e}", path.display()),
                        )
                    })?;
                (Box::new(file), false)
            }
        };
        let sink = Arc::new(Sink {
            pending: Mutex::new(Vec::with_capacity(64 << 10)),
            out: Mutex::new(out),
            dropped: AtomicU64::new(0),
        });
        Ok(AccessLog {
            format: settings.format,
            color: color && settings.format == LogFormat::Dev,
            sink: Some(sink),
        })
    }

    pub fn record(&self, entry: &LogEntry) {
        let Some(sink) = &self.sink else { return };
        thread_local! {
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            match self.format {
                LogFormat::Dev => format_dev(entry, self.color, &mut line),
                LogFormat::Json => format_json(entry, &mut line),
                LogFormat::Off => return,
            }
            sink.append(&line);
        });
    }

    /// Writes out whatever is buffered; called once more at shutdown.
    pub fn flush(&self) {
        if let Some(sink) = &self.sink {
            sink.flush();
        }
    }

    /// The service that writes the buffer out. It runs under Pingora's
    /// `Server` rather than on a thread of ours because `-d` forks, and a
    /// thread started before the fork does not exist after it.
    pub fn writer(&self) -> Option<LogWriter> {
        self.sink.clone().map(LogWriter)
    }
}

pub struct LogWriter(Arc<Sink>);

#[async_trait]
impl BackgroundService for LogWriter {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // This service has a runtime of its own, so a slow disk stalls only
        // the writer, never a request.
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => self.0.flush(),
                _ = shutdown.changed() => break,
            }
        }
        self.0.flush();
    }
}

struct Sink {
    pending: Mutex<Vec<u8>>,
    out: Mutex<Box<dyn Write + Send>>,
    dropped: AtomicU64,
}

impl Sink {
    fn append(&self, line: &[u8]) {
        let mut pending = self.pending.lock().unwrap();
        if pending.len() + line.len() > BUFFER_CAP {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.extend_from_slice(line);
    }

    fn flush(&self) {
        // Holding `out` while swapping keeps two flushes from reordering lines.
        let mut out = self.out.lock().unwrap();
        let batch = {
            let mut pending = self.pending.lock().unwrap();
            if pending.is_empty() {
                return;
            }
            std::mem::replace(&mut *pending, Vec::with_capacity(64 << 10))
        };
        if let Err(e) = out.write_all(&batch).and_then(|_| out.flush()) {
            warn!("access log: write failed, {} bytes lost: {e}", batch.len());
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            warn!("access log: output too slow, {dropped} lines dropped");
        }
    }
}

/// morgan's `dev`: `GET /users/me 200 1.234 ms - 56`.
pub fn format_dev(e: &LogEntry, color: bool, out: &mut Vec<u8>) {
    let ms = e.duration_ms.as_secs_f64() * 1000.0;
    if color {
        let code = match e.status {
            500.. => 31,
            400..=499 => 33,
            300..=399 => 36,
            200..=299 => 32,
            _ => 0,
        };
        let _ = writeln!(
            out,
            "{} {} \x1b[{code}m{}\x1b[0m {ms:.3} ms - {}",
            e.method, e.path, e.status, e.bytes
        );
    } else {
        let _ = writeln!(
            out,
            "{} {} {} {ms:.3} ms - {}",
            e.method, e.path, e.status, e.bytes
        );
    }
}

pub fn format_json(e: &LogEntry, out: &mut Vec<u8>) {
    if serde_json::to_writer(&mut *out, e).is_ok() {
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> LogEntry<'static> {
        LogEntry {
            timestamp: SystemTime::UNIX_EPOCH + Duration::from_millis(1_790_000_000_123),
            request_id: "req-1",
            client_ip: Some("127.0.0.1".parse().unwrap()),
            method: "GET",
            path: "/users/me?x=\"1\"",
            route: Some("/users"),
            upstream: Some("user-service"),
            upstream_addr: Some("127.0.0.1:3001".parse().unwrap()),
            status: 200,
            bytes: 56,
            duration_ms: Duration::from_micros(1234),
            user_agent: None,
        }
    }

    #[test]
    fn dev_lines_read_like_morgan() {
        let mut out = Vec::new();
        format_dev(&entry(), false, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /users/me?x=\"1\" 200 1.234 ms - 56\n"
        );
        let mut out = Vec::new();
        format_dev(&entry(), true, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .contains("\x1b[32m200\x1b[0m"));
    }

    #[test]
    fn json_lines_are_one_escaped_object() {
        let mut out = Vec::new();
        format_json(&entry(), &mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["timestamp"], "2026-09-21T14:13:20.123Z");
        assert_eq!(v["path"], "/users/me?x=\"1\"");
        assert_eq!(v["route"], "/users");
        assert_eq!(v["upstream_addr"], "127.0.0.1:3001");
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["user_agent"], serde_json::Value::Null);
    }

    #[test]
    fn lines_reach_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(&AccessLogSettings {
            format: LogFormat::Json,
            output: LogOutput::File(path.clone()),
        })
        .unwrap();
        for _ in 0..3 {
            log.record(&entry());
        }
        log.flush();
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 3);
    }
}
