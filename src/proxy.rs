//! The gateway as Pingora sees it: one `ProxyHttp` whose phases stay short
//! and hand the real work to the modules that own it.
//!
//! request_filter          redirect to HTTPS, normalize the path, answer
//!                         `/` and `/healthz`, pick the route, refuse
//!                         oversized bodies, then the route's plugins (CORS,
//!                         rate limit, auth), which may answer
//! upstream_peer           pick an instance of the route's upstream
//! fail_to_connect         retry an idempotent request once elsewhere
//! upstream_request_filter rewrite the URI, Host and X-Forwarded-* headers;
//!                         plugins add theirs (claim headers)
//! response_filter         return the request id; plugins add theirs (CORS,
//!                         RateLimit-*); `Connection: close` while draining
//! fail_to_proxy           turn a failure into a JSON 4xx/5xx
//! logging                 one access-log line and the metrics

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, CONTENT_LENGTH, HOST, USER_AGENT};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorType};

use crate::access_log::{AccessLog, LogEntry};
use crate::config::Config;
use crate::context::RequestCtx;
use crate::drain::Draining;
use crate::error::{Answer, GatewayError};
use crate::forwarded::{self, TrustedProxies};
use crate::metrics::{Metrics, Observation};
use crate::path;
use crate::plugin::{Chain, Flow, Plugin};
use crate::routing::RouteTable;
use crate::upstream::Upstream;

// Statics rather than `&str`s: a lookup by `HeaderName` skips parsing the
// name on every request, and `as_str()` of a static is the `&'static str`
// that Pingora's `insert_header` takes without copying.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub struct Gateway {
    routes: RouteTable,
    /// Each route's plugins, by route index.
    chains: Vec<Chain>,
    /// For requests that match no route.
    default_chain: Chain,
    /// Listener port to HTTPS port, for `redirect_to_https` listeners.
    redirects: Vec<(u16, u16)>,
    draining: Draining,
    upstreams: Vec<Arc<Upstream>>,
    metrics: Option<Arc<Metrics>>,
    trusted_proxies: TrustedProxies,
    max_body_size: u64,
    access_log: Arc<AccessLog>,
}

impl Gateway {
    pub fn new(
        config: &Config,
        chains: Vec<Chain>,
        default_chain: Chain,
        upstreams: Vec<Arc<Upstream>>,
        metrics: Option<Arc<Metrics>>,
        access_log: Arc<AccessLog>,
        draining: Draining,
    ) -> Self {
        Gateway {
            routes: RouteTable::new(&config.routes),
            chains,
            default_chain,
            redirects: config
                .listeners
                .iter()
                .filter_map(|l| l.redirect_to.map(|https| (l.address.port(), https)))
                .collect(),
            draining,
            upstreams,
            metrics,
            trusted_proxies: TrustedProxies::new(config.trusted_proxies.clone()),
            max_body_size: config.max_body_size,
            access_log,
        }
    }
}

impl Gateway {
    fn chain(&self, ctx: &RequestCtx) -> &[Box<dyn Plugin>] {
        ctx.route.map_or(&self.default_chain, |i| &self.chains[i])
    }

    fn upstream_of(&self, ctx: &RequestCtx) -> Option<&Upstream> {
        ctx.route
            .map(|i| &*self.upstreams[self.routes.get(i).upstream])
    }

    /// Fills the context from the request head; `Err` is the answer to give
    /// instead of proxying. A request without a route is admitted with
    /// `ctx.route` unset: it gets its 404 after the plugins (a CORS
    /// preflight to any path is still answered).
    fn admit(&self, req: &RequestHeader, ctx: &mut RequestCtx) -> Result<(), Answer> {
        ctx.request_id = forwarded::request_id(req.headers.get(&REQUEST_ID).map(|v| v.as_bytes()));
        if let Some(peer) = ctx.peer {
            let chain = header_str(req, &X_FORWARDED_FOR);
            ctx.client_ip = Some(self.trusted_proxies.client_ip(peer, chain));
        }
        ctx.client_host = header_str(req, &HOST)
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .map(str::to_string);
        if let Some(location) = self.https_location(req, ctx) {
            return Err(Answer::Redirect(location));
        }

        ctx.path = path::normalize(req.uri.path())
            .map_err(|e| Answer::Error(GatewayError::BadRequest(e.to_string())))?;
        let path = ctx.path.as_str();
        if req.method == "GET" || req.method == "HEAD" {
            match path {
                "/" => return Err(Answer::Running),
                "/healthz" => return Err(Answer::Healthy),
                _ => {}
            }
        }

        let host = ctx.client_host.as_deref().map(strip_port);
        let Some(index) = self.routes.find(host, path) else {
            return Ok(());
        };
        ctx.route = Some(index);

        if let Some(length) = header_str(req, &CONTENT_LENGTH) {
            let length: u64 = length.trim().parse().map_err(|_| {
                Answer::Error(GatewayError::BadRequest("Invalid Content-Length".into()))
            })?;
            if length > self.max_body_size {
                return Err(Answer::Error(GatewayError::PayloadTooLarge));
            }
        }

        let mut uri = self.routes.get(index).upstream_path(path);
        if let Some(query) = req.uri.query() {
            uri.push('?');
            uri.push_str(query);
        }
        ctx.upstream_uri = uri;
        Ok(())
    }

    /// Where a request on a `redirect_to_https` listener goes instead: the
    /// same host, path and query on the HTTPS port.
    fn https_location(&self, req: &RequestHeader, ctx: &RequestCtx) -> Option<String> {
        let port = ctx.local_port?;
        let (_, https_port) = self.redirects.iter().find(|(from, _)| *from == port)?;
        let host = ctx.client_host.as_deref().map_or("localhost", strip_port);
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let port = match https_port {
            443 => String::new(),
            other => format!(":{other}"),
        };
        let target = req.uri.path_and_query().map_or("/", |p| p.as_str());
        Some(format!("https://{host}{port}{target}"))
    }

    /// A process being replaced closes each connection after its response,
    /// so the client's next request goes to the new process.
    fn close_if_draining(&self, session: &mut Session) {
        if self.draining.is_draining() {
            session.set_keepalive(None);
        }
    }

    /// Writes one of the gateway's own answers; the only place that does.
    async fn answer(&self, session: &mut Session, ctx: &RequestCtx, answer: Answer) -> Result<u16> {
        let (status, content) = match &answer {
            Answer::Running => (
                200,
                Some((
                    "text/plain; charset=utf-8",
                    Bytes::from_static(b"API Gateway is running"),
                )),
            ),
            Answer::Healthy => (
                200,
                Some((
                    "application/json",
                    Bytes::from_static(b"{\"status\":\"ok\"}"),
                )),
            ),
            Answer::Preflight => (204, None),
            Answer::Redirect(_) => (308, Some(("text/plain", Bytes::new()))),
            Answer::Error(e) => (
                e.status(),
                Some((
                    "application/json",
                    Bytes::from(e.json_body(&ctx.request_id)),
                )),
            ),
        };
        let mut header = ResponseHeader::build(status, Some(8))?;
        if let Some((content_type, body)) = &content {
            header.insert_header("content-type", *content_type)?;
            header.insert_header("content-length", body.len())?;
        }
        header.insert_header(REQUEST_ID.as_str(), &ctx.request_id)?;
        match &answer {
            Answer::Error(e) => {
                if let Some((name, value)) = e.extra_header() {
                    header.insert_header(name, value)?;
                }
            }
            Answer::Redirect(location) => header.insert_header("location", location)?,
            _ => {}
        }
        for plugin in self.chain(ctx) {
            plugin.response(session.req_header(), &mut header, ctx)?;
        }
        self.close_if_draining(session);
        let body = content
            .map(|(_, body)| body)
            .filter(|_| session.req_header().method != "HEAD");
        session
            .write_response_header(Box::new(header), body.is_none())
            .await?;
        if body.is_some() {
            session.write_response_body(body, true).await?;
        }
        Ok(status)
    }
}

fn header_str<'a>(req: &'a RequestHeader, name: &HeaderName) -> Option<&'a str> {
    req.headers.get(name).and_then(|v| v.to_str().ok())
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.split_once(']').map_or(host, |(v6, _)| &v6[1..]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn client_peer(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::default()
    }

    /// Pingora's default adds a compression module at level 0: it compresses
    /// nothing, yet costs every request a module context and two boxed
    /// filter calls. The gateway passes bodies through as services encode
    /// them, so it has no modules.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(metrics) = &self.metrics {
            metrics.in_flight.inc();
            ctx.in_flight = true;
        }
        ctx.peer = client_peer(session);
        ctx.local_port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port());
        if let Err(answer) = self.admit(session.req_header(), ctx) {
            self.answer(session, ctx, answer).await?;
            return Ok(true);
        }
        for plugin in self.chain(ctx) {
            if let Flow::Respond(answer) = plugin.request(session.req_header(), ctx).await {
                self.answer(session, ctx, answer).await?;
                return Ok(true);
            }
        }
        if ctx.route.is_none() {
            self.answer(session, ctx, Answer::Error(GatewayError::NotFound))
                .await?;
            return Ok(true);
        }
        Ok(false)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let upstream = self
            .upstream_of(ctx)
            .ok_or_else(|| Error::new(ErrorType::InternalError))?;
        ctx.attempts += 1;
        let selected = upstream.select(ctx.failed_addr).ok_or_else(|| {
            Error::explain(
                ErrorType::ConnectNoRoute,
                format!("upstream {} has no instance", upstream.name),
            )
            .into_up()
        })?;
        ctx.upstream_addr = Some(selected.addr);
        ctx.instance = Some(selected.instance);
        Ok(selected.peer)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.failed_addr = ctx.upstream_addr;
        ctx.connect_failures += 1;
        let another_try = ctx.attempts < 2
            && session.req_header().method.is_idempotent()
            && self
                .upstream_of(ctx)
                .is_some_and(Upstream::has_alternatives);
        e.set_retry(another_try);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let uri = ctx
            .upstream_uri
            .parse()
            .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "unparsable upstream URI"))?;
        upstream_request.set_uri(uri);

        let route = self
            .routes
            .get(ctx.route.expect("routed in request_filter"));
        match (&ctx.instance, &ctx.client_host) {
            (Some(instance), _) if !route.preserve_host => {
                upstream_request.insert_header("host", &instance.authority)?;
            }
            (_, Some(client_host)) => upstream_request.insert_header("host", client_host)?,
            _ => {}
        }

        // Client-sent forwarding headers are kept only from trusted proxies.
        let trusted_peer = ctx.peer.is_some_and(|p| self.trusted_proxies.contains(p));
        if let Some(peer) = ctx.peer {
            let chain = self
                .trusted_proxies
                .forwarded_for(peer, header_str(upstream_request, &X_FORWARDED_FOR));
            upstream_request.insert_header(X_FORWARDED_FOR.as_str(), chain)?;
        }
        if !(trusted_peer && upstream_request.headers.contains_key(&X_FORWARDED_PROTO)) {
            let proto = if is_tls(session) { "https" } else { "http" };
            upstream_request.insert_header(X_FORWARDED_PROTO.as_str(), proto)?;
        }
        if !(trusted_peer && upstream_request.headers.contains_key(&X_FORWARDED_HOST)) {
            match &ctx.client_host {
                Some(host) => upstream_request.insert_header(X_FORWARDED_HOST.as_str(), host)?,
                None => {
                    upstream_request.remove_header(&X_FORWARDED_HOST);
                }
            }
        }
        upstream_request.insert_header(REQUEST_ID.as_str(), &ctx.request_id)?;
        for plugin in self.chain(ctx) {
            plugin.upstream_request(upstream_request, ctx)?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // A chunked body has no Content-Length to check up front.
        ctx.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.body_bytes > self.max_body_size {
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body over max_body_size",
            );
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        self.close_if_draining(session);
        upstream_response.insert_header(REQUEST_ID.as_str(), &ctx.request_id)?;
        for plugin in self.chain(ctx) {
            plugin.response(session.req_header(), upstream_response, ctx)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let error = GatewayError::from_proxy_error(e);
        ctx.timed_out = error == Some(GatewayError::GatewayTimeout);
        // The connection is closed after this answer (its state is unknown),
        // so the answer says so: a client must not send its next request
        // down it.
        session.set_keepalive(None);
        let error_code = match error {
            // Once the response has started there is no way to change it.
            Some(err) if session.response_written().is_none() => self
                .answer(session, ctx, Answer::Error(err))
                .await
                .unwrap_or(0),
            Some(err) => err.status(),
            None => 0,
        };
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        // NGINX's 499: the client left before any response was written.
        let status = match session.response_written() {
            Some(response) => response.status.as_u16(),
            None if e.is_some() => 499,
            None => 0,
        };
        let req = session.req_header();
        let route = ctx.route.map(|i| self.routes.get(i));
        let entry = LogEntry {
            timestamp: SystemTime::now(),
            request_id: &ctx.request_id,
            client_ip: ctx.client_ip,
            method: req.method.as_str(),
            path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
            route: route.map(|r| r.prefix.as_str()),
            upstream: route.map(|r| self.upstreams[r.upstream].name.as_str()),
            upstream_addr: ctx.upstream_addr,
            status,
            bytes: session.body_bytes_sent(),
            duration_ms: ctx.started.elapsed(),
            user_agent: header_str(req, &USER_AGENT),
        };
        self.access_log.record(&entry);

        if let Some(metrics) = &self.metrics {
            if ctx.in_flight {
                metrics.in_flight.dec();
            }
            metrics.observe(&Observation {
                route: entry.route,
                upstream: entry.upstream,
                method: entry.method,
                status,
                duration: entry.duration_ms,
                connect_failures: ctx.connect_failures,
                timed_out: ctx.timed_out,
                jwt_rejection: ctx.jwt_rejection,
                rate_limited: ctx.rate_limit.is_some_and(|d| !d.allowed),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("api.example.com:8080"), "api.example.com");
        assert_eq!(strip_port("api.example.com"), "api.example.com");
        assert_eq!(strip_port("[::1]:3000"), "::1");
        assert_eq!(strip_port("[::1]"), "::1");
    }
}
