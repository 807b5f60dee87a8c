//! The RDS side of provisioning: the parameter group (TLS forced) and the wait until the
//! instance is available.

use super::*;

pub(super) async fn ensure_param_group(
    rds: &aws_sdk_rds::Client,
    found: &Found<String>,
    spec: &Spec,
    names: &Names,
    out: &mut Provisioned,
) -> Result<()> {
    if found.ours().is_none() {
        rds.create_db_parameter_group()
            .db_parameter_group_name(&names.param_group)
            .db_parameter_group_family(format!("postgres{}", spec.db.engine_major))
            .description(format!("heroku2rds {}: TLS required", spec.name))
            .set_tags(Some(rds_tags(&spec.name)))
            .send()
            .await
            .map_err(|e| sdk("rds:CreateDBParameterGroup", e))?;
        out.record("DB parameter group", &names.param_group, "created");
    }
    let mut req = rds
        .modify_db_parameter_group()
        .db_parameter_group_name(&names.param_group)
        .parameters(
            aws_sdk_rds::types::Parameter::builder()
                .parameter_name("rds.force_ssl")
                .parameter_value("1")
                .apply_method(aws_sdk_rds::types::ApplyMethod::PendingReboot)
                .build(),
        );
    // Static: it takes effect when the instance starts with the group (at creation).
    if let Some(n) = spec.db.max_locks_per_transaction {
        req = req.parameters(
            aws_sdk_rds::types::Parameter::builder()
                .parameter_name("max_locks_per_transaction")
                .parameter_value(n.to_string())
                .apply_method(aws_sdk_rds::types::ApplyMethod::PendingReboot)
                .build(),
        );
    }
    req.send()
        .await
        .map_err(|e| sdk("rds:ModifyDBParameterGroup", e))?;
    Ok(())
}

/// Polls until the instance is available, within `waits.db`.
pub(super) async fn wait_available(
    rds: &aws_sdk_rds::Client,
    id: &str,
    migration: &str,
    waits: Waits,
) -> Result<observe::Db> {
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        match observe::db_instance(rds, id, migration).await? {
            Found::Ours(db) if db.status == "available" => return Ok(db),
            Found::Ours(db) => {
                if last_report.elapsed() >= Duration::from_secs(60) {
                    tracing::info!(
                        "waiting for RDS {id}: {} ({} min so far)",
                        db.status,
                        start.elapsed().as_secs() / 60
                    );
                    last_report = Instant::now();
                }
                if matches!(
                    db.status.as_str(),
                    "failed"
                        | "incompatible-parameters"
                        | "incompatible-network"
                        | "storage-full"
                        | "deleting"
                ) {
                    return Err(Error::other(format!("RDS {id} is {}", db.status)).with_fix(
                        "look at the instance's events in the RDS console; run teardown --delete-target and provision again if it cannot recover",
                    ));
                }
            }
            _ => {
                return Err(Error::other(format!(
                    "RDS {id} disappeared while provisioning"
                )))
            }
        }
        if start.elapsed() >= waits.db {
            return Err(Error::other(format!(
                "RDS {id} was not available after {} minutes",
                waits.db.as_secs() / 60
            ))
            .with_fix("re-run provision later: it waits for the same instance and continues")
            .transient());
        }
        tokio::time::sleep(waits.poll).await;
    }
}
