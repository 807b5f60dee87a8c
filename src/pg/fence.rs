//! The write fence on the source: from the start of the cutover's freeze, no session but the
//! tool's own can change a table of the source database, whoever it is (a dyno, a one-off or
//! Scheduler dyno, the server-side pooler, another app attached to the same add-on, an external
//! client) and however often it reconnects.
//!
//! The mechanism, in layers (the Heroku credential owns the tables and the database but is not a
//! superuser, so it can use neither event triggers nor `ALTER SYSTEM`):
//!
//! 1. **A statement trigger on every table.** `heroku2rds_fence` fires BEFORE every INSERT,
//!    UPDATE, DELETE and TRUNCATE and calls `heroku2rds.fence()`. It is installed with the
//!    capture (no-op body, a few microseconds per statement), so raising the fence is only a
//!    `CREATE OR REPLACE FUNCTION`: no table lock, no wait behind the application, O(1) at any
//!    number of tables. The raised body raises SQLSTATE 25006 with a message that says the
//!    database is being moved (after the switch: that it has moved, and where). Tables created
//!    since the capture get the trigger when the fence goes up, after the sessions have ended.
//! 2. **A read-only default for new sessions, where triggers cannot go.** A table the tool may
//!    not alter (owned by another role) gets no trigger; then `ALTER DATABASE ... SET
//!    default_transaction_read_only = on` (the owner may) makes new sessions read-only, and the
//!    sessions are ended again. It is not used otherwise: its error ("cannot execute INSERT in a
//!    read-only transaction") does not say why, and the triggers already hold. The tool's own
//!    sessions write only its change log, in explicit `READ WRITE` transactions.
//! 3. **Every session ended** (by the cutover): a transaction that wrote before the fence either
//!    commits (its changes are in the change log, which the drain applies) or dies.
//!
//! A rollback lowers the fence (the no-op body back, the database setting as it was, and the
//! sessions opened under the read-only default terminated so that they reconnect writable).
//! After the switch it stays up, saying where the database went, until `heroku2rds clean`.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::capture::{self, InstallOptions};
use super::conn::{query_error, quote_ident, quote_literal};
use crate::error::Result;

/// The statement trigger on every table of the source.
pub const FENCE_TRIGGER: &str = "heroku2rds_fence";

/// Creates the fence function (as a no-op) unless it exists, and its state table. Never lowers a
/// raised fence: a replicate restarted during a freeze runs this too.
pub const FENCE_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS heroku2rds.fence_state (
    id             int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    raised_at      timestamptz,
    moved_to       text,
    db_setting_set boolean NOT NULL DEFAULT false,
    db_setting_was text
);
DO $do$ BEGIN
    IF to_regprocedure('heroku2rds.fence()') IS NULL THEN
        CREATE FUNCTION heroku2rds.fence() RETURNS trigger LANGUAGE plpgsql AS $f$
        BEGIN
            RETURN NULL;
        END
        $f$;
    END IF;
END
$do$;
"#;

const LOWERED: &str =
    "CREATE OR REPLACE FUNCTION heroku2rds.fence() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    RETURN NULL;
END
$f$";

/// The statements that put the fence trigger on one table (in the capture's transaction).
pub fn trigger_sql(qualified: &str) -> String {
    format!(
        "DROP TRIGGER IF EXISTS {FENCE_TRIGGER} ON {qualified};
         CREATE TRIGGER {FENCE_TRIGGER} BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON {qualified}
             FOR EACH STATEMENT EXECUTE FUNCTION heroku2rds.fence();"
    )
}

/// What a raised fence says to a writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// During the freeze, before the point of no return.
    Moving,
    /// After the switch: the new home (host, port and database; never a password).
    Moved(String),
}

impl Notice {
    /// The error message and hint a blocked writer sees.
    pub fn text(&self) -> (String, String) {
        match self {
            Notice::Moving => (
                "heroku2rds: this database is being moved to Amazon RDS; writes are paused for the switch".into(),
                "retry in a minute: after the switch the app's DATABASE_URL points at the new database".into(),
            ),
            Notice::Moved(to) => (
                format!("heroku2rds: this database has moved to {to}; it no longer accepts writes"),
                "connect through the app's DATABASE_URL, which points at the new database; `heroku2rds clean` removes this fence".into(),
            ),
        }
    }

    fn function_sql(&self) -> String {
        let (message, hint) = self.text();
        format!(
            "CREATE OR REPLACE FUNCTION heroku2rds.fence() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'read_only_sql_transaction', MESSAGE = {}, HINT = {};
END
$f$",
            quote_literal(&message),
            quote_literal(&hint)
        )
    }
}

/// What raising the fence did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Raised {
    /// Whether new sessions start read-only too (only when some table could not get a trigger).
    pub read_only_default: bool,
}

/// Makes this session writable whatever the database default says (the tool's own sessions).
pub async fn writable(src: &Client) -> Result<()> {
    src.batch_execute("SET default_transaction_read_only = off")
        .await
        .map_err(|e| query_error(e, "making the tool's session on the source writable"))
}

/// Raises the fence (or changes what it says): the function body. Idempotent.
pub async fn raise(src: &Client, notice: &Notice) -> Result<Raised> {
    writable(src).await?;
    src.batch_execute(FENCE_DDL)
        .await
        .map_err(|e| query_error(e, "creating the write fence on the source"))?;
    let moved: Option<String> = match notice {
        Notice::Moving => None,
        Notice::Moved(to) => Some(to.clone()),
    };
    // The body and its record in one transaction: a fence that is up is always recorded, so a
    // rollback always finds it.
    src.batch_execute(&format!(
        "BEGIN READ WRITE; {};
         INSERT INTO heroku2rds.fence_state (id, raised_at, moved_to) VALUES (1, clock_timestamp(), {})
         ON CONFLICT (id) DO UPDATE SET raised_at = coalesce(fence_state.raised_at, excluded.raised_at),
                                        moved_to = excluded.moved_to;
         COMMIT",
        notice.function_sql(),
        moved.as_deref().map_or("NULL".to_string(), quote_literal)
    ))
    .await
    .map_err(|e| query_error(e, "raising the write fence on the source"))?;
    let read_only_default: bool = src
        .query_one("SELECT db_setting_set FROM heroku2rds.fence_state", &[])
        .await
        .map_err(|e| query_error(e, "reading the write fence"))?
        .get(0);
    Ok(Raised { read_only_default })
}

/// `ALTER DATABASE ... SET default_transaction_read_only = on`, remembering the setting it
/// replaces (once): for tables the triggers cannot cover. False when not allowed (not the
/// database's owner).
pub async fn set_read_only_default(src: &Client) -> Result<bool> {
    let row = src
        .query_one(
            "SELECT current_database()::text,
                    (SELECT s.cfg FROM pg_db_role_setting r JOIN pg_database d ON d.oid = r.setdatabase,
                            unnest(r.setconfig) s(cfg)
                      WHERE d.datname = current_database() AND r.setrole = 0
                        AND s.cfg LIKE 'default\\_transaction\\_read\\_only=%'),
                    (SELECT db_setting_set FROM heroku2rds.fence_state)",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the database's settings"))?;
    let (db, was, already): (String, Option<String>, bool) = (row.get(0), row.get(1), row.get(2));
    if already {
        return Ok(true);
    }
    // The setting and its record in one transaction: a crash between them would leave the
    // database read-only with nothing recorded to undo it.
    let was = was.map(|c| {
        c.trim_start_matches("default_transaction_read_only=")
            .to_string()
    });
    let alter = format!(
        "BEGIN READ WRITE;
         ALTER DATABASE {} SET default_transaction_read_only = on;
         UPDATE heroku2rds.fence_state SET db_setting_set = true, db_setting_was = {};
         COMMIT",
        quote_ident(&db),
        was.as_deref().map_or("NULL".to_string(), quote_literal)
    );
    match src.batch_execute(&alter).await {
        Ok(()) => Ok(true),
        Err(e) if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
            let _ = src.batch_execute("ROLLBACK").await;
            tracing::warn!(
                "could not make new sessions read-only by default (the source credential does not own the database); the table triggers still stop every write"
            );
            Ok(false)
        }
        Err(e) => {
            let _ = src.batch_execute("ROLLBACK").await;
            Err(query_error(
                e,
                "making new sessions on the source read-only",
            ))
        }
    }
}

/// Puts the fence trigger on every table of the source that lacks it (tables created since the
/// capture). Run after the other sessions ended, so the locks are free. Returns the tables it
/// could not fence (owned by another role), for [`set_read_only_default`].
pub async fn cover_all_tables(src: &Client, opts: InstallOptions) -> Result<Vec<String>> {
    let rows = src
        .query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p')
                AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'heroku2rds')
                AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
                AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = c.oid AND t.tgname = $1)
              ORDER BY 1",
            &[&FENCE_TRIGGER],
        )
        .await
        .map_err(|e| query_error(e, "listing tables without the write fence"))?;
    let mut unfenced = Vec::new();
    for r in &rows {
        let q: String = r.get(0);
        let sql = format!(
            "BEGIN READ WRITE; SET LOCAL lock_timeout = '{}ms'; {} COMMIT;",
            opts.lock_timeout.as_millis(),
            trigger_sql(&q)
        );
        match capture::execute_with_lock_retries(src, &q, &q, &sql, opts).await {
            Ok(()) => tracing::info!("write fence put on {q} (created since the capture)"),
            Err(e) if e.cause().sql_state() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) => {
                tracing::warn!(
                    "cannot put the write fence on {q} (owned by another role): new sessions are made read-only by default instead"
                );
                unfenced.push(q);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(unfenced)
}

/// When the fence was raised (None: it is down, or was never installed).
pub async fn raised_at(src: &Client) -> Result<Option<f64>> {
    let exists: bool = src
        .query_one(
            "SELECT to_regclass('heroku2rds.fence_state') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "looking for the write fence"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(src
        .query_opt(
            "SELECT extract(epoch FROM raised_at)::float8 FROM heroku2rds.fence_state WHERE raised_at IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the write fence"))?
        .map(|r| r.get(0)))
}

/// Lowers the fence: the no-op body, the database setting as it was, and the sessions opened
/// under the read-only default ended (they reconnect writable). Returns how many it ended.
/// Idempotent; a no-op when no fence was ever raised.
pub async fn lower(src: &Client) -> Result<usize> {
    writable(src).await?;
    let Some(raised) = raised_at(src).await? else {
        // Nothing recorded: still make sure no raising body is left behind.
        let exists: bool = src
            .query_one(
                "SELECT to_regprocedure('heroku2rds.fence()') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| query_error(e, "looking for the write fence"))?
            .get(0);
        if exists {
            src.batch_execute(&format!("BEGIN READ WRITE; {LOWERED}; COMMIT"))
                .await
                .map_err(|e| query_error(e, "lowering the write fence on the source"))?;
        }
        return Ok(0);
    };
    let row = src
        .query_one(
            "SELECT current_database()::text, db_setting_set, db_setting_was FROM heroku2rds.fence_state",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the write fence"))?;
    let (db, set, was): (String, bool, Option<String>) = (row.get(0), row.get(1), row.get(2));
    let restore = match (set, was) {
        (false, _) => String::new(),
        (true, None) => format!(
            "ALTER DATABASE {} RESET default_transaction_read_only;",
            quote_ident(&db)
        ),
        (true, Some(v)) => format!(
            "ALTER DATABASE {} SET default_transaction_read_only = {};",
            quote_ident(&db),
            quote_literal(&v)
        ),
    };
    src.batch_execute(&format!(
        "BEGIN READ WRITE; {LOWERED}; {restore}
         UPDATE heroku2rds.fence_state SET raised_at = NULL, moved_to = NULL, db_setting_set = false, db_setting_was = NULL;
         COMMIT"
    ))
    .await
    .map_err(|e| query_error(e, "lowering the write fence on the source"))?;
    // Sessions that started under the read-only default keep it until they reconnect.
    let mut ended = 0;
    if set {
        let pids: Vec<i32> = src
            .query(
                "SELECT a.pid FROM pg_stat_activity a
                  WHERE a.datname = current_database() AND a.pid <> pg_backend_pid()
                    AND a.backend_type = 'client backend'
                    AND a.application_name NOT LIKE 'heroku2rds%'
                    AND a.backend_start >= to_timestamp($1)
                    AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = a.usesysid AND r.rolsuper)",
                &[&raised],
            )
            .await
            .map_err(|e| query_error(e, "listing sessions opened under the fence"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for pid in pids {
            match src
                .query_one("SELECT pg_terminate_backend($1)", &[&pid])
                .await
            {
                Ok(r) => ended += usize::from(r.get::<_, bool>(0)),
                Err(e) => tracing::warn!("could not end session {pid} opened under the fence: {e}"),
            }
        }
    }
    // Give the terminated sessions a moment to go before the app is let back in.
    if ended > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(ended)
}
