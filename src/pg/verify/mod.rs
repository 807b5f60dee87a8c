//! `verify`: compares source and target without moving rows. Each table is split into buckets
//! (integer-key ranges, or a hash of the key, or of the whole row for keyless tables); for every
//! bucket both servers compute a row count and a sum of row hashes in one scan. Only buckets that
//! differ are narrowed down, to the differing keys.

pub mod ranges;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use tokio_postgres::Client;

use super::catalog::{self, Table};
use super::conn::{query_error, quote_ident, ConnSpec};
use super::pool;
use crate::cancel::Cancel;
use crate::error::{Kind, Result};
use crate::pg::progress::{Sink, Unit};

/// Differing keys reported per table.
pub const MAX_REPORTED: usize = 20;
/// Rows per bucket aimed at: small enough to narrow quickly, large enough to keep results small.
const ROWS_PER_BUCKET: i64 = 1000;
/// Buckets per unit of parallel work on integer-keyed tables.
const BUCKETS_PER_UNIT: i64 = 256;

/// How a differing row differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// On the source, not on the target.
    MissingOnTarget,
    /// On the target, not on the source.
    ExtraOnTarget,
    /// On both, with different values.
    Changed,
}

/// One differing row.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    /// `key=value` (or a row hash for keyless tables).
    pub key: String,
    /// How it differs.
    pub kind: DiffKind,
}

/// The verdict for one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableVerdict {
    /// `schema.table`.
    pub table: String,
    /// Rows on the source.
    pub source_rows: i64,
    /// Rows on the target.
    pub target_rows: i64,
    /// Smallest and largest integer key on the source, when the key is one integer column.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_key_range: Option<(i64, i64)>,
    /// The same on the target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_key_range: Option<(i64, i64)>,
    /// Buckets compared.
    pub ranges: usize,
    /// Buckets whose count or checksum differ.
    pub mismatched_ranges: usize,
    /// Up to [`MAX_REPORTED`] differing rows.
    pub differences: Vec<Difference>,
    /// Differing rows found (narrowing stops early on tables with many differences, so this is
    /// a lower bound when `mismatched_ranges` is large).
    pub differences_found: usize,
    /// Why the table could not be compared (missing on the target, different columns, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Not compared (`--keyless exclude`).
    pub skipped: bool,
}

impl TableVerdict {
    /// True when the table is equal on both sides (or deliberately skipped).
    pub fn equal(&self) -> bool {
        self.skipped
            || (self.error.is_none()
                && self.mismatched_ranges == 0
                && self.source_rows == self.target_rows)
    }
}

/// The verdict for the database.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// True when every table is equal.
    pub equal: bool,
    /// Tables compared.
    pub tables: Vec<TableVerdict>,
}

/// How one table is bucketed; the same SQL runs on both servers.
#[derive(Debug, Clone)]
struct Plan {
    table: Table,
    /// SQL expression of the key as text for reports (the row hash when keyless).
    key_text: String,
    /// SQL expression giving each row its bucket number, over columns and `heroku2rds_h` (the
    /// row hash).
    bucket: String,
    /// WHERE clauses, one per unit of work.
    units: Vec<String>,
    source_key_range: Option<(i64, i64)>,
    target_key_range: Option<(i64, i64)>,
}

impl Plan {
    fn bucketed(&self, predicate: &str) -> String {
        let t = &self.table;
        format!(
            "SELECT ({b})::bigint AS heroku2rds_b, {key} AS heroku2rds_k, heroku2rds_h \
             FROM (SELECT *, md5(ROW({cols})::text) AS heroku2rds_h FROM ONLY {q} WHERE {predicate}) r",
            b = self.bucket,
            key = self.key_text,
            cols = t.all_columns(),
            q = t.qualified()
        )
    }

    fn summary_sql(&self, predicate: &str) -> String {
        format!(
            "SELECT heroku2rds_b::bigint, count(*), sum(('x' || substr(heroku2rds_h, 1, 15))::bit(60)::bigint)::text \
             FROM ({}) s GROUP BY 1",
            self.bucketed(predicate)
        )
    }

    fn detail_sql(&self, predicate: &str) -> String {
        format!(
            "SELECT heroku2rds_k, heroku2rds_h FROM ({}) s WHERE heroku2rds_b = ANY($1)",
            self.bucketed(predicate)
        )
    }
}

/// Per-bucket summary: (count, checksum).
type Summary = BTreeMap<i64, (i64, String)>;

async fn int_key_range(c: &Client, t: &Table) -> Result<Option<(i64, i64)>> {
    let k = quote_ident(&t.key[0]);
    let row = c
        .query_one(
            &format!(
                "SELECT min({k})::bigint, max({k})::bigint FROM ONLY {}",
                t.qualified()
            ),
            &[],
        )
        .await
        .map_err(|e| query_error(e, &format!("reading the key range of {}", t.display_name())))?;
    Ok(row
        .get::<_, Option<i64>>(0)
        .zip(row.get::<_, Option<i64>>(1)))
}

async fn plan_table(src: &Client, tgt: &Client, t: Table) -> Result<Plan> {
    let est = t.est_rows.max(1);
    if t.integer_key {
        let (s, g) = (int_key_range(src, &t).await?, int_key_range(tgt, &t).await?);
        let k = quote_ident(&t.key[0]);
        let key_text = format!("{}::text", k);
        let (lo, hi) = match (s, g) {
            (None, None) => (0, 0),
            (a, b) => {
                let v: Vec<(i64, i64)> = [a, b].into_iter().flatten().collect();
                (
                    v.iter().map(|x| x.0).min().unwrap_or(0),
                    v.iter().map(|x| x.1).max().unwrap_or(0),
                )
            }
        };
        let span = (hi as i128 - lo as i128 + 1) as f64;
        let buckets = (est / ROWS_PER_BUCKET).max(1) as f64;
        let width = (span / buckets).ceil().max(1.0) as i128;
        let nbuckets = ((span / width as f64).ceil() as i64).max(1);
        let bucket = format!("div({k}::numeric - ({lo}), {width})");
        let units = (0..(nbuckets + BUCKETS_PER_UNIT - 1) / BUCKETS_PER_UNIT)
            .map(|u| {
                let a = lo as i128 + u as i128 * BUCKETS_PER_UNIT as i128 * width;
                let b = a + BUCKETS_PER_UNIT as i128 * width;
                let last = (u + 1) * BUCKETS_PER_UNIT >= nbuckets;
                match (u == 0, last) {
                    (true, true) => "true".to_string(),
                    (true, false) => format!("{k} < {b}"),
                    (false, true) => format!("{k} >= {a}"),
                    (false, false) => format!("{k} >= {a} AND {k} < {b}"),
                }
            })
            .collect();
        return Ok(Plan {
            table: t,
            key_text,
            bucket,
            units,
            source_key_range: s,
            target_key_range: g,
        });
    }
    let mask = ((est / ROWS_PER_BUCKET).max(1) as u64)
        .next_power_of_two()
        .min(1 << 16) as i64
        - 1;
    let (key_text, hashed) = if t.has_key() {
        let text = if t.key.len() == 1 {
            format!("{}::text", quote_ident(&t.key[0]))
        } else {
            format!(
                "ROW({})::text",
                t.key
                    .iter()
                    .map(|c| quote_ident(c))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        (text.clone(), format!("md5({text})"))
    } else {
        ("heroku2rds_h".to_string(), "heroku2rds_h".to_string())
    };
    let bucket = format!("(('x' || substr({hashed}, 1, 8))::bit(32)::int & {mask})");
    Ok(Plan {
        table: t,
        key_text,
        bucket,
        units: vec!["true".into()],
        source_key_range: None,
        target_key_range: None,
    })
}

async fn summarize(c: &Client, plan: &Plan, predicate: &str) -> Result<Summary> {
    let rows = c
        .query(&plan.summary_sql(predicate), &[])
        .await
        .map_err(|e| query_error(e, &format!("checksumming {}", plan.table.display_name())))?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0),
                (r.get::<_, i64>(1), r.get::<_, String>(2)),
            )
        })
        .collect())
}

async fn details(
    c: &Client,
    plan: &Plan,
    predicate: &str,
    buckets: &[i64],
) -> Result<Vec<(String, String)>> {
    let rows = c
        .query(&plan.detail_sql(predicate), &[&buckets])
        .await
        .map_err(|e| {
            query_error(
                e,
                &format!("narrowing differences in {}", plan.table.display_name()),
            )
        })?;
    Ok(rows
        .iter()
        .map(|r| {
            (
                r.get::<_, Option<String>>(0).unwrap_or_default(),
                r.get::<_, String>(1),
            )
        })
        .collect())
}

/// Compares the rows of mismatching buckets and returns the differences found.
fn diff_rows(
    keyed: bool,
    key_label: &str,
    src: Vec<(String, String)>,
    tgt: Vec<(String, String)>,
) -> Vec<Difference> {
    let mut out = Vec::new();
    if keyed {
        let s: HashMap<String, String> = src.into_iter().collect();
        let t: HashMap<String, String> = tgt.into_iter().collect();
        for (k, h) in &s {
            match t.get(k) {
                None => out.push(Difference {
                    key: format!("{key_label}={k}"),
                    kind: DiffKind::MissingOnTarget,
                }),
                Some(th) if th != h => out.push(Difference {
                    key: format!("{key_label}={k}"),
                    kind: DiffKind::Changed,
                }),
                _ => {}
            }
        }
        for k in t.keys().filter(|k| !s.contains_key(*k)) {
            out.push(Difference {
                key: format!("{key_label}={k}"),
                kind: DiffKind::ExtraOnTarget,
            });
        }
    } else {
        // Keyless: compare multisets of row hashes.
        let mut counts: HashMap<String, i64> = HashMap::new();
        for (_, h) in src {
            *counts.entry(h).or_default() += 1;
        }
        for (_, h) in tgt {
            *counts.entry(h).or_default() -= 1;
        }
        for (h, n) in counts {
            let kind = if n > 0 {
                DiffKind::MissingOnTarget
            } else {
                DiffKind::ExtraOnTarget
            };
            for _ in 0..n.abs() {
                out.push(Difference {
                    key: format!("row md5 {h}"),
                    kind,
                });
            }
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Compares one unit of one table.
async fn compare_unit(
    src: &Client,
    tgt: &Client,
    plan: &Plan,
    predicate: &str,
) -> Result<(usize, usize, i64, i64, Vec<Difference>)> {
    let (s, t) = tokio::try_join!(
        summarize(src, plan, predicate),
        summarize(tgt, plan, predicate)
    )?;
    let src_rows = s.values().map(|v| v.0).sum();
    let tgt_rows = t.values().map(|v| v.0).sum();
    let mut all: Vec<i64> = s.keys().chain(t.keys()).copied().collect();
    all.sort_unstable();
    all.dedup();
    let bad: Vec<i64> = all
        .iter()
        .copied()
        .filter(|b| s.get(b) != t.get(b))
        .collect();
    let mut diffs = Vec::new();
    let key_label = plan.table.key.join(",");
    for group in bad.chunks(16) {
        if diffs.len() >= 10 * MAX_REPORTED {
            break;
        }
        let (sd, td) = tokio::try_join!(
            details(src, plan, predicate, group),
            details(tgt, plan, predicate, group)
        )?;
        diffs.extend(diff_rows(plan.table.has_key(), &key_label, sd, td));
    }
    Ok((all.len(), bad.len(), src_rows, tgt_rows, diffs))
}

/// Runs the comparison with `jobs` pairs of connections; tells `sink` how many tables are
/// compared so far.
pub async fn run(
    source: &ConnSpec,
    target: &ConnSpec,
    jobs: usize,
    sink: &dyn Sink,
) -> Result<Report> {
    run_except(source, target, jobs, sink, &HashSet::new()).await
}

/// [`run`], leaving out the tables named in `except` (`schema.table`) altogether.
pub async fn run_except(
    source: &ConnSpec,
    target: &ConnSpec,
    jobs: usize,
    sink: &dyn Sink,
    except: &HashSet<String>,
) -> Result<Report> {
    let src = source.connect().await?;
    let tgt = target.connect().await?;
    let mut tables = catalog::tables(&src).await?;
    tables.retain(|t| !except.contains(&t.display_name()));
    let excluded = excluded_tables(&tgt).await?;
    let target_tables: HashSet<String> = catalog::tables(&tgt)
        .await?
        .into_iter()
        .map(|t| t.display_name())
        .collect();

    let mut verdicts: BTreeMap<String, TableVerdict> = BTreeMap::new();
    let mut plans = Vec::new();
    for t in tables {
        let name = t.display_name();
        let mut v = TableVerdict {
            table: name.clone(),
            source_rows: 0,
            target_rows: 0,
            source_key_range: None,
            target_key_range: None,
            ranges: 0,
            mismatched_ranges: 0,
            differences: Vec::new(),
            differences_found: 0,
            error: None,
            skipped: excluded.contains(&name),
        };
        if !v.skipped {
            if !target_tables.contains(&name) {
                v.error = Some("missing on the target".into());
            } else {
                match plan_table(&src, &tgt, t).await {
                    Ok(p) => {
                        v.source_key_range = p.source_key_range;
                        v.target_key_range = p.target_key_range;
                        plans.push(Arc::new(p));
                    }
                    // A refusal (no privilege) is no difference: the tables could not be read.
                    Err(e) if e.kind() == Kind::Refused => return Err(e),
                    Err(e) => v.error = Some(format!("{e:#}")),
                }
            }
        }
        verdicts.insert(name, v);
    }
    drop((src, tgt));

    let units: Vec<(Arc<Plan>, String)> = plans
        .iter()
        .flat_map(|p| p.units.iter().map(move |u| (p.clone(), u.clone())))
        .collect();
    // Progress: a table is compared once its last unit is.
    let mut units_left: HashMap<String, usize> = HashMap::new();
    for (p, _) in &units {
        *units_left.entry(p.table.display_name()).or_default() += 1;
    }
    let total = verdicts.len() as u64;
    let mut compared = total - units_left.len() as u64;
    sink.advance("verify", Unit::Items("tables"), compared, Some(total));
    let (unit_done, mut units_done) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Each worker keeps what it found; the findings are merged once all have ended. Taken from
    // the end of the list, as the plans ordered them.
    let never = Cancel::new();
    let found = pool::run(units.into_iter().rev(), jobs, &never, move |queue| {
        let (source, target, unit_done) = (source.clone(), target.clone(), unit_done.clone());
        async move {
            let (src, tgt) = tokio::try_join!(source.connect(), target.connect())?;
            let mut found = Vec::new();
            while let Some((plan, pred)) = queue.next() {
                let result = compare_unit(&src, &tgt, &plan, &pred).await;
                let _ = unit_done.send(plan.table.display_name());
                match result {
                    Err(e) if e.kind() == Kind::Refused => return Err(e),
                    r => found.push((plan.table.display_name(), r.map_err(|e| format!("{e:#}")))),
                }
            }
            Ok(found)
        }
    });
    tokio::pin!(found);
    let mut count = |table: String| {
        if let Some(left) = units_left.get_mut(&table) {
            *left -= 1;
            if *left == 0 {
                compared += 1;
                sink.advance("verify", Unit::Items("tables"), compared, Some(total));
            }
        }
    };
    let found = loop {
        tokio::select! {
            r = &mut found => break r?,
            Some(table) = units_done.recv() => count(table),
        }
    };
    while let Ok(table) = units_done.try_recv() {
        count(table);
    }
    for (table, result) in found.into_iter().flatten() {
        let Some(v) = verdicts.get_mut(&table) else {
            continue;
        };
        match result {
            Ok((ranges, bad, s, t, diffs)) => {
                v.ranges += ranges;
                v.mismatched_ranges += bad;
                v.source_rows += s;
                v.target_rows += t;
                v.differences.extend(diffs);
            }
            Err(e) => {
                v.error.get_or_insert(e);
            }
        }
    }
    let tables: Vec<TableVerdict> = verdicts
        .into_values()
        .map(|mut v| {
            v.differences_found = v.differences.len();
            // Shorter keys first so that `id=9` comes before `id=10`.
            v.differences
                .sort_by(|a, b| (a.key.len(), &a.key).cmp(&(b.key.len(), &b.key)));
            v.differences.truncate(MAX_REPORTED);
            v
        })
        .collect();
    Ok(Report {
        equal: tables.iter().all(TableVerdict::equal),
        tables,
    })
}

async fn excluded_tables(tgt: &Client) -> Result<HashSet<String>> {
    let has_state: bool = tgt
        .query_one("SELECT to_regclass('heroku2rds.tables') IS NOT NULL", &[])
        .await
        .map_err(|e| query_error(e, "reading the migration state"))?
        .get(0);
    if !has_state {
        return Ok(Default::default());
    }
    let rows = tgt
        .query(
            "SELECT schema_name || '.' || table_name FROM heroku2rds.tables WHERE mode = 'exclude'",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading excluded tables"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Renders the report for a terminal.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    for v in &r.tables {
        let status = if v.skipped {
            "skipped (--keyless exclude)".to_string()
        } else if let Some(e) = &v.error {
            format!("ERROR {e}")
        } else if v.equal() {
            "equal".to_string()
        } else {
            format!("DIFFERENT ({} of {} ranges)", v.mismatched_ranges, v.ranges)
        };
        let _ = writeln!(
            s,
            "{:<48} {:>10} {:>10}  {status}",
            v.table, v.source_rows, v.target_rows
        );
        for d in &v.differences {
            let what = match d.kind {
                DiffKind::MissingOnTarget => "missing on target",
                DiffKind::ExtraOnTarget => "extra on target",
                DiffKind::Changed => "changed",
            };
            let _ = writeln!(s, "    {what}: {}", d.key);
        }
    }
    let bad = r.tables.iter().filter(|v| !v.equal()).count();
    let _ = writeln!(
        s,
        "\n{}",
        if r.equal {
            format!("source and target are equal ({} tables)", r.tables.len())
        } else {
            format!("{bad} of {} tables differ", r.tables.len())
        }
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn keyed_differences_name_the_key_and_kind() {
        let d = diff_rows(
            true,
            "id",
            pairs(&[("1", "a"), ("2", "b"), ("3", "c")]),
            pairs(&[("1", "a"), ("2", "x"), ("4", "d")]),
        );
        let got: Vec<(String, DiffKind)> = d.into_iter().map(|d| (d.key, d.kind)).collect();
        assert_eq!(
            got,
            vec![
                ("id=2".into(), DiffKind::Changed),
                ("id=3".into(), DiffKind::MissingOnTarget),
                ("id=4".into(), DiffKind::ExtraOnTarget)
            ]
        );
    }

    #[test]
    fn keyless_differences_compare_multisets() {
        let d = diff_rows(
            false,
            "",
            pairs(&[("", "a"), ("", "a"), ("", "b")]),
            pairs(&[("", "a"), ("", "b"), ("", "c")]),
        );
        let kinds: Vec<DiffKind> = d.iter().map(|d| d.kind).collect();
        assert_eq!(d.len(), 2);
        assert!(
            kinds.contains(&DiffKind::MissingOnTarget) && kinds.contains(&DiffKind::ExtraOnTarget)
        );
        assert!(diff_rows(
            false,
            "",
            pairs(&[("", "a"), ("", "b")]),
            pairs(&[("", "b"), ("", "a")])
        )
        .is_empty());
    }
}
