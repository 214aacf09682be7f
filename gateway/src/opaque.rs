//! Opaque TCP: bytes copied both ways until either side finishes.

use tokio::io::{AsyncRead, AsyncWrite};

/// Copies between `client` and `target` until both directions end (a half-close is
/// forwarded as a shutdown of the other side's write half).
pub async fn forward<C, T>(mut client: C, mut target: T) -> std::io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    strait_proxy::io::copy_bidirectional(&mut client, &mut target).await
}
