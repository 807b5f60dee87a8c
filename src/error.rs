//! Error types with user-facing messages and exit codes.
//!
//! Every error carries a [`Kind`] (which decides the process exit code), a message that says what
//! went wrong, an optional fix that says what to do next, and an optional source for the cause
//! chain. Errors never contain passwords or row data.

use std::fmt;

/// What kind of failure this is; decides the exit code (see DESIGN.md, "Command contract").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Verification found differences (exit 1).
    Differences,
    /// Bad usage or configuration: malformed URL, missing database, conflicting flags (exit 2).
    Usage,
    /// Preflight found blocking problems (exit 3).
    Blocked,
    /// An external service refused: authentication, permission, quota (exit 4).
    Refused,
    /// Anything else: unreachable hosts, I/O, unexpected server errors (exit 5).
    Other,
}

impl Kind {
    /// The process exit code of this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            Kind::Differences => 1,
            Kind::Usage => 2,
            Kind::Blocked => 3,
            Kind::Refused => 4,
            Kind::Other => 5,
        }
    }
}

/// A heroku2rds error.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    message: String,
    fix: Option<String>,
    transient: bool,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            fix: None,
            transient: false,
            source: None,
        }
    }

    /// A usage / configuration error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Kind::Usage, message)
    }

    /// A generic failure (exit 5).
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(Kind::Other, message)
    }

    /// Adds what the user should do about it.
    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }

    /// Adds the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Marks the error as a lost connection or server restart: safe to retry idempotent work
    /// after reconnecting.
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// True for lost connections and server restarts.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// The kind of this error.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The one-line message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What to do about it, when known.
    pub fn fix(&self) -> Option<&str> {
        self.fix.as_deref()
    }

    /// Prefixes the message with context (e.g. which step failed).
    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::other(format!("I/O error: {e}"))
    }
}

/// Adds context to results in one call.
pub trait ResultExt<T> {
    /// Prefixes the error message with `what`.
    fn context(self, what: impl fmt::Display) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.context(what))
    }
}
