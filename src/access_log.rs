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
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use log::warn;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use serde::Deserialize;

use crate::forwarded::IpText;
use crate::trace::context::hex_into;

const FLUSH_EVERY: Duration = Duration::from_millis(100);
const BUFFER_CAP: usize = 32 << 20;

/// The `access_log:` section, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub format: Format,
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// morgan's `dev`: `GET /users/me 200 1.234 ms - 56`.
    Dev,
    /// One JSON object per line, for log shippers.
    Json,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout,
    Stderr,
    File(PathBuf),
}

/// What is known about a finished request.
#[derive(Debug)]
pub struct LogEntry<'a> {
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
    pub duration_ms: Duration,
    pub user_agent: Option<&'a str>,
    /// The trace id and the server span's id, when tracing is on.
    pub trace: Option<([u8; 16], [u8; 8])>,
}

pub struct AccessLog {
    /// Where lines go now; a reopen swaps in another.
    current: ArcSwap<Writer>,
}

/// One output, opened, in one format.
struct Writer {
    settings: Settings,
    /// Colour the status as morgan does, only when a person is watching.
    color: bool,
    /// `None` for `format: off`.
    sink: Option<Sink>,
}

impl AccessLog {
    /// Opens the output (a file is created or appended to), so a bad path
    /// fails at startup, not at the first request. Lines are written once
    /// the service from [`AccessLog::writer`] runs.
    pub fn open(settings: &Settings) -> io::Result<AccessLog> {
        Ok(AccessLog {
            current: ArcSwap::from_pointee(Writer::open(settings)?),
        })
    }

    /// Opens `settings`' output anew and sends lines there from now on: a
    /// file is opened at its path again, so one that logrotate moved away
    /// is followed by a new one. Lines already buffered still go to the old
    /// output. On error nothing changes.
    pub fn reopen(&self, settings: &Settings) -> io::Result<()> {
        let writer = Writer::open(settings)?;
        self.current.store(Arc::new(writer));
        Ok(())
    }

    pub fn settings(&self) -> Settings {
        self.current.load().settings.clone()
    }

    pub fn record(&self, entry: &LogEntry) {
        let writer = self.current.load();
        let Some(sink) = &writer.sink else { return };
        thread_local! {
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            match writer.settings.format {
                Format::Dev => format_dev(entry, writer.color, &mut line),
                Format::Json => format_json(entry, &mut line),
                Format::Off => return,
            }
            sink.append(&line);
        });
    }

    /// Writes out whatever is buffered; called once more at shutdown.
    pub fn flush(&self) {
        if let Some(sink) = &self.current.load().sink {
            sink.flush();
        }
    }

    /// The service that writes the buffer out. It runs under Pingora's
    /// `Server` rather than on a thread of ours because `-d` forks, and a
    /// thread started before the fork does not exist after it.
    pub fn writer(self: &Arc<Self>) -> LogWriter {
        LogWriter(self.clone())
    }
}

impl Writer {
    fn open(settings: &Settings) -> io::Result<Writer> {
        let (out, color): (Box<dyn Write + Send>, bool) = match &settings.output {
            _ if settings.format == Format::Off => {
                return Ok(Writer {
                    settings: settings.clone(),
                    color: false,
                    sink: None,
                })
            }
            Output::Stdout => (Box::new(io::stdout()), io::stdout().is_terminal()),
            Output::Stderr => (Box::new(io::stderr()), io::stderr().is_terminal()),
            Output::File(path) => {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                (Box::new(file), false)
            }
        };
        Ok(Writer {
            settings: settings.clone(),
            color: color && settings.format == Format::Dev,
            sink: Some(Sink {
                pending: Mutex::new(Vec::with_capacity(64 << 10)),
                out: Mutex::new(out),
                dropped: AtomicU64::new(0),
            }),
        })
    }
}

impl Drop for Writer {
    /// A writer replaced by a reopen still writes out what it holds.
    fn drop(&mut self) {
        if let Some(sink) = &self.sink {
            sink.flush();
        }
    }
}

pub struct LogWriter(Arc<AccessLog>);

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
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        if pending.len() + line.len() > BUFFER_CAP {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        pending.extend_from_slice(line);
    }

    fn flush(&self) {
        // Holding `out` while swapping keeps two flushes from reordering lines.
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let batch = {
            let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
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

/// One JSON object per line. Written by hand rather than through serde or
/// `write!`: the keys are fixed, only six values can need escaping, and the
/// generic formatting machinery was 5% of a request's instructions.
pub fn format_json(e: &LogEntry, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    timestamp(out, e.timestamp);
    out.extend_from_slice(b"\",\"request_id\":");
    json_str(out, Some(e.request_id));
    out.extend_from_slice(b",\"client_ip\":");
    match e.client_ip {
        Some(ip) => {
            out.push(b'"');
            ip_addr(out, ip);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"method\":");
    json_str(out, Some(e.method));
    out.extend_from_slice(b",\"path\":");
    json_str(out, Some(e.path));
    out.extend_from_slice(b",\"route\":");
    json_str(out, e.route);
    out.extend_from_slice(b",\"upstream\":");
    json_str(out, e.upstream);
    out.extend_from_slice(b",\"upstream_addr\":");
    match e.upstream_addr {
        Some(addr) => {
            out.push(b'"');
            socket_addr(out, addr);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"status\":");
    number(out, e.status);
    out.extend_from_slice(b",\"bytes\":");
    number(out, e.bytes);
    out.extend_from_slice(b",\"duration_ms\":");
    let micros = e.duration_ms.as_micros();
    number(out, micros / 1000);
    out.push(b'.');
    three_digits(out, (micros % 1000) as u16);
    out.extend_from_slice(b",\"user_agent\":");
    json_str(out, e.user_agent);
    match &e.trace {
        Some((trace_id, span_id)) => {
            let mut hex = [0u8; 32];
            out.extend_from_slice(b",\"trace_id\":\"");
            hex_into(trace_id, &mut hex);
            out.extend_from_slice(&hex);
            out.extend_from_slice(b"\",\"span_id\":\"");
            hex_into(span_id, &mut hex[..16]);
            out.extend_from_slice(&hex[..16]);
            out.extend_from_slice(b"\"}\n");
        }
        None => out.extend_from_slice(b",\"trace_id\":null,\"span_id\":null}\n"),
    }
}

/// RFC 3339 in UTC with milliseconds. The part up to the second is
/// formatted once per second per thread.
fn timestamp(out: &mut Vec<u8>, t: SystemTime) {
    thread_local! {
        static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
    }
    let since_epoch = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    SECOND.with(|cell| {
        let mut cell = cell.borrow_mut();
        let (second, prefix) = &mut *cell;
        if *second != since_epoch.as_secs() {
            *second = since_epoch.as_secs();
            // `2026-09-21T14:13:20Z` without its `Z`.
            let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(*second);
            *prefix = humantime::format_rfc3339_seconds(whole).to_string();
            prefix.pop();
        }
        out.extend_from_slice(prefix.as_bytes());
    });
    out.push(b'.');
    three_digits(out, since_epoch.subsec_millis() as u16);
    out.push(b'Z');
}

fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn three_digits(out: &mut Vec<u8>, n: u16) {
    out.extend_from_slice(&[
        b'0' + (n / 100) as u8,
        b'0' + (n / 10 % 10) as u8,
        b'0' + (n % 10) as u8,
    ]);
}

fn ip_addr(out: &mut Vec<u8>, ip: IpAddr) {
    out.extend_from_slice(IpText::new(ip).as_str().as_bytes());
}

fn socket_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            ip_addr(out, IpAddr::V4(*v4.ip()));
            out.push(b':');
            number(out, v4.port());
        }
        // `[::1]:8080`; the slow path, as for IPv6 clients.
        SocketAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// A JSON string, or `null`. Quotes, backslashes and control characters are
/// escaped; everything else (UTF-8 included) is copied as is.
fn json_str(out: &mut Vec<u8>, s: Option<&str>) {
    let Some(s) = s else {
        out.extend_from_slice(b"null");
        return;
    };
    out.push(b'"');
    let mut rest = s.as_bytes();
    while let Some(i) = rest
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
    {
        out.extend_from_slice(&rest[..i]);
        match rest[i] {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            control => {
                let _ = write!(out, "\\u{control:04x}");
            }
        }
        rest = &rest[i + 1..];
    }
    out.extend_from_slice(rest);
    out.push(b'"');
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
            trace: None,
        }
    }

    fn json_of(e: &LogEntry) -> serde_json::Value {
        let mut out = Vec::new();
        format_json(e, &mut out);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(out.last(), Some(&b'\n'));
        serde_json::from_slice(&out).unwrap()
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
    fn json_lines_are_one_object() {
        let v = json_of(&entry());
        assert_eq!(
            v,
            serde_json::json!({
                "timestamp": "2026-09-21T14:13:20.123Z",
                "request_id": "req-1",
                "client_ip": "127.0.0.1",
                "method": "GET",
                "path": "/users/me?x=\"1\"",
                "route": "/users",
                "upstream": "user-service",
                "upstream_addr": "127.0.0.1:3001",
                "status": 200,
                "bytes": 56,
                "duration_ms": 1.234,
                "user_agent": null,
                "trace_id": null,
                "span_id": null,
            })
        );
    }

    #[test]
    fn json_escapes_what_it_must() {
        let mut e = entry();
        e.path = "/a\\b\"c\u{1}d\t/é";
        e.user_agent = Some("x\ny");
        e.client_ip = Some("::1".parse().unwrap());
        e.route = None;
        e.duration_ms = Duration::from_micros(12_000_007);
        let v = json_of(&e);
        assert_eq!(v["path"], "/a\\b\"c\u{1}d\t/é");
        assert_eq!(v["user_agent"], "x\ny");
        assert_eq!(v["client_ip"], "::1");
        assert_eq!(v["upstream_addr"], "127.0.0.1:3001");
        e.upstream_addr = Some("[::1]:8080".parse().unwrap());
        e.client_ip = None;
        e.timestamp += Duration::from_millis(1_001);
        let v = json_of(&e);
        assert_eq!(v["upstream_addr"], "[::1]:8080");
        assert_eq!(v["client_ip"], serde_json::Value::Null);
        assert_eq!(v["timestamp"], "2026-09-21T14:13:21.124Z");
        assert_eq!(v["route"], serde_json::Value::Null);
        assert_eq!(v["duration_ms"], 12000.007);
        e.trace = Some(([0xab; 16], [0x01; 8]));
        let v = json_of(&e);
        assert_eq!(v["trace_id"], "ab".repeat(16));
        assert_eq!(v["span_id"], "01".repeat(8));
    }

    #[test]
    fn lines_reach_the_file_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let log = AccessLog::open(&Settings {
            format: Format::Json,
            output: Output::File(path.clone()),
        })
        .unwrap();
        for _ in 0..3 {
            log.record(&entry());
        }
        log.flush();
        let text = std::fs::read_to_string(path).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn a_reopen_follows_a_rotated_file_and_keeps_what_was_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let settings = Settings {
            format: Format::Json,
            output: Output::File(path.clone()),
        };
        let log = AccessLog::open(&settings).unwrap();
        log.record(&entry());
        // logrotate moves the file away, then asks for a reopen.
        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&path, &rotated).unwrap();
        log.reopen(&settings).unwrap();
        log.record(&entry());
        log.record(&entry());
        log.flush();
        let lines = |p: &std::path::Path| std::fs::read_to_string(p).unwrap().lines().count();
        assert_eq!(lines(&rotated), 1, "the buffered line went to the old file");
        assert_eq!(lines(&path), 2);

        let bad = Settings {
            format: Format::Json,
            output: Output::File(dir.path().join("no/such/dir.log")),
        };
        let e = log.reopen(&bad).unwrap_err();
        assert!(e.to_string().contains("no/such/dir.log"), "{e}");
        assert_eq!(log.settings(), settings, "a failed reopen changes nothing");
    }
}
