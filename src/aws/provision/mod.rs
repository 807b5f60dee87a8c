//! Carries out a plan: find-or-create every resource, in dependency order, each created already
//! tagged (or tagged right after, where AWS cannot tag at creation). Re-running converges: what
//! exists is left alone, what is missing is created, security group rules are brought to exactly
//! the desired set. On failure the error says what this run had created so far.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, HttpTokensState, InstanceMetadataOptionsRequest,
    InstanceNetworkInterfaceSpecification, InstanceType, IpPermission, IpRange, Ipv6Range,
    ResourceType, ShutdownBehavior, Tag, TagSpecification, UserIdGroupPair, VolumeType,
};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use serde::Serialize;
use sha2::Digest;

use super::bootstrap;
use super::errors::{code, sdk};
use super::observe::{self, Found, Observed, Peer, Rule};
use super::plan::{db_rules, replica_rules, rule_diff, worker_rules};
use super::spec::{generate_password, Names, Spec};
use super::userdata::{self, UserData};
use super::{Aws, TAG_KEY};
use crate::aws::job::{Job, JOB_VERSION};
use crate::error::{Error, Result};
use crate::pg::conn::ConnSpec;
use crate::pg::preflight::KeylessMode;

mod bucket;
mod database;
mod network;
mod worker;

use bucket::secure_bucket;
use database::{ensure_param_group, wait_available};
use network::{ensure_group, ensure_subnet_group, Settle};
use worker::{launch_worker, refresh_worker_source};

/// What the worker runs and with which binary.
pub struct WorkerInput {
    /// The source database URL (goes into the job, never into user-data).
    pub source_url: String,
    /// The worker's binary, checked: a file uploaded (streamed, never held in memory whole) or a
    /// URL the worker downloads. `None` when the worker exists already.
    pub binary: Option<crate::aws::setup::WorkerBinary>,
    /// Parallel copy workers.
    pub jobs: Option<usize>,
    /// Keyless table handling.
    pub keyless: KeylessMode,
    /// How the worker reaches the database when it runs on this machine (an emulator's
    /// instances do not run: a local stand-in runs the job): the tunnel and CA bundle this
    /// machine uses. `None` on AWS: the worker connects to the endpoint and checks it against the
    /// RDS bundle its bootstrap installs.
    pub local_reach: Option<Reach>,
    /// How this machine reaches the database (to hand a changed source URL to a running
    /// worker through it).
    pub reach: crate::aws::setup::ReachSettings,
}

/// How a machine reaches the RDS database: an optional tunnel (`HOST:PORT`) and the CA bundle
/// that signed the database's certificate.
#[derive(Clone, Debug, Default)]
pub struct Reach {
    pub connect: Option<String>,
    pub ca_bundle: std::path::PathBuf,
}

impl Reach {
    /// The master user's connection to the database at `host:port` (TLS verified against the
    /// host name).
    pub fn target(
        &self,
        host: &str,
        port: i32,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<ConnSpec> {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let url = format!(
            "postgresql://{}:{}@{host}:{port}/{}?sslmode=verify-full&sslrootcert={}",
            enc(user),
            enc(password),
            enc(db),
            enc(&self.ca_bundle.to_string_lossy())
        );
        let spec = ConnSpec::parse(&url, "target")?;
        match &self.connect {
            Some(c) => spec.via(c),
            None => Ok(spec),
        }
    }
}

/// Reads the master password provision stored in Secrets Manager.
pub async fn read_master_password(aws: &Aws, names: &Names) -> Result<String> {
    let v = aws
        .secrets()
        .get_secret_value()
        .secret_id(&names.secret)
        .send()
        .await
        .map_err(|e| sdk("secretsmanager:GetSecretValue", e))?;
    let parsed: serde_json::Value =
        serde_json::from_str(v.secret_string().unwrap_or("{}")).unwrap_or_default();
    parsed["password"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            Error::other(format!(
                "the secret {} holds no password field",
                names.secret
            ))
            .with_fix(
                "run teardown --delete-target for this migration, or restore the secret's JSON",
            )
        })
}

/// One thing provision did or found.
#[derive(Clone, Debug, Serialize)]
pub struct Done {
    pub resource: &'static str,
    pub name: String,
    /// created, changed or exists.
    pub outcome: &'static str,
}

/// The result of a provision run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Provisioned {
    pub steps: Vec<Done>,
    /// host and port of the RDS primary.
    pub endpoint: Option<(String, i32)>,
    /// Where the master password is kept.
    pub secret: String,
    pub bucket: String,
    pub worker: Option<String>,
}

impl Provisioned {
    fn record(&mut self, resource: &'static str, name: &str, outcome: &'static str) {
        tracing::info!("{resource} {name}: {outcome}");
        self.steps.push(Done {
            resource,
            name: name.to_string(),
            outcome,
        });
    }

    fn created(&self) -> Vec<String> {
        self.steps
            .iter()
            .filter(|d| d.outcome != "exists")
            .map(|d| format!("{} {} ({})", d.resource, d.name, d.outcome))
            .collect()
    }
}

/// Bounds on waiting for AWS.
#[derive(Clone, Copy, Debug)]
pub struct Waits {
    /// Longest wait for the RDS primary to become available.
    pub db: Duration,
    /// Polling interval.
    pub poll: Duration,
}

fn tags(name: &str, label: &str) -> Vec<Tag> {
    vec![
        Tag::builder().key(TAG_KEY).value(name).build(),
        Tag::builder().key("Name").value(label).build(),
    ]
}

fn tag_spec(kind: ResourceType, name: &str, label: &str) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(tags(name, label)))
        .build()
}

fn rds_tags(name: &str) -> Vec<aws_sdk_rds::types::Tag> {
    vec![aws_sdk_rds::types::Tag::builder()
        .key(TAG_KEY)
        .value(name)
        .build()]
}

/// Runs provision. `seen` comes from [`observe::observe`] just before; conflicts were refused by
/// the caller.
pub async fn apply(
    aws: &Aws,
    spec: &Spec,
    names: &Names,
    seen: Observed,
    worker: Option<WorkerInput>,
    waits: Waits,
) -> Result<Provisioned> {
    let mut out = Provisioned {
        secret: names.secret.clone(),
        bucket: names.bucket.clone(),
        ..Default::default()
    };
    match steps(aws, spec, names, seen, worker, waits, &mut out).await {
        Ok(()) => Ok(out),
        Err(e) => {
            let created = out.created();
            Err(if created.is_empty() {
                e.context("provision stopped before changing anything")
            } else {
                e.context(format!(
                    "provision stopped after: {} (re-run provision to continue; `heroku2rds teardown` removes the worker side, `teardown --delete-target` also the database side)",
                    created.join(", ")
                ))
            })
        }
    }
}

async fn steps(
    aws: &Aws,
    spec: &Spec,
    names: &Names,
    seen: Observed,
    worker: Option<WorkerInput>,
    waits: Waits,
    out: &mut Provisioned,
) -> Result<()> {
    let ec2 = aws.ec2();
    let name = spec.name.as_str();

    // Security groups: the worker's first (the database's rules point at it).
    let worker_sg = if spec.worker.is_some() || seen.worker_sg.ours().is_some() {
        Some(
            ensure_group(
                &ec2,
                &seen.worker_sg,
                seen.placement.vpc_id.as_deref(),
                &names.worker_sg,
                name,
                "heroku2rds worker: no inbound traffic",
                &worker_rules(spec),
                "worker security group",
                out,
            )
            .await?,
        )
    } else {
        None
    };
    let db_sg = ensure_group(
        &ec2,
        &seen.db_sg,
        seen.placement.vpc_id.as_deref(),
        &names.db_sg,
        name,
        "heroku2rds database: 5432 from the worker and the operator",
        &db_rules(spec, worker_sg.as_deref()),
        "database security group",
        out,
    )
    .await?;

    if let Some(key) = &spec.ssh_public_key {
        if seen.key_pair.ours().is_none() {
            ec2.import_key_pair()
                .key_name(&names.key_pair)
                .public_key_material(aws_sdk_ec2::primitives::Blob::new(key.as_bytes()))
                .tag_specifications(tag_spec(ResourceType::KeyPair, name, &names.key_pair))
                .send()
                .await
                .map_err(|e| sdk("ec2:ImportKeyPair", e))?;
            out.record("SSH key pair", &names.key_pair, "created");
        }
    }

    // Parameter group with TLS required; set on every run (idempotent), so an interrupted
    // first run cannot leave it without rds.force_ssl.
    let rds = aws.rds();
    ensure_param_group(&rds, &seen.param_group, spec, names, out).await?;

    // The master password: generated here, stored in Secrets Manager before the database that
    // uses it exists, never printed.
    let secrets = aws.secrets();
    let password = match seen.secret.ours() {
        Some(_) => read_master_password(aws, names).await?,
        None => {
            let password = generate_password()?;
            let value = serde_json::json!({
                "engine": "postgres",
                "username": spec.db.master_username,
                "password": password,
                "dbname": spec.db.db_name,
                "dbInstanceIdentifier": names.db,
            });
            secrets
                .create_secret()
                .name(&names.secret)
                .description(format!("heroku2rds {name}: RDS master credentials"))
                .secret_string(value.to_string())
                .tags(
                    aws_sdk_secretsmanager::types::Tag::builder()
                        .key(TAG_KEY)
                        .value(name)
                        .build(),
                )
                .send()
                .await
                .map_err(|e| sdk("secretsmanager:CreateSecret", e))?;
            out.record("master password secret", &names.secret, "created");
            password
        }
    };

    // The RDS primary, in the migration's subnets.
    ensure_subnet_group(
        &rds,
        &seen.subnet_group,
        &seen.placement,
        names,
        name,
        "DB subnet group",
        out,
    )
    .await?;
    if seen.db.ours().is_none() {
        let mut req = rds
            .create_db_instance()
            .db_instance_identifier(&names.db)
            .engine("postgres")
            .engine_version(spec.db.engine_major.to_string())
            .db_instance_class(&spec.db.instance_class)
            .allocated_storage(spec.db.storage_gb)
            .storage_type("gp3")
            .storage_encrypted(true)
            .master_username(&spec.db.master_username)
            .master_user_password(&password)
            .db_name(&spec.db.db_name)
            .vpc_security_group_ids(&db_sg)
            .db_subnet_group_name(&names.subnet_group)
            .multi_az(spec.db.multi_az)
            .engine_lifecycle_support(if spec.db.extended_support {
                "open-source-rds-extended-support"
            } else {
                "open-source-rds-extended-support-disabled"
            })
            .db_parameter_group_name(&names.param_group)
            .publicly_accessible(true)
            .backup_retention_period(spec.db.backup_retention_days)
            .deletion_protection(true)
            .copy_tags_to_snapshot(true)
            .auto_minor_version_upgrade(true)
            .set_tags(Some(rds_tags(name)));
        if let Some(max) = spec.db.max_storage_gb {
            req = req.max_allocated_storage(max);
        }
        req.send()
            .await
            .map_err(|e| sdk("rds:CreateDBInstance", e))?;
        out.record("RDS primary", &names.db, "created");
    }
    let db = wait_available(&rds, &names.db, name, waits).await?;
    out.endpoint = db.endpoint.clone();

    // The cross-region read replica, once the primary is available.
    if let (Some(rr), Some(ec2r), Some(rdsr)) =
        (&spec.replica_region, aws.ec2_replica(), aws.rds_replica())
    {
        let replica_sg = ensure_group(
            &ec2r,
            &seen.replica_sg,
            seen.replica_placement.vpc_id.as_deref(),
            &names.replica_sg,
            name,
            "heroku2rds replica: 5432 from the operator",
            &replica_rules(spec),
            "replica security group",
            out,
        )
        .await?;
        // A cross-region replica cannot use the primary's parameter group: it gets its own.
        ensure_param_group(&rdsr, &seen.replica_param_group, spec, names, out).await?;
        ensure_subnet_group(
            &rdsr,
            &seen.replica_subnet_group,
            &seen.replica_placement,
            names,
            name,
            "replica DB subnet group",
            out,
        )
        .await?;
        if seen.replica.ours().is_none() {
            rdsr.create_db_instance_read_replica()
                .db_parameter_group_name(&names.param_group)
                .db_instance_identifier(&names.replica)
                .source_db_instance_identifier(&db.arn)
                .db_instance_class(&spec.db.instance_class)
                .kms_key_id("alias/aws/rds")
                .vpc_security_group_ids(replica_sg)
                .db_subnet_group_name(&names.subnet_group)
                .publicly_accessible(true)
                .set_tags(Some(rds_tags(name)))
                .send()
                .await
                .map_err(|e| sdk("rds:CreateDBInstanceReadReplica", e))?;
            out.record(
                "RDS cross-region read replica",
                &format!("{} ({rr})", names.replica),
                "created",
            );
        }
    }

    // The archive bucket.
    let s3 = aws.s3();
    match &seen.bucket {
        Found::Ours(b) if b.tagged => {}
        Found::Ours(_) => {
            secure_bucket(&s3, &names.bucket, name).await?;
            out.record("S3 archive bucket", &names.bucket, "changed");
        }
        _ => {
            let mut req = s3.create_bucket().bucket(&names.bucket);
            if spec.region != "us-east-1" {
                req = req.create_bucket_configuration(
                    aws_sdk_s3::types::CreateBucketConfiguration::builder()
                        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(
                            spec.region.as_str(),
                        ))
                        .build(),
                );
            }
            req.send().await.map_err(|e| sdk("s3:CreateBucket", e))?;
            out.record("S3 archive bucket", &names.bucket, "created");
            secure_bucket(&s3, &names.bucket, name).await?;
        }
    }

    // The worker.
    if let (Some(_), Some(input)) = (&spec.worker, worker) {
        let verdict = seen.worker_verdict(seen.at);
        if let (Some(existing), Some(bootstrap::Verdict::Replace(why))) =
            (seen.workers.first(), &verdict)
        {
            ec2.terminate_instances()
                .instance_ids(&existing.id)
                .send()
                .await
                .map_err(|e| sdk("ec2:TerminateInstances", e))?;
            out.record(
                "EC2 worker",
                &format!("{} ({why}; a new one is launched)", existing.id),
                "terminated",
            );
        }
        if let (Some(existing), Some(bootstrap::Verdict::Keep)) = (seen.workers.first(), &verdict) {
            out.worker = Some(existing.id.clone());
            let endpoint = db.endpoint.clone();
            refresh_worker_source(
                aws,
                spec,
                names,
                &existing.id,
                &input,
                endpoint,
                &password,
                out,
            )
            .await?;
        } else {
            let (host, port) = db
                .endpoint
                .clone()
                .ok_or_else(|| Error::other(format!("RDS reports no endpoint for {}", names.db)))?;
            let reach = input.local_reach.clone().unwrap_or_else(|| Reach {
                connect: None,
                ca_bundle: userdata::RDS_CA_PATH.into(),
            });
            let target_url = reach
                .target(
                    &host,
                    port,
                    &spec.db.master_username,
                    &password,
                    &spec.db.db_name,
                )?
                .to_secret_url();
            let job = Job {
                version: JOB_VERSION,
                migration: name.to_string(),
                source_url: input.source_url.clone(),
                target_url,
                jobs: input.jobs,
                keyless: input.keyless,
                verify_rate: None,
                source_key: Some(Job::new_source_key()?),
            };
            let subnet = seen
                .placement
                .subnets
                .first()
                .map(|s| s.id.clone())
                .ok_or_else(|| Error::other("no subnet for the worker"))?;
            let binary = input
                .binary
                .as_ref()
                .ok_or_else(|| Error::other("no worker binary was resolved for a new worker"))?;
            let id = launch_worker(
                aws,
                spec,
                names,
                &worker_sg.unwrap_or_default(),
                &subnet,
                &job,
                binary,
            )
            .await?;
            out.record("EC2 worker", &id, "created");
            out.worker = Some(id);
        }
    }
    Ok(())
}
