//! Request parameters come from anyone on the network: the query of a GET, a form body, and
//! authorize's JSON body (`server::oidc_api::params_of`, over `oidc::parse_params`), and the
//! login API's JSON-or-form body (`server::identity_api::parse_fields`). They must parse or
//! fail, never panic; a parsed map never holds an empty name.
//!
//!     cargo install cargo-fuzz && cargo +nightly fuzz run params -- -max_total_time=60

#![no_main]

use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method};
use libfuzzer_sys::fuzz_target;
use oidc_operator::oidc::parse_params;
use oidc_operator::server::{identity_api, oidc_api};

const CONTENT_TYPES: [Option<&str>; 5] = [
    Some("application/x-www-form-urlencoded"),
    Some("application/json"),
    Some("Application/JSON; charset=utf-8"),
    Some("text/plain"),
    None,
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks the method, the content type and whether JSON is allowed.
    let Some((&pick, input)) = data.split_first() else { return };
    if let Ok(params) = parse_params(input) {
        assert!(params.keys().all(|k| !k.is_empty()));
    }
    let method = if pick & 1 == 0 { Method::GET } else { Method::POST };
    let mut headers = HeaderMap::new();
    if let Some(ct) = CONTENT_TYPES[usize::from(pick >> 1) % CONTENT_TYPES.len()] {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    let query = String::from_utf8_lossy(input);
    if let Ok(params) = oidc_api::params_of(&method, &query, &headers, input, pick & 0x80 != 0) {
        assert!(params.keys().all(|k| !k.is_empty()) || (method == Method::POST && pick & 0x80 != 0));
    }
    let _ = identity_api::parse_fields(&headers, input);
});
