//! Flare's domain crate.
//!
//! - [`domain`]: validated types parsed once at the edge, settings, incident events and
//!   the routing policy as pure functions. Nothing here knows about Lambda or AWS.
//! - [`ports`]: one trait per outside concern (settings store, directory, secret store,
//!   delivery log, job queue, one sender per channel).
//! - [`memory`]: in-memory adapters for every port (unit tests, the local runner).
//! - `aws` (feature-gated): the AWS client factory and the AWS adapters, so each
//!   function links only the SDK crates it uses.

pub mod app;
pub mod config;
pub mod domain;
pub mod memory;
pub mod ports;
pub mod providers;
pub mod secrets_cache;

#[cfg(feature = "aws")]
pub mod aws;

pub use domain::*;
