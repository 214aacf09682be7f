//! The one transport-header reader (`strait_proxy::header`, used by the proxy's inbound and
//! the gateway) over a stream of arbitrary bytes delivered in arbitrary chunks: never
//! panics, never buffers more than MAX_LEN, never reads past the header.
#![no_main]
use libfuzzer_sys::fuzz_target;
use strait_core::transport_header::MAX_LEN;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk.max(1));
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut builder = tokio_test_io(data, chunk);
        let mut buf = Vec::new();
        let r = strait_proxy::header::read_into(&mut builder, &mut buf).await;
        assert!(buf.len() <= MAX_LEN && buf.capacity() <= MAX_LEN);
        if r.is_ok() {
            assert!(buf.len() <= data.len());
        }
    });
});

/// A reader that hands out `data` at most `chunk` bytes at a time.
fn tokio_test_io(data: &[u8], chunk: usize) -> impl tokio::io::AsyncRead + Unpin + '_ {
    struct Chunked<'a>(&'a [u8], usize);
    impl tokio::io::AsyncRead for Chunked<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self.1.min(self.0.len()).min(buf.remaining());
            let (head, rest) = self.0.split_at(n);
            buf.put_slice(head);
            self.0 = rest;
            std::task::Poll::Ready(Ok(()))
        }
    }
    Chunked(data, chunk)
}
