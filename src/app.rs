//! The one place where configuration becomes stores, handlers and services.
//!
//! [`App::build`] reads a validated [`Config`] and wires: the session store (memory or
//! Redis), auth, metrics, the agent dispatcher and the [`AgentApi`] service. Policy layers
//! (rate limit, priority queue, existence cache, SSE fan-out) are stacked here, outermost
//! first, as their issues land.

use std::sync::Arc;

use agentgate_config::{Config, Dispatch as DispatchKind, StoreKind};
use tokio_util::sync::CancellationToken;

use crate::agent::Dispatch;
use crate::agent::demo::DemoAgent;
use crate::api::{AgentApi, ApiSettings, ApiState};
use crate::auth::{ApiKeys, StreamTokens};
use crate::metrics::Metrics;
use crate::store::memory::{MemoryLimits, MemoryStore};
use crate::store::redis::{RedisSettings, RedisStore};
use crate::store::{SessionStore, StoreError};

/// A wired gateway application, ready to be served.
#[derive(Debug, Clone)]
pub struct App {
    /// The agent API service (clone per connection).
    pub api: AgentApi,
    /// Cancelled at shutdown: streams end, demo runs stop.
    pub shutdown: CancellationToken,
}

impl App {
    /// Wires the application. Must run inside the runtime that will serve it (store
    /// connections and background tasks live there).
    pub async fn build(config: &Config) -> Result<Self, StoreError> {
        let shutdown = CancellationToken::new();
        let store = build_store(config).await?;
        let dispatch: Option<Arc<dyn Dispatch>> = match config.agent.dispatch {
            DispatchKind::None => None,
            DispatchKind::Demo => Some(Arc::new(DemoAgent::new(
                Arc::clone(&store),
                config.agent.demo.pace(),
                config.agent.demo.deltas as usize,
                shutdown.clone(),
            ))),
        };
        let state = ApiState {
            metrics: Arc::new(Metrics::new(store.stats())),
            store,
            keys: ApiKeys::new(config.auth.api_keys.iter().map(String::as_str)),
            tokens: StreamTokens::new(
                config.auth.stream_token_secret.as_bytes(),
                config.auth.stream_token_ttl(),
            ),
            dispatch,
            settings: ApiSettings {
                max_body_bytes: config.server.max_body_bytes,
                replay_batch: config.sse.replay_batch,
                heartbeat: config.sse.heartbeat(),
                retry_ms: config.sse.retry_ms,
            },
            shutdown: shutdown.clone(),
        };
        Ok(Self {
            api: AgentApi::new(Arc::new(state)),
            shutdown,
        })
    }
}

async fn build_store(config: &Config) -> Result<Arc<dyn SessionStore>, StoreError> {
    let store = &config.store;
    Ok(match store.kind {
        StoreKind::Memory => MemoryStore::new(MemoryLimits {
            events_maxlen: usize::try_from(store.events_maxlen).unwrap_or(usize::MAX),
            retention: store.retention(),
            session_ttl: store.session_ttl(),
        }),
        StoreKind::Redis => {
            RedisStore::connect(RedisSettings {
                urls: store.redis.urls.clone(),
                cluster: store.redis.cluster,
                timeout: store.redis.timeout(),
                connect_timeout: store.redis.connect_timeout(),
                events_maxlen: store.events_maxlen,
                retention: store.retention(),
                session_ttl: store.session_ttl(),
            })
            .await?
        }
    })
}
