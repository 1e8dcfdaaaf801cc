//! Config loading: any text as `gateway.yaml`, through `${VAR}` expansion,
//! the raw shape and validation into the model (`api_gateway::config`),
//! then into the state requests are served from, as startup and a reload
//! build it.
//!
//! A file is either refused with a message or gives a state the gateway
//! can serve with: validation must leave nothing that panics later, so each
//! rate limit it accepts is also asked for a few decisions here.

#![no_main]

use std::time::Duration;

use api_gateway::config::{self, Config};
use api_gateway::plugin::chain::PluginConfig;
use api_gateway::plugin::rate_limit::Gcra;
use api_gateway::state::State;
use libfuzzer_sys::fuzz_target;

/// What `${VAR}` is filled from; the seeds use these names.
fn env(name: &str) -> Option<String> {
    match name {
        "FUZZ_URL" => Some("http://127.0.0.1:3001".into()),
        "FUZZ_SECRET" => Some("s3cret".into()),
        "FUZZ_EMPTY" => Some(String::new()),
        _ => None,
    }
}

/// Validation reads the files a config names (CA roots, certificates, keys,
/// JWKS). A device or a FIFO would block or never end, which says nothing
/// about the gateway, so inputs that could name one are skipped.
fn may_name_a_special_file(text: &str) -> bool {
    ["dev", "proc", "sys", "run", "fd"]
        .iter()
        .any(|dir| text.contains(&format!("{dir}/")))
}

fn parse(text: &str) -> Option<Config> {
    let config = match config::parse(text, &env) {
        Ok(config) => config,
        Err(e) => {
            // To see why a seed is refused: FUZZ_VERBOSE=1, then run the
            // target on it.
            if std::env::var_os("FUZZ_VERBOSE").is_some() {
                eprintln!("refused: {e}");
            }
            return None;
        }
    };
    let routing = &config.routing;
    for route in &routing.routes {
        assert!(route.upstream < routing.upstreams.len(), "{}", route.name);
    }
    let policies = routing
        .routes
        .iter()
        .flat_map(|r| &r.plugins)
        .chain(&routing.unmatched_plugins);
    for plugin in policies {
        if let PluginConfig::RateLimit(limit) = plugin {
            let gcra = Gcra::new(limit.requests, limit.per, limit.burst);
            // A fresh budget admits its burst at once, and the next
            // request after a quiet `per` at the latest.
            let mut tat = None;
            for _ in 0..limit.burst.min(3) {
                let (decision, next) = gcra.decide(tat, 0);
                assert!(decision.allowed, "{limit:?}");
                tat = next;
            }
            let per = u64::try_from(limit.per.as_nanos()).unwrap_or(u64::MAX);
            let later = per.saturating_mul(limit.burst.min(3));
            let (decision, _) = gcra.decide(tat, later);
            assert!(decision.allowed, "{limit:?} at {later} ns");
            assert!(decision.reset <= Duration::from_nanos(gcra.interval) * 3 + limit.per);
        }
    }
    Some(config)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if may_name_a_special_file(text) {
        return;
    }
    let Some(first) = parse(text) else {
        return;
    };
    let Ok((state, _)) = State::build(first.routing, None, None) else {
        return;
    };
    // A reload of the same file, which takes over what it can.
    let again = parse(text).expect("the same text validates twice");
    State::build(again.routing, None, Some(&state)).expect("built once, builds again");
});
