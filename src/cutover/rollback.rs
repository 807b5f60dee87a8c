//! The rollback: undoes everything before the point of no return, converging from the app's
//! live state, so it can be repeated after a crash.

use super::*;

/// Undoes everything before the point of no return, converging from the app's live state.
pub(super) async fn rollback(
    app: &App<'_>,
    tgt: &Client,
    rec: &CutoverRecord,
    opts: &Options,
    why: &str,
) -> Result<()> {
    let saved: Vec<Process> = serde_json::from_value(rec.formation.clone())
        .map_err(|e| Error::other("the saved formation is unreadable").with_source(e))?;
    let _ = store::record_cutover_step(
        tgt,
        rec.id,
        "rollback-started",
        Some(&serde_json::json!({ "reason": why })),
    )
    .await;
    let info = app.info().await?;
    let live = app.formation().await?;
    let previous = if rec.previous_existed {
        None
    } else {
        app.attachments()
            .await?
            .into_iter()
            .find(|a| a.name == PREVIOUS_ATTACHMENT && a.addon.id == rec.addon_id)
            .map(|a| a.id)
    };
    let actions = rollback_plan(
        &saved,
        rec.maintenance_before,
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
                tracing::info!("rollback: restoring the formation");
                app.scale(p).await?;
            }
            RollbackAction::MaintenanceOff => {}
        }
    }
    // Let the dynos come back before the router sends traffic to them again.
    let deadline = Instant::now() + opts.dyno_timeout;
    loop {
        if formation_up(&saved, &app.dynos().await?, 0) {
            break;
        }
        if Instant::now() > deadline {
            tracing::warn!(
                "rollback: the dynos are not all up yet after {}s; continuing",
                opts.dyno_timeout.as_secs()
            );
            break;
        }
        tokio::time::sleep(opts.poll).await;
    }
    if actions.contains(&RollbackAction::MaintenanceOff) {
        tracing::info!("rollback: maintenance off");
        app.set_maintenance(false).await?;
    }
    store::finish_cutover(tgt, rec.id, "rolled-back", Some(why)).await?;
    tracing::info!("rollback complete: the app is as it was before the cutover");
    Ok(())
}
