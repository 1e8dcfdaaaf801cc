//! Path normalization (`api_gateway::path`) on any request path.
//!
//! Routing, auth and the upstream all act on the normalized path, so
//! besides never panicking it must be canonical: absolute, free of dot
//! segments and empty segments, and a fixed point, since a second pass
//! that changed anything would mean two components could read one path two
//! ways. A path already in that form comes back unchanged.

#![no_main]

use api_gateway::path::{is_within, normalize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The gateway gets the path as `&str` from the parsed request target.
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(normalized) = normalize(path) else {
        return;
    };

    assert!(normalized.starts_with('/'), "{path:?} -> {normalized:?}");
    let inner = normalized[1..]
        .strip_suffix('/')
        .unwrap_or(&normalized[1..]);
    if !inner.is_empty() {
        for segment in inner.split('/') {
            assert!(
                !segment.is_empty() && segment != "." && segment != "..",
                "{path:?} -> {normalized:?}: segment {segment:?}"
            );
        }
    }
    assert!(normalized.len() <= path.len(), "{path:?} grew");
    assert_eq!(
        normalize(&normalized).as_deref(),
        Ok(normalized.as_str()),
        "not a fixed point: {path:?}"
    );
    let canonical = !path.contains('%') && normalized.len() == path.len();
    if canonical {
        assert_eq!(normalized, path);
    }

    // Every path is within `/` and within itself, whatever prefix test the
    // routes use.
    assert!(is_within(&normalized, "/"));
    assert!(is_within(&normalized, &normalized));
    if let Some((parent, _)) = normalized.rsplit_once('/') {
        if !parent.is_empty() {
            assert!(
                is_within(&normalized, parent),
                "{normalized:?} in {parent:?}"
            );
        }
    }
});
