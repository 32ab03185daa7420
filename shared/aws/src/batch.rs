//! What every batch call shares (BatchGetItem, BatchWriteItem, SendMessageBatch): how
//! many calls a fan-out keeps in flight, and the backoff between retries of what the
//! service left unprocessed.

use std::time::Duration;

/// How many batch calls a fan-out keeps in flight by default: one at a time, 10,000
/// recipients would spend a minute on round trips alone.
pub const DEFAULT_BATCH_CONCURRENCY: usize = 16;

/// `FLARE_BATCH_CONCURRENCY`, else [`DEFAULT_BATCH_CONCURRENCY`] (read once).
pub fn batch_concurrency() -> usize {
    static N: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *N.get_or_init(|| {
        std::env::var("FLARE_BATCH_CONCURRENCY")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_BATCH_CONCURRENCY)
    })
}

/// Exponential backoff with full jitter, capped at about a second.
pub fn backoff(attempt: u32) -> Duration {
    let cap = 25u64 << attempt.min(6);
    let jitter = uuid::Uuid::new_v4().as_u128() as u64 % cap.max(1);
    Duration::from_millis(cap / 2 + jitter / 2)
}

/// How many times a batch call is retried for what the service left unprocessed.
pub const MAX_RETRIES: u32 = 8;

/// What one batch call did: its output, and what it left to send again.
pub struct Round<R, O> {
    pub output: O,
    /// The request for what is left (unprocessed keys or items, failed entries) and
    /// how many there are; `None` when everything went through.
    pub rest: Option<(R, usize)>,
}

/// Items a batch call still left after [`MAX_RETRIES`] retries: the service is
/// throttling or failing, so the caller reports it as unavailable (retry later).
#[derive(Debug, thiserror::Error)]
#[error("{what} left {left} unprocessed after {MAX_RETRIES} retries")]
pub struct Unprocessed {
    pub what: &'static str,
    pub left: usize,
}

/// Makes one batch call, then calls again with what it left unprocessed, with
/// [`backoff`], until nothing is left. Answers every round's output.
pub async fn until_processed<R, O, E, F, Fut>(
    what: &'static str,
    request: R,
    mut call: F,
) -> Result<Vec<O>, E>
where
    F: FnMut(R) -> Fut,
    Fut: std::future::Future<Output = Result<Round<R, O>, E>>,
    E: From<Unprocessed>,
{
    let mut outputs = Vec::new();
    let mut next = Some(request);
    let mut retries = 0;
    while let Some(request) = next.take() {
        let round = call(request).await?;
        outputs.push(round.output);
        if let Some((rest, left)) = round.rest {
            if retries == MAX_RETRIES {
                return Err(Unprocessed { what, left }.into());
            }
            retries += 1;
            tokio::time::sleep(backoff(retries)).await;
            next = Some(rest);
        }
    }
    Ok(outputs)
}
