//! Connections: parse a PostgreSQL URL, connect with TLS as libpq would, apply the session
//! settings that make text forms identical on both servers, and map driver errors to [`Error`]s
//! with messages that say what to do.
//!
//! Passwords never leave this module except to the server and, for child processes such as
//! pg_dump, through the `PGPASSWORD` environment variable (never on a command line).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{Error, Kind, Result};

pub mod libpq_files;
pub mod watchdog;

/// Settings every session of the tool uses, on both servers, so that the text form of every
/// value (COPY text format, `row::text` in checksums) is the same on both sides.
const SESSION_SETTINGS: &str = "SET application_name = 'heroku2rds'; \
     SET TimeZone = 'UTC'; SET DateStyle = 'ISO, MDY'; SET IntervalStyle = 'postgres'; \
     SET extra_float_digits = 3; SET bytea_output = 'hex'; SET client_encoding = 'UTF8'; \
     SET lc_monetary = 'C'; SET statement_timeout = 0; SET lock_timeout = '30s'; \
     SET idle_in_transaction_session_timeout = '15min'; SET standard_conforming_strings = on";

/// How TLS is negotiated and verified, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, certificate not verified.
    Prefer,
    /// TLS required, certificate not verified.
    Require,
    /// TLS required, certificate chain verified against the root certificates.
    VerifyCa,
    /// TLS required, chain and host name verified.
    VerifyFull,
}

impl SslMode {
    /// Parses libpq's name of a mode.
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => {
                return Err(
                    Error::usage(format!("unknown sslmode `{other}` in the database URL"))
                        .with_fix("use one of disable, prefer, require, verify-ca, verify-full"),
                )
            }
        })
    }

    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// The environment variable that allows plaintext connections to other machines.
pub const ALLOW_PLAINTEXT_ENV: &str = "HEROKU2RDS_ALLOW_PLAINTEXT";

fn plaintext_allowed() -> bool {
    std::env::var(ALLOW_PLAINTEXT_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// True for a Unix socket, `localhost` or a loopback address: traffic that never leaves the
/// machine.
fn is_local(host: &str) -> bool {
    host.starts_with('/')
        || host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// A parsed database URL. `Debug` and `Display` never show the password.
#[derive(Clone)]
pub struct ConnSpec {
    host: String,
    /// Address to connect to instead of resolving `host` (libpq's `hostaddr`): a tunnel's local
    /// end. TLS still checks the certificate against `host`.
    hostaddr: Option<std::net::IpAddr>,
    port: u16,
    user: String,
    password: Option<String>,
    dbname: String,
    sslmode: SslMode,
    sslrootcert: Option<PathBuf>,
    connect_timeout: Duration,
    application_name: String,
}

impl fmt::Debug for ConnSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConnSpec({self})")
    }
}

impl fmt::Display for ConnSpec {
    /// `postgresql://user@host:port/db` with the password left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "postgresql://{}@{}:{}/{}",
            self.user, host, self.port, self.dbname
        )?;
        match self.hostaddr {
            Some(a) => write!(f, " (via {a})"),
            None => Ok(()),
        }
    }
}

fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    // form_urlencoded turns '+' into ' ', which URLs do not: protect it first.
    decode(&s.replace('+', "%2B"))
}

impl ConnSpec {
    /// Parses `postgres://user:password@host:port/dbname?sslmode=...&sslrootcert=...`.
    ///
    /// `what` names the URL in messages ("source", "target").
    pub fn parse(raw: &str, what: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::usage(format!(
                "the {what} URL is not a valid PostgreSQL URL: {why}"
            ))
            .with_fix(
                "write it as postgresql://USER:PASSWORD@HOST:5432/DBNAME?sslmode=require \
                 (percent-encode special characters in the password)",
            )
        };
        let raw = raw.trim();
        if !(raw.starts_with("postgres://") || raw.starts_with("postgresql://")) {
            return Err(bad("it must start with postgresql:// or postgres://"));
        }
        let url = url::Url::parse(raw).map_err(|e| bad(&e.to_string()))?;
        let mut host = url
            .host_str()
            .map(|h| h.trim_matches(|c| c == '[' || c == ']').to_string());
        let mut port = url.port();
        let mut user = percent_decode(url.username());
        let mut password = url.password().map(percent_decode);
        let mut dbname = percent_decode(url.path().trim_start_matches('/'));
        let mut sslmode = None;
        let mut sslrootcert = None;
        let mut hostaddr = None;
        let mut service = None;
        let mut connect_timeout = Duration::from_secs(10);
        for (k, v) in url.query_pairs() {
            match k.as_ref() {
                "sslmode" => sslmode = Some(SslMode::parse(&v)?),
                "sslrootcert" => sslrootcert = Some(PathBuf::from(v.as_ref())),
                "host" => host = Some(v.into_owned()),
                "hostaddr" => hostaddr = Some(v.parse::<std::net::IpAddr>().map_err(|_| {
                    bad("hostaddr must be a numeric IP address (the name goes in the host part)")
                })?),
                "connect_timeout" => {
                    let secs: u64 = v
                        .parse()
                        .map_err(|_| bad("connect_timeout must be a number of seconds"))?;
                    connect_timeout = Duration::from_secs(secs.max(1));
                }
                "service" => service = Some(v.into_owned()),
                "application_name" | "options" => {}
                other => return Err(bad(&format!("unsupported parameter `{other}`"))),
            }
        }
        // What the URL leaves out comes from its service, if it names one.
        if let Some(name) = &service {
            let s = libpq_files::lookup_service(name)?;
            let get = |k: &str| s.get(k).filter(|v| !v.is_empty()).cloned();
            host = host.filter(|h| !h.is_empty()).or_else(|| get("host"));
            if port.is_none() {
                port = get("port")
                    .map(|p| p.parse::<u16>())
                    .transpose()
                    .map_err(|_| {
                        bad(&format!("service {name:?} has a port that is not a number"))
                    })?;
            }
            if user.is_empty() {
                user = get("user").unwrap_or_default();
            }
            if dbname.is_empty() {
                dbname = get("dbname").unwrap_or_default();
            }
            password = password.or_else(|| get("password"));
            if sslmode.is_none() {
                sslmode = get("sslmode").map(|m| SslMode::parse(&m)).transpose()?;
            }
            sslrootcert = sslrootcert.or_else(|| get("sslrootcert").map(PathBuf::from));
        }
        let port = port.unwrap_or(5432);
        let host = host
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("it names no host"))?;
        if user.is_empty() {
            return Err(bad("it names no user"));
        }
        if dbname.is_empty() {
            return Err(bad("it names no database"));
        }
        // No password in the URL: the password file, as libpq would.
        let password = password.or_else(|| libpq_files::lookup_pgpass(&host, port, &dbname, &user));
        let local = is_local(&host) || hostaddr.is_some_and(|a| a.is_loopback());
        let sslmode = match sslmode.unwrap_or(SslMode::Prefer) {
            // Never fall back to plaintext across a network: "prefer" means TLS there.
            SslMode::Prefer if !local => SslMode::Require,
            SslMode::Disable if !local && !plaintext_allowed() => {
                return Err(Error::usage(format!(
                    "the {what} URL asks for a plaintext connection (sslmode=disable) to {host}, \
                     which is not on this machine"
                ))
                .with_fix(format!(
                    "use sslmode=require or stronger (verify-full with sslrootcert checks the server); \
                     if the network path is private, set {ALLOW_PLAINTEXT_ENV}=1"
                )))
            }
            m => m,
        };
        Ok(ConnSpec {
            host,
            hostaddr,
            port,
            user,
            password,
            dbname,
            sslmode,
            sslrootcert,
            connect_timeout,
            application_name: "heroku2rds".into(),
        })
    }

    /// The same database, with sessions named `application_name` (shown in pg_stat_activity).
    pub fn with_application_name(mut self, name: &str) -> Self {
        self.application_name = name.to_string();
        self
    }

    /// The same database reached through `addr` (`HOST:PORT`, e.g. the local end of an SSH
    /// tunnel): connections go to that address while TLS still verifies the certificate against
    /// the URL's host name, as libpq's `hostaddr`.
    pub fn via(mut self, addr: &str) -> Result<Self> {
        use std::net::ToSocketAddrs;
        let bad = || {
            Error::usage(format!("--target-connect {addr:?} is not HOST:PORT"))
                .with_fix("give the local end of the tunnel, e.g. --target-connect 127.0.0.1:15432")
        };
        let (h, p) = addr.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = p.parse().map_err(|_| bad())?;
        let h = h.trim_matches(|c| c == '[' || c == ']');
        if h.is_empty() || port == 0 {
            return Err(bad());
        }
        let ip = (h, port)
            .to_socket_addrs()
            .map_err(|e| {
                Error::usage(format!("--target-connect: cannot resolve {h}: {e}"))
                    .with_fix("give an IP address or a name this machine resolves")
            })?
            .next()
            .ok_or_else(bad)?
            .ip();
        self.hostaddr = Some(ip);
        self.port = port;
        Ok(self)
    }

    /// The URL with its password and TLS settings, for handing to another process (a worker's
    /// job, an app's DATABASE_URL). A secret: never log it.
    pub fn to_secret_url(&self) -> String {
        let enc = |s: &str| {
            url::form_urlencoded::byte_serialize(s.as_bytes())
                .collect::<String>()
                .replace('+', "%20")
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut u = format!("postgresql://{}", enc(&self.user));
        if let Some(p) = &self.password {
            u.push(':');
            u.push_str(&enc(p));
        }
        u.push_str(&format!(
            "@{host}:{}/{}?sslmode={}",
            self.port,
            enc(&self.dbname),
            self.sslmode.as_str()
        ));
        if let Some(root) = &self.sslrootcert {
            u.push_str(&format!("&sslrootcert={}", enc(&root.to_string_lossy())));
        }
        if let Some(a) = self.hostaddr {
            u.push_str(&format!("&hostaddr={a}"));
        }
        u
    }

    /// Host name or address.
    pub fn host(&self) -> &str {
        &self.host
    }
    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Role name.
    pub fn user(&self) -> &str {
        &self.user
    }
    /// Database name.
    pub fn dbname(&self) -> &str {
        &self.dbname
    }
    /// TLS mode.
    pub fn sslmode(&self) -> SslMode {
        self.sslmode
    }

    /// A libpq connection string for child processes (pg_dump), without the password: pass
    /// [`ConnSpec::child_env`] to the child as well.
    pub fn libpq_conninfo(&self) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut s = format!(
            "host={} port={} user={} dbname={} sslmode={} application_name=heroku2rds connect_timeout={}",
            q(&self.host),
            self.port,
            q(&self.user),
            q(&self.dbname),
            self.sslmode.as_str(),
            self.connect_timeout.as_secs()
        );
        if let Some(root) = &self.sslrootcert {
            s.push_str(&format!(" sslrootcert={}", q(&root.to_string_lossy())));
        }
        if let Some(a) = self.hostaddr {
            s.push_str(&format!(" hostaddr={a}"));
        }
        s
    }

    /// Environment for child processes: the password travels here, never in argv.
    pub fn child_env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PGAPPNAME", "heroku2rds".to_string()),
            ("PGCONNECT_TIMEOUT", "10".into()),
        ];
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD", p.clone()));
        }
        env
    }

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
        .map_err(|e| Error::other(format!("TLS setup failed: {e}")))?;
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
        let fail = |e: &dyn fmt::Display| {
            Error::other(format!("{self}: cannot connect: error connecting to server: {e}"))
                .with_fix("check the host and port in the URL and that this machine can reach them (firewall, security group, VPN)")
                .transient()
        };
        let addrs: Vec<std::net::SocketAddr> = match self.hostaddr {
            Some(a) => vec![(a, self.port).into()],
            None => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|e| fail(&e))?
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
                Ok(Err(e)) => last = Some(fail(&e)),
                Err(_) => last = Some(fail(&"connection timed out")),
            }
        }
        Err(last.unwrap_or_else(|| fail(&"the host name resolves to no address")))
    }

    fn tls_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::other(format!("TLS setup failed: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match self.sslmode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => Arc::new(NoVerify(provider)),
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let roots = Arc::new(self.root_store()?);
                let webpki =
                    rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider)
                        .build()
                        .map_err(|e| Error::other(format!("TLS setup failed: {e}")))?;
                Arc::new(ChainVerifier {
                    inner: webpki,
                    check_name: self.sslmode == SslMode::VerifyFull,
                })
            }
        };
        Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    }

    fn root_store(&self) -> Result<RootCertStore> {
        let mut store = RootCertStore::empty();
        let path = match &self.sslrootcert {
            Some(p) if p.as_os_str() == "system" => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = store.add(cert);
                }
                return Ok(store);
            }
            Some(p) => p.clone(),
            None => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(".postgresql/root.crt"),
                None => PathBuf::new(),
            },
        };
        let pem = std::fs::read(&path).map_err(|e| {
            Error::usage(format!(
                "sslmode={} needs root certificates, but {} cannot be read: {e}",
                self.sslmode.as_str(),
                path.display()
            ))
            .with_fix("add sslrootcert=/path/to/ca.pem to the URL (for RDS: the RDS CA bundle)")
        })?;
        for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
            let cert = cert
                .map_err(|e| Error::usage(format!("{} is not a PEM file: {e}", path.display())))?;
            store
                .add(cert)
                .map_err(|e| Error::usage(format!("bad certificate in {}: {e}", path.display())))?;
        }
        if store.is_empty() {
            return Err(Error::usage(format!(
                "{} holds no certificate",
                path.display()
            )));
        }
        Ok(store)
    }

    fn connect_error(&self, e: tokio_postgres::Error) -> Error {
        let chain = error_chain(&e);
        if self.password.is_none() && chain.contains("password missing") {
            return Error::usage(format!(
                "{self}: the server asks for a password and none was given"
            ))
            .with_fix("put it in the URL (in the environment variable, not an argument), in the password file (~/.pgpass or PGPASSFILE, mode 0600) or in a pg service file");
        }
        if let Some(db) = e.as_db_error() {
            let msg = db.message();
            let code = db.code();
            return if *code == SqlState::INVALID_PASSWORD {
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
            return Error::new(Kind::Refused, format!("{self}: TLS failed: {chain}")).with_fix(
                "check sslmode and sslrootcert in the URL: verify-full needs the CA that signed the server's certificate and a host name that certificate names",
            );
        }
        Error::other(format!("{self}: cannot connect: {chain}"))
            .with_fix("check the host and port in the URL and that this machine can reach them (firewall, security group, VPN)")
            .transient()
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
        Some(db) => {
            let code = db.code();
            let msg = format!("{doing}: {} (SQLSTATE {})", db.message(), code.code());
            if *code == SqlState::INSUFFICIENT_PRIVILEGE {
                Error::new(Kind::Refused, msg).with_fix("connect as a role with the needed privilege (the owner of the tables on the source; the master user on the target)")
            } else if *code == SqlState::DISK_FULL {
                Error::other(format!("{msg}: the database server's disk is full")).with_fix("give it more storage (on RDS: raise the instance's allocated storage), then re-run: work resumes where it stopped, and nothing half-done was recorded")
            } else if *code == SqlState::OUT_OF_MEMORY {
                Error::other(msg).with_fix("the server ran out of memory: lower --jobs or give it more memory, then re-run (work resumes where it stopped)")
            } else {
                Error::other(msg)
            }
        }
        None => Error::other(format!("{doing}: {}", error_chain(&e))).with_fix(
            "the connection failed; re-run the command: completed work is kept and resumes",
        ),
    }
}

/// True when the error is a lost connection (safe to retry an idempotent unit of work).
pub fn is_connection_error(e: &tokio_postgres::Error) -> bool {
    e.is_closed()
        || e.as_db_error().is_none()
        || e.code().is_some_and(|c| {
            c.code().starts_with("08")
                || *c == SqlState::ADMIN_SHUTDOWN
                || *c == SqlState::CRASH_SHUTDOWN
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

/// Accepts any certificate (sslmode=require/prefer, as libpq) but still checks the handshake
/// signatures.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Verifies the chain; the host name only for verify-full.
#[derive(Debug)]
struct ChainVerifier {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_hides_the_password() {
        let s = ConnSpec::parse(
            "postgres://app:s3cr%40t@db.example.com:6543/prod?sslmode=verify-full",
            "source",
        )
        .expect("valid");
        assert_eq!(s.host(), "db.example.com");
        assert_eq!(s.port(), 6543);
        assert_eq!(s.user(), "app");
        assert_eq!(s.password.as_deref(), Some("s3cr@t"));
        assert_eq!(s.sslmode(), SslMode::VerifyFull);
        let shown = format!("{s} {s:?} {}", s.libpq_conninfo());
        assert!(!shown.contains("s3cr"), "{shown}");
        assert!(s
            .child_env()
            .iter()
            .any(|(k, v)| *k == "PGPASSWORD" && v == "s3cr@t"));
    }

    #[test]
    fn rejects_bad_urls_with_usage_errors() {
        for bad in [
            "mysql://u:p@h/db",
            "postgres://u:p@h:99999/db",
            "postgres://u:p@/db",
            "postgres://h/db",
            "postgres://u:p@h/",
            "postgres://u:p@h/db?sslmode=maybe",
            "postgres://u:p@h/db?frobnicate=1",
        ] {
            let e = ConnSpec::parse(bad, "source").expect_err(bad);
            assert_eq!(e.kind(), Kind::Usage, "{bad}");
            assert!(!e.to_string().contains(":p@"), "{e}");
        }
    }

    #[test]
    fn tunnels_keep_the_tls_name_and_urls_round_trip() {
        let s = ConnSpec::parse(
            "postgres://app:p%40ss%20w%2Bx@db.example.com:5432/app?sslmode=verify-full&sslrootcert=/tmp/ca.pem",
            "target",
        )
        .expect("valid")
        .via("127.0.0.1:15432")
        .expect("an address");
        assert_eq!((s.host(), s.port()), ("db.example.com", 15432));
        assert!(s.libpq_conninfo().contains("hostaddr=127.0.0.1"));
        assert!(!s.libpq_conninfo().contains("p@ss"));
        assert!(s.to_string().ends_with("(via 127.0.0.1)"), "{s}");
        let back = ConnSpec::parse(&s.to_secret_url(), "target").expect("its own URL parses");
        assert_eq!(back.password.as_deref(), Some("p@ss w+x"));
        assert_eq!(back.to_secret_url(), s.to_secret_url());
        assert_eq!(back.sslrootcert, s.sslrootcert);
        let plain = ConnSpec::parse("postgres://a@h/d", "target").expect("valid");
        for bad in ["nocolon", "h:0", ":5432", "h:port"] {
            let e = plain.clone().via(bad).expect_err(bad);
            assert_eq!(e.kind(), Kind::Usage, "{bad}");
        }
    }

    #[test]
    fn tls_is_required_across_a_network() {
        let remote = ConnSpec::parse("postgres://u:p@db.example.com/d", "source").expect("valid");
        assert_eq!(remote.sslmode(), SslMode::Require, "prefer becomes require");
        let local = ConnSpec::parse("postgres://u:p@127.0.0.1/d", "source").expect("valid");
        assert_eq!(local.sslmode(), SslMode::Prefer);
        let tunnel = ConnSpec::parse(
            "postgres://u:p@db.example.com/d?hostaddr=127.0.0.1&sslmode=disable",
            "t",
        )
        .expect("a loopback address may be plaintext");
        assert_eq!(tunnel.sslmode(), SslMode::Disable);
        if !plaintext_allowed() {
            let e = ConnSpec::parse("postgres://u:p@db.example.com/d?sslmode=disable", "source")
                .expect_err("plaintext across a network");
            assert_eq!(e.kind(), Kind::Usage);
            assert!(e.to_string().contains("plaintext"), "{e}");
            assert!(e.fix().is_some_and(|f| f.contains(ALLOW_PLAINTEXT_ENV)));
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("Order \"Lines\""), "\"Order \"\"Lines\"\"\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
