//! [`PriorityQueue`]: runs a request at once, queues it by priority, or answers
//! `503`.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::Classify;
use super::classify::PolicyPriority;
use super::error::OverloadReason;
use super::future::ResponseFuture;
use super::layer::PriorityQueueLayer;
use super::queue::{Admission, Queue};
use crate::policy::{PolicyError, PriorityQueuePolicy};

/// The service made by [`PriorityQueueLayer`](super::PriorityQueueLayer).
pub struct PriorityQueue<S, C> {
    inner: S,
    classifier: C,
    queue: Arc<Queue>,
}

impl<S: Clone, C: Clone> Clone for PriorityQueue<S, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            classifier: self.classifier.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl<S: std::fmt::Debug, C: std::fmt::Debug> std::fmt::Debug for PriorityQueue<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityQueue")
            .field("inner", &self.inner)
            .field("classifier", &self.classifier)
            .finish_non_exhaustive()
    }
}

impl PriorityQueue<(), PolicyPriority> {
    /// The [`PriorityQueueLayer`] `policy` describes (same as
    /// [`PriorityQueueLayer::from_policy`]).
    pub fn layer(
        policy: &PriorityQueuePolicy,
    ) -> Result<PriorityQueueLayer<PolicyPriority>, PolicyError> {
        PriorityQueueLayer::from_policy(policy)
    }
}

impl<S, C> PriorityQueue<S, C> {
    pub(crate) fn new(inner: S, classifier: C, queue: Arc<Queue>) -> Self {
        Self {
            inner,
            classifier,
            queue,
        }
    }

    crate::inner_service_accessors!();
}

impl<S, C, ReqBody, ResBody> Service<Request<ReqBody>> for PriorityQueue<S, C>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: Classify<ReqBody>,
{
    type Response = Response<super::ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<ReqBody>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        // Capacity depends on the request's priority, so waiting happens in the response
        // future; readiness is the inner service's.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReqBody>) -> Self::Future {
        let priority = self.classifier.classify(&req);
        let lane = self.queue.lane(self.classifier.is_stream(&req));
        self.classifier.strip(&mut req);
        match self.queue.admit(lane, priority) {
            Admission::Run(permit) => ResponseFuture::calling(self.inner.call(req), permit),
            Admission::Wait(waiter) => {
                // The future calls later, so it takes the service that was polled ready
                // and leaves a fresh clone here (to be polled before the next call).
                let fresh = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, fresh);
                ResponseFuture::waiting(waiter, ready, req)
            }
            Admission::Full => {
                tracing::debug!(priority, "priority queue: full");
                ResponseFuture::rejected(OverloadReason::QueueFull)
            }
        }
    }
}
