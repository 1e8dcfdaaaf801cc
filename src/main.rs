//! api-gateway: the single entry point in front of the shop's services.
//!
//! `main` only wires: command line, `.env`, the validated config, then the
//! Pingora server with the gateway built into it.

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use log::warn;
use pingora::server::{configuration::Opt, RunArgs, Server};

use api_gateway::config::{self, ConfigError};
use api_gateway::control::{self, Command};
use api_gateway::gateway::Gateway;
use api_gateway::healthcheck;
use api_gateway::log_summary;

// glibc's malloc was about 12% of the CPU under load (fastbin
// consolidation, free-list walks); mimalloc cut instructions per request by
// 16%. Built with `no_thp`: with transparent huge pages its arenas doubled
// the idle RSS (28 MB against 13).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DEFAULT_CONF: &str = "conf/gateway.yaml";

/// Pingora's flags, with `-c/--conf` naming the gateway's YAML file, and
/// `-s` to signal a running gateway, as NGINX does.
#[derive(Parser)]
#[command(name = "api-gateway", version, about = "API gateway on Pingora")]
struct Cli {
    #[command(flatten)]
    opt: Opt,
    /// Signal the gateway in `server.pid_file` of the config: `reload`
    /// (prints whether it succeeded) or `reopen` (the access log).
    #[arg(short = 's', long = "signal", value_enum, value_name = "SIGNAL")]
    signal: Option<Command>,
    /// Ask the gateway on 127.0.0.1:$PORT for /healthz and exit 0 on a 200:
    /// the container's health check, which needs no curl.
    #[arg(long)]
    healthcheck: bool,
}

fn main() -> ExitCode {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    if log_summary::install(logger).is_err() {
        return fail("a logger was already installed");
    }
    // A SIGHUP before the reloader listens must not end the process, which
    // is what it does by default; the reloader takes it over once it runs.
    // SAFETY: setting a signal's disposition to "ignore" runs no handler.
    unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
    let cli = Cli::parse();
    if cli.healthcheck {
        let port = std::env::var("PORT").ok();
        return match healthcheck::target(port.as_deref())
            .and_then(|address| healthcheck::probe(address, Duration::from_secs(2)))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => fail(message),
        };
    }
    let mut opt = cli.opt;

    // jsonwebtoken compiles without a crypto backend and would panic at the
    // first token; ours is chosen here, once, explicitly.
    if jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER
        .install_default()
        .is_err()
    {
        return fail("JWT crypto provider already installed");
    }

    let conf_file = PathBuf::from(opt.conf.take().unwrap_or_else(|| DEFAULT_CONF.into()));
    let config = match config::load(&conf_file) {
        Ok(config) => config,
        Err(e) => return fail(e),
    };
    if let Some(command) = cli.signal {
        return match control::send(command, &config.server.pid_file) {
            Ok(message) => {
                println!("{message}");
                ExitCode::SUCCESS
            }
            Err(message) => fail(message),
        };
    }
    for warning in &config.warnings {
        warn!("{}: {warning}", conf_file.display());
    }
    if opt.test {
        println!("{}: configuration is valid", conf_file.display());
        // For scripts/upgrade.sh, which signals the process named there.
        println!("pid_file: {}", config.server.pid_file);
        return ExitCode::SUCCESS;
    }

    let daemon = opt.daemon;
    let pid_file = config.server.pid_file.clone();
    let mut server = Server::new_with_opt_and_conf(opt, config.server.pingora_conf());
    // With -u this waits for the old process's listening sockets.
    server.bootstrap();
    // Pingora writes the pid file only as a daemon; an upgrade needs it
    // either way, and from now on this process holds the sockets.
    if !daemon {
        if let Err(e) = std::fs::write(&pid_file, std::process::id().to_string()) {
            warn!("cannot write pid_file {pid_file}: {e}");
        }
    }

    let gateway = match Gateway::build(config, &conf_file, &mut server) {
        Ok(gateway) => gateway,
        Err(problem) => {
            return fail(ConfigError {
                file: conf_file,
                problem,
            })
        }
    };
    server.run(RunArgs::default());
    gateway.flush();
    ExitCode::SUCCESS
}

/// Startup errors go to stderr plainly, whatever the log level.
fn fail(message: impl Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
