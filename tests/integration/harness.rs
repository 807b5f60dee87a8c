//! Throwaway PostgreSQL clusters for the tests: a "Heroku" source whose tables belong to a
//! non-superuser owner role, and an "RDS" target whose master user is not a superuser either.
//! Both serve TLS only, with certificates from a CA the harness makes. One pair of clusters per
//! test process, one pair of databases per test. A watchdog process stops the clusters and removes
//! their files when the test process ends, however it ends.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use heroku2rds::pg::conn::ConnSpec;
use tokio_postgres::Client;

/// The owner role of the source databases (like Heroku's default credential).
pub const SOURCE_OWNER: &str = "app_owner";
/// A role that can read the source but owns nothing.
pub const INTRUDER: &str = "intruder";
/// The target's master user (like RDS's, not a superuser).
pub const TARGET_MASTER: &str = "rds_master";

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL server binary, as the `postgres` user when we are root.
fn pg_command(bin: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

fn check(out: std::io::Result<Output>, what: &str) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The directory of the PostgreSQL server binaries: $PG_BIN, else the newest under Debian's layout.
pub fn pg_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PG_BIN") {
        return PathBuf::from(p);
    }
    let mut versions: Vec<u32> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_unstable();
    let v = versions
        .pop()
        .expect("no PostgreSQL server found: install postgresql (or set PG_BIN)");
    PathBuf::from(format!("/usr/lib/postgresql/{v}/bin"))
}

/// The per-process scratch root, with the CA and the clusters under it.
pub struct Root {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub wrong_ca: PathBuf,
    pub password: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn root() -> &'static Root {
    static ROOT: OnceLock<Root> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("heroku2rds-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let password = format!("pw-{}-{}", std::process::id(), std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
        // The watchdog: stops every cluster and removes the scratch root when this process ends.
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 1; done; \
             for d in {root}/*/data; do [ -f \"$d/postmaster.pid\" ] && {runas} {bin}/pg_ctl -D \"$d\" stop -m immediate >/dev/null 2>&1; done; \
             rm -rf {root}",
            pid = std::process::id(),
            root = dir.display(),
            runas = if is_root() { "runuser -u postgres --" } else { "" },
            bin = pg_bin().display()
        );
        let mut watchdog = Command::new("setsid");
        watchdog.args(["sh", "-c", &script]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // Deliberately not waited for: it must outlive this process to clean up after it.
        #[allow(clippy::zombie_processes)]
        let _watchdog = watchdog.spawn().expect("start the cleanup watchdog");

        let ca = make_ca(&dir.join("ca"), "heroku2rds test CA");
        let wrong_ca = make_ca(&dir.join("wrong-ca"), "some other CA");
        if is_root() {
            check(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&dir).output(), "chown scratch dir");
        }
        Root { dir, ca, wrong_ca, password }
    })
}

fn openssl(args: &[&str], dir: &Path) {
    check(
        Command::new("openssl").args(args).current_dir(dir).output(),
        &format!("openssl {}", args[0]),
    );
}

fn make_ca(dir: &Path, cn: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("ca dir");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "3",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
        dir,
    );
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1,DNS:*.aaaaaaaaaa.us-east-2.rds.amazonaws.com,DNS:*.aaaaaaaaaa.us-east-1.rds.amazonaws.com\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n").expect("ext");
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "3",
            "-extfile",
            "ext.cnf",
        ],
        dir,
    );
    dir.join("ca.pem")
}

/// A running cluster.
pub struct Cluster {
    pub name: String,
    pub port: u16,
    pub dir: PathBuf,
}

impl Cluster {
    fn start(name: String) -> Cluster {
        let root = root();
        let dir = root.dir.join(&name);
        std::fs::create_dir_all(&dir).expect("cluster dir");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, &root.password).expect("pwfile");
        if is_root() {
            check(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir)
                    .output(),
                "chown",
            );
        }
        let data = dir.join("data");
        check(
            pg_command(&pg_bin().join("initdb"))
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ])
                .arg(format!("--pwfile={}", pwfile.display()))
                .output(),
            "initdb",
        );
        let port = free_port();
        let ca_dir = root.dir.join("ca");
        for f in ["server.crt", "server.key"] {
            std::fs::copy(ca_dir.join(f), data.join(f)).expect("copy cert");
        }
        if is_root() {
            check(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(data.join("server.crt"))
                    .arg(data.join("server.key"))
                    .output(),
                "chown cert",
            );
        }
        check(
            Command::new("chmod")
                .args(["600"])
                .arg(data.join("server.key"))
                .output(),
            "chmod key",
        );
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nssl = on\n\
             ssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\nfsync = off\nsynchronous_commit = off\n\
             full_page_writes = off\nmax_connections = 200\nshared_buffers = 64MB\nlog_min_messages = warning\n",
            dir.display()
        );
        append(&data.join("postgresql.conf"), &conf);
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .expect("pg_hba");
        check(
            pg_command(&pg_bin().join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("log"))
                .args(["-w", "start"])
                .output(),
            "pg_ctl start",
        );
        Cluster { name, port, dir }
    }

    /// A URL for `user` on database `db` (TLS, certificate verified, host name checked).
    pub fn url(&self, user: &str, db: &str) -> String {
        format!(
            "postgresql://{user}:{}@localhost:{}/{db}?sslmode=verify-full&sslrootcert={}",
            root().password,
            self.port,
            root().ca.display()
        )
    }

    /// A superuser session on `db`.
    pub async fn admin(&self, db: &str) -> Client {
        ConnSpec::parse(&self.url("postgres", db), "admin")
            .expect("url")
            .connect()
            .await
            .expect("admin connect")
    }

    /// Restarts the server (stop fast, start).
    pub fn restart(&self) {
        check(
            pg_command(&pg_bin().join("pg_ctl"))
                .arg("-D")
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("log"))
                .args(["-w", "-m", "fast", "restart"])
                .output(),
            "pg_ctl restart",
        );
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open conf");
    f.write_all(text.as_bytes()).expect("write conf");
}

async fn init_source(c: &Cluster) {
    let a = c.admin("postgres").await;
    let pw = &root().password;
    a.batch_execute(&format!(
        "CREATE ROLE {SOURCE_OWNER} LOGIN PASSWORD '{pw}'; CREATE ROLE {INTRUDER} LOGIN PASSWORD '{pw}';"
    ))
    .await
    .expect("source roles");
}

async fn init_target(c: &Cluster) {
    let a = c.admin("postgres").await;
    a.batch_execute(&format!(
        "CREATE ROLE {TARGET_MASTER} LOGIN PASSWORD '{}' CREATEDB CREATEROLE;
         GRANT SET ON PARAMETER session_replication_role TO {TARGET_MASTER};",
        root().password
    ))
    .await
    .expect("target roles");
}

/// The shared source ("Heroku") cluster.
pub async fn source() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    static INIT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let c = C.get_or_init(|| Cluster::start("source".into()));
    INIT.get_or_init(|| init_source(c)).await;
    c
}

/// The shared target ("RDS") cluster.
pub async fn target() -> &'static Cluster {
    static C: OnceLock<Cluster> = OnceLock::new();
    static INIT: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let c = C.get_or_init(|| Cluster::start("target".into()));
    INIT.get_or_init(|| init_target(c)).await;
    c
}

/// A pair of fresh databases named after the test: one on the source owned by the owner role
/// (with citext and hstore installed), one empty on the target owned by the master user.
pub struct Pair {
    pub name: String,
    pub source: &'static Cluster,
    pub target: &'static Cluster,
}

impl Pair {
    /// Databases on the shared clusters.
    pub async fn new(name: &str) -> Pair {
        Self::on(name, source().await, target().await).await
    }

    /// Databases on clusters of their own, for tests that restart servers.
    pub async fn private(name: &str) -> Pair {
        let source: &'static Cluster =
            Box::leak(Box::new(Cluster::start(format!("{name}-source"))));
        let target: &'static Cluster =
            Box::leak(Box::new(Cluster::start(format!("{name}-target"))));
        init_source(source).await;
        init_target(target).await;
        Self::on(name, source, target).await
    }

    async fn on(name: &str, source: &'static Cluster, target: &'static Cluster) -> Pair {
        let a = source.admin("postgres").await;
        a.batch_execute(&format!("CREATE DATABASE {name} OWNER {SOURCE_OWNER}"))
            .await
            .expect("create source db");
        source
            .admin(name)
            .await
            .batch_execute(&format!(
                "CREATE EXTENSION citext; CREATE EXTENSION hstore; GRANT CONNECT ON DATABASE {name} TO {INTRUDER};"
            ))
            .await
            .expect("extensions");
        target
            .admin("postgres")
            .await
            .batch_execute(&format!("CREATE DATABASE {name} OWNER {TARGET_MASTER}"))
            .await
            .expect("create target db");
        Pair {
            name: name.to_string(),
            source,
            target,
        }
    }

    pub fn source_url(&self) -> String {
        self.source.url(SOURCE_OWNER, &self.name)
    }

    pub fn target_url(&self) -> String {
        self.target.url(TARGET_MASTER, &self.name)
    }

    /// A session as the source's owner role (what the application uses).
    pub async fn source_owner(&self) -> Client {
        ConnSpec::parse(&self.source_url(), "source")
            .expect("url")
            .connect()
            .await
            .expect("connect source")
    }

    /// A session as the target's master user.
    pub async fn target_master(&self) -> Client {
        ConnSpec::parse(&self.target_url(), "target")
            .expect("url")
            .connect()
            .await
            .expect("connect target")
    }

    /// Loads the rich fixture into the source.
    pub async fn load_rich_fixture(&self) {
        let sql = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/fixtures/rich.sql"),
        )
        .expect("fixture");
        self.source_owner()
            .await
            .batch_execute(&sql)
            .await
            .expect("load the rich fixture");
    }

    /// Runs the heroku2rds binary with the pair's URLs in the environment.
    pub fn h2r(&self, args: &[&str]) -> Run {
        h2r_env(
            args,
            &[
                ("HEROKU2RDS_SOURCE_URL", &self.source_url()),
                ("HEROKU2RDS_TARGET_URL", &self.target_url()),
            ],
        )
    }

    /// Starts the binary in the background (for kill tests).
    pub fn spawn_h2r(&self, args: &[&str]) -> std::process::Child {
        Command::new(env!("CARGO_BIN_EXE_heroku2rds"))
            .args(args)
            .env("HEROKU2RDS_SOURCE_URL", self.source_url())
            .env("HEROKU2RDS_TARGET_URL", self.target_url())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn heroku2rds")
    }
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// Runs the binary with extra environment; the URL variables are cleared unless given.
pub fn h2r_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(env!("CARGO_BIN_EXE_heroku2rds"));
    c.args(args)
        .env_remove("HEROKU2RDS_SOURCE_URL")
        .env_remove("HEROKU2RDS_TARGET_URL");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run heroku2rds");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts the binary in the background with `env` (the URL variables are cleared unless given),
/// its stdout and stderr going to `log` (a pipe nobody reads would block a long run).
pub fn spawn_h2r_logged(args: &[&str], env: &[(&str, &str)], log: &Path) -> std::process::Child {
    let out = std::fs::File::create(log).expect("create the log file");
    let err = out.try_clone().expect("clone the log file");
    let mut c = Command::new(env!("CARGO_BIN_EXE_heroku2rds"));
    c.args(args)
        .env_remove("HEROKU2RDS_SOURCE_URL")
        .env_remove("HEROKU2RDS_TARGET_URL")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().expect("spawn heroku2rds")
}

/// An independent fingerprint of every ordinary table (and materialized view) of a database:
/// per relation, the row count and an md5 over the sorted md5s of each row's whole-row text.
/// Independent of heroku2rds's verify (different query, different aggregation).
pub async fn fingerprint(c: &Client) -> std::collections::BTreeMap<String, (i64, String)> {
    fingerprint_kinds(c, "'r', 'm'").await
}

/// [`fingerprint`] of ordinary tables only (materialized views are refreshed at cutover).
pub async fn fingerprint_tables(c: &Client) -> std::collections::BTreeMap<String, (i64, String)> {
    fingerprint_kinds(c, "'r'").await
}

async fn fingerprint_kinds(
    c: &Client,
    kinds: &str,
) -> std::collections::BTreeMap<String, (i64, String)> {
    let rels = c
        .query(
            &format!("SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ({kinds}) AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'heroku2rds')
                AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1"),
            &[],
        )
        .await
        .expect("list relations");
    let mut out = std::collections::BTreeMap::new();
    for r in rels {
        let rel: String = r.get(0);
        let row = c
            .query_one(
                &format!("SELECT count(*), coalesce(md5(string_agg(h, ',' ORDER BY h)), '') FROM (SELECT md5(x::text) h FROM ONLY {rel} x) s"),
                &[],
            )
            .await
            .unwrap_or_else(|e| panic!("fingerprint {rel}: {e}"));
        out.insert(rel, (row.get(0), row.get(1)));
    }
    out
}

/// Every sequence's (last_value, is_called).
pub async fn sequence_values(c: &Client) -> std::collections::BTreeMap<String, (i64, bool)> {
    let seqs = c
        .query(
            "SELECT format('%I.%I', schemaname, sequencename) FROM pg_sequences WHERE schemaname <> 'heroku2rds' ORDER BY 1",
            &[],
        )
        .await
        .expect("list sequences");
    let mut out = std::collections::BTreeMap::new();
    for s in seqs {
        let name: String = s.get(0);
        let r = c
            .query_one(&format!("SELECT last_value, is_called FROM {name}"), &[])
            .await
            .expect("read sequence");
        out.insert(name, (r.get(0), r.get(1)));
    }
    out
}
