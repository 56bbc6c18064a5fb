//! The wall clock, read in one place. Pure functions take `now` as a parameter; the shells
//! (server, standalone, operator) read it here and pass it in, so clippy's ban on
//! `SystemTime::now` has one exception and the core stays testable at any instant.

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    unix_now_ms().div_euclid(1000)
}

/// Milliseconds since the Unix epoch (leases need better than seconds).
#[allow(clippy::disallowed_methods)]
pub fn unix_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
