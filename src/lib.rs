//! m2m-auth-proxy: an authenticating TLS reverse proxy for oneM2M CSEs.
//!
//! The binary (`src/main.rs`) is a thin wrapper around [`cli::main`]; the modules are public so
//! that fuzz targets and benchmarks can reach the parsers and the per-request path.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod accept_errors;
pub mod access_log;
pub mod admin;
pub mod auth;
pub mod buffers;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod cse;
pub mod demo;
pub mod echo;
pub mod egress;
pub mod example_credentials;
pub mod explain;
pub mod forward;
pub mod headers;
pub mod http_head;
pub mod identity;
pub mod ingress;
pub mod limits;
pub mod log_limit;
pub mod memory;
pub mod metrics;
pub mod onem2m;
pub mod operator;
pub mod originator;
pub mod originator_syntax;
pub mod parts;
pub mod poa;
pub mod proxy_protocol;
pub mod random;
pub mod reload;
pub mod rules;
pub mod server;
pub mod steering;
pub mod summary;
pub mod target;
pub mod telemetry;
pub mod tls;
pub mod websocket;
