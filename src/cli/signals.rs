//! Ctrl-C and SIGTERM: how each command stops. Replication stops cleanly between units of work;
//! a cutover rolls back before its point of no return and always completes after it.

use std::sync::atomic::Ordering;

use crate::cancel::Cancel;

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

/// A token cancelled by SIGINT/SIGTERM; a second signal exits at once.
pub fn cancellation() -> Cancel {
    let cancel = Cancel::new();
    let c = cancel.clone();
    on_signals(move || {
        if c.is_cancelled() {
            eprintln!("interrupted again: exiting now");
            std::process::exit(130);
        }
        c.cancel();
        eprintln!(
            "interrupted: stopping cleanly after the work in flight (press Ctrl-C again to exit now)"
        );
    });
    cancel
}

/// A token cancelled by the first Ctrl-C or SIGTERM, for commands that abort what they were
/// doing (the archive: its multipart upload is aborted).
pub fn aborting() -> Cancel {
    let cancel = Cancel::new();
    let c = cancel.clone();
    on_signals(move || {
        if !c.is_cancelled() {
            eprintln!("interrupted: aborting");
        }
        c.cancel();
    });
    cancel
}

/// Cutover's signal handling: Ctrl-C/SIGTERM set the flag (before the point of no return that
/// rolls back); the process never exits on a signal, so a switch past the point of no return
/// always runs to completion.
pub fn cutover_signals() -> cutover::Signals {
    let signals = cutover::Signals::default();
    let s = signals.clone();
    on_signals(move || {
        s.cancel.cancel();
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
        s.cancel.cancel();
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
