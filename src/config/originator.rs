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

impl OriginatorMode {
    /// As the config writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            OriginatorMode::Overwrite => "overwrite",
            OriginatorMode::Verify => "verify",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OriginatorConfig {
    pub mode: OriginatorMode,
    /// verify mode: an identity whose originator is a CSE-ID (`/id-mn`) may send originators
    /// of one AE-ID segment inside its own namespace (`/id-mn/Cae1`), as a CSE forwarding for
    /// its AEs does.
    pub cse_namespace: bool,
    /// With `cse_namespace`: per CSE-ID, a regex the AE-ID of an AE registering through that
    /// CSE must match (`/id-mn: "^Cmn-"`), so that it cannot take an AE-ID of the CSE behind
    /// the proxy (its resource IDs are one flat space).
    pub cse_ae_ids: BTreeMap<String, String>,
    /// verify mode: further originator patterns (`*` = any run of characters) an identity may
    /// use, keyed by its authenticated originator.
    pub allow: BTreeMap<String, Vec<String>>,
    /// Per role, another mode: the first entry whose role the identity holds decides; the
    /// top-level `mode` and `cse_namespace` otherwise.
    pub by_role: Vec<RoleOriginator>,
}

/// One entry of `originator.by_role`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleOriginator {
    pub role: String,
    pub mode: OriginatorMode,
    #[serde(default)]
    pub cse_namespace: bool,
}
