//! Progress as events. The library never writes to the terminal: long operations tell a [`Sink`]
//! what happens (a step begins, a detail, a snapshot of the replication, a count of work done)
//! and the binary decides how to show it (bars on a terminal, plain lines in logs, JSON lines for
//! `--json`).

use crate::pg::status::Status;

/// What a long operation reports.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new step of a flow begins (`phase` is its stable name, e.g. `replicate`).
    Step { phase: String, message: String },
    /// A detail of the current step.
    Info { phase: String, message: String },
    /// A one-line state while there is nothing to measure yet (e.g. the worker boots).
    /// Renderers show a repeated message once.
    Waiting { message: String },
    /// A snapshot of the replication, read off the target.
    Snapshot(Box<Status>),
    /// The replication reached what was waited for (the last snapshot).
    Finished(Box<Status>),
    /// Work counted in `unit`s: `done` of `total` (None: unknown total).
    Advance {
        phase: String,
        unit: Unit,
        done: u64,
        total: Option<u64>,
    },
    /// A rendered block for people (the AWS plan, the cutover report); shown in text modes only.
    Text(String),
}

/// What an [`Event::Advance`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Tables, items, steps.
    Items(&'static str),
    /// Bytes.
    Bytes,
}

/// Where events go. Implementations must not block for long: events are emitted from the
/// flow's own tasks.
pub trait Sink: Send + Sync {
    fn emit(&self, e: Event);
}

/// Drops every event (library callers that want no progress, tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Sink for Silent {
    fn emit(&self, _: Event) {}
}

impl dyn Sink + '_ {
    /// Emits [`Event::Step`].
    pub fn step(&self, phase: &str, message: impl Into<String>) {
        self.emit(Event::Step {
            phase: phase.to_string(),
            message: message.into(),
        });
    }

    /// Emits [`Event::Info`].
    pub fn info(&self, phase: &str, message: impl Into<String>) {
        self.emit(Event::Info {
            phase: phase.to_string(),
            message: message.into(),
        });
    }

    /// Emits [`Event::Waiting`].
    pub fn waiting(&self, message: impl Into<String>) {
        self.emit(Event::Waiting {
            message: message.into(),
        });
    }

    /// Emits [`Event::Advance`].
    pub fn advance(&self, phase: &str, unit: Unit, done: u64, total: Option<u64>) {
        self.emit(Event::Advance {
            phase: phase.to_string(),
            unit,
            done,
            total,
        });
    }
}
