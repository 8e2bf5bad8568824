//! Request heads: one-shot and byte-at-a-time (resuming) parses agree, nothing panics, and
//! what parses respects the limits. The first byte picks tight or default limits and which
//! of Gunicorn's leniency switches are on.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rgunicorn::http::request::{parse_head, parse_head_resuming, HeadScan, Leniency, Limits};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let mut limits = if pick & 1 == 0 {
        Limits::default()
    } else {
        Limits::from_settings(64, 4, 32)
    };
    limits.lenient = Leniency {
        obsolete_folding: pick & 2 != 0,
        strip_header_spaces: pick & 4 != 0,
        unconventional_method: pick & 8 != 0,
        unconventional_version: pick & 16 != 0,
        casefold_method: pick & 32 != 0,
    };
    let whole = parse_head(data, &limits);
    // Byte at a time, resuming, as the worker does with a slow client.
    let mut scan = HeadScan::default();
    let mut bytewise = Ok(None);
    for end in 0..=data.len() {
        bytewise = parse_head_resuming(&data[..end], &limits, &mut scan);
        if !matches!(bytewise, Ok(None)) {
            break;
        }
    }
    // The same outcome however the bytes were split. As the corpus tests assert: a request
    // parses the same, and a refusal has the same status; the error's wording may differ,
    // as a check can fire on a partial line before the line's end shows another fault.
    match (&whole, &bytewise) {
        (Err(a), Err(b)) => assert_eq!(
            a.status(),
            b.status(),
            "one-shot and byte-at-a-time disagree: {a:?} vs {b:?}"
        ),
        _ => assert_eq!(whole, bytewise, "one-shot and byte-at-a-time disagree"),
    }
    if let Ok(Some(head)) = whole {
        assert!(head.head_len <= data.len());
        assert!(head.headers.len() <= limits.fields);
        assert!(head
            .headers
            .iter()
            .all(|h| h.name.len() + h.value.len() + 2 <= limits.field_size));
        assert!(!head.method.is_empty());
    }
});
