//! Whether a failed try is tried again: the route's retry policy applied to
//! one failure, and the failures told apart from Pingora's errors.
//!
//! Never once the response has started; never a method the policy does not
//! retry, unless nothing was sent (a connect failure); never a body that
//! did not fit Pingora's 64 KiB replay buffer; never past the route's
//! deadline. For a request the upstream received, its retry budget has the
//! last word, and is only asked when everything else allows the retry.

use http::Method;
use pingora::{Error, ErrorSource, ErrorType};

use crate::config::RetryPolicy;
use crate::upstream::Failure;

/// What is known of a failed try when deciding on the next one.
pub struct FailedTry<'a> {
    pub failure: Failure,
    pub method: &'a Method,
    /// Tries made so far, the failed one included.
    pub attempts: u8,
    /// The request body went beyond what can be sent again.
    pub body_truncated: bool,
    /// Some of the response reached the client.
    pub response_started: bool,
    pub deadline_passed: bool,
}

/// Whether the policy wants another try (the budget not yet asked).
pub fn wanted(policy: &RetryPolicy, t: &FailedTry) -> bool {
    let on = match t.failure {
        Failure::Connect => policy.on_connect_failure,
        Failure::Reset => policy.on_reset,
        Failure::Timeout => policy.on_timeout,
        Failure::Status(status) => policy.on_statuses.binary_search(&status).is_ok(),
    };
    // A failed connect sent nothing: any method, any body may go again.
    let nothing_sent = t.failure == Failure::Connect;
    on && t.attempts < policy.attempts
        && !t.response_started
        && !t.deadline_passed
        && (nothing_sent || (policy.methods.contains(t.method) && !t.body_truncated))
}

/// How a try that had connected failed, from the error Pingora reports;
/// `None` when it was not the upstream's doing (the client left).
pub fn failure_of(e: &Error) -> Option<Failure> {
    if *e.esource() != ErrorSource::Upstream {
        return None;
    }
    Some(match e.etype() {
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => Failure::Timeout,
        _ => Failure::Reset,
    })
}

const STATUS_RETRY: &str = "a status the route retries";

/// The error that ends a try whose response status is to be retried, before
/// any of the response goes to the client.
pub fn retry_status(status: u16) -> Box<Error> {
    let mut e = Error::explain(
        ErrorType::Custom(STATUS_RETRY),
        format!("upstream answered {status}"),
    );
    e.set_retry(true);
    e
}

pub fn is_status_retry(e: &Error) -> bool {
    *e.etype() == ErrorType::Custom(STATUS_RETRY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            attempts: 3,
            on_connect_failure: true,
            on_reset: true,
            on_timeout: false,
            on_statuses: vec![502, 503],
            methods: vec![Method::GET],
            per_try_timeout: None,
        }
    }

    fn failed(failure: Failure, method: &Method) -> FailedTry<'_> {
        FailedTry {
            failure,
            method,
            attempts: 1,
            body_truncated: false,
            response_started: false,
            deadline_passed: false,
        }
    }

    #[test]
    fn the_policy_names_what_is_retried() {
        let p = policy();
        let get = Method::GET;
        assert!(wanted(&p, &failed(Failure::Status(503), &get)));
        assert!(!wanted(&p, &failed(Failure::Status(500), &get)));
        assert!(wanted(&p, &failed(Failure::Reset, &get)));
        assert!(!wanted(&p, &failed(Failure::Timeout, &get)));
    }

    #[test]
    fn what_was_sent_is_only_sent_again_when_safe() {
        let p = policy();
        let post = Method::POST;
        assert!(
            wanted(&p, &failed(Failure::Connect, &post)),
            "nothing was sent"
        );
        assert!(
            !wanted(&p, &failed(Failure::Status(503), &post)),
            "not idempotent"
        );
        let get = Method::GET;
        let big = FailedTry {
            body_truncated: true,
            ..failed(Failure::Status(503), &get)
        };
        assert!(!wanted(&p, &big), "the body cannot be replayed");
        let started = FailedTry {
            response_started: true,
            ..failed(Failure::Reset, &get)
        };
        assert!(!wanted(&p, &started));
        let late = FailedTry {
            deadline_passed: true,
            ..failed(Failure::Connect, &get)
        };
        assert!(!wanted(&p, &late));
        let third = FailedTry {
            attempts: 3,
            ..failed(Failure::Connect, &get)
        };
        assert!(!wanted(&p, &third), "out of attempts");
    }

    #[test]
    fn failures_are_told_apart() {
        let mut timeout = Error::new(ErrorType::ReadTimedout);
        timeout.as_up();
        assert_eq!(failure_of(&timeout), Some(Failure::Timeout));
        let mut closed = Error::new(ErrorType::ConnectionClosed);
        closed.as_up();
        assert_eq!(failure_of(&closed), Some(Failure::Reset));
        let mut client_left = Error::new(ErrorType::ConnectionClosed);
        client_left.as_down();
        assert_eq!(failure_of(&client_left), None);
        assert!(is_status_retry(&retry_status(503)));
        assert!(retry_status(503).retry());
    }
}
