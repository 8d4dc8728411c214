//! The HTTP body parser on arbitrary bytes, as a JSON object/array and as NDJSON.
//!
//! Beyond "never panics": a body that parses gives at least one object payload, the same
//! bytes parse the same way twice, and a single object that parses as JSON also parses as a
//! one-line NDJSON body with the same payload.
#![no_main]

use colloquium_ingest::body::{BodyFormat, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for format in [BodyFormat::Json, BodyFormat::Ndjson] {
        let first = parse(data, format);
        if let Ok(payloads) = &first {
            assert!(!payloads.is_empty());
        }
        assert_eq!(first, parse(data, format), "parsing is deterministic");
    }
    if !data.contains(&b'\n')
        && let Ok(json) = parse(data, BodyFormat::Json)
        && data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    {
        assert_eq!(parse(data, BodyFormat::Ndjson).ok(), Some(json));
    }
});
