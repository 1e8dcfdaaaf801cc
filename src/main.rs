//! api-gateway: the single entry point in front of the shop's services.
//!
//! `main` only wires: command line, `.env`, the validated config, then the
//! Pingora server with the proxy and its background services.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use log::{info, warn};
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::proxy::HttpProxy;
use pingora::server::{configuration::Opt, RunArgs, Server};
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use pingora_prometheus::prometheus_http_service;

use api_gateway::access_log::AccessLog;
use api_gateway::config;
use api_gateway::drain::{Draining, PhaseWatch};
use api_gateway::metrics::{HealthGauges, Metrics};
use api_gateway::plugin::{self, Shared};
use api_gateway::proxy::Gateway;
use api_gateway::upstream::Upstream;

// glibc's malloc was about 12% of the CPU under load (fastbin
// consolidation, free-list walks); mimalloc cut instructions per request by
// 16%. Built with `no_thp`: with transparent huge pages its arenas doubled
// the idle RSS (28 MB against 13).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONF: &str = "conf/gateway.yaml";

/// Pingora's flags, with `-c/--conf` naming the gateway's YAML file.
#[derive(Parser)]
#[command(name = "api-gateway", version, about = "API gateway on Pingora")]
struct Cli {
    #[command(flatten)]
    opt: Opt,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut opt = Cli::parse().opt;

    // Like Node's dotenv: `.env` in the working directory, never overriding
    // variables that are already set.
    match dotenvy::from_path(".env") {
        Err(e) if !e.not_found() => return fail(format!(".env: {e}")),
        _ => {}
    }

    // jsonwebtoken compiles without a crypto backend and would panic at the
    // first token; ours is chosen here, once, explicitly.
    if jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
        .install_default()
        .is_err()
    {
        return fail("JWT crypto provider already installed".into());
    }

    let conf_file = PathBuf::from(opt.conf.take().unwrap_or_else(|| DEFAULT_CONF.into()));
    let mut config = match config::load(&conf_file) {
        Ok(config) => config,
        Err(e) => return fail(e.to_string()),
    };
    for warning in &config.warnings {
        warn!("{}: {warning}", conf_file.display());
    }
    if opt.test {
        println!("{}: configuration is valid", conf_file.display());
        // For scripts/upgrade.sh, which signals the process named there.
        println!("pid_file: {}", config.server.pid_file);
        return ExitCode::SUCCESS;
    }

    let access_log = match AccessLog::open(&config.access_log) {
        Ok(log) => Arc::new(log),
        Err(e) => return fail(format!("{}: {e}", conf_file.display())),
    };

    let daemon = opt.daemon;
    let mut server = Server::new_with_opt_and_conf(opt, config.server.pingora_conf());
    // With -u this waits for the old process's listening sockets.
    server.bootstrap();
    // Pingora writes the pid file only as a daemon; an upgrade needs it
    // either way, and from now on this process holds the sockets.
    if !daemon {
        if let Err(e) = std::fs::write(&config.server.pid_file, std::process::id().to_string()) {
            warn!("cannot write pid_file {}: {e}", config.server.pid_file);
        }
    }

    let mut upstreams = Vec::new();
    for settings in &config.upstreams {
        let (upstream, refresher) = Upstream::build(settings);
        if let Some(refresher) = refresher {
            server.add_service(refresher);
        }
        upstreams.push(Arc::new(upstream));
    }
    if let Some(writer) = access_log.writer() {
        server.add_service(background_service("access log", writer));
    }

    let shared = match Shared::build(&mut config, &mut server) {
        Ok(shared) => shared,
        Err(e) => return fail(format!("{}: {e}", conf_file.display())),
    };
    let chains = config
        .routes
        .iter()
        .map(|route| plugin::build_chain(&route.plugins, &shared))
        .collect();
    let default_chain = plugin::build_chain(&config.default_plugins, &shared);

    let draining = Draining::default();
    let phase_watch = PhaseWatch::new(
        server.watch_execution_phase(),
        draining.clone(),
        access_log.clone(),
    );
    server.add_service(background_service("phase watch", phase_watch));

    let metrics = match config.admin {
        Some(address) => match Metrics::register() {
            Ok(metrics) => {
                let metrics = Arc::new(metrics);
                let mut exporter = prometheus_http_service();
                exporter.add_tcp(&address.to_string());
                server.add_service(exporter);
                let gauges = HealthGauges {
                    metrics: metrics.clone(),
                    upstreams: upstreams.clone(),
                };
                server.add_service(background_service("health gauges", gauges));
                info!("metrics on http://{address}/metrics");
                Some(metrics)
            }
            Err(e) => return fail(format!("metrics: {e}")),
        },
        None => None,
    };

    let gateway = Gateway::new(
        &config,
        chains,
        default_chain,
        upstreams,
        metrics,
        access_log.clone(),
        draining,
    );
    let mut proxy =
        pingora::proxy::http_proxy_service_with_name(&server.configuration, gateway, "api-gateway");
    if let Err(e) = listen(&mut proxy, &config) {
        return fail(format!("{}: {e}", conf_file.display()));
    }
    server.add_service(proxy);

    server.run(RunArgs::default());
    access_log.flush();
    ExitCode::SUCCESS
}

/// Binds the configured listeners: plain, or TLS with HTTP/2 offered by
/// ALPN; `server.h2c` adds HTTP/2 with prior knowledge on plain ones.
fn listen(proxy: &mut Service<HttpProxy<Gateway>>, config: &config::Config) -> Result<(), String> {
    if config.server.h2c {
        let mut options = HttpServerOptions::default();
        options.h2c = true;
        if let Some(app) = proxy.app_logic_mut() {
            app.server_options = Some(options);
        }
    }
    for listener in &config.listeners {
        let address = listener.address.to_string();
        match &listener.tls {
            Some(files) => {
                let mut settings = TlsSettings::intermediate(&files.cert_file, &files.key_file)
                    .map_err(|e| format!("{address}: {e}"))?;
                if listener.http2 {
                    settings.enable_h2();
                }
                proxy.add_tls_with_settings(&address, None, settings);
                info!("listening on https://{address}");
            }
            None => {
                proxy.add_tcp(&address);
                info!("listening on http://{address}");
            }
        }
    }
    Ok(())
}

/// Startup errors go to stderr plainly, whatever the log level.
fn fail(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
