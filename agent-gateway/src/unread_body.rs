//! Reading the rest of a request body the handler refused without reading it, before the answer
//! goes out: how a client that sent too large a body gets its `413` instead of a dropped
//! connection.
//!
//! Why: a handler that refuses a request early (a body over `wire::REQUEST_BODY_LEN_MAX`, whose
//! Content-Length alone decides it) leaves the rest of the body unread. hyper then closes the
//! HTTP/1.1 connection after the answer, and the kernel, closing a socket with unread data,
//! resets it: a client still sending (most write the whole request before they read) gets
//! "broken pipe" or "connection reset" and never sees the refusal. Reading and discarding the
//! rest first lets the connection end the request cleanly and stay open.
//!
//! Bounds: at most [`DRAIN_LEN_MAX`] bytes and [`DRAIN_TIME_MAX`] per request, so that a client
//! cannot make a KMA read forever; beyond them the answer is sent and the connection closed.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::response::Response;
use axum::Router;
use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tower::ServiceExt;

/// Most bytes of an unread body read and discarded: a few times the request limit, enough for
/// any body a mistaken client sends (a list of keys too long, a file sent by error).
pub const DRAIN_LEN_MAX: usize = 64 * 1024 * 1024;
/// Longest time spent reading an unread body, so a slow sender cannot hold the task.
pub const DRAIN_TIME_MAX: Duration = Duration::from_secs(10);

/// A request body that, dropped before its end, hands itself back to [`serve_request`].
pub(crate) struct UnreadBody<B: Body> {
    inner: Option<B>,
    ended: bool,
    leftover: Option<oneshot::Sender<B>>,
}

impl<B: Body + Unpin> Body for UnreadBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let frame = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(None) = frame {
            this.ended = true;
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}

impl<B: Body> Drop for UnreadBody<B> {
    fn drop(&mut self) {
        let (Some(inner), Some(leftover)) = (self.inner.take(), self.leftover.take()) else {
            return;
        };
        if !self.ended && !inner.is_end_stream() {
            // The request is still being answered: the receiver lives until it is.
            let _ = leftover.send(inner);
        }
    }
}

/// Serves one request with `app`, then, when the handler left part of the body unread, reads
/// and discards it (within the bounds) before the answer goes out.
pub(crate) async fn serve_request<B>(
    app: Router,
    request: axum::http::Request<B>,
) -> Result<Response, std::convert::Infallible>
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let (leftover, mut unread) = oneshot::channel();
    let request = request.map(|body| UnreadBody {
        inner: Some(body),
        ended: false,
        leftover: Some(leftover),
    });
    let response = app.oneshot(request).await;
    // Filled when the handler dropped the body unfinished; empty when it read it all (or, for
    // no route of ours, still holds it).
    if let Ok(rest) = unread.try_recv() {
        drain(rest).await;
    }
    response
}

/// Reads `body` to its end, or until a bound is reached.
async fn drain<B: Body + Unpin>(mut body: B) {
    let reading = async {
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Buf::remaining);
            if read > DRAIN_LEN_MAX {
                tracing::info!(read, "request body over the drain bound: closing the connection");
                return;
            }
        }
    };
    if tokio::time::timeout(DRAIN_TIME_MAX, reading).await.is_err() {
        tracing::info!("request body not sent within the drain time: closing the connection");
    }
}
