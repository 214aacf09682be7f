//! What the lab reads from admin ports: one HTTP/1.0 GET, in plaintext (a proxy) or over TLS
//! (a gateway), and the lines of the Prometheus text it returns.

use crate::{Error, io};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.0 GET in plaintext: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), Error> {
    let tcp = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| Error::Invalid(format!("{addr}: connect timed out")))?
        .map_err(io(format!("connecting to {addr}")))?;
    exchange(tcp, addr, path).await
}

pub(crate) async fn exchange<S>(
    mut s: S,
    addr: SocketAddr,
    path: &str,
) -> Result<(u16, String), Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    s.write_all(format!("GET {path} HTTP/1.0\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await
        .map_err(io(format!("writing to {addr}")))?;
    let mut out = Vec::new();
    let mut limited = (&mut s).take(4 << 20);
    match tokio::time::timeout(Duration::from_secs(5), limited.read_to_end(&mut out)).await {
        Ok(Ok(_)) => {}
        // A TLS peer that closes without close_notify still sent the whole answer.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {}
        Ok(Err(e)) => return Err(io(format!("reading from {addr}"))(e)),
        Err(_) => return Err(Error::Invalid(format!("{addr}: read timed out"))),
    }
    let out = String::from_utf8_lossy(&out);
    let (head, body) = out
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::Invalid(format!("{addr}: no HTTP response")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Error::Invalid(format!("{addr}: no status")))?;
    Ok((status, body.to_owned()))
}

/// The lines of Prometheus text `text` that start with `metric` and contain every `needle`.
pub fn metric_lines<'a>(text: &'a str, metric: &str, needles: &[&str]) -> Vec<&'a str> {
    text.lines()
        .filter(|l| l.starts_with(metric) && needles.iter().all(|n| l.contains(n)))
        .collect()
}

/// The sum of the values of [`metric_lines`].
pub fn metric_sum(text: &str, metric: &str, needles: &[&str]) -> f64 {
    metric_lines(text, metric, needles)
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums() {
        let t = "gateway_bytes_total{client_id=\"a\",direction=\"ToClient\"} 5\n\
                 gateway_bytes_total{client_id=\"a\",direction=\"ToTarget\"} 7\n\
                 gateway_bytes_total{client_id=\"b\",direction=\"ToTarget\"} 100\n";
        assert_eq!(metric_sum(t, "gateway_bytes_total", &["\"a\""]), 12.0);
        assert_eq!(metric_lines(t, "gateway_bytes_total", &["\"b\""]).len(), 1);
    }
}
