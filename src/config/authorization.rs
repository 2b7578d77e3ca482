//! `authorization`: rules that decide, after authentication, who may do what where. The rule
//! engine (`crate::rules`) compiles this section; here is the data and what needs nothing else.

use std::collections::HashSet;

use serde::{Deserialize, Deserializer};

use super::value::KeyError;
use crate::identity::Method;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationConfig {
    /// What a request that matches no rule gets.
    pub default: Effect,
    /// Evaluated in order; the first rule whose every given condition matches decides.
    pub rules: Vec<RuleConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    #[default]
    Allow,
    Deny,
}

impl Effect {
    pub const ALL: [Effect; 2] = [Effect::Allow, Effect::Deny];

    pub fn label(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        }
    }
}

/// oneM2M operations, as the HTTP binding and the WebSocket primitives carry them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    Create,
    Retrieve,
    Update,
    Delete,
    Notify,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Operation::Create,
        Operation::Retrieve,
        Operation::Update,
        Operation::Delete,
        Operation::Notify,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "create",
            Operation::Retrieve => "retrieve",
            Operation::Update => "update",
            Operation::Delete => "delete",
            Operation::Notify => "notify",
        }
    }

    /// The `op` of a request primitive (TS-0004: 1 create … 5 notify; 6 discovery is a
    /// retrieve).
    pub fn from_op(op: u64) -> Option<Operation> {
        match op {
            1 => Some(Operation::Create),
            2 | 6 => Some(Operation::Retrieve),
            3 => Some(Operation::Update),
            4 => Some(Operation::Delete),
            5 => Some(Operation::Notify),
            _ => None,
        }
    }

    pub fn parse(text: &str) -> Option<Operation> {
        Operation::ALL
            .into_iter()
            .find(|o| o.as_str().eq_ignore_ascii_case(text))
    }
}

/// A resource type as written in a rule: a TS-0004 number or its name (`remoteCSE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResourceType(pub u32);

/// TS-0004 resource type numbers and names (case-insensitive in rules).
pub const RESOURCE_TYPES: &[(u32, &str)] = &[
    (1, "accessControlPolicy"),
    (2, "AE"),
    (3, "container"),
    (4, "contentInstance"),
    (5, "CSEBase"),
    (6, "delivery"),
    (7, "eventConfig"),
    (8, "execInstance"),
    (9, "group"),
    (10, "locationPolicy"),
    (11, "m2mServiceSubscriptionProfile"),
    (12, "mgmtCmd"),
    (13, "mgmtObj"),
    (14, "node"),
    (15, "pollingChannel"),
    (16, "remoteCSE"),
    (17, "request"),
    (18, "schedule"),
    (19, "serviceSubscribedAppRule"),
    (20, "serviceSubscribedNode"),
    (21, "statsCollect"),
    (22, "statsConfig"),
    (23, "subscription"),
    (24, "semanticDescriptor"),
    (25, "notificationTargetMgmtPolicyRef"),
    (26, "notificationTargetPolicy"),
    (27, "policyDeletionRules"),
    (28, "flexContainer"),
    (29, "timeSeries"),
    (30, "timeSeriesInstance"),
    (31, "role"),
    (32, "token"),
    (33, "trafficPattern"),
    (34, "dynamicAuthorizationConsultation"),
    (47, "triggerRequest"),
    (48, "crossResourceSubscription"),
    (58, "flexContainerInstance"),
    (60, "timeSyncBeacon"),
    (62, "primitiveProfile"),
    (63, "processManagement"),
    (64, "state"),
    (65, "action"),
    (66, "dependency"),
];

impl ResourceType {
    pub fn parse(text: &str) -> Option<ResourceType> {
        if let Ok(n) = text.trim().parse::<u32>() {
            return Some(ResourceType(n));
        }
        RESOURCE_TYPES
            .iter()
            .find(|(_, name)| name.eq_ignore_ascii_case(text.trim()))
            .map(|(n, _)| ResourceType(*n))
    }

    pub fn name(self) -> Option<&'static str> {
        RESOURCE_TYPES
            .iter()
            .find(|(n, _)| *n == self.0)
            .map(|(_, name)| *name)
    }
}

impl<'de> Deserialize<'de> for ResourceType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Number(u32),
            Name(String),
        }
        match Form::deserialize(d)? {
            Form::Number(n) => Ok(ResourceType(n)),
            Form::Name(name) => ResourceType::parse(&name).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "expected a resource type number or a TS-0004 name like remoteCSE, AE, container, got {name:?}"
                ))
            }),
        }
    }
}

/// One rule: every condition given must match; an absent condition matches everything.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique; shown in logs, metrics and refusals.
    pub name: String,
    /// Exact identity names.
    #[serde(default)]
    pub identities: Option<Vec<String>>,
    /// Regexes on the identity name.
    #[serde(default)]
    pub patterns: Option<Vec<String>>,
    /// The identity holds any of these roles.
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    /// The rule does not match identities holding one of these roles.
    #[serde(default)]
    pub unless_roles: Option<Vec<String>>,
    /// Authentication methods.
    #[serde(default)]
    pub methods: Option<Vec<Method>>,
    /// Regexes on the bound originator (after the originator policy).
    #[serde(default)]
    pub originators: Option<Vec<String>>,
    #[serde(default)]
    pub operations: Option<Vec<Operation>>,
    /// Resource types of a create.
    #[serde(default)]
    pub resource_types: Option<Vec<ResourceType>>,
    /// Request targets: `*` one segment, `**` any tail; a pattern matches the form it is
    /// written in (`/cse-in/…`, `/~/id-in/cse-in/…`, `/_/…`).
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    pub effect: Effect,
}

impl AuthorizationConfig {
    /// Checks that need nothing but this section (patterns are compiled by the engine).
    pub fn validate(&self) -> Result<(), KeyError> {
        let mut names = HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let key = |k: &str| format!("authorization.rules[{i}].{k}");
            if rule.name.is_empty() || !rule.name.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(KeyError::new(
                    key("name"),
                    format!(
                        "expected a name of visible ASCII characters, got {:?}",
                        rule.name
                    ),
                ));
            }
            if !names.insert(rule.name.as_str()) {
                return Err(KeyError::new(
                    key("name"),
                    format!("rule {:?} is listed twice", rule.name),
                ));
            }
            let lists: [(&str, Option<usize>); 9] = [
                ("identities", rule.identities.as_ref().map(Vec::len)),
                ("patterns", rule.patterns.as_ref().map(Vec::len)),
                ("roles", rule.roles.as_ref().map(Vec::len)),
                ("unless_roles", rule.unless_roles.as_ref().map(Vec::len)),
                ("methods", rule.methods.as_ref().map(Vec::len)),
                ("originators", rule.originators.as_ref().map(Vec::len)),
                ("operations", rule.operations.as_ref().map(Vec::len)),
                ("resource_types", rule.resource_types.as_ref().map(Vec::len)),
                ("targets", rule.targets.as_ref().map(Vec::len)),
            ];
            if let Some((list, _)) = lists.iter().find(|(_, n)| *n == Some(0)) {
                return Err(KeyError::new(
                    key(list),
                    "expected at least one entry (an empty list would never match; leave the key out to match everything)",
                ));
            }
        }
        Ok(())
    }
}
