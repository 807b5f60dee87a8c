//! Continuous verification: while following, every replicated table is compared range by range
//! in the background, at a bounded rate, and the keys that apply rewrote since are compared key
//! by key. At the cutover, with writes fenced and the log drained, only what was not proven yet
//! is compared again: the keys touched since their range was compared, the ranges never
//! compared, and a small random sample of the rest as a check of the mechanism.
//!
//! # Why a range compared once stays proven
//!
//! Only apply writes the target before the switch, and every apply transaction records the keys
//! it rewrote in `heroku2rds.touched` (with a fresh sequence number), holding the advisory lock
//! [`APPLY_LOCK`] for the whole transaction. A range scan takes its target snapshot while holding
//! that lock, so no apply is half done in it, and notes the sequence's value `F` then. For a key
//! whose rows were equal in that target snapshot and the later source snapshot, any later
//! difference needs a later change: on the target only an apply, which touches the key with a
//! number above `F`; on the source a write, whose change-log row is applied later, which touches
//! it too. So after a scan the range's touched keys numbered up to `F` are forgotten, keys that
//! differed in the scan are kept as suspects (touched again), and the final verification only
//! has to compare touched keys and ranges never scanned.
//!
//! # In-flight changes never raise a false difference
//!
//! A key is judged only by a key check, which holds [`APPLY_LOCK`] from its target read until
//! after it read the source and the change log in one snapshot: no apply commits in between.
//! A key whose rows differ while the log still holds a change of it is in flight (the apply of
//! that change touches it again); one that differs with nothing in the log was lost, since every
//! source write logs its key in the same transaction. That is a real difference: recorded with
//! its table and key in `heroku2rds.differences`, shown by `status`, and the cutover refuses to
//! start while one is recorded.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_postgres::Client;

use super::{DiffKind, Difference, Plan};
use crate::cancel::Cancel;
use crate::error::{Error, Result};
use crate::pg::catalog::Table;
use crate::pg::conn::{query_error, quote_ident, ConnSpec};
use crate::pg::store;

/// Advisory lock held by every apply transaction on the target, and by a verification while it
/// reads the target.
pub const APPLY_LOCK: i64 = 0x6832_7264_6170;
/// Rows per range aimed at.
const RANGE_ROWS: i64 = 10_000;
/// Background verification waits while the change log holds more than this.
const MAX_BACKLOG: i64 = 20_000;
/// Keys compared per key check.
const KEYS_PER_CHECK: i64 = 2_000;
/// Hash buckets per table at most (other than integer keys).
const MAX_BUCKETS: i64 = 4_096;
/// Differing rows of one scan kept as suspects; beyond that the range stays unproven.
const MAX_SUSPECTS: usize = 10_000;
/// Proven ranges the final verification compares again, drawn at random from all tables.
pub const SAMPLE_RANGES: i64 = 8;
/// Dirty integer ranges the final verification scans whole, at most (beyond them, only their
/// touched keys are compared).
const FREEZE_DIRTY_RANGES: i64 = 8;
/// How often recorded differences are compared again in the background.
const RECHECK_EVERY: Duration = Duration::from_secs(10);
/// Default rate of background verification, bytes of table data read per second on each side.
pub const DEFAULT_RATE: u64 = 4 * 1024 * 1024;

/// Settings both servers use while verifying: the text form of keys and rows must not depend on
/// a session's settings (the capture trigger pins the same ones).
const PINNED: &str = "SET LOCAL DateStyle = 'ISO, MDY'; SET LOCAL IntervalStyle = 'postgres'; \
    SET LOCAL TimeZone = 'UTC'; SET LOCAL extra_float_digits = 3; SET LOCAL bytea_output = 'hex'";

/// The records of continuous verification, on the target. Idempotent.
pub const DDL: &str = r#"
CREATE TABLE IF NOT EXISTS heroku2rds.verify_plans (
    table_id   int PRIMARY KEY,
    relid      oid NOT NULL,
    lo         bigint,
    width      bigint,
    mask       int NOT NULL DEFAULT 0,
    planned_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS verify_plans_relid ON heroku2rds.verify_plans (relid);
CREATE TABLE IF NOT EXISTS heroku2rds.verify_ranges (
    table_id      int NOT NULL,
    range_no      bigint NOT NULL,
    rows          bigint,
    verified_at   timestamptz,
    covers_change bigint,
    checked_at    timestamptz,
    dirty_seq     bigint,
    PRIMARY KEY (table_id, range_no)
);
CREATE SEQUENCE IF NOT EXISTS heroku2rds.touch_seq;
CREATE TABLE IF NOT EXISTS heroku2rds.touched (
    table_id int NOT NULL,
    key      text[] NOT NULL,
    seq      bigint NOT NULL DEFAULT nextval('heroku2rds.touch_seq'),
    PRIMARY KEY (table_id, key)
);
CREATE INDEX IF NOT EXISTS touched_seq ON heroku2rds.touched (seq);
CREATE TABLE IF NOT EXISTS heroku2rds.differences (
    table_id int NOT NULL,
    key      text[] NOT NULL,
    kind     text NOT NULL,
    found_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (table_id, key)
);
CREATE TABLE IF NOT EXISTS heroku2rds.verify_stats (
    id      int PRIMARY KEY DEFAULT 1 CHECK (id = 1),
    rows    bigint NOT NULL DEFAULT 0,
    bytes   bigint NOT NULL DEFAULT 0,
    seconds float8 NOT NULL DEFAULT 0
);
INSERT INTO heroku2rds.verify_stats (id) VALUES (1) ON CONFLICT DO NOTHING;
"#;

/// What apply records in its transaction for the keys it rewrote in table `relid` (one text[]
/// parameter per key column, then the oid): the keys are touched and their ranges dirty (a range
/// beyond those planned is created, never proven).
pub fn touch_sql(key_columns: usize) -> String {
    let params: Vec<String> = (0..key_columns)
        .map(|i| format!("${}::text[]", i + 1))
        .collect();
    let names: Vec<String> = (0..key_columns).map(|i| format!("u{i}")).collect();
    let text = if key_columns == 1 {
        "u0".to_string()
    } else {
        format!("ARRAY[{}]::text", names.join(", "))
    };
    format!(
        "WITH k AS (SELECT p.table_id, p.lo, p.width, p.mask, ARRAY[{names}] AS key,
                           {text} AS key_text, u0 AS first
                      FROM heroku2rds.verify_plans p, unnest({params}) AS u({names})
                     WHERE p.relid = ${oid}),
              r AS (INSERT INTO heroku2rds.verify_ranges AS v (table_id, range_no, dirty_seq)
                    SELECT table_id, range_no, nextval('heroku2rds.touch_seq')
                      FROM (SELECT DISTINCT table_id,
                                   CASE WHEN lo IS NOT NULL THEN floor((first::numeric - lo) / width)::bigint
                                        ELSE ((('x' || substr(md5(key_text), 1, 8))::bit(32)::int) & mask)::bigint END AS range_no
                              FROM k) d
                    ON CONFLICT (table_id, range_no) DO UPDATE SET dirty_seq = excluded.dirty_seq)
         INSERT INTO heroku2rds.touched AS t (table_id, key) SELECT table_id, key FROM k
         ON CONFLICT (table_id, key) DO UPDATE SET seq = nextval('heroku2rds.touch_seq')",
        names = names.join(", "),
        params = params.join(", "),
        oid = key_columns + 1
    )
}

/// What apply records for a truncate of table `$1` (source oid): every range is unproven.
pub const TRUNCATED_SQL: &str = "UPDATE heroku2rds.verify_ranges SET verified_at = NULL, dirty_seq = nextval('heroku2rds.touch_seq')
     WHERE table_id IN (SELECT table_id FROM heroku2rds.verify_plans WHERE relid = $1)";

/// How one table is split into ranges.
#[derive(Debug, Clone)]
struct RangePlan {
    table_id: i32,
    table: Table,
    /// Integer key: ranges of `width` keys from `lo`. Otherwise md5 buckets `0..=mask`.
    int: Option<(i64, i64)>,
    mask: i64,
}

impl RangePlan {
    /// The key as text in the form the change log holds it (one element per key column).
    fn key_array(&self) -> String {
        let items: Vec<String> = self
            .table
            .key
            .iter()
            .map(|k| format!("{}::text", quote_ident(k)))
            .collect();
        format!("ARRAY[{}]::text[]", items.join(", "))
    }

    /// The range number of a row (over the table's columns).
    fn row_range(&self) -> String {
        match self.int {
            Some((lo, width)) => format!(
                "floor(({}::numeric - ({lo})) / {width})::bigint",
                quote_ident(&self.table.key[0])
            ),
            None => {
                let text = if self.table.key.len() == 1 {
                    format!("{}::text", quote_ident(&self.table.key[0]))
                } else {
                    format!("{}::text", self.key_array())
                };
                format!(
                    "((('x' || substr(md5({text}), 1, 8))::bit(32)::int) & {})::bigint",
                    self.mask
                )
            }
        }
    }

    /// The range number of a key held as text[] in column `col`.
    fn key_range(&self, col: &str) -> String {
        match self.int {
            Some((lo, width)) => format!("floor(({col}[1]::numeric - ({lo})) / {width})::bigint"),
            None => {
                let text = if self.table.key.len() == 1 {
                    format!("{col}[1]")
                } else {
                    format!("{col}::text")
                };
                format!(
                    "((('x' || substr(md5({text}), 1, 8))::bit(32)::int) & {})::bigint",
                    self.mask
                )
            }
        }
    }

    /// WHERE clause selecting the rows of `ranges`: an index range for one integer range.
    fn predicate(&self, ranges: &[i64]) -> String {
        match (self.int, ranges) {
            (Some((lo, width)), [r]) => {
                let k = quote_ident(&self.table.key[0]);
                let a = lo as i128 + *r as i128 * width as i128;
                format!("{k} >= {a} AND {k} < {}", a + width as i128)
            }
            _ => format!(
                "{} = ANY('{{{}}}'::bigint[])",
                self.row_range(),
                ranges
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        }
    }

    fn summary_plan(&self) -> Plan {
        Plan {
            table: self.table.clone(),
            key_text: self.key_array(),
            bucket: self.row_range(),
            units: Vec::new(),
            source_key_range: None,
            target_key_range: None,
        }
    }

    /// Average bytes per row, for the rate limit and the reports.
    fn row_bytes(&self) -> i64 {
        if self.table.est_rows > 0 {
            (self.table.bytes / self.table.est_rows).max(1)
        } else {
            100
        }
    }
}

/// Key (as text per column) -> row hash.
type Rows = HashMap<Vec<String>, String>;

async fn key_rows(c: &Client, p: &RangePlan, keys: &[Vec<String>]) -> Result<Rows> {
    let t = &p.table;
    let arrays: Vec<String> = (0..t.key.len())
        .map(|i| format!("${}::text[]", i + 1))
        .collect();
    let sql = format!(
        "SELECT {}, md5(ROW({})::text) FROM ONLY {} WHERE {}",
        p.key_array(),
        t.all_columns(),
        t.qualified(),
        crate::pg::apply::key_predicate(t, &arrays)
    );
    let columns: Vec<Vec<String>> = (0..t.key.len())
        .map(|i| {
            keys.iter()
                .map(|k| k.get(i).cloned().unwrap_or_default())
                .collect()
        })
        .collect();
    let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = columns
        .iter()
        .map(|c| c as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    let rows = c
        .query(&sql, &refs)
        .await
        .map_err(|e| query_error(e, &format!("comparing keys of {}", t.display_name())))?;
    Ok(keyed(&rows))
}

async fn range_rows(c: &Client, p: &RangePlan, pred: &str, ranges: &[i64]) -> Result<Rows> {
    let t = &p.table;
    let sql = format!(
        "SELECT {k}, md5(ROW({cols})::text) FROM ONLY {q} WHERE {pred} AND {r} = ANY($1)",
        k = p.key_array(),
        cols = t.all_columns(),
        q = t.qualified(),
        r = p.row_range()
    );
    let rows = c
        .query(&sql, &[&ranges])
        .await
        .map_err(|e| query_error(e, &format!("narrowing differences in {}", t.display_name())))?;
    Ok(keyed(&rows))
}

/// (key, row hash) rows as a map.
fn keyed(rows: &[tokio_postgres::Row]) -> Rows {
    rows.iter()
        .map(|r| {
            let k: Vec<Option<String>> = r.get(0);
            (
                k.into_iter().map(Option::unwrap_or_default).collect(),
                r.get(1),
            )
        })
        .collect()
}

/// Keys whose rows differ, and how.
fn differing(src: &Rows, tgt: &Rows) -> Vec<(Vec<String>, DiffKind)> {
    let mut out = Vec::new();
    for (k, h) in src {
        match tgt.get(k) {
            None => out.push((k.clone(), DiffKind::MissingOnTarget)),
            Some(x) if x != h => out.push((k.clone(), DiffKind::Changed)),
            _ => {}
        }
    }
    for k in tgt.keys().filter(|k| !src.contains_key(*k)) {
        out.push((k.clone(), DiffKind::ExtraOnTarget));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn kind_str(k: DiffKind) -> &'static str {
    match k {
        DiffKind::MissingOnTarget => "missing_on_target",
        DiffKind::ExtraOnTarget => "extra_on_target",
        DiffKind::Changed => "changed",
    }
}

/// The ranges of every replicated table with a plan.
async fn load_plans(tgt: &Client) -> Result<BTreeMap<i32, RangePlan>> {
    let tables = crate::pg::replicate::load_tables(tgt).await?;
    let rows = tgt
        .query(
            "SELECT table_id, lo, width, mask FROM heroku2rds.verify_plans",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the verification plans"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            let id: i32 = r.get(0);
            let table = tables.get(&id)?.clone();
            let int = r.get::<_, Option<i64>>(1).zip(r.get::<_, Option<i64>>(2));
            Some((
                id,
                RangePlan {
                    table_id: id,
                    table,
                    int,
                    mask: r.get::<_, i32>(3) as i64,
                },
            ))
        })
        .collect())
}

/// Plans the ranges of replicated tables that have none yet (on the target only: the source is
/// not read). Returns how many tables were planned.
pub async fn plan_tables(tgt: &mut Client) -> Result<usize> {
    store::upgrade(tgt).await?;
    let tables = crate::pg::replicate::load_tables(tgt).await?;
    let modes = store::table_modes(tgt).await?;
    let planned: HashSet<i32> = tgt
        .query("SELECT table_id FROM heroku2rds.verify_plans", &[])
        .await
        .map_err(|e| query_error(e, "reading the verification plans"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut n = 0;
    for (id, t) in tables {
        if planned.contains(&id) || !t.has_key() || modes.get(&id).is_none_or(|m| m != "copy") {
            continue;
        }
        let est: i64 = tgt
            .query_one(
                "SELECT greatest(reltuples::bigint, $2) FROM pg_class WHERE oid = $1::text::regclass",
                &[&t.qualified(), &t.est_rows.max(0)],
            )
            .await
            .map_err(|e| query_error(e, &format!("sizing {}", t.display_name())))?
            .get(0);
        let key_range = if t.integer_key {
            super::int_key_range(tgt, &t).await?
        } else {
            None
        };
        let tx = tgt
            .transaction()
            .await
            .map_err(|e| query_error(e, "planning verification ranges"))?;
        // Apply writes these records too: one writer at a time (no deadlock).
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPLY_LOCK])
            .await
            .map_err(|e| query_error(e, "waiting for the apply lock"))?;
        let count = if t.integer_key {
            let (lo, hi) = key_range.unwrap_or((0, 0));
            let span = hi as i128 - lo as i128 + 1;
            let ranges = ((est + RANGE_ROWS - 1) / RANGE_ROWS).max(1) as i128;
            let width =
                ((span + ranges - 1) / ranges).clamp(RANGE_ROWS as i128, i64::MAX as i128) as i64;
            let count = ((span + width as i128 - 1) / width as i128) as i64;
            tx.execute(
                "INSERT INTO heroku2rds.verify_plans (table_id, relid, lo, width) VALUES ($1, $2, $3, $4)",
                &[&id, &t.oid, &lo, &width],
            )
            .await
            .map_err(|e| query_error(e, "recording a verification plan"))?;
            count
        } else {
            let mask = ((est / RANGE_ROWS).max(1) as u64)
                .next_power_of_two()
                .min(MAX_BUCKETS as u64) as i64
                - 1;
            tx.execute(
                "INSERT INTO heroku2rds.verify_plans (table_id, relid, mask) VALUES ($1, $2, $3)",
                &[&id, &t.oid, &(mask as i32)],
            )
            .await
            .map_err(|e| query_error(e, "recording a verification plan"))?;
            mask + 1
        };
        tx.execute(
            "INSERT INTO heroku2rds.verify_ranges (table_id, range_no) SELECT $1, generate_series(0, $2::bigint - 1)
             ON CONFLICT DO NOTHING",
            &[&id, &count],
        )
        .await
        .map_err(|e| query_error(e, "recording verification ranges"))?;
        tx.commit()
            .await
            .map_err(|e| query_error(e, "planning verification ranges"))?;
        n += 1;
    }
    Ok(n)
}

/// What one check read and found.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Checked {
    /// Ranges scanned.
    pub ranges: u64,
    /// Keys compared one by one.
    pub keys: u64,
    /// Rows read on the source.
    pub rows: u64,
    /// Bytes of table data read on the source (estimated from the table's average row).
    pub bytes: u64,
    /// Keys that differ with no change of theirs in flight (real differences).
    pub differences: u64,
    /// Keys that differ only because a change of theirs is not applied yet.
    pub in_flight: u64,
}

impl Checked {
    fn add(&mut self, o: Checked) {
        self.ranges += o.ranges;
        self.keys += o.keys;
        self.rows += o.rows;
        self.bytes += o.bytes;
        self.differences += o.differences;
        self.in_flight += o.in_flight;
    }
}

async fn begin_source_snapshot(src: &Client) -> Result<()> {
    src.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {PINNED}"
    ))
    .await
    .map_err(|e| query_error(e, "starting a verification snapshot on the source"))
}

async fn end_source_snapshot(src: &Client) {
    let _ = src.batch_execute("COMMIT").await;
}

/// The touch sequence's value, read while no apply runs: every apply that commits later touches
/// its keys with a higher number.
async fn touch_fence(tgt: &Client) -> Result<i64> {
    tgt.batch_execute("BEGIN")
        .await
        .map_err(|e| query_error(e, "reading the touch sequence"))?;
    let read = async {
        tgt.execute("SELECT pg_advisory_xact_lock($1)", &[&APPLY_LOCK])
            .await
            .map_err(|e| query_error(e, "waiting for the apply lock"))?;
        tgt.query_one(
            "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM heroku2rds.touch_seq",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the touch sequence"))
    }
    .await;
    tgt.batch_execute(if read.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .await
        .map_err(|e| query_error(e, "reading the touch sequence"))?;
    Ok(read?.get(0))
}

/// Keys as a JSON array of arrays of text, for statements over many keys.
fn keys_json(keys: &[&Vec<String>]) -> serde_json::Value {
    serde_json::Value::Array(
        keys.iter()
            .map(|k| serde_json::Value::from(k.to_vec()))
            .collect(),
    )
}

/// The keys of `$2` (a JSON array of text arrays), as text[] values.
const JSON_KEYS: &str =
    "(SELECT ARRAY(SELECT jsonb_array_elements_text(e)) FROM jsonb_array_elements($2::jsonb) e)";

/// Compares `keys` of one table: equal keys are forgotten, keys with a change in flight stay
/// touched, the others are recorded as differences.
///
/// The apply lock is held only to read the touch sequence (`F`). Then the source is read in one
/// snapshot (rows and the table's change log), then the target. A key that differs is in flight
/// when the log held a change of it, or when an apply touched it after `F` (its number is
/// higher); otherwise it is a real difference: with no change pending, the target held the
/// source's row when `F` was read, and nothing rewrote it since.
async fn check_keys(
    src: &Client,
    tgt: &Client,
    p: &RangePlan,
    keys: &[Vec<String>],
) -> Result<Checked> {
    let fence = touch_fence(tgt).await?;
    begin_source_snapshot(src).await?;
    let read = async {
        let on_source = key_rows(src, p, keys).await?;
        let pending = src
            .query(
                "SELECT op = 'T', key FROM heroku2rds.changes WHERE relid = $1 LIMIT 100001",
                &[&p.table.oid],
            )
            .await
            .map_err(|e| query_error(e, "reading the change log"))?;
        Ok::<_, Error>((on_source, pending))
    }
    .await;
    end_source_snapshot(src).await;
    let (on_source, pending) = read?;
    tgt.batch_execute(&format!("BEGIN; {PINNED}"))
        .await
        .map_err(|e| query_error(e, "reading the target"))?;
    let on_target = key_rows(tgt, p, keys).await;
    let _ = tgt.batch_execute("COMMIT").await;
    let on_target = on_target?;
    let all_in_flight = pending.len() > 100_000 || pending.iter().any(|r| r.get::<_, bool>(0));
    let mut in_flight: HashSet<Vec<String>> = pending
        .iter()
        .filter_map(|r| r.get::<_, Option<Vec<Option<String>>>>(1))
        .map(|k| k.into_iter().map(Option::unwrap_or_default).collect())
        .collect();
    let diffs = differing(&on_source, &on_target);
    if !diffs.is_empty() {
        let refs: Vec<&Vec<String>> = diffs.iter().map(|d| &d.0).collect();
        let since = tgt
            .query(
                &format!(
                    "SELECT key FROM heroku2rds.touched WHERE table_id = $1 AND seq > $3 AND key IN {JSON_KEYS}"
                ),
                &[&p.table_id, &keys_json(&refs), &fence],
            )
            .await
            .map_err(|e| query_error(e, "reading touched keys"))?;
        in_flight.extend(since.iter().map(|r| r.get::<_, Vec<String>>(0)));
    }
    let mut out = Checked {
        keys: keys.len() as u64,
        rows: on_source.len() as u64,
        bytes: on_source.len() as u64 * p.row_bytes() as u64,
        ..Default::default()
    };
    let mut real: Vec<(Vec<String>, DiffKind)> = Vec::new();
    let mut kept: HashSet<&Vec<String>> = HashSet::new();
    for (k, kind) in &diffs {
        if all_in_flight || in_flight.contains(k) {
            out.in_flight += 1;
            kept.insert(k);
        } else {
            real.push((k.clone(), *kind));
        }
    }
    let settled: Vec<&Vec<String>> = keys.iter().filter(|k| !kept.contains(k)).collect();
    let equal: Vec<&Vec<String>> = settled
        .iter()
        .copied()
        .filter(|k| !real.iter().any(|r| &r.0 == *k))
        .collect();
    // Recorded in one short transaction under the apply lock (apply writes these tables too).
    let tx = async {
        tgt.batch_execute("BEGIN")
            .await
            .map_err(|e| query_error(e, "recording a key check"))?;
        tgt.execute("SELECT pg_advisory_xact_lock($1)", &[&APPLY_LOCK])
            .await
            .map_err(|e| query_error(e, "waiting for the apply lock"))?;
        tgt.execute(
            &format!(
                "DELETE FROM heroku2rds.touched WHERE table_id = $1 AND seq <= $3 AND key IN {JSON_KEYS}"
            ),
            &[&p.table_id, &keys_json(&settled), &fence],
        )
        .await
        .map_err(|e| query_error(e, "recording a key check"))?;
        tgt.execute(
            &format!("DELETE FROM heroku2rds.differences WHERE table_id = $1 AND key IN {JSON_KEYS}"),
            &[&p.table_id, &keys_json(&equal)],
        )
        .await
        .map_err(|e| query_error(e, "recording a key check"))?;
        for (k, kind) in &real {
            tgt.execute(
                "INSERT INTO heroku2rds.differences (table_id, key, kind) VALUES ($1, $2, $3)
                 ON CONFLICT (table_id, key) DO UPDATE SET kind = excluded.kind",
                &[&p.table_id, k, &kind_str(*kind)],
            )
            .await
            .map_err(|e| query_error(e, "recording a difference"))?;
        }
        tgt.batch_execute("COMMIT")
            .await
            .map_err(|e| query_error(e, "recording a key check"))
    }
    .await;
    if tx.is_err() {
        let _ = tgt.batch_execute("ROLLBACK").await;
    }
    tx?;
    out.differences = real.len() as u64;
    if !real.is_empty() {
        tracing::error!(
            "verification: {} row(s) of {} differ on the target with no change in flight (first: {}={})",
            real.len(),
            p.table.display_name(),
            p.table.key.join(","),
            real[0].0.join(",")
        );
    }
    Ok(out)
}

/// Scans `ranges` of one table on both servers. Equal ranges are proven (their touched keys up
/// to the scan's snapshot forgotten); differing rows become suspects, judged by a key check.
async fn scan_ranges(
    src: &Client,
    tgt: &mut Client,
    p: &RangePlan,
    ranges: &[i64],
) -> Result<Checked> {
    let pred = p.predicate(ranges);
    let plan = p.summary_plan();
    // Applies that commit after `fence` touch their keys with higher numbers: those survive.
    let fence = touch_fence(tgt).await?;
    tgt.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {PINNED}"
    ))
    .await
    .map_err(|e| query_error(e, "starting a verification snapshot on the target"))?;
    let read = async {
        let on_target = super::summarize(tgt, &plan, &pred).await?;
        begin_source_snapshot(src).await?;
        let source = async {
            let s = super::summarize(src, &plan, &pred).await?;
            let covers: Option<i64> = src
                .query_one(
                    "SELECT pg_sequence_last_value(pg_get_serial_sequence('heroku2rds.changes', 'id')::regclass)",
                    &[],
                )
                .await
                .map_err(|e| query_error(e, "reading the change log position"))?
                .get(0);
            let bad: Vec<i64> = ranges
                .iter()
                .copied()
                .filter(|r| s.get(r) != on_target.get(r))
                .collect();
            let (sd, td) = if bad.is_empty() {
                Default::default()
            } else {
                (
                    range_rows(src, p, &pred, &bad).await?,
                    range_rows(tgt, p, &pred, &bad).await?,
                )
            };
            Ok::<_, Error>((s, covers, bad, sd, td))
        }
        .await;
        end_source_snapshot(src).await;
        source
    }
    .await;
    let _ = tgt.batch_execute("COMMIT").await;
    let (on_source, covers, bad, sd, td) = read?;
    let rows: i64 = on_source.values().map(|v| v.0).sum();
    let suspects = differing(&sd, &td);
    let mut out = Checked {
        ranges: ranges.len() as u64,
        rows: rows as u64,
        bytes: (rows * p.row_bytes()) as u64,
        ..Default::default()
    };
    let proven: Vec<i64> = if suspects.len() > MAX_SUSPECTS {
        ranges
            .iter()
            .copied()
            .filter(|r| !bad.contains(r))
            .collect()
    } else {
        ranges.to_vec()
    };
    let tx = tgt
        .transaction()
        .await
        .map_err(|e| query_error(e, "recording a range check"))?;
    // Apply writes these records too: one writer at a time (no deadlock).
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&APPLY_LOCK])
        .await
        .map_err(|e| query_error(e, "waiting for the apply lock"))?;
    tx.execute(
        &format!(
            "DELETE FROM heroku2rds.touched WHERE table_id = $1 AND seq <= $2 AND {} = ANY($3)",
            p.key_range("key")
        ),
        &[&p.table_id, &fence, &proven],
    )
    .await
    .map_err(|e| query_error(e, "recording a range check"))?;
    // One statement each for the suspects and the ranges (a table's buckets can be thousands).
    let suspect_keys: Vec<&Vec<String>> =
        suspects.iter().take(MAX_SUSPECTS).map(|s| &s.0).collect();
    tx.execute(
        &format!(
            "INSERT INTO heroku2rds.touched (table_id, key) SELECT $1, k FROM {JSON_KEYS} AS j(k)
             ON CONFLICT (table_id, key) DO UPDATE SET seq = nextval('heroku2rds.touch_seq')"
        ),
        &[&p.table_id, &keys_json(&suspect_keys)],
    )
    .await
    .map_err(|e| query_error(e, "recording suspect keys"))?;
    let counts: Vec<i64> = ranges
        .iter()
        .map(|r| on_source.get(r).map_or(0, |v| v.0))
        .collect();
    let ok: Vec<bool> = ranges.iter().map(|r| proven.contains(r)).collect();
    tx.execute(
        "INSERT INTO heroku2rds.verify_ranges AS v (table_id, range_no, rows, verified_at, covers_change, checked_at)
         SELECT $1, r, n, CASE WHEN ok THEN clock_timestamp() END, CASE WHEN ok THEN $5::bigint END, clock_timestamp()
           FROM unnest($2::bigint[], $3::bigint[], $4::bool[]) AS u(r, n, ok)
         ON CONFLICT (table_id, range_no) DO UPDATE SET rows = excluded.rows, checked_at = excluded.checked_at,
             verified_at = coalesce(excluded.verified_at, v.verified_at),
             covers_change = CASE WHEN excluded.verified_at IS NOT NULL THEN excluded.covers_change ELSE v.covers_change END,
             dirty_seq = CASE WHEN excluded.verified_at IS NOT NULL AND v.dirty_seq <= $6 THEN NULL ELSE v.dirty_seq END",
        &[&p.table_id, &ranges, &counts, &ok, &covers, &fence],
    )
    .await
    .map_err(|e| query_error(e, "recording a range check"))?;
    tx.commit()
        .await
        .map_err(|e| query_error(e, "recording a range check"))?;
    out.in_flight = suspects.len() as u64;
    Ok(out)
}

async fn record_stats(tgt: &Client, c: &Checked, secs: f64) -> Result<()> {
    tgt.execute(
        "UPDATE heroku2rds.verify_stats SET rows = rows + $1, bytes = bytes + $2, seconds = seconds + $3",
        &[&(c.rows as i64), &(c.bytes as i64), &secs],
    )
    .await
    .map_err(|e| query_error(e, "recording verification figures"))?;
    Ok(())
}

/// The next piece of background work.
enum Work {
    Keys(i32, Vec<Vec<String>>),
    Ranges(i32, Vec<i64>),
}

async fn touched_keys(
    tgt: &Client,
    table_id: Option<i32>,
    limit: i64,
) -> Result<Option<(i32, Vec<Vec<String>>)>> {
    let id: Option<i32> = match table_id {
        Some(id) => Some(id),
        None => tgt
            .query_opt(
                "SELECT table_id FROM heroku2rds.touched ORDER BY seq LIMIT 1",
                &[],
            )
            .await
            .map_err(|e| query_error(e, "reading touched keys"))?
            .map(|r| r.get(0)),
    };
    let Some(id) = id else { return Ok(None) };
    let keys: Vec<Vec<String>> = tgt
        .query(
            "SELECT key FROM heroku2rds.touched WHERE table_id = $1 ORDER BY seq LIMIT $2",
            &[&id, &limit],
        )
        .await
        .map_err(|e| query_error(e, "reading touched keys"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok((!keys.is_empty()).then_some((id, keys)))
}

async fn next_work(
    tgt: &Client,
    plans: &BTreeMap<i32, RangePlan>,
    turn: u64,
) -> Result<Option<Work>> {
    // While a large backlog is being applied, most differences are in flight: verification
    // waits (it would only find suspects) and leaves the servers to apply.
    let backlog: i64 = tgt
        .query_one(
            "SELECT coalesce((SELECT backlog FROM heroku2rds.follow), 0)",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading the backlog"))?
        .get(0);
    if backlog >= MAX_BACKLOG {
        return Ok(None);
    }
    // Ranges never proven come first (coverage); then, in turn so that none starves the others:
    // touched keys, dirty integer ranges (a bucket costs a scan of its table: its touched keys
    // are compared one by one instead), and the ranges proven longest ago.
    if let Some(r) = tgt
        .query_opt(
            "SELECT table_id, range_no FROM heroku2rds.verify_ranges WHERE verified_at IS NULL
              ORDER BY checked_at NULLS FIRST LIMIT 1",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "choosing the next range to verify"))?
    {
        if let Some(w) = ranges_of(tgt, plans, r.get(0), r.get(1), true).await? {
            return Ok(Some(w));
        }
    }
    let int_tables: Vec<i32> = plans
        .values()
        .filter(|p| p.int.is_some())
        .map(|p| p.table_id)
        .collect();
    for k in 0..3 {
        let found = match (turn + k) % 3 {
            0 => touched_keys(tgt, None, KEYS_PER_CHECK)
                .await?
                .map(|(id, k)| Work::Keys(id, k)),
            1 => {
                let r = tgt
                    .query_opt(
                        "SELECT table_id, range_no FROM heroku2rds.verify_ranges
                          WHERE dirty_seq IS NOT NULL AND table_id = ANY($1) ORDER BY dirty_seq LIMIT 1",
                        &[&int_tables],
                    )
                    .await
                    .map_err(|e| query_error(e, "choosing the next range to verify"))?;
                match r {
                    Some(r) => ranges_of(tgt, plans, r.get(0), r.get(1), false).await?,
                    None => None,
                }
            }
            _ => {
                let r = tgt
                    .query_opt(
                        "SELECT table_id, range_no FROM heroku2rds.verify_ranges ORDER BY verified_at LIMIT 1",
                        &[],
                    )
                    .await
                    .map_err(|e| query_error(e, "choosing the next range to verify"))?;
                match r {
                    Some(r) => ranges_of(tgt, plans, r.get(0), r.get(1), false).await?,
                    None => None,
                }
            }
        };
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The work for range `range` of a table: that range, or for bucketed tables every bucket in
/// the same state (unproven or not), scanned at once.
async fn ranges_of(
    tgt: &Client,
    plans: &BTreeMap<i32, RangePlan>,
    id: i32,
    range: i64,
    unproven_first: bool,
) -> Result<Option<Work>> {
    let Some(p) = plans.get(&id) else {
        return Ok(None);
    };
    if p.int.is_some() {
        return Ok(Some(Work::Ranges(id, vec![range])));
    }
    let all: Vec<i64> = tgt
        .query(
            "SELECT range_no FROM heroku2rds.verify_ranges WHERE table_id = $1 AND (verified_at IS NULL OR NOT $2)",
            &[&id, &unproven_first],
        )
        .await
        .map_err(|e| query_error(e, "choosing the next range to verify"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(Some(Work::Ranges(id, all)))
}

/// Verifies in the background while following, reading at most `rate` bytes per second of
/// table data from each server on average: ranges never compared first, touched keys and ranges
/// in turn, then, once everything is proven, the ranges proven longest ago again (which also
/// catches rows changed on the target behind the tool's back). Runs until `cancel` or the switch; errors are
/// reported and retried (verification never stops following).
pub async fn background(source: ConnSpec, target: ConnSpec, rate: u64, cancel: Cancel) {
    let mut delay = Duration::from_secs(1);
    loop {
        match background_once(&source, &target, rate, &cancel).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(
                    "background verification: {e:#}; retrying in {}s",
                    delay.as_secs()
                );
                if cancel.sleep(delay).await.is_err() {
                    return;
                }
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}

async fn background_once(
    source: &ConnSpec,
    target: &ConnSpec,
    rate: u64,
    cancel: &Cancel,
) -> Result<()> {
    let src = source.connect().await?;
    let mut tgt = target.connect().await?;
    let planned = plan_tables(&mut tgt).await?;
    if planned > 0 {
        tracing::info!("background verification: {planned} table(s) split into ranges");
    }
    let plans = load_plans(&tgt).await?;
    let mut turn = 0u64;
    let mut last_report = Instant::now();
    let mut last_recheck = Instant::now() - Duration::from_secs(3600);
    let mut window = Checked::default();
    loop {
        if cancel.is_cancelled() || store::switched_at(&tgt).await?.is_some() {
            return Ok(());
        }
        // Recorded differences are compared again now and then: fixed rows clear.
        if last_recheck.elapsed() > RECHECK_EVERY {
            last_recheck = Instant::now();
            recheck_differences(&src, &tgt).await?;
        }
        let started = Instant::now();
        let work = next_work(&tgt, &plans, turn).await?;
        turn += 1;
        let done = match &work {
            None => {
                if cancel.sleep(Duration::from_secs(1)).await.is_err() {
                    return Ok(());
                }
                continue;
            }
            Some(Work::Keys(id, keys)) => match plans.get(id) {
                Some(p) => check_keys(&src, &tgt, p, keys).await?,
                None => continue,
            },
            Some(Work::Ranges(id, ranges)) => match plans.get(id) {
                Some(p) => scan_ranges(&src, &mut tgt, p, ranges).await?,
                None => continue,
            },
        };
        let secs = started.elapsed().as_secs_f64();
        record_stats(&tgt, &done, secs).await?;
        window.add(done);
        if last_report.elapsed() > Duration::from_secs(60)
            && (window.rows > 0 || window.differences > 0)
        {
            tracing::info!(
                "background verification: {} range(s) and {} key(s) compared in the last minute ({} in flight, {} differing)",
                window.ranges, window.keys, window.in_flight, window.differences
            );
            window = Checked::default();
            last_report = Instant::now();
        }
        // The rate limit: the time this read should have taken at `rate`, minus what it took.
        let due = Duration::from_secs_f64(done.bytes as f64 / rate.max(1) as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            if cancel.sleep(wait).await.is_err() {
                return Ok(());
            }
        }
    }
}

/// Compares the recorded differences again (before a cutover starts): rows fixed since are
/// cleared.
pub async fn recheck_differences(src: &Client, tgt: &Client) -> Result<()> {
    let plans = load_plans(tgt).await?;
    let rows = tgt
        .query(
            "SELECT table_id, key FROM heroku2rds.differences ORDER BY table_id",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading recorded differences"))?;
    let mut by_table: BTreeMap<i32, Vec<Vec<String>>> = BTreeMap::new();
    for r in rows {
        by_table.entry(r.get(0)).or_default().push(r.get(1));
    }
    for (id, keys) in by_table {
        if let Some(p) = plans.get(&id) {
            check_keys(src, tgt, p, &keys).await?;
        }
    }
    Ok(())
}

/// Verification coverage, for `status` and the cutover's estimate.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Coverage {
    /// Percent of rows in ranges proven equal.
    pub percent: f64,
    /// Tables split into ranges.
    pub tables: i64,
    /// Ranges in all.
    pub ranges: i64,
    /// Ranges proven equal at least once.
    pub verified_ranges: i64,
    /// Rows in proven ranges, and rows in all ranges (estimated for ranges never scanned).
    pub verified_rows: i64,
    /// The same, all ranges.
    pub rows: i64,
    /// Seconds since the oldest proof of a range.
    pub oldest_s: Option<f64>,
    /// Keys rewritten since their range was proven, waiting for a re-check.
    pub waiting_keys: i64,
    /// Ranges holding rows changed since their proof (their keys are re-checked one by one).
    pub changed_ranges: i64,
    /// Real differences recorded (first few in `differences`).
    pub difference_count: i64,
    /// Up to 20 differences: `schema.table key=value (kind)`.
    pub differences: Vec<String>,
    /// Measured background rate, rows per second of verification time.
    pub rows_per_s: Option<f64>,
}

impl Coverage {
    fn computed_percent(&self) -> f64 {
        if self.rows == 0 {
            if self.ranges == self.verified_ranges {
                100.0
            } else {
                0.0
            }
        } else {
            100.0 * self.verified_rows as f64 / self.rows as f64
        }
    }
}

/// Reads the coverage; None when verification has not started.
pub async fn coverage(tgt: &Client) -> Result<Option<Coverage>> {
    let exists: bool = tgt
        .query_one(
            "SELECT to_regclass('heroku2rds.verify_ranges') IS NOT NULL",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading verification coverage"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    let r = tgt
        .query_one(
            "WITH t AS (SELECT p.table_id, greatest(t.est_rows, 0) AS est, count(*) AS n
                          FROM heroku2rds.verify_plans p JOIN heroku2rds.tables t ON t.id = p.table_id
                          JOIN heroku2rds.verify_ranges r ON r.table_id = p.table_id GROUP BY 1, 2)
             SELECT (SELECT count(*) FROM heroku2rds.verify_plans),
                    count(*), count(r.verified_at),
                    coalesce(sum(CASE WHEN r.verified_at IS NOT NULL THEN coalesce(r.rows, t.est / t.n) END), 0)::bigint,
                    coalesce(sum(coalesce(r.rows, t.est / t.n)), 0)::bigint,
                    extract(epoch FROM now() - min(r.verified_at))::float8,
                    (SELECT count(*) FROM heroku2rds.touched),
                    (SELECT count(*) FROM heroku2rds.differences),
                    (SELECT rows / nullif(seconds, 0) FROM heroku2rds.verify_stats)::float8,
                    count(*) FILTER (WHERE r.dirty_seq IS NOT NULL AND r.verified_at IS NOT NULL)
               FROM heroku2rds.verify_ranges r JOIN t ON t.table_id = r.table_id",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading verification coverage"))?;
    let differences = tgt
        .query(
            "SELECT t.schema_name || '.' || t.table_name, d.key, d.kind, (t.definition -> 'key')::text
               FROM heroku2rds.differences d JOIN heroku2rds.tables t ON t.id = d.table_id
              ORDER BY d.found_at LIMIT 20",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading recorded differences"))?
        .iter()
        .map(|r| {
            let key: Vec<String> = r.get(1);
            let cols: Vec<String> = serde_json::from_str(&r.get::<_, String>(3)).unwrap_or_default();
            format!(
                "{} {}={} ({})",
                r.get::<_, String>(0),
                cols.join(","),
                key.join(","),
                r.get::<_, String>(2).replace('_', " ")
            )
        })
        .collect();
    let mut c = Coverage {
        percent: 0.0,
        tables: r.get(0),
        ranges: r.get(1),
        verified_ranges: r.get(2),
        verified_rows: r.get(3),
        rows: r.get(4),
        oldest_s: r.get(5),
        waiting_keys: r.get(6),
        difference_count: r.get(7),
        differences,
        rows_per_s: r.get(8),
        changed_ranges: r.get(9),
    };
    c.percent = c.computed_percent();
    Ok((c.tables > 0).then_some(c))
}

/// What the final verification covered.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Final {
    /// Tables compared through their ranges.
    pub tables_by_range: usize,
    /// Tables compared whole (no plan yet, keyless, ...).
    pub tables_whole: usize,
    /// What the range scans and key checks read.
    pub checked: Checked,
    /// Ranges sampled among those already proven.
    pub sampled: u64,
    /// Integer ranges scanned whole because rows in them changed since their last proof.
    pub dirty_scanned: u64,
    /// Seconds it took.
    pub seconds: f64,
}

/// The final verification, with writes fenced and the change log drained: touched keys, ranges
/// never proven, recorded differences and a sample of proven ranges. Returns what it covered,
/// the differences found (table, key, kind) and the tables it did not cover (for a whole
/// comparison).
pub async fn final_check(
    src: &Client,
    tgt: &mut Client,
    sample_ranges: i64,
) -> Result<(Final, Vec<(String, Difference)>, HashSet<String>)> {
    let started = Instant::now();
    let plans = load_plans(tgt).await?;
    let mut out = Final {
        tables_by_range: plans.len(),
        ..Default::default()
    };
    let mut diffs = Vec::new();
    // The sample: a few proven ranges drawn from all tables, a check of the mechanism whose
    // cost does not grow with the database.
    let sample: HashSet<(i32, i64)> = tgt
        .query(
            "SELECT table_id, range_no FROM heroku2rds.verify_ranges WHERE verified_at IS NOT NULL
              ORDER BY random() LIMIT $1",
            &[&sample_ranges],
        )
        .await
        .map_err(|e| query_error(e, "choosing ranges to verify"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    out.sampled = sample.len() as u64;
    let int_tables: Vec<i32> = plans
        .values()
        .filter(|p| p.int.is_some())
        .map(|p| p.table_id)
        .collect();
    let changed: Vec<(i32, i64)> = tgt
        .query(
            "SELECT table_id, range_no FROM heroku2rds.verify_ranges
              WHERE table_id = ANY($1) AND dirty_seq IS NOT NULL AND verified_at IS NOT NULL
              ORDER BY dirty_seq DESC LIMIT $2",
            &[&int_tables, &FREEZE_DIRTY_RANGES],
        )
        .await
        .map_err(|e| query_error(e, "choosing ranges to verify"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // Recorded differences first: those fixed since clear, the others stay recorded.
    recheck_differences(src, tgt).await?;
    for p in plans.values() {
        // Ranges never proven, and the sample.
        let mut ranges: Vec<i64> = tgt
            .query(
                "SELECT range_no FROM heroku2rds.verify_ranges WHERE table_id = $1 AND verified_at IS NULL",
                &[&p.table_id],
            )
            .await
            .map_err(|e| query_error(e, "choosing ranges to verify"))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        ranges.extend(sample.iter().filter(|s| s.0 == p.table_id).map(|s| s.1));
        // Integer ranges touched most recently since their last proof are scanned whole,
        // within a budget (their touched keys are compared one by one in any case).
        if p.int.is_some() {
            let dirty: Vec<i64> = changed
                .iter()
                .filter(|c| c.0 == p.table_id)
                .map(|c| c.1)
                .collect();
            out.dirty_scanned += dirty.len() as u64;
            ranges.extend(dirty);
        }
        ranges.sort_unstable();
        ranges.dedup();
        if p.int.is_some() {
            for r in &ranges {
                out.checked.add(scan_ranges(src, tgt, p, &[*r]).await?);
            }
        } else if !ranges.is_empty() {
            out.checked.add(scan_ranges(src, tgt, p, &ranges).await?);
        }
        loop {
            let Some((_, keys)) = touched_keys(tgt, Some(p.table_id), 50_000).await? else {
                break;
            };
            let c = check_keys(src, tgt, p, &keys).await?;
            out.checked.add(c);
            if c.in_flight > 0 {
                return Err(Error::other(format!(
                    "{} key(s) of {} still have changes in the change log after the drain",
                    c.in_flight,
                    p.table.display_name()
                )));
            }
        }
        let found = tgt
            .query(
                "SELECT key, kind FROM heroku2rds.differences WHERE table_id = $1 ORDER BY key LIMIT 20",
                &[&p.table_id],
            )
            .await
            .map_err(|e| query_error(e, "reading recorded differences"))?;
        for r in found {
            let key: Vec<String> = r.get(0);
            let kind = match r.get::<_, &str>(1) {
                "missing_on_target" => DiffKind::MissingOnTarget,
                "extra_on_target" => DiffKind::ExtraOnTarget,
                _ => DiffKind::Changed,
            };
            diffs.push((
                p.table.display_name(),
                Difference {
                    key: format!("{}={}", p.table.key.join(","), key.join(",")),
                    kind,
                },
            ));
        }
    }
    let covered: HashSet<String> = plans.values().map(|p| p.table.display_name()).collect();
    out.seconds = started.elapsed().as_secs_f64();
    record_stats(tgt, &out.checked, out.seconds).await?;
    Ok((out, diffs, covered))
}
