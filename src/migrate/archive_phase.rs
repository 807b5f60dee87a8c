//! `migrate`'s archive phase: the Heroku database as it was at the switch, into S3, with its key
//! and backup recorded before uploading so that a re-run finds the same object.
//!
//! The database is the add-on the completed cutover recorded on the target: after the switch no
//! add-on is attached as `DATABASE`, and an app with a follower has two Postgres add-ons.

use super::*;
use crate::pg::store::CutoverRecord;

/// The add-on to archive: the one a completed cutover of this app recorded (by id), else the
/// one configured (`--addon`, None: as `App::database` finds it).
fn archived_addon(
    app: &str,
    configured: Option<&str>,
    cutover: Option<&CutoverRecord>,
) -> Option<String> {
    match cutover {
        Some(rec)
            if rec.app == app
                && rec.outcome.as_deref() == Some("completed")
                && !rec.addon_id.is_empty() =>
        {
            Some(rec.addon_id.clone())
        }
        _ => configured.map(str::to_string),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn archive_phase(
    heroku: &Heroku,
    o: &Options,
    aws: &Aws,
    tgt: &tokio_postgres::Client,
    source: &ConnSpec,
    from: ArchiveFrom,
    signals: &cutover::Signals,
    say: &dyn Sink,
) -> Result<serde_json::Value> {
    const PHASE: &str = "archive";
    if let Some(p) = finished(&store::migrate_phases(tgt).await?, PHASE) {
        return Ok(p.detail);
    }
    say.step(
        PHASE,
        "[5/6] archive: the final Heroku backup, streamed into the S3 bucket",
    );
    // The key's date is fixed once: a re-run finds (or overwrites) the same object.
    let recorded = store::migrate_phases(tgt)
        .await?
        .into_iter()
        .find(|p| p.phase == PHASE)
        .map(|p| p.detail)
        .unwrap_or_default();
    let stamp = recorded["stamp"].as_u64().unwrap_or_else(archive::unix_now);
    store::start_migrate_phase(tgt, PHASE, None, &json!({"stamp": stamp})).await?;
    let spec = &o.resolved.spec;
    let account = aws.account().await?;
    let bucket = crate::aws::spec::bucket_name(&spec.name, &account, &spec.region);
    let aborted = s3archive::abort_unfinished(aws, &bucket, "archive/").await?;
    if aborted > 0 {
        say.info(
            PHASE,
            format!("aborted {aborted} unfinished upload(s) of an interrupted run"),
        );
    }
    let addon = archived_addon(
        &o.app,
        o.addon.as_deref(),
        store::last_cutover(tgt).await?.as_ref(),
    );
    let (via, label) = match from {
        ArchiveFrom::Backup => {
            let label = match recorded["backup"].as_str() {
                Some(l) => l.to_string(),
                None => {
                    let l = archive::capture(heroku, &o.app, addon.as_deref()).await?;
                    store::start_migrate_phase(tgt, PHASE, None, &json!({"backup": l})).await?;
                    l
                }
            };
            (archive::Via::Backup(Some(label.clone())), label)
        }
        ArchiveFrom::PgDump => (archive::Via::PgDump(Some(source.clone())), "pg_dump".into()),
    };
    let key = archive::object_key(&o.app, &label, stamp);
    let done = match s3archive::find_complete(aws, &bucket, &key).await? {
        Some(stored) => {
            say.info(PHASE, format!("s3://{bucket}/{key} is already complete"));
            json!({"bucket": stored.bucket, "key": stored.key, "bytes": stored.bytes, "sha256": stored.sha256})
        }
        None => {
            let aopts = archive::Options {
                app: o.app.clone(),
                name: spec.name.clone(),
                region: spec.region.clone(),
                addon,
                via,
                backup_timeout: o.backup_timeout,
                stamp: Some(stamp),
            };
            let a =
                archive::run(aws, Some(heroku), &aopts, signals.cancel.cancelled(), say).await?;
            json!({"bucket": a.bucket, "key": a.key, "bytes": a.bytes, "sha256": a.sha256, "source": a.source})
        }
    };
    store::finish_migrate_phase(tgt, PHASE, &done).await?;
    let done = finished(&store::migrate_phases(tgt).await?, PHASE)
        .map(|p| p.detail)
        .unwrap_or(done);
    say.info(
        PHASE,
        format!(
            "s3://{}/{} ({} bytes, sha256 {})",
            done["bucket"].as_str().unwrap_or_default(),
            done["key"].as_str().unwrap_or_default(),
            done["bytes"],
            done["sha256"].as_str().unwrap_or_default()
        ),
    );
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(app: &str, addon_id: &str, outcome: Option<&str>) -> CutoverRecord {
        CutoverRecord {
            id: 1,
            app: app.into(),
            addon_id: addon_id.into(),
            addon_name: "postgresql-one".into(),
            formation: serde_json::Value::Null,
            maintenance_before: false,
            previous_existed: false,
            outcome: outcome.map(str::to_string),
            reason: None,
            steps: Vec::new(),
        }
    }

    #[test]
    fn archives_the_addon_the_cutover_switched() {
        let done = record("acme", "p1", Some("completed"));
        let rolled = record("acme", "p1", Some("rolled-back"));
        let running = record("acme", "p1", None);
        let elsewhere = record("other", "p9", Some("completed"));
        let blank = record("acme", "", Some("completed"));
        // (configured --addon, cutover record, chosen)
        let table: &[(Option<&str>, Option<&CutoverRecord>, Option<&str>)] = &[
            (None, None, None),
            (
                Some("HEROKU_POSTGRESQL_RED"),
                None,
                Some("HEROKU_POSTGRESQL_RED"),
            ),
            (None, Some(&done), Some("p1")),
            // The switched add-on wins over a configured one.
            (Some("postgresql-two"), Some(&done), Some("p1")),
            // Only a completed cutover of this app names it.
            (None, Some(&rolled), None),
            (Some("x"), Some(&running), Some("x")),
            (None, Some(&elsewhere), None),
            (None, Some(&blank), None),
        ];
        for (configured, rec, want) in table {
            assert_eq!(
                archived_addon("acme", *configured, *rec).as_deref(),
                *want,
                "{configured:?} {:?}",
                rec.map(|r| &r.outcome)
            );
        }
    }
}
