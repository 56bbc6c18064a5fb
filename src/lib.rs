//! oidc-operator: a Kubernetes operator that makes a cluster an OpenID Connect identity
//! provider for workloads and machines.
//!
//! Functional core, imperative shell: `api`, `keys`, `credentials`, `template` and
//! `directory` decide without I/O; `standalone`, `controller` and `server` do the I/O.
//! Nothing below the shells imports them (checked by `layering`): what they share (the
//! clock, metrics, private files) lives in `clock`, `metrics` and `files`.

pub mod api;
pub mod clock;
pub mod controller;
pub mod credentials;
pub mod dev_issuer;
pub mod directory;
pub mod files;
pub mod keys;
#[cfg(test)]
mod layering;
pub mod login;
pub mod metrics;
#[cfg(test)]
pub mod mutation;
pub mod oidc;
pub mod paths;
pub mod reconcile;
pub mod server;
pub mod sessions;
pub mod standalone;
pub mod template;
