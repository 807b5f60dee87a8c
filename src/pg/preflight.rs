//! Preflight: what would break the migration, found before anything is changed.
//!
//! [`gather`] reads facts from the servers (read-only); [`evaluate`] is a pure function turning
//! facts into findings, so every rule is unit-tested without a server.

use serde::Serialize;
use tokio_postgres::Client;

use super::catalog::{self, KeyKind, Table};
use super::conn::{query_error, quote_ident, ConnSpec};
use super::schema;
use crate::error::Result;

/// What to do with tables that have no usable key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeylessMode {
    /// Refuse to start while such tables exist.
    Error,
    /// Copy them whole (and again at cutover, while writes are stopped).
    Recopy,
    /// Create them on the target but copy no data.
    Exclude,
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Stops the migration (exit 3).
    Blocking,
    /// Worth knowing; does not stop anything.
    Warning,
    /// For information.
    Info,
}

/// One thing preflight noticed.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// Stable identifier for machines, e.g. `keyless_table`.
    pub code: &'static str,
    /// What was found.
    pub message: String,
    /// What to do about it (SQL or steps), when there is something to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Facts about one server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerFacts {
    /// `user@host:port/db`, no password.
    pub url: String,
    /// Full version string.
    pub version: String,
    /// Major version.
    pub major: u32,
    /// Database encoding.
    pub encoding: String,
    /// Connection slots still free for non-superusers.
    pub free_connections: i64,
    /// Total database size in bytes.
    pub database_bytes: i64,
    /// Connection slots the shared lock table is sized for: `max_connections` +
    /// `max_prepared_transactions`.
    pub lock_connections: i64,
    /// `max_locks_per_transaction`.
    pub max_locks_per_transaction: i64,
}

impl ServerFacts {
    /// The shared lock table's size, as PostgreSQL documents it: `max_locks_per_transaction` x
    /// (`max_connections` + `max_prepared_transactions`). One transaction may use all of it.
    pub fn lock_slots(&self) -> i64 {
        self.max_locks_per_transaction * self.lock_connections
    }
}

/// Everything preflight reads, before judging it.
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The source server.
    pub source: ServerFacts,
    /// The target server, when given.
    pub target: Option<ServerFacts>,
    /// Major version of the pg_dump on PATH (None when missing).
    pub pg_dump_major: Option<u32>,
    /// The role connected to the source.
    pub source_role: String,
    /// Whether that role may create schemas in the source database.
    pub source_can_create_schema: bool,
    /// Tables to replicate.
    pub tables: Vec<Table>,
    /// Partitioned (parent) tables.
    pub partitioned: Vec<String>,
    /// Number of large objects on the source.
    pub large_objects: i64,
    /// Extensions installed on the source.
    pub source_extensions: Vec<String>,
    /// Extensions the target cannot create (not available there).
    pub missing_extensions: Vec<String>,
    /// Relations the schema restore creates in its one transaction, each holding a lock until
    /// it commits: tables, sequences, views, their TOAST tables and TOAST indexes.
    pub schema_locks: i64,
}

/// The preflight verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Facts read from the servers.
    pub facts: Facts,
    /// Findings, blocking first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when any finding blocks the migration.
    pub fn blocked(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.severity == Severity::Blocking)
    }
}

async fn server_facts(spec: &ConnSpec, client: &Client) -> Result<ServerFacts> {
    let row = client
        .query_one(
            "SELECT version(), current_setting('server_version_num')::int / 10000,
                    pg_encoding_to_char(d.encoding),
                    current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int
                      - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'),
                    pg_database_size(d.oid),
                    current_setting('max_connections')::bigint + current_setting('max_prepared_transactions')::bigint,
                    current_setting('max_locks_per_transaction')::bigint
               FROM pg_database d WHERE d.datname = current_database()",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading server facts"))?;
    let major: i32 = row.get(1);
    Ok(ServerFacts {
        url: spec.to_string(),
        version: row.get(0),
        major: major as u32,
        encoding: row.get(2),
        free_connections: row.get(3),
        database_bytes: row.get(4),
        lock_connections: row.get(5),
        max_locks_per_transaction: row.get(6),
    })
}

/// Reads the facts preflight judges. Read-only on both servers.
pub async fn gather(source: &ConnSpec, target: Option<&ConnSpec>) -> Result<Facts> {
    let src = source.connect().await?;
    let source_facts = server_facts(source, &src).await?;
    let role_row = src
        .query_one(
            "SELECT current_user::text, has_database_privilege(current_database(), 'CREATE')",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the source role"))?;
    let tables = catalog::tables(&src).await?;
    let partitioned = src
        .query(
            "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'p' AND n.nspname NOT IN ('pg_catalog','information_schema','heroku2rds') ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "listing partitioned tables"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let schema_locks = schema_locks(&src).await?;
    let large_objects: i64 = src
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map_err(|e| query_error(e, "counting large objects"))?
        .get(0);
    let source_extensions: Vec<String> = src
        .query(
            "SELECT extname::text FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "listing extensions"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let (target_facts, missing_extensions) = match target {
        Some(t) => {
            let tgt = t.connect().await?;
            let facts = server_facts(t, &tgt).await?;
            let available: Vec<String> = tgt
                .query("SELECT name::text FROM pg_available_extensions", &[])
                .await
                .map_err(|e| query_error(e, "listing extensions available on the target"))?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let missing = source_extensions
                .iter()
                .filter(|e| !available.contains(e))
                .cloned()
                .collect();
            (Some(facts), missing)
        }
        None => (None, Vec::new()),
    };
    Ok(Facts {
        source: source_facts,
        target: target_facts,
        pg_dump_major: schema::pg_dump_major().await,
        source_role: role_row.get(0),
        source_can_create_schema: role_row.get(1),
        tables,
        partitioned,
        large_objects,
        source_extensions,
        missing_extensions,
        schema_locks,
    })
}

/// How many relation locks restoring the source's schema (pre-data) in one transaction takes:
/// each table, sequence, view and foreign table, and each TOAST table with its index (user
/// indexes come later, one transaction each).
pub async fn schema_locks(src: &Client) -> Result<i64> {
    Ok(src
        .query_one(
            "SELECT count(*) + 2 * count(*) FILTER (WHERE c.reltoastrelid <> 0)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r','p','S','v','m','f','c')
                AND n.nspname NOT IN ('pg_catalog','information_schema','heroku2rds')
                AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "counting the source's relations"))?
        .get(0))
}

/// The `max_locks_per_transaction` that fits `locks` in the shared lock table of a server
/// with `connections` slots, with a quarter spare for the other sessions (rounded up to 64).
pub fn locks_per_transaction_for(locks: i64, connections: i64) -> i64 {
    let connections = connections.max(1);
    let want = (locks * 5 / 4 + connections - 1) / connections;
    (want.max(64) + 63) / 64 * 64
}

/// The SQL that gives a keyless table a key.
pub fn keyless_fix(t: &Table) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN heroku2rds_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;  \
         -- rewrites the table under an exclusive lock; if some columns already identify a row, prefer \
         ALTER TABLE ... ADD PRIMARY KEY (those columns)",
        t.qualified()
    )
}

/// Judges the facts. Pure: no I/O.
pub fn evaluate(f: &Facts, keyless: KeylessMode) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |severity, code, message: String, fix: Option<String>| {
        out.push(Finding {
            severity,
            code,
            message,
            fix,
        })
    };
    let src_major = f.source.major;
    match f.pg_dump_major {
        None => push(
            Severity::Blocking,
            "pg_dump_missing",
            "pg_dump was not found on PATH".into(),
            Some(format!("install the PostgreSQL {src_major} client (Debian/Ubuntu: apt-get install postgresql-client-{src_major})")),
        ),
        Some(m) if m < src_major => push(
            Severity::Blocking,
            "pg_dump_too_old",
            format!("pg_dump is version {m}, older than the source server ({src_major})"),
            Some(format!("install postgresql-client-{src_major} or newer and put it first on PATH")),
        ),
        Some(_) => {}
    }
    if let Some(t) = &f.target {
        if t.major < src_major {
            push(
                Severity::Blocking,
                "target_too_old",
                format!(
                    "the target runs PostgreSQL {}, older than the source ({src_major})",
                    t.major
                ),
                Some(format!(
                    "create the target with PostgreSQL {src_major} or newer"
                )),
            );
        }
        if t.encoding != f.source.encoding {
            let sev = if f.source.encoding == "SQL_ASCII" {
                Severity::Blocking
            } else {
                Severity::Warning
            };
            push(
                sev,
                "encoding_differs",
                format!(
                    "the source database is encoded {} and the target {}",
                    f.source.encoding, t.encoding
                ),
                Some(format!(
                    "create the target database with ENCODING '{}'",
                    f.source.encoding
                )),
            );
        }
        // The schema goes in as one transaction, so it is all there or none of it; its locks
        // must fit the target's shared lock table ("out of shared memory" otherwise).
        if f.schema_locks * 5 / 4 > t.lock_slots() {
            let need = locks_per_transaction_for(f.schema_locks, t.lock_connections);
            push(
                Severity::Blocking,
                "lock_budget",
                format!(
                    "restoring the source's schema takes about {} locks in one transaction, and \
                     the target's lock table holds {} (max_locks_per_transaction {} x \
                     (max_connections + max_prepared_transactions) {})",
                    f.schema_locks,
                    t.lock_slots(),
                    t.max_locks_per_transaction,
                    t.lock_connections
                ),
                Some(format!(
                    "set max_locks_per_transaction = {need} on the target and restart it \
                     (ALTER SYSTEM SET max_locks_per_transaction = {need}; on RDS in its DB \
                     parameter group, then reboot; `heroku2rds provision` sizes it itself), then \
                     re-run: nothing was changed"
                )),
            );
        }
        for e in &f.missing_extensions {
            push(
                Severity::Blocking,
                "extension_missing",
                format!("extension {e} is used on the source but not available on the target"),
                Some(format!(
                    "pick a target engine version that offers {e}, or drop it on the source (DROP EXTENSION {})",
                    quote_ident(e)
                )),
            );
        }
    }
    if !f.source_can_create_schema {
        push(
            Severity::Blocking,
            "cannot_create_schema",
            format!(
                "role {} cannot create schemas in the source database (needed for change capture)",
                f.source_role
            ),
            Some(format!(
                "connect as the database owner, or run: GRANT CREATE ON DATABASE ... TO {}",
                quote_ident(&f.source_role)
            )),
        );
    }
    let not_owned: Vec<String> = f
        .tables
        .iter()
        .filter(|t| !t.owned)
        .map(Table::display_name)
        .collect();
    if !not_owned.is_empty() {
        push(
            Severity::Blocking,
            "tables_not_owned",
            format!(
                "role {} does not own {} table(s), so it cannot install change capture on them: {}",
                f.source_role,
                not_owned.len(),
                summarize(&not_owned)
            ),
            Some("connect with the credential that owns the tables (on Heroku: the default credential, DATABASE_URL)".into()),
        );
    }
    for t in f.tables.iter().filter(|t| t.key_kind == KeyKind::None) {
        let (sev, what) = match keyless {
            KeylessMode::Error => (Severity::Blocking, "has no primary key and no unique index over NOT NULL columns"),
            KeylessMode::Recopy => (Severity::Warning, "has no usable key: it will be copied whole, and again during the cutover's write freeze"),
            KeylessMode::Exclude => (Severity::Warning, "has no usable key: its rows will NOT be copied (--keyless exclude)"),
        };
        push(
            sev,
            "keyless_table",
            format!(
                "table {} {what} ({} bytes{})",
                t.display_name(),
                t.bytes,
                if keyless == KeylessMode::Recopy {
                    format!(
                        "; about {:.1}s of write freeze at an assumed {:.0} MB/s: the cutover's plan measures it on this migration",
                        t.bytes as f64 / crate::cutover::estimate::ASSUMED_COPY_RATE,
                        crate::cutover::estimate::ASSUMED_COPY_RATE / 1e6
                    )
                } else {
                    String::new()
                }
            ),
            Some(if keyless == KeylessMode::Error {
                format!(
                    "{}; or re-run with --keyless recopy (small tables) or --keyless exclude",
                    keyless_fix(t)
                )
            } else {
                keyless_fix(t)
            }),
        );
    }
    if f.large_objects > 0 {
        push(
            Severity::Blocking,
            "large_objects",
            format!("the source holds {} large object(s) (pg_largeobject); heroku2rds does not copy them", f.large_objects),
            Some("move them into bytea columns, or copy them separately before cutover (pg_dump --large-objects)".into()),
        );
    }
    for t in f.tables.iter().filter(|t| t.unlogged) {
        push(
            Severity::Warning,
            "unlogged_table",
            format!("table {} is UNLOGGED: it stays UNLOGGED on the target and loses its rows on a crash there", t.display_name()),
            Some(format!("if that is not wanted: ALTER TABLE {} SET LOGGED", t.qualified())),
        );
    }
    let generated: Vec<String> = f
        .tables
        .iter()
        .filter(|t| t.columns.iter().any(|c| c.generated))
        .map(Table::display_name)
        .collect();
    if !generated.is_empty() {
        push(
            Severity::Info,
            "generated_columns",
            format!(
                "generated columns are recomputed by the target, not copied: {}",
                summarize(&generated)
            ),
            None,
        );
    }
    if !f.partitioned.is_empty() {
        push(
            Severity::Info,
            "partitioned_tables",
            format!(
                "partitioned tables are replicated partition by partition: {}",
                summarize(&f.partitioned)
            ),
            None,
        );
    }
    if f.source.free_connections < 4 {
        push(
            Severity::Blocking,
            "no_free_connections",
            format!("only {} connection slot(s) are free on the source", f.source.free_connections),
            Some("stop some clients (or scale down workers) so at least 4 connections are free; --jobs N uses N+2".into()),
        );
    }
    out.sort_by_key(|f| f.severity);
    out
}

fn summarize(names: &[String]) -> String {
    const SHOWN: usize = 10;
    let mut s = names
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    s
}

/// Runs preflight: gather, then evaluate.
pub async fn run(
    source: &ConnSpec,
    target: Option<&ConnSpec>,
    keyless: KeylessMode,
) -> Result<Report> {
    let facts = gather(source, target).await?;
    let findings = evaluate(&facts, keyless);
    Ok(Report { facts, findings })
}

/// Renders the report for a terminal.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let f = &r.facts;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "source: {} (PostgreSQL {}, {}, {} free connections, {})",
        f.source.url,
        f.source.major,
        f.source.encoding,
        f.source.free_connections,
        human_bytes(f.source.database_bytes)
    );
    if let Some(t) = &f.target {
        let _ = writeln!(
            s,
            "target: {} (PostgreSQL {}, {})",
            t.url, t.major, t.encoding
        );
    }
    let _ = writeln!(
        s,
        "pg_dump: {}",
        f.pg_dump_major
            .map_or("not found".to_string(), |m| m.to_string())
    );
    let _ = writeln!(s, "source role: {}", f.source_role);
    let _ = writeln!(s, "\n{} table(s) to replicate:", f.tables.len());
    let _ = writeln!(
        s,
        "  {:<48} {:>12} {:>10}  key",
        "table", "est. rows", "size"
    );
    let mut tables: Vec<&Table> = f.tables.iter().collect();
    tables.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    for t in tables {
        let key = match &t.key_kind {
            KeyKind::PrimaryKey => format!("primary key ({})", t.key.join(", ")),
            KeyKind::UniqueIndex(i) => format!("unique index {i} ({})", t.key.join(", ")),
            KeyKind::None => "NONE".to_string(),
        };
        let _ = writeln!(
            s,
            "  {:<48} {:>12} {:>10}  {key}",
            t.display_name(),
            t.est_rows.max(0),
            human_bytes(t.bytes)
        );
    }
    let _ = writeln!(s);
    if r.findings.is_empty() {
        let _ = writeln!(s, "no problems found");
    }
    for finding in &r.findings {
        let tag = match finding.severity {
            Severity::Blocking => "BLOCKING",
            Severity::Warning => "warning ",
            Severity::Info => "info    ",
        };
        let _ = writeln!(s, "{tag} {}", finding.message);
        if let Some(fix) = &finding.fix {
            let _ = writeln!(s, "         fix: {fix}");
        }
    }
    s
}

/// `1.5 GB` style sizes.
pub fn human_bytes(b: i64) -> String {
    let b = b.max(0) as f64;
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{} B", b as i64)
    } else {
        format!("{v:.1} {}", units[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::catalog::Column;

    fn server(major: u32) -> ServerFacts {
        ServerFacts {
            url: "u".into(),
            version: "v".into(),
            major,
            encoding: "UTF8".into(),
            free_connections: 50,
            database_bytes: 1,
            lock_connections: 100,
            max_locks_per_transaction: 64,
        }
    }

    fn table(name: &str, key: bool) -> Table {
        Table {
            oid: 1,
            schema: "public".into(),
            name: name.into(),
            columns: vec![Column {
                name: "id".into(),
                type_name: "integer".into(),
                generated: false,
                not_null: key,
            }],
            key: if key { vec!["id".into()] } else { vec![] },
            key_kind: if key {
                KeyKind::PrimaryKey
            } else {
                KeyKind::None
            },
            integer_key: key,
            unlogged: false,
            partition_of: None,
            est_rows: 10,
            bytes: 8192,
            pages: 1,
            owned: true,
        }
    }

    fn facts() -> Facts {
        Facts {
            source: server(15),
            target: Some(server(15)),
            pg_dump_major: Some(15),
            source_role: "app".into(),
            source_can_create_schema: true,
            tables: vec![table("a", true)],
            partitioned: vec![],
            large_objects: 0,
            source_extensions: vec![],
            missing_extensions: vec![],
            schema_locks: 40,
        }
    }

    fn codes(f: &Facts, mode: KeylessMode) -> Vec<(&'static str, Severity)> {
        evaluate(f, mode)
            .into_iter()
            .map(|x| (x.code, x.severity))
            .collect()
    }

    #[test]
    fn a_schema_larger_than_the_targets_lock_table_is_blocking_with_the_setting_to_use() {
        assert_eq!(locks_per_transaction_for(100, 100), 64);
        assert_eq!(locks_per_transaction_for(12_000, 100), 192);
        assert_eq!(locks_per_transaction_for(80_000, 200), 512);
        let mut f = facts();
        f.target = Some(server(15));
        assert!(evaluate(&f, KeylessMode::Error)
            .iter()
            .all(|x| x.code != "lock_budget"));
        f.schema_locks = 6_000;
        let found = evaluate(&f, KeylessMode::Error);
        let lb = found
            .iter()
            .find(|x| x.code == "lock_budget")
            .expect("lock_budget");
        assert_eq!(lb.severity, Severity::Blocking);
        assert!(
            lb.message.contains("about 6000 locks") && lb.message.contains("holds 6400"),
            "{}",
            lb.message
        );
        assert!(
            lb.fix
                .as_deref()
                .unwrap()
                .contains("max_locks_per_transaction = 128"),
            "{lb:?}"
        );
    }

    #[test]
    fn clean_facts_have_no_findings() {
        assert!(codes(&facts(), KeylessMode::Error).is_empty());
    }

    #[test]
    fn versions_block() {
        let mut f = facts();
        f.target = Some(server(14));
        f.pg_dump_major = Some(13);
        let c = codes(&f, KeylessMode::Error);
        assert!(c.contains(&("target_too_old", Severity::Blocking)), "{c:?}");
        assert!(
            c.contains(&("pg_dump_too_old", Severity::Blocking)),
            "{c:?}"
        );
        f.pg_dump_major = None;
        assert!(codes(&f, KeylessMode::Error).contains(&("pg_dump_missing", Severity::Blocking)));
        f.target = Some(server(16));
        f.pg_dump_major = Some(16);
        assert!(codes(&f, KeylessMode::Error).is_empty());
    }

    #[test]
    fn keyless_depends_on_mode() {
        let mut f = facts();
        f.tables.push(table("nokey", false));
        assert_eq!(
            codes(&f, KeylessMode::Error),
            vec![("keyless_table", Severity::Blocking)]
        );
        assert_eq!(
            codes(&f, KeylessMode::Recopy),
            vec![("keyless_table", Severity::Warning)]
        );
        assert_eq!(
            codes(&f, KeylessMode::Exclude),
            vec![("keyless_table", Severity::Warning)]
        );
        let fix = evaluate(&f, KeylessMode::Error)[0]
            .fix
            .clone()
            .unwrap_or_default();
        assert!(
            fix.contains("ALTER TABLE \"public\".\"nokey\" ADD COLUMN"),
            "{fix}"
        );
    }

    #[test]
    fn ownership_schema_rights_lo_and_slots_block() {
        let mut f = facts();
        f.tables[0].owned = false;
        f.source_can_create_schema = false;
        f.large_objects = 3;
        f.source.free_connections = 2;
        f.missing_extensions = vec!["postgis".into()];
        let c = codes(&f, KeylessMode::Error);
        for code in [
            "tables_not_owned",
            "cannot_create_schema",
            "large_objects",
            "no_free_connections",
            "extension_missing",
        ] {
            assert!(c.contains(&(code, Severity::Blocking)), "{code} in {c:?}");
        }
    }

    #[test]
    fn warnings_do_not_block_and_sort_after_blockers() {
        let mut f = facts();
        f.tables[0].unlogged = true;
        f.tables[0].columns[0].generated = true;
        f.partitioned = vec!["public.p".into()];
        f.large_objects = 1;
        let r = evaluate(&f, KeylessMode::Error);
        assert_eq!(r[0].code, "large_objects");
        assert!(r[1..].iter().all(|x| x.severity != Severity::Blocking));
        let mut g = facts();
        if let Some(t) = g.target.as_mut() {
            t.encoding = "LATIN1".into();
        }
        assert_eq!(
            codes(&g, KeylessMode::Error),
            vec![("encoding_differs", Severity::Warning)]
        );
        g.source.encoding = "SQL_ASCII".into();
        assert_eq!(
            codes(&g, KeylessMode::Error),
            vec![("encoding_differs", Severity::Blocking)]
        );
    }
}
