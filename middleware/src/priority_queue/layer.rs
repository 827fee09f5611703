//! [`PriorityQueueLayer`]: cheap to clone; every service it makes shares one queue.

use std::sync::Arc;

use tower_layer::Layer;

use super::classify::PolicyPriority;
use super::observe::{NoObserver, QueueObserver};
use super::queue::Queue;
use super::service::PriorityQueue;
use crate::policy::PolicyError;
use crate::policy::PriorityQueuePolicy;

/// Limits requests in flight and queues the rest by priority; see the
/// [module docs](super).
///
/// Every service made by one layer (and its clones) shares the same slots and queue.
pub struct PriorityQueueLayer<C> {
    classifier: C,
    policy: PriorityQueuePolicy,
    queue: Arc<Queue>,
}

impl<C: Clone> Clone for PriorityQueueLayer<C> {
    fn clone(&self) -> Self {
        Self {
            classifier: self.classifier.clone(),
            policy: self.policy.clone(),
            queue: self.queue.clone(),
        }
    }
}

impl<C: std::fmt::Debug> std::fmt::Debug for PriorityQueueLayer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PriorityQueueLayer")
            .field("classifier", &self.classifier)
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish()
    }
}

impl PriorityQueueLayer<PolicyPriority> {
    /// The layer `policy` describes, placing requests with [`PolicyPriority`].
    pub fn from_policy(policy: &PriorityQueuePolicy) -> Result<Self, PolicyError> {
        Self::new(policy, PolicyPriority::from_policy(policy))
    }
}

impl<C> PriorityQueueLayer<C> {
    /// A layer with `policy`'s limits, placing requests with `classifier`.
    pub fn new(policy: &PriorityQueuePolicy, classifier: C) -> Result<Self, PolicyError> {
        policy.validate()?;
        Ok(Self {
            classifier,
            policy: policy.clone(),
            queue: Arc::new(Queue::new(policy, Arc::new(NoObserver))),
        })
    }

    /// Reports queue depth, waits and sheds to `observer`. This gives the layer a new,
    /// empty queue: call it before making services (services made earlier keep the old
    /// queue).
    pub fn observed(mut self, observer: Arc<dyn QueueObserver>) -> Self {
        self.queue = Arc::new(Queue::new(&self.policy, observer));
        self
    }

    /// Requests running now (responses still streaming count), as (main, streams).
    pub fn in_flight(&self) -> (usize, usize) {
        self.queue.in_flight()
    }

    /// Requests waiting now, as (main, streams).
    pub fn queued(&self) -> (usize, usize) {
        self.queue.queued()
    }
}

impl<C: Clone> PriorityQueueLayer<C> {
    /// Wraps `inner` (what [`Layer::layer`] does).
    pub fn layer<S>(&self, inner: S) -> PriorityQueue<S, C> {
        PriorityQueue::new(inner, self.classifier.clone(), self.queue.clone())
    }
}

impl<S, C: Clone> Layer<S> for PriorityQueueLayer<C> {
    type Service = PriorityQueue<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        PriorityQueueLayer::layer(self, inner)
    }
}
