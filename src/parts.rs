//! What a request makes the CSE do, as the rules judge it (`crate::rules`): the request itself,
//! and what it reaches beyond its operation on its target. Its result (`rcn`, `fu`, a semantic
//! query: `crate::target::Reach`) is judged as a retrieve of what it includes; a resource it
//! creates that makes the CSE act later on targets of its own (an `<action>` executes the
//! request primitive it carries) is judged as that later operation, wherever the proxy cannot
//! tell, fail-closed. A request is allowed only when every part is.

use crate::config::{Operation, ResourceType};
use crate::target::{Scope, Target};

/// Why a part is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The request itself.
    Request,
    /// What its result includes beyond the target, judged as a retrieve.
    Result,
    /// What the resource it creates makes the CSE do later (`None`: a type the proxy cannot
    /// read).
    Created(Option<ResourceType>),
}

/// An operation or resource type the proxy knows (`None`: the request has none), or one it
/// cannot read: deny rules with that condition meet an unknown one, allow rules with it do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known<T> {
    Is(T),
    Unknown,
}

/// One thing a request makes the CSE do: an operation (of a resource type, for a create) on a
/// target read in `scope`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub why: Why,
    pub operation: Known<Option<Operation>>,
    pub resource_type: Known<Option<ResourceType>>,
    pub scope: Scope,
}

/// The parts of a request: the request itself, a retrieve of what its result includes when
/// that is more than the target (for an operation other than a retrieve, whose own scope
/// already says it), what a resource it creates makes the CSE do later. At most three, no
/// allocation.
pub fn of(
    operation: Option<Operation>,
    resource_type: Option<ResourceType>,
    target: &Target,
) -> [Option<Part>; 3] {
    let reach = target.reach();
    let retrieve = operation == Some(Operation::Retrieve);
    // a retrieve returns what its result includes; a discovery-based operation acts on it
    let scope = if retrieve || reach.operation {
        target.scope()
    } else {
        target.placement()
    };
    let request = Part {
        why: Why::Request,
        operation: Known::Is(operation),
        resource_type: Known::Is(resource_type),
        scope,
    };
    let result = (!retrieve && reach.result != Scope::Exact).then(|| Part {
        why: Why::Result,
        operation: Known::Is(Some(Operation::Retrieve)),
        resource_type: Known::Is(None),
        scope: target.scope(),
    });
    let created = match operation {
        Some(Operation::Create) => created(resource_type, target),
        _ => None,
    };
    [Some(request), result, created]
}

const ACTS: &str =
    "the CSE later sends requests of its own, on targets and with operations the proxy cannot read";
const READS: &str = "the CSE later reads resources it names";
const NOTIFIES: &str = "the CSE later notifies or triggers a target it names";
const WATCHES: &str = "the CSE sends notifications about the target and its children";
const NO_TYPE: &str = "a create of a type the proxy cannot read";

/// What creating a resource of type `ty` under `target` makes the CSE do later, for the types
/// that act on other resources; `None` for the others.
fn created(ty: Option<ResourceType>, target: &Target) -> Option<Part> {
    let part = |ty, operation, scope| {
        Some(Part {
            why: Why::Created(Some(ty)),
            operation,
            resource_type: match operation {
                Known::Unknown => Known::Unknown,
                Known::Is(_) => Known::Is(None),
            },
            scope,
        })
    };
    let Some(ty) = ty else {
        // a CSE might read the type from the content: it could be any of those below
        return Some(Part {
            why: Why::Created(None),
            operation: Known::Unknown,
            resource_type: Known::Unknown,
            scope: Scope::Unplaced(NO_TYPE),
        });
    };
    match ty.0 {
        // <delivery>, <mgmtCmd> (executes on the nodes it names), <crossResourceSubscription>
        // (creates and deletes subscriptions on the resources it names), <action>
        6 | 12 | 48 | 65 => part(ty, Known::Unknown, Scope::Unplaced(ACTS)),
        // <processManagement>, <state>, <dependency>: evaluation criteria on any resource
        63 | 64 | 66 => part(
            ty,
            Known::Is(Some(Operation::Retrieve)),
            Scope::Unplaced(READS),
        ),
        // <triggerRequest>, <timeSyncBeacon>
        47 | 60 => part(
            ty,
            Known::Is(Some(Operation::Notify)),
            Scope::Unplaced(NOTIFIES),
        ),
        // <subscription>: the parent's changes and its new children, sent to the subscriber
        23 => part(
            ty,
            Known::Is(Some(Operation::Retrieve)),
            target.placement().widest(Scope::Children(WATCHES)),
        ),
        _ => None,
    }
}

impl Part {
    /// For `explain`: what the part is and how the rules read it.
    pub fn describe(&self) -> String {
        let operation = match self.operation {
            Known::Is(Some(op)) => op.as_str().to_string(),
            Known::Is(None) => "no operation".to_string(),
            Known::Unknown => "any operation (of any resource type)".to_string(),
        };
        let why = match self.why {
            Why::Request => "the request".to_string(),
            Why::Result => "what its result includes".to_string(),
            Why::Created(Some(ty)) => format!(
                "what the created {} makes the CSE do",
                ty.name()
                    .map_or_else(|| format!("ty={}", ty.0), |n| format!("<{n}>"))
            ),
            Why::Created(None) => "what the created resource makes the CSE do".to_string(),
        };
        match self.scope.describe() {
            Some(scope) => format!("{why}: {operation}; {scope}"),
            None => format!("{why}: {operation} of the target"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::http_request_target;

    fn parts(op: Operation, ty: Option<u32>, path: &str) -> Vec<Part> {
        let cse = crate::cse::LocalCse::from_config(&crate::config::CseConfig {
            id: "/id-in".into(),
            name: "cse-in".into(),
            sp_id: None,
            advertised: None,
            public_url: None,
        })
        .unwrap();
        let t = http_request_target(path, Some(&cse)).unwrap();
        of(Some(op), ty.map(ResourceType), &t)
            .into_iter()
            .flatten()
            .collect()
    }

    #[test]
    fn a_plain_request_is_one_part() {
        for op in Operation::ALL {
            let p = parts(
                op,
                (op == Operation::Create).then_some(4),
                "/cse-in/a?rcn=1",
            );
            assert_eq!(p.len(), 1, "{op:?}");
            assert_eq!(p[0].scope, Scope::Exact);
        }
    }

    #[test]
    fn a_result_beyond_the_target_is_a_retrieve_of_it() {
        // a retrieve: one part, in the result's scope
        let p = parts(Operation::Retrieve, None, "/cse-in/a?rcn=4");
        assert_eq!(p.len(), 1);
        assert!(matches!(p[0].scope, Scope::Subtree(_)));
        // a delete returning the deleted subtree: the delete, then a retrieve of the subtree
        let p = parts(Operation::Delete, None, "/cse-in/a?rcn=4");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].scope, Scope::Exact);
        assert_eq!(p[1].why, Why::Result);
        assert_eq!(p[1].operation, Known::Is(Some(Operation::Retrieve)));
        assert!(matches!(p[1].scope, Scope::Subtree(_)));
        // a discovery-based operation acts on what it finds
        let p = parts(Operation::Delete, None, "/cse-in/a?fu=4");
        assert!(matches!(p[0].scope, Scope::Subtree(_)));
    }

    #[test]
    fn resources_that_act_later_add_what_they_do() {
        let p = parts(Operation::Create, Some(65), "/cse-in/a");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].why, Why::Created(Some(ResourceType(65))));
        assert_eq!(
            (p[1].operation, p[1].resource_type),
            (Known::Unknown, Known::Unknown)
        );
        assert!(matches!(p[1].scope, Scope::Unplaced(_)));
        let p = parts(Operation::Create, Some(66), "/cse-in/a");
        assert_eq!(p[1].operation, Known::Is(Some(Operation::Retrieve)));
        let p = parts(Operation::Create, Some(23), "/cse-in/a");
        assert!(matches!(p[1].scope, Scope::Children(_)));
        // under an unstructured ID the subscription's target is unplaced too
        let p = parts(Operation::Create, Some(23), "/cae1");
        assert!(matches!(p[1].scope, Scope::Unplaced(_)));
        // a create whose type is unknown could be any of them
        let p = parts(Operation::Create, None, "/cse-in/a");
        assert_eq!(p[1].operation, Known::Unknown);
        // the same types updated, retrieved or deleted: the request alone
        assert_eq!(parts(Operation::Update, None, "/cse-in/a/act").len(), 1);
    }
}
