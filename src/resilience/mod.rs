//! Resilience policy, with no I/O inside: the circuit breaker that halts a failing source, and
//! when to retry a transient failure.

pub mod breaker;
pub mod retry;
