//! Small readers of request headers that the core and plugins share: a
//! header as text, and a cookie's value.

use http::header::COOKIE;
use http::HeaderName;
use pingora::http::RequestHeader;

/// The header's value, when it is there and is text.
#[inline]
pub fn text<'r>(req: &'r RequestHeader, name: &HeaderName) -> Option<&'r str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The non-empty value of the cookie called exactly `name`, from any of the
/// request's `Cookie` headers.
pub fn cookie<'r>(req: &'r RequestHeader, name: &str) -> Option<&'r str> {
    req.headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|header| cookie_value(header, name))
}

fn cookie_value<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        (key == name && !value.is_empty()).then_some(value)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_exact_name() {
        assert_eq!(cookie_value("a=1; token=xyz; b=2", "token"), Some("xyz"));
        assert_eq!(cookie_value("mytoken=xyz", "token"), None);
        assert_eq!(cookie_value("token=", "token"), None);
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("cookie", "a=1").unwrap();
        req.append_header("cookie", "cart=c-9").unwrap();
        assert_eq!(cookie(&req, "cart"), Some("c-9"));
    }
}
