//! Accepted gRPC connections, shared by both servers.

/// The listener's connections with `TCP_NODELAY` set.
///
/// tonic ignores `Server::tcp_nodelay` when it is handed its connections
/// (`serve_with_incoming*`), and a unary answer or a stream update is one small write that
/// Nagle's algorithm with delayed ACKs would hold for ~40 ms.
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|r| {
        r.inspect(|s| {
            if let Err(error) = s.set_nodelay(true) {
                tracing::debug!(%error, "setting TCP_NODELAY");
            }
        })
    })
}
