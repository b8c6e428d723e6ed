//! The HTTP server's accept loop: a connection cap, a header timeout and an idle timeout
//! around hyper's HTTP/1 connections, which on their own wait for a slow client forever.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::HttpLimits;

/// Serves `app` on `listener` within `limits` until the process ends.
pub(crate) async fn accept(listener: TcpListener, app: Router, limits: HttpLimits) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!("the dashboard could not accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("closed a dashboard connection from {peer}: {} are open, the limit", limits.max_connections);
            drop(stream);
            continue;
        };
        let (app, limits) = (app.clone(), limits.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let io = Activity::new(stream);
            let last = io.last.clone();
            let started = Instant::now();
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
            tokio::pin!(conn);
            let tick = (limits.idle_timeout / 4).max(Duration::from_millis(10));
            loop {
                tokio::select! {
                    r = conn.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!("dashboard connection from {peer}: {e}");
                        }
                        return;
                    }
                    _ = tokio::time::sleep(tick) => {
                        let idle = started.elapsed().saturating_sub(Duration::from_millis(last.load(Ordering::Relaxed)));
                        if idle >= limits.idle_timeout {
                            tracing::debug!("closing a dashboard connection from {peer}, idle for {idle:?}");
                            return;
                        }
                    }
                }
            }
        });
    }
}

/// A stream that notes when it last moved a byte, in milliseconds after its start.
struct Activity {
    stream: TcpStream,
    start: Instant,
    last: Arc<AtomicU64>,
}

impl Activity {
    fn new(stream: TcpStream) -> Activity {
        Activity { stream, start: Instant::now(), last: Arc::new(AtomicU64::new(0)) }
    }

    fn touch(&self) {
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl AsyncRead for Activity {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl AsyncWrite for Activity {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
