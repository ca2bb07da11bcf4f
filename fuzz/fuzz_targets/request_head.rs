//! The request head parser on arbitrary bytes: no panic, and what it consumes is its own.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerocopy_server::http::h1::request as head;

fuzz_target!(|data: &[u8]| {
    // The limit from the first byte, so small and large limits both get exercised.
    let max = match data.first() {
        Some(b) => 64 + usize::from(*b) * 64,
        None => 8192,
    };
    if let Ok(Some((req, n))) = head::parse(data, max) {
        assert!(n <= data.len(), "consumed {n} of {}", data.len());
        // A head is decided by its own bytes: the same bytes without what follows parse the
        // same way.
        match head::parse(&data[..n], max) {
            Ok(Some((again, m))) => {
                assert_eq!(m, n);
                assert_eq!(format!("{again:?}"), format!("{req:?}"));
            }
            other => panic!("the head alone parsed differently: {other:?}"),
        }
    }
});
