//! What `check` (and `demo`) print: what would run, in a few lines.

use std::path::Path;

use crate::server::Prepared;
use crate::telemetry::settings::Tracing;

/// `tracing`: on or off (with this process's `OTEL_*` environment), and how.
fn tracing_line(t: &Tracing) -> String {
    let s = match t {
        Tracing::Off(why) => return format!("tracing: off ({why})"),
        Tracing::On(s) => s,
    };
    let sampler = match (s.sampler_ratio, &s.env_sampler) {
        (Some(r), _) => format!("parent-based ratio {r} (tracing.sampler_ratio)"),
        (None, Some(env)) => format!("OTEL_TRACES_SAMPLER {env}"),
        (None, None) => "parent-based, always on".to_string(),
    };
    format!(
        "tracing: OTLP/HTTP to {} (from {}), sampler {sampler}, service.name {}, batch every {:?} (queue {}, drops counted)",
        s.endpoint,
        s.endpoint_from,
        s.service_name
            .as_deref()
            .unwrap_or("from OTEL_SERVICE_NAME or m2m-auth-proxy"),
        s.batch.schedule_delay,
        s.batch.max_queue_size
    )
}

/// What would run, in a few lines.
pub fn render(p: &Prepared) -> String {
    let c = &p.config;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str("  ");
        out.push_str(&s);
        out.push('\n');
    };
    match (&c.tls, &p.tls) {
        (Some(tls), Some(state)) => {
            let valid_until = state
                .server()
                .map_or_else(|| "?".to_string(), |s| s.leaf.not_after().to_string());
            line(format!(
                "listen: {} (TLS {}+, server certificate {} valid until {})",
                p.resolved.listen,
                tls.min_version.as_str(),
                tls.cert,
                valid_until
            ));
            let ca = match &state.trust {
                Some(trust) => format!(
                    ", CA bundle {} ({} certificate(s)){}",
                    tls.client_ca.as_deref().unwrap_or(Path::new("?")).display(),
                    trust.ca_count(),
                    match (&tls.crl, trust.crl_coverage()) {
                        (Some(crl), Some(c)) => format!(
                            ", CRL {} (checked for the {})",
                            crl.display(),
                            match c.scope {
                                crate::config::CrlScope::Chain => "whole chain",
                                crate::config::CrlScope::Leaf => "client certificate only",
                            }
                        ),
                        (Some(crl), None) => format!(", CRL {}", crl.display()),
                        _ => String::new(),
                    }
                ),
                None => String::new(),
            };
            line(format!(
                "client certificates: {}{ca}",
                tls.client_cert_mode().as_str()
            ));
            if tls.session_tickets {
                line(format!(
                    "session tickets: on, key replaced every {:?} and on a CA/CRL change",
                    tls.session_ticket_rotation
                ));
            }
            if let Some(c) = state.trust.as_ref().and_then(|t| t.crl_coverage()) {
                if !c.uncovered.is_empty() && tls.crl_scope != Some(crate::config::CrlScope::Leaf) {
                    line(format!(
                        "WARNING: tls.crl has no CRL from {}: {}",
                        c.uncovered.join(", "),
                        match tls.crl_scope {
                            None => "intermediates are not checked for revocation (add their CRLs, or set tls.crl_scope: leaf)",
                            _ => "tls.crl_scope is chain: certificates issued through it are refused",
                        }
                    ));
                }
            }
        }
        _ => line(format!(
            "listen: {} (plain HTTP: only behind something that terminates TLS)",
            p.resolved.listen
        )),
    }
    if c.allow_example_credentials {
        line(
            "WARNING: allow_example_credentials is ON: published example credentials are accepted"
                .to_string(),
        );
    }
    line(format!(
        "upstream: {} -> {} (connect timeout {:?}, timeout {:?})",
        c.upstream.url, p.resolved.upstream, c.upstream.connect_timeout, c.upstream.timeout
    ));
    line(format!(
        "admin: {} (/metrics, /healthz, /readyz)",
        p.resolved.admin
    ));
    let methods: Vec<_> = c.auth.methods.iter().map(|m| m.as_str()).collect();
    line(format!(
        "auth: methods [{}], anonymous {}, Authorization {}",
        methods.join(", "),
        c.auth.anonymous.as_str(),
        if c.auth.forward_authorization {
            "forwarded"
        } else {
            "removed"
        }
    ));
    line(format!(
        "reload: poll {:?}{}, changes in place applied after {:?} unchanged, reads time out after {:?}",
        c.reload.poll_interval,
        if c.reload.watch { " and file events" } else { "" },
        c.reload.settle,
        c.reload.read_timeout
    ));
    line(if p.resolved.proxy_trusted.is_empty() {
        "proxy_protocol: off (the client address is the TCP peer's)".to_string()
    } else {
        format!(
            "proxy_protocol: v1/v2 header required from {} (its source address is the client's); a header from anyone else refused",
            p.resolved
                .proxy_trusted
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    });
    line(tracing_line(&p.tracing));
    let (budget, source) = c.limits.buffer_budget();
    line(format!(
        "buffer budget: {budget} bytes ({source}) for WebSocket messages and bodies read whole"
    ));
    let rl = &c.auth.rate_limit;
    line(format!(
        "failed-guess limit: {} + {}/min per client /{} (IPv4) or /{} (IPv6) and per user{}; password checks {} at once, {} queued",
        rl.burst,
        rl.failures_per_minute,
        rl.ipv4_prefix,
        rl.ipv6_prefix,
        match &rl.global {
            Some(g) => format!(", {} + {}/min per method for all clients", g.burst, g.failures_per_minute),
            None => String::new(),
        },
        c.limits.verifications.concurrent(),
        c.limits.verifications.max_queued
    ));
    for (_, method) in p.methods.iter() {
        method.summary(c).into_iter().for_each(&mut line);
    }
    for route in &p.routes {
        line(format!(
            "egress {}: {} (plain HTTP, loopback) -> {} (server name {}){}{}{}",
            route.name,
            route.listen,
            route.peer.base(),
            route.server_name,
            if route.client.load().is_some() {
                ", client certificate"
            } else {
                ""
            },
            if route.authorization.load().is_some() {
                ", credentials from file"
            } else {
                ""
            },
            if route.rewrite_poa {
                ", poa rewritten"
            } else {
                ""
            },
        ));
        let allow = c
            .egress
            .iter()
            .find(|r| r.name == route.name)
            .and_then(|r| r.allow.as_ref());
        line(format!(
            "egress {}: peer on the ingress: {}; lets out: {}",
            route.name,
            match route.peer_roles.is_empty() {
                true => "nobody (no peer_roles: no poa rewriting of request bodies)".to_string(),
                false => format!("roles [{}]", route.peer_roles.join(", ")),
            },
            match allow {
                Some(entries) => format!(
                    "what its {} allow entr{} name{}, the rest refused",
                    entries.len(),
                    if entries.len() == 1 { "y" } else { "ies" },
                    if entries.len() == 1 { "s" } else { "" }
                ),
                None => "everything originators lets out (no allow)".to_string(),
            }
        ));
    }
    if !p.routes.is_empty() {
        line("egress listeners: requests (headers, query, bodies, WebSocket primitives) that name one are refused".into());
    }
    match &c.cse {
        Some(cse) => line(format!(
            "cse: {} (CSEBase {}, SP-ID {}): its targets and originators are matched in one canonical form",
            cse.id,
            cse.name,
            cse.sp_id_bare().unwrap_or("any")
        )),
        None => line("cse: not configured (rules cannot use targets; originators are taken as written)".into()),
    }
    if let Some(old) = &c.websocket.cse_id {
        line(format!(
            "WARNING: websocket.cse_id ({old}) is deprecated: set cse.id{}",
            if c.cse.is_some() {
                " and remove websocket.cse_id"
            } else {
                " (and cse.name)"
            }
        ));
    }
    for row in poa_lines(p) {
        line(row);
    }
    let rules = p.rules.load();
    if !rules.is_empty() {
        line("authorization rules (first match decides):".to_string());
        for row in rules.table() {
            line(format!("  {row}"));
        }
    }
    for row in roles_lines(c) {
        line(row);
    }
    for row in originator_lines(&c.originator) {
        line(row);
    }
    out
}

/// The `poa` rewrites in force, one line per mapping and way: what each URL prefix becomes, and
/// in which bodies.
fn poa_lines(p: &Prepared) -> Vec<String> {
    let c = &p.config;
    let routes: Vec<_> = p.routes.iter().filter(|r| r.rewrite_poa).collect();
    let public = c
        .cse
        .as_ref()
        .and_then(|cse| Some((cse, cse.public_url.as_deref()?)));
    if routes.is_empty() && public.is_none() {
        // said only where Mcc is configured at all
        if c.egress.is_empty() && c.cse.is_none() {
            return Vec::new();
        }
        return vec!["poa rewriting: none (no route rewrites poa, cse.public_url not set)".into()];
    }
    let mut out = vec![format!(
        "poa rewriting in oneM2M JSON/CBOR bodies up to {} bytes (a poa string is rewritten by the first mapping that matches, once):",
        c.limits.egress_rewrite_max_body
    )];
    const INTO: &str = "entering the pod (egress responses; ingress requests of a route's peer)";
    for r in &routes {
        let peer = r.peer.base();
        out.push(format!(
            "  route {}: {peer} -> {} {INTO}",
            r.name, r.local_url
        ));
        out.push(format!(
            "  route {}: {} -> {peer} leaving the pod (egress requests, ingress responses)",
            r.name, r.local_url
        ));
    }
    match public {
        Some((cse, public)) => {
            let advertised = cse.advertised_or(&c.upstream.url);
            out.push(format!(
                "  cse.public_url: {} -> {public} leaving the pod (egress requests on every route, ingress responses){}",
                advertised.join(", "),
                if cse.advertised.is_none() {
                    " [cse.advertised: the upstream URL]"
                } else {
                    ""
                }
            ));
            out.push(format!(
                "  cse.public_url: {public} -> {} {INTO}",
                advertised.first().copied().unwrap_or_default()
            ));
        }
        None => out.push(
            "  cse.public_url: not set: the CSE's own poa leaves the pod as the CSE wrote it"
                .into(),
        ),
    }
    out
}

/// `auth.roles` in the config's own words, one line per role, and a warning for an entry
/// bound to the one enabled method only by having no `methods`.
fn roles_lines(c: &crate::config::Config) -> Vec<String> {
    let list = |items: &[String]| {
        items
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = Vec::new();
    for (role, m) in &c.auth.roles {
        let mut keys = Vec::new();
        if let Some(methods) = &m.methods {
            let names: Vec<_> = methods.iter().map(|m| m.as_str()).collect();
            keys.push(format!("methods: [{}]", names.join(", ")));
        }
        if !m.names.is_empty() {
            keys.push(format!("names: [{}]", list(&m.names)));
        }
        if !m.patterns.is_empty() {
            keys.push(format!("patterns: [{}]", list(&m.patterns)));
        }
        out.push(format!("auth.roles: {role}: {{{}}}", keys.join(", ")));
        if m.methods.is_none() {
            if let Some(only) = c.auth.methods.first() {
                out.push(format!(
                    "WARNING: auth.roles.{role} has no `methods`: it is given to identities proven by {0}, the only enabled method; write `methods: [{0}]` in it, or enabling another method makes this config an error",
                    only.as_str()
                ));
            }
        }
    }
    out
}

/// `originator` in the config's own words: the mode for everyone, then per role.
fn originator_lines(o: &crate::config::OriginatorConfig) -> Vec<String> {
    let namespace = |on: bool| {
        if !on {
            return String::new();
        }
        format!(
            ", cse_namespace (one C/S AE-ID segment{})",
            if o.cse_ae_ids.is_empty() {
                String::new()
            } else {
                format!(
                    "; AE-ID patterns for {}",
                    o.cse_ae_ids.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        )
    };
    let mut out = vec![format!(
        "originator: mode {}{}{}{}",
        o.mode.as_str(),
        namespace(o.cse_namespace),
        if o.allow.is_empty() {
            String::new()
        } else {
            format!(", allow: patterns for {} originators", o.allow.len())
        },
        if o.by_role.is_empty() {
            String::new()
        } else {
            " (for identities without a role below)".to_string()
        }
    )];
    for (i, r) in o.by_role.iter().enumerate() {
        out.push(format!(
            "originator.by_role[{i}]: role {}: mode {}{}",
            r.role,
            r.mode.as_str(),
            namespace(r.cse_namespace)
        ));
    }
    if !o.by_role.is_empty() {
        out.push("originator.by_role: the first entry whose role an identity holds decides".into());
    }
    out
}
