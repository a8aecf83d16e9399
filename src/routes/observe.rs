//! The middleware around both listeners: every response carries the
//! request's `X-Request-Id` (one a trusted proxy sent, or a new one; see
//! [`RequestId`]), 404s and errors included, and on the service listener
//! each request is counted by route pattern and status, with its latency
//! (`mcp_oauth_proxy_http_requests_total`,
//! `mcp_oauth_proxy_http_request_duration_seconds`).
//!
//! The route label is the matched resource pattern of the route table
//! (`/token`, `/mcp/{tail:.*}`), or `unmatched`: never the request's path.
//! The latency is the time to the response head (a streamed answer goes on
//! after it).

use std::future::{ready, Future, Ready};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform};
use actix_web::error::InternalError;
use actix_web::http::header::HeaderValue;

use super::context::{RequestId, X_REQUEST_ID};
use crate::metrics::HttpMetrics;

/// The middleware: `App::new().wrap(Observe::counting(metrics))` on the
/// service listener, `Observe::ids_only()` on the admin listener.
pub struct Observe {
    http: Option<Rc<HttpMetrics>>,
}

impl Observe {
    /// Request ids, and request metrics into `metrics`.
    pub fn counting(metrics: &HttpMetrics) -> Observe {
        Observe {
            http: Some(Rc::new(metrics.clone())),
        }
    }

    /// Request ids only.
    pub fn ids_only() -> Observe {
        Observe { http: None }
    }
}

impl<S, B> Transform<S, ServiceRequest> for Observe
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = ObserveService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(ObserveService {
            service,
            http: self.http.clone(),
        }))
    }
}

pub struct ObserveService<S> {
    service: S,
    http: Option<Rc<HttpMetrics>>,
}

impl<S, B> Service<ServiceRequest> for ObserveService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = Observed<S::Future>;

    actix_web::dev::forward_ready!(service);

    fn call(&self, req: ServiceRequest) -> Self::Future {
        let started = self.http.as_ref().map(|_| Instant::now());
        // No clone of the request is kept across the call: the router
        // needs the only reference to it.
        let id = RequestId::of(req.request());
        Observed {
            answer: self.service.call(req),
            finish: Some(Finish {
                id,
                http: self.http.clone(),
                started,
            }),
        }
    }
}

/// What is done with the response once it is there.
struct Finish {
    id: RequestId,
    http: Option<Rc<HttpMetrics>>,
    started: Option<Instant>,
}

pin_project_lite::pin_project! {
    pub struct Observed<F> {
        #[pin]
        answer: F,
        finish: Option<Finish>,
    }
}

impl<F, B> Future for Observed<F>
where
    F: Future<Output = Result<ServiceResponse<B>, actix_web::Error>>,
    B: MessageBody,
{
    type Output = Result<ServiceResponse<B>, actix_web::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answer = match this.answer.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(answer) => answer,
        };
        let Some(finish) = this.finish.take() else {
            return Poll::Pending;
        };
        let value = HeaderValue::from_str(&finish.id.0).ok();
        let mut response = match answer {
            Ok(response) => response,
            // An error a middleware inside returned: its response, made
            // here so that it carries the request id too.
            Err(error) => {
                let mut response = error.error_response();
                if let Some(value) = value {
                    response.headers_mut().insert(X_REQUEST_ID.clone(), value);
                }
                return Poll::Ready(Err(InternalError::from_response(error, response).into()));
            }
        };
        if let Some(value) = value {
            response.headers_mut().insert(X_REQUEST_ID.clone(), value);
        }
        if let (Some(http), Some(started)) = (finish.http, finish.started) {
            let route = response.request().match_pattern();
            let route = route.as_deref().unwrap_or("unmatched");
            http.observe(route, response.status().as_u16(), started.elapsed());
        }
        Poll::Ready(Ok(response))
    }
}
