//! Manifests come from users (a folder standalone, the API server on a cluster): parsing
//! them and resolving the directory from whatever they declare must never panic.
//!
//!     cargo install cargo-fuzz && cargo +nightly fuzz run manifest -- -max_total_time=60

#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_operator::directory::{self, ExternalUrl, Materials};
use oidc_operator::standalone::manifests;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let files = vec![(std::path::PathBuf::from("fuzz.yaml"), text.to_owned())];
        let (inputs, _, _) = manifests::load(&files, &manifests::LastGood::new());
        let _ = directory::required_keys(&inputs);
        let _ = directory::build(&inputs, &Materials::default(), &ExternalUrl::new("https://fuzz"), 0, None);
    }
});
