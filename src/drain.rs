//! What this process does on its way out.
//!
//! Replaced by a graceful upgrade (SIGQUIT) or shutting down (SIGTERM), it
//! drains: every response closes its connection (`Connection: close`), so
//! clients open their next connection to the new process instead of sending
//! a request down a keep-alive connection the old one is about to drop: that
//! race loses requests, which a reload must not.
//!
//! Told to stop fast (SIGINT), it writes out the access log and exits at
//! once. Pingora's fast shutdown gives its runtimes no time anyway, and with
//! `work_stealing: false` and more than one thread its accept loop can spin
//! on a listener whose runtime is already gone: an error line per turn and
//! a process that never exits (seen once in 24 Ctrl-Cs after load here).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use log::info;
use pingora::server::{ExecutionPhase, ShutdownWatch};
use pingora::services::background::BackgroundService;
use tokio::sync::broadcast;

use crate::access_log::AccessLog;

#[derive(Clone, Default)]
pub struct Draining(Arc<AtomicBool>);

impl Draining {
    pub fn is_draining(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Follows the server's execution phases.
pub struct PhaseWatch {
    phases: Mutex<Option<broadcast::Receiver<ExecutionPhase>>>,
    draining: Draining,
    access_log: Arc<AccessLog>,
}

impl PhaseWatch {
    pub fn new(
        phases: broadcast::Receiver<ExecutionPhase>,
        draining: Draining,
        access_log: Arc<AccessLog>,
    ) -> Self {
        PhaseWatch {
            phases: Mutex::new(Some(phases)),
            draining,
            access_log,
        }
    }
}

#[async_trait]
impl BackgroundService for PhaseWatch {
    async fn start(&self, _shutdown: ShutdownWatch) {
        let Some(mut phases) = self.phases.lock().ok().and_then(|mut p| p.take()) else {
            return;
        };
        let draining = self.draining.clone();
        let access_log = self.access_log.clone();
        // A thread of its own: a task on a runtime is dropped when the
        // runtimes stop, which can be before it has seen the last phase.
        // Started here rather than in `main` because `-d` forks after `main`.
        std::thread::spawn(move || loop {
            match phases.blocking_recv() {
                Ok(
                    ExecutionPhase::GracefulUpgradeTransferringFds
                    | ExecutionPhase::GracefulUpgradeCloseTimeout
                    | ExecutionPhase::GracefulTerminate,
                ) => draining.0.store(true, Ordering::Relaxed),
                // Without one of the phases above first, this is SIGINT.
                Ok(ExecutionPhase::ShutdownStarted) if !draining.is_draining() => {
                    access_log.flush();
                    info!("fast shutdown: exiting now");
                    std::process::exit(0);
                }
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return,
            }
        });
    }
}
