//! The byte streams a connection runs over (TCP, and a Unix socket pair behind
//! the WebSocket bridge), used through readiness: a connection waits for
//! "readable" without holding a read buffer, so an idle client costs almost
//! nothing, and reads and writes proceed concurrently on one task.

use std::future::Future;
use std::io;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::net::{TcpStream, UnixStream};

pub(crate) trait Transport: Send + Sync + 'static {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send;
    fn writable(&self) -> impl Future<Output = io::Result<()>> + Send;
    /// Readiness kept in the socket's own registration: only one task may
    /// poll it, which holds since a connection is served by one task.
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize>;
    fn try_write(&self, buf: &[u8]) -> io::Result<usize>;
}

macro_rules! impl_transport {
    ($t:ty) => {
        impl Transport for $t {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$t>::readable(self)
            }
            fn writable(&self) -> impl Future<Output = io::Result<()>> + Send {
                <$t>::writable(self)
            }
            fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_read_ready(self, cx)
            }
            fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                <$t>::poll_write_ready(self, cx)
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> io::Result<usize> {
                <$t>::try_read_buf(self, buf)
            }
            fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
                <$t>::try_write(self, buf)
            }
        }
    };
}

impl_transport!(TcpStream);
impl_transport!(UnixStream);

/// Waits for data and appends what is available (at least `reserve` bytes of
/// room are made first). Returns 0 at end of stream.
pub(crate) async fn read_some<T: Transport>(
    t: &T,
    buf: &mut BytesMut,
    reserve: usize,
) -> io::Result<usize> {
    loop {
        t.readable().await?;
        buf.reserve(reserve);
        match t.try_read_buf(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

pub(crate) async fn write_all<T: Transport>(t: &T, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        t.writable().await?;
        match t.try_write(data) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
