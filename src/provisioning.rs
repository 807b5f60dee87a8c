//! `plan`, `provision` and `teardown`: flags and heroku2rds.toml resolved into a validated
//! [`Spec`], then the AWS module run with it. The binary renders the results.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::aws::observe::{self, Observed};
use crate::aws::plan::{self, Plan};
pub use crate::aws::provision::Reach;
use crate::aws::provision::{self, Provisioned, Waits, WorkerInput};
use crate::aws::spec::{self, DbSpec, Names, Spec, WorkerSpec};
use crate::aws::teardown;
use crate::aws::Aws;
use crate::cli::{AwsArgs, ReachArgs, TeardownArgs};
use crate::config;
use crate::error::{Error, Result};
use crate::pg::conn::ConnSpec;
use crate::pg::preflight::KeylessMode;

/// The default region of the primary.
pub const DEFAULT_REGION: &str = "us-east-2";

/// Everything `plan`/`provision` need, validated.
pub struct Resolved {
    pub spec: Spec,
    pub source_url: Option<String>,
    pub worker_binary: Option<PathBuf>,
    pub jobs: Option<usize>,
    pub keyless: KeylessMode,
    pub reach: ReachArgs,
}

fn pick<T: Clone>(flag: &Option<T>, file: &Option<T>) -> Option<T> {
    flag.clone().or_else(|| file.clone())
}

/// Size (GB) and major version of the source, read from it or taken from flags.
async fn source_facts(a: &AwsArgs) -> Result<(f64, u32)> {
    if let (Some(size), Some(major)) = (a.source_size_gb, a.source_major) {
        return Ok((size, major));
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
    Ok((
        a.source_size_gb.unwrap_or(size),
        a.source_major.unwrap_or(major as u32),
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
        None => config::detect_public_ip().await?,
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
    let (size_gb, source_major) = source_facts(a).await?;
    let engine_major = pick(&a.engine_major, &f.engine_major).unwrap_or(source_major);
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
    let max_storage = pick(&a.storage_autoscaling_max_gb, &f.storage_autoscaling_max_gb);
    let storage_gb = spec::storage_for(size_gb);
    if let Some(m) = max_storage {
        if m <= storage_gb {
            return Err(Error::usage(format!(
                "--storage-autoscaling-max-gb {m} must exceed the allocated {storage_gb} GiB"
            )));
        }
    }
    let worker = if a.no_worker {
        None
    } else {
        Some(WorkerSpec {
            instance_type: pick(&a.worker_instance_type, &f.worker_instance_type)
                .unwrap_or_else(|| spec::worker_type_for(size_gb).to_string()),
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
        db: DbSpec {
            instance_class: pick(&a.db_instance_class, &f.db_instance_class)
                .unwrap_or_else(|| spec::db_class_for(size_gb).to_string()),
            storage_gb,
            max_storage_gb: max_storage,
            engine_major,
            db_name: f.db_name.clone().unwrap_or_else(|| "app".into()),
            master_username: f.master_username.clone().unwrap_or_else(|| "app".into()),
            backup_retention_days: f.backup_retention_days.unwrap_or(7),
        },
        worker,
    };
    Ok(Resolved {
        spec,
        source_url: a.source.clone(),
        worker_binary: a.worker_binary.clone(),
        jobs: a.jobs,
        keyless: a.keyless,
        reach: a.reach.clone(),
    })
}

/// A plan with what it was computed from.
pub struct Planned {
    pub aws: Aws,
    pub names: Names,
    pub seen: Observed,
    pub plan: Plan,
}

/// Observes and plans (read-only).
pub async fn make_plan(r: &Resolved) -> Result<Planned> {
    let aws = Aws::load(&r.spec.region, r.spec.replica_region.as_deref()).await;
    let account = aws.account().await?;
    let names = Names::new(
        &r.spec.name,
        &account,
        &r.spec.region,
        r.spec.db.engine_major,
    );
    let seen = observe::observe(&aws, &r.spec.name, &names, &account).await?;
    let plan = plan::plan(&r.spec, &names, &seen);
    Ok(Planned {
        aws,
        names,
        seen,
        plan,
    })
}

/// The worker's binary: the given file, or this executable when it runs on the worker's
/// platform.
fn worker_binary(r: &Resolved, arch: &str) -> Result<PathBuf> {
    let path = match &r.worker_binary {
        Some(p) => p.clone(),
        None => {
            let same = cfg!(target_os = "linux")
                && ((arch == "amd64" && cfg!(target_arch = "x86_64"))
                    || (arch == "arm64" && cfg!(target_arch = "aarch64")));
            if !same {
                return Err(Error::usage(format!(
                    "this heroku2rds binary cannot run on a Linux {arch} worker"
                ))
                .with_fix(format!(
                    "pass --worker-binary with a Linux {arch} build of heroku2rds {}",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            std::env::current_exe()
                .map_err(|e| Error::other("cannot locate this executable").with_source(e))?
        }
    };
    if !path.is_file() {
        return Err(Error::usage(format!(
            "the worker binary {} is not a file",
            path.display()
        ))
        .with_fix("pass --worker-binary with the path of a Linux heroku2rds executable"));
    }
    Ok(path)
}

/// Carries out a plan. Refuses when the plan has conflicts.
pub async fn provision(r: &Resolved, p: Planned, wait: Duration) -> Result<Provisioned> {
    let conflicts = p.plan.conflicts();
    if !conflicts.is_empty() {
        return Err(Error::usage(format!(
            "provision refused, nothing was changed: {}",
            conflicts.join("; ")
        ))
        .with_fix("choose another --name, or remove or rename the resource that is in the way"));
    }
    let worker = match &r.spec.worker {
        Some(w) if p.seen.workers.is_empty() => {
            let source_url = r.source_url.clone().ok_or_else(|| {
                Error::usage("the worker needs the source database URL for its job")
                    .with_fix("set HEROKU2RDS_SOURCE_URL (or --source), or pass --no-worker")
            })?;
            ConnSpec::parse(&source_url, "source")?;
            // An emulator's instances do not run: a stand-in runs the job on this machine, so
            // the job describes the database as this machine reaches it (when told how).
            let given = r.reach.target_connect.is_some() || r.reach.ca_bundle.is_some();
            let local_reach = if p.aws.emulated() && given {
                Some(reach(&r.reach).await?)
            } else {
                None
            };
            Some(WorkerInput {
                source_url,
                binary: worker_binary(r, &w.arch)?,
                jobs: r.jobs,
                keyless: r.keyless,
                local_reach,
            })
        }
        _ => None,
    };
    let waits = Waits {
        db: wait,
        poll: if p.aws.emulated() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(15)
        },
    };
    provision::apply(&p.aws, &r.spec, &p.names, p.seen, worker, waits).await
}

/// How this machine reaches the RDS database: `--target-connect` and `--ca-bundle` (default:
/// AWS's global RDS bundle, downloaded once into the cache).
pub async fn reach(a: &ReachArgs) -> Result<Reach> {
    let ca_bundle = match &a.ca_bundle {
        Some(p) => {
            if !p.is_file() {
                return Err(
                    Error::usage(format!("--ca-bundle {} is not a file", p.display())).with_fix(
                        "give the PEM file of the CA that signed the database's certificate",
                    ),
                );
            }
            p.clone()
        }
        None => rds_ca_bundle().await?,
    };
    if let Some(c) = &a.target_connect {
        // Checked here, before anything is created.
        ConnSpec::parse("postgresql://u@h/d", "target")?.via(c)?;
    }
    Ok(Reach {
        connect: a.target_connect.clone(),
        ca_bundle,
    })
}

/// AWS's global RDS CA bundle, from the cache or downloaded into it.
async fn rds_ca_bundle() -> Result<PathBuf> {
    let dir = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or_else(|| {
            Error::usage("no HOME to cache the RDS CA bundle in").with_fix("pass --ca-bundle")
        })?
        .join("heroku2rds");
    let path = dir.join("rds-global-bundle.pem");
    if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
        return Ok(path);
    }
    let cannot = |why: String| {
        Error::usage(format!(
            "cannot download the RDS CA bundle from {}: {why}",
            crate::aws::userdata::RDS_CA_URL
        ))
        .with_fix("download it yourself and pass --ca-bundle FILE")
    };
    let body = reqwest::get(crate::aws::userdata::RDS_CA_URL)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| cannot(crate::pg::conn::error_chain(&e)))?
        .text()
        .await
        .map_err(|e| cannot(e.to_string()))?;
    if !body.contains("-----BEGIN CERTIFICATE-----") {
        return Err(cannot("the answer is not a PEM bundle".into()));
    }
    std::fs::create_dir_all(&dir).map_err(|e| cannot(e.to_string()))?;
    let tmp = dir.join(".rds-global-bundle.pem.tmp");
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| cannot(e.to_string()))?;
    tracing::info!("downloaded the RDS CA bundle to {}", path.display());
    Ok(path)
}

/// What teardown will look at, resolved from flags and the file.
pub struct TeardownTarget {
    pub name: String,
    pub region: String,
    pub replica_region: Option<String>,
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
    })
}

/// What exists for a teardown, found by tag.
pub struct Found {
    pub aws: Aws,
    pub names: Names,
    pub seen: Observed,
}

/// Finds everything of the migration (read-only). The engine major only names the parameter
/// group: teardown looks for every major's.
pub async fn find(t: &TeardownTarget) -> Result<Found> {
    let aws = Aws::load(&t.region, t.replica_region.as_deref()).await;
    let account = aws.account().await?;
    // The parameter group's name carries the engine major; look for each supported one once
    // the rest is known, keeping the first that exists.
    let mut names = Names::new(&t.name, &account, &t.region, 0);
    let mut seen = observe::observe(&aws, &t.name, &names, &account).await?;
    for major in 11..=20 {
        let candidate = Names::new(&t.name, &account, &t.region, major);
        let pg = observe::observe_param_group(&aws.rds(), &candidate.param_group, &t.name).await?;
        let replica_pg = match aws.rds_replica() {
            Some(r) => observe::observe_param_group(&r, &candidate.param_group, &t.name).await?,
            None => observe::Found::Missing,
        };
        if !matches!(
            (&pg, &replica_pg),
            (observe::Found::Missing, observe::Found::Missing)
        ) {
            names = candidate;
            seen.param_group = pg;
            seen.replica_param_group = replica_pg;
            break;
        }
    }
    Ok(Found { aws, names, seen })
}

/// Runs teardown.
pub async fn teardown(f: &Found, name: &str, a: &TeardownArgs) -> Result<teardown::Report> {
    let opts = teardown::Options {
        include_replica: a.include_replica,
        delete_target: a.delete_target,
        wait: Duration::from_secs(a.wait_minutes.max(1) * 60),
        poll: if f.aws.emulated() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        },
    };
    teardown::run(&f.aws, name, &f.names, &f.seen, opts).await
}

/// Provision's JSON output.
#[derive(Serialize)]
pub struct ProvisionOutput<'a> {
    pub plan: &'a Plan,
    pub result: Option<&'a Provisioned>,
}
