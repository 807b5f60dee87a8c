//! `status`: reads progress from the target's state tables. Read-only, so it works from any
//! machine while `replicate` runs elsewhere.

use serde::Serialize;

use crate::error::{Error, Result};
use crate::pg::conn::{query_error, ConnSpec};
use crate::pg::store;

/// Progress of one table.
#[derive(Debug, Clone, Serialize)]
pub struct TableProgress {
    /// `schema.table`.
    pub table: String,
    /// copy / recopy / exclude.
    pub mode: String,
    /// Chunks copied.
    pub chunks_done: i64,
    /// Chunks planned.
    pub chunks_total: i64,
    /// Rows copied.
    pub rows: i64,
    /// Bytes of COPY text copied.
    pub bytes: i64,
    /// Estimated size on the source.
    pub est_bytes: i64,
}

/// Progress of the migration.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Source identity.
    pub source: String,
    /// Current phase.
    pub phase: String,
    /// Process running replicate right now, if any.
    pub runner: Option<String>,
    /// True when a newer source URL was handed to the EC2 worker (a re-run of `migrate` or
    /// `provision` after Heroku changed `DATABASE_URL`) and the worker still runs on the old one.
    pub worker_source_outdated: bool,
    /// The EC2 worker's last report about itself (e.g. the source refusing its URL).
    pub worker_report: Option<store::WorkerReport>,
    /// Chunks copied.
    pub chunks_done: i64,
    /// Chunks planned.
    pub chunks_total: i64,
    /// Rows copied.
    pub rows: i64,
    /// Bytes copied.
    pub bytes: i64,
    /// Seconds since the copy started.
    pub copy_seconds: f64,
    /// Copy throughput in bytes of COPY text per second.
    pub bytes_per_second: f64,
    /// Copy throughput in rows per second.
    pub rows_per_second: f64,
    /// Estimated seconds until the copy is done (None when unknown or finished).
    pub eta_seconds: Option<f64>,
    /// Post-data items built.
    pub schema_items_done: i64,
    /// Following: change-log rows waiting on the source (as of `follow_updated_s` ago).
    pub backlog: Option<i64>,
    /// Age in seconds of the oldest unapplied change.
    pub oldest_change_s: Option<f64>,
    /// True when the last apply cycle found nothing committed to apply.
    pub caught_up: bool,
    /// Change-log rows applied so far.
    pub applied_changes: i64,
    /// Apply rate over the whole follow, changes per second.
    pub apply_rate: Option<f64>,
    /// Why following stopped, when it did (schema change, interrupted).
    pub stopped_reason: Option<String>,
    /// Seconds since the follow figures were written.
    pub follow_updated_s: Option<f64>,
    /// Continuous verification (None before following starts it).
    pub verification: Option<crate::pg::verify::ranges::Coverage>,
    /// Per table.
    pub tables: Vec<TableProgress>,
}

/// Reads the status from the target.
pub async fn read(target: &ConnSpec) -> Result<Status> {
    let tgt = target.connect().await?;
    let worker_report = store::worker_report(&tgt).await?;
    let Some(migration) = store::load(&tgt).await? else {
        let worker = match worker_report.as_ref().filter(|r| r.state != "running") {
            Some(r) => format!(" yet; the EC2 worker reports: {}", describe_report(r)),
            None => String::new(),
        };
        return Err(
            Error::usage(format!("{target} holds no heroku2rds migration{worker}"))
                .with_fix("check the --target URL, or start one with `heroku2rds replicate`"),
        );
    };
    let runner = store::runner(&tgt).await?;
    let worker_source_outdated = store::worker_source_outdated(&tgt).await?;
    let head = tgt
        .query_one(
            "SELECT extract(epoch FROM coalesce(m.copied_at, now()) - m.copy_started_at)::float8,
                    (SELECT count(*) FROM heroku2rds.schema_items),
                    (SELECT coalesce(sum(est_bytes), 0)::bigint FROM heroku2rds.chunks WHERE done_at IS NOT NULL),
                    (SELECT coalesce(sum(est_bytes), 0)::bigint FROM heroku2rds.chunks WHERE done_at IS NULL),
                    extract(epoch FROM (SELECT max(done_at) FROM heroku2rds.chunks) - m.copy_started_at)::float8
               FROM heroku2rds.migration m",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading progress"))?;
    let rows = tgt
        .query(
            "SELECT t.schema_name || '.' || t.table_name, t.mode,
                    count(c.chunk_no) FILTER (WHERE c.done_at IS NOT NULL), count(c.chunk_no),
                    coalesce(sum(c.rows), 0)::bigint, coalesce(sum(c.bytes), 0)::bigint, t.est_bytes
               FROM heroku2rds.tables t LEFT JOIN heroku2rds.chunks c ON c.table_id = t.id
              GROUP BY t.id ORDER BY t.est_bytes DESC, 1",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading per-table progress"))?;
    let tables: Vec<TableProgress> = rows
        .iter()
        .map(|r| TableProgress {
            table: r.get(0),
            mode: r.get(1),
            chunks_done: r.get(2),
            chunks_total: r.get(3),
            rows: r.get(4),
            bytes: r.get(5),
            est_bytes: r.get(6),
        })
        .collect();
    let verification = crate::pg::verify::ranges::coverage(&tgt).await?;
    let follow = tgt
        .query_one(
            "SELECT f.backlog, f.oldest_change_s, f.caught_up, f.applied_changes,
                    f.applied_changes / nullif(extract(epoch FROM f.last_apply_at - m.copied_at), 0)::float8,
                    f.stopped_reason, extract(epoch FROM now() - f.updated_at)::float8
               FROM heroku2rds.follow f, heroku2rds.migration m",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "reading follow progress"))?;
    let copy_seconds: Option<f64> = head.get(0);
    let est_done: i64 = head.get(2);
    let est_left: i64 = head.get(3);
    let active: Option<f64> = head.get(4);
    let sum = |f: fn(&TableProgress) -> i64| tables.iter().map(f).sum::<i64>();
    let (rows_done, bytes_done) = (sum(|t| t.rows), sum(|t| t.bytes));
    let secs = active.unwrap_or(0.0).max(0.001);
    let eta = (est_left > 0 && est_done > 0).then(|| est_left as f64 / (est_done as f64 / secs));
    Ok(Status {
        source: migration.source,
        phase: migration.phase.as_str().into(),
        runner,
        worker_source_outdated,
        worker_report,
        chunks_done: sum(|t| t.chunks_done),
        chunks_total: sum(|t| t.chunks_total),
        rows: rows_done,
        bytes: bytes_done,
        copy_seconds: copy_seconds.unwrap_or(0.0),
        bytes_per_second: bytes_done as f64 / secs,
        rows_per_second: rows_done as f64 / secs,
        eta_seconds: eta,
        schema_items_done: head.get(1),
        backlog: follow.get(0),
        oldest_change_s: follow.get(1),
        caught_up: follow.get(2),
        applied_changes: follow.get(3),
        apply_rate: follow.get(4),
        stopped_reason: follow.get(5),
        follow_updated_s: follow.get(6),
        verification,
        tables,
    })
}

/// Renders the status for a terminal.
pub fn render(s: &Status) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "source:   {}", s.source);
    let _ = writeln!(o, "phase:    {}", s.phase);
    let _ = writeln!(
        o,
        "runner:   {}",
        s.runner.as_deref().unwrap_or("none running")
    );
    if let Some(r) = s.worker_report.as_ref().filter(|r| r.state != "running") {
        let _ = writeln!(o, "worker:   {}", describe_report(r));
    }
    if s.worker_source_outdated {
        let _ = writeln!(
            o,
            "worker:   runs on an outdated source URL; it takes the new one at its next reconnect or restart"
        );
    }
    let follow = match (s.stopped_reason.as_deref(), s.backlog) {
        (Some("switched"), _) => "stopped for good at the switch: the app uses the target, nothing from the old database is applied any more".to_string(),
        (Some(why), _) => format!("stopped: {why}"),
        (None, Some(b)) => format!(
            "{b} change(s) waiting{}",
            if s.caught_up { ", caught up" } else { "" }
        ),
        (None, None) => "not started".to_string(),
    };
    let _ = writeln!(o, "follow:   {follow}");
    if let Some(v) = &s.verification {
        let _ = writeln!(
            o,
            "verified: {:.1}% of rows ({} of {} ranges in {} tables){}; waiting for a re-check: {} key(s) in {} changed range(s); {}",
            v.percent,
            v.verified_ranges,
            v.ranges,
            v.tables,
            v.oldest_s
                .map(|a| format!(", oldest proof {} ago", format_duration(a)))
                .unwrap_or_default(),
            v.waiting_keys,
            v.changed_ranges,
            if v.difference_count == 0 {
                "no differences".to_string()
            } else {
                format!("{} DIFFERENCE(S): {}", v.difference_count, v.differences.join("; "))
            }
        );
    }
    let pct = if s.chunks_total > 0 {
        100.0 * s.chunks_done as f64 / s.chunks_total as f64
    } else {
        100.0
    };
    let _ = writeln!(
        o,
        "chunks:   {} / {} ({pct:.0}%)",
        s.chunks_done, s.chunks_total
    );
    let _ = writeln!(
        o,
        "copied:   {} rows, {:.1} MB at {:.1} MB/s, {:.0} rows/s",
        s.rows,
        s.bytes as f64 / 1e6,
        s.bytes_per_second / 1e6,
        s.rows_per_second
    );
    let _ = writeln!(
        o,
        "eta:      {}",
        s.eta_seconds.map_or("-".to_string(), format_duration)
    );
    let _ = writeln!(
        o,
        "indexes, constraints, triggers built: {}",
        s.schema_items_done
    );
    let _ = writeln!(
        o,
        "\n  {:<48} {:>9} {:>12} {:>10}  mode",
        "table", "chunks", "rows", "MB"
    );
    for t in &s.tables {
        let _ = writeln!(
            o,
            "  {:<48} {:>9} {:>12} {:>10.1}  {}",
            t.table,
            format!("{}/{}", t.chunks_done, t.chunks_total),
            t.rows,
            t.bytes as f64 / 1e6,
            t.mode
        );
    }
    o
}

/// `1h 02m 03s` style durations.
pub fn format_duration(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match (s / 3600, (s % 3600) / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, sec) => format!("{m}m {sec:02}s"),
        (h, m, sec) => format!("{h}h {m:02}m {sec:02}s"),
    }
}

/// A worker's report as one line: "cannot reach the source for 3m (its last word 4s ago): ...".
pub fn describe_report(r: &store::WorkerReport) -> String {
    let what = match r.state.as_str() {
        "source-unreachable" => "cannot reach the source".to_string(),
        other => other.to_string(),
    };
    format!(
        "{what} for {} (last reported {} ago): {}",
        format_duration(r.since_s),
        format_duration(r.age_s),
        r.detail
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations() {
        assert_eq!(super::format_duration(5.4), "5s");
        assert_eq!(super::format_duration(65.0), "1m 05s");
        assert_eq!(super::format_duration(3723.0), "1h 02m 03s");
    }
}
