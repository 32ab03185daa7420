//! The contract's error body on transport-level errors too. hyper answers a request it
//! cannot parse (bad bytes in the path, a URI over 64 KiB, headers too large) itself,
//! with an empty body, before any route runs. Each connection's writes pass through
//! [`JsonErrors`], which turns such an answer into the same status with the contract's
//! JSON body. Flare's own 4xx and 5xx always carry a body, so an error head with
//! `content-length: 0` can only be hyper's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection's stream, its transport errors answered with a JSON body.
pub struct JsonErrors {
    inner: TcpStream,
    /// A replacement being written: its bytes and how many are out.
    replacing: Option<(Vec<u8>, usize)>,
}

impl JsonErrors {
    pub fn new(inner: TcpStream) -> Self {
        Self {
            inner,
            replacing: None,
        }
    }
}

/// hyper's own answer to a request it could not parse, turned into the contract's body;
/// `None` for anything else.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    let status: u16 = rest.get(..3)?.parse().ok()?;
    let lower = text.to_ascii_lowercase();
    if status < 400 || !text.ends_with("\r\n\r\n") || !lower.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let (code, message) = match status {
        414 => (
            "uri_too_long",
            "The request's URI is too long (at most 64 KiB).",
        ),
        431 => ("headers_too_large", "The request's headers are too large."),
        505 => ("http_version_not_supported", "Flare speaks HTTP/1.1."),
        s if s >= 500 => ("internal", "Internal error."),
        _ => (
            "bad_request",
            "The request could not be read as HTTP: its path holds bytes a URI may not (spaces, control characters, quotes or non-ASCII; percent-encode them), or its request line or headers are malformed.",
        ),
    };
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let reason = rest.lines().next().unwrap_or_default();
    Some(
        format!(
            "HTTP/1.1 {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl AsyncRead for JsonErrors {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for JsonErrors {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            match replacement(buf) {
                Some(bytes) => this.replacing = Some((bytes, 0)),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        // Written out in full before hyper hears its own bytes went.
        let (bytes, sent) = this.replacing.as_mut().expect("set above");
        while *sent < bytes.len() {
            match Pin::new(&mut this.inner).poll_write(cx, &bytes[*sent..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *sent += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        this.replacing = None;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    // Not vectored: hyper then hands each response head over in one buffer, which is
    // what `replacement` inspects.
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_errors_are_replaced() {
        let hyper_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\ndate: Fri, 27 Nov 2026 10:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(hyper_400).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{out}");
        let body: serde_json::Value =
            serde_json::from_str(out.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "bad_request");
        let hyper_414 = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        assert!(
            String::from_utf8(replacement(hyper_414).unwrap())
                .unwrap()
                .contains("uri_too_long")
        );
        // Flare's own answers, and a 204, pass as they are.
        assert!(
            replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 57\r\n\r\n").is_none()
        );
        assert!(replacement(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"{\"error\": 1}").is_none());
    }
}
