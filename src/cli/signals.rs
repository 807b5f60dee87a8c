//! Ctrl-C and SIGTERM: how each command stops. Replication stops cleanly between units of work;
//! a cutover rolls back before its point of no return and always completes after it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::cutover;

fn sigterm() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok()
}

/// Waits for the next Ctrl-C or SIGTERM (Ctrl-C only when SIGTERM cannot be watched).
async fn next_signal(term: &mut Option<tokio::signal::unix::Signal>) {
    match term {
        Some(t) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = t.recv() => {}
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Calls `each` on every Ctrl-C or SIGTERM, from a background task that lives as long as the
/// process.
fn on_signals(mut each: impl FnMut() + Send + 'static) {
    tokio::spawn(async move {
        let mut term = sigterm();
        loop {
            next_signal(&mut term).await;
            each();
        }
    });
}

/// Sets the returned flag on SIGINT/SIGTERM; a second signal exits at once.
pub fn cancellation() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let f = flag.clone();
    on_signals(move || {
        if f.swap(true, Ordering::SeqCst) {
            eprintln!("interrupted again: exiting now");
            std::process::exit(130);
        }
        eprintln!(
            "interrupted: stopping cleanly after the work in flight (press Ctrl-C again to exit now)"
        );
    });
    flag
}

/// Resolves on the first Ctrl-C or SIGTERM (the caller aborts what it was doing).
pub async fn interrupted() {
    next_signal(&mut sigterm()).await;
    eprintln!("interrupted: aborting");
}

/// Cutover's signal handling: Ctrl-C/SIGTERM set the flag (before the point of no return that
/// rolls back); the process never exits on a signal, so a switch past the point of no return
/// always runs to completion.
pub fn cutover_signals() -> cutover::Signals {
    let signals = cutover::Signals::default();
    let s = signals.clone();
    on_signals(move || {
        s.cancel.store(true, Ordering::SeqCst);
        if s.past_point_of_no_return.load(Ordering::SeqCst) {
            eprintln!("interrupted after the point of no return: the switch runs to completion");
        } else {
            eprintln!("interrupted: rolling the cutover back");
        }
    });
    signals
}

/// `migrate`'s signal handling: Ctrl-C/SIGTERM stop replication cleanly, roll back a cutover
/// before its point of no return, and never interrupt a switch past it.
pub fn migrate_signals() -> cutover::Signals {
    let signals = cutover::Signals::default();
    let s = signals.clone();
    on_signals(move || {
        s.cancel.store(true, Ordering::SeqCst);
        if s.past_point_of_no_return.load(Ordering::SeqCst) {
            eprintln!(
                "interrupted after the cutover's point of no return: the switch runs to completion"
            );
        } else {
            eprintln!("interrupted: stopping cleanly (a cutover in progress rolls back); run migrate again to resume");
        }
    });
    signals
}
