//! The memory budget of one batch: what its calls may make the gateway hold.
//!
//! A batch's request is small, but a call's input may reference a dependency's output many
//! times (`[{"$ref": "a"}, {"$ref": "a"}, ..]`), and each level of such references
//! multiplies the size: 4,000 references to a 60 KB output are 240 MB, one more level a
//! terabyte. So sizes are charged before anything is built:
//!
//! - **Each call's input after `$ref` resolution** must fit `tools.max_input_bytes`, the
//!   limit the input as sent already has. Its size is computed from the lengths of the
//!   referenced values' text ([`Resolution::len`](super::refs::Resolution::len)) before a
//!   byte of it is written.
//! - **The batch** may hold at most `tools.max_batch_bytes`: every call's resolved input
//!   (charged when it starts), plus every call's output or error (charged when it ends).
//!   Outputs are kept as JSON text, references point into that text rather than copying
//!   it, and the response is written from it once (never copied into a tree first): the
//!   response is the outputs once more, so what a batch makes the gateway hold is bounded
//!   by about twice the figure.
//!
//! A batch that goes over is stopped ([`OverBudget`], a 413 naming the call): calls not yet
//! started never start, running ones are dropped, and the batch's events end with a
//! `tool_finished` for every call. Inputs as sent are checked before anything runs: a call
//! whose input is over `tools.max_input_bytes` is a 400, and calls whose inputs hold no
//! reference (so their size is already final) that add up to more than
//! `tools.max_batch_bytes` are a 413; then nothing runs and nothing is written.

/// A batch stopped because it would go over a limit: the call that would, and why.
///
/// Answered `413` with code `tool_budget_exceeded` and this as the message, e.g.
/// `calls[1] (id "b"): input after $ref resolution is 240012021 bytes, over
/// tools.max_input_bytes (65536)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("calls[{index}] (id {id:?}): {reason}")]
pub struct OverBudget {
    /// Position of the call in the request's `calls`.
    pub index: usize,
    /// The call's id.
    pub id: String,
    /// What it would go over.
    pub reason: String,
}

/// What a batch has charged so far, against its limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    max_input_bytes: usize,
    max_batch_bytes: usize,
    used: usize,
}

impl Budget {
    /// A fresh budget: each resolved input at most `max_input_bytes`, the batch at most
    /// `max_batch_bytes`.
    pub fn new(max_input_bytes: usize, max_batch_bytes: usize) -> Self {
        Self {
            max_input_bytes,
            max_batch_bytes,
            used: 0,
        }
    }

    /// Bytes charged so far.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Charges the resolved input of call `index` (`id`), `len` bytes, before it is built.
    pub fn charge_input(&mut self, index: usize, id: &str, len: usize) -> Result<(), OverBudget> {
        if len > self.max_input_bytes {
            return Err(over(
                index,
                id,
                format!(
                    "input after $ref resolution is {len} bytes, over tools.max_input_bytes ({})",
                    self.max_input_bytes
                ),
            ));
        }
        self.charge(index, id, "input", len)
    }

    /// Charges what call `index` (`id`) produced: its output (`"output"`) or error
    /// (`"error"`), `len` bytes.
    pub fn charge_result(
        &mut self,
        index: usize,
        id: &str,
        what: &str,
        len: usize,
    ) -> Result<(), OverBudget> {
        self.charge(index, id, what, len)
    }

    fn charge(&mut self, index: usize, id: &str, what: &str, len: usize) -> Result<(), OverBudget> {
        let total = self.used.saturating_add(len);
        if total > self.max_batch_bytes {
            return Err(over(
                index,
                id,
                format!(
                    "{what} ({len} bytes) would bring the batch to {total} bytes, over \
                     tools.max_batch_bytes ({})",
                    self.max_batch_bytes
                ),
            ));
        }
        self.used = total;
        Ok(())
    }
}

fn over(index: usize, id: &str, reason: String) -> OverBudget {
    OverBudget {
        index,
        id: id.to_owned(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_and_results_add_up_to_the_batch_limit() {
        let mut budget = Budget::new(100, 250);
        budget.charge_input(0, "a", 100).expect("fits");
        let err = budget.charge_input(1, "b", 101).unwrap_err();
        assert_eq!(
            err.to_string(),
            "calls[1] (id \"b\"): input after $ref resolution is 101 bytes, over \
             tools.max_input_bytes (100)"
        );
        budget.charge_result(0, "a", "output", 100).expect("fits");
        assert_eq!(budget.used(), 200);
        let err = budget.charge_input(1, "b", 60).unwrap_err();
        assert_eq!(
            err.to_string(),
            "calls[1] (id \"b\"): input (60 bytes) would bring the batch to 260 bytes, over \
             tools.max_batch_bytes (250)"
        );
        assert_eq!(budget.used(), 200, "a refused charge is not kept");
        budget.charge_input(1, "b", 50).expect("fits exactly");
        let err = budget.charge_result(1, "b", "error", 1).unwrap_err();
        assert!(err.reason.starts_with("error (1 bytes)"), "{err}");
        let err = budget.charge_input(2, "c", usize::MAX).unwrap_err();
        assert!(err.reason.contains("max_input_bytes"), "{err}");
    }
}
