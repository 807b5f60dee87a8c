//! Bad input across every command, as one table. Each case is data: the arguments (each command
//! has default arguments a case only adds to or overrides), extra environment, files in the
//! working directory, which pair of databases, the exit code of the contract (0 ok, 1
//! differences, 2 usage/config, 3 preflight blocked, 4 a service refused, 5 other) and a phrase
//! that names the problem. Every case is also checked for a `fix:` line, for secrets (database
//! passwords, Heroku tokens, AWS secret keys) in its output, and for side effects: its pair of
//! databases, the fake Heroku app (maintenance, formation, config vars, releases, backups) and
//! its working directory (also its HOME) must be as they were. The AWS emulator is private to
//! the test, with IAM enforced (so keys matter); after all cases it must hold nothing of any
//! migration (each case's migration name ends in the case's number). Every command must have a
//! case. Cases run four at a time; a case that connects to its databases has them to itself.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::support::binary::{Run, BIN};
use crate::support::clusters::{root, scratch_dir, Pair, INTRUDER, SOURCE_OWNER, TARGET_MASTER};
use crate::support::fake_heroku::{app_name, fake, quick, TOKEN};
use crate::support::host::free_port;
use crate::support::moto::{
    aws_env, enforce_iam, iam_user, inventory, unique, Moto, ADMIN_POLICY, OPERATOR,
};
const WRONG_PASSWORD: &str = "not-the-password-7f3a";
const BAD_TOKEN: &str = "bt-not-a-heroku-token-0000";
const EXPIRED_TOKEN: &str = "bt-expired-token-1111";
const TWO_FACTOR_TOKEN: &str = "bt-two-factor-token-2222";
const OTHER_APPS_TOKEN: &str = "bt-other-apps-token-3333";
const WRONG_AWS_KEY: &str = "AKIAWRONGWRONGWRONG1";
const WRONG_AWS_SECRET: &str = "bt-wrong-aws-secret-4444-abcdefghijklmnop";
/// The longest a case may run; a hang is a failure, not a stuck test.
const CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Cases run at the same time.
const PARALLEL: usize = 4;

/// Which pair of databases a case runs against (their URLs are in HEROKU2RDS_SOURCE_URL and
/// HEROKU2RDS_TARGET_URL, and in the `{src...}`/`{tgt...}` placeholders).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Db {
    /// A source with a keyed table and its sequence; an empty target.
    Clean,
    /// The same, plus a table without a usable key.
    Keyless,
    /// The same source; the target already holds a table.
    NonEmpty,
    /// Replicated and caught up (capture on the source, state on the target); the fake app's
    /// database.
    Replicated,
}

const SOURCE_SQL: &str = "CREATE TABLE public.ok (id serial PRIMARY KEY, v text);
     INSERT INTO public.ok (v) SELECT 'v' || i FROM generate_series(1, 50) i;";

/// Arguments every case of a command gets unless it gives the flag itself; `!--flag` in a
/// case's arguments drops a default flag.
const DEFAULTS: &[(&str, &str)] = &[
    (
        "plan",
        "--name {name} --operator-cidr {operator} --source-size-gb 1 --source-major 15 --no-worker",
    ),
    (
        "provision",
        "--name {name} --operator-cidr {operator} --source-size-gb 1 --source-major 15 --no-worker --yes",
    ),
    ("teardown", "--name {name} --yes"),
    ("cutover", "--app {app} --yes"),
    ("archive", "--app {app} --name {name}"),
    (
        "migrate",
        "--app {app} --name {name} --operator-cidr {operator} --runner local",
    ),
    ("init", "--app {app}"),
];

/// Commands that never connect to the databases: their cases may share a pair with each other;
/// every other case has its pair to itself (runner locks, and a change is blamed on the right
/// case).
const NO_DB_COMMANDS: &[&str] = &["init", "plan", "provision", "teardown", "archive"];

/// Where a case's fix is said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fix {
    /// A `fix:` line under the error on stderr.
    Stderr,
    /// In the report on stdout, under each blocking finding (preflight).
    Report,
    /// Nothing to fix (the command succeeds).
    None,
}

struct Case {
    what: &'static str,
    args: &'static str,
    code: i32,
    says: &'static str,
    env: Vec<(&'static str, String)>,
    db: Db,
    files: Vec<(&'static str, String)>,
    fix: Fix,
    /// Inventory keys the case is expected to leave (a refusal halfway through provision); they
    /// are torn down afterwards.
    leaves: Vec<&'static str>,
}

fn case(what: &'static str, args: &'static str, code: i32, says: &'static str) -> Case {
    Case {
        what,
        args,
        code,
        says,
        env: Vec::new(),
        db: Db::Clean,
        files: Vec::new(),
        fix: Fix::Stderr,
        leaves: Vec::new(),
    }
}

impl Case {
    fn env(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.env.push((key, value.into()));
        self
    }
    fn db(mut self, db: Db) -> Self {
        self.db = db;
        self
    }
    fn file(mut self, name: &'static str, text: impl Into<String>) -> Self {
        self.files.push((name, text.into()));
        self
    }
    fn fix(mut self, fix: Fix) -> Self {
        self.fix = fix;
        self
    }
    fn leaves(mut self, key: &'static str) -> Self {
        self.leaves.push(key);
        self
    }
    fn command(&self) -> &str {
        self.args.split_whitespace().next().unwrap()
    }
}

/// The table. `case(what, command and arguments, exit code, phrase)`, then what differs from the
/// defaults: `env` (placeholders such as `{src_wrong_password}` are filled in per case, see
/// [`Ctx::vars`]), `db`, `file` (written into the working directory), `fix`, `leaves`.
#[rustfmt::skip]
fn cases() -> Vec<Case> {
    let (src, tgt, token) = ("HEROKU2RDS_SOURCE_URL", "HEROKU2RDS_TARGET_URL", "HEROKU_API_KEY");
    let job = |version: &str, target: &str| format!(
        r#"{{"version": {version}, "migration": "{{name}}", "source_url": "{{src}}", "target_url": "{target}", "jobs": 1, "keyless": "error"}}"#
    );
    let cidrs: Vec<String> = (1..=60).map(|i| format!("\"198.51.100.{i}/32\"")).collect();
    let sixty_app_cidrs = format!("[aws]\napp_cidrs = [{}]\n", cidrs.join(", "));
    vec![
        case("source URL without a scheme", "preflight", 2, "must start with postgresql://").env(src, "{src_no_scheme}"),
        case("source URL with port 99999", "preflight", 2, "invalid port number").env(src, "{src_bad_port}"),
        case("source URL with an unknown parameter", "preflight", 2, "unsupported parameter `frobnicate`").env(src, "{src}&frobnicate=1"),
        case("wrong source password", "preflight", 4, "password authentication failed for user \"app_owner\"").env(src, "{src_wrong_password}"),
        case("source on a closed port", "preflight", 5, "Connection refused").env(src, "{src_closed}"),
        case("source is not PostgreSQL (an HTTP port)", "preflight", 5, "does not answer like a PostgreSQL server").env(src, "{src_not_postgres}"),
        case("source certificate from another CA", "preflight", 4, "TLS failed").env(src, "{src_wrong_ca}"),
        case("table without a key, --keyless error", "preflight", 3, "public.nokey has no primary key").db(Db::Keyless).fix(Fix::Report),

        case("wrong target password", "replicate", 4, "password authentication failed for user \"rds_master\"").env(tgt, "{tgt_wrong_password}"),
        case("source role owns nothing (intruder)", "replicate", 3, "does not own").env(src, "{src_intruder}"),
        case("table without a key, --keyless error", "replicate", 3, "--keyless recopy").db(Db::Keyless),
        case("target not empty", "replicate", 2, "is not empty").db(Db::NonEmpty),
        case("--jobs 0", "replicate --jobs 0", 2, "--jobs must be at least 1"),
        case("--chunk-mb 0", "replicate --chunk-mb 0", 2, "--chunk-mb must be at least 1"),
        case("target database does not exist", "replicate", 2, "database \"no_such_db\" does not exist").env(tgt, "{tgt_no_db}"),
        case("source on a closed port (no 5-minute retry)", "replicate", 5, "Connection refused").env(src, "{src_closed}"),

        case("target without a migration", "status", 2, "holds no heroku2rds migration"),
        case("target URL with an unknown sslmode", "status", 2, "unknown sslmode `maybe`").env(tgt, "{tgt_bad_sslmode}"),

        case("source role without SELECT (intruder)", "verify", 4, "permission denied").db(Db::Replicated).env(src, "{src_intruder}"),
        case("target certificate from another CA", "verify", 4, "TLS failed").db(Db::Replicated).env(tgt, "{tgt_wrong_ca}"),

        case("target holds no copy (a sequence missing)", "sync-sequences", 2, "the target has no sequence \"public\".\"ok_id_seq\""),
        case("target on a closed port", "sync-sequences", 5, "Connection refused").env(tgt, "{tgt_closed}"),

        case("wrong target password", "refresh-matviews", 4, "password authentication failed").env(tgt, "{tgt_wrong_password}"),

        case("nothing to clean", "clean", 0, "nothing to remove").fix(Fix::None),
        case("wrong target password (the capture stays)", "clean --target {tgt_wrong_password}", 4, "password authentication failed").db(Db::Replicated),

        case("invalid migration name", "init --name Bad_Name", 2, "invalid migration name"),
        case("unknown region", "init --region us-mars-1", 2, "unknown AWS region \"us-mars-1\""),
        case("heroku2rds.toml exists already", "init", 2, "exists already").file("heroku2rds.toml", "name = \"keep-me\"\n"),

        case("unknown key in heroku2rds.toml", "plan", 2, "heroku2rds.toml is not valid (line 2, column 1): unknown field `regoin`").file("heroku2rds.toml", "[aws]\nregoin = \"us-east-2\"\n"),
        case("malformed heroku2rds.toml", "plan", 2, "heroku2rds.toml is not valid (line 1, column").file("heroku2rds.toml", "name = \"unterminated\n[aws\n"),
        case("engine major below the source's", "plan --engine-major 13", 2, "below the source's PostgreSQL 15"),
        case("operator CIDR 0.0.0.0/0", "plan --operator-cidr 0.0.0.0/0", 2, "range too wide"),
        case("unknown region", "plan --region us-east-9", 2, "unknown AWS region \"us-east-9\""),
        case("wrong AWS keys", "plan", 4, "AWS rejected the credentials").env("AWS_ACCESS_KEY_ID", WRONG_AWS_KEY).env("AWS_SECRET_ACCESS_KEY", WRONG_AWS_SECRET),
        case("AWS user without permissions", "plan", 4, "AWS denied ec2:").env("AWS_ACCESS_KEY_ID", "{noperm_key}").env("AWS_SECRET_ACCESS_KEY", "{noperm_secret}"),

        case("no terminal and no --yes", "provision !--yes", 2, "no terminal"),
        case("bad migration name", "provision --name Bad_Name", 2, "invalid migration name"),
        case("replica region = primary region", "provision --replica-region us-east-2", 2, "is the primary's region"),
        case("61 rules: the security group quota", "provision", 4, "an AWS quota stopped ec2:AuthorizeSecurityGroupIngress").file("heroku2rds.toml", sixty_app_cidrs).leaves("us-east-2/sg/heroku2rds-{name}-db"),

        case("worker binary needing a newer glibc", "plan !--no-worker --worker-binary {newer_glibc}", 2, "needs glibc 2.99 (symbol version GLIBC_2.99), newer than the worker's Ubuntu 24.04 glibc 2.39"),
        case("worker binary needing a newer glibc", "provision !--no-worker --worker-binary {newer_glibc}", 2, "needs glibc 2.99"),
        case("worker binary that is not a Linux executable", "provision !--no-worker --worker-binary heroku2rds-macos", 2, "is not a Linux executable (not an ELF file)").file("heroku2rds-macos", "#!/bin/sh\necho built for macOS\n"),
        case("worker binary URL without its SHA-256", "provision !--no-worker --worker-binary-url https://example.com/heroku2rds", 2, "--worker-binary-url needs --worker-binary-sha256"),
        case("worker binary URL over plain http", "plan !--no-worker --worker-binary-url http://example.com/heroku2rds --worker-binary-sha256 {sha}", 2, "--worker-binary-url must be https, not http"),
        case("worker binary URL and file together", "provision !--no-worker --worker-binary {newer_glibc} --worker-binary-url https://example.com/heroku2rds --worker-binary-sha256 {sha}", 2, "--worker-binary and --worker-binary-url both given"),

        case("--include-replica without --replica-region", "teardown --include-replica", 2, "needs the replica's region"),
        case("no terminal and no --yes", "teardown !--yes", 2, "no terminal"),
        case("unknown region", "teardown --region eu-nowhere-1", 2, "unknown AWS region"),

        case("job file is garbage", "worker --job job.json", 2, "is not a heroku2rds job").file("job.json", "not JSON {src}"),
        case("job file of another format version", "worker --job job.json", 2, "format version 99").file("job.json", job("99", "{tgt}")),
        case("job file missing", "worker --job missing.json", 2, "cannot read the job file"),
        case("job with a wrong target password", "worker --job job.json", 4, "password authentication failed").file("job.json", job("1", "{tgt_wrong_password}")),

        case("target without a migration", "cutover", 2, "holds no heroku2rds migration"),
        case("expired Heroku token", "cutover", 4, "Heroku refused the token in HEROKU_API_KEY").db(Db::Replicated).env(token, EXPIRED_TOKEN),
        case("no terminal and no --yes", "cutover !--yes", 2, "no terminal").db(Db::Replicated),
        case("app URL without TLS", "cutover", 2, "sslmode=disable").db(Db::Replicated).env("HEROKU2RDS_TARGET_APP_URL", "{tgt_plain}"),

        case("no --app and no heroku2rds.toml", "archive !--app", 2, "no Heroku app"),
        case("--backup with --via pg_dump", "archive --backup b001 --via pg_dump", 2, "--backup goes with --via backup"),
        case("malformed backup id", "archive --backup yesterday", 2, "yesterday"),
        case("nothing provisioned under the name", "archive", 2, "has no archive bucket"),

        case("no --app and no heroku2rds.toml", "migrate !--app", 2, "no Heroku app"),
        case("--runner ec2 with --no-worker", "migrate --runner ec2 --no-worker", 2, "--no-worker leaves nothing to run replication on"),
        case("--jobs 0", "migrate --jobs 0", 2, "--jobs must be at least 1"),
        case("worker binary needing a newer glibc", "migrate --yes --runner ec2 --worker-binary {newer_glibc}", 2, "needs glibc 2.99"),
        case("no terminal and no --yes", "migrate", 2, "no terminal"),
        case("unknown Heroku app", "migrate --app no-such-app-bt1", 2, "check the app name"),
        case("invalid Heroku token", "migrate", 4, "Heroku refused the token in HEROKU_API_KEY").env(token, BAD_TOKEN),
        case("expired Heroku token, with --yes", "migrate --yes", 4, "Heroku refused the token in HEROKU_API_KEY").env(token, EXPIRED_TOKEN),
        case("Heroku token that needs two-factor, --yes", "migrate --yes", 4, "two-factor").env(token, TWO_FACTOR_TOKEN),
        case("Heroku token without access to the app, --yes", "migrate --yes", 4, "may not do this").env(token, OTHER_APPS_TOKEN),
    ]
}

/// Everything the cases share.
struct Ctx {
    pairs: BTreeMap<Db, Pair>,
    locks: BTreeMap<Db, tokio::sync::RwLock<()>>,
    /// Superuser sessions on each pair's databases (source, target), for the side-effect checks.
    admins: BTreeMap<Db, [tokio_postgres::Client; 2]>,
    aws: Vec<(String, String)>,
    noperm: (String, String),
    app: String,
    scratch: std::path::PathBuf,
    names: String,
    closed_port: u16,
    fake_port: u16,
    /// A copy of the binary whose newest glibc requirement says 2.99.
    newer_glibc: std::path::PathBuf,
    secrets: Vec<String>,
}

/// Copies `bin` to `to`, its newest `GLIBC_2.xx` version name (in the string table its
/// `.gnu.version_r` entries point at) renamed `GLIBC_2.99`: a binary as if built against a
/// newer glibc than the worker's. Made at test time, never committed.
fn newer_glibc_copy(bin: &Path, to: &Path) {
    let mut bytes = std::fs::read(bin).unwrap();
    let mut newest: Option<(u32, Vec<u8>)> = None;
    for (i, _) in bytes
        .windows(8)
        .enumerate()
        .filter(|(_, w)| *w == b"GLIBC_2.")
    {
        let digits: Vec<u8> = bytes[i + 8..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .copied()
            .collect();
        if digits.len() == 2 && bytes.get(i + 10) == Some(&0) {
            let v: u32 = std::str::from_utf8(&digits).unwrap().parse().unwrap();
            if newest.as_ref().is_none_or(|(n, _)| v > *n) {
                newest = Some((v, [b"GLIBC_2.".as_slice(), &digits, b"\0"].concat()));
            }
        }
    }
    let (_, name) = newest.expect("the binary names a GLIBC_2.xx version");
    let mut n = 0;
    let mut i = 0;
    while i + name.len() <= bytes.len() {
        if bytes[i..i + name.len()] == name[..] {
            bytes[i + 8..i + 10].copy_from_slice(b"99");
            n += 1;
        }
        i += 1;
    }
    assert!(n > 0);
    std::fs::write(to, bytes).unwrap();
    let mut perm = std::fs::metadata(to).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(to, perm).unwrap();
}

fn url(port: u16, user: &str, password: &str, db: &str, query: &str) -> String {
    format!("postgresql://{user}:{password}@localhost:{port}/{db}?{query}")
}

impl Ctx {
    /// The placeholders of case `i`.
    fn vars(&self, i: usize, c: &Case) -> BTreeMap<&'static str, String> {
        let p = &self.pairs[&c.db];
        let (sp, tp, db) = (p.source.port, p.target.port, p.name.as_str());
        let pw = root().password.as_str();
        let ca = root().ca.display().to_string();
        let wrong_ca = root().wrong_ca.display().to_string();
        let tls = format!("sslmode=verify-full&sslrootcert={ca}");
        let src = p.source_url();
        let tgt = p.target_url();
        BTreeMap::from([
            ("{src_no_scheme}", src.replace("postgresql://", "")),
            ("{src_bad_port}", src.replace(&format!(":{sp}/"), ":99999/")),
            (
                "{src_wrong_password}",
                url(sp, SOURCE_OWNER, WRONG_PASSWORD, db, &tls),
            ),
            (
                "{tgt_wrong_password}",
                url(tp, TARGET_MASTER, WRONG_PASSWORD, db, &tls),
            ),
            (
                "{src_closed}",
                url(self.closed_port, SOURCE_OWNER, pw, db, &tls),
            ),
            (
                "{tgt_closed}",
                url(self.closed_port, TARGET_MASTER, pw, db, &tls),
            ),
            (
                "{src_not_postgres}",
                url(
                    self.fake_port,
                    SOURCE_OWNER,
                    pw,
                    db,
                    "sslmode=require&connect_timeout=2",
                ),
            ),
            ("{src_wrong_ca}", src.replace(&ca, &wrong_ca)),
            ("{tgt_wrong_ca}", tgt.replace(&ca, &wrong_ca)),
            ("{src_intruder}", url(sp, INTRUDER, pw, db, &tls)),
            (
                "{tgt_no_db}",
                url(tp, TARGET_MASTER, pw, "no_such_db", &tls),
            ),
            ("{tgt_bad_sslmode}", tgt.replace("verify-full", "maybe")),
            ("{tgt_plain}", tgt.replace("verify-full", "disable")),
            ("{src}", src),
            ("{tgt}", tgt),
            ("{name}", format!("{}-{i}", self.names)),
            ("{app}", self.app.clone()),
            ("{operator}", OPERATOR.to_string()),
            ("{noperm_key}", self.noperm.0.clone()),
            ("{noperm_secret}", self.noperm.1.clone()),
            ("{newer_glibc}", self.newer_glibc.display().to_string()),
            ("{sha}", "0123456789abcdef".repeat(4)),
        ])
    }

    /// Masks every secret (for failure reports).
    fn mask(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), "<SECRET>"))
    }
}

fn subst(text: &str, vars: &BTreeMap<&'static str, String>) -> String {
    vars.iter()
        .fold(text.to_string(), |t, (k, v)| t.replace(k, v))
}

/// The command line of a case: the command, its defaults (unless the case gives or drops the
/// flag), then the case's own arguments.
fn command_line(c: &Case) -> Vec<String> {
    let mut own: Vec<&str> = c.args.split_whitespace().collect();
    let command = own.remove(0);
    let dropped: Vec<&str> = own.iter().filter_map(|a| a.strip_prefix('!')).collect();
    own.retain(|a| !a.starts_with('!'));
    let mut out = vec![command.to_string()];
    let defaults = DEFAULTS
        .iter()
        .find(|(cmd, _)| *cmd == command)
        .map(|(_, d)| d.split_whitespace().collect::<Vec<_>>())
        .unwrap_or_default();
    let mut i = 0;
    while i < defaults.len() {
        let flag = defaults[i];
        let takes_value = defaults.get(i + 1).is_some_and(|v| !v.starts_with("--"));
        if !own.contains(&flag) && !dropped.contains(&flag) {
            out.push(flag.to_string());
            if takes_value {
                out.push(defaults[i + 1].to_string());
            }
        }
        i += if takes_value { 2 } else { 1 };
    }
    out.extend(own.iter().map(|a| a.to_string()));
    out
}

/// Runs the binary in `dir` with exactly `env` on top of this process's environment minus
/// anything that could reach a real cloud or database.
async fn run(dir: &Path, args: &[String], env: &[(String, String)]) -> Run {
    let mut c = tokio::process::Command::new(BIN);
    c.args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if ["AWS_", "HEROKU", "PG", "XDG_"]
            .iter()
            .any(|p| k.starts_with(p))
        {
            c.env_remove(k);
        }
    }
    c.envs(env.iter().map(|(k, v)| (k, v)));
    match tokio::time::timeout(CASE_TIMEOUT, c.output()).await {
        Ok(out) => Run::from_output(out.expect("run heroku2rds")),
        Err(_) => Run {
            code: -2,
            stdout: String::new(),
            stderr: format!("did not finish within {CASE_TIMEOUT:?}"),
        },
    }
}

/// Everything a case could change in a pair of databases: schemas, relations, triggers, and
/// every table's rows and sequence's position (the tool's own schema included).
async fn db_state(admins: &[tokio_postgres::Client; 2]) -> Value {
    let mut out = serde_json::Map::new();
    for (side, c) in ["source", "target"].iter().zip(admins) {
        let strings = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
            rows.iter().map(|r| r.get::<_, String>(0)).collect()
        };
        let schemas = strings(
            c.query(
                "SELECT nspname::text FROM pg_namespace
                  WHERE nspname !~ '^pg_' AND nspname <> 'information_schema' ORDER BY 1",
                &[],
            )
            .await
            .unwrap(),
        );
        let triggers = strings(
            c.query(
                "SELECT format('%s %s', tgrelid::regclass, tgname) FROM pg_trigger
                  WHERE NOT tgisinternal ORDER BY 1",
                &[],
            )
            .await
            .unwrap(),
        );
        let rels = c
            .query(
                "SELECT format('%I.%I', n.nspname, c.relname), c.relkind::text
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                    AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1",
                &[],
            )
            .await
            .unwrap();
        let mut contents = BTreeMap::new();
        for r in &rels {
            let (rel, kind): (String, String) = (r.get(0), r.get(1));
            let sql = match kind.as_str() {
                "r" => format!(
                    "SELECT format('%s %s', count(*), coalesce(md5(string_agg(h, ',' ORDER BY h)), ''))
                       FROM (SELECT md5(x::text) h FROM ONLY {rel} x) s"
                ),
                "S" => format!("SELECT format('%s %s', last_value, is_called) FROM {rel}"),
                _ => format!("SELECT '{kind}'"),
            };
            let v: String = c.query_one(&sql, &[]).await.unwrap().get(0);
            contents.insert(rel, v);
        }
        out.insert(
            side.to_string(),
            json!({ "schemas": schemas, "triggers": triggers, "relations": contents }),
        );
    }
    Value::Object(out)
}

/// The app as the fake holds it: maintenance, formation, config vars, attachments, releases,
/// backups.
async fn app_state(app: &str) -> Value {
    let s = fake().state(app).await;
    json!({
        "maintenance": s["maintenance"],
        "formation": s["formation"],
        "attachments": s["attachments"],
        "addons": s["addons"],
        "releases": s["releases"].as_array().map(Vec::len),
        "transfers": s["transfers"].as_array().map(Vec::len),
        "config": fake().config(app).await,
    })
}

/// The files of a case's working directory (it is also HOME) and their contents.
fn dir_state(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            if p.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                stack.push(p);
            } else {
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

async fn aws_inventory(ctx: &Ctx, name: &str) -> Vec<String> {
    let (env, name) = (ctx.aws.clone(), name.to_string());
    tokio::task::spawn_blocking(move || inventory(&env, &name).keys().cloned().collect())
        .await
        .unwrap()
}

/// One line of the report and the problems found.
struct Outcome {
    line: String,
    problems: Vec<String>,
}

async fn run_case(
    ctx: &Ctx,
    baseline: &BTreeMap<Db, Value>,
    app0: &Value,
    i: usize,
    c: &Case,
) -> Outcome {
    let vars = ctx.vars(i, c);
    let dir = ctx.scratch.join(format!("case-{i}"));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, text) in &c.files {
        std::fs::write(dir.join(name), subst(text, &vars)).unwrap();
    }
    let files_before = dir_state(&dir);
    let args: Vec<String> = command_line(c).iter().map(|a| subst(a, &vars)).collect();
    let p = &ctx.pairs[&c.db];
    let mut env: Vec<(String, String)> = vec![
        ("HEROKU2RDS_SOURCE_URL".into(), p.source_url()),
        ("HEROKU2RDS_TARGET_URL".into(), p.target_url()),
        ("HOME".into(), dir.display().to_string()),
    ];
    env.extend(ctx.aws.iter().cloned());
    env.extend(
        fake()
            .env(TOKEN)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v)),
    );
    for (k, v) in &c.env {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), subst(v, &vars)));
    }
    let lock = &ctx.locks[&c.db];
    let _guard = if NO_DB_COMMANDS.contains(&c.command()) {
        (Some(lock.read().await), None)
    } else {
        (None, Some(lock.write().await))
    };
    let t0 = Instant::now();
    let r = run(&dir, &args, &env).await;
    let took = t0.elapsed();

    let mut problems = Vec::new();
    let output = format!("{}\n{}", r.stdout, r.stderr);
    if r.code != c.code {
        problems.push(format!("exit {} instead of {}", r.code, c.code));
    }
    if !output.contains(c.says) {
        problems.push(format!("the output does not say {:?}", c.says));
    }
    let has_fix = |text: &str| text.lines().any(|l| l.trim_start().starts_with("fix:"));
    match c.fix {
        Fix::Stderr if !has_fix(&r.stderr) => problems.push("no `fix:` line on stderr".into()),
        Fix::Report if !has_fix(&r.stdout) => problems.push("no `fix:` in the report".into()),
        _ => {}
    }
    if output.contains("panicked") {
        problems.push("it panicked".into());
    }
    for s in &ctx.secrets {
        if output.contains(s.as_str()) {
            problems.push(format!(
                "a secret leaked ({}...)",
                s.chars().take(4).collect::<String>()
            ));
        }
    }
    if db_state(&ctx.admins[&c.db]).await != baseline[&c.db] {
        problems.push(format!("the {:?} databases changed", c.db));
    }
    if app_state(&ctx.app).await != *app0 {
        problems.push("the Heroku app changed".into());
    }
    if dir_state(&dir) != files_before {
        problems.push("files in the working directory (HOME) changed".into());
    }
    // AWS: the cases that leave something are checked (and cleaned up) here; everything else
    // is checked once after all cases (resource names carry the case's number).
    if !c.leaves.is_empty() {
        let name = &vars["{name}"];
        let want: Vec<String> = c.leaves.iter().map(|k| subst(k, &vars)).collect();
        let left = aws_inventory(ctx, name).await;
        if left != want {
            problems.push(format!("AWS holds {left:?} instead of {want:?}"));
        }
        let td = ["teardown", "--name", name, "--delete-target", "--yes"].map(String::from);
        let done = run(&dir, &td, &env).await;
        let left = aws_inventory(ctx, name).await;
        if done.code != 0 || !left.is_empty() {
            problems.push(format!(
                "teardown after the case: exit {}, left {left:?}: {}",
                done.code,
                ctx.mask(&done.stderr)
            ));
        }
    }
    if !problems.is_empty() {
        problems.push(format!(
            "command: {}\nstdout:\n{}\nstderr:\n{}",
            ctx.mask(&args.join(" ")),
            ctx.mask(&r.stdout),
            ctx.mask(&r.stderr)
        ));
    }
    Outcome {
        line: format!(
            "{:>2} {:<16} {:<58} want {} got {:>2} {:>5.1}s {}",
            i,
            c.command(),
            c.what,
            c.code,
            r.code,
            took.as_secs_f64(),
            if problems.is_empty() { "ok" } else { "FAILED" }
        ),
        problems,
    }
}

async fn pair(name: &str, source_sql: &str, target_sql: &str) -> Pair {
    let p = Pair::new(name).await;
    p.source_owner()
        .await
        .batch_execute(&format!("{SOURCE_SQL}{source_sql}"))
        .await
        .unwrap();
    p.target_master()
        .await
        .batch_execute(target_sql)
        .await
        .unwrap();
    p
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_table_every_command() {
    let started = Instant::now();
    let scratch = scratch_dir("bad-input-table");

    // The AWS emulator, private (IAM enforcement is global to a server): an administrator and
    // a user without any permission, then enforcement on.
    let moto_dir = scratch.clone();
    let moto = tokio::task::spawn_blocking(move || {
        let m = Moto::private(&[]);
        let root_env = aws_env(&m, "test", "test");
        let admin = iam_user(
            &m,
            &root_env,
            "admin",
            &ADMIN_POLICY.parse().unwrap(),
            &moto_dir,
        );
        let nothing = json!({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "iam:GetUser", "Resource": "*"}]});
        let noperm = iam_user(&m, &root_env, "noperm", &nothing, &moto_dir);
        enforce_iam(&m);
        (admin, noperm)
    });

    let (clean, keyless, nonempty, replicated) = tokio::join!(
        pair("bt_clean", "", ""),
        pair(
            "bt_keyless",
            "CREATE TABLE public.nokey (a int, b text); INSERT INTO public.nokey VALUES (1, 'x');",
            ""
        ),
        pair("bt_nonempty", "", "CREATE TABLE public.stray (id int);"),
        pair("bt_replicated", "", ""),
    );
    tokio::task::block_in_place(|| replicated.h2r(&["replicate", "--until", "caught-up"]))
        .expect_code(0);

    let f = tokio::task::block_in_place(fake);
    let app = app_name("bt-app");
    f.post(
        "/apps",
        quick(json!({
            "name": app, "database_url": replicated.source_url(),
            "config_vars": { "GREETING": "hello" },
            "formation": [{ "type": "web", "quantity": 1, "size": "Standard-1X", "command": "sleep 600" }],
        })),
    )
    .await;
    f.post(
        "/tokens",
        json!({ "token": EXPIRED_TOKEN, "expired": true }),
    )
    .await;
    f.post(
        "/tokens",
        json!({ "token": TWO_FACTOR_TOKEN, "two_factor_required": true }),
    )
    .await;
    f.post(
        "/tokens",
        json!({ "token": OTHER_APPS_TOKEN, "apps": ["someone-elses-app"] }),
    )
    .await;
    let fake_port: u16 = f.url.rsplit(':').next().unwrap().parse().unwrap();
    let newer_glibc = scratch.join("heroku2rds-newer-glibc");
    newer_glibc_copy(Path::new(BIN), &newer_glibc);

    let (admin, noperm) = moto.await.unwrap();
    let get =
        |env: &[(String, String)], k: &str| env.iter().find(|(key, _)| key == k).unwrap().1.clone();
    let noperm = (
        get(&noperm, "AWS_ACCESS_KEY_ID"),
        get(&noperm, "AWS_SECRET_ACCESS_KEY"),
    );
    let secrets = vec![
        root().password.clone(),
        WRONG_PASSWORD.into(),
        TOKEN.into(),
        BAD_TOKEN.into(),
        EXPIRED_TOKEN.into(),
        TWO_FACTOR_TOKEN.into(),
        OTHER_APPS_TOKEN.into(),
        get(&admin, "AWS_SECRET_ACCESS_KEY"),
        noperm.1.clone(),
        WRONG_AWS_SECRET.into(),
    ];
    let pairs = BTreeMap::from([
        (Db::Clean, clean),
        (Db::Keyless, keyless),
        (Db::NonEmpty, nonempty),
        (Db::Replicated, replicated),
    ]);
    let mut admins = BTreeMap::new();
    for (db, p) in &pairs {
        let sides = [p.source.admin(&p.name).await, p.target.admin(&p.name).await];
        admins.insert(*db, sides);
    }
    let ctx = Ctx {
        locks: pairs
            .keys()
            .map(|d| (*d, tokio::sync::RwLock::new(())))
            .collect(),
        pairs,
        admins,
        aws: admin,
        noperm,
        app,
        scratch,
        names: unique("bt"),
        closed_port: free_port(),
        fake_port,
        newer_glibc,
        secrets,
    };

    let mut baseline = BTreeMap::new();
    for (db, admins) in &ctx.admins {
        let state = db_state(admins).await;
        let has_tool_schema = |side: &str| {
            state[side]["schemas"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "heroku2rds")
        };
        let replicated = *db == Db::Replicated;
        assert_eq!(has_tool_schema("source"), replicated, "{db:?}: {state}");
        assert_eq!(has_tool_schema("target"), replicated, "{db:?}: {state}");
        baseline.insert(*db, state);
    }
    let app0 = app_state(&ctx.app).await;
    let setup = started.elapsed();

    // Every command has a case.
    let cases = cases();
    let missing: Vec<String> = heroku2rds::cli::Cli::command()
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .filter(|n| !cases.iter().any(|c| c.command() == n))
        .collect();
    assert!(
        missing.is_empty(),
        "commands without a bad-input case: {missing:?}"
    );
    assert!(cases.len() >= 30);

    let outcomes: Vec<Outcome> = futures_util::stream::iter(cases.iter().enumerate())
        .map(|(i, c)| run_case(&ctx, &baseline, &app0, i, c))
        .buffered(PARALLEL)
        .collect()
        .await;

    let report: Vec<&str> = outcomes.iter().map(|o| o.line.as_str()).collect();
    eprintln!(
        "bad input table: {} cases, setup {:.1}s, total {:.1}s\n{}",
        outcomes.len(),
        setup.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        report.join("\n")
    );
    let mut failures: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.problems.is_empty())
        .map(|o| format!("{}\n  {}", o.line, o.problems.join("\n  ")))
        .collect();
    // Nothing changed anywhere, whichever case would have done it.
    for (db, admins) in &ctx.admins {
        if db_state(admins).await != baseline[db] {
            failures.push(format!("after all cases: the {db:?} databases changed"));
        }
    }
    if app_state(&ctx.app).await != app0 {
        failures.push("after all cases: the Heroku app changed".into());
    }
    let left = aws_inventory(&ctx, "*").await;
    if !left.is_empty() {
        failures.push(format!(
            "after all cases: AWS holds {left:?} (the name ends in the number of the case that made it)"
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
