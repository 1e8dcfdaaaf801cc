//! The gateway as Pingora sees it: one `ProxyHttp` whose phases stay short
//! and hand the real work to the modules that own it. Each request is
//! served from the `State` current when it arrived, to its end.
//!
//! request_filter          the client's timeouts, the head within the
//!                         `client` limits; redirect to HTTPS, normalize
//!                         the path, answer `/` and `/healthz`, pick the
//!                         route, refuse oversized bodies, then the route's
//!                         plugins, which may answer or refuse, then the
//!                         upstream's `max_in_flight`; after an answer of
//!                         its own, read what is left of the body (a
//!                         bounded lingering close)
//! upstream_peer           pick an instance for this try, within the
//!                         route's deadline and per-try timeout
//! fail_to_connect,        count the failure against the instance, and
//! error_while_proxy       retry when the route's policy and the budget allow
//! upstream_request_filter the URI, Host and X-Forwarded-* headers; plugins
//!                         add theirs
//! upstream_response_filter the status against the instance; a status the
//!                         route retries ends the try before the client
//!                         sees any of it
//! upstream_response_body_filter the try's end, for its instance's load
//! response_filter         the request id and the headers plugins decided
//!                         on; plugins adjust the rest; `Connection: close`
//!                         while draining
//! fail_to_proxy           turn a failure into a JSON 4xx/5xx, then read
//!                         what is left of a refused body (a bounded
//!                         lingering close) so the answer is not lost
//! logging                 one access-log line, the metrics, and the
//!                         plugins' look at the finished request

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{HeaderName, CONTENT_LENGTH, HOST, USER_AGENT};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::modules::http::HttpModules;
use pingora::prelude::*;
use pingora::proxy::FailToProxy;
use pingora::{Error, ErrorType};

use crate::access_log::{AccessLog, LogEntry};
use crate::config::{ClientSettings, InstanceUrl, ListenerSettings, UNMATCHED};
use crate::context::{Finished, Refusal, RequestCtx};
use crate::drain::Draining;
use crate::edge;
use crate::error::{Answer, GatewayError};
use crate::forwarded;
use crate::headers::text as header_str;
use crate::host::strip_port;
use crate::metrics::Metrics;
use crate::path;
use crate::plugin::Flow;
use crate::retry::{self, FailedTry};
use crate::state::State;
use crate::trace::{RequestTrace, ServerFacts, TryEnd};
use crate::upstream::{self, Admitted, Failure, InFlight};

// Statics rather than `&str`s: a lookup by `HeaderName` skips parsing the
// name on every request, and `as_str()` of a static is the `&'static str`
// that Pingora's `insert_header` takes without copying.
static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub struct Proxy {
    state: Arc<ArcSwap<State>>,
    /// Listener port to HTTPS port, for `redirect_to_https` listeners.
    redirects: Vec<(u16, u16)>,
    draining: Draining,
    metrics: Option<Arc<Metrics>>,
    access_log: Arc<AccessLog>,
}

/// One request as the proxy follows it.
pub struct ProxyCtx {
    /// The state this request is served from, whatever replaces it
    /// meanwhile.
    state: Arc<State>,
    /// Its entry in `state.routes`, once matched.
    route: Option<usize>,
    /// What it has learned, for the plugins, the log and the metrics.
    req: RequestCtx,
    /// Counted against the upstream's `max_in_flight`, while it lasts.
    admitted: Option<Admitted>,
    /// The try in progress, counted in its instance's load.
    attempt: Option<InFlight>,
    /// The instance of the latest try, whose `Host` the upstream gets.
    instance: Option<Arc<InstanceUrl>>,
    /// Instances tried already, for a retry to go elsewhere.
    tried: Vec<SocketAddr>,
    /// The route's `timeout`, from the start of the request.
    deadline: Option<Instant>,
    /// Its part of a trace, when tracing is on; boxed, so that with tracing
    /// off the context (moved about in every phase's future) stays small.
    trace: Option<Box<RequestTrace>>,
}

impl ProxyCtx {
    /// Whether the failed try goes again: the route's policy, then the
    /// upstream's budget.
    fn retry(&self, session: &Session, failure: Failure) -> bool {
        let (Some(route), Some(upstream)) = (self.route, self.state.upstream(self.route)) else {
            return false;
        };
        let failed = FailedTry {
            failure,
            method: &session.req_header().method,
            attempts: self.req.attempts,
            body_truncated: session.as_ref().retry_buffer_truncated(),
            response_started: session.response_written().is_some(),
            deadline_passed: self.deadline.is_some_and(|d| Instant::now() >= d),
        };
        let policy = &self.state.routes.get(route).route.retry;
        if !retry::wanted(policy, &failed) {
            return false;
        }
        // A failed connect sent nothing and cost the upstream nothing, so
        // it spends no budget: the budget bounds the load retries add to
        // the upstream, and a dead instance must not use up what the live
        // ones' failures need. Only retries of requests the upstream
        // received spend it; every retry is counted.
        if failure == Failure::Connect {
            upstream.retried(failure);
            return true;
        }
        upstream.try_retry(failure)
    }

    /// Whether a try whose pooled connection the upstream had closed
    /// meanwhile goes again: nothing is wrong with the instance, so it is
    /// not counted against it, and an idempotent request goes again at
    /// once, as Pingora does by default, whatever the route's policy. Like a
    /// failed connect it spends no budget (the upstream dropped the
    /// connection rather than serve the request), and is counted as a
    /// `reset` retry.
    fn retry_stale(&mut self, session: &Session) -> bool {
        if let Some(trace) = &mut self.trace {
            trace.end_try(TryEnd::Failed("reset"));
        }
        let again = session.req_header().method.is_idempotent()
            && !session.as_ref().retry_buffer_truncated();
        if let (true, Some(upstream)) = (again, self.state.upstream(self.route)) {
            upstream.retried(Failure::Reset);
        }
        again
    }

    /// Counts the outcome of the try in progress against its instance, and
    /// ends its span when it failed.
    fn record(&mut self, outcome: Result<(), Failure>) {
        if let (Some(attempt), Some(upstream)) = (&self.attempt, self.state.upstream(self.route)) {
            upstream.record(attempt, outcome);
        }
        // A status ends its try once its body is through (or its retry
        // starts); any other failure ends it now.
        if let (Err(failure), Some(trace)) = (outcome, &mut self.trace) {
            if !matches!(failure, Failure::Status(_)) {
                trace.end_try(TryEnd::Failed(failure.kind()));
            }
        }
    }
}

impl Proxy {
    pub fn new(
        state: Arc<ArcSwap<State>>,
        listeners: &[ListenerSettings],
        metrics: Option<Arc<Metrics>>,
        access_log: Arc<AccessLog>,
        draining: Draining,
    ) -> Self {
        Proxy {
            state,
            redirects: listeners
                .iter()
                .filter_map(|l| l.redirect_to.map(|https| (l.address.port(), https)))
                .collect(),
            draining,
            metrics,
            access_log,
        }
    }

    /// Fills the context from the request head; `Err` is the answer to give
    /// instead of proxying. A request without a route is admitted with
    /// `ctx.route` unset: it gets its 404 after the plugins (a CORS
    /// preflight to any path is still answered).
    fn admit(&self, req: &RequestHeader, ctx: &mut ProxyCtx) -> Result<(), Answer> {
        let state = &ctx.state;
        let learned = &mut ctx.req;
        learned.request_id =
            forwarded::request_id(req.headers.get(&REQUEST_ID).map(|v| v.as_bytes()));
        if let Some(peer) = learned.peer {
            let chain = header_str(req, &X_FORWARDED_FOR);
            learned.client_ip = Some(state.trusted_proxies.client_ip(peer, chain));
        }
        learned.client_host = header_str(req, &HOST)
            .or_else(|| req.uri.authority().map(|a| a.as_str()))
            .map(str::to_string);
        // After what the access log names the client by, before any work.
        edge::check_head(req, &state.client.limits).map_err(Answer::Error)?;
        if let Some(location) = self.https_location(req, learned) {
            return Err(Answer::Redirect(location));
        }

        learned.path = path::normalize(req.uri.path())
            .map_err(|e| Answer::Error(GatewayError::BadRequest(e.to_string())))?;
        let path = learned.path.as_str();
        if req.method == "GET" || req.method == "HEAD" {
            match path {
                "/" => return Err(Answer::Running),
                "/healthz" => return Err(Answer::Healthy),
                _ => {}
            }
        }

        let host = learned.client_host.as_deref().map(strip_port);
        let Some(index) = state.routes.find(host, path) else {
            return Ok(());
        };
        ctx.route = Some(index);

        if let Some(length) = header_str(req, &CONTENT_LENGTH) {
            let length: u64 = length.trim().parse().map_err(|_| {
                Answer::Error(GatewayError::BadRequest("Invalid Content-Length".into()))
            })?;
            if length > state.max_body_size {
                return Err(Answer::Error(GatewayError::PayloadTooLarge));
            }
        }

        let route = &state.routes.get(index).route;
        let uri = route
            .upstream_uri(path, req.uri.query())
            .map_err(|_| Answer::Error(GatewayError::BadRequest("Malformed request".into())))?;
        learned.upstream_uri = Some(uri);
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

    /// What the gateway answers itself instead of proxying, if anything:
    /// `admit`'s answer, a plugin's, a 404 for no route, or a 503 when the
    /// upstream is at its `max_in_flight`. Otherwise the request is admitted
    /// to its upstream.
    async fn early_answer(&self, req: &RequestHeader, ctx: &mut ProxyCtx) -> Option<Answer> {
        if let Err(answer) = self.admit(req, ctx) {
            return Some(answer);
        }
        for plugin in ctx.state.chain(ctx.route) {
            match plugin.request(req, &mut ctx.req).await {
                Flow::Continue => continue,
                Flow::Respond(answer) => return Some(answer),
                Flow::Refuse { reason, error } => {
                    ctx.req.refusal = Some(Refusal {
                        plugin: plugin.name(),
                        reason,
                    });
                    return Some(Answer::Error(error));
                }
            }
        }
        let Some(route) = ctx.route else {
            return Some(Answer::Error(GatewayError::NotFound));
        };
        let entry = ctx.state.routes.get(route);
        ctx.deadline = entry.route.timeout.map(|t| ctx.req.started + t);
        match entry.target.upstream.admit() {
            Some(admitted) => ctx.admitted = Some(admitted),
            None => return Some(Answer::Error(GatewayError::Overloaded)),
        }
        None
    }

    /// Writes one of the gateway's own answers; the only place that does.
    async fn answer(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
        answer: Answer,
    ) -> Result<u16> {
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
                    Bytes::from(e.json_body(&ctx.req.request_id)),
                )),
            ),
        };
        let mut header = ResponseHeader::build(status, Some(8))?;
        if let Some((content_type, body)) = &content {
            header.insert_header("content-type", *content_type)?;
            header.insert_header("content-length", body.len())?;
        }
        header.insert_header(REQUEST_ID.as_str(), &ctx.req.request_id)?;
        match &answer {
            Answer::Error(e) => {
                if let Some((name, value)) = e.extra_header() {
                    header.insert_header(name, value)?;
                }
            }
            Answer::Redirect(location) => header.insert_header("location", location)?,
            _ => {}
        }
        finish_response(session.req_header(), &mut header, ctx)?;
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

/// The client settings for what follows a request head: the wait for each
/// read of its body, the idle wait for the next request, and pipelined
/// requests answered in order (RFC 9112 9.3.2) rather than dropped with the
/// connection, as Pingora does unless told.
fn keep_client_settings(session: &mut Session, client: &ClientSettings) {
    session.set_read_timeout(Some(client.body_timeout));
    session.set_total_drain_timeout(Some(LINGER));
    session.set_keepalive(Some(client.keepalive_timeout_secs));
    session.set_pipelining_enabled(true);
}

/// What every response gets, the upstream's and the gateway's own alike:
/// the headers plugins decided on while admitting the request (a request
/// has one response, so they are moved into it), then each plugin's
/// adjustments.
fn finish_response(
    req: &RequestHeader,
    resp: &mut ResponseHeader,
    ctx: &mut ProxyCtx,
) -> Result<()> {
    for (name, value) in ctx.req.response_headers.drain(..) {
        resp.insert_header(name, value)?;
    }
    for plugin in ctx.state.chain(ctx.route) {
        plugin.response(req, resp, &ctx.req)?;
    }
    Ok(())
}

/// How long the gateway goes on reading (and discarding) a request body
/// nobody will use: NGINX's `lingering_time`. It bounds every drain,
/// Pingora's own before it reuses a connection included.
const LINGER: Duration = Duration::from_secs(5);

/// Whether a client answered with `error` may still be sending its body:
/// one whose body was refused, or whose upstream failed, may; one that
/// stalled or broke its body is not.
fn may_still_be_sending(error: &GatewayError) -> bool {
    matches!(
        error,
        GatewayError::PayloadTooLarge
            | GatewayError::BadGateway
            | GatewayError::GatewayTimeout
            | GatewayError::Internal
    )
}

/// Reads what is left of the request body after an answer, for at most
/// `LINGER` (`keep_client_settings` sets it), NGINX's lingering close.
/// Closed with the client's data unread, the socket would answer it with a
/// reset, which can reach the client before the answer does (a 413 would
/// become a connection reset while the client is still sending). A body not
/// read to its end in time closes the connection.
async fn linger(session: &mut Session) {
    if !session.is_body_done() && session.drain_request_body().await.is_err() {
        session.set_keepalive(None);
    }
}

fn client_peer(session: &Session) -> Option<IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_10 => "1.0",
        _ => "1.1",
    }
}

fn is_tls(session: &Session) -> bool {
    session.digest().is_some_and(|d| d.ssl_digest.is_some())
}

#[async_trait]
impl ProxyHttp for Proxy {
    type CTX = ProxyCtx;

    fn new_ctx(&self) -> ProxyCtx {
        ProxyCtx {
            state: self.state.load_full(),
            route: None,
            req: RequestCtx::default(),
            admitted: None,
            attempt: None,
            instance: None,
            tried: Vec::new(),
            deadline: None,
            trace: None,
        }
    }

    /// Pingora's default adds a compression module at level 0: it compresses
    /// nothing, yet costs every request a module context and two boxed
    /// filter calls. The gateway passes bodies through as services encode
    /// them, so it has no modules.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    async fn request_filter(&self, session: &mut Session, ctx: &mut ProxyCtx) -> Result<bool> {
        if let Some(metrics) = &self.metrics {
            metrics.in_flight.inc();
            ctx.req.in_flight = true;
        }
        ctx.trace = ctx
            .state
            .tracer
            .as_ref()
            .map(|t| Box::new(t.begin(session.req_header())));
        ctx.req.peer = client_peer(session);
        ctx.req.local_port = session
            .server_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.port());
        keep_client_settings(session, &ctx.state.client);
        let Some(answer) = self.early_answer(session.req_header(), ctx).await else {
            return Ok(false);
        };
        self.answer(session, ctx, answer).await?;
        // Nobody will read the body the client may still be sending.
        linger(session).await;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut ProxyCtx,
    ) -> Result<Box<HttpPeer>> {
        let (Some(route), Some(upstream)) = (ctx.route, ctx.state.upstream(ctx.route)) else {
            return Error::e_explain(ErrorType::InternalError, "proxying without a route");
        };
        // What is left of the route's deadline caps this try's timeouts.
        let left = ctx
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()));
        if left.is_some_and(|l| l.is_zero()) {
            return Error::e_explain(ErrorType::HTTPStatus(504), "the route's timeout passed");
        }
        let per_try = ctx.state.routes.get(route).route.retry.per_try_timeout;
        let limit = match (left, per_try) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let key = upstream::request_key(&upstream.settings.balance, session.req_header(), &ctx.req);
        let selected = upstream
            .select(key.as_deref(), &ctx.tried, limit)
            .ok_or_else(|| {
                Error::explain(
                    ErrorType::ConnectNoRoute,
                    format!("upstream {} has no instance", upstream.name),
                )
                .into_up()
            })?;
        drop(key);
        if let Some(trace) = &mut ctx.trace {
            let method = &session.req_header().method;
            trace.try_started(selected.addr, &selected.url, method, ctx.req.attempts);
        }
        ctx.req.attempts += 1;
        ctx.tried.push(selected.addr);
        ctx.req.upstream_addr = Some(selected.addr);
        ctx.instance = Some(selected.url);
        ctx.attempt = Some(selected.attempt);
        Ok(selected.peer)
    }

    fn fail_to_connect(
        &self,
        session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut ProxyCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.req.connect_failures += 1;
        ctx.record(Err(Failure::Connect));
        e.set_retry(ctx.retry(session, Failure::Connect));
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut ProxyCtx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        // Ended by `upstream_response_filter`, which already decided.
        if retry::is_status_retry(&e) {
            return e;
        }
        let retry = match retry::failure_of(&e) {
            Some(Failure::Reset) if client_reused && session.response_written().is_none() => {
                ctx.retry_stale(session)
            }
            Some(failure) => {
                ctx.record(Err(failure));
                ctx.retry(session, failure)
            }
            None => false,
        };
        e.set_retry(retry);
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream_request: &mut RequestHeader,
        ctx: &mut ProxyCtx,
    ) -> Result<()> {
        let Some(route) = ctx.route else {
            return Error::e_explain(ErrorType::InternalError, "proxying without a route");
        };
        let uri = match ctx.req.upstream_uri.take() {
            Some(uri) => uri,
            // A retry: the first attempt took the URI built in `admit`.
            None => ctx
                .state
                .routes
                .get(route)
                .route
                .upstream_uri(&ctx.req.path, session.req_header().uri.query())
                .map_err(|_| Error::explain(ErrorType::InternalError, "upstream URI"))?,
        };
        upstream_request.set_uri(uri);

        let learned = &ctx.req;
        let preserve_host = ctx.state.routes.get(route).route.preserve_host;
        match (&ctx.instance, &learned.client_host) {
            (Some(instance), _) if !preserve_host => {
                upstream_request.insert_header("host", &instance.authority)?;
            }
            (_, Some(client_host)) => upstream_request.insert_header("host", client_host)?,
            _ => {}
        }

        // Client-sent forwarding headers are kept only from trusted proxies.
        let trusted_proxies = &ctx.state.trusted_proxies;
        let trusted_peer = learned.peer.is_some_and(|p| trusted_proxies.contains(p));
        if let Some(peer) = learned.peer {
            let chain =
                trusted_proxies.forwarded_for(peer, header_str(upstream_request, &X_FORWARDED_FOR));
            upstream_request.insert_header(X_FORWARDED_FOR.as_str(), chain)?;
        }
        if !(trusted_peer && upstream_request.headers.contains_key(&X_FORWARDED_PROTO)) {
            let proto = if is_tls(session) { "https" } else { "http" };
            upstream_request.insert_header(X_FORWARDED_PROTO.as_str(), proto)?;
        }
        if !(trusted_peer && upstream_request.headers.contains_key(&X_FORWARDED_HOST)) {
            match &learned.client_host {
                Some(host) => upstream_request.insert_header(X_FORWARDED_HOST.as_str(), host)?,
                None => {
                    upstream_request.remove_header(&X_FORWARDED_HOST);
                }
            }
        }
        upstream_request.insert_header(REQUEST_ID.as_str(), &learned.request_id)?;
        if let Some(trace) = &mut ctx.trace {
            trace.write_upstream_headers(upstream_request)?;
        }
        for plugin in ctx.state.chain(ctx.route) {
            plugin.upstream_request(upstream_request, learned)?;
        }
        Ok(())
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut ProxyCtx,
    ) -> Result<()> {
        // A chunked body has no Content-Length to check up front.
        ctx.req.body_bytes += body.as_ref().map_or(0, |b| b.len() as u64);
        if ctx.req.body_bytes > ctx.state.max_body_size {
            return Error::e_explain(
                ErrorType::HTTPStatus(413),
                "request body over max_body_size",
            );
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut ProxyCtx,
    ) -> Result<()> {
        let status = upstream_response.status.as_u16();
        let Some(upstream) = ctx.state.upstream(ctx.route).filter(|_| status >= 200) else {
            return Ok(());
        };
        if let Some(trace) = &mut ctx.trace {
            trace.try_status(status);
        }
        let failed = upstream.is_failure_status(status);
        ctx.record(if failed {
            Err(Failure::Status(status))
        } else {
            Ok(())
        });
        if status >= 500 && ctx.retry(session, Failure::Status(status)) {
            if let Some(trace) = &mut ctx.trace {
                trace.end_try(TryEnd::Failed("status"));
            }
            return Err(retry::retry_status(status));
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        _body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut ProxyCtx,
    ) -> Result<Option<std::time::Duration>> {
        // The try is over once the upstream's response is: its instance's
        // load drops now, not once the client has it and the log is written.
        if end_of_stream {
            ctx.attempt = None;
            if let Some(trace) = &mut ctx.trace {
                trace.end_try(TryEnd::Done);
            }
        }
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut ProxyCtx,
    ) -> Result<()> {
        self.close_if_draining(session);
        upstream_response.insert_header(REQUEST_ID.as_str(), &ctx.req.request_id)?;
        finish_response(session.req_header(), upstream_response, ctx)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut ProxyCtx,
    ) -> FailToProxy {
        let error = GatewayError::from_proxy_error(e);
        ctx.req.timed_out = error == Some(GatewayError::GatewayTimeout);
        // The connection is closed after this answer (its state is unknown),
        // so the answer says so: a client must not send its next request
        // down it.
        session.set_keepalive(None);
        let still_sending = error.as_ref().is_some_and(may_still_be_sending);
        let error_code = match error {
            // Once the response has started there is no way to change it.
            Some(err) if session.response_written().is_none() => self
                .answer(session, ctx, Answer::Error(err))
                .await
                .unwrap_or(0),
            Some(err) => err.status(),
            None => 0,
        };
        if still_sending {
            linger(session).await;
        }
        FailToProxy {
            error_code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut ProxyCtx) {
        // NGINX's 499: the client left before any response was written.
        let status = match session.response_written() {
            Some(response) => response.status.as_u16(),
            None if e.is_some() => 499,
            None => 0,
        };
        let req = session.req_header();
        let entry = ctx.route.map(|i| ctx.state.routes.get(i));
        let route = entry.map(|e| e.route.name.as_str());
        let upstream = entry.map(|e| e.target.upstream.name.as_str());
        let learned = &ctx.req;
        let trace = ctx.trace.take();
        let line = LogEntry {
            timestamp: SystemTime::now(),
            request_id: &learned.request_id,
            client_ip: learned.client_ip,
            method: req.method.as_str(),
            path: req.uri.path_and_query().map_or("/", |p| p.as_str()),
            route,
            upstream,
            upstream_addr: learned.upstream_addr,
            status,
            bytes: session.body_bytes_sent(),
            duration_ms: learned.started.elapsed(),
            user_agent: header_str(req, &USER_AGENT),
            trace: trace.as_ref().map(|t| (t.trace_id, t.span_id)),
        };
        self.access_log.record(&line);

        let done = Finished {
            route: route.unwrap_or(UNMATCHED),
            upstream,
            method: line.method,
            status,
            duration: line.duration_ms,
            ctx: learned,
        };
        if let Some(metrics) = &self.metrics {
            if learned.in_flight {
                metrics.in_flight.dec();
            }
            metrics.observe(&done);
        }
        for plugin in ctx.state.chain(ctx.route) {
            plugin.finished(&done);
        }
        if let (Some(trace), Some(tracer)) = (trace, &ctx.state.tracer) {
            tracer.finish(*trace, || ServerFacts {
                method: line.method,
                route: entry.map(|e| (e.route.prefix.as_str(), e.route.name.as_str())),
                upstream,
                path: req.uri.path(),
                scheme: if is_tls(session) { "https" } else { "http" },
                host: learned.client_host.as_deref(),
                port: learned.local_port,
                client_ip: learned.client_ip,
                user_agent: line.user_agent,
                protocol: protocol_version(req.version),
                status,
                refusal: learned.refusal,
                request_id: &learned.request_id,
            });
        }
    }
}
