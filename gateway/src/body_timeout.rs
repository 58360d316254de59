//! A deadline on reading a request's body (`limits.body_timeout_seconds`).
//!
//! actix-web bounds the time to send headers (`client_request_timeout`)
//! but not the body: a client that sends a large `Content-Length` and then
//! a byte every few seconds (slowloris) would hold its connection, and the
//! request's extractor, for as long as it likes. This middleware swaps the
//! request's payload for one that ends with an I/O `TimedOut` error once the
//! deadline passes; the JSON extractor's error handler turns that into a
//! 408 in OpenAI's error shape, and actix closes a connection whose body
//! was not read to the end.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::middleware::Next;
use actix_web::web;
use bytes::Bytes;
use futures_util::Stream;

use crate::state::AppState;

/// The message of the I/O error a late body ends with.
pub const TIMED_OUT: &str = "the request body was not received within limits.body_timeout_seconds";

/// A payload that fails once `deadline` has passed.
struct Deadline {
    inner: Payload,
    sleep: Pin<Box<tokio::time::Sleep>>,
    done: bool,
}

impl Stream for Deadline {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        // Data already here is taken first, so a body that arrived in time
        // is never refused because the handler was slow to read it.
        match Pin::new(&mut self.inner).poll_next(cx) {
            Poll::Ready(None) => {
                self.done = true;
                return Poll::Ready(None);
            }
            Poll::Ready(item) => return Poll::Ready(item),
            Poll::Pending => {}
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.done = true;
                let error = std::io::Error::new(std::io::ErrorKind::TimedOut, TIMED_OUT);
                Poll::Ready(Some(Err(PayloadError::Io(error))))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Puts the deadline on the request's payload.
pub async fn middleware(
    mut req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let limit = req
        .app_data::<web::Data<AppState>>()
        .map_or(Duration::from_secs(30), |s| s.config.limits.body_timeout());
    let (_, payload) = req.parts_mut();
    let inner = std::mem::replace(payload, Payload::None);
    let deadline = Deadline {
        inner,
        sleep: Box::pin(tokio::time::sleep(limit)),
        done: false,
    };
    let stream: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(deadline);
    *payload = Payload::from(stream);
    next.call(req).await
}

/// Whether a payload error is this middleware's deadline.
pub fn is_timeout(error: &PayloadError) -> bool {
    matches!(error, PayloadError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut)
}
