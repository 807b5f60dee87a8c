//! Database URLs as libpq reads them: `postgres://` URLs, `sslmode`, service files and the
//! password file, a tunnel's address (`via`), and the forms handed to child processes. `Debug`
//! and `Display` never show the password.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::libpq_files;
use crate::error::{Error, Result};

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
    pub(super) host: String,
    /// Address to connect to instead of resolving `host` (libpq's `hostaddr`): a tunnel's local
    /// end. TLS still checks the certificate against `host`.
    pub(super) hostaddr: Option<std::net::IpAddr>,
    pub(super) port: u16,
    pub(super) user: String,
    pub(super) password: Option<String>,
    pub(super) dbname: String,
    pub(super) sslmode: SslMode,
    pub(super) sslrootcert: Option<PathBuf>,
    pub(super) connect_timeout: Duration,
    pub(super) application_name: String,
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
                Error::usage(format!("--target-connect: cannot resolve {h}"))
                    .with_source(e)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Kind;

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
}
