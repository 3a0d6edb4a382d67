//! Admission: how many calls a source serves at once, and how much of that one caller may hold.
//!
//! Every call that needs a database connection first takes a slot of its caller's share of the
//! source, then a slot of the source. Both are FIFO semaphores: callers are served in the order
//! they arrived, and a caller that opens many streams queues behind its own share instead of
//! taking every pooled connection. The wait ends at the source's `connect_timeout` or the
//! call's deadline, whichever comes first. The slots are released when the permit drops, which
//! is when the producer ends: a stalled stream gives its slots back at the stall timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Why a call was not admitted.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error(
        "source '{source_name}': the {share} call slot(s) of caller '{caller}' (its share of the \
         source) stayed busy for {waited:?}; retry later"
    )]
    CallerShareBusy {
        source_name: String,
        caller: String,
        share: usize,
        waited: Duration,
    },
    #[error(
        "source '{source_name}': all {slots} call slots stayed busy for {waited:?}; retry later"
    )]
    SourceBusy {
        source_name: String,
        slots: usize,
        waited: Duration,
    },
    #[error("source '{source_name}': the deadline passed while waiting for a call slot")]
    Deadline { source_name: String },
}

/// Both slots of one admitted call; dropping it releases them.
#[derive(Debug)]
pub struct Permit {
    _caller: OwnedSemaphorePermit,
    _source: OwnedSemaphorePermit,
}

/// The slots of one source.
#[derive(Debug)]
pub struct SourceSlots {
    name: String,
    slots: usize,
    share: usize,
    wait_limit: Duration,
    source: Arc<Semaphore>,
    callers: Mutex<HashMap<String, Arc<Semaphore>>>,
    waiting: AtomicI64,
}

impl SourceSlots {
    /// `slots` calls at once, at most `share` of them per caller; a waiting call gives up
    /// after `wait_limit`.
    pub fn new(name: &str, slots: usize, share: usize, wait_limit: Duration) -> SourceSlots {
        SourceSlots {
            name: name.to_owned(),
            slots,
            share: share.clamp(1, slots.max(1)),
            wait_limit,
            source: Arc::new(Semaphore::new(slots)),
            callers: Mutex::new(HashMap::new()),
            waiting: AtomicI64::new(0),
        }
    }

    /// Calls waiting for a slot right now.
    pub fn waiting(&self) -> i64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The most calls one caller may hold at once.
    pub fn share(&self) -> usize {
        self.share
    }

    /// Waits in line for the caller's share, then for the source.
    pub async fn admit(
        &self,
        caller: &str,
        deadline: Option<Instant>,
    ) -> Result<Permit, AdmissionError> {
        let started = Instant::now();
        let mut limit = started + self.wait_limit;
        let deadline_first = deadline.is_some_and(|d| d < limit);
        if let Some(d) = deadline.filter(|_| deadline_first) {
            limit = d;
        }
        let share = {
            let mut callers = self.callers.lock().unwrap_or_else(|e| e.into_inner());
            callers
                .entry(caller.to_owned())
                .or_insert_with(|| Arc::new(Semaphore::new(self.share)))
                .clone()
        };
        let _waiting = Waiting::enter(&self.waiting);
        let timed_out = |busy: AdmissionError| {
            if deadline_first {
                AdmissionError::Deadline {
                    source_name: self.name.clone(),
                }
            } else {
                busy
            }
        };
        let caller_permit = match tokio::time::timeout_at(limit, share.acquire_owned()).await {
            Ok(Ok(permit)) => permit,
            _ => {
                return Err(timed_out(AdmissionError::CallerShareBusy {
                    source_name: self.name.clone(),
                    caller: caller.to_owned(),
                    share: self.share,
                    waited: started.elapsed(),
                }));
            }
        };
        let source_permit =
            match tokio::time::timeout_at(limit, self.source.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                _ => {
                    return Err(timed_out(AdmissionError::SourceBusy {
                        source_name: self.name.clone(),
                        slots: self.slots,
                        waited: started.elapsed(),
                    }));
                }
            };
        Ok(Permit {
            _caller: caller_permit,
            _source: source_permit,
        })
    }
}

/// Counts a call as waiting for as long as it lives.
struct Waiting<'a>(&'a AtomicI64);

impl<'a> Waiting<'a> {
    fn enter(counter: &'a AtomicI64) -> Waiting<'a> {
        counter.fetch_add(1, Ordering::Relaxed);
        Waiting(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_caller_cannot_take_every_slot() {
        let slots = SourceSlots::new("s", 4, 2, Duration::from_secs(5));
        let a1 = slots.admit("a", None).await.unwrap();
        let _a2 = slots.admit("a", None).await.unwrap();
        let refused = slots.admit("a", None).await.unwrap_err();
        assert!(
            matches!(refused, AdmissionError::CallerShareBusy { share: 2, .. }),
            "{refused}"
        );
        // Another caller still gets in.
        let _b1 = slots.admit("b", None).await.unwrap();
        let _b2 = slots.admit("b", None).await.unwrap();
        // The source is full now: a third caller waits for the source, and gets in once a
        // slot is released.
        let waiter = tokio::spawn({
            let slots = Arc::new(slots);
            let s = slots.clone();
            async move { (s.admit("c", None).await.map(|_| ()), slots) }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(a1);
        let (admitted, slots) = waiter.await.unwrap();
        admitted.unwrap();
        assert_eq!(slots.waiting(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_ends_at_the_deadline_when_it_comes_first() {
        let slots = SourceSlots::new("s", 1, 1, Duration::from_secs(30));
        let _held = slots.admit("a", None).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(1);
        let error = slots.admit("b", Some(deadline)).await.unwrap_err();
        assert!(matches!(error, AdmissionError::Deadline { .. }), "{error}");
        let error = slots.admit("b", None).await.unwrap_err();
        assert!(
            matches!(error, AdmissionError::SourceBusy { slots: 1, .. }),
            "{error}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn callers_are_served_in_arrival_order() {
        let slots = Arc::new(SourceSlots::new("s", 1, 1, Duration::from_secs(60)));
        let held = slots.admit("a", None).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for caller in ["b", "c", "d"] {
            let (slots, order) = (slots.clone(), order.clone());
            waiters.push(tokio::spawn(async move {
                let permit = slots.admit(caller, None).await.unwrap();
                order.lock().unwrap().push(caller);
                tokio::time::sleep(Duration::from_millis(10)).await;
                drop(permit);
            }));
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert_eq!(slots.waiting(), 3);
        drop(held);
        for w in waiters {
            w.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec!["b", "c", "d"]);
    }
}
