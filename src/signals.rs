//! Shutdown signals: SIGTERM and SIGINT both drain gracefully (pingora's own watch treats
//! SIGINT as a fast exit). Draining flips `/readyz` to 503 at once, and the process exits as
//! soon as the last client connection is done, or when `server.grace_period` runs out.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::{ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{signal, SignalKind};

use crate::state::State;

/// Waits for SIGTERM or SIGINT and asks pingora for a graceful shutdown.
pub struct Signals {
    pub state: Arc<State>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            tracing::error!("cannot install signal handlers; waiting forever");
            return std::future::pending().await;
        };
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            "{name}: draining (grace period {:?})",
            self.state.runtime().settings.grace_period
        );
        self.state.start_draining();
        exit_when_idle(self.state.clone());
        ShutdownSignal::GracefulTerminate
    }
}

/// Exits the process with 0 once no client connection is open. Pingora would otherwise wait out
/// the whole grace period even when nothing is in flight.
fn exit_when_idle(state: Arc<State>) {
    std::thread::spawn(move || {
        // Let the listeners see the shutdown and idle keep-alive connections close.
        std::thread::sleep(Duration::from_millis(100));
        loop {
            if state.open_connections() == 0 {
                tracing::info!("drained; exiting");
                std::process::exit(0);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
}
