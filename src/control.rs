//! The operator's side of a running gateway, the NGINX way:
//! `api-gateway -s reload` signals the process in `server.pid_file` and
//! prints whether its reload succeeded; `-s reopen` has it reopen its access
//! log (after logrotate moved it).
//!
//! A signal carries no answer, so the gateway writes the outcome of each
//! reload to a status file beside its pid file, numbered; the command waits
//! for a number newer than the one it saw before signalling.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::ValueEnum;

/// How long `-s reload` waits for the outcome: a reload fetches new JWKS
/// URLs and resolves new upstream names, each within its own timeout.
const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Command {
    /// Read the config again and apply it (SIGHUP).
    Reload,
    /// Reopen the access log file (SIGUSR1).
    Reopen,
}

/// The outcome of the latest load, as the running gateway reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// 0 at startup, one more with each reload.
    pub generation: u64,
    pub ok: bool,
    pub message: String,
}

/// Where the gateway whose pid file is `pid_file` reports.
pub fn status_path(pid_file: &str) -> PathBuf {
    PathBuf::from(format!("{pid_file}.status"))
}

impl Status {
    /// Written whole or not at all (a rename), so a reader never sees half.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let result = if self.ok { "ok" } else { "error" };
        let text = format!("{} {result} {}\n", self.generation, self.message);
        let partial = path.with_extension("status.partial");
        std::fs::write(&partial, text)?;
        std::fs::rename(&partial, path)
    }

    pub fn read(path: &Path) -> Option<Status> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut parts = text.trim_end().splitn(3, ' ');
        let generation = parts.next()?.parse().ok()?;
        let ok = match parts.next()? {
            "ok" => true,
            "error" => false,
            _ => return None,
        };
        Some(Status {
            generation,
            ok,
            message: parts.next().unwrap_or_default().to_string(),
        })
    }
}

/// Sends `command` to the gateway in `pid_file`; `Ok` is what to print,
/// `Err` why it failed.
pub fn send(command: Command, pid_file: &str) -> Result<String, String> {
    let pid = std::fs::read_to_string(pid_file)
        .map_err(|e| format!("cannot read pid_file {pid_file}: {e} (is the gateway running?)"))?;
    let pid: libc::pid_t = pid
        .trim()
        .parse()
        .map_err(|_| format!("{pid_file} holds no process id"))?;
    let status_file = status_path(pid_file);
    let before = Status::read(&status_file).map(|s| s.generation);
    let signal = match command {
        Command::Reload => libc::SIGHUP,
        Command::Reopen => libc::SIGUSR1,
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    if unsafe { libc::kill(pid, signal) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!("cannot signal the gateway (pid {pid}): {e}"));
    }
    if command == Command::Reopen {
        return Ok(format!(
            "asked the gateway (pid {pid}) to reopen its access log"
        ));
    }
    let deadline = Instant::now() + WAIT;
    loop {
        match Status::read(&status_file) {
            Some(status) if Some(status.generation) > before => {
                return if status.ok {
                    Ok(status.message)
                } else {
                    Err(status.message)
                };
            }
            _ if Instant::now() > deadline => {
                return Err(format!(
                    "the gateway (pid {pid}) did not report a reload within {WAIT:?}"
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = status_path(dir.path().join("gw.pid").to_str().unwrap());
        assert_eq!(Status::read(&path), None);
        let status = Status {
            generation: 3,
            ok: false,
            message: "conf.yaml: routes[1].upstream: unknown upstream `x`".into(),
        };
        status.write(&path).unwrap();
        assert_eq!(Status::read(&path), Some(status));
    }

    #[test]
    fn without_a_running_gateway_the_command_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("gw.pid");
        let e = send(Command::Reload, pid_file.to_str().unwrap()).unwrap_err();
        assert!(e.contains("is the gateway running?"), "{e}");
    }
}
