//! One cancellation token for the whole process: Ctrl-C and SIGTERM cancel it (see
//! `cli::signals`), and every long wait of the library watches it, so a sleep or a poll ends at
//! once instead of at its next check. Work stops between units (a chunk, a batch, a step); the
//! cutover ignores it past its point of no return.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A cancellation token; clones share it. [`Cancel::child`] makes a token cancelled with its
/// parent but cancellable alone (e.g. to stop one follower).
#[derive(Debug, Clone, Default)]
pub struct Cancel(CancellationToken);

/// Returned by the waits of [`Cancel`] when the token was cancelled first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cancelled;

impl Cancel {
    /// A token nobody has cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels this token and its children.
    pub fn cancel(&self) {
        self.0.cancel();
    }

    /// True once cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once cancelled.
    pub async fn cancelled(&self) {
        self.0.cancelled().await
    }

    /// A token cancelled with this one, or on its own.
    pub fn child(&self) -> Cancel {
        Cancel(self.0.child_token())
    }

    /// Sleeps for `d` unless cancelled first.
    pub async fn sleep(&self, d: Duration) -> Result<(), Cancelled> {
        self.run(tokio::time::sleep(d)).await
    }

    /// Runs `f` unless cancelled first (then `f` is dropped where it stands: use it only for
    /// futures that are safe to abandon, such as waits and reads).
    pub async fn run<T>(&self, f: impl Future<Output = T>) -> Result<T, Cancelled> {
        tokio::select! {
            biased;
            _ = self.0.cancelled() => Err(Cancelled),
            v = f => Ok(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[tokio::test]
    async fn a_sleep_ends_at_once_when_cancelled() {
        let c = Cancel::new();
        let c2 = c.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            c2.cancel();
        });
        let t0 = Instant::now();
        assert_eq!(c.sleep(Duration::from_secs(60)).await, Err(Cancelled));
        assert!(t0.elapsed() < Duration::from_secs(30));
        assert!(c.is_cancelled());
    }

    #[tokio::test]
    async fn an_uncancelled_sleep_completes_and_run_returns_the_value() {
        let c = Cancel::new();
        assert_eq!(c.sleep(Duration::from_millis(1)).await, Ok(()));
        assert_eq!(c.run(async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn children_follow_their_parent_but_not_the_reverse() {
        let parent = Cancel::new();
        let child = parent.child();
        child.cancel();
        assert!(child.is_cancelled() && !parent.is_cancelled());
        let other = parent.child();
        parent.cancel();
        assert!(other.is_cancelled());
        // An already cancelled token wins over a ready future.
        assert_eq!(other.run(async { 1 }).await, Err(Cancelled));
    }
}
