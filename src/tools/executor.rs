//! Runs a checked [`Plan`] as a dependency graph and reports every call.
//!
//! The loop, one *wave* at a time:
//!
//! 1. Start the calls that are ready (all dependencies succeeded), up to the parallelism
//!    limit (`tools.max_parallel`, or 1 without `features.parallel_tools`), resolving their
//!    `$ref`s first (a reference that finds no value fails the call before it starts) and
//!    charging their resolved size to the batch's [`budget`](super::budget) before the
//!    input is built (a result is charged when its call ends). Going over stops the
//!    batch ([`BatchError::OverBudget`]): calls not started are skipped, running ones are
//!    dropped and reported failed, and the stop's `tool_finished` events are appended.
//! 2. Append, in ONE store round trip, the `tool_finished` events of the previous wave and
//!    the `tool_started` events of this one. Running calls keep running meanwhile; the
//!    wave's calls start once their `tool_started` is stored, so a watcher never sees a
//!    call finish before it started.
//! 3. Wait until a call finishes, collect every other call that has finished by then, settle
//!    them (a failure settles its dependents, transitively, as `skipped` with the failed
//!    call as their `cause`), and go back to 1.
//!
//! The first append doubles as the session check: for an unknown, completed or foreign
//! session it fails (404, 409, 403) before any call has run. A later append that fails
//! (the agent completed the session meanwhile, the store is down) does not stop the batch:
//! the calls run to the end, no more progress is appended, and the report says so in
//! `progress_error`.
//!
//! Each call runs under its deadline (the tool's `timeout_ms`, else `tools.timeout_ms`);
//! when it passes, the call's future is dropped and it is reported `timed_out`. A tool that
//! panics is reported `failed`. Calls of a batch run as futures of the request's own task:
//! an abandoned request (client gone) drops them.
//!
//! Events (`data` is JSON):
//! - `tool_started`: `{"batch", "call_id", "tool"}`
//! - `tool_finished`: `{"batch", "call_id", "tool", "status", "duration_ms"}`, plus `error`
//!   unless it succeeded and `cause` (the failed call) when skipped; skipped calls have no
//!   `tool_started` and no `duration_ms`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use agentgate_proxy::TraceContext;

use super::budget::{Budget, OverBudget};
use super::graph::{Plan, PlanError, PlanLimits, PlannedCall};
use super::refs::{self, Resolution};
use super::{Registered, ToolContext, ToolError, ToolRegistry, WorkerPool};
use crate::metrics::ToolMetrics;
use crate::store::{NewEvent, SessionId, SessionStore, StoreError};

/// Kind of the event appended when a call starts.
pub const TOOL_STARTED: &str = "tool_started";
/// Kind of the event appended when a call is settled (ran, or skipped).
pub const TOOL_FINISHED: &str = "tool_finished";

/// How the executor runs batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorSettings {
    /// Most calls of one batch running at once.
    pub max_parallel: usize,
    /// Whether independent calls run at once at all (`features.parallel_tools`); `false`
    /// runs one call at a time.
    pub parallel: bool,
    /// Per-call deadline of tools without their own.
    pub timeout: Duration,
    /// Batch size limits.
    pub limits: PlanLimits,
}

impl ExecutorSettings {
    /// Calls that may run at once.
    pub fn concurrency(&self) -> usize {
        if self.parallel {
            self.max_parallel.max(1)
        } else {
            1
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    /// It ran and produced an output.
    Succeeded,
    /// It ran (or its input could not be resolved) and failed.
    Failed,
    /// Its deadline passed.
    TimedOut,
    /// It never ran: a dependency did not succeed.
    Skipped,
}

impl CallStatus {
    /// The status as reported.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Skipped => "skipped",
        }
    }
}

/// What became of one call.
#[derive(Debug, Clone)]
pub struct CallReport {
    /// The call's id.
    pub id: String,
    /// The tool called.
    pub tool: String,
    /// How it ended.
    pub status: CallStatus,
    /// The output, when it succeeded: its JSON text, as the tool produced it.
    pub output: Option<Box<RawValue>>,
    /// Why it did not succeed.
    pub error: Option<String>,
    /// For a skipped call: the id of the call whose failure caused it.
    pub cause: Option<String>,
    /// How long it ran; `None` when it never started.
    pub duration: Option<Duration>,
}

impl Serialize for CallReport {
    /// `{"id", "tool", "status", "output" | "error", "cause", "duration_ms"}`, the output
    /// written from its text as it is.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("id", &self.id)?;
        out.serialize_entry("tool", &self.tool)?;
        out.serialize_entry("status", &self.status)?;
        if let Some(output) = &self.output {
            out.serialize_entry("output", output)?;
        }
        if let Some(error) = &self.error {
            out.serialize_entry("error", error)?;
        }
        if let Some(cause) = &self.cause {
            out.serialize_entry("cause", cause)?;
        }
        if let Some(duration) = self.duration {
            out.serialize_entry("duration_ms", &millis(duration))?;
        }
        out.end()
    }
}

/// The result of a batch: every call, in request order.
#[derive(Debug, Clone)]
pub struct Report {
    /// The batch's id, as in its events.
    pub batch: String,
    /// Every call, in the order the request listed them.
    pub calls: Vec<CallReport>,
    /// Why progress events stopped being appended part way, if they did.
    pub progress_error: Option<String>,
}

impl Report {
    /// Calls that ended with `status`.
    pub fn count(&self, status: CallStatus) -> usize {
        self.calls.iter().filter(|c| c.status == status).count()
    }
}

impl Serialize for Report {
    /// The response body: `{"batch", "calls": [..], "succeeded", "failed", "skipped"}`
    /// (`failed` counts timeouts too), plus `progress_error` when set. Outputs are written
    /// from the text the calls produced, not copied into a new tree first.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("batch", &self.batch)?;
        out.serialize_entry("calls", &self.calls)?;
        out.serialize_entry("succeeded", &self.count(CallStatus::Succeeded))?;
        out.serialize_entry(
            "failed",
            &(self.count(CallStatus::Failed) + self.count(CallStatus::TimedOut)),
        )?;
        out.serialize_entry("skipped", &self.count(CallStatus::Skipped))?;
        if let Some(error) = &self.progress_error {
            out.serialize_entry("progress_error", error)?;
        }
        out.end()
    }
}

/// Where a batch's progress events go: a session's log, written as its owner.
#[derive(Clone, Copy)]
pub struct Progress<'a> {
    /// The store.
    pub store: &'a dyn SessionStore,
    /// The session.
    pub session: &'a SessionId,
    /// The owner's key fingerprint.
    pub owner: &'a str,
    /// The trace of the request running the batch (HTTP tools propagate it).
    pub trace: Option<&'a TraceContext>,
}

/// Why a batch got no report.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The batch is malformed (a 400); nothing ran.
    #[error(transparent)]
    Invalid(#[from] PlanError),
    /// The batch would go over its memory budget (a 413 naming the call): refused before
    /// anything ran, or stopped while running.
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
    /// The first progress event could not be appended (unknown, completed or foreign
    /// session, or the store is down); nothing ran.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks and runs tool batches. Shared by every request.
pub struct Executor {
    tools: ToolRegistry,
    settings: ExecutorSettings,
    pool: WorkerPool,
    metrics: ToolMetrics,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("tools", &self.tools)
            .field("settings", &self.settings)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// A call that has finished running.
struct Finished {
    index: usize,
    result: Result<Box<RawValue>, (CallStatus, String)>,
    duration: Duration,
}

impl Executor {
    /// An executor of `tools` with the CPU worker `pool`, recording into `metrics`.
    pub fn new(
        tools: ToolRegistry,
        settings: ExecutorSettings,
        pool: WorkerPool,
        metrics: ToolMetrics,
    ) -> Self {
        Self {
            tools,
            settings,
            pool,
            metrics,
        }
    }

    /// The registered tools.
    pub fn tools(&self) -> &ToolRegistry {
        &self.tools
    }

    /// The settings.
    pub fn settings(&self) -> &ExecutorSettings {
        &self.settings
    }

    /// Checks a batch (the request's `calls`): see [`Plan::new`] and
    /// [`Plan::check_budget`]. Nothing has run or been written when it fails.
    pub fn plan(&self, calls: Vec<Value>) -> Result<Plan, BatchError> {
        let plan = Plan::new(calls, &self.tools, self.settings.limits)?;
        plan.check_budget(self.settings.limits)?;
        Ok(plan)
    }

    /// Runs `plan`, appending progress events to `progress`. Fails if the first append
    /// fails (then no call has run), or if the batch goes over its budget (then it was
    /// stopped, and its events say how each call ended).
    pub async fn run(&self, plan: Plan, progress: Progress<'_>) -> Result<Report, BatchError> {
        let mut run = Run::new(self, plan, progress);
        run.execute().await?;
        if let Some(over) = run.refused.take() {
            return Err(BatchError::OverBudget(over));
        }
        Ok(run.into_report())
    }
}

/// The state of one batch being run.
struct Run<'e> {
    executor: &'e Executor,
    progress: Progress<'e>,
    batch: String,
    calls: Vec<PlannedCall>,
    /// Per call: dependencies not yet succeeded.
    waiting: Vec<usize>,
    /// Per call: its report, once settled.
    settled: Vec<Option<CallReport>>,
    /// Ready calls, in the order they became ready.
    ready: VecDeque<usize>,
    /// Events of the current wave, not yet appended.
    events: Vec<NewEvent>,
    /// Whether an append has succeeded yet (the first one checks the session).
    appended: bool,
    progress_error: Option<String>,
    /// Bytes of resolved inputs and results charged so far.
    budget: Budget,
    /// Per call: whether it has started (and so has a `tool_started` event).
    started: Vec<bool>,
    /// Why the batch was stopped, once it was.
    refused: Option<OverBudget>,
}

/// Why a ready call could not start.
enum NotStarted {
    /// Its input could not be resolved: the call fails, the batch goes on.
    Failed(ToolError),
    /// Its resolved input would go over the budget: the batch stops.
    OverBudget(OverBudget),
}

impl<'e> Run<'e> {
    fn new(executor: &'e Executor, plan: Plan, progress: Progress<'e>) -> Self {
        let calls = plan.calls;
        let waiting: Vec<usize> = calls.iter().map(|c| c.deps.len()).collect();
        let ready = (0..calls.len()).filter(|&i| waiting[i] == 0).collect();
        let limits = executor.settings.limits;
        Self {
            budget: Budget::new(limits.max_input_bytes, limits.max_batch_bytes),
            started: vec![false; calls.len()],
            refused: None,
            executor,
            progress,
            batch: uuid::Uuid::new_v4().simple().to_string(),
            settled: vec![None; calls.len()],
            calls,
            waiting,
            ready,
            events: Vec::new(),
            appended: false,
            progress_error: None,
        }
    }

    async fn execute(&mut self) -> Result<(), StoreError> {
        let limit = self.executor.settings.concurrency();
        let mut running = FuturesUnordered::new();
        let mut finished: Vec<Finished> = Vec::new();
        loop {
            // 1. Start what is ready, up to the limit.
            let mut starting = Vec::new();
            while running.len() + starting.len() < limit {
                let Some(i) = self.ready.pop_front() else {
                    break;
                };
                match self.input_of(i) {
                    Ok(input) => {
                        self.events.push(self.started_event(i));
                        self.started[i] = true;
                        starting.push((i, input));
                    }
                    Err(NotStarted::Failed(e)) => {
                        self.settle_failure(i, CallStatus::Failed, e.to_string(), None);
                    }
                    Err(NotStarted::OverBudget(over)) => {
                        self.stop(over);
                        break;
                    }
                }
            }
            if self.refused.is_some() {
                // Running calls are dropped with `running`; the stop's events are
                // appended below.
                break;
            }
            // 2. One round trip for the wave's events; running calls keep going meanwhile.
            if !self.events.is_empty() {
                let events = std::mem::take(&mut self.events);
                let append = self.append(events);
                tokio::pin!(append);
                loop {
                    tokio::select! {
                        biased;
                        result = &mut append => {
                            result?;
                            break;
                        }
                        Some(done) = running.next(), if !running.is_empty() => finished.push(done),
                    }
                }
            }
            for (i, input) in starting {
                running.push(self.call(i, input));
            }
            // 3. Wait for a wave of finishes.
            if running.is_empty() && finished.is_empty() {
                if self.ready.is_empty() {
                    break;
                }
                continue;
            }
            if finished.is_empty()
                && let Some(done) = running.next().await
            {
                finished.push(done);
            }
            while let Some(Some(done)) = running.next().now_or_never() {
                finished.push(done);
            }
            for done in finished.drain(..) {
                self.settle(done);
                if self.refused.is_some() {
                    break;
                }
            }
            if self.refused.is_some() {
                break;
            }
        }
        if self.refused.is_some() && !self.appended {
            // Stopped before anything was written: write nothing.
            return Ok(());
        }
        if !self.events.is_empty() {
            let events = std::mem::take(&mut self.events);
            self.append(events).await?;
        }
        Ok(())
    }

    /// Appends a wave's events. Only the first append's failure is returned (nothing has
    /// run yet); a later one stops progress reporting for the rest of the batch.
    async fn append(&mut self, events: Vec<NewEvent>) -> Result<(), StoreError> {
        if self.progress_error.is_some() {
            return Ok(());
        }
        let p = self.progress;
        match p.store.append(p.session, p.owner, &events).await {
            Ok(_) => {
                self.appended = true;
                Ok(())
            }
            Err(e) if !self.appended => Err(e),
            Err(e) => {
                tracing::warn!(session = %p.session.as_str(), batch = %self.batch, error = %e,
                    "tool progress events could not be appended; the batch goes on");
                self.progress_error = Some(e.to_string());
                Ok(())
            }
        }
    }

    /// The input of call `i`, its references resolved from its dependencies' outputs,
    /// charged to the budget before it is built.
    fn input_of(&mut self, i: usize) -> Result<Box<RawValue>, NotStarted> {
        let input = std::mem::take(&mut self.calls[i].input);
        let call = &self.calls[i];
        if !call.has_refs {
            self.budget
                .charge_input(i, &call.id, call.input_bytes)
                .map_err(NotStarted::OverBudget)?;
            return serde_json::value::to_raw_value(&input).map_err(|e| {
                NotStarted::Failed(ToolError::new(format!("input could not be encoded: {e}")))
            });
        }
        let outputs: HashMap<&str, &RawValue> = call
            .deps
            .iter()
            .filter_map(|&d| {
                let output = self.settled[d].as_ref()?.output.as_deref()?;
                Some((self.calls[d].id.as_str(), output))
            })
            .collect();
        let resolution = Resolution::new(&input, &outputs).map_err(NotStarted::Failed)?;
        self.budget
            .charge_input(i, &call.id, resolution.len())
            .map_err(NotStarted::OverBudget)?;
        resolution.materialise().map_err(NotStarted::Failed)
    }

    /// Call `i` with `input`, under its deadline; never panics.
    fn call(
        &self,
        index: usize,
        input: Box<RawValue>,
    ) -> impl Future<Output = Finished> + Send + use<> {
        let call = &self.calls[index];
        let Registered { tool, timeout } = call.tool.clone();
        let timeout = timeout.unwrap_or(self.executor.settings.timeout);
        let cx = ToolContext::new(
            self.progress.session.clone(),
            call.id.clone(),
            self.executor.pool.clone(),
        )
        .with_trace(self.progress.trace.cloned());
        async move {
            let start = Instant::now();
            let run = AssertUnwindSafe(tool.call_json(input, &cx)).catch_unwind();
            let result = match tokio::time::timeout(timeout, run).await {
                Ok(Ok(Ok(output))) => Ok(output),
                Ok(Ok(Err(e))) => Err((CallStatus::Failed, e.to_string())),
                Ok(Err(_panic)) => Err((CallStatus::Failed, "tool panicked".to_owned())),
                Err(_) => Err((
                    CallStatus::TimedOut,
                    format!("timed out after {} ms", timeout.as_millis()),
                )),
            };
            Finished {
                index,
                result,
                duration: start.elapsed(),
            }
        }
    }

    /// Records a finished call and releases or skips its dependents; stops the batch if
    /// what the call produced goes over the budget.
    fn settle(&mut self, done: Finished) {
        let i = done.index;
        let charged = match &done.result {
            Ok(output) => ("output", output.get().len()),
            Err((_, error)) => ("error", refs::json_len(error.as_str())),
        };
        if let Err(over) = self
            .budget
            .charge_result(i, &self.calls[i].id, charged.0, charged.1)
        {
            // The result is dropped: reported as the reason the batch stopped.
            self.settle_failure(i, CallStatus::Failed, over.to_string(), Some(done.duration));
            self.stop(over);
            return;
        }
        match done.result {
            Ok(output) => {
                self.record(
                    i,
                    CallReport {
                        id: self.calls[i].id.clone(),
                        tool: self.calls[i].tool_name.clone(),
                        status: CallStatus::Succeeded,
                        output: Some(output),
                        error: None,
                        cause: None,
                        duration: Some(done.duration),
                    },
                );
                for d in self.calls[i].dependents.clone() {
                    self.waiting[d] -= 1;
                    if self.waiting[d] == 0 && self.settled[d].is_none() {
                        self.ready.push_back(d);
                    }
                }
            }
            Err((status, error)) => self.settle_failure(i, status, error, Some(done.duration)),
        }
    }

    /// Records call `i` as not succeeded, and every call depending on it, transitively, as
    /// skipped because of it.
    fn settle_failure(
        &mut self,
        i: usize,
        status: CallStatus,
        error: String,
        duration: Option<Duration>,
    ) {
        let id = self.calls[i].id.clone();
        let skip_reason = format!("dependency {id:?} {}: {error}", status_words(status));
        self.record(
            i,
            CallReport {
                id: id.clone(),
                tool: self.calls[i].tool_name.clone(),
                status,
                output: None,
                error: Some(error),
                cause: None,
                duration,
            },
        );
        let mut pending: Vec<usize> = self.calls[i].dependents.clone();
        while let Some(d) = pending.pop() {
            if self.settled[d].is_some() {
                continue;
            }
            pending.extend(self.calls[d].dependents.iter().copied());
            self.record(
                d,
                CallReport {
                    id: self.calls[d].id.clone(),
                    tool: self.calls[d].tool_name.clone(),
                    status: CallStatus::Skipped,
                    output: None,
                    error: Some(skip_reason.clone()),
                    cause: Some(id.clone()),
                    duration: None,
                },
            );
        }
    }

    /// Stops the batch because of `over`: call `over.index` fails with it (unless it is
    /// settled already), calls that started and are not settled fail (they are dropped), and
    /// the rest are skipped with `over`'s call as their cause.
    fn stop(&mut self, over: OverBudget) {
        let reason = over.to_string();
        if self.settled[over.index].is_none() {
            self.settle_failure(over.index, CallStatus::Failed, reason.clone(), None);
        }
        for i in 0..self.calls.len() {
            if self.settled[i].is_some() {
                continue;
            }
            let started = self.started[i];
            self.record(
                i,
                CallReport {
                    id: self.calls[i].id.clone(),
                    tool: self.calls[i].tool_name.clone(),
                    status: if started {
                        CallStatus::Failed
                    } else {
                        CallStatus::Skipped
                    },
                    output: None,
                    error: Some(format!("batch stopped: {reason}")),
                    cause: (!started).then(|| over.id.clone()),
                    duration: None,
                },
            );
        }
        self.refused = Some(over);
    }

    /// Stores a call's report, queues its `tool_finished` event and counts it.
    fn record(&mut self, i: usize, report: CallReport) {
        self.executor
            .metrics
            .record(&report.tool, report.status.as_str(), report.duration);
        let mut data = json!({
            "batch": self.batch,
            "call_id": report.id,
            "tool": report.tool,
            "status": report.status,
        });
        if let Some(duration) = report.duration {
            data["duration_ms"] = json!(millis(duration));
        }
        if let Some(error) = &report.error {
            data["error"] = json!(error);
        }
        if let Some(cause) = &report.cause {
            data["cause"] = json!(cause);
        }
        self.events.push(NewEvent {
            kind: TOOL_FINISHED.to_owned(),
            data: data.to_string(),
        });
        self.settled[i] = Some(report);
    }

    fn started_event(&self, i: usize) -> NewEvent {
        let call = &self.calls[i];
        NewEvent {
            kind: TOOL_STARTED.to_owned(),
            data: json!({"batch": self.batch, "call_id": call.id, "tool": call.tool_name})
                .to_string(),
        }
    }

    fn into_report(self) -> Report {
        let calls = self
            .settled
            .into_iter()
            .zip(&self.calls)
            .map(|(report, call)| {
                // Every call is settled once the loop ends; this is a fallback, not a path.
                report.unwrap_or_else(|| CallReport {
                    id: call.id.clone(),
                    tool: call.tool_name.clone(),
                    status: CallStatus::Skipped,
                    output: None,
                    error: Some("never ran".to_owned()),
                    cause: None,
                    duration: None,
                })
            })
            .collect();
        Report {
            batch: self.batch,
            calls,
            progress_error: self.progress_error,
        }
    }
}

/// `failed`, `timed out`, ... as words in a sentence.
fn status_words(status: CallStatus) -> &'static str {
    match status {
        CallStatus::Succeeded => "succeeded",
        CallStatus::Failed => "failed",
        CallStatus::TimedOut => "timed out",
        CallStatus::Skipped => "was skipped",
    }
}

/// Milliseconds with microsecond precision.
fn millis(duration: Duration) -> f64 {
    (duration.as_micros() as f64) / 1000.0
}
