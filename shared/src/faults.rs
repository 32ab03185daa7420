//! Fault injection points for the fault-injection test and benchmark.
//!
//! The checks below are called from production code paths, but they can only ever
//! answer `false` unless the crate is built with the `fault-injection` feature, which
//! only the test and benchmark crates turn on (as a dev-dependency feature). The
//! setters exist only with the feature, so no configuration, environment variable or
//! request can turn a fault on in a deployed function or a `flare-local` release build.

use crate::domain::DeliveryJob;

/// Decides, per job, whether a fault happens at its injection point.
#[cfg(feature = "fault-injection")]
pub type Hook = std::sync::Arc<dyn Fn(&DeliveryJob) -> bool + Send + Sync>;

#[cfg(feature = "fault-injection")]
static CRASH_AFTER_SEND: std::sync::RwLock<Option<Hook>> = std::sync::RwLock::new(None);
#[cfg(feature = "fault-injection")]
static DUPLICATE_JOB: std::sync::RwLock<Option<Hook>> = std::sync::RwLock::new(None);

/// The marker every injected fault logs (the binaries test checks a release build does
/// not contain it).
pub const MARKER: &str = "FLARE-FAULT-INJECTION";

/// Between the provider's answer and the `sent` write: when the hook says so, the
/// attempt panics there, as if its process had died (a Lambda invocation that panics
/// ends, and its whole batch comes back after the visibility timeout; in the local
/// runner the job's task ends and only a restart finds its record again).
#[cfg(feature = "fault-injection")]
pub fn set_crash_after_send(hook: Option<Hook>) {
    *CRASH_AFTER_SEND.write().unwrap_or_else(|e| e.into_inner()) = hook;
}

/// When the hook says so, the local queue hands the job over twice (SQS's
/// at-least-once delivery, in the local runner).
#[cfg(feature = "fault-injection")]
pub fn set_duplicate_job(hook: Option<Hook>) {
    *DUPLICATE_JOB.write().unwrap_or_else(|e| e.into_inner()) = hook;
}

#[cfg(feature = "fault-injection")]
fn ask(hook: &std::sync::RwLock<Option<Hook>>, job: &DeliveryJob) -> bool {
    let hook = hook.read().unwrap_or_else(|e| e.into_inner()).clone();
    hook.is_some_and(|h| h(job))
}

/// True when a crash is injected after this job's provider call.
#[inline]
pub fn crash_after_send(job: &DeliveryJob) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        ask(&CRASH_AFTER_SEND, job)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = job;
        false
    }
}

/// True when this job is to be handed over twice.
#[inline]
pub fn duplicate_job(job: &DeliveryJob) -> bool {
    #[cfg(feature = "fault-injection")]
    {
        ask(&DUPLICATE_JOB, job)
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = job;
        false
    }
}
