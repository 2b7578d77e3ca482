//! m2m-auth-proxy: an authenticating TLS reverse proxy for oneM2M CSEs.

mod admin;
mod auth;
mod cli;
mod config;
mod demo;
mod echo;
mod headers;
mod identity;
mod onem2m;
mod originator;
mod proxy;
mod server;
mod tls;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = cli::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
