//! m2m-auth-proxy: an authenticating TLS reverse proxy for oneM2M CSEs.

mod access_log;
mod admin;
mod auth;
mod cli;
mod config;
mod demo;
mod echo;
mod headers;
mod identity;
mod metrics;
mod onem2m;
mod originator;
mod proxy;
mod reload;
mod server;
mod tls;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    metrics::init();
    if let Err(e) = cli::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
