//! The one test harness for serving an app: `http_serve` on a listener of
//! 127.0.0.1, stopped through its shutdown future, with a bound on how long
//! it may take to return.

use std::net::SocketAddr;
use std::time::Duration;

use http_serve::{ServeConfig, ServeStats, http_serve};
use http_types::Handler;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long any single wait may take before the test fails.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// A running `http_serve`.
pub(crate) struct Serving {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<ServeStats>,
}

impl Serving {
    /// Serves `handler` on 127.0.0.1:0 with drain timeout `drain`.
    pub(crate) async fn start(handler: Handler, drain: Duration) -> Serving {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Serving::on(listener, handler, drain)
    }

    /// Serves `handler` on `listener`.
    pub(crate) fn on(listener: TcpListener, handler: Handler, drain: Duration) -> Serving {
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let config = ServeConfig {
            drain_timeout: drain,
            ..ServeConfig::default()
        };
        let shutdown = async {
            let _ = rx.await;
        };
        let task = tokio::spawn(http_serve(listener, handler, shutdown, config));
        Serving {
            addr,
            stop: Some(tx),
            task,
        }
    }

    /// Shuts down and waits (at most [`WAIT`]) for `http_serve` to return.
    pub(crate) async fn stop(mut self) -> ServeStats {
        self.stop.take().unwrap().send(()).unwrap();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("http_serve returned in time")
            .unwrap()
    }
}
