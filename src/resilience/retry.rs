//! Retries, classified. Which failures may be tried again is the caller's to say (transient
//! database errors, before anything was sent); this module says when: exponential backoff
//! with jitter from `backon`, a bounded number of attempts, and never past the call's
//! deadline.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::time::Instant;

/// How often and how soon to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 turns retries off.
    pub attempts: u32,
    /// The first delay; each next one doubles, plus a random jitter of up to itself.
    pub min_delay: Duration,
    /// The longest delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            min_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The delays before each retry: `attempts - 1` of them.
    pub fn delays(&self) -> Delays {
        Delays {
            inner: ExponentialBuilder::default()
                .with_min_delay(self.min_delay)
                .with_max_delay(self.max_delay)
                .with_max_times(self.attempts.saturating_sub(1) as usize)
                .with_jitter()
                .build(),
        }
    }
}

/// The delays of one call's retries.
pub struct Delays {
    inner: backon::ExponentialBackoff,
}

impl Delays {
    /// The delay before the next attempt, if one is left and it would start before
    /// `deadline` (with time to spare for the attempt itself).
    pub fn next_before(&mut self, deadline: Option<Instant>) -> Option<Duration> {
        let delay = self.inner.next()?;
        match deadline {
            Some(deadline) if Instant::now() + delay * 2 >= deadline => None,
            _ => Some(delay),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn delays_grow_with_jitter_and_stop_at_the_attempts_or_the_deadline() {
        let policy = RetryPolicy {
            attempts: 4,
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        };
        let mut delays = policy.delays();
        let all: Vec<Duration> = std::iter::from_fn(|| delays.next_before(None)).collect();
        assert_eq!(all.len(), 3, "three retries after the first attempt");
        for (i, delay) in all.iter().enumerate() {
            let base = Duration::from_millis(100) * 2u32.pow(i as u32);
            assert!(*delay >= base && *delay <= base * 2, "{i}: {delay:?}");
        }
        let soon = Instant::now() + Duration::from_millis(150);
        assert_eq!(policy.delays().next_before(Some(soon)), None);
        assert_eq!(
            RetryPolicy {
                attempts: 1,
                ..policy
            }
            .delays()
            .next_before(None),
            None
        );
    }
}
