//! `explain`: every rule's conditions on one request, evaluated by the code that decides
//! (`Rule::check`), and the decision; rendered for the `explain` command (`crate::explain`).

use crate::config::Effect;
use crate::parts::{self, Part};

use super::engine::{Decision, Request, RuleSet, Scratch};

/// What `explain` found: every rule's conditions, then the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    /// The rules as they read the part that decides.
    pub rules: Vec<RuleTrace>,
    pub decision: Decision,
    /// What each part of the request is (`crate::parts`), the request itself first.
    pub parts: Vec<String>,
    /// The part that decides: the first a rule denies, else the request (0).
    pub judged: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleTrace {
    pub name: String,
    /// Condition key and whether it matched (for `unless_roles`: the identity holds none).
    pub conditions: Vec<(&'static str, bool)>,
    /// All given conditions matched.
    pub matched: bool,
}

impl RuleSet {
    /// For `explain`: every rule in order with each given condition and whether it matched
    /// (all evaluated, also past the deciding rule), then the decision.
    /// The request's parts (`crate::parts`) are judged in turn; the explanation shows the one
    /// that decides (the first denied, else the request itself) and lists the others.
    pub fn explain(&self, req: &Request<'_>) -> Explanation {
        let parts: Vec<Part> = parts::of(req.operation, req.resource_type, req.content, req.target)
            .into_iter()
            .flatten()
            .collect();
        let mut chosen = None;
        for (k, part) in parts.iter().enumerate() {
            let (rules, decision) = self.explain_part(req, *part);
            let denied = decision.effect == Effect::Deny;
            if chosen.is_none() || denied {
                chosen = Some((rules, decision, k));
            }
            if denied {
                break;
            }
        }
        let (rules, decision, judged) =
            chosen.unwrap_or_else(|| (Vec::new(), self.default_decision(), 0));
        Explanation {
            rules,
            decision,
            parts: parts.iter().map(Part::describe).collect(),
            judged,
        }
    }

    fn explain_part(&self, req: &Request<'_>, part: Part) -> (Vec<RuleTrace>, Decision) {
        let mut scratch = Scratch::new();
        let mut ev = self.eval(req, part, &mut scratch);
        let mut decision = self.default_decision();
        let mut traces = Vec::with_capacity(self.rules.len());
        for (i, rule) in self.rules.iter().enumerate() {
            let conditions: Vec<(&'static str, bool)> = rule
                .described
                .iter()
                .map(|(key, _)| (key.name(), rule.check(*key, &mut ev)))
                .collect();
            let matched = conditions.iter().all(|(_, m)| *m);
            if matched && decision.rule.is_none() {
                decision = Decision {
                    effect: rule.effect,
                    rule: Some(i),
                };
            }
            traces.push(RuleTrace {
                name: rule.name.clone(),
                conditions,
                matched,
            });
        }
        (traces, decision)
    }
}

impl Explanation {
    /// Human-readable, one line per rule, then the decision.
    pub fn render(&self, set: &RuleSet) -> String {
        let mut out = String::new();
        if self.parts.len() > 1 {
            out.push_str("judged as parts, each of which must be allowed:\n");
            for (k, part) in self.parts.iter().enumerate() {
                out.push_str(&format!("  part {}: {part}\n", k + 1));
            }
            out.push_str(&format!("rules for part {}:\n", self.judged + 1));
        }
        for (i, trace) in self.rules.iter().enumerate() {
            let rule = set.rules.get(i);
            let conds = if trace.conditions.is_empty() {
                "(always)".to_string()
            } else {
                trace
                    .conditions
                    .iter()
                    .map(|(key, matched)| {
                        let text = rule.map_or("", |r| r.text(key));
                        let verdict = if *matched { "matched" } else { "failed" };
                        format!("{key} {text} ({verdict})")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let outcome = match (trace.matched, self.decision.rule) {
                (true, Some(d)) if d == i => {
                    format!(
                        "matches -> {} (decides)",
                        rule.map_or("?", |r| r.effect.label())
                    )
                }
                (true, _) => "matches (not reached)".to_string(),
                (false, _) => "no match".to_string(),
            };
            out.push_str(&format!(
                "{}. {}: {} -> {}\n",
                i + 1,
                trace.name,
                conds,
                outcome
            ));
        }
        match self.decision.rule {
            Some(i) => out.push_str(&format!(
                "decision: {} by rule {} ({})\n",
                self.decision.effect.label(),
                i + 1,
                set.rule_name(i)
            )),
            None => out.push_str(&format!(
                "decision: {} (default, no rule matched)\n",
                self.decision.effect.label()
            )),
        }
        out
    }
}
