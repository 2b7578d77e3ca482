//! `m2m-auth-proxy explain`: how the proxy would decide one request described on the command
//! line, with the code that decides real requests. The config and every file it names are
//! loaded as for a start (`server::prepare`); the identity is made by the method's own code from
//! what the method reads (a certificate or its identity value, a Basic user name, a tokens-file
//! entry, JWT claims, an introspection answer), `auth.roles` are added as for a request, and
//! `ingress::decide` binds the originator and applies the rules to an HTTP request head built
//! from the operation and target. Then each rule is shown in order. Nothing is verified that
//! needs a secret (passwords, token signatures, the certificate's chain).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use pingora::http::RequestHeader;

use crate::auth::method::Sample;
use crate::config::{Operation, ResourceType};
use crate::identity::{Identity, Method};
use crate::ingress::{self, RequestCtx};
use crate::onem2m::operation::http_operation;
use crate::parts::Known;
use crate::rules::{self, RuleSet};
use crate::server::{self, Prepared};

/// The request to explain, as given on the command line.
pub struct Question<'a> {
    /// The identity's name as its method reads it: a certificate's identity value, a Basic
    /// user, the `name` of a tokens-file entry.
    pub name: Option<&'a str>,
    /// mtls: a client certificate (PEM) instead of `name`.
    pub cert: Option<&'a Path>,
    /// jwt: the token's claims; introspection: the endpoint's answer (JSON).
    pub claims: Option<&'a str>,
    /// Further roles (as a JWT claim or the introspection flag would give).
    pub roles: &'a [String],
    pub method: Method,
    /// The `X-M2M-Origin` the client sends (none: the proxy sets the bound one).
    pub originator: Option<&'a str>,
    pub operation: &'a str,
    pub target: &'a str,
    pub ty: Option<&'a str>,
}

/// What `explain` prints, and whether the proxy would forward the request (exit 0, else 1).
pub struct Answer {
    pub text: String,
    pub allowed: bool,
}

pub fn run(config_path: &Path, q: &Question<'_>) -> Result<Answer> {
    let p = server::prepare(config_path)?;
    let operation = Operation::parse(q.operation).ok_or_else(|| {
        anyhow!(
            "OPERATION: expected create, retrieve, update, delete or notify, got {:?}",
            q.operation
        )
    })?;
    let resource_type =
        q.ty.map(|t| {
            ResourceType::parse(t).ok_or_else(|| {
                anyhow!(
                    "--ty: expected a resource type number or name (remoteCSE, AE, …), got {t:?}"
                )
            })
        })
        .transpose()?;
    if resource_type.is_some() && !matches!(operation, Operation::Create | Operation::Update) {
        bail!("--ty: only a create (the type it creates) or an update (the type its content names) takes a resource type");
    }
    // an update is judged by the type its content names (`crate::websocket::content`); without --ty, one
    // whose resources do not make the CSE act later
    let content = match operation {
        Operation::Update => Known::Is(resource_type),
        _ => Known::Is(None),
    };
    let rules = p.rules.load();
    let path = http_path(&rules, q.target)?;
    let req = request_head(
        operation,
        resource_type.filter(|_| operation == Operation::Create),
        &path,
        q.originator,
    )?;
    let identity = match identity(&p, q)? {
        Ok(identity) => identity,
        Err(refused) => {
            return Ok(Answer {
                text: format!(
                "identity: refused by {}: {refused}\ndecision: deny (401, RSC 4107: {refused})\n",
                q.method.as_str()
            ),
                allowed: false,
            })
        }
    };
    let mut identity = p.roles.load().apply(identity);
    if !q.roles.is_empty() {
        let mut with = (*identity).clone();
        for role in q.roles {
            if !with.roles.contains(role) {
                with.roles.push(role.clone());
            }
        }
        identity = Arc::new(with);
    }
    let mut ctx = RequestCtx {
        identity: Some(identity.clone()),
        ..Default::default()
    };
    let policy = p.policy.load();
    let decided = ingress::decide(&policy, &rules, &req, &mut ctx)
        .and_then(|()| ingress::decide_content(&rules, content, &mut ctx));

    let (mode, namespace) = policy.mode_for(&identity);
    let mut out = format!(
        "identity: {} (method {}, roles [{}])\n",
        identity.name,
        identity.proven_by.as_str(),
        identity.roles.join(", "),
    );
    let claimed = q.originator.unwrap_or("(none)");
    let mode = format!(
        "mode {}{}",
        mode.as_str(),
        if namespace { ", cse_namespace" } else { "" }
    );
    match &ctx.originator {
        Some(bound) => {
            let written = match q.originator {
                Some(c) if policy.canonical(c) == bound => c,
                _ => identity.originator.as_str(),
            };
            out.push_str(&format!(
                "originator: {bound}{} ({mode}; X-M2M-Origin sent: {claimed})\n",
                if written == bound {
                    String::new()
                } else {
                    format!(" (canonical form of {written})")
                }
            ));
        }
        None => {
            let reason = match &decided {
                Err(refusal) => refusal.err.reason.to_string(),
                Ok(()) => String::new(),
            };
            out.push_str(&format!(
                "originator: {claimed} refused ({mode}): {reason}\ndecision: deny (403, RSC 4103: {reason})\n"
            ));
            return Ok(Answer {
                text: out,
                allowed: false,
            });
        }
    }
    out.push_str(&describe_rules(
        &rules, &ctx, &identity, &req, q.target, content,
    )?);
    if let Err(refusal) = &decided {
        // the rules allowed, yet the request is refused: say by what (a target the rules
        // cannot read one way is a 400)
        if ctx.rule.is_none() || refusal.err.rsc.code() != 4103 {
            out.push_str(&format!(
                "refused: {} (RSC {})\n",
                refusal.err.reason,
                refusal.err.rsc.code()
            ));
        }
    }
    Ok(Answer {
        text: out,
        allowed: decided.is_ok(),
    })
}

/// The identity the method's own code makes from what it reads; `Ok(Err(reason))` when the
/// method would refuse it.
fn identity(p: &Prepared, q: &Question<'_>) -> Result<std::result::Result<Arc<Identity>, String>> {
    if !p.config.auth.methods.contains(&q.method) {
        bail!(
            "--method {}: not in auth.methods of the config, so the proxy never authenticates with it",
            q.method.as_str()
        );
    }
    let method = p
        .methods
        .get(q.method)
        .ok_or_else(|| anyhow!("{} is not configured", q.method.descriptor().section))?;
    method.explain(&Sample {
        method: q.method,
        name: q.name,
        cert: q.cert,
        claims: q.claims,
    })
}

/// The target as an HTTP request path: an HTTP path (`/cse-in/…?rcn=4`, `/~/…`, `/_/…`) as
/// given, a primitive's `to` (`cse-in/…`, `/id-in/…`, `//sp/…`) in its HTTP form (TS-0009).
fn http_path(rules: &RuleSet, target: &str) -> Result<String> {
    let as_path = target.starts_with('/') && !target.starts_with("//");
    let path_error = match as_path.then(|| rules.http_target(target)) {
        Some(Ok(_)) => return Ok(target.to_string()),
        Some(Err(e)) => Some(e),
        None => None,
    };
    match rules.primitive_target(target, &rules::Params::default()) {
        Ok(_) => Ok(
            match (target.strip_prefix("//"), target.strip_prefix('/')) {
                (Some(absolute), _) => format!("/_/{absolute}"),
                (None, Some(sp_relative)) => format!("/~/{sp_relative}"),
                (None, None) => format!("/{target}"),
            },
        ),
        Err(e) => Err(anyhow!(
            "TARGET {target:?}: {}",
            path_error.map_or(e.0, |p| p.0)
        )),
    }
}

/// The request head a client would send for `operation` on `path`.
fn request_head(
    operation: Operation,
    ty: Option<ResourceType>,
    path: &str,
    originator: Option<&str>,
) -> Result<RequestHeader> {
    let method = match operation {
        Operation::Create | Operation::Notify => "POST",
        Operation::Retrieve => "GET",
        Operation::Update => "PUT",
        Operation::Delete => "DELETE",
    };
    let mut req = RequestHeader::build(method, path.as_bytes(), None)
        .map_err(|e| anyhow!("TARGET {path:?}: not usable as a request path: {e}"))?;
    let content_type = match (operation, ty) {
        (Operation::Create, Some(ty)) => Some(format!("application/json;ty={}", ty.0)),
        (Operation::Create, None) => bail!("create needs --ty (the resource type it creates)"),
        (Operation::Notify | Operation::Update, _) => Some("application/json".to_string()),
        _ => None,
    };
    if let Some(ct) = content_type {
        req.insert_header(http::header::CONTENT_TYPE, ct)
            .map_err(|e| anyhow!("{e}"))?;
    }
    if let Some(o) = originator {
        req.insert_header("X-M2M-Origin", o)
            .map_err(|_| anyhow!("--originator {o:?}: not usable as a header value"))?;
    }
    Ok(req)
}

/// The request line and every rule in order, as `rules.explain` sees the request.
fn describe_rules(
    rules: &RuleSet,
    ctx: &RequestCtx,
    identity: &Identity,
    req: &RequestHeader,
    written: &str,
    content: Known<Option<ResourceType>>,
) -> Result<String> {
    let raw = String::from_utf8_lossy(req.raw_path());
    let target = rules
        .http_target(&raw)
        .map_err(|e| anyhow!("TARGET {written:?}: {}", e.0))?;
    let content_type = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let (operation, resource_type) = http_operation(req.method.as_str(), content_type);
    let written_path = written.split_once('?').map_or(written, |(path, _)| path);
    let mut out = format!(
        "request: {} {}{}{}\n",
        operation.map_or("?", |o| o.as_str()),
        target.display(),
        // the query is not part of the target (its rcn/fu show in the scope line)
        if written_path == target.as_str() {
            String::new()
        } else {
            format!(" (canonical form of {written_path})")
        },
        resource_type.map_or(String::new(), |t| format!(
            " ty={}{}",
            t.0,
            t.name().map_or(String::new(), |n| format!(" ({n})"))
        )),
    );
    if let Some(note) = target.scope().describe() {
        out.push_str(&format!("target scope: {note}\n"));
    }
    if rules.is_empty() {
        out.push_str("decision: allow (no authorization rules)\n");
        return Ok(out);
    }
    let explanation = rules.explain(&rules::Request {
        identity: Some(identity),
        originator: ctx.originator.as_deref(),
        operation,
        resource_type,
        content,
        target: &target,
    });
    out.push_str(&explanation.render(rules));
    Ok(out)
}
