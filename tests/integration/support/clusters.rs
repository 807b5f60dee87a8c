//! Throwaway PostgreSQL clusters for the tests: a "Heroku" source whose tables belong to a
//! non-superuser owner role, and an "RDS" target whose master user is not a superuser either.
//! Both serve TLS only, with certificates from a CA the harness makes. One pair of clusters per
//! test process, one pair of databases per test (clusters of its own for a test that restarts
//! servers). Everything lives under one scratch root per test process.
//!
//! A watchdog process stops the clusters when the test process ends, however it ends, and
//! removes the scratch root, unless something in it is kept for inspection: the databases of a
//! test that failed (a [`Pair`] dropped while its test panics), or everything when
//! `HEROKU2RDS_KEEP_TEST_DB=1` is set. What is kept is said on the failing test's stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use heroku2rds::pg::conn::ConnSpec;
use tokio_postgres::Client;

use crate::support::binary::{self, Run};
use crate::support::host::{after_exit, free_port, is_root};

/// Set to keep every cluster and file of the run, failed or not.
pub const KEEP_VAR: &str = "HEROKU2RDS_KEEP_TEST_DB";

/// The owner role of the source databases (like Heroku's default credential).
pub const SOURCE_OWNER: &str = "app_owner";
/// A role that can read the source but owns nothing.
pub const INTRUDER: &str = "intruder";
/// The target's master user (like RDS's, not a superuser).
pub const TARGET_MASTER: &str = "rds_master";

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

pub fn root() -> &'static Root {
    static ROOT: OnceLock<Root> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("heroku2rds-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let password = format!(
            "pw-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        // When this process ends: stop every cluster (cleanly if kept: they are to be started
        // again), then remove the scratch root, or, if something in it is kept, the clusters
        // that are not (see `Root::keep`).
        after_exit(
            "stops the clusters and removes their files",
            &format!(
                "k='{root}/{KEPT}'; \
                 if [ -e \"$k\" ]; then mode=fast; else mode=immediate; fi; \
                 for d in '{root}'/*/data; do [ -f \"$d/postmaster.pid\" ] && {runas} '{bin}/pg_ctl' -D \"$d\" stop -m $mode >/dev/null 2>&1; done; \
                 if [ ! -e \"$k\" ]; then rm -rf '{root}'; \
                 elif ! grep -qxF 'keep: {root}' \"$k\"; then \
                   for d in '{root}'/*/data; do c=\"${{d%/data}}\"; grep -qxF \"keep: $c\" \"$k\" || rm -rf \"$c\"; done; \
                 fi",
                root = dir.display(),
                runas = if is_root() { "runuser -u postgres --" } else { "" },
                bin = pg_bin().display()
            ),
        );

        let ca = make_ca(&dir.join("ca"), "heroku2rds test CA");
        let wrong_ca = make_ca(&dir.join("wrong-ca"), "some other CA");
        if is_root() {
            check(
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir)
                    .output(),
                "chown scratch dir",
            );
        }
        let root = Root {
            dir,
            ca,
            wrong_ca,
            password,
        };
        if std::env::var_os(KEEP_VAR).is_some_and(|v| !v.is_empty() && v != "0") {
            root.keep(&format!("everything ({KEEP_VAR} is set)"), &[&root.dir]);
        }
        root
    })
}

/// The file in the scratch root that lists what is kept; while it exists, the root is kept.
const KEPT: &str = "KEPT";

impl Root {
    /// Keeps the scratch root when this process ends, with its files (logs, dumps, the fakes'
    /// logs), the clusters in `dirs` (stopped) and every cluster if `dirs` holds the root itself;
    /// the other clusters are removed. Says so on stderr, in the output of the calling test.
    pub fn keep(&self, what: &str, dirs: &[&Path]) {
        use std::io::Write;
        let list = self.dir.join(KEPT);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&list)
            .expect("the list of what is kept");
        let mut text = format!("# {}\n", what.replace('\n', "\n# "));
        for d in dirs {
            text.push_str(&format!("keep: {}\n", d.display()));
        }
        f.write_all(text.as_bytes())
            .expect("the list of what is kept");
        eprintln!(
            "[harness] kept for inspection: {what}\n\
             [harness] {root} is kept when the test process ends, with the clusters listed in \
             {list} (stopped; the others are removed); remove it with: rm -rf {root}",
            root = self.dir.display(),
            list = list.display(),
        );
    }
}

/// A directory of its own under the scratch root (kept or removed with it).
pub fn scratch_dir(name: &str) -> PathBuf {
    let d = root().dir.join(name);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
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

    /// How to reach this cluster again once it is kept (the test process gone).
    fn how_to_inspect(&self, db: &str) -> String {
        let runas = if is_root() {
            "runuser -u postgres -- "
        } else {
            ""
        };
        format!(
            "database {db} of the {name} cluster in {dir}: start it with `{runas}{bin}/pg_ctl -D {dir}/data -l {dir}/log start`, \
             then `{runas}psql -h {dir} -p {port} -U postgres {db}`",
            name = self.name,
            dir = self.dir.display(),
            bin = pg_bin().display(),
            port = self.port,
        )
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
        let sql = std::fs::read_to_string(crate::support::repo_file(
            "tests/integration/fixtures/rich.sql",
        ))
        .expect("fixture");
        self.source_owner()
            .await
            .batch_execute(&sql)
            .await
            .expect("load the rich fixture");
    }

    /// Runs the heroku2rds binary with the pair's URLs in the environment.
    pub fn h2r(&self, args: &[&str]) -> Run {
        binary::h2r_env(args, &self.url_env())
    }

    /// Starts the binary in the background (for kill tests).
    pub fn spawn_h2r(&self, args: &[&str]) -> std::process::Child {
        binary::command(args, &self.url_env())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn heroku2rds")
    }

    fn url_env(&self) -> [(&'static str, String); 2] {
        [
            ("HEROKU2RDS_SOURCE_URL", self.source_url()),
            ("HEROKU2RDS_TARGET_URL", self.target_url()),
        ]
    }
}

/// A test that fails (panics) while it holds its pair keeps the pair's databases for inspection.
impl Drop for Pair {
    fn drop(&mut self) {
        if std::thread::panicking() {
            root().keep(
                &format!(
                    "the databases of a failed test:\n  {}\n  {}",
                    self.source.how_to_inspect(&self.name),
                    self.target.how_to_inspect(&self.name)
                ),
                &[&self.source.dir, &self.target.dir],
            );
        }
    }
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

/// Rows of `table` as a count and an md5 over their sorted md5s, restricted by `filter`.
pub async fn rows(c: &Client, table: &str, filter: &str) -> (i64, String) {
    let r = c
        .query_one(
            &format!("SELECT count(*), coalesce(md5(string_agg(h, ',' ORDER BY h)), '') FROM (SELECT md5(x::text) h FROM {table} x WHERE {filter}) s"),
            &[],
        )
        .await
        .expect("rows");
    (r.get(0), r.get(1))
}

/// `pg_restore --list` of a custom-format dump (the test fails if it is not one).
pub fn restore_list(path: &Path) -> String {
    let out = Command::new(pg_bin().join("pg_restore"))
        .arg("--list")
        .arg(path)
        .output()
        .expect("pg_restore");
    assert!(
        out.status.success(),
        "pg_restore --list {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
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
