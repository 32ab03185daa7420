//! The runner's HTTP server, made to face a network: a client has 10 s to send a
//! request's head and 10 s for its body; open connections are capped (by default from the
//! process's file-descriptor limit), and at the cap the connection that has waited longest
//! for a request head gives way to the new one, so half-sent requests cannot starve real
//! ones. Only when every open connection is busy is a new one answered 503.

use crate::transport::JsonErrors;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::ServiceExt;

/// How long a request's head and body may take to arrive, and how many connections may
/// be open at once.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub body_read: Duration,
    pub max_connections: usize,
}

pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read: HEADER_READ_TIMEOUT,
            body_read: BODY_READ_TIMEOUT,
            max_connections: default_max_connections(),
        }
    }
}

/// The file-descriptor limit less room for the database, provider connections and
/// logs; between 64 and 4,096.
pub fn default_max_connections() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    soft.saturating_sub(256).clamp(64, 4096)
}

/// One open connection: since when it has waited for a request head (`None` while it
/// serves one), and how to close it.
struct Conn {
    waiting_since: Mutex<Option<Instant>>,
    close: Notify,
}

impl Conn {
    fn set_waiting(&self, since: Option<Instant>) {
        *self.waiting_since.lock().unwrap_or_else(|e| e.into_inner()) = since;
    }
    fn waiting_since(&self) -> Option<Instant> {
        *self.waiting_since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Registry {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
}

/// Removes its connection from the registry when the connection's task ends.
struct Slot {
    id: u64,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.registry
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

impl Registry {
    /// A place for a new connection: free, or made by closing the connection that has
    /// waited longest for a request head; `None` when every open one is busy.
    fn admit(self: &Arc<Self>, cap: usize) -> Option<Slot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= cap {
            // The oldest first: a real client sends its head at once, so a flood would
            // have to fill the whole cap within that moment to push it out.
            let (&id, _) = open
                .iter()
                .filter_map(|(id, c)| Some((id, c.waiting_since()?)))
                .min_by_key(|(_, since)| *since)?;
            if let Some(old) = open.remove(&id) {
                old.close.notify_one();
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            waiting_since: Mutex::new(Some(Instant::now())),
            close: Notify::new(),
        });
        open.insert(id, conn.clone());
        Some(Slot {
            id,
            conn,
            registry: self.clone(),
        })
    }
}

/// Serves `router` on `listener` under `limits` until `shutdown` completes, then lets
/// requests in progress finish.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.body_read,
        body_deadline,
    ));
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors, or a connection reset before it was taken:
                // pause rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Some(slot) = registry.admit(limits.max_connections) else {
            tokio::spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn_state = slot.conn.clone();
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let (router, state) = (router.clone(), conn_state.clone());
            state.set_waiting(None);
            // Who is calling, for the audit trail (axum's usual way to say it).
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            async move {
                let resp = router.oneshot(req.map(axum::body::Body::new)).await;
                state.set_waiting(Some(Instant::now()));
                resp
            }
        });
        let conn = http.serve_connection(TokioIo::new(JsonErrors::new(stream)), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let slot = slot;
            tokio::select! {
                _ = conn => {}
                () = slot.conn.close.notified() => {
                    tracing::debug!("a connection waiting for a request head gave way at the cap");
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A request whose body has not arrived within the limit: 408.
async fn body_deadline(
    axum::extract::State(limit): axum::extract::State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let (parts, body) = req.into_parts();
    let deadline = tokio::time::Instant::now() + limit;
    let body = axum::body::Body::new(DeadlineBody {
        inner: body,
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
    });
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// A body that fails once its deadline has passed; the routes answer its error 408.
struct DeadlineBody {
    inner: axum::body::Body,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

/// The error a [`DeadlineBody`] fails with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

impl hyper::body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimedOut)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Whether reading a body failed for its deadline (not its size).
pub fn timed_out(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<BodyTimedOut>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Every open connection is busy: a 503 saying so, then close.
async fn refuse(mut stream: TcpStream, cap: usize) {
    tracing::warn!(
        max_connections = cap,
        "connection refused: every open connection is busy"
    );
    // Read what came with it (briefly), so closing does not reset the connection
    // before the client reads the answer.
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
    let body = serde_json::json!({"error": {"code": "unavailable", "message": format!(
        "Too many open connections (at most {cap}, all busy); try again in a moment."
    )}})
    .to_string();
    let resp = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(resp.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}
