//! What a client may hold of the gateway: a connection must send its
//! request headers within `gateway.header_read_timeout_ms`, may sit idle
//! between requests for `gateway.idle_timeout_ms`, and at most
//! `gateway.max_connections` connections are served at once (the next one
//! waits, unaccepted, in the listen backlog until one closes). Slow or
//! silent clients therefore cannot hold the gateway.

use axum_server::accept::Accept;
use futures::future::BoxFuture;
use marketbridge_config::GatewayOptions;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::PollSemaphore;
use tower::Service;

/// The connection limits of the gateway's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Time allowed for a request's headers.
    pub header_read_timeout: Duration,
    /// Time a connection may sit idle with no request in flight.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

impl Limits {
    /// The limits configured in the gateway section.
    pub fn from_config(gateway: &GatewayOptions) -> Self {
        Self {
            header_read_timeout: Duration::from_millis(gateway.header_read_timeout_ms.max(1)),
            idle_timeout: Duration::from_millis(gateway.idle_timeout_ms.max(1)),
            max_connections: usize::try_from(gateway.max_connections.max(1)).unwrap_or(1),
        }
    }

    /// `make_service` serving at most `max_connections` connections.
    pub fn make_service<M>(&self, make_service: M) -> LimitedMakeService<M> {
        LimitedMakeService {
            inner: make_service,
            permits: PollSemaphore::new(Arc::new(Semaphore::new(self.max_connections))),
            permit: None,
        }
    }

    /// The acceptor that closes idle connections.
    pub fn acceptor(&self) -> IdleAcceptor {
        IdleAcceptor {
            idle_timeout: self.idle_timeout,
        }
    }

    /// `server` with the header-read timeout (for the first request, the
    /// protocol detection too).
    pub fn configure<A: axum_server::Address, Acc>(
        &self,
        mut server: axum_server::Server<A, Acc>,
    ) -> axum_server::Server<A, Acc> {
        server
            .http_builder()
            .http1()
            .header_read_timeout(self.header_read_timeout);
        server.first_request_timeout(self.header_read_timeout)
    }
}

/// What the parts of one connection share: its slot among
/// `max_connections` and its requests in flight.
#[derive(Debug)]
pub struct ConnectionState {
    in_flight: AtomicUsize,
    _permit: OwnedSemaphorePermit,
}

/// Makes one [`ConnectionService`] per connection, each holding a permit;
/// not ready (so the listener accepts nothing more) while every permit is
/// taken.
#[derive(Debug)]
pub struct LimitedMakeService<M> {
    inner: M,
    permits: PollSemaphore,
    permit: Option<OwnedSemaphorePermit>,
}

impl<M: Clone> Clone for LimitedMakeService<M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            permits: self.permits.clone(),
            permit: None,
        }
    }
}

impl<M, T> Service<T> for LimitedMakeService<M>
where
    M: Service<T>,
    M::Future: Send + 'static,
{
    type Response = ConnectionService<M::Response>;
    type Error = M::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_none() {
            let permit = ready!(self.permits.poll_acquire(cx));
            self.permit = permit;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, target: T) -> Self::Future {
        let permit = self
            .permit
            .take()
            .expect("poll_ready acquires a permit before call");
        let making = self.inner.call(target);
        Box::pin(async move {
            let inner = making.await?;
            Ok(ConnectionService {
                inner,
                state: Arc::new(ConnectionState {
                    in_flight: AtomicUsize::new(0),
                    _permit: permit,
                }),
            })
        })
    }
}

/// The service of one connection: counts its requests in flight (an idle
/// connection has none) and holds its connection slot until dropped.
#[derive(Debug, Clone)]
pub struct ConnectionService<S> {
    inner: S,
    state: Arc<ConnectionState>,
}

struct InFlight(Arc<ConnectionState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S, R> Service<R> for ConnectionService<S>
where
    S: Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: R) -> Self::Future {
        self.state.in_flight.fetch_add(1, Ordering::SeqCst);
        let in_flight = InFlight(self.state.clone());
        let future = self.inner.call(request);
        Box::pin(async move {
            let _in_flight = in_flight;
            future.await
        })
    }
}

/// Wraps every accepted stream in an [`IdleStream`].
#[derive(Debug, Clone, Copy)]
pub struct IdleAcceptor {
    idle_timeout: Duration,
}

impl<I, S> Accept<I, ConnectionService<S>> for IdleAcceptor {
    type Stream = IdleStream<I>;
    type Service = ConnectionService<S>;
    type Future = std::future::Ready<io::Result<(Self::Stream, Self::Service)>>;

    fn accept(&self, stream: I, service: ConnectionService<S>) -> Self::Future {
        let stream = IdleStream {
            inner: stream,
            state: service.state.clone(),
            idle_timeout: self.idle_timeout,
            deadline: Box::pin(tokio::time::sleep(self.idle_timeout)),
        };
        std::future::ready(Ok((stream, service)))
    }
}

/// A connection's stream that fails its reads (so the server closes it)
/// once nothing was read or written for the idle timeout while no request
/// is in flight.
pub struct IdleStream<I> {
    inner: I,
    state: Arc<ConnectionState>,
    idle_timeout: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<I> IdleStream<I> {
    fn active(&mut self) {
        let next = Instant::now() + self.idle_timeout;
        self.deadline.as_mut().reset(next);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for IdleStream<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.active();
                }
                Poll::Ready(result)
            }
            Poll::Pending => {
                let idle = this.state.in_flight.load(Ordering::SeqCst) == 0;
                if idle && this.deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the connection was idle too long",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for IdleStream<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write(cx, buf));
        if matches!(written, Ok(n) if n > 0) {
            this.active();
        }
        Poll::Ready(written)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let written = ready!(Pin::new(&mut this.inner).poll_write_vectored(cx, bufs));
        if matches!(written, Ok(n) if n > 0) {
            this.active();
        }
        Poll::Ready(written)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
