//! What the proxy does with a oneM2M WebSocket: which upgrades it lets through, and, after the
//! 101, what happens to every message. The originator decision is the same policy code that
//! judges `X-M2M-Origin` over HTTP; this file only carries `fr` to it and acts on the answer.

use std::borrow::Cow;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use http::header::{HeaderValue, SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use pingora::http::{RequestHeader, ResponseHeader};

use super::frame::{close_frame, encode_frame, ClientEvent, ClientStream, Opcode, ServerStream};
use super::primitive::{self, Encoding};
use crate::config::{Effect, Operation, ResourceType};
use crate::identity::Identity;
use crate::metrics;
use crate::onem2m::Rsc;
use crate::originator::OriginatorPolicy;
use crate::parts::Known;
use crate::rules::{self, RuleSet, DEFAULT_RULE};
use crate::steering::Listeners;

pub const JSON: &str = "oneM2M.json";
pub const CBOR: &str = "oneM2M.cbor";

/// What an upgrade request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upgrade {
    /// A WebSocket offering at least one oneM2M subprotocol: inspected.
    OneM2M { json: bool, cbor: bool },
    /// Anything else (no oneM2M subprotocol, or not a WebSocket at all).
    Opaque,
}

pub fn classify(req: &RequestHeader) -> Upgrade {
    let websocket = req
        .headers
        .get_all(UPGRADE)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if !websocket {
        return Upgrade::Opaque;
    }
    let (mut json, mut cbor) = (false, false);
    for value in req.headers.get_all(SEC_WEBSOCKET_PROTOCOL) {
        let Ok(list) = value.to_str() else { continue };
        for token in list.split(',').map(str::trim) {
            // subprotocol names are case-sensitive (RFC 6455, 4.1)
            json |= token == JSON;
            cbor |= token == CBOR;
        }
    }
    if json || cbor {
        Upgrade::OneM2M { json, cbor }
    } else {
        Upgrade::Opaque
    }
}

/// The upstream may only pick a oneM2M subprotocol and no extension: permessage-deflate would
/// hide every message from the gate.
pub fn restrict_upstream_request(
    req: &mut RequestHeader,
    json: bool,
    cbor: bool,
) -> pingora::Result<()> {
    let offer = match (json, cbor) {
        (true, true) => "oneM2M.json, oneM2M.cbor",
        (true, false) => JSON,
        _ => CBOR,
    };
    req.remove_header(&SEC_WEBSOCKET_EXTENSIONS);
    req.insert_header(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(offer))
}

/// The subprotocol the upstream chose in its 101, or why the connection cannot be inspected.
pub fn negotiated(resp: &ResponseHeader, json: bool, cbor: bool) -> Result<Encoding, &'static str> {
    if resp.headers.get(SEC_WEBSOCKET_EXTENSIONS).is_some() {
        return Err("upstream negotiated a WebSocket extension the proxy did not offer");
    }
    let mut chosen = resp.headers.get_all(SEC_WEBSOCKET_PROTOCOL).iter();
    match (chosen.next().map(HeaderValue::as_bytes), chosen.next()) {
        (Some(b"oneM2M.json"), None) if json => Ok(Encoding::Json),
        (Some(b"oneM2M.cbor"), None) if cbor => Ok(Encoding::Cbor),
        _ => Err("upstream did not select an offered oneM2M WebSocket subprotocol"),
    }
}

/// A request primitive the gate answered itself; one access-log line each.
pub struct RefusedMessage {
    pub request_id: Option<String>,
    pub to: Option<String>,
    /// The `rsc` of the refusal primitive sent back.
    pub rsc: u16,
    pub reason: Cow<'static, str>,
    /// The authorization rule that refused it, if a rule did.
    pub rule: Option<String>,
    /// `to` in the canonical form the rules judged, when they did.
    pub target: Option<String>,
}

/// A request primitive the gate let through (for the connection's span).
pub struct ForwardedMessage {
    pub op: Option<u64>,
    pub to: Option<String>,
    pub request_id: Option<String>,
    pub resource_type: Option<u64>,
    /// The rule that allowed it (none when no rules are configured).
    pub rule: Option<String>,
}

/// What one chunk from the client turns into.
#[derive(Default)]
pub struct ClientOutput {
    /// Frames for the upstream (masked, as a client sends them).
    pub to_upstream: BytesMut,
    /// Frames to write to the client now; `None` when nothing is due or they wait for the
    /// CSE's current message to end.
    pub to_client: Option<Bytes>,
    pub refused: Vec<RefusedMessage>,
    /// The request primitives that went on, when the gate records them (a traced connection).
    pub forwarded: Vec<ForwardedMessage>,
    /// Close code when the gate closed the connection because of this chunk.
    pub closed_with: Option<u16>,
}

/// A refusal: (rsc, reason, rule, canonical target).
type Refused = (u16, Cow<'static, str>, Option<String>, Option<String>);

/// Per-connection state after a oneM2M upgrade.
pub struct Gate {
    encoding: Encoding,
    identity: Arc<Identity>,
    policy: Arc<ArcSwap<OriginatorPolicy>>,
    rules: Arc<ArcSwap<RuleSet>>,
    cse_id: Option<String>,
    /// The egress listeners no primitive may name (issue 27.1).
    listeners: Arc<Listeners>,
    client: ClientStream,
    server: ServerStream,
    /// Frames for the client waiting for a message boundary in the CSE's stream.
    waiting_for_client: BytesMut,
    /// The client sent Close or the gate closed: nothing more is read from the client.
    client_done: bool,
    /// Bytes the client sent after that (its reply to our close, normally).
    after_close: usize,
    mask: MaskKeys,
    /// Fill `ClientOutput::forwarded` (only for a traced connection).
    record_forwarded: bool,
}

const STEERING: &str =
    "the primitive names a URL of this sidecar's egress route: the CSE would send there as itself";
const TARGET_ID: &str = "a notification target in the primitive is an ID other than the originator's own: with egress routes, name another receiver by its URL";

/// After a close, a client may still send its own Close frame (at most 131 bytes); more than
/// this means it is not closing, and the connection is ended.
const MAX_AFTER_CLOSE: usize = 256;

impl Gate {
    pub fn new(
        encoding: Encoding,
        identity: Arc<Identity>,
        policy: Arc<ArcSwap<OriginatorPolicy>>,
        rules: Arc<ArcSwap<RuleSet>>,
        cse_id: Option<String>,
        listeners: Arc<Listeners>,
        max_message: usize,
    ) -> Self {
        Gate {
            encoding,
            identity,
            policy,
            rules,
            cse_id,
            listeners,
            client: ClientStream::new(max_message),
            server: ServerStream::new(),
            waiting_for_client: BytesMut::new(),
            client_done: false,
            after_close: 0,
            mask: MaskKeys::new(),
            record_forwarded: false,
        }
    }

    /// Report the primitives that go on, not only the refused ones.
    pub fn record_forwarded(&mut self) {
        self.record_forwarded = true;
    }

    #[cfg(test)]
    fn client_done(&self) -> bool {
        self.client_done
    }

    /// Whether the client went on sending after a close for longer than a Close frame; the
    /// connection should then be ended instead of read further.
    pub fn talking_after_close(&self) -> bool {
        self.after_close > MAX_AFTER_CLOSE
    }

    pub fn on_client_data(&mut self, data: &[u8]) -> ClientOutput {
        let mut out = ClientOutput::default();
        if self.client_done {
            // dropped: the CSE was already told the client is gone
            self.after_close = self.after_close.saturating_add(data.len());
            return out;
        }
        let events = match self.client.push(data) {
            Ok(events) => events,
            Err(violation) => {
                metrics::websocket_message("to_cse", "invalid");
                self.close(&mut out, violation.code, violation.reason);
                Vec::new()
            }
        };
        for event in events {
            match event {
                ClientEvent::Control(frame) => out.to_upstream.extend_from_slice(&frame),
                ClientEvent::Close(frame) => {
                    out.to_upstream.extend_from_slice(&frame);
                    self.client_done = true;
                    break;
                }
                ClientEvent::Message { opcode, payload } => {
                    if let Err((code, reason)) = self.on_message(opcode, &payload, &mut out) {
                        self.close(&mut out, code, reason);
                        break;
                    }
                }
            }
        }
        out.to_client = self.due_for_client();
        out
    }

    fn on_message(
        &mut self,
        opcode: Opcode,
        payload: &[u8],
        out: &mut ClientOutput,
    ) -> Result<(), (u16, &'static str)> {
        let expected = match self.encoding {
            Encoding::Json => Opcode::Text,
            Encoding::Cbor => Opcode::Binary,
        };
        if opcode != expected {
            metrics::websocket_message("to_cse", "invalid");
            return Err((
                1003,
                "message type does not match the negotiated subprotocol",
            ));
        }
        let request = match primitive::parse(self.encoding, payload) {
            Ok(p) => p,
            Err(reason) => {
                // answered like a CSE answers a bad request; the connection goes on
                metrics::websocket_message("to_cse", "invalid");
                let answer =
                    primitive::undecodable(self.encoding, payload, self.cse_id.as_deref(), reason);
                self.waiting_for_client
                    .extend_from_slice(&encode_frame(expected, &answer, None));
                out.refused.push(RefusedMessage {
                    request_id: None,
                    to: None,
                    target: None,
                    rsc: Rsc::BadRequest.code(),
                    reason: Cow::Borrowed(reason),
                    rule: None,
                });
                return Ok(());
            }
        };
        let claimed: Vec<&str> = request.fr.as_deref().into_iter().collect();
        let policy = self.policy.load();
        let decision = policy.decide(&self.identity, &claimed);
        // an AE registration through a CSE namespace with an AE-ID pattern (cse_ae_ids)
        let registration_refused = |originator: &str| {
            request.op == Some(1)
                && request.ty.is_none_or(|t| t == 2)
                && !policy.may_register(&self.identity, originator)
        };
        let refusal: Refused = match decision {
            Ok(originator) if registration_refused(originator) => (
                Rsc::OriginatorHasNoPrivilege.code(),
                Cow::Borrowed(crate::originator::REGISTRATION_REFUSED),
                None,
                None,
            ),
            // the CSE would send there as itself (`rt.nu`, a subscription's `nu`, …)
            Ok(_)
                if request.op.is_some()
                    && !self.listeners.is_empty()
                    && request.any_text(&mut |t| self.listeners.reached_by_bytes(t)) =>
            {
                metrics::steering_refused("websocket");
                (
                    Rsc::OriginatorHasNoPrivilege.code(),
                    Cow::Borrowed(STEERING),
                    None,
                    None,
                )
            }
            // an ID the CSE resolves may lead to a `<remoteCSE>`, whose `poa` is a listener
            Ok(originator)
                if request.op.is_some()
                    && !self.listeners.is_empty()
                    && self.names_other_entity(&request, originator) =>
            {
                metrics::steering_refused("target_id");
                (
                    Rsc::OriginatorHasNoPrivilege.code(),
                    Cow::Borrowed(TARGET_ID),
                    None,
                    None,
                )
            }
            Ok(originator) => match self.authorize(&request, originator) {
                Ok(rule) => {
                    let outcome = if request.fr.as_deref() == Some(originator) {
                        "forwarded"
                    } else {
                        "rewritten"
                    };
                    metrics::websocket_message("to_cse", outcome);
                    if self.record_forwarded && request.op.is_some() {
                        out.forwarded.push(ForwardedMessage {
                            op: request.op,
                            to: request.to.clone(),
                            request_id: request.rqi.clone(),
                            resource_type: request.ty,
                            rule,
                        });
                    }
                    // what the proxy decoded, re-encoded: never the client's bytes
                    let forwarded = request.encode(Some(originator));
                    let frame = self.frame_for_upstream(opcode, &forwarded);
                    out.to_upstream.extend_from_slice(&frame);
                    return Ok(());
                }
                Err(refused) => refused,
            },
            // A response primitive (to a notification) cannot be answered: close instead.
            Err(_) if request.op.is_none() => {
                metrics::websocket_originator_refusal("response_originator");
                metrics::websocket_message("to_cse", "invalid");
                return Err((1008, "response primitive with an originator not allowed"));
            }
            Err(refusal) => {
                metrics::websocket_originator_refusal("not_allowed");
                (
                    Rsc::OriginatorHasNoPrivilege.code(),
                    Cow::Borrowed(refusal.reason()),
                    None,
                    None,
                )
            }
        };
        let (rsc, reason, rule, target) = refusal;
        metrics::websocket_message("to_cse", "refused");
        let answer = primitive::refusal(
            self.encoding,
            &request,
            rsc,
            self.cse_id
                .as_deref()
                .or_else(|| request.to.as_deref().and_then(cse_id_of)),
            &reason,
        );
        self.waiting_for_client
            .extend_from_slice(&encode_frame(expected, &answer, None));
        out.refused.push(RefusedMessage {
            request_id: request.rqi.clone(),
            to: request.to.clone(),
            rsc,
            reason,
            rule,
            target,
        });
        Ok(())
    }

    /// The authorization rules for a request primitive, as for an HTTP request: its `op`,
    /// `to` (with `rcn`, `fc.fu`, `fc.smf`, `sqi`, `fc.arp`) and `ty`, the bound originator.
    /// Whether a notification target of the request (`rt.nu`, a `nu` in its content, …) is an
    /// ID other than `originator`'s own.
    fn names_other_entity(&self, request: &primitive::Primitive, originator: &str) -> bool {
        let rules = self.rules.load();
        let canonical = |id: &str| rules.cse().map_or(id, |cse| cse.originator(id)).to_string();
        request.any_keyed_text(crate::steering::TARGET_KEYS, &mut |t| {
            crate::steering::names_other_entity(t, Some(originator), canonical)
        })
    }

    /// `Ok`: the rule that allowed it, named only when the gate records forwarded primitives.
    fn authorize(
        &self,
        request: &primitive::Primitive,
        originator: &str,
    ) -> Result<Option<String>, Refused> {
        let rules = self.rules.load();
        let Some(op) = request.op else {
            return Ok(None); // responses to the CSE's notifications are not requests
        };
        if rules.is_empty() {
            return Ok(None);
        }
        // op 6 (discovery in older releases) returns descendants like fu=1
        let params = rules::Params {
            rcn: request.rcn,
            fu: if op == 6 { Some(1) } else { request.fu },
            semantic: request.semantic,
            relative_path: request.relative_path,
        };
        let target = rules
            .primitive_target(request.to.as_deref().unwrap_or(""), &params)
            .map_err(|e| (Rsc::BadRequest.code(), Cow::Borrowed(e.0), None, None))?;
        let decision = rules.decide(&rules::Request {
            identity: Some(&self.identity),
            originator: Some(originator),
            operation: Operation::from_op(op),
            resource_type: request
                .ty
                .and_then(|t| u32::try_from(t).ok())
                .map(ResourceType),
            // an update is judged by what its content names (the CSE gets the proxy's reading)
            content: match Operation::from_op(op) {
                Some(Operation::Update) => super::content::of_value(request.content()),
                _ => Known::Is(None),
            },
            target: &target,
        });
        let rule = decision.rule.map_or(DEFAULT_RULE, |i| rules.rule_name(i));
        metrics::authorization_decision(rule, decision.effect.label());
        match decision.effect {
            Effect::Allow => Ok(self.record_forwarded.then(|| rule.to_string())),
            Effect::Deny => Err((
                Rsc::OriginatorHasNoPrivilege.code(),
                Cow::Owned(format!("denied by rule {rule}")),
                Some(rule.to_string()),
                Some(target.as_str().to_owned()),
            )),
        }
    }

    /// The proxy is shutting down: a close frame 1001 (going away) toward the client, at the
    /// CSE's next message boundary, and toward the CSE; nothing more is read from the client.
    /// Nothing when the client side is already closed.
    pub fn going_away(&mut self) -> ClientOutput {
        let mut out = ClientOutput::default();
        if self.client_done {
            return out;
        }
        metrics::websocket_close(1001);
        self.waiting_for_client
            .extend_from_slice(&close_frame(1001, "proxy shutting down", None));
        out.to_upstream.extend_from_slice(&close_frame(
            1001,
            "proxy shutting down",
            Some(self.mask.next()),
        ));
        out.closed_with = Some(1001);
        self.client_done = true;
        out.to_client = self.due_for_client();
        out
    }

    /// Close the client side with `code`, tell the upstream the client is going away.
    fn close(&mut self, out: &mut ClientOutput, code: u16, reason: &'static str) {
        metrics::websocket_close(code);
        self.waiting_for_client
            .extend_from_slice(&close_frame(code, reason, None));
        out.to_upstream.extend_from_slice(&close_frame(
            1001,
            "client closed by the proxy",
            Some(self.mask.next()),
        ));
        out.closed_with = Some(code);
        self.client_done = true;
    }

    fn frame_for_upstream(&mut self, opcode: Opcode, payload: &[u8]) -> Bytes {
        encode_frame(opcode, payload, Some(self.mask.next()))
    }

    /// Our frames may go out only between the CSE's messages, never inside one.
    fn due_for_client(&mut self) -> Option<Bytes> {
        if self.waiting_for_client.is_empty() || !self.server.at_message_boundary() {
            return None;
        }
        Some(self.waiting_for_client.split().freeze())
    }

    /// The CSE's bytes for the client, with any waiting frames of ours placed at the first
    /// message boundary.
    pub fn on_server_data(&mut self, data: Bytes) -> Result<Bytes, &'static str> {
        let before = self.server.messages_completed();
        let boundary = self.server.push(&data).map_err(|v| v.reason)?;
        for _ in before..self.server.messages_completed() {
            metrics::websocket_message("to_client", "forwarded");
        }
        match boundary {
            Some(at) if !self.waiting_for_client.is_empty() => {
                let ours = self.waiting_for_client.split();
                let mut joined = BytesMut::with_capacity(data.len() + ours.len());
                joined.extend_from_slice(&data[..at]);
                joined.extend_from_slice(&ours);
                joined.extend_from_slice(&data[at..]);
                Ok(joined.freeze())
            }
            _ => Ok(data),
        }
    }
}

/// `/id-in/cse-in/Cae1` -> `/id-in`: the CSE a CSE-relative `to` is addressed to.
fn cse_id_of(to: &str) -> Option<&str> {
    let rest = to.strip_prefix('/')?;
    if rest.starts_with('/') {
        return None; // absolute form `//sp/cse`: no single CSE-ID segment
    }
    let end = rest.find('/').map_or(to.len(), |i| i + 1);
    Some(&to[..end])
}

/// Masking keys for the frames the proxy sends upstream. RFC 6455 wants them unpredictable to
/// scripts in a browser; the upstream here is a CSE, so a per-connection random seed stepped by
/// xorshift is enough and avoids a system call per message.
struct MaskKeys(u64);

impl MaskKeys {
    fn new() -> Self {
        MaskKeys(crate::random::connection_seed() | 1)
    }

    fn next(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x as u32).to_le_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cse_id_is_the_first_segment_of_a_cse_relative_target() {
        assert_eq!(cse_id_of("/id-in/cse-in/Cae1"), Some("/id-in"));
        assert_eq!(cse_id_of("/id-in"), Some("/id-in"));
        assert_eq!(cse_id_of("cse-in/Cae1"), None);
        assert_eq!(cse_id_of("//sp.example/id-in/x"), None);
    }

    #[test]
    fn only_websocket_upgrades_offering_onem2m_are_inspected() {
        let req = |upgrade: &str, protocols: &[&str]| {
            let mut r = RequestHeader::build("GET", b"/", None).unwrap();
            r.insert_header("upgrade", upgrade).unwrap();
            for p in protocols {
                r.append_header("sec-websocket-protocol", *p).unwrap();
            }
            r
        };
        assert_eq!(
            classify(&req("websocket", &["chat, oneM2M.cbor"])),
            Upgrade::OneM2M {
                json: false,
                cbor: true
            }
        );
        assert_eq!(
            classify(&req("WebSocket", &["chat", "oneM2M.json"])),
            Upgrade::OneM2M {
                json: true,
                cbor: false
            }
        );
        assert_eq!(
            classify(&req("websocket", &["onem2m.json"])),
            Upgrade::Opaque
        );
        assert_eq!(classify(&req("websocket", &[])), Upgrade::Opaque);
        assert_eq!(classify(&req("h2c", &["oneM2M.json"])), Upgrade::Opaque);
    }

    #[test]
    fn the_upstream_must_choose_exactly_one_offered_subprotocol_and_no_extension() {
        let resp = |protocols: &[&str], ext: bool| {
            let mut r = ResponseHeader::build(101, None).unwrap();
            for p in protocols {
                r.append_header("sec-websocket-protocol", *p).unwrap();
            }
            if ext {
                r.insert_header("sec-websocket-extensions", "permessage-deflate")
                    .unwrap();
            }
            r
        };
        assert_eq!(
            negotiated(&resp(&[JSON], false), true, true),
            Ok(Encoding::Json)
        );
        assert_eq!(
            negotiated(&resp(&[CBOR], false), false, true),
            Ok(Encoding::Cbor)
        );
        assert!(negotiated(&resp(&[CBOR], false), true, false).is_err());
        assert!(negotiated(&resp(&[], false), true, true).is_err());
        assert!(negotiated(&resp(&[JSON, JSON], false), true, true).is_err());
        assert!(negotiated(&resp(&[JSON], true), true, true).is_err());
    }
}

#[cfg(test)]
mod gate_tests {
    use super::*;
    use crate::config::{OriginatorConfig, OriginatorMode};
    use crate::identity::Method;

    fn gate(mode: OriginatorMode) -> Gate {
        let policy = OriginatorPolicy::from_config(&OriginatorConfig {
            mode,
            ..Default::default()
        })
        .unwrap();
        let identity = Identity {
            name: "Cae-1".into(),
            proven_by: Method::Mtls,
            originator: "Cae-1".into(),
            also_allowed: vec![],
            roles: Vec::new(),
        };
        Gate::new(
            Encoding::Json,
            Arc::new(identity),
            Arc::new(ArcSwap::from_pointee(policy)),
            Arc::new(ArcSwap::from_pointee(
                RuleSet::compile(&Default::default()).unwrap(),
            )),
            None,
            Arc::new(Listeners::default()),
            1024,
        )
    }

    const KEY: Option<[u8; 4]> = Some([1, 2, 3, 4]);

    #[test]
    fn a_refusal_waits_for_the_end_of_the_cse_message_in_flight() {
        let mut g = gate(OriginatorMode::Verify);
        // the CSE is in the middle of a fragmented notification
        let first = {
            let mut f = encode_frame(Opcode::Text, b"{\"op\":5,", None).to_vec();
            f[0] &= 0x7F; // not the last fragment
            f
        };
        assert_eq!(g.on_server_data(Bytes::from(first.clone())).unwrap(), first);
        let spoofed = encode_frame(Opcode::Text, br#"{"op":2,"fr":"CAdmin","rqi":"x"}"#, KEY);
        let out = g.on_client_data(&spoofed);
        assert!(out.to_upstream.is_empty());
        assert!(out.to_client.is_none(), "not inside the CSE's message");
        assert_eq!(out.refused.len(), 1);
        // the last fragment arrives together with the start of the next message
        let last = {
            let mut f = encode_frame(Opcode::Continuation, b"\"rqi\":\"n\"}", None).to_vec();
            f[0] |= 0x80;
            f
        };
        let next = encode_frame(Opcode::Text, b"{}", None);
        let mut chunk = last.clone();
        chunk.extend_from_slice(&next);
        let passed = g.on_server_data(Bytes::from(chunk)).unwrap();
        assert_eq!(&passed[..last.len()], &last[..]);
        assert_eq!(&passed[passed.len() - next.len()..], &next[..]);
        let ours = &passed[last.len()..passed.len() - next.len()];
        let mut reader = ServerStream::new();
        assert_eq!(reader.push(ours).unwrap(), Some(0));
        assert!(reader.at_message_boundary(), "one whole frame of ours");
        assert!(std::str::from_utf8(&ours[2..]).unwrap().contains("4103"));
    }

    #[test]
    fn an_undecodable_message_is_answered_4000_and_the_next_one_goes_on() {
        let mut g = gate(OriginatorMode::Overwrite);
        let dup = encode_frame(
            Opcode::Text,
            br#"{"op":2,"rqi":"q","pc":{"a":1,"a":2}}"#,
            KEY,
        );
        let out = g.on_client_data(&dup);
        assert!(out.to_upstream.is_empty(), "nothing forwarded");
        assert_eq!(out.closed_with, None);
        assert_eq!(
            (out.refused[0].rsc, out.refused[0].request_id.as_deref()),
            (4000, None)
        );
        let answer = out.to_client.expect("an answer at once");
        let p = primitive::parse(Encoding::Json, &answer[2..]).unwrap();
        assert_eq!((p.rsc, p.rqi.as_deref()), (Some(4000), Some("q")));
        let ok = encode_frame(Opcode::Text, br#"{"op":2,"to":"/a/b","rqi":"r"}"#, KEY);
        let out = g.on_client_data(&ok);
        let mut reader = ClientStream::new(1024);
        let events = reader.push(&out.to_upstream).unwrap();
        let [ClientEvent::Message { payload, .. }] = &events[..] else {
            panic!("{events:?}")
        };
        assert_eq!(
            &payload[..],
            br#"{"fr":"Cae-1","op":2,"to":"\/a\/b","rqi":"r"}"#
        );
    }

    #[test]
    fn after_a_violation_the_client_gets_a_close_and_nothing_more_is_read() {
        let mut g = gate(OriginatorMode::Overwrite);
        let out = g.on_client_data(&encode_frame(Opcode::Binary, b"{}", KEY));
        assert_eq!(out.closed_with, Some(1003));
        let close = out.to_client.unwrap();
        assert_eq!(close[0], 0x88);
        assert_eq!(&close[2..4], &1003u16.to_be_bytes());
        // the upstream is told the client is going away (a masked close)
        assert_eq!(out.to_upstream[0], 0x88);
        assert!(g.client_done());
        let later = g.on_client_data(&close_frame(1003, "ok", KEY));
        assert!(later.to_upstream.is_empty() && later.to_client.is_none());
        assert!(!g.talking_after_close(), "its reply to our close is fine");
        g.on_client_data(&encode_frame(Opcode::Text, &[b' '; 300], KEY));
        assert!(g.talking_after_close());
    }
}
