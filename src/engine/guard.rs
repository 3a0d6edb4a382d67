//! The guarded call, written once. Every RPC's database work on a source passes the source's
//! circuit breaker, then waits for one of the caller's call slots, then checks out a pooled
//! connection before the call's deadline; its outcome is settled with the breaker, and a
//! breaker check or transition is a `compliance.circuit_breaker` hook span.

use std::sync::Arc;

use tokio::time::Instant;

use super::error::breaker_outcome;
use super::{Engine, ExtractError, Source};
use crate::resilience::admission::Permit;
use crate::resilience::breaker::{Pass, State, Transition};

/// A call admitted to a source: its pass through the breaker and its call slots. The slots
/// are given back when the guard drops; the pass is settled by [`Guard::settle`] (a guard
/// dropped unsettled counts as neither success nor failure).
pub(crate) struct Guard {
    source: Arc<Source>,
    pass: Option<Pass>,
    _permit: Permit,
}

impl Guard {
    /// Reports the call's outcome to the source's breaker, once; a state change is a hook
    /// span too.
    pub(crate) fn settle(&mut self, error: Option<&ExtractError>) {
        if let Some(pass) = self.pass.take()
            && let Some(moved) =
                self.source
                    .breaker
                    .finish(pass, breaker_outcome(error), Instant::now())
        {
            breaker_hook(&self.source.name, moved.to, Some(moved));
        }
    }

    /// Reports a failed attempt of a call that would be tried again: a failure of the source
    /// counts with the breaker now, not only through the call's final outcome. Returns
    /// whether the breaker is open now, in which case the call tries no more.
    pub(crate) fn attempt_failed(&self, error: &ExtractError) -> bool {
        if let Some(pass) = &self.pass
            && breaker_outcome(Some(error)) == crate::resilience::breaker::Outcome::Failure
            && let Some(moved) = self.source.breaker.attempt_failed(pass, Instant::now())
        {
            breaker_hook(&self.source.name, moved.to, Some(moved));
        }
        self.source.breaker.state() == crate::resilience::breaker::State::Open
    }

    /// The source this call was admitted to.
    pub(crate) fn source(&self) -> &Arc<Source> {
        &self.source
    }
}

impl Engine {
    /// Lets a call through `source`'s breaker (refused with `CircuitOpen` while open), then
    /// waits, at most until `deadline`, for one of `caller`'s slots.
    pub(crate) async fn admit(
        &self,
        source: &Arc<Source>,
        caller: &str,
        deadline: Option<Instant>,
    ) -> Result<Guard, ExtractError> {
        let (pass, moved) = source.breaker.admit(Instant::now());
        breaker_hook(&source.name, source.breaker.state(), moved);
        let pass = pass.map_err(|refused| ExtractError::CircuitOpen {
            source_name: source.name.clone(),
            retry_after: refused.retry_after,
        })?;
        let permit = source.slots.admit(caller, deadline).await?;
        Ok(Guard {
            source: source.clone(),
            pass: Some(pass),
            _permit: permit,
        })
    }

    /// The whole guarded call: admitted, `work` run (it takes its own connections from the
    /// source's store), and its outcome settled.
    pub(crate) async fn admitted<T>(
        &self,
        source: &Arc<Source>,
        caller: &str,
        deadline: Option<Instant>,
        work: impl AsyncFnOnce() -> Result<T, ExtractError>,
    ) -> Result<T, ExtractError> {
        let mut guard = self.admit(source, caller, deadline).await?;
        let result = work().await;
        guard.settle(result.as_ref().err());
        result
    }
}

/// The `compliance.circuit_breaker` hook: the state checked or reached, and a transition as
/// an event of the span.
pub(crate) fn breaker_hook(source: &str, state: State, moved: Option<Transition>) {
    let span = tracing::info_span!(
        "compliance.circuit_breaker",
        dsr.source = %source,
        dsr.breaker.state = state.as_str(),
    );
    if let Some(t) = moved {
        tracing::info!(
            parent: &span,
            dsr.breaker.from = t.from.as_str(),
            dsr.breaker.to = t.to.as_str(),
            dsr.breaker.calls = t.calls,
            dsr.breaker.failures = t.failures,
            "circuit breaker transition"
        );
    }
}
