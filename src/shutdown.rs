//! Stopping on SIGTERM or Ctrl-C: finish what is in flight, and for the API drain first.

use std::time::Duration;

/// A stop signal (SIGTERM or Ctrl-C) that any number of tasks can wait for.
#[derive(Clone)]
pub struct Shutdown(tokio::sync::watch::Receiver<bool>);

impl Shutdown {
    pub fn on_signals() -> Shutdown {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            signal().await;
            tracing::info!("shutting down: finishing requests and jobs in flight");
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    /// Resolves `drain` after this one, with `/readyz` saying 503 meanwhile: a load balancer
    /// stops sending before connections close, so no request is cut off.
    pub fn after_drain(&self, state: evisa_api::AppState, drain: Duration) -> Shutdown {
        let (tx, rx) = tokio::sync::watch::channel(false);
        let signalled = self.wait();
        tokio::spawn(async move {
            signalled.await;
            if !drain.is_zero() {
                state
                    .draining
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(seconds = drain.as_secs(), "draining: /readyz answers 503");
                tokio::time::sleep(drain).await;
            }
            let _ = tx.send(true);
        });
        Shutdown(rx)
    }

    pub fn wait(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.0.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler can be installed");
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
