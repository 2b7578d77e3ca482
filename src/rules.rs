//! TEMPORARY STUB: replaced by the rules-engine branch.
use crate::config::{AuthorizationConfig, Effect, KeyError, Operation, ResourceType};
use crate::identity::Identity;
pub struct RuleSet {
    names: Vec<String>,
    default: Effect,
}
pub struct Request<'a> {
    pub identity: Option<&'a Identity>,
    pub originator: Option<&'a str>,
    pub operation: Option<Operation>,
    pub resource_type: Option<ResourceType>,
    pub target: &'a Target,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    pub rule: Option<usize>,
}
pub struct Explanation {
    pub decision: Decision,
}
impl Explanation {
    pub fn render(&self, _set: &RuleSet) -> String {
        String::new()
    }
}
pub struct Target;
impl Target {
    pub fn display(&self) -> String {
        String::new()
    }
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError(pub &'static str);
pub fn parse_target(_raw: &str) -> Result<Target, TargetError> {
    Ok(Target)
}
pub fn primitive_target(_to: &str) -> Result<Target, TargetError> {
    Ok(Target)
}
pub fn http_operation(_m: &str, _ct: Option<&str>) -> (Option<Operation>, Option<ResourceType>) {
    (None, None)
}
impl RuleSet {
    pub fn compile(c: &AuthorizationConfig) -> Result<RuleSet, KeyError> {
        Ok(RuleSet {
            names: c.rules.iter().map(|r| r.name.clone()).collect(),
            default: c.default,
        })
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
    pub fn default_effect(&self) -> Effect {
        self.default
    }
    pub fn decide(&self, _req: &Request<'_>) -> Decision {
        Decision {
            effect: self.default,
            rule: None,
        }
    }
    pub fn rule_name(&self, index: usize) -> &str {
        &self.names[index]
    }
    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
    pub fn explain(&self, req: &Request<'_>) -> Explanation {
        Explanation {
            decision: self.decide(req),
        }
    }
    pub fn table(&self) -> Vec<String> {
        Vec::new()
    }
}

/// The `rule` label of a decision no rule made.
pub const DEFAULT_RULE: &str = "default";
