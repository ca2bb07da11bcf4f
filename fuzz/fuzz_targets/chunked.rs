//! The chunked decoder on arbitrary bytes: no panic, and the same body and outcome whether the
//! input arrives at once or split at any point (as a socket may split it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerocopy_server::http::h1::chunked::{ChunkedDecoder, Decoded};

/// Feeds `pieces` in order; the body bytes, and `Some(consumed)` once done or the error.
fn run(pieces: &[&[u8]]) -> (Vec<u8>, Result<Option<usize>, String>) {
    let mut d = ChunkedDecoder::new();
    let mut body = Vec::new();
    let mut total = 0;
    for piece in pieces {
        let mut at = 0;
        loop {
            match d.decode(&piece[at..]) {
                Ok((n, Decoded::Data(r))) => {
                    assert!(r.end <= n && !r.is_empty(), "range {r:?} beyond {n}");
                    body.extend_from_slice(&piece[at..][r]);
                    at += n;
                }
                Ok((n, Decoded::NeedMore)) => {
                    assert_eq!(at + n, piece.len(), "NeedMore left input unconsumed");
                    total += piece.len();
                    break;
                }
                Ok((n, Decoded::Done)) => return (body, Ok(Some(total + at + n))),
                Err(e) => return (body, Err(e.to_string())),
            }
        }
    }
    (body, Ok(None))
}

fuzz_target!(|data: &[u8]| {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let whole = run(&[input]);
    let at = usize::from(split) % (input.len() + 1);
    let (a, b) = input.split_at(at);
    let split_run = run(&[a, b]);
    assert_eq!(whole.1, split_run.1, "outcome differs when split at {at}");
    assert_eq!(whole.0, split_run.0, "body differs when split at {at}");
});
