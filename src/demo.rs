//! `m2m-auth-proxy demo`: the proxy on the example config, an echo upstream on the configured
//! upstream address, and ready-to-paste curl commands.

use std::path::Path;

use anyhow::{Context, Result};

use crate::server;
use crate::summary;

pub fn run(config_path: &Path) -> Result<()> {
    // the demo runs on the published development credentials by design
    crate::example_credentials::allow();
    let prepared = server::prepare(config_path)?;
    let upstream = prepared.resolved.upstream;
    crate::echo::spawn(upstream).with_context(|| {
        format!(
            "demo: cannot start the echo upstream on {upstream} (is a CSE already running there?)"
        )
    })?;
    let base = config_path.parent().unwrap_or(Path::new("."));
    let dev = base.join("certs/dev");
    let d = |f: &str| dev.join(f).display().to_string();
    let port = prepared.resolved.listen.port();
    let url = format!("https://localhost:{port}/cse-in");
    println!("m2m-auth-proxy demo: proxy on port {port}, echo upstream on {upstream}.\n");
    print!("{}", summary::render(&prepared));
    println!(
        "\nTry (in another terminal):\n\n\
# 1. A client certificate proves who you are: the upstream sees X-M2M-Origin: Cae-sensor1\n\
curl --cacert {ca} --cert {cert} --key {key} -H 'X-M2M-RI: req-1' {url}\n\n\
# 2. A spoofed originator is replaced by the proven one\n\
curl --cacert {ca} --cert {cert} --key {key} -H 'X-M2M-Origin: CAdmin' -H 'X-M2M-RI: req-2' {url}\n\n\
# 3. No credentials: refused with 401 and a oneM2M error (X-M2M-RSC: 4107)\n\
curl -i --cacert {ca} -H 'X-M2M-RI: req-3' {url}\n\n\
# 4. A certificate from another CA: the TLS handshake is refused\n\
curl --cacert {ca} --cert {rogue} --key {rogue_key} {url}\n\n\
# 5. Basic authentication (certs/dev/htpasswd): the user is the originator\n\
curl --cacert {ca} -u Cae-basic1:demo-password -H 'X-M2M-Origin: CAdmin' {url}\n\n\
# 6. A bearer token (certs/dev/tokens.yaml), also in Arrowhead's IDENTITY-TOKEN// form\n\
curl --cacert {ca} -H 'Authorization: Bearer IDENTITY-TOKEN//demo-token-INSECURE' {url}\n\n\
# Metrics and health: curl http://{admin}/metrics   curl http://{admin}/readyz\n",
        admin = prepared.resolved.admin,
        ca = d("ca.pem"),
        cert = d("client-Cae-sensor1.pem"),
        key = d("client-Cae-sensor1.key"),
        rogue = d("rogue-client.pem"),
        rogue_key = d("rogue-client.key"),
    );
    server::run(prepared)
}
