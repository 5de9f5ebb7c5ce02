//! Work too large for the runtime thread: encoding a `/metrics` scrape or a
//! status answer of thousands of VHIDs (megabytes of text) takes tens of
//! milliseconds, during which no VHID's timer would fire. Such work runs on
//! the blocking pool (SCHED_OTHER even with `realtime`, see `realtime`);
//! the runtime thread only takes the snapshot it encodes.

/// Run `work` on the blocking pool and wait for its result without
/// blocking the runtime; `None` if it panicked.
pub(crate) async fn off_runtime<T, F>(work: F) -> Option<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(work).await.ok()
}

/// Test support: awaits `work` beside a task that counts its own turns,
/// so a test can tell whether the runtime thread was free meanwhile.
#[cfg(test)]
pub(crate) async fn turns_of_others_during<T>(work: impl Future<Output = T>) -> (T, u64) {
    let done = std::cell::Cell::new(false);
    let mut turns = 0u64;
    let work = async {
        let out = work.await;
        done.set(true);
        out
    };
    let other = async {
        while !done.get() {
            turns += 1;
            tokio::task::yield_now().await;
        }
    };
    let (out, ()) = tokio::join!(work, other);
    (out, turns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn runs_on_another_thread_than_the_runtime() {
        let runtime_thread = std::thread::current().id();
        let ran_on = off_runtime(|| std::thread::current().id()).await;
        assert!(ran_on.is_some_and(|t| t != runtime_thread));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_is_none_not_a_panic_of_the_caller() {
        let r: Option<()> = off_runtime(|| panic!("bad encoder")).await;
        assert_eq!(r, None);
    }
}
