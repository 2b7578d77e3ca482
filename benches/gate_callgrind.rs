//! One oneM2M WebSocket message through the gate (unmask, strict decode, policy, canonical
//! re-encode, re-mask), N times: a driver for instruction counts under callgrind, which are
//! immune to the load of a shared machine (bench/gate_cost.sh runs it and prints instructions
//! per message).
//!
//!   cargo bench --bench gate_callgrind --no-run
//!   valgrind --tool=callgrind --toggle-collect='*Gate*on_client_data*' \
//!     target/release/deps/gate_callgrind-* CASE N
//!
//! Without arguments it lists the cases. `http_*` cases drive the ingress's work on an HTTP
//! request body read whole with an egress route (`http_body`; issue 27.1: toggle-collect
//! `*http_body*`). `GATE_EGRESS=127.0.0.1:8081` gives the gate that egress listener.

use std::hint::black_box;
use std::sync::Arc;

use arc_swap::ArcSwap;
use m2m_auth_proxy::config::OriginatorConfig;
use m2m_auth_proxy::identity::{Identity, Method};
use m2m_auth_proxy::originator::OriginatorPolicy;
use m2m_auth_proxy::poa::rewrite::PoaRewriter;
use m2m_auth_proxy::poa::{Direction, Encoding as BodyEncoding};
use m2m_auth_proxy::rules::RuleSet;
use m2m_auth_proxy::websocket::frame::{encode_frame, Opcode};
use m2m_auth_proxy::websocket::gate::Gate;
use m2m_auth_proxy::websocket::primitive::Encoding;

fn json(fr: &str, pc: &str) -> Vec<u8> {
    format!(r#"{{"op":2,"to":"/id-in/cse-in/Cae-sensor1/temperature/la","fr":"{fr}","rqi":"bench-0001","rvi":"3","pc":{pc}}}"#).into_bytes()
}

/// An AE registration as ACME's clients send it: nested content, a list, URLs.
const AE: &str = r#"{"m2m:ae":{"rn":"Cae-sensor1","api":"Nsensor.company.com","rr":true,"srv":["3","4"],"poa":["http://10.0.0.17:8080/notify","mqtt://broker.local:1883/sensor"],"lbl":["type/temperature","floor/3","building/A"],"acpi":["/id-in/cse-in/acpSensors"]}}"#;

fn cbor(v: &serde_json::Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(v, &mut out).unwrap();
    out
}

fn cases() -> Vec<(&'static str, Encoding, Opcode, Vec<u8>)> {
    let big_pc = format!(r#"{{"m2m:cin":{{"con":"{}"}}}}"#, "x".repeat(4000));
    let ae: serde_json::Value =
        serde_json::from_str(&String::from_utf8(json("CAdmin", AE)).unwrap()).unwrap();
    vec![
        (
            "json_own_fr",
            Encoding::Json,
            Opcode::Text,
            json("Cae-sensor1", "{}"),
        ),
        (
            "json_spoofed_fr",
            Encoding::Json,
            Opcode::Text,
            json("CAdmin", "{}"),
        ),
        (
            "json_ae_create",
            Encoding::Json,
            Opcode::Text,
            json("CAdmin", AE),
        ),
        (
            "json_4k_spoofed_fr",
            Encoding::Json,
            Opcode::Text,
            json("CAdmin", &big_pc),
        ),
        (
            "cbor_spoofed_fr",
            Encoding::Cbor,
            Opcode::Binary,
            cbor(
                &serde_json::json!({"op": 2, "to": "/id-in/cse-in", "fr": "CAdmin", "rqi": "bench-0001"}),
            ),
        ),
        ("cbor_ae_create", Encoding::Cbor, Opcode::Binary, cbor(&ae)),
        (
            "http_json_ae_create",
            Encoding::Json,
            Opcode::Text,
            AE.as_bytes().to_vec(),
        ),
        (
            "http_cbor_ae_create",
            Encoding::Cbor,
            Opcode::Binary,
            cbor(&serde_json::from_str(AE).unwrap()),
        ),
    ]
}

/// What the ingress does with an AE's request body read whole when there are egress routes:
/// the strict check for URLs of the listeners with canonical re-encoding (issue 27.1), then
/// `poa` rewriting with no route's mappings (an AE is no route's peer).
#[inline(never)]
fn http_body(
    listeners: &m2m_auth_proxy::steering::Listeners,
    poa: &PoaRewriter,
    body: &[u8],
    encoding: BodyEncoding,
) -> usize {
    use m2m_auth_proxy::poa::rewrite::Routes;
    let out = m2m_auth_proxy::ingress::check_body(listeners, body, encoding, true, None)
        .expect("no listener named")
        .expect("re-encoded");
    poa.rewrite_for(&out, encoding, Direction::TowardLocal, Routes::Only(&[]))
        .map_or(out.len(), |b| b.len())
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let all = cases();
    let (Some(name), Some(n)) = (
        args.first(),
        args.get(1).and_then(|n| n.parse::<usize>().ok()),
    ) else {
        for (name, _, _, payload) in &all {
            println!("{name} ({} bytes)", payload.len());
        }
        return;
    };
    let (_, encoding, opcode, payload) = all.iter().find(|c| c.0 == name).expect("a case name");
    if name.starts_with("http_") {
        let poa = PoaRewriter::new(
            &[(
                "registrar",
                "https://in-cse.example.com:8443",
                "http://127.0.0.1:8081",
            )],
            1 << 20,
        )
        .unwrap();
        let listeners =
            m2m_auth_proxy::steering::Listeners::new(["127.0.0.1:8081".parse().unwrap()]);
        let encoding = match encoding {
            Encoding::Json => BodyEncoding::Json,
            Encoding::Cbor => BodyEncoding::Cbor,
        };
        let mut bytes = 0usize;
        for _ in 0..n {
            bytes += http_body(&listeners, &poa, black_box(payload), encoding);
        }
        println!(
            "{name}: {n} bodies of {} bytes, {bytes} bytes out",
            payload.len()
        );
        return;
    }
    let policy = OriginatorPolicy::from_config(&OriginatorConfig::default()).unwrap();
    let identity = Identity {
        name: "Cae-sensor1".into(),
        proven_by: Method::Mtls,
        originator: "Cae-sensor1".into(),
        also_allowed: Vec::new(),
        roles: Vec::new(),
    };
    let mut gate = Gate::new(
        *encoding,
        Arc::new(identity),
        Arc::new(ArcSwap::from_pointee(policy)),
        Arc::new(ArcSwap::from_pointee(
            RuleSet::compile(&Default::default()).unwrap(),
        )),
        None,
        Arc::new(m2m_auth_proxy::steering::Listeners::new(
            std::env::var("GATE_EGRESS")
                .ok()
                .and_then(|a| a.parse().ok()),
        )),
        1 << 20,
    );
    let frame = encode_frame(*opcode, payload, Some([0x12, 0x34, 0x56, 0x78]));
    let mut forwarded = 0usize;
    for _ in 0..n {
        let out = gate.on_client_data(black_box(&frame));
        forwarded += out.to_upstream.len();
    }
    println!(
        "{name}: {n} messages of {} bytes, {forwarded} bytes forwarded",
        payload.len()
    );
}
