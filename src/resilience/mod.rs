//! Resilience policy, with no I/O inside: the circuit breaker that halts a failing source.

pub mod breaker;
