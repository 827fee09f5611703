//! A batch of tool calls checked as a whole, before anything runs: the [`Plan`].
//!
//! [`Plan::new`] turns the request's `calls` into a dependency graph and refuses the whole
//! batch with a [`PlanError`] naming the field, when: the batch is empty or longer than
//! `tools.max_calls`; a call is malformed (unknown member, wrong type); an `id` is invalid
//! or repeated; a `tool` is not registered; an `input` is larger than
//! `tools.max_input_bytes`; a `depends_on` entry names no call of the batch or repeats;
//! an input's `$ref` is malformed or names a call outside its `depends_on` (see
//! [`refs`]); or the dependencies form a cycle (the error lists the ids
//! around it, `a → b → a`). [`Plan::check_budget`] then refuses a batch whose inputs
//! without references already add up to more than `tools.max_batch_bytes` (see
//! [`budget`](super::budget)).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::Value;

use super::budget::{Budget, OverBudget};
use super::{Registered, ToolRegistry, refs};

/// Longest call id.
pub const MAX_CALL_ID_LEN: usize = 64;

/// One call as the request states it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallSpec {
    /// The call's id within the batch: 1 to 64 of `[A-Za-z0-9_.:-]`.
    pub id: String,
    /// The registered tool to call.
    pub tool: String,
    /// The tool's input; may hold `$ref`s to dependencies' outputs. Default `null`.
    #[serde(default)]
    pub input: Value,
    /// Ids of calls that must succeed before this one starts. Default `[]`.
    #[serde(default)]
    pub depends_on: Vec<String>,
}

/// Limits a batch must respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Most calls per batch.
    pub max_calls: usize,
    /// Largest input of one call, in bytes of compact JSON, as sent and after `$ref`
    /// resolution.
    pub max_input_bytes: usize,
    /// Most bytes of resolved inputs plus outputs one batch may hold (see [`super::budget`]).
    pub max_batch_bytes: usize,
}

/// Why a batch was refused: the offending field (`calls[2].depends_on[0]`) and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PlanError {
    /// Path of the offending field in the request body.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl PlanError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// One call of a checked batch.
#[derive(Clone)]
pub struct PlannedCall {
    /// The call's id.
    pub id: String,
    /// The tool's registered name.
    pub tool_name: String,
    /// The tool.
    pub tool: Registered,
    /// The input as sent (references not yet resolved).
    pub input: Value,
    /// Whether the input holds references to resolve before the call runs.
    pub has_refs: bool,
    /// Bytes of the input as sent, as compact JSON (its final size when it has no
    /// references).
    pub input_bytes: usize,
    /// Indexes of the calls this one depends on.
    pub deps: Vec<usize>,
    /// Indexes of the calls that depend on this one.
    pub dependents: Vec<usize>,
}

impl std::fmt::Debug for PlannedCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlannedCall")
            .field("id", &self.id)
            .field("tool", &self.tool_name)
            .field("deps", &self.deps)
            .finish_non_exhaustive()
    }
}

/// A checked, acyclic batch of calls, in request order.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The calls, in the order the request listed them.
    pub calls: Vec<PlannedCall>,
}

impl Plan {
    /// Checks `items` (the request's `calls` array) against `tools` and `limits`.
    pub fn new(
        items: Vec<Value>,
        tools: &ToolRegistry,
        limits: PlanLimits,
    ) -> Result<Self, PlanError> {
        if items.is_empty() {
            return Err(PlanError::new("calls", "must hold at least one call"));
        }
        if items.len() > limits.max_calls {
            return Err(PlanError::new(
                "calls",
                format!(
                    "at most {} calls per batch (got {})",
                    limits.max_calls,
                    items.len()
                ),
            ));
        }
        let specs = items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                serde_json::from_value::<CallSpec>(item)
                    .map_err(|e| PlanError::new(format!("calls[{i}]"), e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;

        let mut index: HashMap<&str, usize> = HashMap::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            if !is_call_id(&spec.id) {
                return Err(PlanError::new(
                    format!("calls[{i}].id"),
                    "must be 1 to 64 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'",
                ));
            }
            if let Some(first) = index.insert(&spec.id, i) {
                return Err(PlanError::new(
                    format!("calls[{i}].id"),
                    format!("duplicate id {:?} (also calls[{first}].id)", spec.id),
                ));
            }
            if !tools.contains(&spec.tool) {
                let known: Vec<&str> = tools.names().collect();
                return Err(PlanError::new(
                    format!("calls[{i}].tool"),
                    format!(
                        "unknown tool {:?} (registered: {})",
                        spec.tool,
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            }
            let size = refs::json_len(&spec.input);
            if size > limits.max_input_bytes {
                return Err(PlanError::new(
                    format!("calls[{i}].input"),
                    format!(
                        "{size} bytes of JSON, more than the limit of {}",
                        limits.max_input_bytes
                    ),
                ));
            }
        }

        let mut deps = vec![Vec::new(); specs.len()];
        for (i, spec) in specs.iter().enumerate() {
            for (k, dep) in spec.depends_on.iter().enumerate() {
                let Some(&d) = index.get(dep.as_str()) else {
                    return Err(PlanError::new(
                        format!("calls[{i}].depends_on[{k}]"),
                        format!("no call of this batch has id {dep:?}"),
                    ));
                };
                if deps[i].contains(&d) {
                    return Err(PlanError::new(
                        format!("calls[{i}].depends_on[{k}]"),
                        format!("{dep:?} is listed twice"),
                    ));
                }
                deps[i].push(d);
            }
        }

        if let Some(cycle) = find_cycle(&deps) {
            let ids: Vec<&str> = cycle.iter().map(|&i| specs[i].id.as_str()).collect();
            return Err(PlanError::new(
                "calls",
                format!(
                    "dependency cycle: {} (each depends on the next)",
                    ids.join(" → ")
                ),
            ));
        }

        let mut has_refs = vec![false; specs.len()];
        for (i, spec) in specs.iter().enumerate() {
            let allowed = |id: &str| spec.depends_on.iter().any(|d| d == id);
            let count = refs::check(&spec.input, &format!("calls[{i}].input"), &allowed)
                .map_err(|e| PlanError::new(e.path, e.reason))?;
            has_refs[i] = count > 0;
        }

        let mut dependents = vec![Vec::new(); specs.len()];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        let calls = specs
            .into_iter()
            .zip(deps)
            .zip(dependents)
            .zip(has_refs)
            .map(|(((spec, deps), dependents), has_refs)| {
                let input_bytes = refs::json_len(&spec.input);
                let tool = tools
                    .get(&spec.tool)
                    .cloned()
                    .ok_or_else(|| PlanError::new("calls", "tool vanished"))?;
                Ok(PlannedCall {
                    id: spec.id,
                    tool_name: spec.tool,
                    tool,
                    input: spec.input,
                    has_refs,
                    input_bytes,
                    deps,
                    dependents,
                })
            })
            .collect::<Result<Vec<_>, PlanError>>()?;
        Ok(Self { calls })
    }

    /// Checks, before anything runs, what can be known of the batch's budget: the inputs
    /// without references are final, and together must fit `limits.max_batch_bytes`.
    /// Fails naming the call that would go over.
    pub fn check_budget(&self, limits: PlanLimits) -> Result<(), OverBudget> {
        let mut budget = Budget::new(limits.max_input_bytes, limits.max_batch_bytes);
        for (i, call) in self.calls.iter().enumerate() {
            if !call.has_refs {
                budget.charge_input(i, &call.id, call.input_bytes)?;
            }
        }
        Ok(())
    }
}

/// Whether `id` is a valid call id: 1 to 64 of `[A-Za-z0-9_.:-]` (no `#`, which separates
/// a reference's id from its pointer).
pub fn is_call_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CALL_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// A cycle of the graph (`deps[i]`: what `i` depends on), as the indexes around it with the
/// first repeated at the end; `None` if the graph is acyclic.
fn find_cycle(deps: &[Vec<usize>]) -> Option<Vec<usize>> {
    // Kahn's algorithm: peel off calls whose dependencies are all peeled.
    let mut remaining: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents = vec![Vec::new(); deps.len()];
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut ready: Vec<usize> = (0..deps.len()).filter(|&i| remaining[i] == 0).collect();
    let mut peeled = 0;
    while let Some(i) = ready.pop() {
        peeled += 1;
        for &j in &dependents[i] {
            remaining[j] -= 1;
            if remaining[j] == 0 {
                ready.push(j);
            }
        }
    }
    if peeled == deps.len() {
        return None;
    }
    // Every call left has a dependency that is also left: following them must loop.
    let start = (0..deps.len()).find(|&i| remaining[i] > 0)?;
    let mut seen = vec![None; deps.len()];
    let mut path = Vec::new();
    let mut at = start;
    loop {
        if let Some(pos) = seen[at] {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.push(at);
            return Some(cycle);
        }
        seen[at] = Some(path.len());
        path.push(at);
        at = *deps[at].iter().find(|&&d| remaining[d] > 0)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{Tool, ToolContext, ToolError};
    use serde_json::json;

    struct Echo;

    impl Tool for Echo {
        type Input = Value;
        type Output = Value;

        async fn call(&self, input: Value, _: &ToolContext) -> Result<Value, ToolError> {
            Ok(input)
        }
    }

    fn registry() -> ToolRegistry {
        let mut tools = ToolRegistry::new();
        tools.register("echo", Echo).expect("registers");
        tools
    }

    const LIMITS: PlanLimits = PlanLimits {
        max_calls: 4,
        max_input_bytes: 32,
        max_batch_bytes: 64,
    };

    fn plan(calls: Value) -> Result<Plan, PlanError> {
        let Value::Array(items) = calls else {
            panic!("an array")
        };
        Plan::new(items, &registry(), LIMITS)
    }

    #[test]
    fn a_diamond_plans_with_both_directions_of_edges() {
        let p = plan(json!([
            {"id": "a", "tool": "echo", "input": 1},
            {"id": "b", "tool": "echo", "input": {"$ref": "a"}, "depends_on": ["a"]},
            {"id": "c", "tool": "echo", "depends_on": ["a"]},
            {"id": "d", "tool": "echo", "depends_on": ["b", "c"]},
        ]))
        .expect("valid");
        let deps: Vec<_> = p.calls.iter().map(|c| c.deps.clone()).collect();
        assert_eq!(deps, [vec![], vec![0], vec![0], vec![1, 2]]);
        let dependents: Vec<_> = p.calls.iter().map(|c| c.dependents.clone()).collect();
        assert_eq!(dependents, [vec![1, 2], vec![3], vec![3], vec![]]);
        assert!(p.calls[1].has_refs && !p.calls[2].has_refs);
    }

    #[test]
    fn bad_batches_name_the_problem() {
        let cases = [
            (json!([]), "calls: must hold at least one call"),
            (
                Value::Array(vec![json!({"id": "a", "tool": "echo"}); 5]),
                "calls: at most 4 calls per batch (got 5)",
            ),
            (
                json!([{"id": "a", "tool": "echo", "x": 1}]),
                "calls[0]: unknown field `x`",
            ),
            (json!([{"tool": "echo"}]), "calls[0]: missing field `id`"),
            (
                json!([{"id": "a#b", "tool": "echo"}]),
                "calls[0].id: must be 1 to 64",
            ),
            (
                json!([{"id": "a", "tool": "echo"}, {"id": "a", "tool": "echo"}]),
                "calls[1].id: duplicate id \"a\" (also calls[0].id)",
            ),
            (
                json!([{"id": "a", "tool": "nope"}]),
                "calls[0].tool: unknown tool \"nope\" (registered: echo)",
            ),
            (
                json!([{"id": "a", "tool": "echo", "input": "x".repeat(40)}]),
                "calls[0].input: 42 bytes of JSON, more than the limit of 32",
            ),
            (
                json!([{"id": "a", "tool": "echo", "depends_on": ["zz"]}]),
                "calls[0].depends_on[0]: no call of this batch has id \"zz\"",
            ),
            (
                json!([{"id": "a", "tool": "echo"}, {"id": "b", "tool": "echo", "depends_on": ["a", "a"]}]),
                "calls[1].depends_on[1]: \"a\" is listed twice",
            ),
            (
                json!([{"id": "a", "tool": "echo", "depends_on": ["a"]}]),
                "calls: dependency cycle: a → a",
            ),
            (
                json!([
                    {"id": "r", "tool": "echo"},
                    {"id": "a", "tool": "echo", "depends_on": ["r", "c"]},
                    {"id": "b", "tool": "echo", "depends_on": ["a"]},
                    {"id": "c", "tool": "echo", "depends_on": ["b"]},
                ]),
                "calls: dependency cycle: a → c → b → a",
            ),
            (
                json!([{"id": "a", "tool": "echo"}, {"id": "b", "tool": "echo", "input": {"v": {"$ref": "a"}}}]),
                "calls[1].input.v: $ref to \"a\", which is not in this call's depends_on",
            ),
        ];
        for (calls, expected) in cases {
            let err = plan(calls.clone()).map(|_| ()).unwrap_err();
            assert!(
                err.to_string().starts_with(expected),
                "{calls}: got {err}, expected {expected}"
            );
        }
    }

    #[test]
    fn inputs_without_references_are_charged_before_anything_runs() {
        let fits = plan(json!([
            {"id": "a", "tool": "echo", "input": "x".repeat(28)},
            {"id": "b", "tool": "echo", "input": "y".repeat(28)},
            {"id": "c", "tool": "echo", "input": [{"$ref": "a"}, {"$ref": "b"}], "depends_on": ["a", "b"]},
        ]))
        .expect("valid");
        assert_eq!(
            fits.check_budget(LIMITS),
            Ok(()),
            "c is charged when it runs"
        );
        let over = plan(json!([
            {"id": "a", "tool": "echo", "input": "x".repeat(28)},
            {"id": "b", "tool": "echo", "input": "y".repeat(28)},
            {"id": "c", "tool": "echo", "input": "zzzzz"},
        ]))
        .expect("valid");
        let err = over.check_budget(LIMITS).unwrap_err();
        assert_eq!(
            err.to_string(),
            "calls[2] (id \"c\"): input (7 bytes) would bring the batch to 67 bytes, over \
             tools.max_batch_bytes (64)"
        );
    }
}
