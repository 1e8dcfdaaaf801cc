//! The rate-limit key and decision (`api_gateway::plugin::rate_limit`): a
//! `rate_limit` section through the plugin's own validation, the key a
//! request spends from, and GCRA over a run of requests.
//!
//! The input is lines: 1, the section as YAML (`{requests: 5, per: 1s,
//! key: {by: header, name: x-api-key}}`); 2, the client address (empty:
//! unknown); 3, the key header's value, any bytes; 4, the verified claims as
//! JSON; 5, the gaps between requests, one byte each.
//!
//! Beyond "no panic": the key is `scope|kind:value` with the kind the
//! request's data calls for, two different header values never share a
//! budget, and GCRA never lets more than the burst through at once nor
//! refuses a request without a wait to announce.

#![no_main]

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use api_gateway::context::RequestCtx;
use api_gateway::forwarded::IpText;
use api_gateway::jwt::Claims;
use api_gateway::plugin::rate_limit::config::{
    Backends, FailureMode, KeySource, RateLimitPolicy, RawRateLimit, RedisSettings,
};
use api_gateway::plugin::rate_limit::local::LocalStore;
use api_gateway::plugin::rate_limit::{Gcra, RateLimit, Store};
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use pingora_http::RequestHeader;

/// Both backends configured, so that `backend: redis` validates too; the
/// key and the decision do not depend on where budgets are kept.
fn backends() -> Backends {
    Backends {
        local_max_keys: 1000,
        redis: Some(RedisSettings {
            url: "redis://127.0.0.1:6379".into(),
            timeout: Duration::from_millis(50),
            on_failure: FailureMode::FailOpen,
        }),
    }
}

fn request(policy: &RateLimitPolicy, value: Option<&HeaderValue>) -> RequestHeader {
    let mut req = RequestHeader::build("GET", b"/fuzz", None).unwrap();
    if let (KeySource::Header(name), Some(value)) = (&policy.key, value) {
        req.insert_header(name.clone(), value.clone()).unwrap();
    }
    req
}

/// The key the plugin's documentation promises.
fn expected_key(policy: &RateLimitPolicy, value: Option<&HeaderValue>, ctx: &RequestCtx) -> String {
    let scope = &policy.scope;
    let by_ip = || {
        let ip = ctx.client_ip.map(|ip| IpText::new(ip).as_str().to_owned());
        format!("{scope}|ip:{}", ip.as_deref().unwrap_or("unknown"))
    };
    match &policy.key {
        KeySource::Ip => by_ip(),
        KeySource::Claim(name) => match ctx.claims.as_ref().and_then(|c| c.get(name)) {
            Some(serde_json::Value::String(s)) => format!("{scope}|claim:{s}"),
            Some(v) if !v.is_null() => format!("{scope}|claim:{v}"),
            _ => by_ip(),
        },
        KeySource::Header(_) => match value.filter(|v| !v.is_empty()) {
            Some(v) => match std::str::from_utf8(v.as_bytes()) {
                Ok(text) => format!("{scope}|header:{text}"),
                Err(_) => {
                    let hex: String = v.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
                    format!("{scope}|header-hex:{hex}")
                }
            },
            None => by_ip(),
        },
    }
}

/// GCRA over requests at the times `gaps` give: `tat` kept as the store
/// keeps it, decisions checked against the policy.
fn run_gcra(policy: &RateLimitPolicy, gaps: &[u8]) {
    let gcra = Gcra::new(policy.requests, policy.per, policy.burst);
    let mut tat = None;
    let mut now: u64 = 0;
    let mut at_once = 0;
    for &gap in gaps {
        // Gaps from a nanosecond to about four hours (16^15 ns), so that
        // both a flood and a quiet spell happen.
        let step = u64::from(gap & 0x0f) << (4 * u32::from(gap >> 4));
        now = match now.checked_add(step) {
            // The store's clock counts from process start: a century is
            // more than it will ever read.
            Some(next) if next < 100 * 365 * 86_400 * 1_000_000_000 => next,
            _ => break,
        };
        if step > 0 {
            at_once = 0;
        }
        let (decision, next) = gcra.decide(tat, now);
        assert!(decision.remaining < policy.burst, "{decision:?}");
        if decision.allowed {
            at_once += 1;
            assert!(at_once <= policy.burst, "more than the burst at once");
            assert_eq!(decision.retry_after, Duration::ZERO);
            tat = Some(next.expect("an allowed request moves the budget"));
        } else {
            assert!(next.is_none());
            assert!(decision.retry_after > Duration::ZERO, "{decision:?}");
            assert!(decision.retry_after <= decision.reset, "{decision:?}");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(5, |&b| b == b'\n');
    let Some(section) = lines.next().and_then(|l| std::str::from_utf8(l).ok()) else {
        return;
    };
    let Ok(raw) = serde_yaml::from_str::<RawRateLimit>(section) else {
        return;
    };
    let Ok(policy) = RateLimitPolicy::from_raw(raw, "route:/fuzz", &backends()) else {
        return;
    };
    let client_ip = lines
        .next()
        .and_then(|l| std::str::from_utf8(l).ok())
        .and_then(|l| l.trim().parse::<IpAddr>().ok());
    let value = lines.next().and_then(|l| HeaderValue::from_bytes(l).ok());
    let claims = lines
        .next()
        .and_then(|l| serde_json::from_slice::<Claims>(l).ok())
        .map(Arc::new);
    let gaps = lines.next().unwrap_or_default();

    let ctx = RequestCtx {
        client_ip,
        claims,
        ..RequestCtx::default()
    };
    let store = Store::Local(Arc::new(LocalStore::new(16)));
    let limit = RateLimit::new(policy.clone(), store, None);
    let key = limit.key(&request(&policy, value.as_ref()), &ctx);
    assert_eq!(key, expected_key(&policy, value.as_ref(), &ctx));

    // A client choosing its header's bytes must not land on another's
    // budget: a value one bit away is another key.
    if let Some(value) = value.as_ref().filter(|v| !v.is_empty()) {
        let mut other = value.as_bytes().to_vec();
        *other.last_mut().unwrap() ^= 1;
        if let Ok(other) = HeaderValue::from_bytes(&other) {
            let other_key = limit.key(&request(&policy, Some(&other)), &ctx);
            if matches!(policy.key, KeySource::Header(_)) {
                assert_ne!(key, other_key, "{value:?} and {other:?} share a budget");
            }
        }
    }

    run_gcra(&policy, gaps);
});
