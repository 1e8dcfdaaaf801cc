//! The gateway's own log (stderr, through the `log` facade, Pingora's lines
//! included), kept from flooding: each place in the code that logs writes
//! at most a few lines per interval; the rest are counted, and at the end
//! of the interval one line says how many were held back and shows the last
//! of them. A client that aborts 300 connections mid-request leaves a few
//! lines and a count, not 300 lines, so it cannot fill the disk.
//!
//! `gateway_log_lines_total{level,outcome}` counts every line, written or
//! held back, on the metrics listener.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use log::{Level, Log, Metadata, Record};
use pingora_prometheus::prometheus::{register_int_counter_vec, IntCounterVec};

/// Lines each place in the code writes per interval before it is summarized.
const LINES_PER_INTERVAL: u32 = 5;
const INTERVAL: Duration = Duration::from_secs(10);

pub struct Summarizing {
    inner: env_logger::Logger,
    /// By the file and line that logs.
    sites: Mutex<HashMap<(&'static str, u32), Site>>,
    lines: Option<IntCounterVec>,
}

#[derive(Default)]
struct Site {
    written: u32,
    held: u64,
    /// The last line held back, for the summary.
    last: Option<(Level, String, String)>,
}

/// Installs the summarizing logger around `inner`, with a thread that
/// writes the summaries once per interval.
pub fn install(inner: env_logger::Logger) -> Result<(), log::SetLoggerError> {
    let max_level = inner.filter();
    let logger = Arc::new(Summarizing {
        inner,
        sites: Mutex::default(),
        lines: register_int_counter_vec!(
            "gateway_log_lines_total",
            "Lines of the gateway's own log, by level and outcome (written, held back)",
            &["level", "outcome"]
        )
        .ok(),
    });
    log::set_boxed_logger(Box::new(Shared(logger.clone())))?;
    log::set_max_level(max_level);
    // Without the thread, lines past the allowance are only counted.
    let _ = std::thread::Builder::new()
        .name("log summary".into())
        .spawn(move || loop {
            std::thread::sleep(INTERVAL);
            logger.end_interval();
        });
    Ok(())
}

struct Shared(Arc<Summarizing>);

impl Log for Shared {
    fn enabled(&self, metadata: &Metadata) -> bool {
        self.0.inner.enabled(metadata)
    }

    fn log(&self, record: &Record) {
        self.0.log(record);
    }

    fn flush(&self) {
        self.0.inner.flush();
    }
}

impl Summarizing {
    fn log(&self, record: &Record) {
        if !self.inner.matches(record) {
            return;
        }
        let key = (
            record.file_static().unwrap_or(""),
            record.line().unwrap_or(0),
        );
        let written = {
            let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
            let site = sites.entry(key).or_default();
            if site.written < LINES_PER_INTERVAL {
                site.written += 1;
                true
            } else {
                site.held += 1;
                site.last = Some((
                    record.level(),
                    record.target().to_string(),
                    record.args().to_string(),
                ));
                false
            }
        };
        self.count(record.level(), if written { "written" } else { "held" });
        if written {
            self.inner.log(record);
        }
    }

    fn count(&self, level: Level, outcome: &str) {
        if let Some(lines) = &self.lines {
            lines.with_label_values(&[level.as_str(), outcome]).inc();
        }
    }

    /// One line for each place that had lines held back, then a fresh
    /// allowance for every place.
    fn end_interval(&self) {
        let summaries: Vec<(u64, Level, String, String)> = {
            let mut sites = self.sites.lock().unwrap_or_else(PoisonError::into_inner);
            let summaries = sites
                .values_mut()
                .filter_map(|site| {
                    let held = std::mem::take(&mut site.held);
                    site.last
                        .take()
                        .map(|(level, target, line)| (held, level, target, line))
                })
                .collect();
            sites.retain(|_, site| std::mem::take(&mut site.written) > 0);
            summaries
        };
        for (held, level, target, line) in summaries {
            self.inner.log(
                &Record::builder()
                    .level(level)
                    .target(&target)
                    .args(format_args!(
                        "{held} more like this in the last {}s, held back; the last: {line}",
                        INTERVAL.as_secs()
                    ))
                    .build(),
            );
        }
    }
}
