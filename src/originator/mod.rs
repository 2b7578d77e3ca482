//! Originators (`X-M2M-Origin`): their syntax (`syntax`, a leaf every module may use) and the
//! policy that decides which one the upstream receives (`policy`).

pub mod policy;
pub mod syntax;

pub use policy::{OriginatorPolicy, Refusal};
pub use syntax::{validate_originator, OriginatorPattern, MAX_ORIGINATOR_LEN};
