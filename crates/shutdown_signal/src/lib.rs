//! Completes when the process is asked to stop: SIGINT (Ctrl-C) or SIGTERM (what containers, systemd and Kubernetes send).
//!
//! Call [`shutdown_signal`] inside a tokio runtime, early: the handlers are
//! installed when it returns, so a signal that arrives before the future is
//! first polled is not lost (and no longer kills the process). Hand the future
//! to a server's graceful shutdown: `http_serve(listener, app, signal, config)`
//! or `axum::serve(...).with_graceful_shutdown(...)`. Off Unix only Ctrl-C
//! exists. Thin over `tokio::signal`: the glue every server writes, once.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use shutdown_signal::{shutdown_signal, StopSignal};
//!
//! let stop = shutdown_signal()?;
//! // ... start serving, then:
//! match stop.await {
//!     StopSignal::Interrupt => eprintln!("Ctrl-C: draining"),
//!     StopSignal::Terminate => eprintln!("SIGTERM: draining"),
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Which signal asked the process to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT: Ctrl-C in a terminal.
    Interrupt,
    /// SIGTERM: a service manager or container runtime stopping the process.
    Terminate,
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        })
    }
}

/// Installs the SIGINT and SIGTERM handlers and returns the future that
/// completes on the first of them. Must run inside a tokio runtime; `Err` if
/// the system refuses a handler.
pub fn shutdown_signal() -> std::io::Result<ShutdownSignal> {
    ShutdownSignal::install()
}

/// The future of [`shutdown_signal`]: completes with the signal received.
#[must_use = "futures do nothing unless awaited"]
pub struct ShutdownSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(not(unix))]
    ctrl_c: Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>,
}

impl ShutdownSignal {
    #[cfg(unix)]
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignal {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Self> {
        Ok(ShutdownSignal {
            ctrl_c: Box::pin(tokio::signal::ctrl_c()),
        })
    }
}

impl Future for ShutdownSignal {
    type Output = StopSignal;

    #[cfg(unix)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StopSignal> {
        let this = self.get_mut();
        // `None` means the handler's stream ended, which tokio never does
        // while the runtime lives: treat it as the signal rather than hang.
        if this.interrupt.poll_recv(cx).is_ready() {
            return Poll::Ready(StopSignal::Interrupt);
        }
        if this.terminate.poll_recv(cx).is_ready() {
            return Poll::Ready(StopSignal::Terminate);
        }
        Poll::Pending
    }

    #[cfg(not(unix))]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<StopSignal> {
        self.get_mut()
            .ctrl_c
            .as_mut()
            .poll(cx)
            .map(|_| StopSignal::Interrupt)
    }
}

impl fmt::Debug for ShutdownSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShutdownSignal").finish_non_exhaustive()
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    /// Sends `sig` to this process with the system's `kill`, a real signal.
    fn kill(sig: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(std::process::id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    // One test: signals go to the whole process, so two tests waiting for
    // different ones in parallel would see each other's.
    #[tokio::test]
    async fn sigterm_and_sigint_each_complete_it_with_their_name() {
        let stop = shutdown_signal().expect("handlers install");
        kill("TERM");
        assert_eq!(stop.await, StopSignal::Terminate);

        let stop = shutdown_signal().expect("handlers install");
        kill("INT");
        assert_eq!(stop.await, StopSignal::Interrupt);
        assert_eq!(StopSignal::Terminate.to_string(), "SIGTERM");
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../shutdown_signal.md")]
#[doc = include_str!("../../../types/infra/ShutdownSignal.md")]
#[doc = include_str!("../../../types/infra/StopSignal.md")]
pub struct RegistryExamples;
