//! `originator`: which `X-M2M-Origin` the upstream receives (the patterns are checked by the
//! policy's builder, `OriginatorPolicy::from_config`).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OriginatorMode {
    #[default]
    Overwrite,
    Verify,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginatorConfig {
    pub mode: OriginatorMode,
    /// verify mode: an identity whose originator is a CSE-ID (`/id-mn`) may send originators
    /// inside its own namespace (`/id-mn/...`), as a CSE forwarding for its AEs does.
    pub cse_namespace: bool,
    /// verify mode: further originator patterns (`*` = any run of characters) an identity may
    /// use, keyed by its authenticated originator.
    pub allow: BTreeMap<String, Vec<String>>,
}
