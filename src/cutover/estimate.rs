//! The expected write freeze and downtime, before the decision: computed from rates measured on
//! this migration (apply, copy and verification rates recorded on the target, dyno start times
//! seen on the app) and shown in the plan, `cutover --dry-run` and `migrate`'s prompt.

use serde::Serialize;
use tokio_postgres::Client;

use crate::error::Result;
use crate::heroku::app::Dyno;
use crate::pg::conn::query_error;
use crate::pg::status::Status;
use crate::pg::verify::ranges::Coverage;

/// Seconds a dyno is assumed to take to stop or start when the app shows none to measure.
const ASSUMED_DYNO_S: f64 = 10.0;
/// Copy rate assumed for keyless tables when the copy measured none, bytes per second.
pub const ASSUMED_COPY_RATE: f64 = 40e6;
/// Verification rate assumed when the background measured none, rows per second.
const ASSUMED_VERIFY_ROWS: f64 = 100_000.0;
/// Fixed costs of the freeze: the fence, ending sessions, sequences, the Heroku calls between.
const FIXED_S: f64 = 2.0;

/// The estimate, each part with the measurement it rests on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Estimate {
    /// Expected write freeze (no dyno running to every dyno up again), seconds.
    pub write_freeze_s: f64,
    /// Expected downtime (maintenance on to off), seconds.
    pub downtime_s: f64,
    /// Dynos stopping.
    pub dyno_stop_s: f64,
    /// Dynos starting on the new release.
    pub dyno_start_s: f64,
    /// Applying what is waiting in the change log.
    pub drain_s: f64,
    /// Copying keyless tables again.
    pub keyless_s: f64,
    /// The final verification.
    pub verify_s: f64,
    /// How each part was computed.
    pub basis: Vec<String>,
    /// The keyless tables that dominate the recopy, with their size in bytes.
    pub keyless_tables: Vec<(String, i64)>,
}

impl Estimate {
    /// Lines for the plan.
    pub fn lines(&self) -> Vec<String> {
        let mut out = vec![format!(
            "expected write freeze about {:.0}s and downtime about {:.0}s: dynos stop {:.1}s, change log {:.1}s, keyless tables {:.1}s, final verification {:.1}s, dynos start {:.1}s",
            self.write_freeze_s.ceil(),
            self.downtime_s.ceil(),
            self.dyno_stop_s,
            self.drain_s,
            self.keyless_s,
            self.verify_s,
            self.dyno_start_s
        )];
        out.extend(self.basis.iter().map(|b| format!("  {b}")));
        if self.keyless_s > 5.0 {
            let top: Vec<String> = self
                .keyless_tables
                .iter()
                .take(3)
                .map(|(t, b)| format!("{t} ({:.0} MB)", *b as f64 / 1e6))
                .collect();
            out.push(format!(
                "  the keyless recopy dominates: {}; give them a primary key (see `heroku2rds preflight`) to take them out of the freeze",
                top.join(", ")
            ));
        }
        out
    }
}

/// Seconds from an ISO-8601 UTC timestamp (`2026-12-03T17:16:51Z`, fractions allowed) since the
/// epoch.
fn epoch_seconds(s: &str) -> Option<f64> {
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut t = time.split(':');
    let (h, mi) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let sec = t.next()?.trim_end_matches("+00").parse::<f64>().ok()?;
    // Days from civil (proleptic Gregorian).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + mi * 60.0 + sec)
}

/// How long the app's running dynos took to come up (creation to `up`), the slowest of them.
pub fn dyno_start_seen(dynos: &[Dyno]) -> Option<f64> {
    dynos
        .iter()
        .filter(|d| d.state == "up")
        .filter_map(|d| {
            let a = epoch_seconds(d.created_at.as_deref()?)?;
            let b = epoch_seconds(d.updated_at.as_deref()?)?;
            (b >= a && b - a < 3600.0).then_some(b - a)
        })
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
}

/// Computes the estimate. `status` and `coverage` come from the target; `dynos` from the app.
pub async fn estimate(
    src: &Client,
    tgt: &Client,
    status: &Status,
    coverage: Option<&Coverage>,
    dynos: &[Dyno],
) -> Result<Estimate> {
    let mut e = Estimate::default();
    match dyno_start_seen(dynos) {
        Some(s) => {
            e.dyno_start_s = s;
            e.basis.push(format!(
                "dynos start: the slowest running dyno of the app took {s:.1}s from creation to up"
            ));
        }
        None => {
            e.dyno_start_s = ASSUMED_DYNO_S;
            e.basis.push(format!(
                "dynos start: assumed {ASSUMED_DYNO_S:.0}s (no running dyno to measure)"
            ));
        }
    }
    // Heroku stops a dyno within seconds of SIGTERM unless the app makes it wait (up to 30s).
    e.dyno_stop_s = e.dyno_start_s.min(30.0);
    let rate = status.apply_rate.filter(|r| *r > 0.0);
    let backlog = status.backlog.unwrap_or(0).max(0) as f64;
    e.drain_s = match rate {
        Some(r) => backlog / r,
        None => backlog / 10_000.0,
    };
    e.basis.push(format!(
        "change log: {backlog:.0} change(s) waiting at {} (the writes made while dynos stop add a few)",
        rate.map_or("an assumed 10,000/s".to_string(), |r| format!("{r:.0}/s measured"))
    ));
    // Keyless tables: their current size on the source.
    let recopy: Vec<String> = tgt
        .query(
            "SELECT format('%I.%I', schema_name, table_name) FROM heroku2rds.tables WHERE mode = 'recopy'",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "listing keyless tables"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if !recopy.is_empty() {
        let rows = src
            .query(
                "SELECT t, pg_total_relation_size(t::regclass) FROM unnest($1::text[]) t ORDER BY 2 DESC",
                &[&recopy],
            )
            .await
            .map_err(|e| query_error(e, "sizing keyless tables"))?;
        e.keyless_tables = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    }
    let keyless_bytes: i64 = e.keyless_tables.iter().map(|t| t.1).sum();
    let copy_rate = (status.bytes_per_second > 0.0).then_some(status.bytes_per_second);
    e.keyless_s = keyless_bytes as f64 / copy_rate.unwrap_or(ASSUMED_COPY_RATE);
    if !e.keyless_tables.is_empty() {
        e.basis.push(format!(
            "keyless tables: {} table(s), {:.1} MB at {:.1} MB/s {}",
            e.keyless_tables.len(),
            keyless_bytes as f64 / 1e6,
            copy_rate.unwrap_or(ASSUMED_COPY_RATE) / 1e6,
            if copy_rate.is_some() {
                "(the copy's rate)"
            } else {
                "(assumed)"
            }
        ));
    }
    // The final verification: what continuous verification has not proven yet.
    let total_rows: f64 = status.tables.iter().map(|t| t.rows.max(0) as f64).sum();
    match coverage {
        Some(c) => {
            let rate = c
                .rows_per_s
                .filter(|r| *r > 0.0)
                .unwrap_or(ASSUMED_VERIFY_ROWS);
            let per_range = if c.ranges > 0 {
                c.rows as f64 / c.ranges as f64
            } else {
                0.0
            };
            let unproven = (c.rows - c.verified_rows).max(0) as f64;
            // Touched keys, rows never proven, dirty ranges within the budget, the sample, and
            // the tables compared whole (keyless ones).
            let rows =
                c.waiting_keys as f64 + unproven + per_range * 16.0 + keyless_bytes as f64 / 100.0;
            e.verify_s = rows / rate;
            e.basis.push(format!(
                "final verification: {:.0} key(s) waiting, {unproven:.0} row(s) never proven, up to 16 ranges of about {per_range:.0} rows, at {rate:.0} rows/s {}",
                c.waiting_keys,
                if c.rows_per_s.is_some() { "(measured in the background)" } else { "(assumed)" }
            ));
        }
        None => {
            e.verify_s = total_rows / ASSUMED_VERIFY_ROWS;
            e.basis.push(format!(
                "final verification: every table compared whole ({total_rows:.0} rows at an assumed {ASSUMED_VERIFY_ROWS:.0} rows/s): continuous verification has not run (replicate --until forever verifies in the background)"
            ));
        }
    }
    e.write_freeze_s =
        e.dyno_stop_s + FIXED_S + e.drain_s + e.keyless_s + e.verify_s + e.dyno_start_s;
    e.downtime_s = e.write_freeze_s + 2.0;
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_seconds() {
        assert_eq!(epoch_seconds("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(epoch_seconds("2000-03-01T00:00:01Z"), Some(951_868_801.0));
        assert_eq!(
            epoch_seconds("2026-12-03T17:16:51.5Z"),
            Some(1_796_318_211.5)
        );
        assert_eq!(epoch_seconds("not a time"), None);
    }

    fn dyno(state: &str, created: &str, updated: &str) -> Dyno {
        Dyno {
            id: "d".into(),
            name: "web.1".into(),
            process_type: "web".into(),
            state: state.into(),
            release: None,
            created_at: Some(created.into()),
            updated_at: Some(updated.into()),
        }
    }

    #[test]
    fn dyno_start_is_the_slowest_running_dyno() {
        let dynos = [
            dyno("up", "2026-12-03T10:00:00Z", "2026-12-03T10:00:04Z"),
            dyno("up", "2026-12-03T10:00:00Z", "2026-12-03T10:00:09Z"),
            // Not up: says nothing about start time.
            dyno("starting", "2026-12-03T10:00:00Z", "2026-12-03T10:05:00Z"),
            // Up for hours after a restart: no start time either.
            dyno("up", "2026-12-01T10:00:00Z", "2026-12-03T10:00:00Z"),
        ];
        assert_eq!(dyno_start_seen(&dynos), Some(9.0));
        assert_eq!(dyno_start_seen(&dynos[2..3]), None);
    }
}
