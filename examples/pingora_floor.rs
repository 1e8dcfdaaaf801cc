//! The least a Pingora 0.9.1 proxy can do for what NGINX plain does in
//! `benches/compare.sh`: strip `/users` and forward to one upstream over a
//! kept-alive connection, with one CORS header on the response, and the
//! gateway's upstream timeouts and allocator. No config model, plugins,
//! request id, forwarding headers or log. `compare.sh` loads it beside the
//! gateway, so the gateway's cost splits into what Pingora itself takes
//! (this) and what the gateway adds on top.
//!
//!     cargo run --release --example pingora_floor -- <listen> <upstream> -c <pingora.yaml>

use std::net::SocketAddr;
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Floor {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        if session.req_header().uri.path().starts_with("/users/") {
            return Ok(false);
        }
        session.respond_error(404).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        let mut peer = HttpPeer::new(self.upstream, false, String::new());
        peer.options.connection_timeout = Some(Duration::from_secs(3));
        peer.options.read_timeout = Some(Duration::from_secs(60));
        peer.options.write_timeout = Some(Duration::from_secs(60));
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Ok(Box::new(peer))
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        upstream_request: &mut RequestHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        let stripped = upstream_request
            .uri
            .path_and_query()
            .map_or("/", |p| &p.as_str()[6..]);
        let uri = stripped.parse().expect("a path is a URI");
        upstream_request.set_uri(uri);
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        upstream_response.insert_header("access-control-allow-origin", "*")
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: pingora_floor <listen addr> <upstream addr> [pingora options]";
    let listen = args.next().expect(usage);
    let upstream = args.next().expect(usage).parse().expect(usage);
    let opt = Opt::parse_from_args(std::iter::once("pingora_floor".to_string()).chain(args));
    let mut server = Server::new(Some(opt)).expect("a Pingora server");
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, Floor { upstream });
    proxy.add_tcp(&listen);
    server.add_service(proxy);
    server.run_forever();
}
