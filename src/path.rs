//! Request path normalization, and the one prefix test on it.
//!
//! The gateway routes, authorizes and forwards on the *same* path, so it has to
//! be canonical before any of those decisions: otherwise `/users/../products/1`
//! could pass a `/users` rule and still reach `/products` upstream (path
//! smuggling). Paths whose meaning upstreams disagree on are refused outright.

use std::fmt;

/// Why a request path was refused; each becomes a 400 answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Not origin-form: empty or does not start with '/'.
    NotAbsolute,
    /// `%` not followed by two hex digits.
    BadPercentEncoding,
    /// `%2F`, `%5C` or `%00` (any hex case): an encoded separator or NUL that upstreams disagree on.
    EncodedSeparator,
    /// An encoded control character (`%01`-`%1F`, `%7F`). Pingora's parser
    /// percent-encodes a raw control byte of the request line before the
    /// gateway sees it, so this is also how a raw ESC, DEL or TAB arrives.
    EncodedControl,
    /// A raw backslash, NUL or other control byte (< 0x20 or 0x7F) in the path.
    ForbiddenCharacter,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let message = match self {
            PathError::NotAbsolute => "path must start with '/'",
            PathError::BadPercentEncoding => "malformed percent-encoding in path",
            PathError::EncodedSeparator => "encoded slash, backslash or NUL in path",
            PathError::EncodedControl => "control character in path",
            PathError::ForbiddenCharacter => "backslash or control character in path",
        };
        f.write_str(message)
    }
}

impl std::error::Error for PathError {}

/// Whether `path` is `prefix` or below it on a segment boundary: `/users`
/// covers `/users`, `/users/` and `/users/me`, never `/usersX`, and `/`
/// covers every path. Routes, auth overrides and their validation all ask
/// this, so they cannot disagree on what is under a prefix.
#[inline]
pub fn is_within(path: &str, prefix: &str) -> bool {
    prefix == "/"
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Normalizes the path part of a request URI (no query string: the caller splits it off).
pub fn normalize(path: &str) -> Result<String, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }

    // One pass over the whole path: forbidden bytes are refused wherever
    // they sit (so a path is refused for the same reason whatever else is
    // wrong with it), and anything a rewrite would change is noticed. This
    // runs on every request and almost every path is already canonical, so
    // the rewrite below is skipped for those.
    let bytes = path.as_bytes();
    let mut needs_rewrite = false;
    // Where the '/' opening the current segment is.
    let mut segment_start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        match byte {
            b'\\' | 0x00..=0x1F | 0x7F => return Err(PathError::ForbiddenCharacter),
            b'%' => needs_rewrite = true,
            b'/' if i > 0 => {
                // An empty segment here is a `//`.
                let segment = &bytes[segment_start + 1..i];
                needs_rewrite |= segment.is_empty() || is_dot_segment(segment);
                segment_start = i;
            }
            _ => {}
        }
    }
    // The last segment may be empty: a trailing slash stays.
    needs_rewrite |= is_dot_segment(&bytes[segment_start + 1..]);
    if !needs_rewrite {
        return Ok(path.to_owned());
    }

    // Decoding and merging only ever shorten the path, so this single
    // allocation is always big enough.
    let mut out = String::with_capacity(path.len());
    out.push('/');
    // Whether `out` ends with a segment that needs the trailing '/' removed at
    // the end; dot segments and a final empty segment leave the slash in place.
    let mut ends_with_segment = false;

    // Segments are decoded straight into `out` and dot segments are only
    // recognized after decoding, so `%2e%2e` climbs exactly like `..` and
    // cannot slip past the check.
    for raw_segment in path[1..].split('/') {
        let start = out.len();
        decode_segment(raw_segment, &mut out)?;
        let segment = &out[start..];

        if segment.is_empty() {
            // Repeated slashes collapse, as NGINX does by default.
            ends_with_segment = false;
        } else if is_dot_segment(segment.as_bytes()) {
            let climbs = segment == "..";
            out.truncate(start);
            if climbs {
                remove_last_segment(&mut out);
            }
            ends_with_segment = false;
        } else {
            out.push('/');
            ends_with_segment = true;
        }
    }

    if ends_with_segment {
        out.pop();
    }
    Ok(out)
}

fn is_dot_segment(segment: &[u8]) -> bool {
    segment == b"." || segment == b".."
}

/// Drops the last segment of `out`, which ends with '/'; at the root there is
/// nothing to drop, so `..` can never climb above it.
fn remove_last_segment(out: &mut String) {
    let without_slash = &out[..out.len() - 1];
    if let Some(previous_slash) = without_slash.rfind('/') {
        out.truncate(previous_slash + 1);
    }
}

/// Appends one segment to `out`, decoding only what is safe to decode.
///
/// Unreserved characters are decoded because they mean the same encoded or not
/// (RFC 3986 section 6.2.2.2), which is what makes `%2e%2e` a real `..`.
/// Everything else stays encoded, with uppercase hex, so that the upstream
/// sees exactly the bytes the gateway made its decisions on.
fn decode_segment(segment: &str, out: &mut String) -> Result<(), PathError> {
    let bytes = segment.as_bytes();
    let mut rest = 0;

    while let Some(offset) = segment[rest..].find('%') {
        let percent = rest + offset;
        // '%' is ASCII, so slicing up to it never splits a UTF-8 character.
        out.push_str(&segment[rest..percent]);

        let (high, low) = match (bytes.get(percent + 1), bytes.get(percent + 2)) {
            (Some(&high), Some(&low)) if high.is_ascii_hexdigit() && low.is_ascii_hexdigit() => {
                (high, low)
            }
            _ => return Err(PathError::BadPercentEncoding),
        };
        let decoded = (hex_value(high) << 4) | hex_value(low);

        match decoded {
            b'/' | b'\\' | 0x00 => return Err(PathError::EncodedSeparator),
            0x01..=0x1F | 0x7F => return Err(PathError::EncodedControl),
            b'-' | b'.' | b'_' | b'~' => out.push(char::from(decoded)),
            _ if decoded.is_ascii_alphanumeric() => out.push(char::from(decoded)),
            _ => {
                out.push('%');
                out.push(char::from(high.to_ascii_uppercase()));
                out.push(char::from(low.to_ascii_uppercase()));
            }
        }
        rest = percent + 3;
    }

    out.push_str(&segment[rest..]);
    Ok(())
}

/// Value of one ASCII hex digit; callers have already checked it is one.
fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NORMALIZED: &[(&str, &str)] = &[
        // Already canonical: returned unchanged.
        ("/", "/"),
        ("/users", "/users"),
        ("/users/me", "/users/me"),
        ("/users/me/", "/users/me/"),
        ("/users..", "/users.."),
        ("/.hidden", "/.hidden"),
        ("/a/...", "/a/..."),
        ("/a.b/c..d/.e/f.", "/a.b/c..d/.e/f."),
        ("/caf\u{e9}", "/caf\u{e9}"),
        ("/a b", "/a b"),
        // Dot segments.
        ("/users/../products/1", "/products/1"),
        ("/users/./me", "/users/me"),
        ("/..", "/"),
        ("/.", "/"),
        ("/../../a", "/a"),
        ("/a/b/..", "/a/"),
        ("/a/.", "/a/"),
        ("/a/b/../", "/a/"),
        ("/a/b/../../..", "/"),
        ("/a/./b/./c", "/a/b/c"),
        ("/a/b/../c/../d", "/a/d"),
        ("/./a", "/a"),
        // Repeated slashes.
        ("//users///me", "/users/me"),
        ("//", "/"),
        ("///", "/"),
        ("/a//", "/a/"),
        ("/a//..//b", "/b"),
        // Percent-encoded dots take part in dot-segment removal.
        ("/users/%2e%2e/products/1", "/products/1"),
        ("/users/%2E%2E/%2e/products", "/products"),
        ("/users/.%2e/products", "/products"),
        ("/users/%2e./products", "/products"),
        ("/a/%2e", "/a/"),
        ("/a/%2e%2e%2e", "/a/..."),
        ("/%2ehidden", "/.hidden"),
        // Unreserved characters are decoded.
        ("/%41bc", "/Abc"),
        ("/a%2Db", "/a-b"),
        ("/a%5fb%7Ec", "/a_b~c"),
        ("/%7a%5A%30%39", "/zZ09"),
        // Everything else stays encoded, with uppercase hex.
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/100%25", "/100%25"),
        ("/a%3fb", "/a%3Fb"),
        // `%25` is not decoded, so nothing is decoded twice.
        ("/%252e%252e/x", "/%252e%252e/x"),
    ];

    const REFUSED: &[(&str, PathError)] = &[
        ("", PathError::NotAbsolute),
        ("users", PathError::NotAbsolute),
        ("*", PathError::NotAbsolute),
        ("http://example.com/a", PathError::NotAbsolute),
        ("%2Fusers", PathError::NotAbsolute),
        ("/a\\b", PathError::ForbiddenCharacter),
        ("/a\0b", PathError::ForbiddenCharacter),
        ("/a\tb", PathError::ForbiddenCharacter),
        ("/a\nb", PathError::ForbiddenCharacter),
        ("/a\rb", PathError::ForbiddenCharacter),
        ("/a\x7fb", PathError::ForbiddenCharacter),
        ("/a%zz\\", PathError::ForbiddenCharacter),
        ("/a%zz", PathError::BadPercentEncoding),
        ("/a%4", PathError::BadPercentEncoding),
        ("/a%", PathError::BadPercentEncoding),
        ("/a%/b", PathError::BadPercentEncoding),
        ("/a%g1", PathError::BadPercentEncoding),
        ("/a%%41", PathError::BadPercentEncoding),
        ("/a%\u{e9}", PathError::BadPercentEncoding),
        ("/users%2Fx", PathError::EncodedSeparator),
        ("/users/%2f", PathError::EncodedSeparator),
        ("/a%5Cb", PathError::EncodedSeparator),
        ("/a%5cb", PathError::EncodedSeparator),
        ("/a%00", PathError::EncodedSeparator),
        ("/a%01b", PathError::EncodedControl),
        ("/a%1Bb", PathError::EncodedControl),
        ("/a%09", PathError::EncodedControl),
        ("/a%7f", PathError::EncodedControl),
        ("/a%1f/b", PathError::EncodedControl),
    ];

    #[test]
    fn normalizes_paths() {
        for &(input, expected) in NORMALIZED {
            assert_eq!(normalize(input).as_deref(), Ok(expected), "input {input:?}");
        }
    }

    #[test]
    fn normalizing_twice_changes_nothing() {
        for &(input, _) in NORMALIZED {
            let once = normalize(input).unwrap();
            assert_eq!(normalize(&once), Ok(once.clone()), "input {input:?}");
        }
    }

    #[test]
    fn refuses_paths() {
        for &(input, expected) in REFUSED {
            assert_eq!(normalize(input), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn encoded_dots_cannot_climb_above_root() {
        assert_eq!(normalize("/%2e%2e/%2e%2e/%2E%2E/admin").unwrap(), "/admin");
        assert_eq!(normalize("/%2e%2e").unwrap(), "/");
        assert_eq!(normalize("/public/%2e%2e/%2e%2e/etc").unwrap(), "/etc");
    }

    #[test]
    fn encoded_slash_cannot_reach_another_prefix() {
        // Decoding `%2F` would let `..` cross into `/admin` after the router
        // saw `/public`; refusing keeps routing and upstream in agreement.
        for input in [
            "/public/%2e%2e%2fadmin",
            "/public/..%2Fadmin",
            "/public/%2E%2E%2Fadmin/secret",
            "/public%2f..%2fadmin",
            "/public/%2e%2e%5cadmin",
        ] {
            assert_eq!(
                normalize(input),
                Err(PathError::EncodedSeparator),
                "input {input:?}"
            );
        }
    }

    #[test]
    fn prefixes_cover_whole_segments() {
        assert!(is_within("/users", "/users"));
        assert!(is_within("/users/", "/users"));
        assert!(is_within("/users/me", "/users"));
        assert!(!is_within("/usersX", "/users"));
        assert!(!is_within("/user", "/users"));
        assert!(is_within("/anything/at/all", "/"));
        assert!(is_within("/", "/"));
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(
            PathError::EncodedSeparator.to_string(),
            "encoded slash, backslash or NUL in path"
        );
        for &(_, error) in REFUSED {
            assert!(!error.to_string().is_empty());
        }
    }
}
