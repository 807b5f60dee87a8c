//! Error types with user-facing messages and exit codes.
//!
//! Every error carries a [`Kind`] (which decides the process exit code), a message that says what
//! went wrong, an optional fix that says what to do next, a typed [`Cause`] recorded where the
//! underlying error was first mapped (decisions match on it, never on message text), and an
//! optional source for the cause chain. Errors never contain passwords or row data.

use std::fmt;

use tokio_postgres::error::SqlState;

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

/// What the underlying failure was, in terms code can match on. Set once, where a driver, HTTP
/// or SDK error is first mapped; callers decide on it instead of reading messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Cause {
    /// Nothing more specific than the kind (the tool's own checks, local failures).
    #[default]
    None,
    /// The database server answered with this SQLSTATE.
    Sql(SqlState),
    /// The database connection failed without an answer from the server.
    Connection(Connection),
    /// An HTTP API answered with an error status; `id` is Heroku's error id (`not_found`,
    /// `rate_limit`, ...), when it gave or implied one.
    Http {
        /// The HTTP status code.
        status: u16,
        /// The API's machine-readable error id.
        id: Option<String>,
    },
    /// AWS answered with this error code.
    Aws {
        /// The AWS error code (`AccessDenied`, `Throttling`, ...).
        code: String,
    },
    /// No usable AWS credentials were found (nothing was sent).
    AwsCredentials,
    /// AWS could not be reached or did not answer in time.
    AwsUnreachable,
    /// A local I/O failure.
    Io(std::io::ErrorKind),
    /// A cutover run found an interrupted attempt, rolled it back and switched nothing: running
    /// again starts a fresh cutover.
    CutoverRolledBack,
    /// The app was switched to the target: following the old database must stop for good.
    Switched,
}

/// How a database connection failed when the server gave no SQLSTATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connection {
    /// The server asks for a password and none was given.
    PasswordMissing,
    /// The TLS handshake or certificate verification failed.
    Tls,
    /// The server could not be reached, or the connection was lost.
    Lost,
}

impl Cause {
    /// The SQLSTATE, when the database server answered with one.
    pub fn sql_state(&self) -> Option<&SqlState> {
        match self {
            Cause::Sql(s) => Some(s),
            _ => None,
        }
    }

    /// True for SQL failures that a fresh attempt of the same transaction can get past:
    /// serialization failures, deadlocks, statement cancellations (timeouts), lost connections
    /// (class 08) and server shutdowns.
    pub fn is_retryable_sql(&self) -> bool {
        match self {
            Cause::Sql(s) => {
                *s == SqlState::T_R_SERIALIZATION_FAILURE
                    || *s == SqlState::T_R_DEADLOCK_DETECTED
                    || *s == SqlState::QUERY_CANCELED
                    || *s == SqlState::ADMIN_SHUTDOWN
                    || *s == SqlState::CRASH_SHUTDOWN
                    || *s == SqlState::CANNOT_CONNECT_NOW
                    || s.code().starts_with("08")
            }
            Cause::Connection(Connection::Lost) => true,
            _ => false,
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
    cause: Cause,
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
            cause: Cause::None,
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
    pub fn with_source(self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.with_boxed_source(Box::new(source))
    }

    /// Adds the underlying cause, already boxed.
    pub fn with_boxed_source(
        mut self,
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    ) -> Self {
        self.source = Some(source);
        self
    }

    /// Records what the underlying failure was (see [`Cause`]).
    pub fn with_cause(mut self, cause: Cause) -> Self {
        self.cause = cause;
        self
    }

    /// What the underlying failure was.
    pub fn cause(&self) -> &Cause {
        &self.cause
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

/// `{}` shows the message; `{:#}` adds the causes, `message: cause: cause` (a cause whose text
/// is already shown is skipped).
impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !f.alternate() {
            return f.write_str(&self.message);
        }
        let mut shown = self.message.clone();
        let mut cur = std::error::Error::source(self);
        while let Some(c) = cur {
            let text = c.to_string();
            if !shown.contains(&text) {
                shown.push_str(": ");
                shown.push_str(&text);
            }
            cur = c.source();
        }
        f.write_str(&shown)
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
        Error::other("I/O error")
            .with_cause(Cause::Io(e.kind()))
            .with_source(e)
    }
}

/// Renders an error with its causes, `a: b: c`.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_keep_their_kind_and_source() {
        let e: Error = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file").into();
        assert_eq!(e.kind(), Kind::Other);
        assert_eq!(e.cause(), &Cause::Io(std::io::ErrorKind::NotFound));
        assert_eq!(e.to_string(), "I/O error");
        assert_eq!(format!("{e:#}"), "I/O error: no such file");
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn alternate_display_shows_each_cause_once() {
        let inner = Error::other("reading t")
            .with_source(std::io::Error::other("connection reset"))
            .with_cause(Cause::Connection(Connection::Lost));
        let outer = Error::other("copying")
            .with_source(inner)
            .context("replicate");
        assert_eq!(outer.to_string(), "replicate: copying");
        assert_eq!(
            format!("{outer:#}"),
            "replicate: copying: reading t: connection reset"
        );
        // A cause whose text the message already shows is not repeated.
        let e = Error::other("TLS failed: bad certificate")
            .with_source(std::io::Error::other("bad certificate"));
        assert_eq!(format!("{e:#}"), "TLS failed: bad certificate");
    }

    #[test]
    fn causes_say_what_a_retry_can_fix() {
        let table = [
            (Cause::Sql(SqlState::T_R_SERIALIZATION_FAILURE), true),
            (Cause::Sql(SqlState::T_R_DEADLOCK_DETECTED), true),
            (Cause::Sql(SqlState::QUERY_CANCELED), true),
            (Cause::Sql(SqlState::CONNECTION_FAILURE), true),
            (
                Cause::Sql(SqlState::SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION),
                true,
            ),
            (Cause::Sql(SqlState::ADMIN_SHUTDOWN), true),
            (Cause::Sql(SqlState::CANNOT_CONNECT_NOW), true),
            (Cause::Sql(SqlState::INSUFFICIENT_PRIVILEGE), false),
            (Cause::Sql(SqlState::UNIQUE_VIOLATION), false),
            (Cause::Sql(SqlState::DISK_FULL), false),
            (Cause::Connection(Connection::Lost), true),
            (Cause::Connection(Connection::Tls), false),
            (Cause::Connection(Connection::PasswordMissing), false),
            (Cause::Io(std::io::ErrorKind::NotFound), false),
            (Cause::CutoverRolledBack, false),
            (Cause::None, false),
        ];
        for (cause, want) in table {
            assert_eq!(cause.is_retryable_sql(), want, "{cause:?}");
        }
    }
}
