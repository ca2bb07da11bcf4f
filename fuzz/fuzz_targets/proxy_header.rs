//! The PROXY protocol header parser on arbitrary bytes, for each accepted version: no panic; a
//! complete header lies within the input; every prefix of a complete header is incomplete
//! (so reading it in pieces gives the same header); an incomplete input stays incomplete or
//! completes when more bytes come, never turning a header into garbage.
#![no_main]

use libfuzzer_sys::fuzz_target;
use zerocopy_server::config::ProxyVersions;
use zerocopy_server::net::proxy_header::{parse, Parsed, V2_MAX};

fuzz_target!(|data: &[u8]| {
    for versions in [ProxyVersions::V1, ProxyVersions::V2, ProxyVersions::Any] {
        match parse(data, versions) {
            Parsed::Done { len, source } => {
                assert!(len <= data.len() && len <= V2_MAX);
                // The header alone, and with anything after it, parses the same.
                assert_eq!(parse(&data[..len], versions), Parsed::Done { len, source });
                for cut in 0..len {
                    assert_eq!(
                        parse(&data[..cut], versions),
                        Parsed::Incomplete,
                        "cut at {cut}"
                    );
                }
            }
            Parsed::Incomplete => assert!(data.len() < V2_MAX),
            Parsed::Invalid(_) => {
                // Garbage stays garbage with more bytes.
                let mut more = data.to_vec();
                more.extend_from_slice(b"\r\n\0\0\0");
                assert!(matches!(parse(&more, versions), Parsed::Invalid(_)));
            }
        }
    }
});
