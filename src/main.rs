//! m2m-auth-proxy binary: see the library crate for everything.

fn main() {
    let inner =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).build();
    // Pingora's accept failures are counted even when RUST_LOG filters errors out
    log::set_max_level(inner.filter().max(log::LevelFilter::Error));
    let logger = m2m_auth_proxy::accept_errors::Logger::new(inner);
    if log::set_boxed_logger(Box::new(logger)).is_err() {
        eprintln!("warning: a logger was already installed");
    }
    if let Err(e) = m2m_auth_proxy::cli::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
