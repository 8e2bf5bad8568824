//! PROXY protocol v1/v2 headers: nothing panics, a header's length stays within the input,
//! the result does not depend on bytes after the header, and a prefix of a header only
//! ever asks for more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rgunicorn::http::proxy::{parse_proxy, ProxyMode, ProxyParse};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let mode = [ProxyMode::V1, ProxyMode::V2, ProxyMode::Auto][usize::from(pick % 3)];
    let full = parse_proxy(data, mode);
    if let Ok(ProxyParse::Header(header, len)) = &full {
        assert!(*len <= data.len() && *len > 0);
        assert_eq!(
            parse_proxy(&data[..*len], mode),
            Ok(ProxyParse::Header(header.clone(), *len)),
            "the header depends on what follows it"
        );
        for end in 0..*len {
            assert!(
                matches!(parse_proxy(&data[..end], mode), Ok(ProxyParse::NeedMore)),
                "a prefix of a valid header was not 'need more'"
            );
        }
    }
});
