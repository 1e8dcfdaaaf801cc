//! api-gateway as a library: the modules the binary (`main.rs`) wires
//! together, public so that benchmarks in `benches/` can measure them.

pub mod access_log;
pub mod background;
pub mod certs;
pub mod config;
pub mod context;
pub mod control;
pub mod drain;
pub mod edge;
pub mod error;
pub mod forwarded;
pub mod gateway;
pub mod headers;
pub mod healthcheck;
pub mod host;
pub mod jwt;
pub mod log_summary;
pub mod metrics;
pub mod path;
pub mod plugin;
pub mod proxy;
pub mod random;
pub mod reload;
pub mod retry;
pub mod routing;
pub mod sharded_lru;
pub mod state;
pub mod trace;
pub mod upstream;
pub mod yaml;
