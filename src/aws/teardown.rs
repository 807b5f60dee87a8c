//! Removes what provision created, found by tag: always the worker, its security group, the key
//! pair and the job objects; the replica only when asked; the RDS primary (after a final
//! snapshot), its security group, parameter group, master secret and the archive bucket only
//! with `--delete-target`. Idempotent: what is already gone is skipped.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::errors::{code, sdk};
use super::observe::{Observed, Peer, Rule};
use super::spec::Names;
use super::Aws;
use crate::error::{Error, Result};

/// What to remove beyond the worker side.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    pub include_replica: bool,
    pub delete_target: bool,
    /// Longest wait for each deletion AWS performs asynchronously.
    pub wait: Duration,
    pub poll: Duration,
}

/// What teardown removed and kept.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

/// Runs teardown for migration `name`.
pub async fn run(
    aws: &Aws,
    name: &str,
    names: &Names,
    seen: &Observed,
    opts: Options,
) -> Result<Report> {
    let mut report = Report::default();
    match steps(aws, name, names, seen, opts, &mut report).await {
        Ok(()) => Ok(report),
        Err(e) => Err(if report.removed.is_empty() {
            e.context("teardown stopped before removing anything")
        } else {
            e.context(format!(
                "teardown stopped after removing: {} (re-run teardown to finish)",
                report.removed.join(", ")
            ))
        }),
    }
}

async fn steps(
    aws: &Aws,
    name: &str,
    names: &Names,
    seen: &Observed,
    opts: Options,
    report: &mut Report,
) -> Result<()> {
    let ec2 = aws.ec2();
    let _ = name;

    // The worker instances, then everything that only they used.
    let ids: Vec<String> = seen.workers.iter().map(|w| w.id.clone()).collect();
    if !ids.is_empty() {
        ec2.terminate_instances()
            .set_instance_ids(Some(ids.clone()))
            .send()
            .await
            .map_err(|e| sdk("ec2:TerminateInstances", e))?;
        wait_terminated(&ec2, &ids, opts).await?;
        for id in &ids {
            report.removed.push(format!("EC2 worker {id}"));
        }
    }
    if seen.key_pair.ours().is_some() {
        ec2.delete_key_pair()
            .key_name(&names.key_pair)
            .send()
            .await
            .map_err(|e| sdk("ec2:DeleteKeyPair", e))?;
        report
            .removed
            .push(format!("SSH key pair {}", names.key_pair));
    }
    if seen.bucket.ours().is_some() {
        let n = delete_prefix(aws, &names.bucket, "jobs/").await?;
        if n > 0 {
            report
                .removed
                .push(format!("{n} job object(s) in {}", names.bucket));
        }
    }
    if let Some(worker_sg) = seen.worker_sg.ours() {
        // The database group admits the worker group by id: drop that rule first, or AWS
        // refuses to delete the worker group.
        if let Some(db_sg) = seen.db_sg.ours() {
            let rule = Rule {
                port: 5432,
                peer: Peer::Group(worker_sg.id.clone()),
            };
            if db_sg.ingress.contains(&rule) {
                ec2.revoke_security_group_ingress()
                    .group_id(&db_sg.id)
                    .ip_permissions(
                        aws_sdk_ec2::types::IpPermission::builder()
                            .ip_protocol("tcp")
                            .from_port(5432)
                            .to_port(5432)
                            .user_id_group_pairs(
                                aws_sdk_ec2::types::UserIdGroupPair::builder()
                                    .group_id(&worker_sg.id)
                                    .build(),
                            )
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| sdk("ec2:RevokeSecurityGroupIngress", e))?;
            }
        }
        delete_group(&ec2, &worker_sg.id, opts).await?;
        report
            .removed
            .push(format!("worker security group {}", names.worker_sg));
    }

    // The replica.
    if let (Some(db), Some(rdsr), Some(ec2r)) =
        (seen.replica.ours(), aws.rds_replica(), aws.ec2_replica())
    {
        if opts.include_replica {
            unprotect(&rdsr, db).await?;
            delete_db(&rdsr, &db.id, None, opts).await?;
            report.removed.push(format!("RDS read replica {}", db.id));
            if let Some(g) = seen.replica_sg.ours() {
                delete_group(&ec2r, &g.id, opts).await?;
                report
                    .removed
                    .push(format!("replica security group {}", names.replica_sg));
            }
            if seen.replica_param_group.ours().is_some() {
                delete_param_group(&rdsr, &names.param_group).await?;
                report
                    .removed
                    .push(format!("replica DB parameter group {}", names.param_group));
            }
            if seen.replica_subnet_group.ours().is_some() {
                delete_subnet_group(&rdsr, &names.subnet_group, opts).await?;
                report
                    .removed
                    .push(format!("replica DB subnet group {}", names.subnet_group));
            }
        } else {
            report.kept.push(format!(
                "RDS read replica {} ({}; remove with --include-replica)",
                db.id,
                aws.replica_region().unwrap_or_default()
            ));
        }
    } else if opts.include_replica {
        if let (Some(g), Some(ec2r)) = (seen.replica_sg.ours(), aws.ec2_replica()) {
            delete_group(&ec2r, &g.id, opts).await?;
            report
                .removed
                .push(format!("replica security group {}", names.replica_sg));
        }
        if let (Some(_), Some(rdsr)) = (seen.replica_param_group.ours(), aws.rds_replica()) {
            delete_param_group(&rdsr, &names.param_group).await?;
            report
                .removed
                .push(format!("replica DB parameter group {}", names.param_group));
        }
        if let (Some(_), Some(rdsr)) = (seen.replica_subnet_group.ours(), aws.rds_replica()) {
            delete_subnet_group(&rdsr, &names.subnet_group, opts).await?;
            report
                .removed
                .push(format!("replica DB subnet group {}", names.subnet_group));
        }
    }

    // The target side.
    let rds = aws.rds();
    if !opts.delete_target {
        if let Some(db) = seen.db.ours() {
            report.kept.push(format!(
                "RDS primary {} (the new production database)",
                db.id
            ));
        }
        if seen.db_sg.ours().is_some() {
            report
                .kept
                .push(format!("database security group {}", names.db_sg));
        }
        if seen.param_group.ours().is_some() {
            report
                .kept
                .push(format!("DB parameter group {}", names.param_group));
        }
        if seen.subnet_group.ours().is_some() {
            report
                .kept
                .push(format!("DB subnet group {}", names.subnet_group));
        }
        if seen.secret.ours().is_some() {
            report
                .kept
                .push(format!("master password secret {}", names.secret));
        }
        if seen.bucket.ours().is_some() {
            report
                .kept
                .push(format!("S3 archive bucket {}", names.bucket));
        }
        return Ok(());
    }
    if let Some(db) = seen.db.ours() {
        unprotect(&rds, db).await?;
        let snapshot = format!(
            "{}-final-{}",
            db.id,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default()
        );
        delete_db(&rds, &db.id, Some(&snapshot), opts).await?;
        report.removed.push(format!("RDS primary {}", db.id));
        report
            .kept
            .push(format!("final snapshot {snapshot} of {}", db.id));
    }
    if let Some(g) = seen.db_sg.ours() {
        delete_group(&ec2, &g.id, opts).await?;
        report
            .removed
            .push(format!("database security group {}", names.db_sg));
    }
    if seen.param_group.ours().is_some() {
        delete_param_group(&rds, &names.param_group).await?;
        report
            .removed
            .push(format!("DB parameter group {}", names.param_group));
    }
    if seen.subnet_group.ours().is_some() {
        delete_subnet_group(&rds, &names.subnet_group, opts).await?;
        report
            .removed
            .push(format!("DB subnet group {}", names.subnet_group));
    }
    if seen.secret.ours().is_some() {
        aws.secrets()
            .delete_secret()
            .secret_id(&names.secret)
            .force_delete_without_recovery(true)
            .send()
            .await
            .map_err(|e| sdk("secretsmanager:DeleteSecret", e))?;
        report
            .removed
            .push(format!("master password secret {}", names.secret));
    }
    if seen.bucket.ours().is_some() {
        delete_prefix(aws, &names.bucket, "").await?;
        aws.s3()
            .delete_bucket()
            .bucket(&names.bucket)
            .send()
            .await
            .map_err(|e| sdk("s3:DeleteBucket", e))?;
        report.removed.push(format!(
            "S3 archive bucket {} and its objects",
            names.bucket
        ));
    }
    Ok(())
}

/// Turns deletion protection off (teardown was asked to delete this instance).
async fn unprotect(rds: &aws_sdk_rds::Client, db: &super::observe::Db) -> Result<()> {
    if db.deletion_protection {
        rds.modify_db_instance()
            .db_instance_identifier(&db.id)
            .deletion_protection(false)
            .apply_immediately(true)
            .send()
            .await
            .map_err(|e| sdk("rds:ModifyDBInstance", e))?;
    }
    Ok(())
}

async fn delete_param_group(rds: &aws_sdk_rds::Client, name: &str) -> Result<()> {
    match rds
        .delete_db_parameter_group()
        .db_parameter_group_name(name)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if code(&e) == Some("DBParameterGroupNotFound") => Ok(()),
        Err(e) => Err(sdk("rds:DeleteDBParameterGroup", e)),
    }
}

/// Deletes a DB subnet group; one still in use by an instance being deleted is retried.
async fn delete_subnet_group(rds: &aws_sdk_rds::Client, name: &str, opts: Options) -> Result<()> {
    let start = Instant::now();
    loop {
        match rds
            .delete_db_subnet_group()
            .db_subnet_group_name(name)
            .send()
            .await
        {
            Ok(_) => return Ok(()),
            Err(e) if code(&e) == Some("DBSubnetGroupNotFoundFault") => return Ok(()),
            Err(e)
                if code(&e) == Some("InvalidDBSubnetGroupStateFault")
                    && start.elapsed() < opts.wait =>
            {
                tokio::time::sleep(opts.poll).await;
            }
            Err(e) => return Err(sdk("rds:DeleteDBSubnetGroup", e)),
        }
    }
}

async fn wait_terminated(ec2: &aws_sdk_ec2::Client, ids: &[String], opts: Options) -> Result<()> {
    let start = Instant::now();
    loop {
        let out = ec2
            .describe_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| sdk("ec2:DescribeInstances", e))?;
        let all_gone = out
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .all(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) == Some("terminated"));
        if all_gone {
            return Ok(());
        }
        if start.elapsed() > opts.wait {
            return Err(Error::other("the worker did not terminate in time")
                .with_fix("re-run teardown: it continues")
                .transient());
        }
        tokio::time::sleep(opts.poll).await;
    }
}

/// Deletes a group, retrying while AWS still sees a dependency (a terminating instance's
/// network interface, a database being deleted).
async fn delete_group(ec2: &aws_sdk_ec2::Client, id: &str, opts: Options) -> Result<()> {
    let start = Instant::now();
    loop {
        match ec2.delete_security_group().group_id(id).send().await {
            Ok(_) => return Ok(()),
            Err(e) if code(&e) == Some("InvalidGroup.NotFound") => return Ok(()),
            Err(e) if code(&e) == Some("DependencyViolation") && start.elapsed() < opts.wait => {
                tokio::time::sleep(opts.poll).await;
            }
            Err(e) => return Err(sdk("ec2:DeleteSecurityGroup", e)),
        }
    }
}

async fn delete_db(
    rds: &aws_sdk_rds::Client,
    id: &str,
    final_snapshot: Option<&str>,
    opts: Options,
) -> Result<()> {
    let mut req = rds.delete_db_instance().db_instance_identifier(id);
    req = match final_snapshot {
        Some(s) => req.final_db_snapshot_identifier(s),
        None => req.skip_final_snapshot(true),
    };
    let start = Instant::now();
    loop {
        match req.clone().send().await {
            Ok(_) => break,
            Err(e) if code(&e) == Some("DBInstanceNotFound") => return Ok(()),
            Err(e) if code(&e) == Some("InvalidDBInstanceState") => {
                // Deleting already, or busy (creating, modifying, backing up, a replica being
                // promoted): RDS deletes only an instance at rest. Say which, and wait for it.
                let state = match rds
                    .describe_db_instances()
                    .db_instance_identifier(id)
                    .send()
                    .await
                {
                    Ok(o) => o
                        .db_instances()
                        .first()
                        .and_then(|d| d.db_instance_status())
                        .unwrap_or_default()
                        .to_string(),
                    Err(e) if code(&e) == Some("DBInstanceNotFound") => return Ok(()),
                    Err(e) => return Err(sdk("rds:DescribeDBInstances", e)),
                };
                if state == "deleting" {
                    break;
                }
                if start.elapsed() > opts.wait {
                    return Err(Error::other(format!(
                        "RDS {id} is {state}: AWS deletes an instance only once it is available \
                         (or stopped), and it stayed {state} for {} minutes",
                        opts.wait.as_secs() / 60
                    ))
                    .with_fix("re-run teardown later: it continues where it stopped")
                    .transient());
                }
                tracing::info!("RDS {id} is {state}; waiting to delete it");
                tokio::time::sleep(opts.poll).await;
            }
            Err(e) => return Err(sdk("rds:DeleteDBInstance", e)),
        }
    }
    let start = Instant::now();
    loop {
        match rds
            .describe_db_instances()
            .db_instance_identifier(id)
            .send()
            .await
        {
            Err(e) if code(&e) == Some("DBInstanceNotFound") => return Ok(()),
            Err(e) => return Err(sdk("rds:DescribeDBInstances", e)),
            Ok(_) if start.elapsed() > opts.wait => {
                return Err(Error::other(format!("RDS {id} is still being deleted"))
                    .with_fix("re-run teardown later: it continues")
                    .transient())
            }
            Ok(_) => tokio::time::sleep(opts.poll).await,
        }
    }
}

/// Deletes every object under `prefix`; returns how many.
async fn delete_prefix(aws: &Aws, bucket: &str, prefix: &str) -> Result<usize> {
    let s3 = aws.s3();
    let mut n = 0;
    let mut token = None;
    loop {
        let out = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(prefix)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| sdk("s3:ListBucket", e))?;
        for o in out.contents() {
            if let Some(k) = o.key() {
                s3.delete_object()
                    .bucket(bucket)
                    .key(k)
                    .send()
                    .await
                    .map_err(|e| sdk("s3:DeleteObject", e))?;
                n += 1;
            }
        }
        // Unfinished multipart uploads hold storage too.
        if prefix.is_empty() {
            let ups = s3
                .list_multipart_uploads()
                .bucket(bucket)
                .send()
                .await
                .map_err(|e| sdk("s3:ListBucketMultipartUploads", e))?;
            for u in ups.uploads() {
                s3.abort_multipart_upload()
                    .bucket(bucket)
                    .key(u.key().unwrap_or_default())
                    .upload_id(u.upload_id().unwrap_or_default())
                    .send()
                    .await
                    .map_err(|e| sdk("s3:AbortMultipartUpload", e))?;
            }
        }
        match out.next_continuation_token() {
            Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_string()),
            _ => return Ok(n),
        }
    }
}
