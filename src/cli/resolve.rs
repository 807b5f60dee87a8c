//! Flags over heroku2rds.toml over defaults, resolved into validated settings for `plan`,
//! `provision`, `teardown` and `migrate`. Reads the source's size and version and detects the
//! public address when needed; changes nothing.

use std::time::Duration;

use crate::aws::setup::{ReachSettings, Resolved, TeardownTarget};
use crate::aws::spec::{self, DbSpec, Spec, WorkerSpec};
use crate::cli::config;
use crate::cli::{AwsArgs, ReachArgs, TeardownArgs};
use crate::error::{Error, Result};
use crate::pg::conn::ConnSpec;

/// The default region of the primary.
pub const DEFAULT_REGION: &str = "us-east-2";

fn pick<T: Clone>(flag: &Option<T>, file: &Option<T>) -> Option<T> {
    flag.clone().or_else(|| file.clone())
}

/// Size (GB), major version and the schema's lock count of the source, read from it or taken
/// from flags (the lock count is unknown then).
async fn source_facts(a: &AwsArgs) -> Result<(f64, u32, Option<i64>)> {
    if let (Some(size), Some(major)) = (a.source_size_gb, a.source_major) {
        return Ok((size, major, None));
    }
    let Some(url) = &a.source else {
        return Err(Error::usage(
            "provisioning needs the source's size and PostgreSQL version",
        )
        .with_fix("set HEROKU2RDS_SOURCE_URL (or --source), or give --source-size-gb and --source-major"));
    };
    let client = ConnSpec::parse(url, "source")?
        .with_application_name("heroku2rds plan")
        .connect()
        .await?;
    let row = client
        .query_one(
            "SELECT pg_database_size(current_database())::float8 / 1e9,
                    current_setting('server_version_num')::int / 10000",
            &[],
        )
        .await
        .map_err(|e| Error::other("reading the source's size").with_source(e))?;
    let size: f64 = row.get(0);
    let major: i32 = row.get(1);
    let locks = crate::pg::preflight::schema_locks(&client).await?;
    Ok((
        a.source_size_gb.unwrap_or(size),
        a.source_major.unwrap_or(major as u32),
        Some(locks),
    ))
}

/// Flags over file over defaults, validated. Reads the source (size, version) and, without
/// `--operator-cidr`, detects the public address. Changes nothing.
pub async fn resolve(a: &AwsArgs) -> Result<Resolved> {
    let file = config::load(a.config.as_deref())?;
    let f = &file.aws;
    let name = pick(&a.name, &file.name).ok_or_else(|| {
        Error::usage("no migration name")
            .with_fix("pass --name NAME (or set name in heroku2rds.toml)")
    })?;
    spec::validate_name(&name)?;
    let region = pick(&a.region, &f.region).unwrap_or_else(|| DEFAULT_REGION.to_string());
    spec::validate_region(&region, "--region")?;
    let replica_region = pick(&a.replica_region, &f.replica_region);
    if let Some(rr) = &replica_region {
        spec::validate_region(rr, "--replica-region")?;
        if *rr == region {
            return Err(Error::usage(format!(
                "--replica-region {rr} is the primary's region"
            ))
            .with_fix("a cross-region replica needs another region (e.g. us-east-1, where Heroku's US databases run), or leave --replica-region out"));
        }
    }
    let operator = match pick(&a.operator_cidr, &f.operator_cidr) {
        Some(c) => c,
        None => crate::aws::setup::detect_public_ip().await?,
    };
    let operator_cidr = spec::normalize_cidr(&operator, "--operator-cidr")?;
    let mut app_cidrs = Vec::new();
    for c in a.app_cidrs.iter().chain(f.app_cidrs.iter()) {
        let c = spec::normalize_cidr(c, "--app-cidr")?;
        if !app_cidrs.contains(&c) {
            app_cidrs.push(c);
        }
    }
    let ssh_public_key = match pick(&a.ssh_public_key, &f.ssh_public_key) {
        Some(p) => {
            let key = std::fs::read_to_string(&p).map_err(|e| {
                Error::usage(format!("cannot read the SSH public key {}", p.display()))
                    .with_source(e)
            })?;
            let key = key.trim().to_string();
            if !key.starts_with("ssh-") && !key.starts_with("ecdsa-") || key.contains("PRIVATE KEY")
            {
                return Err(
                    Error::usage(format!("{} is not an OpenSSH public key", p.display())).with_fix(
                        "give the .pub file, e.g. --ssh-public-key ~/.ssh/id_ed25519.pub",
                    ),
                );
            }
            Some(key)
        }
        None => None,
    };
    let network = spec::Network {
        vpc_id: pick(&a.vpc_id, &f.vpc_id),
        subnet_ids: if a.subnet_ids.is_empty() {
            f.subnet_ids.clone()
        } else {
            a.subnet_ids.clone()
        },
    };
    spec::validate_network(&network, "--vpc-id", "--subnet-ids")?;
    let replica_network = spec::Network {
        vpc_id: pick(&a.replica_vpc_id, &f.replica_vpc_id),
        subnet_ids: if a.replica_subnet_ids.is_empty() {
            f.replica_subnet_ids.clone()
        } else {
            a.replica_subnet_ids.clone()
        },
    };
    spec::validate_network(&replica_network, "--replica-vpc-id", "--replica-subnet-ids")?;
    if replica_region.is_none()
        && (replica_network.vpc_id.is_some() || !replica_network.subnet_ids.is_empty())
    {
        return Err(
            Error::usage("--replica-vpc-id/--replica-subnet-ids without --replica-region")
                .with_fix("pass --replica-region too, or leave the replica's network out"),
        );
    }
    let db_name = f.db_name.clone().unwrap_or_else(|| "app".into());
    spec::validate_db_identifier(&db_name, "db_name")?;
    let master_username = f.master_username.clone().unwrap_or_else(|| "app".into());
    spec::validate_db_identifier(&master_username, "master_username")?;
    let backup_retention_days = f.backup_retention_days.unwrap_or(7);
    spec::validate_retention(backup_retention_days, replica_region.is_some())?;
    let extended_support = a.extended_support || f.extended_support.unwrap_or(false);
    let (size_gb, source_major, schema_locks) = source_facts(a).await?;
    let engine_major = pick(&a.engine_major, &f.engine_major).unwrap_or_else(|| {
        if extended_support {
            source_major
        } else {
            spec::default_engine_major(source_major, &today())
        }
    });
    if engine_major < source_major {
        return Err(Error::usage(format!(
            "--engine-major {engine_major} is below the source's PostgreSQL {source_major}"
        ))
        .with_fix("the target must run the source's major version or a newer one"));
    }
    let arch = pick(&a.worker_arch, &f.worker_arch).unwrap_or_else(|| "amd64".into());
    if arch != "amd64" && arch != "arm64" {
        return Err(Error::usage(format!(
            "--worker-arch {arch:?}: use amd64 or arm64"
        )));
    }
    let storage_gb = spec::storage_for(size_gb);
    let max_storage = match pick(&a.storage_autoscaling_max_gb, &f.storage_autoscaling_max_gb) {
        Some(m) => {
            spec::validate_autoscaling(m, storage_gb)?;
            Some(m)
        }
        // A cross-region replica exists from the start and holds a replication slot on the
        // primary: while the bulk load writes WAL faster than the replica replays it across
        // regions, the slot keeps it on the primary's disk. Autoscaling (up to 4x) keeps that
        // from reaching storage-full; creating the replica after the copy instead would leave
        // the new production database without its replica until a later run.
        None if replica_region.is_some() => Some((storage_gb.saturating_mul(4)).min(65_536)),
        None => None,
    };
    // Flags over file; a binary or URL given by flag replaces the file's binary, URL and
    // SHA-256 together (a SHA-256 belongs to its URL).
    let by_flag = a.worker_binary.is_some() || a.worker_binary_url.is_some();
    fn from_file<T: Clone>(by_flag: bool, v: &Option<T>) -> Option<T> {
        v.clone().filter(|_| !by_flag)
    }
    let worker_binary = crate::aws::setup::binary_setting(
        a.worker_binary
            .clone()
            .or_else(|| from_file(by_flag, &f.worker_binary)),
        a.worker_binary_url
            .clone()
            .or_else(|| from_file(by_flag, &f.worker_binary_url)),
        a.worker_binary_sha256
            .clone()
            .or_else(|| from_file(by_flag, &f.worker_binary_sha256)),
    )?;
    let worker = if a.no_worker {
        None
    } else {
        Some(WorkerSpec {
            instance_type: pick(&a.worker_instance_type, &f.worker_instance_type)
                .unwrap_or_else(|| spec::worker_type_for(size_gb, &arch).to_string()),
            arch,
            pg_client_major: source_major,
        })
    };
    let spec = Spec {
        name,
        region,
        replica_region,
        operator_cidr,
        app_cidrs,
        open_to_internet: a.open_to_internet || f.open_to_internet.unwrap_or(false),
        ssh_public_key,
        network,
        replica_network,
        db: DbSpec {
            instance_class: pick(&a.db_instance_class, &f.db_instance_class)
                .unwrap_or_else(|| spec::db_class_for(size_gb).to_string()),
            storage_gb,
            max_storage_gb: max_storage,
            engine_major,
            db_name,
            master_username,
            backup_retention_days,
            multi_az: a.multi_az || f.multi_az.unwrap_or(false),
            extended_support,
            max_locks_per_transaction: schema_locks
                .map(spec::locks_per_transaction_for)
                .filter(|n| *n > 64),
        },
        worker,
    };
    Ok(Resolved {
        spec,
        source_url: a.source.clone(),
        worker_binary,
        jobs: a.jobs,
        keyless: a.keyless.into(),
        reach: reach_settings(&a.reach),
    })
}

/// Today's date (UTC) as YYYY-MM-DD.
fn today() -> String {
    let d = time::OffsetDateTime::now_utc().date();
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

/// Resolves teardown's settings.
pub fn resolve_teardown(a: &TeardownArgs) -> Result<TeardownTarget> {
    let file = config::load(a.config.as_deref())?;
    let name = pick(&a.name, &file.name).ok_or_else(|| {
        Error::usage("no migration name").with_fix("pass --name NAME (the one given to provision)")
    })?;
    spec::validate_name(&name)?;
    let region = pick(&a.region, &file.aws.region).unwrap_or_else(|| DEFAULT_REGION.into());
    spec::validate_region(&region, "--region")?;
    let replica_region = pick(&a.replica_region, &file.aws.replica_region);
    if let Some(rr) = &replica_region {
        spec::validate_region(rr, "--replica-region")?;
    }
    if a.include_replica && replica_region.is_none() {
        return Err(Error::usage("--include-replica needs the replica's region")
            .with_fix("pass --replica-region (the one given to provision)"));
    }
    Ok(TeardownTarget {
        name,
        region,
        replica_region,
        include_replica: a.include_replica,
        delete_target: a.delete_target,
        wait: Duration::from_secs(a.wait_minutes.max(1) * 60),
    })
}

/// `--target-connect` and `--ca-bundle` as given.
pub fn reach_settings(a: &ReachArgs) -> ReachSettings {
    ReachSettings {
        target_connect: a.target_connect.clone(),
        ca_bundle: a.ca_bundle.clone(),
    }
}
