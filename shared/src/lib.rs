//! Flare's ports and application layer.
//!
//! - [`domain`]: the `flare-domain` crate (shared/domain), re-exported: validated types
//!   parsed once at the edge, settings, incident events and the routing policy as pure
//!   functions. The compiler keeps it apart: it depends on nothing here, nor on tokio.
//! - [`ports`]: one trait per outside concern (settings store, directory, secret store,
//!   delivery log, job queue, one sender per channel).
//! - [`memory`]: in-memory adapters for every port (unit tests, the local runner).
//! - [`app`]: the operations behind the API, the router and the delivery functions.
//!
//! Adapters live in their own crates beside this one, so the compiler keeps the
//! dependency direction: `flare-aws` (shared/aws), `flare-providers`
//! (shared/providers), and `flare-runtime` (shared/runtime: environment and tracing
//! for binaries).
// The OpenAPI document is one large `json!` literal.
#![recursion_limit = "512"]

pub mod app;
pub use flare_domain as domain;
pub mod faults;
pub mod memory;
pub mod ports;
pub mod secrets_cache;

pub use flare_domain::*;
