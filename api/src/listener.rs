//! The API's TCP acceptor: what every connection gets before HTTP sees it.
//!
//! - `TCP_NODELAY`: poem leaves Nagle's algorithm on, and Nagle together with delayed ACKs holds
//!   small writes — an event-stream message, a short JSON answer — for about 40 ms.
//! - A cap on open connections: beyond it, a new connection is answered 503 problem+json with
//!   `Retry-After` and closed, so a flood cannot exhaust file descriptors or memory.
//! - A header-read deadline: a request's headers must all arrive within the timeout of its first
//!   byte (of the connection's opening, for the first request). A client that trickles a header
//!   line every few seconds (slowloris) is cut off instead of holding the connection forever.
//!
//! Idle keep-alive connections are closed by the server's idle timeout (`Server::idle_timeout`).

use std::{
    io::{Error, ErrorKind, Result as IoResult},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use evisa_core::config::ConnectionLimits;
use poem::{
    http::uri::Scheme,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    web::{LocalAddr, RemoteAddr},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};

/// The answer to a connection over the cap.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/problem+json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 112\r\n\r\n\
{\"type\":\"/problems/unavailable\",\"title\":\"Service unavailable\",\"status\":503,\"detail\":\"too many open connections\"}";

/// Wraps a TCP acceptor; see the module docs.
pub struct NoDelay {
    inner: TcpAcceptor,
    permits: Arc<Semaphore>,
    header_read_timeout: Duration,
}

impl NoDelay {
    /// Binds `addr` (port 0 picks a free port; see [`Acceptor::local_addr`]) with the default
    /// limits; [`NoDelay::with_limits`] sets the configured ones.
    pub async fn bind(
        addr: impl tokio::net::ToSocketAddrs + Send + std::fmt::Display + 'static,
    ) -> IoResult<NoDelay> {
        let limits = ConnectionLimits::default();
        Ok(NoDelay {
            inner: TcpListener::bind(addr).into_acceptor().await?,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            header_read_timeout: limits.header_read_timeout,
        })
    }

    /// The connection cap and header-read deadline of `limits`.
    pub fn with_limits(self, limits: &ConnectionLimits) -> NoDelay {
        NoDelay {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            header_read_timeout: limits.header_read_timeout,
            ..self
        }
    }
}

impl Acceptor for NoDelay {
    type Io = Guarded;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.inner.local_addr()
    }

    async fn accept(&mut self) -> IoResult<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        loop {
            let (io, local, remote, scheme) = self.inner.accept().await?;
            io.set_nodelay(true)?;
            match self.permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let io = Guarded::new(io, permit, self.header_read_timeout);
                    return Ok((io, local, remote, scheme));
                }
                Err(_) => {
                    tracing::warn!(%remote, "connection refused: too many open connections");
                    tokio::spawn(refuse(io));
                }
            }
        }
    }
}

async fn refuse(mut io: TcpStream) {
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        let _ = io.write_all(TOO_MANY).await;
        let _ = io.shutdown().await;
    })
    .await;
}

/// A connection holding one of the cap's permits, with the header-read deadline.
pub struct Guarded {
    io: TcpStream,
    _permit: OwnedSemaphorePermit,
    header_read_timeout: Duration,
    /// While a request's headers are awaited: when they must all have arrived.
    deadline: Option<Pin<Box<Sleep>>>,
    /// The last bytes read, to find the blank line that ends headers across reads.
    tail: Vec<u8>,
    /// An answer was written since the last headers: the next byte read starts a new request.
    answered: bool,
}

impl Guarded {
    fn new(io: TcpStream, permit: OwnedSemaphorePermit, header_read_timeout: Duration) -> Self {
        Guarded {
            io,
            _permit: permit,
            header_read_timeout,
            deadline: Some(Box::pin(tokio::time::sleep(header_read_timeout))),
            tail: Vec::with_capacity(8),
            answered: false,
        }
    }

    /// Follows the bytes a client sent: a new request starts the deadline, the end of its
    /// headers (`\r\n\r\n`) clears it.
    fn observe(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.deadline.is_none() {
            if !self.answered {
                return; // a request body
            }
            self.answered = false;
            self.tail.clear();
            self.deadline = Some(Box::pin(tokio::time::sleep(self.header_read_timeout)));
        }
        self.tail.extend_from_slice(bytes);
        if self.tail.windows(4).any(|w| w == b"\r\n\r\n") {
            self.deadline = None;
            self.tail.clear();
        } else {
            let keep = self.tail.len().saturating_sub(3);
            self.tail.drain(..keep);
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<IoResult<()>> {
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(Error::new(
                ErrorKind::TimedOut,
                "request headers did not arrive in time",
            )));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let fresh = buf.filled()[before..].to_vec();
            self.observe(&fresh);
        }
        polled
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<IoResult<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
            && self.deadline.is_none()
        {
            self.answered = true;
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<IoResult<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
            && self.deadline.is_none()
        {
            self.answered = true;
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_refusal_is_a_well_formed_answer() {
        let text = std::str::from_utf8(super::TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 503);
    }
}
