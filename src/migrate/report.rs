//! What `migrate` reports at the end: data copied, time per phase, downtime, the verification,
//! the archive, what stays in AWS and the next steps.

use super::*;

/// The summary at the end.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub app: String,
    pub migration: String,
    pub runner: Runner,
    /// The database the app now uses (no password).
    pub database: String,
    pub tables: usize,
    pub rows_copied: i64,
    pub bytes_copied: i64,
    pub changes_applied: i64,
    /// Phases with their times.
    pub phases: Vec<PhaseRecord>,
    /// Maintenance on -> off during the cutover, seconds.
    pub downtime_s: Option<f64>,
    /// No dyno running -> every dyno up on the new database, seconds.
    pub write_freeze_s: Option<f64>,
    /// The final verification's result.
    pub verification: String,
    /// The archive, when made.
    pub archive: Option<serde_json::Value>,
    /// What stays in the AWS account and what it costs by.
    pub kept: Vec<String>,
    /// What to do next.
    pub next_steps: Vec<String>,
}

pub(super) fn summary(
    o: &Options,
    names: &Names,
    s: &Status,
    phases: Vec<PhaseRecord>,
    cut: &serde_json::Value,
    archive: Option<serde_json::Value>,
) -> Summary {
    let spec = &o.resolved.spec;
    let mut kept = vec![format!(
        "RDS primary {} ({}, {} GiB gp3, {}-day backups): instance hours, storage, backups beyond the database's size",
        names.db, spec.db.instance_class, spec.db.storage_gb, spec.db.backup_retention_days
    )];
    if let Some(rr) = &spec.replica_region {
        kept.push(format!(
            "cross-region read replica {} in {rr} ({}): instance hours, storage, cross-region transfer",
            names.replica, spec.db.instance_class
        ));
    }
    kept.push(format!(
        "S3 bucket {} (the archive): storage per GB-month",
        names.bucket
    ));
    kept.push(format!(
        "secret {} (the master password): per secret-month",
        names.secret
    ));
    if o.runner == Runner::Ec2 {
        if let Some(w) = &spec.worker {
            kept.push(format!(
                "EC2 worker ({}, stopped following at the switch): instance hours, disk; remove it with teardown",
                w.instance_type
            ));
        }
    }
    let region = &spec.region;
    let mut next = vec![
        format!("watch the app: heroku logs --tail -a {}", o.app),
        format!(
            "remove the worker side (the database, replica and bucket stay): heroku2rds teardown --name {} --region {region}",
            spec.name
        ),
        "remove the capture triggers from the Heroku database: heroku2rds clean (with HEROKU2RDS_SOURCE_URL set to HEROKU2RDS_PREVIOUS_DATABASE_URL)".to_string(),
        format!(
            "the Heroku database stays attached as {} (your way back) until you destroy its add-on: heroku addons -a {}",
            cutover::PREVIOUS_ATTACHMENT,
            o.app
        ),
    ];
    if spec.replica_region.is_some() {
        next.push(
            "the replica is an RDS read replica: promote it only if you mean to move the primary"
                .into(),
        );
    }
    Summary {
        app: o.app.clone(),
        migration: spec.name.clone(),
        runner: o.runner,
        database: cut["database"].as_str().unwrap_or_default().to_string(),
        tables: s.tables.len(),
        rows_copied: s.rows,
        bytes_copied: s.bytes,
        changes_applied: s.applied_changes,
        phases,
        downtime_s: cut["downtime_s"].as_f64(),
        write_freeze_s: cut["write_freeze_s"].as_f64(),
        verification: "no differences: the cutover's final verification compared every table while writes were stopped (it rolls back on any difference)".into(),
        archive,
        kept,
        next_steps: next,
    }
}

/// Renders the summary for people.
pub fn render(s: &Summary) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "migration {} of app {}: done", s.migration, s.app);
    let _ = writeln!(o, "  database now: {}", s.database);
    let _ = writeln!(
        o,
        "  data: {} table(s), {} rows ({:.1} MB) copied, {} change(s) applied while following",
        s.tables,
        s.rows_copied,
        s.bytes_copied as f64 / 1e6,
        s.changes_applied
    );
    let _ = writeln!(o, "  time per phase:");
    for p in &s.phases {
        let took = p.finished_at.map_or("unfinished".to_string(), |f| {
            format_duration(f - p.started_at)
        });
        let _ = writeln!(o, "    {:<10} {took}", p.phase);
    }
    let _ = writeln!(
        o,
        "  downtime: {} with maintenance on; writes stopped for {}",
        s.downtime_s.map_or("-".into(), |d| format!("{d:.1}s")),
        s.write_freeze_s.map_or("-".into(), |d| format!("{d:.1}s"))
    );
    let _ = writeln!(o, "  verification: {}", s.verification);
    if let Some(a) = &s.archive {
        let _ = writeln!(
            o,
            "  archive: s3://{}/{} ({} bytes, sha256 {})",
            a["bucket"].as_str().unwrap_or_default(),
            a["key"].as_str().unwrap_or_default(),
            a["bytes"],
            a["sha256"].as_str().unwrap_or_default()
        );
    }
    let _ = writeln!(o, "  kept in AWS (and what they cost by):");
    for k in &s.kept {
        let _ = writeln!(o, "    - {k}");
    }
    let _ = writeln!(o, "  next steps:");
    for n in &s.next_steps {
        let _ = writeln!(o, "    - {n}");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_says_times_downtime_archive_and_what_is_kept() {
        let s = Summary {
            app: "acme".into(),
            migration: "acme".into(),
            runner: Runner::Ec2,
            database: "postgresql://app@db.example.com:5432/app".into(),
            tables: 3,
            rows_copied: 1000,
            bytes_copied: 2_000_000,
            changes_applied: 42,
            phases: vec![
                PhaseRecord {
                    phase: "provision".into(),
                    started_at: 100.0,
                    finished_at: Some(165.0),
                    detail: json!({}),
                },
                PhaseRecord {
                    phase: "archive".into(),
                    started_at: 200.0,
                    finished_at: None,
                    detail: json!({}),
                },
            ],
            downtime_s: Some(4.25),
            write_freeze_s: Some(3.5),
            verification: "no differences".into(),
            archive: Some(
                json!({"bucket": "b", "key": "archive/k.dump", "bytes": 7, "sha256": "ab"}),
            ),
            kept: vec!["RDS primary x".into()],
            next_steps: vec!["heroku2rds teardown".into()],
        };
        let text = render(&s);
        for want in [
            "migration acme of app acme: done",
            "3 table(s), 1000 rows (2.0 MB) copied, 42 change(s) applied",
            "provision  1m 05s",
            "archive    unfinished",
            "downtime: 4.2s with maintenance on; writes stopped for 3.5s",
            "s3://b/archive/k.dump (7 bytes, sha256 ab)",
            "- RDS primary x",
            "- heroku2rds teardown",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }
}
