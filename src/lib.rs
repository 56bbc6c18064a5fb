//! oidc-operator: a Kubernetes operator that makes a cluster an OpenID Connect identity
//! provider for workloads and machines.
//!
//! Functional core, imperative shell: `api`, `keys`, `credentials`, `template` and
//! `directory` decide without I/O; `standalone` and `server` do the I/O.

pub mod api;
pub mod controller;
pub mod credentials;
pub mod dev_issuer;
pub mod directory;
pub mod keys;
pub mod login;
#[cfg(test)]
pub mod mutation;
pub mod oidc;
pub mod paths;
pub mod reconcile;
pub mod server;
pub mod sessions;
pub mod standalone;
pub mod template;
