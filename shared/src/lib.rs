//! Flare's ports and application layer.
//!
//! - [`domain`]: the `flare-domain` crate (shared/domain), re-exported: validated types
//!   parsed once at the edge, settings, incident events and the routing policy as pure
//!   functions. The compiler keeps it apart: it depends on nothing here, nor on tokio.
//! - [`ports`]: one trait per outside concern (settings store, directory, secret store,
//!   delivery log, job queue, one sender per channel).
//! - [`app`]: the operations behind the API, the router and the delivery functions.
//! - [`pace`]: the pacer in one process (the runner's, and a DynamoDB pacer's fallback).
//!
//! Adapters live in their own crates beside this one, so the compiler keeps the
//! dependency direction: `flare-memory` (shared/memory: every port in memory, for the
//! tests and the local runner only), `flare-aws` (shared/aws), `flare-providers`
//! (shared/providers), `flare-sqlite` (shared/sqlite, the runner's storage) and
//! `flare-runtime` (shared/runtime: environment and tracing for binaries).
// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

pub mod app;
pub use flare_domain as domain;
pub mod faults;
pub mod pace;
pub mod ports;
pub mod secrets_cache;

pub use flare_domain::*;
