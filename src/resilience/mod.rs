//! Resilience policy: the circuit breaker that halts a failing source, when to retry a
//! transient failure, and admission (how many calls a source serves at once, and each
//! caller's share). States and policy only: no database I/O inside, and time is passed in.

pub mod admission;
pub mod breaker;
pub mod retry;
