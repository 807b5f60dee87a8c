//! Bounded, owned concurrency: a fixed number of workers, each with its own connections, pull
//! units of work from one queue. Every task is owned and joined; a panic becomes an error; after
//! the first failure (or a cancellation) the others stop taking new units and finish the one in
//! hand. Workers return their own totals, which the caller merges: no shared counters.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::task::JoinSet;

use crate::cancel::Cancel;
use crate::error::{Error, Result};

/// The shared queue a worker pulls from.
#[derive(Debug)]
pub struct Queue<I> {
    items: Mutex<VecDeque<I>>,
    stop: Cancel,
}

impl<I> Queue<I> {
    /// The next unit, or None when the queue is empty, a worker failed or the run was cancelled.
    pub fn next(&self) -> Option<I> {
        if self.stop.is_cancelled() {
            return None;
        }
        self.items.lock().ok()?.pop_front()
    }

    /// Puts a unit back at the end of the queue, to be tried again after the others.
    pub fn put_back(&self, item: I) {
        if let Ok(mut q) = self.items.lock() {
            q.push_back(item);
        }
    }
}

/// Runs `worker` `jobs` times at once (never more workers than units) over `items`, taken in
/// order. Returns every worker's result, or the first error once all workers have ended.
pub async fn run<I, T, F, Fut>(
    items: impl IntoIterator<Item = I>,
    jobs: usize,
    cancel: &Cancel,
    worker: F,
) -> Result<Vec<T>>
where
    I: Send + 'static,
    T: Send + 'static,
    F: Fn(Arc<Queue<I>>) -> Fut,
    Fut: Future<Output = Result<T>> + Send + 'static,
{
    let items: VecDeque<I> = items.into_iter().collect();
    let workers = jobs.max(1).min(items.len().max(1));
    let queue = Arc::new(Queue {
        items: Mutex::new(items),
        stop: cancel.child(),
    });
    let mut set = JoinSet::new();
    for _ in 0..workers {
        let (q, work) = (queue.clone(), worker(queue.clone()));
        set.spawn(async move {
            let r = work.await;
            if r.is_err() {
                q.stop.cancel();
            }
            r
        });
    }
    let mut done = Vec::with_capacity(workers);
    let mut first = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(v)) => done.push(v),
            Ok(Err(e)) => {
                first.get_or_insert(e);
            }
            Err(panic) => {
                queue.stop.cancel();
                first.get_or_insert(Error::other("a worker panicked").with_source(panic));
            }
        }
    }
    first.map_or(Ok(done), Err)
}

/// Joins every task of a set whose tasks are spawned as work arrives; the first error (or
/// panic) wins, after all tasks have ended.
pub async fn join_all(mut set: JoinSet<Result<()>>) -> Result<()> {
    let mut first = None;
    while let Some(j) = set.join_next().await {
        let r = j.unwrap_or_else(|e| Err(Error::other("a worker panicked").with_source(e)));
        if let Err(e) = r {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn every_unit_is_done_once_by_at_most_jobs_workers() {
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let totals = run(1..=100u64, 3, &Cancel::new(), |q| {
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                let mut sum = 0;
                while let Some(i) = q.next() {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    sum += i;
                    running.fetch_sub(1, Ordering::SeqCst);
                }
                Ok(sum)
            }
        })
        .await
        .expect("pool");
        assert_eq!(totals.len(), 3);
        assert_eq!(totals.iter().sum::<u64>(), 5050);
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    #[tokio::test]
    async fn no_more_workers_than_units() {
        let started = Arc::new(AtomicUsize::new(0));
        let r = run(vec![1, 2], 8, &Cancel::new(), |q| {
            let started = started.clone();
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                while q.next().is_some() {}
                Ok(())
            }
        })
        .await
        .expect("pool");
        assert_eq!((r.len(), started.load(Ordering::SeqCst)), (2, 2));
    }

    #[tokio::test]
    async fn a_failure_stops_the_others_and_is_returned() {
        let taken = Arc::new(AtomicUsize::new(0));
        let e = run(0..1000, 4, &Cancel::new(), |q| {
            let taken = taken.clone();
            async move {
                while let Some(i) = q.next() {
                    taken.fetch_add(1, Ordering::SeqCst);
                    if i == 5 {
                        return Err(Error::other("unit 5 failed"));
                    }
                    tokio::task::yield_now().await;
                }
                Ok(())
            }
        })
        .await
        .expect_err("must fail");
        assert_eq!(e.message(), "unit 5 failed");
        assert!(taken.load(Ordering::SeqCst) < 1000, "the others stopped");
    }

    #[tokio::test]
    async fn cancelled_before_start_takes_nothing_and_a_panic_is_an_error() {
        let cancel = Cancel::new();
        cancel.cancel();
        let n = run(0..10, 2, &cancel, |q| async move {
            Ok(std::iter::from_fn(|| q.next()).count())
        })
        .await
        .expect("pool");
        assert_eq!(n.iter().sum::<usize>(), 0);
        let e = run(0..1, 1, &Cancel::new(), |_q| async move {
            if true {
                panic!("boom");
            }
            Ok(())
        })
        .await
        .expect_err("panic");
        assert_eq!(e.message(), "a worker panicked");
    }
}
