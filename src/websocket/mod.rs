//! The oneM2M WebSocket binding: after an authenticated upgrade, every request primitive the
//! client sends is held to the same originator policy as `X-M2M-Origin` over HTTP.
//!
//! - [`frame`]: RFC 6455 framing of both directions (no Pingora, no I/O).
//! - [`value`]: strict decoding of a JSON or CBOR message, and the proxy's canonical encoding.
//! - [`primitive`]: the fields of a primitive the proxy decides on, and the primitive the CSE
//!   receives (re-encoded, `fr` set).
//! - [`gate`]: which upgrades pass, and what happens to each message.
//! - [`content`]: what an update's content names, for the rules: a primitive's `pc`, and an HTTP
//!   body decoded with the same strict decoders.

pub mod content;
pub mod frame;
pub mod gate;
pub mod primitive;
pub mod value;
