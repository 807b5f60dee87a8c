//! Change capture on the source: one change log table and, on every replicated table, a row
//! trigger (insert/update/delete: the key, and the old key too when it changes) and a truncate
//! statement trigger. Triggers go in under a short `lock_timeout` with retries, so the
//! application never queues behind the tool for longer than that timeout.

use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::catalog::{Table, TOOL_SCHEMA};
use super::conn::{query_error, quote_ident};
use super::fence;
use crate::error::{Error, Result};
use crate::retry::Backoff;

/// Name of the row trigger on every captured table.
pub const ROW_TRIGGER: &str = "heroku2rds_capture_row";
/// Name of the truncate trigger on every captured table.
pub const TRUNCATE_TRIGGER: &str = "heroku2rds_capture_truncate";

/// The change log. `id` orders nothing but deletion: a smaller id can commit later, so apply
/// never checkpoints by id.
const CHANGE_LOG_DDL: &str = r#"
CREATE SCHEMA IF NOT EXISTS heroku2rds;
CREATE TABLE IF NOT EXISTS heroku2rds.changes (
    id    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    relid oid NOT NULL,
    op    "char" NOT NULL,
    key   text[],
    xid   bigint NOT NULL DEFAULT txid_current(),
    at    timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION heroku2rds.capture_truncate() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    INSERT INTO heroku2rds.changes (relid, op) VALUES (TG_RELID, 'T');
    RETURN NULL;
END
$f$;
"#;

/// Key types whose text form does not depend on session settings: anything else gets the
/// settings pinned on the trigger function so the key text parses back identically.
const STABLE_TEXT_TYPES: &[&str] = &[
    "smallint",
    "integer",
    "bigint",
    "text",
    "uuid",
    "numeric",
    "boolean",
    "citext",
    "public.citext",
];

/// Options of capture installation.
#[derive(Debug, Clone, Copy)]
pub struct InstallOptions {
    /// Lock timeout of each attempt.
    pub lock_timeout: Duration,
    /// Give up after waiting this long for one table.
    pub max_wait: Duration,
}

fn capture_function(t: &Table) -> String {
    let key = |rec: &str| {
        let items: Vec<String> = t
            .key
            .iter()
            .map(|k| format!("{rec}.{}::text", quote_ident(k)))
            .collect();
        format!("ARRAY[{}]", items.join(", "))
    };
    let row = |rec: &str| {
        let items: Vec<String> = t
            .key
            .iter()
            .map(|k| format!("{rec}.{}", quote_ident(k)))
            .collect();
        format!("ROW({})", items.join(", "))
    };
    let unstable = t.key.iter().any(|k| {
        t.columns.iter().find(|c| &c.name == k).is_none_or(|c| {
            !STABLE_TEXT_TYPES
                .iter()
                .any(|s| c.type_name == *s || c.type_name.starts_with("character"))
        })
    });
    let settings = if unstable {
        "SET DateStyle = 'ISO, MDY' SET IntervalStyle = 'postgres' SET TimeZone = 'UTC' \
         SET extra_float_digits = 3 SET bytea_output = 'hex'"
    } else {
        ""
    };
    format!(
        r#"CREATE OR REPLACE FUNCTION heroku2rds."capture_{oid}"() RETURNS trigger LANGUAGE plpgsql {settings} AS $f$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO heroku2rds.changes (relid, op, key) VALUES (TG_RELID, 'I', {new_key});
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO heroku2rds.changes (relid, op, key) VALUES (TG_RELID, 'U', {new_key});
        IF {old_row} IS DISTINCT FROM {new_row} THEN
            INSERT INTO heroku2rds.changes (relid, op, key) VALUES (TG_RELID, 'K', {old_key});
        END IF;
    ELSE
        INSERT INTO heroku2rds.changes (relid, op, key) VALUES (TG_RELID, 'D', {old_key});
    END IF;
    RETURN NULL;
END
$f$"#,
        oid = t.oid,
        new_key = key("NEW"),
        old_key = key("OLD"),
        old_row = row("OLD"),
        new_row = row("NEW"),
    )
}

/// Creates the change log (idempotent).
pub async fn install_log(src: &Client) -> Result<()> {
    fence::writable(src).await?;
    src.batch_execute(&format!("{CHANGE_LOG_DDL}{}", fence::FENCE_DDL)).await.map_err(|e| {
        query_error(e, "creating the heroku2rds schema and change log on the source")
            .with_fix("connect to the source as the database owner (it must be allowed to CREATE in the database)")
    })
}

/// True when both capture triggers exist on the table.
async fn installed(src: &Client, t: &Table) -> Result<bool> {
    let n: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = $1 AND tgname IN ($2, $3)",
            &[&t.oid, &ROW_TRIGGER, &TRUNCATE_TRIGGER],
        )
        .await
        .map_err(|e| query_error(e, "checking capture triggers"))?
        .get(0);
    Ok(n == 2)
}

/// Who holds locks the table's trigger installation waits for (pids, application names, and
/// how long their transactions have been open; never query texts, which can hold row data).
async fn blockers(src: &Client, table: &str) -> String {
    let rows = src
        .query(
            "SELECT a.pid, coalesce(a.application_name, ''), a.state,
                    coalesce(extract(epoch FROM now() - a.xact_start)::bigint, 0)
               FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
              WHERE l.relation = $1::text::regclass AND l.granted AND a.pid <> pg_backend_pid()",
            &[&table],
        )
        .await;
    match rows {
        Ok(rows) if !rows.is_empty() => rows
            .iter()
            .map(|r| {
                format!(
                    "pid {} ({}, {}, transaction open {}s)",
                    r.get::<_, i32>(0),
                    r.get::<_, String>(1),
                    r.get::<_, Option<String>>(2).unwrap_or_default(),
                    r.get::<_, i64>(3)
                )
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => "unknown sessions".into(),
    }
}

/// True when the fence trigger exists on the table.
async fn fenced(src: &Client, t: &Table) -> Result<bool> {
    let n: i64 = src
        .query_one(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = $1 AND tgname = $2",
            &[&t.oid, &fence::FENCE_TRIGGER],
        )
        .await
        .map_err(|e| query_error(e, "checking the write fence trigger"))?
        .get(0);
    Ok(n == 1)
}

/// Installs capture and the (idle) write fence on one table, retrying on lock timeouts with
/// backoff. A table without a key gets only the fence.
pub async fn install_table(src: &Client, t: &Table, opts: InstallOptions) -> Result<()> {
    let q = t.qualified();
    let sql = if t.has_key() {
        if installed(src, t).await? && fenced(src, t).await? {
            return Ok(());
        }
        format!(
            "BEGIN READ WRITE;
             SET LOCAL lock_timeout = '{ms}ms';
             {function};
             DROP TRIGGER IF EXISTS {ROW_TRIGGER} ON {q};
             DROP TRIGGER IF EXISTS {TRUNCATE_TRIGGER} ON {q};
             CREATE TRIGGER {ROW_TRIGGER} AFTER INSERT OR UPDATE OR DELETE ON {q}
                 FOR EACH ROW EXECUTE FUNCTION heroku2rds.\"capture_{oid}\"();
             CREATE TRIGGER {TRUNCATE_TRIGGER} AFTER TRUNCATE ON {q}
                 FOR EACH STATEMENT EXECUTE FUNCTION heroku2rds.capture_truncate();
             {fence}
             COMMIT;",
            ms = opts.lock_timeout.as_millis(),
            function = capture_function(t),
            oid = t.oid,
            fence = fence::trigger_sql(&q),
        )
    } else {
        if fenced(src, t).await? {
            return Ok(());
        }
        format!(
            "BEGIN READ WRITE; SET LOCAL lock_timeout = '{}ms'; {} COMMIT;",
            opts.lock_timeout.as_millis(),
            fence::trigger_sql(&q)
        )
    };
    execute_with_lock_retries(src, &t.display_name(), &q, &sql, opts).await
}

/// Runs `sql` (a transaction that locks `qualified` under a short `lock_timeout`), retrying with
/// backoff while the lock is not available, for up to `opts.max_wait`; says who holds the lock,
/// naming the table as `table`.
pub async fn execute_with_lock_retries(
    src: &Client,
    table: &str,
    qualified: &str,
    sql: &str,
    opts: InstallOptions,
) -> Result<()> {
    let started = Instant::now();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(15));
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        match src.batch_execute(sql).await {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!("triggers installed on {table} after {attempt} attempts");
                }
                return Ok(());
            }
            Err(e) => {
                let _ = src.batch_execute("ROLLBACK").await;
                let retryable = e.code().is_some_and(|c| {
                    *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED
                });
                if !retryable {
                    return Err(query_error(e, &format!("installing triggers on {table}")));
                }
                let who = blockers(src, qualified).await;
                if started.elapsed() + backoff.peek() > opts.max_wait {
                    return Err(Error::other(format!(
                        "could not lock {table} to install triggers within {}s: held by {who}",
                        opts.max_wait.as_secs()
                    ))
                    .with_fix("end that long transaction (or wait for the vacuum to finish), then re-run; the application was never blocked for longer than the lock timeout"));
                }
                tracing::warn!(
                    "{table} is locked by {who}; gave way after {} ms (attempt {attempt}), retrying in {:.1}s",
                    opts.lock_timeout.as_millis(),
                    backoff.peek().as_secs_f64()
                );
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Installs the change log and capture on every keyed table.
pub async fn install(src: &Client, tables: &[Table], opts: InstallOptions) -> Result<()> {
    install_log(src).await?;
    let keyed = tables.iter().filter(|t| t.has_key()).count();
    tracing::info!(
        "installing change capture on {keyed} table(s) and the idle write fence on {} (lock timeout {} ms)",
        tables.len(),
        opts.lock_timeout.as_millis()
    );
    for t in tables {
        install_table(src, t, opts).await?;
    }
    Ok(())
}

/// Removes capture triggers, functions, the change log and the tool's schema from the source.
/// Idempotent.
pub async fn remove(src: &Client, lock_timeout: Duration) -> Result<usize> {
    let rows = src
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname), t.tgname FROM pg_trigger t
               JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE t.tgname IN ($1, $2, $3)",
            &[&ROW_TRIGGER, &TRUNCATE_TRIGGER, &fence::FENCE_TRIGGER],
        )
        .await
        .map_err(|e| query_error(e, "listing capture triggers"))?;
    for r in &rows {
        let (table, trigger): (String, String) = (r.get(0), r.get(1));
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(15));
        let started = Instant::now();
        loop {
            let sql = format!(
                "BEGIN; SET LOCAL lock_timeout = '{}ms'; DROP TRIGGER IF EXISTS {} ON {table}; COMMIT;",
                lock_timeout.as_millis(),
                quote_ident(&trigger)
            );
            match src.batch_execute(&sql).await {
                Ok(()) => break,
                Err(e)
                    if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE)
                        && started.elapsed() < Duration::from_secs(600) =>
                {
                    let _ = src.batch_execute("ROLLBACK").await;
                    tracing::warn!(
                        "{table} is locked; retrying the trigger removal in {:.1}s",
                        backoff.peek().as_secs_f64()
                    );
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Err(e) => {
                    let _ = src.batch_execute("ROLLBACK").await;
                    return Err(query_error(e, &format!("removing capture from {table}")));
                }
            }
        }
    }
    src.batch_execute(&format!("DROP SCHEMA IF EXISTS {TOOL_SCHEMA} CASCADE"))
        .await
        .map_err(|e| query_error(e, "dropping the heroku2rds schema on the source"))?;
    Ok(rows.len())
}
