//! m2m-auth-proxy binary: see the library crate for everything.

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = m2m_auth_proxy::cli::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
