//! Connections: parse a PostgreSQL URL, connect with TLS as libpq would, apply the session
//! settings that make text forms identical on both servers, and map driver errors to [`Error`]s
//! with messages that say what to do.
//!
//! Passwords never leave this module except to the server and, for child processes such as
//! pg_dump, through the `PGPASSWORD` environment variable (never on a command line).

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::Client;

use crate::error::{Cause, Connection, Error, Result};

mod errors;
pub mod libpq_files;
mod tls;
mod url;
pub mod watchdog;

pub use errors::{is_connection_error, query_error};
pub use url::{ConnSpec, SslMode, ALLOW_PLAINTEXT_ENV};

/// Settings every session of the tool uses, on both servers, so that the text form of every
/// value (COPY text format, `row::text` in checksums) is the same on both sides.
const SESSION_SETTINGS: &str = "SET application_name = 'heroku2rds'; \
     SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
     SET extra_float_digits = 3; SET bytea_output = 'hex'; SET client_encoding = 'UTF8'; \
     SET lc_monetary = 'C'; SET statement_timeout = 0; SET lock_timeout = '30s'; \
     SET idle_in_transaction_session_timeout = '15min'; SET standard_conforming_strings = on";

impl ConnSpec {
    /// Opens a session with the tool's settings applied. Over TCP, a watchdog closes the
    /// connection if it stalls (see [`watchdog`]).
    pub async fn connect(&self) -> Result<Client> {
        let (client, watched) = self.open().await?;
        if let Some((pid, activity)) = watched {
            tokio::spawn(watchdog::watch(self.clone(), pid, activity));
        }
        Ok(client)
    }

    /// [`ConnSpec::connect`] without a watchdog, for short checks bounded by their own timeout.
    pub(crate) async fn connect_unwatched(&self) -> Result<Client> {
        Ok(self.open().await?.0)
    }

    /// The connect timeout (`connect_timeout` in the URL, default 10 s): the longest wait for a
    /// TCP connection, then again for the handshake and the session's settings.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    fn pg_config(&self) -> tokio_postgres::Config {
        let mut cfg = tokio_postgres::Config::new();
        if self.host.starts_with('/') {
            cfg.host_path(&self.host);
        } else {
            cfg.host(&self.host);
        }
        if let Some(a) = self.hostaddr {
            cfg.hostaddr(a);
        }
        cfg.port(self.port)
            .user(&self.user)
            .dbname(&self.dbname)
            .application_name(&self.application_name)
            .connect_timeout(self.connect_timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if let Some(p) = &self.password {
            cfg.password(p.as_bytes());
        }
        cfg.ssl_mode(match self.sslmode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        cfg
    }

    /// The handshake or the session's set-up got no answer within connect_timeout. Transient:
    /// during a run it is a tunnel or proxy that stopped forwarding; a wrong port given at the
    /// start is reported at once all the same (replicate tries its first connections once).
    fn timed_out(&self, what: &str) -> Error {
        Error::other(format!(
            "{self}: no PostgreSQL {what} within {} s: what accepts connections there does not answer like a PostgreSQL server (another service on this port, or a tunnel or proxy on the way that stopped forwarding)",
            self.connect_timeout.as_secs()
        ))
        .with_fix("check the host and port in the URL (a PostgreSQL server usually listens on 5432; is this another service's port?) and the tunnel or VPN on the way; connect_timeout=N in the URL sets the wait")
        .with_cause(Cause::Connection(Connection::Lost))
        .transient()
    }

    /// A session with the settings applied and, over TCP, what the watchdog needs: the
    /// session's server process id and its socket's activity.
    #[allow(clippy::type_complexity)]
    async fn open(&self) -> Result<(Client, Option<(i32, std::sync::Weak<watchdog::Activity>)>)> {
        let cfg = self.pg_config();
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(self.tls_config()?);
        if self.host.starts_with('/') {
            // A Unix socket: nothing in between that could stall.
            let (client, connection) = tokio::time::timeout(self.connect_timeout, cfg.connect(tls))
                .await
                .map_err(|_| self.timed_out("handshake"))?
                .map_err(|e| self.connect_error(e))?;
            spawn_connection(connection);
            tokio::time::timeout(self.connect_timeout, session_setup(&client))
                .await
                .map_err(|_| self.timed_out("session set-up"))??;
            return Ok((client, None));
        }
        let tcp = self.tcp_connect().await?;
        let activity = Arc::new(watchdog::Activity::default());
        let stream = watchdog::Watched::new(tcp, activity.clone());
        let mut make = tls;
        let tls = tokio_postgres::tls::MakeTlsConnect::<
            watchdog::Watched<tokio::net::TcpStream>,
        >::make_tls_connect(&mut make, &self.host)
        .map_err(|e| Error::other("TLS setup failed").with_source(e))?;
        let tls = watchdog::WatchedTls::new(tls, activity.clone());
        // libpq's connect_timeout bounds the whole connection, handshake included: a server
        // (or tunnel) that accepts but never answers must not hang the tool.
        let handshake = async {
            let (client, connection) = cfg
                .connect_raw(stream, tls)
                .await
                .map_err(|e| self.connect_error(e))?;
            spawn_connection(connection);
            let pid = session_setup(&client).await?;
            activity.start_tracking();
            Ok::<_, Error>((client, pid))
        };
        let (client, pid) = match tokio::time::timeout(self.connect_timeout, handshake).await {
            Ok(r) => r?,
            Err(_) => {
                activity.kill();
                return Err(self.timed_out("handshake"));
            }
        };
        Ok((client, Some((pid, Arc::downgrade(&activity)))))
    }

    /// Connects over TCP to `hostaddr`, else to each address `host` resolves to, in turn, with
    /// keepalives (idle 30 s, then every 10 s, 3 probes).
    async fn tcp_connect(&self) -> Result<tokio::net::TcpStream> {
        let fail = |e: std::io::Error| {
            Error::other(format!("{self}: cannot connect: error connecting to server"))
                .with_cause(Cause::Connection(Connection::Lost))
                .with_source(e)
                .with_fix("check the host and port in the URL and that this machine can reach them (firewall, security group, VPN)")
                .transient()
        };
        let addrs: Vec<std::net::SocketAddr> = match self.hostaddr {
            Some(a) => vec![(a, self.port).into()],
            None => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(fail)?
                .collect(),
        };
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
            {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    let keepalive = socket2::TcpKeepalive::new()
                        .with_time(Duration::from_secs(30))
                        .with_interval(Duration::from_secs(10))
                        .with_retries(3);
                    let _ = socket2::SockRef::from(&s).set_tcp_keepalive(&keepalive);
                    return Ok(s);
                }
                Ok(Err(e)) => last = Some(fail(e)),
                Err(_) => {
                    last = Some(fail(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connection timed out",
                    )))
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            fail(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the host name resolves to no address",
            ))
        }))
    }
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("connection closed: {e}");
        }
    });
}

/// Applies the session settings; returns the server process id of the session.
async fn session_setup(client: &Client) -> Result<i32> {
    let messages = client
        .simple_query(&format!("{SESSION_SETTINGS}; SELECT pg_backend_pid()"))
        .await
        .map_err(|e| query_error(e, "setting up the session"))?;
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
            _ => None,
        })
        .ok_or_else(|| {
            Error::other("setting up the session: the server did not say its process id")
        })
}
/// Quotes an identifier the way PostgreSQL's `quote_ident` does, always.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Quotes a string literal.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("Order \"Lines\""), "\"Order \"\"Lines\"\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
