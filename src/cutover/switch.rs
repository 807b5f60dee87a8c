//! The switch, after the point of no return: the database attached under its new name,
//! `DATABASE_URL` moved, the release watched, the formation restored. It only goes forward.

use super::*;

/// The part after the point of no return: every step converges from the app's live state, so it
/// can be repeated after a crash.
pub(super) async fn forward(
    app: &App<'_>,
    tgt: &Client,
    rec: CutoverRecord,
    opts: &Options,
    sink: &dyn Sink,
) -> Result<Report> {
    let done: BTreeSet<Step> = rec.steps.iter().filter_map(|s| Step::parse(&s.0)).collect();
    let saved: Vec<Process> = serde_json::from_value(rec.formation.clone())
        .map_err(|e| Error::other("the saved formation is unreadable").with_source(e))?;
    let release_before = rec
        .steps
        .iter()
        .find(|s| s.0 == Step::PointOfNoReturn.as_str())
        .and_then(|s| s.1.as_ref()?.get("release_before")?.as_i64())
        .unwrap_or(0);
    let finish = |e: Error| {
        e.with_fix("the database switch is past the point of no return: fix the cause and run `heroku2rds cutover` again, it continues from where it stopped")
    };
    let record = |step: Step, detail: Option<serde_json::Value>| async move {
        let at = store::record_cutover_step(tgt, rec.id, step.as_str(), detail.as_ref()).await?;
        tracing::info!("cutover: {}", step.as_str());
        sink.info("cutover", format!("step {}", step.as_str()));
        Ok::<f64, Error>(at)
    };
    if !done.contains(&Step::DatabaseDetached) {
        let atts = app.attachments().await.map_err(finish)?;
        if let Some(a) = atts
            .iter()
            .find(|a| a.name == "DATABASE" && a.addon.id == rec.addon_id)
        {
            app.detach(&a.id).await.map_err(finish)?;
        }
        record(Step::DatabaseDetached, None).await?;
    }
    if !done.contains(&Step::DatabaseUrlSet) {
        let vars = app.config_vars().await.map_err(finish)?;
        if vars.get("DATABASE_URL").cloned().flatten().as_deref() != Some(opts.app_url.as_str()) {
            let mut set = BTreeMap::new();
            set.insert("DATABASE_URL".to_string(), Some(opts.app_url.clone()));
            app.set_config_vars(&set).await.map_err(finish)?;
        }
        record(Step::DatabaseUrlSet, None).await?;
    }
    let mut version = rec
        .steps
        .iter()
        .find(|s| s.0 == Step::ReleaseSucceeded.as_str())
        .and_then(|s| s.1.as_ref()?.get("version")?.as_i64());
    if !done.contains(&Step::ReleaseSucceeded) {
        let deadline = Instant::now() + opts.release_timeout;
        let v = loop {
            let latest = app.latest_release().await.map_err(finish)?;
            match latest {
                Some(r) if r.version > release_before && r.status == "succeeded" => {
                    break r.version
                }
                Some(r) if r.version > release_before && r.status == "failed" => {
                    return Err(finish(Error::other(format!(
                        "release v{} ({}) failed: the app's release phase did not accept the new DATABASE_URL",
                        r.version, r.description
                    ))));
                }
                _ => {}
            }
            if Instant::now() > deadline {
                return Err(finish(Error::other(format!(
                    "the release of the switch did not succeed within {}s",
                    opts.release_timeout.as_secs()
                ))));
            }
            tokio::time::sleep(opts.poll).await;
        };
        record(
            Step::ReleaseSucceeded,
            Some(serde_json::json!({ "version": v })),
        )
        .await?;
        version = Some(v);
    }
    let version = version.unwrap_or(release_before + 1);
    if !done.contains(&Step::FormationRestored) {
        app.scale(&saved).await.map_err(finish)?;
        record(Step::FormationRestored, None).await?;
    }
    if !done.contains(&Step::DynosUp) {
        let deadline = Instant::now() + opts.dyno_timeout;
        loop {
            let dynos = app.dynos().await.map_err(finish)?;
            if formation_up(&saved, &dynos, version) {
                break;
            }
            if Instant::now() > deadline {
                return Err(finish(Error::other(format!(
                    "the dynos were not all up on release v{version} within {}s",
                    opts.dyno_timeout.as_secs()
                ))));
            }
            tokio::time::sleep(opts.poll).await;
        }
        record(Step::DynosUp, None).await?;
    }
    if !done.contains(&Step::MaintenanceOff) {
        if !rec.maintenance_before {
            app.set_maintenance(false).await.map_err(finish)?;
        }
        record(Step::MaintenanceOff, None).await?;
    }
    record(Step::Completed, None).await?;
    store::finish_cutover(tgt, rec.id, "completed", None).await?;
    let rec = store::last_cutover(tgt)
        .await?
        .ok_or_else(|| Error::other("the cutover record vanished"))?;
    Ok(report(opts, &rec, "completed"))
}
