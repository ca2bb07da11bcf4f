//! The HTTP/1 body reader and writer on arbitrary bytes, in every framing: no panic; the same
//! data, outcome and consumed count whether the input arrives at once or split anywhere; and a
//! body re-chunked by the writer reads back as the same data and trailers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerocopy_server::http::h1::body::{transcode, BodyReader, BodyWriter, Framing};

/// Feeds `pieces` to a reader in `framing` (unconsumed bytes carried over, as a connection's
/// buffer does) through `writer`: the output, and the consumed count once done, or the error.
fn run(
    framing: Framing,
    writer: BodyWriter,
    pieces: &[&[u8]],
) -> (Vec<u8>, Result<Option<usize>, String>, Vec<u8>) {
    let mut reader = BodyReader::new(framing);
    let (mut buf, mut sent, mut total) = (Vec::new(), Vec::new(), 0);
    for piece in pieces {
        buf.extend_from_slice(piece);
        let mut out = Vec::new();
        match transcode(&mut reader, writer, &buf, &mut out) {
            Ok(t) => {
                assert!(t.consumed <= buf.len());
                if t.raw {
                    sent.extend_from_slice(&buf[..t.consumed]);
                } else {
                    sent.extend_from_slice(&out);
                }
                buf.drain(..t.consumed);
                total += t.consumed;
                if t.done {
                    return (sent, Ok(Some(total)), reader.trailers().to_vec());
                }
            }
            Err(e) => return (sent, Err(e.reason.to_string()), Vec::new()),
        }
    }
    (sent, Ok(None), Vec::new())
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else {
        return;
    };
    let framing = match control % 4 {
        0 => Framing::Chunked,
        1 => Framing::Length(u64::from(control) * 3),
        2 => Framing::Close,
        _ => Framing::None,
    };
    for writer in [
        BodyWriter::Identity,
        BodyWriter::Chunked,
        BodyWriter::Passthrough,
        BodyWriter::Discard,
    ] {
        let whole = run(framing, writer, &[input]);
        let at = usize::from(control).wrapping_mul(7) % (input.len() + 1);
        let (a, b) = input.split_at(at);
        let split = run(framing, writer, &[a, b]);
        assert_eq!(whole.1, split.1, "outcome differs when split at {at}");
        if writer != BodyWriter::Chunked && whole.1.is_ok() {
            // Chunk boundaries follow the reads; the data does not. (Before an error, what
            // went out depends on where the reads split.)
            assert_eq!(whole.0, split.0, "output differs when split at {at}");
        }
        if writer == BodyWriter::Chunked && matches!(whole.1, Ok(Some(_))) {
            let identity = run(framing, BodyWriter::Identity, &[input]).0;
            let again = run(Framing::Chunked, BodyWriter::Identity, &[&whole.0]);
            assert!(
                matches!(again.1, Ok(Some(_))),
                "the writer's chunked output reads back"
            );
            assert_eq!(again.0, identity, "the same data");
            assert_eq!(again.2, whole.2, "the same trailers");
        }
    }
});
