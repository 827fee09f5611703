//! Tool execution: the registry of tools, the dependency-graph executor, the CPU worker pool
//! and the built-in and HTTP tools behind `POST /v2/sessions/{id}/tools`.
//!
//! An agent hands the gateway a batch of calls, `{"id", "tool", "input", "depends_on"}`.
//! [`graph`] validates the batch as a whole before anything runs (unknown tool, duplicate
//! id, missing dependency, cycle, input too large, bad reference: a 400 naming the
//! problem). [`executor`] then runs it: calls whose dependencies have succeeded start
//! together, up to `tools.max_parallel` at once (one at a time without
//! `features.parallel_tools`), each under its deadline; a call's input may use its
//! dependencies' outputs through [`refs`] (`{"$ref": "a#/items/0"}`); a failed call fails
//! its dependents, which are reported as skipped with the cause, while independent calls
//! keep running. Progress goes to the session's event stream as `tool_started` and
//! `tool_finished` events, one store round trip per wave of calls.
//! [`budget`] bounds what a batch may make the gateway hold (inputs after `$ref`
//! resolution, outputs): going over is a 413 naming the call, decided from sizes before
//! anything large is built.
//!
//! Tools:
//! - [`builtin`]: `sha256`, `json_query`, `regex_extract`, run on the [`pool`] of CPU
//!   worker threads so CPU work never blocks the proxy's event loops.
//! - [`http`]: POST the input to a healthy peer of an upstream group.
//! - Your own: implement [`Tool`] and [`ToolRegistry::register`] it, then hand the registry
//!   to [`App::build_with_tools`](crate::app::App::build_with_tools).
//!
//! # Example
//!
//! ```
//! use agentgate::tools::{Tool, ToolContext, ToolError, ToolRegistry};
//! use serde::{Deserialize, Serialize};
//!
//! /// Adds two numbers.
//! struct Add;
//!
//! #[derive(Deserialize)]
//! struct Operands {
//!     a: f64,
//!     b: f64,
//! }
//!
//! #[derive(Serialize)]
//! struct Sum {
//!     sum: f64,
//! }
//!
//! impl Tool for Add {
//!     type Input = Operands;
//!     type Output = Sum;
//!
//!     async fn call(&self, input: Operands, _cx: &ToolContext) -> Result<Sum, ToolError> {
//!         Ok(Sum { sum: input.a + input.b })
//!     }
//! }
//!
//! let mut tools = ToolRegistry::new();
//! tools.register("add", Add).expect("a fresh, valid name");
//! assert!(tools.contains("add"));
//! // App::build_with_tools(&config, tools) serves it next to the configured tools.
//! ```

pub mod budget;
pub mod builtin;
pub mod executor;
pub mod graph;
pub mod http;
pub mod pool;
pub mod refs;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use agentgate_proxy::TraceContext;

pub use executor::{CallReport, CallStatus, Executor, ExecutorSettings, Report};
pub use graph::{CallSpec, Plan, PlanError};
pub use pool::{PoolError, WorkerPool};

use crate::store::SessionId;

/// Longest tool name, in characters.
pub const MAX_TOOL_NAME_LEN: usize = 64;

/// Why a tool call failed; its message is reported to the agent as the call's `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ToolError {
    message: String,
}

impl ToolError {
    /// A failure described by `message`.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The description.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<PoolError> for ToolError {
    fn from(e: PoolError) -> Self {
        Self::new(e.to_string())
    }
}

/// What a tool call knows about where it runs.
#[derive(Debug, Clone)]
pub struct ToolContext {
    session: SessionId,
    call_id: String,
    pool: WorkerPool,
    trace: Option<TraceContext>,
}

impl ToolContext {
    /// A context for call `call_id` of a batch in `session`, with the CPU worker `pool`.
    pub fn new(session: SessionId, call_id: impl Into<String>, pool: WorkerPool) -> Self {
        Self {
            session,
            call_id: call_id.into(),
            pool,
            trace: None,
        }
    }

    /// The same context within the request's distributed `trace` (tools that call other
    /// services propagate it, as `traceparent`).
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace;
        self
    }

    /// The trace of the request that runs the batch, if known.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_ref()
    }

    /// The session the batch runs in.
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// The call's `id` within its batch.
    pub fn call_id(&self) -> &str {
        &self.call_id
    }

    /// The CPU worker pool.
    pub fn pool(&self) -> &WorkerPool {
        &self.pool
    }

    /// Runs CPU-bound `work` on the worker pool and waits for its result without blocking
    /// the event loop. Fails when the pool's queue is full or `work` panics.
    pub async fn run_cpu<T, F>(&self, work: F) -> Result<T, ToolError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Ok(self.pool.run(work).await?)
    }
}

/// A tool agents can call: typed input in, typed output out.
///
/// The call's `input` JSON (references already resolved) is deserialized into
/// [`Input`](Self::Input); a mismatch fails the call with `input: <serde's message>`. The
/// [`Output`](Self::Output) is serialized as the call's `output`, which dependents may
/// reference. Use `serde_json::Value` for either to take or give any JSON, or
/// `Box<serde_json::value::RawValue>` to pass JSON text through without parsing it.
///
/// `call` runs on the proxy's event loop: await I/O freely, but hand CPU-heavy work to
/// [`ToolContext::run_cpu`]. The executor enforces the per-call deadline by dropping the
/// future, so a call must not rely on running to completion.
pub trait Tool: Send + Sync + 'static {
    /// What the call's `input` deserializes into.
    type Input: DeserializeOwned + Send;
    /// What the call produces.
    type Output: Serialize + Send;

    /// Runs one call.
    fn call(
        &self,
        input: Self::Input,
        cx: &ToolContext,
    ) -> impl Future<Output = Result<Self::Output, ToolError>> + Send;
}

/// A boxed future of a JSON tool result: the output as compact JSON text.
pub type ToolFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Box<RawValue>, ToolError>> + Send + 'a>>;

/// A [`Tool`] with its types erased to JSON text, as the registry holds it.
///
/// Input and output travel as JSON text rather than `Value` trees: a resolved input is
/// deserialized straight into the tool's own type, and an output is serialized once, then
/// shared by the calls that reference it and written into the response as it is.
pub trait DynTool: Send + Sync + 'static {
    /// Runs one call on JSON input.
    fn call_json<'a>(&'a self, input: Box<RawValue>, cx: &'a ToolContext) -> ToolFuture<'a>;
}

impl<T: Tool> DynTool for T {
    fn call_json<'a>(&'a self, input: Box<RawValue>, cx: &'a ToolContext) -> ToolFuture<'a> {
        Box::pin(async move {
            // The text is dropped once parsed, before the call runs.
            let input: T::Input = {
                let text = input;
                serde_json::from_str(text.get())
                    .map_err(|e| ToolError::new(format!("input: {e}")))?
            };
            let output = self.call(input, cx).await?;
            serde_json::value::to_raw_value(&output)
                .map_err(|e| ToolError::new(format!("output could not be encoded: {e}")))
        })
    }
}

/// Why a tool could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The name is empty, too long or uses characters other than `[A-Za-z0-9_-]`.
    #[error("tool name {0:?} must be 1 to 64 ASCII letters, digits, '_' and '-'")]
    InvalidName(String),
    /// A tool of that name is registered already.
    #[error("tool {0:?} is registered twice")]
    Duplicate(String),
}

/// One registered tool: its per-call deadline override and the tool itself.
#[derive(Clone)]
pub struct Registered {
    /// The tool.
    pub tool: Arc<dyn DynTool>,
    /// Its own per-call deadline, instead of the executor's default.
    pub timeout: Option<std::time::Duration>,
}

/// The tools agents may call, by name.
#[derive(Clone, Default)]
pub struct ToolRegistry {
    tools: BTreeMap<String, Registered>,
}

impl std::fmt::Debug for ToolRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.tools.keys()).finish()
    }
}

impl ToolRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `tool` as `name` with the executor's default deadline.
    pub fn register<T: Tool>(
        &mut self,
        name: impl Into<String>,
        tool: T,
    ) -> Result<(), RegistryError> {
        self.insert(name.into(), Arc::new(tool), None)
    }

    /// Registers a type-erased tool as `name`, with an optional deadline of its own.
    pub fn insert(
        &mut self,
        name: String,
        tool: Arc<dyn DynTool>,
        timeout: Option<std::time::Duration>,
    ) -> Result<(), RegistryError> {
        if !is_tool_name(&name) {
            return Err(RegistryError::InvalidName(name));
        }
        if self.tools.contains_key(&name) {
            return Err(RegistryError::Duplicate(name));
        }
        self.tools.insert(name, Registered { tool, timeout });
        Ok(())
    }

    /// Moves every tool of `other` into this registry; fails on the first name both hold.
    pub fn merge(&mut self, other: ToolRegistry) -> Result<(), RegistryError> {
        for (name, registered) in other.tools {
            self.insert(name, registered.tool, registered.timeout)?;
        }
        Ok(())
    }

    /// Whether a tool is registered as `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tools.contains_key(name)
    }

    /// The tool registered as `name`.
    pub fn get(&self, name: &str) -> Option<&Registered> {
        self.tools.get(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }
}

/// Whether `name` is a valid tool name: 1 to 64 of `[A-Za-z0-9_-]`.
pub fn is_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}
