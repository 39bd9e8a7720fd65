//! Waiting for SIGTERM (or Ctrl-C when run by hand).
//!
//! On the signal the server turns not-ready at once, stops accepting connections, lets in-flight requests finish
//! within `FERRY_SHUTDOWN_TIMEOUT_SECONDS`, and exits 0. The handler is installed before the model loads, so a
//! Pod deleted during a long download also stops promptly.

use tokio::signal::unix::{signal, Signal, SignalKind};

pub struct Signals {
    terminate: Option<Signal>,
}

impl Signals {
    pub fn install() -> Signals {
        let terminate = signal(SignalKind::terminate())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server"))
            .ok();
        Signals { terminate }
    }

    pub async fn received(&mut self) {
        let terminate = async {
            match &mut self.terminate {
                Some(terminate) => {
                    terminate.recv().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = terminate => tracing::info!("SIGTERM received; draining"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received; draining"),
        }
    }
}
