//! `m2m-auth-proxy explain`: the authorization rules applied to one request described on the
//! command line, rule by rule, so an operator can test a rule set before deploying it. Only the
//! config file is read (no certificates or credential files).

use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, Result};

use crate::auth::roles::Roles;
use crate::config::{Config, ConfigError, Operation, ResourceType};
use crate::cse::LocalCse;
use crate::identity::{Identity, Method};
use crate::rules::{self, RuleSet};

/// The request to explain, as given on the command line.
pub struct Question<'a> {
    pub name: &'a str,
    pub roles: &'a [String],
    pub method: Method,
    pub originator: Option<&'a str>,
    pub operation: &'a str,
    pub target: &'a str,
    pub ty: Option<&'a str>,
}

pub fn run(config_path: &Path, q: &Question<'_>) -> Result<String> {
    let (config, _) = Config::load(config_path)?;
    let invalid = |e| anyhow!(ConfigError::invalid(config_path, e));
    let cse = config
        .cse
        .as_ref()
        .map(LocalCse::from_config)
        .transpose()
        .map_err(invalid)?;
    let rules = RuleSet::compile_for(&config.authorization, cse.as_ref()).map_err(invalid)?;
    let roles = Roles::from_config(&config.auth.roles, &config.auth.methods).map_err(invalid)?;
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
    // an HTTP path with its query (`/cse-in/…?rcn=4`, `/~/…`, `/_/…`) or a primitive's `to`
    // (`cse-in/…`, `/id-in/…`), made canonical as the proxy does
    let target = if q.target.starts_with('/') && !q.target.starts_with("//") {
        rules.http_target(q.target)
    } else {
        rules.primitive_target(q.target, None, None)
    }
    .or_else(|e| {
        // `/id-in/cse-in/x` is a primitive's SP-relative `to`, not a CSE-relative path
        rules.primitive_target(q.target, None, None).map_err(|_| e)
    })
    .map_err(|e| anyhow!("TARGET {:?}: {}", q.target, e.0))?;
    let identity = roles.apply(Arc::new(Identity {
        name: q.name.to_string(),
        proven_by: q.method,
        originator: q.originator.unwrap_or(q.name).to_string(),
        also_allowed: Vec::new(),
        roles: q.roles.to_vec(),
    }));
    let written = identity.originator.clone();
    let originator = cse
        .as_ref()
        .map_or(written.as_str(), |c| c.originator(&written))
        .to_string();
    let explanation = rules.explain(&rules::Request {
        identity: Some(&identity),
        originator: Some(&originator),
        operation: Some(operation),
        resource_type,
        target: &target,
    });
    let canonical_of = |written: &str, canonical: &str| {
        if written == canonical {
            String::new()
        } else {
            format!(" (canonical form of {written})")
        }
    };
    let mut out = format!(
        "identity: {} (method {}, originator {}{}, roles [{}])\nrequest: {} {}{}{}\n",
        identity.name,
        identity.proven_by.as_str(),
        originator,
        canonical_of(&written, &originator),
        identity.roles.join(", "),
        operation.as_str(),
        target.display(),
        // the query is not part of the target (its rcn/fu show in the scope line)
        canonical_of(
            q.target.split_once('?').map_or(q.target, |(path, _)| path),
            target.as_str()
        ),
        resource_type.map_or(String::new(), |t| format!(
            " ty={}{}",
            t.0,
            t.name().map_or(String::new(), |n| format!(" ({n})"))
        )),
    );
    if let Some(note) = target.scope().describe() {
        out.push_str(&format!("target scope: {note}\n"));
    }
    out.push_str(&explanation.render(&rules));
    Ok(out)
}
