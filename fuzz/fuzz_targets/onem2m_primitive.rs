//! oneM2M primitives in JSON and CBOR: never panics; whatever parses can have its `fr` set, and
//! the result parses again with exactly that `fr` and the other fields unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::websocket::primitive::{parse, refusal, Encoding};

fuzz_target!(|data: &[u8]| {
    for encoding in [Encoding::Json, Encoding::Cbor] {
        let Ok(p) = parse(encoding, data) else {
            continue;
        };
        let rewritten = p.with_originator(data, "Cae-fuzz");
        let again = parse(encoding, &rewritten).expect("a rewritten primitive parses");
        assert_eq!(again.fr.as_deref(), Some("Cae-fuzz"));
        assert_eq!((again.op, again.rsc), (p.op, p.rsc));
        assert_eq!((&again.to, &again.rqi, &again.rvi), (&p.to, &p.rqi, &p.rvi));
        let answer = refusal(encoding, &p, 4103, Some("/id-in"), "refused");
        let answer = parse(encoding, &answer).expect("a refusal parses");
        assert_eq!(answer.rsc, Some(4103));
    }
});
