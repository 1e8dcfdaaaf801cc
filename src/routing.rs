//! The route table: which route serves a (normalized) request path, and
//! what the route's upstream is asked for.
//!
//! Prefixes match on segment boundaries (`/users` takes `/users`, `/users/`
//! and `/users/me`, never `/usersX`), the longest prefix wins, and a route
//! with a host beats one without. The table is sorted once when it is built,
//! so a lookup is a scan that stops at the first match. Each entry carries
//! its route with a target of the caller's choosing (the gateway's: the
//! route's plugin chain and upstream), so the table knows matching only.

use http::uri::{InvalidUri, Uri};

use std::time::Duration;

use crate::config::{RetryPolicy, Rewrite, RouteSettings};
use crate::host::HostPattern;
use crate::path;

#[derive(Debug)]
pub struct Route {
    /// The route's label in metrics and the access log.
    pub name: String,
    pub prefix: String,
    host: Option<HostPattern>,
    rewrite: Rewrite,
    pub preserve_host: bool,
    pub retry: RetryPolicy,
    /// How long a request may wait for its response to begin, all tries.
    pub timeout: Option<Duration>,
}

impl Route {
    pub fn new(settings: &RouteSettings) -> Self {
        Route {
            name: settings.name.clone(),
            prefix: settings.prefix.clone(),
            host: settings.host.clone(),
            rewrite: settings.rewrite.clone(),
            preserve_host: settings.preserve_host,
            retry: settings.retry.clone(),
            timeout: settings.timeout,
        }
    }

    fn matches(&self, host: Option<&str>, path: &str) -> bool {
        path::is_within(path, &self.prefix)
            && match &self.host {
                None => true,
                Some(pattern) => host.is_some_and(|h| pattern.matches(h)),
            }
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

    /// What the upstream is asked for: the rewritten `path` and the
    /// client's `query`, untouched.
    pub fn upstream_uri(&self, path: &str, query: Option<&str>) -> Result<Uri, InvalidUri> {
        let mut uri = self.upstream_path(path);
        if let Some(query) = query {
            uri.push('?');
            uri.push_str(query);
        }
        Uri::try_from(uri)
    }
}

pub struct Entry<T> {
    pub route: Route,
    pub target: T,
}

pub struct RouteTable<T> {
    /// In config order, so an entry's index is its `routes[i]`.
    entries: Vec<Entry<T>>,
    /// Indices in matching order: longest prefix first; for equal prefixes,
    /// host-bound routes first.
    match_order: Vec<usize>,
}

impl<T> RouteTable<T> {
    pub fn new(entries: Vec<Entry<T>>) -> Self {
        let mut match_order: Vec<usize> = (0..entries.len()).collect();
        match_order.sort_by(|&a, &b| {
            let (a, b) = (&entries[a].route, &entries[b].route);
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        RouteTable {
            entries,
            match_order,
        }
    }

    pub fn get(&self, index: usize) -> &Entry<T> {
        &self.entries[index]
    }

    /// The index of the entry serving `path`; `host` is the request's host
    /// without its port, if it sent one. An index (not a reference) so the
    /// per-request context can hold it beside the table that owns it.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.match_order
            .iter()
            .copied()
            .find(|&i| self.entries[i].route.matches(host, path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route whose target is the number of its upstream.
    fn route(prefix: &str, upstream: usize, host: Option<&str>, rewrite: Rewrite) -> Entry<usize> {
        let host = host.map(|h| HostPattern::parse(h).unwrap());
        let settings = RouteSettings {
            name: prefix.into(),
            prefix: prefix.into(),
            host,
            upstream,
            rewrite,
            preserve_host: false,
            retry: Default::default(),
            timeout: None,
            plugins: Vec::new(),
        };
        Entry {
            route: Route::new(&settings),
            target: upstream,
        }
    }

    fn table() -> RouteTable<usize> {
        RouteTable::new(vec![
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
            t.find(host, path).map(|i| t.get(i).target)
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
        let rewrite = |path: &str| t.get(t.find(None, path).unwrap()).route.upstream_path(path);
        assert_eq!(rewrite("/users/me"), "/me");
        assert_eq!(rewrite("/users"), "/");
        assert_eq!(rewrite("/users/"), "/");
        assert_eq!(rewrite("/products/1"), "/products/1");
        assert_eq!(rewrite("/orders/7"), "/v1/7");
        assert_eq!(rewrite("/orders"), "/v1");
    }

    #[test]
    fn the_upstream_uri_keeps_the_query() {
        let t = table();
        let uri = |path: &str, query| {
            let entry = t.get(t.find(None, path).unwrap());
            entry.route.upstream_uri(path, query).unwrap().to_string()
        };
        assert_eq!(uri("/users/me", Some("a=1&b=%20")), "/me?a=1&b=%20");
        assert_eq!(uri("/users", None), "/");
    }

    #[test]
    fn a_root_route_catches_everything() {
        let t = RouteTable::new(vec![
            route("/", 0, None, Rewrite::Strip),
            route("/api", 1, None, Rewrite::Replace(String::new())),
        ]);
        let rewrite = |path: &str| t.get(t.find(None, path).unwrap()).route.upstream_path(path);
        assert_eq!(t.get(t.find(None, "/anything").unwrap()).target, 0);
        assert_eq!(rewrite("/anything"), "/anything");
        assert_eq!(rewrite("/api"), "/");
        assert_eq!(rewrite("/api/x"), "/x");
    }
}
