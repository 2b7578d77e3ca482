//! oneM2M primitives in JSON and CBOR: never panics; whatever parses is re-encoded with its
//! `fr` set, and that parses again with exactly that `fr` and the other fields unchanged; the
//! re-encoding is a fixed point (encoding it again gives the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::websocket::primitive::{parse, refusal, undecodable, Encoding};

fuzz_target!(|data: &[u8]| {
    for encoding in [Encoding::Json, Encoding::Cbor] {
        let Ok(p) = parse(encoding, data) else {
            let answer = undecodable(encoding, data, Some("/id-in"), "refused");
            let answer = parse(encoding, &answer).expect("a 4000 answer parses");
            assert_eq!(answer.rsc, Some(4000));
            continue;
        };
        let forwarded = p.encode(Some("Cae-fuzz"));
        let again = parse(encoding, &forwarded).expect("a re-encoded primitive parses");
        assert_eq!(again.fr.as_deref(), Some("Cae-fuzz"));
        assert_eq!((again.op, again.rsc, again.ty), (p.op, p.rsc, p.ty));
        assert_eq!((&again.to, &again.rqi, &again.rvi), (&p.to, &p.rqi, &p.rvi));
        assert_eq!(again.encode(None), forwarded, "canonical: a fixed point");
        let answer = refusal(encoding, &p, 4103, Some("/id-in"), "refused");
        let answer = parse(encoding, &answer).expect("a refusal parses");
        assert_eq!(answer.rsc, Some(4103));
    }
});
