//! Pure planning for the cluster shell: from (object, what is observed, now) to what the
//! controllers write. Nothing here does I/O; `controller/` applies the plans and is thin.

pub mod key;
pub mod lease;
pub mod secrets;
pub mod status;
