//! Whether and when to try again: a small pure policy that the provider
//! chain obeys (tower's `retry::Policy`, Vector's `RetryLogic`).
//!
//! - After a failed call: a permanent error ends the message; a transient one
//!   is retried on the same provider up to `attempts` calls a pass (waiting
//!   what the provider asked for, or the backoff); a provider that is down
//!   hands the message to the next one at once.
//! - An *ambiguous* failure (the request was written, no answer came) is never
//!   handed to another provider: under `at_most_once` it ends the message as
//!   unconfirmed; under `at_least_once` the chain pins the message to that
//!   provider and retries there only.
//! - After a pass in which no provider took the message: another pass after
//!   a backoff, until `passes` passes called a provider whose breaker was
//!   closed. A pass that could call nothing (every breaker open, or the pinned
//!   provider's) is an outage: the message is held and the pass not counted.
//!
//! So a message ends within [`Policy::bound`] of its first call, except while
//! every provider it may use is open.

use std::time::Duration;
use tidings_core::backoff::Backoff;
use tidings_core::config::{Ambiguity, RetryConfig};
use tidings_providers::{ErrorKind, ProviderError};

/// How a message that no provider took ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The message itself is at fault: no provider will ever take it.
    Permanent,
    /// Every provider was tried for every pass.
    Exhausted,
    /// A provider may have taken it; it is not sent again.
    Unconfirmed,
}

/// What to do after a call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterCall {
    /// Call the same provider again after this wait.
    Retry(Duration),
    /// Move on to the next provider (or end the pass).
    Next,
    /// The message ends now.
    Stop(Ending),
}

/// What to do after a pass in which no provider took the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterPass {
    /// Start another pass after this wait.
    Again(Duration),
    /// Nothing could be called: wait for a breaker to probe; not counted.
    Hold,
    /// The message ends.
    Stop(Ending),
}

#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Calls to one provider in one pass, the first included.
    pub attempts: u32,
    /// Counted passes before the message is exhausted.
    pub passes: u32,
    pub backoff: Backoff,
    /// A provider's `Retry-After` longer than this sends the message on instead.
    pub max_wait: Duration,
    pub ambiguity: Ambiguity,
}

impl Policy {
    pub fn new(retry: &RetryConfig, ambiguity: Ambiguity) -> Self {
        Policy {
            attempts: retry.attempts.max(1),
            passes: retry.passes.max(1),
            backoff: Backoff::new(retry.initial_backoff, retry.max_backoff),
            max_wait: retry.max_backoff,
            ambiguity,
        }
    }

    /// After call number `calls` (1-based) to one provider in this pass failed with `error`.
    pub fn after_call(&self, calls: u32, error: &ProviderError) -> AfterCall {
        if error.kind == ErrorKind::Permanent {
            return AfterCall::Stop(Ending::Permanent);
        }
        if error.ambiguous && self.ambiguity == Ambiguity::AtMostOnce {
            return AfterCall::Stop(Ending::Unconfirmed);
        }
        if error.kind == ErrorKind::ProviderDown && !error.ambiguous {
            return AfterCall::Next;
        }
        if calls >= self.attempts || error.retry_after.is_some_and(|d| d > self.max_wait) {
            return AfterCall::Next;
        }
        AfterCall::Retry(error.retry_after.unwrap_or_else(|| self.backoff.delay(calls - 1)))
    }

    /// After pass number `passes` (counted ones, 1-based after a counted
    /// pass) ended with no provider taking the message. `counted`: a provider
    /// with a closed breaker was called in it. `give_up_when_down`: end
    /// instead of holding when nothing could be called (a critical message
    /// that can fall back to another channel). `pinned`: an ambiguous answer
    /// tied the message to one provider.
    pub fn after_pass(&self, passes: u32, counted: bool, give_up_when_down: bool, pinned: bool) -> AfterPass {
        let ending = if pinned { Ending::Unconfirmed } else { Ending::Exhausted };
        if !counted {
            // A pinned message may not go elsewhere: it waits for its provider.
            return if give_up_when_down && !pinned { AfterPass::Stop(ending) } else { AfterPass::Hold };
        }
        if passes >= self.passes {
            return AfterPass::Stop(ending);
        }
        AfterPass::Again(self.backoff.delay(passes - 1))
    }

    /// The longest a message takes from its first call to its end while
    /// some provider it may use can be called: every counted pass calls
    /// each of `providers` `attempts` times, each call bounded by `timeout`
    /// (plus its backoff or an accepted `Retry-After`), with a pass backoff
    /// between passes.
    pub fn bound(&self, providers: u32, timeout: Duration) -> Duration {
        let call = timeout + self.max_wait;
        let pass = call.saturating_mul(self.attempts * providers.max(1));
        pass.saturating_mul(self.passes) + self.max_wait.saturating_mul(self.passes - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ambiguity: Ambiguity) -> Policy {
        Policy {
            attempts: 3,
            passes: 2,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(1)),
            max_wait: Duration::from_secs(1),
            ambiguity,
        }
    }

    #[test]
    fn transient_errors_retry_on_the_same_provider_then_move_on() {
        let p = policy(Ambiguity::AtMostOnce);
        let e = ProviderError::transient("503");
        assert!(matches!(p.after_call(1, &e), AfterCall::Retry(d) if d <= Duration::from_millis(100)));
        assert!(matches!(p.after_call(2, &e), AfterCall::Retry(d) if d <= Duration::from_millis(200)));
        assert_eq!(p.after_call(3, &e), AfterCall::Next);
    }

    #[test]
    fn a_retry_after_is_obeyed_unless_longer_than_we_wait() {
        let p = policy(Ambiguity::AtMostOnce);
        let e = ProviderError::transient("429").retry_after(Some(Duration::from_millis(700)));
        assert_eq!(p.after_call(1, &e), AfterCall::Retry(Duration::from_millis(700)));
        let e = ProviderError::transient("429").retry_after(Some(Duration::from_secs(30)));
        assert_eq!(p.after_call(1, &e), AfterCall::Next);
    }

    #[test]
    fn permanent_errors_stop_and_down_providers_are_left_at_once() {
        let p = policy(Ambiguity::AtLeastOnce);
        assert_eq!(p.after_call(1, &ProviderError::permanent("bad")), AfterCall::Stop(Ending::Permanent));
        assert_eq!(p.after_call(1, &ProviderError::down("refused")), AfterCall::Next);
    }

    #[test]
    fn an_ambiguous_answer_ends_at_most_once_messages_and_retries_at_least_once_ones() {
        let e = ProviderError::ambiguous("timed out");
        assert_eq!(policy(Ambiguity::AtMostOnce).after_call(1, &e), AfterCall::Stop(Ending::Unconfirmed));
        let p = policy(Ambiguity::AtLeastOnce);
        assert!(matches!(p.after_call(1, &e), AfterCall::Retry(_)));
        assert_eq!(p.after_call(3, &e), AfterCall::Next, "the pass on the pinned provider ends");
        assert_eq!(p.after_pass(2, true, false, true), AfterPass::Stop(Ending::Unconfirmed));
    }

    #[test]
    fn passes_count_only_when_a_closed_provider_was_called() {
        let p = policy(Ambiguity::AtMostOnce);
        assert!(matches!(p.after_pass(1, true, false, false), AfterPass::Again(d) if d <= Duration::from_millis(100)));
        assert_eq!(p.after_pass(2, true, false, false), AfterPass::Stop(Ending::Exhausted));
        // Every breaker open: hold, however many passes went before.
        assert_eq!(p.after_pass(2, false, false, false), AfterPass::Hold);
        // ...unless the message can fall back to another channel; a pinned one never does.
        assert_eq!(p.after_pass(0, false, true, false), AfterPass::Stop(Ending::Exhausted));
        assert_eq!(p.after_pass(0, false, true, true), AfterPass::Hold);
    }

    #[test]
    fn the_time_bound_follows_from_the_config() {
        let p = policy(Ambiguity::AtMostOnce);
        // 2 passes × 3 attempts × 2 providers × (5 s + 1 s) + 1 s between passes.
        assert_eq!(p.bound(2, Duration::from_secs(5)), Duration::from_secs(73));
    }
}
