//! A TCP acceptor with `TCP_NODELAY` on every connection. poem leaves Nagle's algorithm on, and
//! Nagle together with delayed ACKs holds small writes — an event-stream message, a short JSON
//! answer — for about 40 ms.

use std::io::Result as IoResult;

use poem::{
    http::uri::Scheme,
    listener::{Acceptor, Listener, TcpAcceptor, TcpListener},
    web::{LocalAddr, RemoteAddr},
};

/// Wraps a TCP acceptor; see the module docs.
pub struct NoDelay(TcpAcceptor);

impl NoDelay {
    /// Binds `addr` (port 0 picks a free port; see [`Acceptor::local_addr`]).
    pub async fn bind(
        addr: impl tokio::net::ToSocketAddrs + Send + std::fmt::Display + 'static,
    ) -> IoResult<NoDelay> {
        Ok(NoDelay(TcpListener::bind(addr).into_acceptor().await?))
    }
}

impl Acceptor for NoDelay {
    type Io = tokio::net::TcpStream;

    fn local_addr(&self) -> Vec<LocalAddr> {
        self.0.local_addr()
    }

    async fn accept(&mut self) -> IoResult<(Self::Io, LocalAddr, RemoteAddr, Scheme)> {
        let (io, local, remote, scheme) = self.0.accept().await?;
        io.set_nodelay(true)?;
        Ok((io, local, remote, scheme))
    }
}
