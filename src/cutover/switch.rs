//! The switch, after the point of no return: every moved attachment detached, its variable set
//! to the target, the release of that change watched on every app, the formations restored. It
//! only goes forward; every step converges from the apps' live state, so a re-run after a crash
//! or a failed release continues it.

use super::*;

/// The note (a record beside the steps) holding the release each app's switch made.
const RELEASES_NOTE: &str = "switch-releases";
/// A variable changed only to make a fresh release when the previous one failed.
const ATTEMPT_VAR: &str = "HEROKU2RDS_SWITCH_ATTEMPT";

/// The part after the point of no return.
pub(super) async fn forward(
    heroku: &Heroku,
    tgt: &Client,
    rec: CutoverRecord,
    opts: &Options,
    sink: &dyn Sink,
) -> Result<Report> {
    let done: BTreeSet<Step> = rec.steps.iter().filter_map(|s| Step::parse(&s.0)).collect();
    let scope = Scope::of(&rec)?;
    let finish = |e: Error| {
        let fix = e
            .fix()
            .map(str::to_string)
            .unwrap_or_else(|| "fix the cause and run `heroku2rds cutover` again".to_string());
        e.with_fix(format!("the database switch is past the point of no return: {fix}; a re-run continues from where it stopped (do not scale the app up by hand before that)"))
    };
    let record = |step: Step, detail: Option<serde_json::Value>| async move {
        let at = store::record_cutover_step(tgt, rec.id, step.as_str(), detail.as_ref()).await?;
        tracing::info!("cutover: {}", step.as_str());
        sink.info("cutover", format!("step {}", step.as_str()));
        Ok::<f64, Error>(at)
    };
    // The moves of each app (records of older versions: the app's DATABASE).
    let moves_of = |app: &str| -> Vec<Move> {
        scope
            .moves
            .iter()
            .filter(|m| m.app == app)
            .cloned()
            .collect()
    };
    if !done.contains(&Step::DatabaseDetached) {
        for f in &scope.apps {
            let app = App::new(heroku, &f.app);
            let live = app.attachments().await.map_err(finish)?;
            let wanted = moves_of(&f.app);
            for a in &live {
                let moved = if scope.moves.is_empty() {
                    a.name == "DATABASE" && a.addon.id == rec.addon_id
                } else {
                    wanted.iter().any(|m| m.attachment_id == a.id)
                };
                if moved {
                    app.detach(&a.id).await.map_err(finish)?;
                }
            }
        }
        record(Step::DatabaseDetached, None).await?;
    }
    let mut releases: BTreeMap<String, i64> = store::cutover_note(tgt, rec.id, RELEASES_NOTE)
        .await?
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    if !done.contains(&Step::DatabaseUrlSet) {
        for f in &scope.apps {
            let app = App::new(heroku, &f.app);
            let mut want: BTreeMap<String, Option<String>> = BTreeMap::new();
            let moves = moves_of(&f.app);
            if moves.is_empty() {
                want.insert("DATABASE_URL".into(), Some(opts.app_url.clone()));
            }
            for m in &moves {
                want.insert(m.var(), Some(Scope::url_for(opts, m).to_string()));
            }
            let live = app.config_vars().await.map_err(finish)?;
            want.retain(|k, v| live.get(k) != Some(v));
            if want.is_empty() {
                continue;
            }
            // Something changes, so the PATCH makes a release: the newest one right after it.
            app.set_config_vars(&want).await.map_err(finish)?;
            if let Some(r) = app.latest_release().await.map_err(finish)? {
                releases.insert(f.app.clone(), r.version);
                store::set_cutover_note(tgt, rec.id, RELEASES_NOTE, &serde_json::json!(releases))
                    .await?;
            }
        }
        record(Step::DatabaseUrlSet, None).await?;
    }
    if !done.contains(&Step::ReleaseSucceeded) {
        let release_before = rec
            .steps
            .iter()
            .find(|s| s.0 == Step::PointOfNoReturn.as_str())
            .and_then(|s| s.1.as_ref()?.get("release_before")?.as_i64())
            .unwrap_or(0);
        let idle = Cancel::default();
        for f in &scope.apps {
            let app = App::new(heroku, &f.app);
            let version = match releases.get(&f.app) {
                Some(v) => *v,
                // Not recorded (a crash between the change and its record, or an older
                // record): the app's newest release, which for the migrated app must be newer
                // than the point of no return (the other apps' numbers are their own).
                None => match app.latest_release().await.map_err(finish)? {
                    Some(r) if f.app != rec.app || r.version > release_before => r.version,
                    _ => continue,
                },
            };
            let version = if app.release(version).await.map_err(finish)?.status == "failed" {
                // A re-run after a failed release: the same values again make no release, so
                // one more variable changes.
                let attempt = rec.id.to_string() + "." + &(version.to_string());
                let mut set = BTreeMap::new();
                set.insert(ATTEMPT_VAR.to_string(), Some(attempt));
                for m in moves_of(&f.app) {
                    set.insert(m.var(), Some(Scope::url_for(opts, &m).to_string()));
                }
                if scope.moves.is_empty() {
                    set.insert("DATABASE_URL".into(), Some(opts.app_url.clone()));
                }
                tracing::warn!(
                    "release v{version} of app {} failed: making a fresh release of the switch",
                    f.app
                );
                app.set_config_vars(&set).await.map_err(finish)?;
                let v = app
                    .latest_release()
                    .await
                    .map_err(finish)?
                    .map(|r| r.version)
                    .unwrap_or(version);
                releases.insert(f.app.clone(), v);
                store::set_cutover_note(tgt, rec.id, RELEASES_NOTE, &serde_json::json!(releases))
                    .await?;
                v
            } else {
                version
            };
            freeze::wait_release(&app, version, opts, &idle)
                .await
                .map_err(finish)?;
            releases.insert(f.app.clone(), version);
        }
        let main = releases
            .get(&rec.app)
            .copied()
            .unwrap_or(release_before + 1);
        record(
            Step::ReleaseSucceeded,
            Some(serde_json::json!({ "version": main, "releases": releases })),
        )
        .await?;
    }
    if !done.contains(&Step::FormationRestored) {
        for f in &scope.apps {
            App::new(heroku, &f.app)
                .scale(&f.formation)
                .await
                .map_err(finish)?;
        }
        record(Step::FormationRestored, None).await?;
    }
    if !done.contains(&Step::DynosUp) {
        let deadline = Instant::now() + opts.dyno_timeout;
        let mut pace = crate::heroku::client::Pace::dynos(heroku);
        for f in &scope.apps {
            let app = App::new(heroku, &f.app);
            let version = releases.get(&f.app).copied().unwrap_or(0);
            loop {
                let dynos = app.dynos().await.map_err(finish)?;
                if formation_up(&f.formation, &dynos, version) {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(finish(Error::other(format!(
                        "the dynos of app {} were not all up on release v{version} within {}s",
                        f.app,
                        opts.dyno_timeout.as_secs()
                    ))));
                }
                tokio::time::sleep(pace.next_delay()).await;
            }
        }
        record(Step::DynosUp, None).await?;
    }
    if !done.contains(&Step::MaintenanceOff) {
        for f in &scope.apps {
            if !f.maintenance_before {
                App::new(heroku, &f.app)
                    .set_maintenance(false)
                    .await
                    .map_err(finish)?;
            }
        }
        record(Step::MaintenanceOff, None).await?;
    }
    // Materialized views were refreshed before the freeze; again now, on the app's database.
    let (conc, plain) = sequences::refresh_matviews_after_switch(tgt).await;
    if conc + plain > 0 {
        tracing::info!(
            "refreshed {} materialized view(s) after the switch ({conc} concurrently, {plain} blocking their readers meanwhile)",
            conc + plain
        );
    }
    record(Step::Completed, None).await?;
    store::finish_cutover(tgt, rec.id, "completed", None).await?;
    let rec = store::last_cutover(tgt)
        .await?
        .ok_or_else(|| Error::other("the cutover record vanished"))?;
    Ok(report(opts, &rec, "completed"))
}
