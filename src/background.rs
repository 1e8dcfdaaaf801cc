//! Background work that lives as long as what it serves: the DNS refresh
//! and health checks of an upstream pool, a JWKS refresh, a Redis
//! connection.
//!
//! Each task holds only a weak reference to its part and ends by itself once
//! the part is gone, so a reload that drops an upstream or a key source
//! stops its work without anyone keeping a list. Tasks made before the
//! server's runtimes exist wait in the `Spawner` until its service starts;
//! later ones (a reload's) start at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::runtime::Handle;

pub type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct Spawner {
    /// `Err` until the service runs: the tasks waiting for it.
    runtime: Mutex<Result<Handle, Vec<Task>>>,
}

impl Default for Spawner {
    fn default() -> Self {
        Spawner {
            runtime: Mutex::new(Err(Vec::new())),
        }
    }
}

impl Spawner {
    pub fn spawn(&self, tasks: impl IntoIterator<Item = Task>) {
        let mut runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
        for task in tasks {
            match &mut *runtime {
                Ok(handle) => drop(handle.spawn(task)),
                Err(waiting) => waiting.push(task),
            }
        }
    }
}

#[async_trait]
impl BackgroundService for Spawner {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let waiting = {
            let mut runtime = self.runtime.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *runtime, Ok(Handle::current()))
        };
        if let Err(tasks) = waiting {
            for task in tasks {
                tokio::spawn(task);
            }
        }
        // The tasks run on this service's runtime, which lasts while this
        // call does.
        let _ = shutdown.changed().await;
    }
}
