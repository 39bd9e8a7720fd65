//! The three listeners (inference, admin, gRPC) and their watch: the server serves only while all of them do.
//!
//! ```text
//!   accept ── a connection ─────────────────────────▶ served
//!          ── one connection's error ───────────────▶ next accept
//!          ── a passing shortage (EMFILE, ENOMEM…) ──▶ 1 s, next accept (as axum and hyper do)
//!          ── any other error (socket shut down…) ──▶ failed ──┐
//!   the listener's task ends or panics before the stop ───────┴─▶ Listeners::failed ─▶ unready, drain, exit 1
//! ```
//!
//! A failure is `ListenerFailed`, naming the listener and the error. The caller turns readiness off at once and
//! exits, so a pod whose inference port no longer answers never stays Ready behind a probe of the admin port.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::{FutureExt, Stream};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::contract::Reason;
use crate::failure::Failure;

/// How long to wait after a passing shortage before the next accept.
const SHORTAGE_PAUSE: Duration = Duration::from_secs(1);

/// One bound port, accepting connections; an accept that fails for good is reported and ends its accepting.
pub struct Listener {
    name: &'static str,
    inner: TcpListener,
    nodelay: bool,
    failed: mpsc::UnboundedSender<Failure>,
}

impl Listener {
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The next connection. After a failure for good it never returns: the stop comes from the caller.
    async fn next(&mut self) -> (TcpStream, SocketAddr) {
        loop {
            match self.inner.accept().await {
                Ok((stream, peer)) => {
                    if self.nodelay {
                        let _ = stream.set_nodelay(true);
                    }
                    return (stream, peer);
                }
                Err(e) if one_connection(&e) => continue,
                Err(e) if shortage(&e) => {
                    tracing::warn!(listener = self.name, error = %e, "cannot accept a connection now; retrying");
                    tokio::time::sleep(SHORTAGE_PAUSE).await;
                }
                Err(e) => {
                    let address = self
                        .local_addr()
                        .map_or_else(|_| "?".to_owned(), |a| a.to_string());
                    let _ = self.failed.send(failed(
                        self.name,
                        format!("on {address} cannot accept connections: {e}"),
                    ));
                    std::future::pending::<()>().await;
                }
            }
        }
    }

    /// The connections as a stream, for tonic. It never ends and never yields an error.
    pub fn incoming(self) -> impl Stream<Item = io::Result<TcpStream>> + Send + 'static {
        futures::stream::unfold(self, |mut listener| async move {
            let (stream, _) = listener.next().await;
            Some((Ok(stream), listener))
        })
    }
}

impl axum::serve::Listener for Listener {
    type Io = TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TcpStream, SocketAddr) {
        self.next().await
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Listener::local_addr(self)
    }
}

/// An error of the connection being accepted, not of the listener.
fn one_connection(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Out of descriptors, buffers or memory: it passes when connections close.
fn shortage(error: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
    matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12))
        || error.kind() == io::ErrorKind::OutOfMemory
}

fn failed(name: &str, detail: String) -> Failure {
    Failure::new(
        Reason::ListenerFailed,
        format!("the {name} listener {detail}"),
    )
}

/// The listeners' tasks and the failures they report.
pub struct Listeners {
    tasks: JoinSet<(&'static str, Result<(), String>)>,
    report: mpsc::UnboundedSender<Failure>,
    reports: mpsc::UnboundedReceiver<Failure>,
}

impl Default for Listeners {
    fn default() -> Self {
        let (report, reports) = mpsc::unbounded_channel();
        Listeners {
            tasks: JoinSet::new(),
            report,
            reports,
        }
    }
}

impl Listeners {
    /// Watches `listener` under `name` ("inference", "admin", "gRPC").
    pub fn watch(&self, name: &'static str, listener: TcpListener, nodelay: bool) -> Listener {
        Listener {
            name,
            inner: listener,
            nodelay,
            failed: self.report.clone(),
        }
    }

    /// Runs the server of listener `name`; it must run until the stop.
    pub fn spawn<E: std::fmt::Display>(
        &mut self,
        name: &'static str,
        serve: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        self.tasks.spawn(async move {
            let outcome = match AssertUnwindSafe(serve).catch_unwind().await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(payload) => Err(Failure::panicked("it", &*payload).message),
            };
            (name, outcome)
        });
    }

    /// The first failure of a listener: an accept that failed for good, or a task that ended. Pending while every
    /// listener serves; call it only before the stop (a task ends at the stop).
    pub async fn failed(&mut self) -> Failure {
        tokio::select! {
            Some(failure) = self.reports.recv() => failure,
            Some(joined) = self.tasks.join_next() => match joined {
                Ok((name, Ok(()))) => failed(name, "stopped".to_owned()),
                Ok((name, Err(error))) => failed(name, format!("stopped: {error}")),
                Err(e) => failed("server", format!("task stopped: {e}")),
            },
        }
    }

    /// Waits for every listener to finish its connections after the stop; `false` if `timeout` came first.
    pub async fn drain(mut self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn bound() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").await.unwrap()
    }

    #[tokio::test]
    async fn a_listener_task_that_ends_or_panics_is_a_named_failure() {
        let mut listeners = Listeners::default();
        listeners.spawn("gRPC", async { Err::<(), _>("transport error") });
        let failure = listeners.failed().await;
        assert_eq!(failure.reason, Reason::ListenerFailed);
        assert_eq!(
            failure.message,
            "the gRPC listener stopped: transport error"
        );

        listeners.spawn("admin", async { Ok::<(), String>(()) });
        assert_eq!(
            listeners.failed().await.message,
            "the admin listener stopped"
        );

        listeners.spawn("inference", async {
            if true {
                panic!("handler bug");
            }
            Ok::<(), String>(())
        });
        assert_eq!(
            listeners.failed().await.message,
            "the inference listener stopped: it panicked: handler bug"
        );
    }

    #[tokio::test]
    async fn listeners_that_serve_report_nothing() {
        let mut listeners = Listeners::default();
        let _listener = listeners.watch("inference", bound().await, false);
        listeners.spawn("inference", std::future::pending::<Result<(), String>>());
        let quiet = tokio::time::timeout(Duration::from_millis(200), listeners.failed()).await;
        assert!(quiet.is_err(), "{:?}", quiet.map(|f| f.message));
    }

    #[test]
    fn only_errors_of_the_listener_itself_fail_it() {
        for passing in [
            io::Error::from(io::ErrorKind::ConnectionAborted),
            io::Error::from(io::ErrorKind::ConnectionReset),
        ] {
            assert!(one_connection(&passing), "{passing}");
        }
        for errno in [23, 24, 105, 12] {
            assert!(shortage(&io::Error::from_raw_os_error(errno)), "{errno}");
        }
        // EINVAL: the socket no longer listens (shut down); EBADF: it is gone.
        for errno in [22, 9] {
            let error = io::Error::from_raw_os_error(errno);
            assert!(!one_connection(&error) && !shortage(&error), "{errno}");
        }
    }
}
