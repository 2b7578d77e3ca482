//! The names of every attribute and event the proxy puts on its spans, in one place: the
//! OpenTelemetry semantic conventions for HTTP where they exist, the oneM2M ones, and the
//! proxy's own. No credential ever becomes a value: identities are names (certificate field,
//! user name, token name, claim), the path is sent without its query.

// OpenTelemetry HTTP semantic conventions
pub const HTTP_REQUEST_METHOD: &str = "http.request.method";
pub const HTTP_RESPONSE_STATUS_CODE: &str = "http.response.status_code";
pub const URL_PATH: &str = "url.path";
pub const URL_SCHEME: &str = "url.scheme";
pub const CLIENT_ADDRESS: &str = "client.address";
pub const CLIENT_PORT: &str = "client.port";
pub const SERVER_ADDRESS: &str = "server.address";
pub const NETWORK_PROTOCOL_VERSION: &str = "network.protocol.version";
pub const TLS_PROTOCOL_VERSION: &str = "tls.protocol.version";
/// The identity a client certificate proved (`auth.mtls.identity`'s field of its subject).
pub const TLS_CLIENT_SUBJECT: &str = "tls.client.subject";
pub const ERROR_TYPE: &str = "error.type";

// oneM2M
/// The proven originator: what the CSE receives as `X-M2M-Origin`.
pub const ONEM2M_ORIGINATOR: &str = "onem2m.originator";
pub const ONEM2M_REQUEST_IDENTIFIER: &str = "onem2m.request_identifier";
/// create, retrieve, update, delete, notify (the primitive's `op` as the rules name it).
pub const ONEM2M_OPERATION: &str = "onem2m.operation";
pub const ONEM2M_RESOURCE_TYPE: &str = "onem2m.resource_type";
pub const ONEM2M_RSC: &str = "onem2m.rsc";
pub const ONEM2M_TO: &str = "onem2m.to";

// the proxy's own
pub const AUTH_METHOD: &str = "m2m_auth_proxy.auth.method";
/// The identity's name (as in the access log), for every method.
pub const IDENTITY: &str = "m2m_auth_proxy.identity";
pub const AUTH_FAILURE: &str = "m2m_auth_proxy.auth.failure";
/// The authorization rule that decided (`default` when none matched).
pub const RULE: &str = "m2m_auth_proxy.rule";
/// `ingress`, or `egress` on a route's listener.
pub const DIRECTION: &str = "m2m_auth_proxy.direction";
pub const ROUTE: &str = "m2m_auth_proxy.egress.route";
/// The upstream connection was a pooled one (no connect in this span).
pub const UPSTREAM_REUSED: &str = "m2m_auth_proxy.upstream.reused";

// events
/// One request primitive on a oneM2M WebSocket.
pub const EVENT_PRIMITIVE: &str = "onem2m.primitive";
/// The upstream connection is there (new or pooled): what follows is waiting for the answer.
pub const EVENT_CONNECTED: &str = "connected";
/// The request head went to the upstream.
pub const EVENT_REQUEST_SENT: &str = "request sent";
pub const REASON: &str = "m2m_auth_proxy.reason";
