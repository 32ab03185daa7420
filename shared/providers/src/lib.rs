//! Custom providers an organization brings: an HTTP SMS gateway and an SMTP server.
//! Both connect only to addresses the endpoint policy allows, checked on the address
//! actually connected to.

pub mod guard;
#[cfg(feature = "http-gateway")]
pub mod http_sms;
#[cfg(feature = "smtp")]
pub mod smtp;
