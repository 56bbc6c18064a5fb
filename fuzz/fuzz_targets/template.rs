//! Scope templates come from users' manifests: parsing and rendering must never panic.
//!
//!     cargo install cargo-fuzz && cargo +nightly fuzz run template -- -max_total_time=60

#![no_main]

use libfuzzer_sys::fuzz_target;
use oidc_operator::template::{EntityContext, Template};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(template) = Template::parse(text) {
            let entity = EntityContext { name: text.to_owned(), ..EntityContext::default() };
            let _ = template.render(&entity, i64::MAX);
            let _ = template.render(&EntityContext::default(), i64::MIN);
        }
    }
});
