//! Driver errors mapped to [`Error`]s that say what the tool was doing and what to do next.
//! Only the server's primary message is kept: DETAIL lines can hold row values, so a driver error
//! that carries a server answer is never attached as a source (its `Display` shows DETAIL); the
//! SQLSTATE is recorded as the [`Cause`] instead. Where the driver gives no typed information
//! (a missing password, a TLS failure), its text is read here, once, and the result recorded as a
//! typed cause so nothing downstream reads text.

use tokio_postgres::error::SqlState;

use super::ConnSpec;
use crate::error::{error_chain, Cause, Connection, Error, Kind};

impl ConnSpec {
    pub(super) fn connect_error(&self, e: tokio_postgres::Error) -> Error {
        let chain = error_chain(&e);
        if self.password.is_none() && chain.contains("password missing") {
            return Error::usage(format!(
                "{self}: the server asks for a password and none was given"
            ))
            .with_cause(Cause::Connection(Connection::PasswordMissing))
            .with_fix("put it in the URL (in the environment variable, not an argument), in the password file (~/.pgpass or PGPASSFILE, mode 0600) or in a pg service file");
        }
        if let Some(db) = e.as_db_error() {
            let msg = db.message();
            let code = db.code();
            let mapped = if *code == SqlState::INVALID_PASSWORD {
                Error::new(Kind::Refused, format!("{self}: password authentication failed for user \"{}\"", self.user))
                    .with_fix("check the password in the URL (Heroku rotates credentials: `heroku config:get DATABASE_URL -a APP` shows the current one; the RDS master password is in Secrets Manager, secret heroku2rds/NAME/rds-master)")
            } else if *code == SqlState::INVALID_CATALOG_NAME {
                Error::usage(format!(
                    "{self}: database \"{}\" does not exist",
                    self.dbname
                ))
                .with_fix("check the database name at the end of the URL")
            } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
                let fix = if msg.contains("no encryption") || msg.contains("SSL off") {
                    "the server requires TLS: add ?sslmode=require (or verify-full) to the URL"
                } else {
                    "check the user name, and that the server allows this user from this address"
                };
                Error::new(
                    Kind::Refused,
                    format!("{self}: the server refused the connection: {msg}"),
                )
                .with_fix(fix)
            } else if *code == SqlState::CANNOT_CONNECT_NOW {
                Error::other(format!(
                    "{self}: the server is starting up or shutting down: {msg}"
                ))
                .transient()
            } else if *code == SqlState::TOO_MANY_CONNECTIONS {
                Error::other(format!("{self}: no free connection slots: {msg}"))
                    .with_fix("lower --jobs, or stop other clients of this database")
            } else {
                Error::other(format!("{self}: cannot connect: {msg}"))
            };
            return mapped.with_cause(Cause::Sql(code.clone()));
        }
        let lower = chain.to_lowercase();
        // A server that goes away during the handshake (restart, failover) is not a TLS
        // configuration problem: retryable, like any lost connection.
        let dropped = ["eof", "reset", "closed", "broken pipe", "refused"]
            .iter()
            .any(|w| lower.contains(w));
        if !dropped
            && (lower.contains("certificate") || lower.contains("tls") || lower.contains("ssl"))
        {
            return Error::new(Kind::Refused, format!("{self}: TLS failed"))
                .with_cause(Cause::Connection(Connection::Tls))
                .with_source(e)
                .with_fix(
                "check sslmode and sslrootcert in the URL: verify-full needs the CA that signed the server's certificate and a host name that certificate names",
            );
        }
        Error::other(format!("{self}: cannot connect"))
            .with_cause(Cause::Connection(Connection::Lost))
            .with_source(e)
            .with_fix("check the host and port in the URL and that this machine can reach them (firewall, security group, VPN)")
            .transient()
    }
}

/// Maps an error from a query to an [`Error`], saying what the tool was doing. Only the server's
/// primary message is kept: DETAIL lines can hold row values.
pub fn query_error(e: tokio_postgres::Error, doing: &str) -> Error {
    let transient = is_connection_error(&e);
    let err = query_error_inner(e, doing);
    if transient {
        err.transient()
    } else {
        err
    }
}

fn query_error_inner(e: tokio_postgres::Error, doing: &str) -> Error {
    match e.as_db_error() {
        // Not `with_source(e)`: the driver error would show the DETAIL line.
        Some(db) => server_error(db.code(), db.message(), doing),
        // No server answer: the driver does not tell a lost connection from a local decoding
        // failure (see `is_connection_error`), so neither does the cause.
        None => Error::other(doing)
            .with_cause(Cause::Connection(Connection::Lost))
            .with_source(e)
            .with_fix(
                "the connection failed; re-run the command: completed work is kept and resumes",
            ),
    }
}

/// Maps a server's answer to a query: its SQLSTATE becomes the cause, and only its primary
/// message is shown.
fn server_error(code: &SqlState, message: &str, doing: &str) -> Error {
    let msg = format!("{doing}: {message} (SQLSTATE {})", code.code());
    let mapped = if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        Error::new(Kind::Refused, msg).with_fix("connect as a role with the needed privilege (the owner of the tables on the source; the master user on the target)")
    } else if *code == SqlState::DISK_FULL {
        Error::other(format!("{msg}: the database server's disk is full")).with_fix("give it more storage (on RDS: raise the instance's allocated storage), then re-run: work resumes where it stopped, and nothing half-done was recorded")
    } else if *code == SqlState::OUT_OF_MEMORY {
        Error::other(msg).with_fix("the server ran out of memory: lower --jobs or give it more memory, then re-run (work resumes where it stopped)")
    } else {
        Error::other(msg)
    };
    mapped.with_cause(Cause::Sql(code.clone()))
}

/// True when the error is a lost connection (safe to retry an idempotent unit of work).
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    e.is_closed() || e.as_db_error().is_none() || e.code().is_some_and(is_connection_state)
}

/// True for the SQLSTATEs of a lost connection or a server going down (class 08, 57P01,
/// 57P02).
fn is_connection_state(c: &SqlState) -> bool {
    c.code().starts_with("08") || *c == SqlState::ADMIN_SHUTDOWN || *c == SqlState::CRASH_SHUTDOWN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_answers_map_to_a_typed_cause() {
        // (state, kind, a lost connection, retryable in a fresh transaction, fix mentions)
        let table: &[(SqlState, Kind, bool, bool, Option<&str>)] = &[
            (
                SqlState::INSUFFICIENT_PRIVILEGE,
                Kind::Refused,
                false,
                false,
                Some("privilege"),
            ),
            (
                SqlState::DISK_FULL,
                Kind::Other,
                false,
                false,
                Some("more storage"),
            ),
            (
                SqlState::OUT_OF_MEMORY,
                Kind::Other,
                false,
                false,
                Some("--jobs"),
            ),
            (
                SqlState::T_R_SERIALIZATION_FAILURE,
                Kind::Other,
                false,
                true,
                None,
            ),
            (
                SqlState::T_R_DEADLOCK_DETECTED,
                Kind::Other,
                false,
                true,
                None,
            ),
            (SqlState::QUERY_CANCELED, Kind::Other, false, true, None),
            (SqlState::CONNECTION_FAILURE, Kind::Other, true, true, None),
            (
                SqlState::CONNECTION_EXCEPTION,
                Kind::Other,
                true,
                true,
                None,
            ),
            (SqlState::ADMIN_SHUTDOWN, Kind::Other, true, true, None),
            (SqlState::CRASH_SHUTDOWN, Kind::Other, true, true, None),
            (SqlState::UNIQUE_VIOLATION, Kind::Other, false, false, None),
            (SqlState::UNDEFINED_TABLE, Kind::Other, false, false, None),
            (
                SqlState::from_code("XX999"),
                Kind::Other,
                false,
                false,
                None,
            ),
        ];
        for (state, kind, lost, retryable, fix) in table {
            let e = server_error(state, "the server's words", "copying t");
            assert_eq!(e.kind(), *kind, "{state:?}");
            assert_eq!(e.cause(), &Cause::Sql(state.clone()), "{state:?}");
            assert_eq!(e.cause().sql_state(), Some(state));
            assert_eq!(is_connection_state(state), *lost, "{state:?}");
            assert_eq!(e.cause().is_retryable_sql(), *retryable, "{state:?}");
            if let Some(fix) = fix {
                assert!(
                    e.fix().unwrap_or("").contains(fix),
                    "{state:?}: {:?}",
                    e.fix()
                );
            }
            // Only the primary message, and no source that could show a DETAIL line.
            assert!(e
                .message()
                .starts_with("copying t: the server's words (SQLSTATE "));
            assert!(std::error::Error::source(&e).is_none());
        }
    }
}
