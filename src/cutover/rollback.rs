//! The rollback: undoes everything before the point of no return, converging from the apps'
//! live state, so it can be repeated after a crash. The write fence comes down first, so that
//! the dynos started again can write.

use super::*;

/// Undoes everything before the point of no return, converging from the apps' live state.
/// `src`: a session on the source when at hand (else one is opened from the app's
/// `DATABASE_URL`, which before the point of no return is still the Heroku database).
pub(super) async fn rollback(
    heroku: &Heroku,
    tgt: &Client,
    rec: &CutoverRecord,
    opts: &Options,
    why: &str,
    src: Option<&Client>,
) -> Result<()> {
    let scope = Scope::of(rec)?;
    let _ = store::record_cutover_step(
        tgt,
        rec.id,
        "rollback-started",
        Some(&serde_json::json!({ "reason": why })),
    )
    .await;
    // The fence comes down first, whether or not its step was recorded (a crash can fall
    // between raising it and recording it). A session at hand is tried first, then a fresh one
    // (the freeze may have failed because its session died).
    let fenced = rec.steps.iter().any(|s| s.0 == Step::Fenced.as_str());
    let mut lowered = match src {
        Some(c) => fence::lower(c).await,
        None => Err(Error::other("no session on the source at hand")),
    };
    if lowered.is_err() {
        lowered = async {
            let vars = App::new(heroku, &rec.app).config_vars().await?;
            let url = vars.get("DATABASE_URL").cloned().flatten();
            let (source, _) = resolve_source(opts, url.as_deref())?;
            fence::lower(&source.connect().await?).await
        }
        .await;
    }
    match lowered {
        Ok(ended) => tracing::info!(
            "rollback: write fence down ({ended} session(s) opened under it ended, to reconnect writable)"
        ),
        Err(e) if fenced => {
            return Err(e.context("lowering the write fence on the source (the app would not be able to write)"))
        }
        // Never raised: nothing to lower, and an unreachable source must not keep the app down.
        Err(e) => tracing::warn!("rollback: could not check the write fence (it was never raised): {e:#}"),
    }
    for (i, f) in scope.apps.iter().enumerate() {
        let app = App::new(heroku, &f.app);
        let info = app.info().await?;
        let live = app.formation().await?;
        let previous = if i > 0 || rec.previous_existed {
            None
        } else {
            app.attachments()
                .await?
                .into_iter()
                .find(|a| a.name == PREVIOUS_ATTACHMENT && a.addon.id == rec.addon_id)
                .map(|a| a.id)
        };
        let actions = rollback_plan(
            &f.formation,
            f.maintenance_before,
            &live,
            info.maintenance,
            previous.as_deref(),
        );
        for a in &actions {
            match a {
                RollbackAction::DetachPrevious(id) => {
                    tracing::info!("rollback: removing the {PREVIOUS_ATTACHMENT} attachment");
                    app.detach(id).await?;
                }
                RollbackAction::Scale(p) => {
                    tracing::info!("rollback: restoring the formation of app {}", f.app);
                    app.scale(p).await?;
                }
                RollbackAction::MaintenanceOff => {}
            }
        }
    }
    // Let the dynos come back before the router sends traffic to them again.
    let deadline = Instant::now() + opts.dyno_timeout;
    let mut pace = crate::heroku::client::Pace::dynos(heroku);
    for f in &scope.apps {
        let app = App::new(heroku, &f.app);
        loop {
            if formation_up(&f.formation, &app.dynos().await?, 0) {
                break;
            }
            if Instant::now() > deadline {
                tracing::warn!(
                    "rollback: the dynos of app {} are not all up yet after {}s; continuing",
                    f.app,
                    opts.dyno_timeout.as_secs()
                );
                break;
            }
            tokio::time::sleep(pace.next_delay()).await;
        }
    }
    for f in &scope.apps {
        let app = App::new(heroku, &f.app);
        if !f.maintenance_before && app.info().await?.maintenance {
            tracing::info!("rollback: maintenance off for app {}", f.app);
            app.set_maintenance(false).await?;
        }
    }
    store::finish_cutover(tgt, rec.id, "rolled-back", Some(why)).await?;
    tracing::info!("rollback complete: the apps are as they were before the cutover");
    Ok(())
}
