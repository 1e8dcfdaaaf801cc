//! api-gateway: the single entry point in front of the shop's services.
//!
//! `main` only wires: command line, `.env`, the validated config, then the
//! Pingora server with the gateway built into it.

use std::fmt::Display;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use log::warn;
use pingora::server::{configuration::Opt, RunArgs, Server};

use api_gateway::config::{self, ConfigError};
use api_gateway::gateway::Gateway;

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
        return fail("JWT crypto provider already installed");
    }

    let conf_file = PathBuf::from(opt.conf.take().unwrap_or_else(|| DEFAULT_CONF.into()));
    let config = match config::load(&conf_file) {
        Ok(config) => config,
        Err(e) => return fail(e),
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

    let gateway = match Gateway::build(config, &mut server) {
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
