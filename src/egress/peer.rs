//! Connections from a route to its peer: TLS with the route's client certificate and CA,
//! `server_name` as SNI and the name the certificate must carry, and the outbound TLS policy
//! (`tls::outbound`: TLS 1.2 or 1.3, ECDHE and AEAD, the name in a SAN) checked on every new
//! connection before anything is written to it. A reload of the route's certificate or CA
//! starts a new generation: pooled connections made with the old files are not reused.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::prelude::HttpPeer;
use pingora::protocols::Stream;
use pingora::{Error, ErrorType, Result};

use super::Route;
use crate::forward::Target;
use crate::tls::outbound::{self, PeerName, Violation};

/// Error types of a peer whose TLS breaks the outbound policy (`tls::outbound`), one per way.
const POLICY_ERRORS: [(Violation, &str); 4] = [
    (Violation::OldVersion, "EgressPeerOldTls"),
    (Violation::WeakCipher, "EgressPeerWeakTls"),
    (Violation::NameMismatch, "EgressPeerName"),
    (Violation::Unchecked, "EgressPeerTlsUnchecked"),
];
/// Error type of a peer host name that does not resolve.
const PEER_UNRESOLVED: &str = "EgressPeerUnresolved";

/// Where a route's requests go.
pub struct PeerTarget(pub Arc<Route>);

#[async_trait]
impl Target for PeerTarget {
    async fn peer(&self) -> Result<(HttpPeer, u64)> {
        let route = &self.0;
        // read before the files: a reload in between makes a connection that is not pooled,
        // never one pooled under the new generation with the old files
        let generation = route.generation();
        let Some(addr) = route.peer_addr().await else {
            return Error::e_explain(
                ErrorType::Custom(PEER_UNRESOLVED),
                "peer name does not resolve",
            )
            .map_err(|e| e.into_up());
        };
        let mut peer = HttpPeer::new(addr, route.peer.tls, route.server_name.clone());
        let o = &mut peer.options;
        o.connection_timeout = Some(route.connect_timeout);
        o.total_connection_timeout = Some(route.connect_timeout);
        if route.peer.tls {
            o.verify_cert = true;
            o.ca = route.ca.load_full();
            // OpenSSL's host check knows no IP SANs: the policy's own check does both kinds
            o.verify_hostname = route.server_ip.is_none();
            o.upstream_tls_handshake_complete_hook = Some(outbound::hook(match route.server_ip {
                Some(ip) => PeerName::Ip(ip),
                None => PeerName::Dns(route.server_name.clone()),
            }));
            peer.client_cert_key = route.client.load_full();
        }
        Ok((peer, generation))
    }

    fn generation(&self) -> u64 {
        self.0.generation()
    }

    fn check(&self, stream: &Stream) -> Result<()> {
        if !self.0.peer.tls {
            return Ok(());
        }
        // Pingora's client context allows TLS 1.0, static RSA, CBC and names in the CN: the
        // outbound policy refuses them here, before the request is sent
        match outbound::verdict_of(stream.get_ssl_digest().as_deref()) {
            Ok(()) => Ok(()),
            Err(violation) => {
                let name = POLICY_ERRORS
                    .iter()
                    .find(|(v, _)| *v == violation)
                    .map_or("EgressPeerTlsUnchecked", |(_, n)| n);
                Error::e_explain(ErrorType::Custom(name), violation.reason())
                    .map_err(|e| e.into_up())
            }
        }
    }
}

/// The status and reason a failure toward the peer is answered with (never a secret).
pub fn failure(e: &Error) -> (u16, &'static str) {
    use ErrorType::*;
    let text = format!("{e}").to_ascii_lowercase();
    let refused_our_cert =
        text.contains("alert") && (text.contains("certificate") || text.contains("unknown ca"));
    if let Custom(name) = e.etype() {
        if let Some((violation, _)) = POLICY_ERRORS.iter().find(|(_, n)| n == name) {
            return (502, violation.reason());
        }
    }
    match e.etype() {
        InvalidCert => (502, "peer certificate not trusted"),
        Custom(PEER_UNRESOLVED) => (502, "peer name does not resolve"),
        _ if refused_our_cert => (502, "peer refused our client certificate"),
        TLSHandshakeFailure => (502, "TLS handshake with the peer failed"),
        ConnectTimedout => (504, "peer did not accept the connection in time"),
        ReadTimedout | WriteTimedout => (504, "peer did not answer in time"),
        ConnectRefused | ConnectNoRoute => (502, "peer refused the connection"),
        ConnectionClosed | ReadError | WriteError => (502, "peer closed the connection"),
        InvalidHTTPHeader | H1Error => (502, "peer sent an invalid response"),
        _ => (502, "peer not reachable"),
    }
}
