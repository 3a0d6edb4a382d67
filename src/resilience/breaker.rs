//! The circuit breaker of one source: explicit Closed, Open and HalfOpen states, driven by the
//! source's infrastructure failures over a sliding window.
//!
//! Pure state with no I/O: callers pass the time in (tokio's clock, so tests pause it) and
//! report each call's outcome. Closed lets every call through and counts outcomes in a window
//! of ten buckets; when at least `min_calls` were counted and the share of failures is above
//! `failure_ratio`, it opens. Open refuses calls for `cool_down`, then turns HalfOpen, which lets
//! at most `probes` calls through at once: one success closes it, one failure opens it again.
//! Outcomes that say nothing about the source (a caller's bad input or deadline) are neutral.
//! Every state change is logged and published on a watch channel, which health and metrics
//! follow.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// The breaker's settings (`[sources.circuit_breaker]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerSettings {
    /// Opens when the share of failures in the window is above this (0.02 is 2%).
    pub failure_ratio: f64,
    /// ... and at least this many calls were counted in the window.
    pub min_calls: u32,
    /// How far back calls are counted.
    pub window: Duration,
    /// How long it stays open before letting probes through.
    pub cool_down: Duration,
    /// Probe calls let through at once while half-open.
    pub probes: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        BreakerSettings {
            failure_ratio: 0.02,
            min_calls: 50,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(30),
            probes: 1,
        }
    }
}

/// A breaker state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    /// The value of the `dsr_circuit_breaker_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn gauge(self) -> i64 {
        match self {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        }
    }
}

/// What a finished call says about the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// An infrastructure failure of the source.
    Failure,
    /// Says nothing about the source: bad input, the caller's deadline, a client that left.
    Neutral,
}

/// A change of state, with the window's counts when it happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub calls: u32,
    pub failures: u32,
}

/// A call refused while the breaker is open (or its probes are taken).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// When a retry may be let through.
    pub retry_after: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    calls: u32,
    failures: u32,
}

#[derive(Debug)]
struct Inner {
    state: State,
    opened_at: Option<Instant>,
    buckets: VecDeque<Bucket>,
    probes_out: u32,
}

/// The breaker of one source.
#[derive(Debug)]
pub struct Breaker {
    source: String,
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    published: watch::Sender<State>,
}

/// A call let through. Report its outcome with [`Breaker::finish`]; a pass dropped without
/// an outcome counts as neutral, so a probe is never lost.
#[derive(Debug)]
pub struct Pass {
    breaker: Arc<Breaker>,
    probe: bool,
    finished: bool,
}

impl Pass {
    /// Whether this call is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        if !self.finished {
            self.breaker
                .settle(self.probe, Outcome::Neutral, Instant::now());
        }
    }
}

impl Breaker {
    pub fn new(source: &str, settings: BreakerSettings) -> Arc<Breaker> {
        Arc::new(Breaker {
            source: source.to_owned(),
            settings,
            inner: Mutex::new(Inner {
                state: State::Closed,
                opened_at: None,
                buckets: VecDeque::new(),
                probes_out: 0,
            }),
            published: watch::Sender::new(State::Closed),
        })
    }

    /// The state now, and its changes.
    pub fn watch(&self) -> watch::Receiver<State> {
        self.published.subscribe()
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a call through, or refuses it while open. An open breaker whose cool-down is over
    /// turns half-open here.
    pub fn admit(self: &Arc<Self>, now: Instant) -> (Result<Pass, Refused>, Option<Transition>) {
        let mut inner = self.lock();
        let mut transition = None;
        if inner.state == State::Open {
            let reopen_at = inner.opened_at.unwrap_or(now) + self.settings.cool_down;
            if now < reopen_at {
                return (
                    Err(Refused {
                        retry_after: reopen_at - now,
                    }),
                    None,
                );
            }
            transition = Some(self.change(&mut inner, State::HalfOpen));
        }
        let probe = inner.state == State::HalfOpen;
        if probe {
            if inner.probes_out >= self.settings.probes.max(1) {
                return (
                    Err(Refused {
                        retry_after: self.settings.cool_down,
                    }),
                    transition,
                );
            }
            inner.probes_out += 1;
        }
        let pass = Pass {
            breaker: self.clone(),
            probe,
            finished: false,
        };
        (Ok(pass), transition)
    }

    /// Reports a call's outcome; returns the state change it caused, if any.
    pub fn finish(&self, mut pass: Pass, outcome: Outcome, now: Instant) -> Option<Transition> {
        pass.finished = true;
        self.settle(pass.probe, outcome, now)
    }

    /// Reports one failed attempt of a call that goes on (it is tried again): the source
    /// failed, whatever the call's final outcome, so the failure counts now. A probe's failed
    /// attempt opens the breaker again. The pass stays open for the call's final outcome.
    pub fn attempt_failed(&self, pass: &Pass, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        match inner.state {
            State::HalfOpen if pass.probe => {
                inner.opened_at = Some(now);
                Some(self.change(&mut inner, State::Open))
            }
            State::Closed => self.count_closed(&mut inner, true, now),
            _ => None,
        }
    }

    fn settle(&self, probe: bool, outcome: Outcome, now: Instant) -> Option<Transition> {
        let mut inner = self.lock();
        if probe {
            inner.probes_out = inner.probes_out.saturating_sub(1);
        }
        match (inner.state, outcome) {
            (_, Outcome::Neutral) => None,
            (State::HalfOpen, Outcome::Success) => Some(self.change(&mut inner, State::Closed)),
            (State::HalfOpen, Outcome::Failure) => {
                inner.opened_at = Some(now);
                Some(self.change(&mut inner, State::Open))
            }
            (State::Open, _) => None,
            (State::Closed, outcome) => {
                self.count_closed(&mut inner, outcome == Outcome::Failure, now)
            }
        }
    }

    /// Counts one outcome while closed, and opens when the window's failure ratio is over.
    fn count_closed(&self, inner: &mut Inner, failure: bool, now: Instant) -> Option<Transition> {
        self.count(inner, failure, now);
        let (calls, failures) = totals(inner);
        let ratio = f64::from(failures) / f64::from(calls.max(1));
        if calls >= self.settings.min_calls && ratio > self.settings.failure_ratio {
            inner.opened_at = Some(now);
            Some(self.change(inner, State::Open))
        } else {
            None
        }
    }

    /// Counts one outcome in the window, dropping buckets that left it.
    fn count(&self, inner: &mut Inner, failure: bool, now: Instant) {
        let window = self.settings.window;
        while inner
            .buckets
            .front()
            .is_some_and(|b| now.saturating_duration_since(b.start) >= window)
        {
            inner.buckets.pop_front();
        }
        let width = window / 10;
        let fresh = match inner.buckets.back() {
            Some(b) => now.saturating_duration_since(b.start) >= width,
            None => true,
        };
        if fresh {
            inner.buckets.push_back(Bucket {
                start: now,
                calls: 0,
                failures: 0,
            });
        }
        let bucket = inner.buckets.back_mut().expect("a bucket was just ensured");
        bucket.calls += 1;
        bucket.failures += u32::from(failure);
    }

    fn change(&self, inner: &mut Inner, to: State) -> Transition {
        let (calls, failures) = totals(inner);
        let transition = Transition {
            from: inner.state,
            to,
            calls,
            failures,
        };
        inner.state = to;
        if to != State::HalfOpen {
            inner.buckets.clear();
            inner.probes_out = 0;
        }
        match to {
            State::Open => tracing::warn!(
                source = %self.source, from = transition.from.as_str(), calls, failures,
                cool_down_ms = self.settings.cool_down.as_millis() as u64,
                "circuit breaker opened: calls to this source fail fast"
            ),
            _ => tracing::info!(
                source = %self.source, from = transition.from.as_str(), to = to.as_str(),
                "circuit breaker changed state"
            ),
        }
        self.published.send_replace(to);
        transition
    }
}

fn totals(inner: &Inner) -> (u32, u32) {
    inner
        .buckets
        .iter()
        .fold((0, 0), |(c, f), b| (c + b.calls, f + b.failures))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            failure_ratio: 0.02,
            min_calls: 50,
            window: Duration::from_secs(60),
            cool_down: Duration::from_secs(30),
            probes: 1,
        }
    }

    fn call(breaker: &Arc<Breaker>, outcome: Outcome) -> Option<Transition> {
        let (pass, moved) = breaker.admit(Instant::now());
        let pass = pass.expect("let through");
        assert!(moved.is_none());
        breaker.finish(pass, outcome, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn failed_attempts_count_even_when_the_call_succeeds_in_the_end() {
        let breaker = Breaker::new("s", settings());
        // 25 calls that each failed once and then succeeded: 50 outcomes, 25 failures.
        let mut opened = None;
        for _ in 0..25 {
            let (pass, _) = breaker.admit(Instant::now());
            let pass = pass.expect("let through");
            opened = opened.or(breaker.attempt_failed(&pass, Instant::now()));
            opened = opened.or(breaker.finish(pass, Outcome::Success, Instant::now()));
        }
        let opened = opened.expect("a source that fails every first attempt opens the breaker");
        assert_eq!(
            (opened.to, opened.calls, opened.failures),
            (State::Open, 50, 25)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_whose_attempt_fails_opens_again() {
        let breaker = Breaker::new("s", settings());
        for _ in 0..50 {
            call(&breaker, Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(31)).await;
        let (probe, moved) = breaker.admit(Instant::now());
        assert_eq!(moved.map(|m| m.to), Some(State::HalfOpen));
        let probe = probe.unwrap();
        let reopened = breaker.attempt_failed(&probe, Instant::now()).unwrap();
        assert_eq!(reopened.to, State::Open);
        assert_eq!(
            breaker.finish(probe, Outcome::Success, Instant::now()),
            None
        );
        assert_eq!(breaker.state(), State::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_above_the_failure_ratio_once_the_window_has_enough_calls() {
        let breaker = Breaker::new("s", settings());
        // Two failures in 49 calls: not enough calls to judge.
        for i in 0..49 {
            let outcome = if i < 2 {
                Outcome::Failure
            } else {
                Outcome::Success
            };
            assert_eq!(call(&breaker, outcome), None);
        }
        // The 50th call makes 2/50 = 4% > 2%.
        let opened = call(&breaker, Outcome::Success).expect("opens");
        assert_eq!(
            (opened.from, opened.to, opened.calls, opened.failures),
            (State::Closed, State::Open, 50, 2)
        );
        assert_eq!(*breaker.watch().borrow(), State::Open);
        let (refused, _) = breaker.admit(Instant::now());
        assert_eq!(refused.unwrap_err().retry_after, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn one_failure_in_fifty_stays_closed_and_old_failures_leave_the_window() {
        let breaker = Breaker::new("s", settings());
        assert_eq!(call(&breaker, Outcome::Failure), None);
        for _ in 0..60 {
            assert_eq!(call(&breaker, Outcome::Success), None, "1/61 is below 2%");
        }
        tokio::time::advance(Duration::from_secs(61)).await;
        // The window forgot everything: 49 failures out of 49 calls are too few to judge.
        for _ in 0..49 {
            assert_eq!(call(&breaker, Outcome::Failure), None);
        }
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn neutral_outcomes_are_not_counted() {
        let breaker = Breaker::new("s", settings());
        for _ in 0..100 {
            assert_eq!(call(&breaker, Outcome::Neutral), None);
        }
        assert_eq!(breaker.state(), State::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_after_the_cool_down_lets_one_probe_and_closes_on_success() {
        let breaker = Breaker::new(
            "s",
            BreakerSettings {
                min_calls: 1,
                ..settings()
            },
        );
        call(&breaker, Outcome::Failure).expect("opens");
        tokio::time::advance(Duration::from_secs(29)).await;
        let (refused, _) = breaker.admit(Instant::now());
        assert_eq!(refused.unwrap_err().retry_after, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        let (probe, moved) = breaker.admit(Instant::now());
        let probe = probe.expect("a probe");
        assert!(probe.is_probe());
        assert_eq!(moved.unwrap().to, State::HalfOpen);
        // Only one probe at a time.
        assert!(breaker.admit(Instant::now()).0.is_err());
        let closed = breaker.finish(probe, Outcome::Success, Instant::now());
        assert_eq!(closed.unwrap().to, State::Closed);
        assert!(breaker.admit(Instant::now()).0.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again_and_a_dropped_probe_frees_its_slot() {
        let breaker = Breaker::new(
            "s",
            BreakerSettings {
                min_calls: 1,
                ..settings()
            },
        );
        call(&breaker, Outcome::Failure).expect("opens");
        tokio::time::advance(Duration::from_secs(30)).await;
        let (probe, _) = breaker.admit(Instant::now());
        drop(probe.unwrap());
        let (probe, _) = breaker.admit(Instant::now());
        let reopened = breaker.finish(
            probe.expect("the slot was freed"),
            Outcome::Failure,
            Instant::now(),
        );
        assert_eq!(reopened.unwrap().to, State::Open);
        let (refused, _) = breaker.admit(Instant::now());
        assert_eq!(refused.unwrap_err().retry_after, Duration::from_secs(30));
    }
}
