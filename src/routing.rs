//! The route table: which upstream serves a (normalized) request path, and
//! what path that upstream receives.
//!
//! Prefixes match on segment boundaries (`/users` takes `/users`, `/users/`
//! and `/users/me`, never `/usersX`), the longest prefix wins, and a route
//! with a host beats one without. The table is sorted once at startup so a
//! lookup is a scan that stops at the first match.

use crate::config::{Rewrite, RouteSettings};

#[derive(Debug)]
pub struct Route {
    pub prefix: String,
    host: Option<HostPattern>,
    /// Index of the upstream in the gateway's upstream list.
    pub upstream: usize,
    rewrite: Rewrite,
    pub preserve_host: bool,
}

#[derive(Debug, PartialEq, Eq)]
enum HostPattern {
    Exact(String),
    /// `*.shop.example` stored as `.shop.example`.
    Suffix(String),
}

impl HostPattern {
    fn new(pattern: &str) -> Self {
        match pattern.strip_prefix('*') {
            Some(suffix) => HostPattern::Suffix(suffix.to_string()),
            None => HostPattern::Exact(pattern.to_string()),
        }
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name.eq_ignore_ascii_case(host),
            HostPattern::Suffix(suffix) => {
                host.len() > suffix.len()
                    && host.is_char_boundary(host.len() - suffix.len())
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
            }
        }
    }
}

impl Route {
    pub fn new(settings: &RouteSettings) -> Self {
        Route {
            prefix: settings.prefix.clone(),
            host: settings.host.as_deref().map(HostPattern::new),
            upstream: settings.upstream,
            rewrite: settings.rewrite.clone(),
            preserve_host: settings.preserve_host,
        }
    }

    fn matches_path(&self, path: &str) -> bool {
        self.prefix == "/"
            || path
                .strip_prefix(self.prefix.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// The path this route's upstream receives for `path`, which must have
    /// matched this route. `/users/me` under `/users` becomes `/me`, and
    /// `/users` alone becomes `/`.
    pub fn upstream_path(&self, path: &str) -> String {
        let rest = match self.prefix.as_str() {
            "/" => path,
            prefix => &path[prefix.len()..],
        };
        match &self.rewrite {
            Rewrite::Keep => path.to_string(),
            Rewrite::Strip if rest.is_empty() => "/".to_string(),
            Rewrite::Strip => rest.to_string(),
            Rewrite::Replace(replacement) if replacement.is_empty() && rest.is_empty() => {
                "/".to_string()
            }
            Rewrite::Replace(replacement) => format!("{replacement}{rest}"),
        }
    }
}

#[derive(Debug)]
pub struct RouteTable {
    /// In config order, so a route's index is its `routes[i]` everywhere.
    routes: Vec<Route>,
    /// Indices in matching order: longest prefix first; for equal prefixes,
    /// host-bound routes first.
    match_order: Vec<usize>,
}

impl RouteTable {
    pub fn new(settings: &[RouteSettings]) -> Self {
        let routes: Vec<Route> = settings.iter().map(Route::new).collect();
        let mut match_order: Vec<usize> = (0..routes.len()).collect();
        match_order.sort_by(|&a, &b| {
            let (a, b) = (&routes[a], &routes[b]);
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        RouteTable {
            routes,
            match_order,
        }
    }

    pub fn get(&self, index: usize) -> &Route {
        &self.routes[index]
    }

    /// The index (in config order) of the route serving `path`; `host` is
    /// the request's host without its port, if it sent one. An index (not a
    /// reference) so the per-request context can hold it without borrowing
    /// the table.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.match_order.iter().copied().find(|&i| {
            let route = &self.routes[i];
            route.matches_path(path)
                && match &route.host {
                    None => true,
                    Some(pattern) => host.is_some_and(|h| pattern.matches(h)),
                }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, upstream: usize, host: Option<&str>, rewrite: Rewrite) -> RouteSettings {
        RouteSettings {
            prefix: prefix.into(),
            host: host.map(str::to_string),
            upstream,
            rewrite,
            preserve_host: false,
            plugins: Vec::new(),
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(&[
            route("/users", 0, None, Rewrite::Strip),
            route("/users/admin", 1, None, Rewrite::Strip),
            route("/products", 2, None, Rewrite::Keep),
            route("/orders", 3, None, Rewrite::Replace("/v1".into())),
            route("/users", 4, Some("api.shop.example"), Rewrite::Strip),
            route("/shop", 5, Some("*.shop.example"), Rewrite::Strip),
        ])
    }

    fn upstream_of(host: Option<&str>, path: &str) -> Option<usize> {
        {
            let t = table();
            t.find(host, path).map(|i| t.get(i).upstream)
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        assert_eq!(upstream_of(None, "/users"), Some(0));
        assert_eq!(upstream_of(None, "/users/"), Some(0));
        assert_eq!(upstream_of(None, "/users/me"), Some(0));
        assert_eq!(upstream_of(None, "/usersX"), None);
        assert_eq!(upstream_of(None, "/user"), None);
        assert_eq!(upstream_of(None, "/"), None);
        assert_eq!(upstream_of(None, "/nope"), None);
    }

    #[test]
    fn longest_prefix_wins() {
        assert_eq!(upstream_of(None, "/users/admin"), Some(1));
        assert_eq!(upstream_of(None, "/users/admin/7"), Some(1));
        assert_eq!(upstream_of(None, "/users/administrator"), Some(0));
    }

    #[test]
    fn host_routes_win_and_wildcards_need_a_subdomain() {
        assert_eq!(upstream_of(Some("api.shop.example"), "/users/me"), Some(4));
        assert_eq!(upstream_of(Some("API.Shop.Example"), "/users/me"), Some(4));
        assert_eq!(upstream_of(Some("other.example"), "/users/me"), Some(0));
        assert_eq!(upstream_of(Some("eu.shop.example"), "/shop/cart"), Some(5));
        assert_eq!(upstream_of(Some("shop.example"), "/shop/cart"), None);
        assert_eq!(upstream_of(Some("evilshop.example"), "/shop/cart"), None);
        assert_eq!(upstream_of(None, "/shop/cart"), None);
    }

    #[test]
    fn rewrites() {
        let t = table();
        let rewrite = |path: &str| t.get(t.find(None, path).unwrap()).upstream_path(path);
        assert_eq!(rewrite("/users/me"), "/me");
        assert_eq!(rewrite("/users"), "/");
        assert_eq!(rewrite("/users/"), "/");
        assert_eq!(rewrite("/products/1"), "/products/1");
        assert_eq!(rewrite("/orders/7"), "/v1/7");
        assert_eq!(rewrite("/orders"), "/v1");
    }

    #[test]
    fn a_root_route_catches_everything() {
        let t = RouteTable::new(&[
            route("/", 0, None, Rewrite::Strip),
            route("/api", 1, None, Rewrite::Replace(String::new())),
        ]);
        let rewrite = |path: &str| t.get(t.find(None, path).unwrap()).upstream_path(path);
        assert_eq!(t.get(t.find(None, "/anything").unwrap()).upstream, 0);
        assert_eq!(rewrite("/anything"), "/anything");
        assert_eq!(rewrite("/api"), "/");
        assert_eq!(rewrite("/api/x"), "/x");
    }
}
