//! The entry points of `plan`, `provision` and `teardown`: resolved settings in, the AWS side
//! observed, planned and applied ([`observe`] -> [`plan::plan`] -> [`provision::apply`], or
//! [`teardown::run`]). The command line resolves the settings (the command line).

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::observe::{self, Observed};
use super::plan::{self, Plan};
pub use super::provision::Reach;
use super::provision::{self, Provisioned, Waits, WorkerInput};
use super::spec::{Names, Spec};
use super::teardown;
use super::Aws;
use crate::error::{Error, Result};
use crate::pg::conn::ConnSpec;
use crate::pg::preflight::KeylessMode;

/// Everything `plan`/`provision` need, validated.
pub struct Resolved {
    pub spec: Spec,
    pub source_url: Option<String>,
    /// The Linux heroku2rds binary for the worker, resolved and checked to be a file.
    pub worker_binary: Option<PathBuf>,
    pub jobs: Option<usize>,
    pub keyless: KeylessMode,
    pub reach: ReachSettings,
}

/// How this machine reaches the RDS database, as given (`--target-connect`, `--ca-bundle`).
#[derive(Debug, Clone, Default)]
pub struct ReachSettings {
    pub target_connect: Option<String>,
    pub ca_bundle: Option<PathBuf>,
}

/// What teardown will look at, resolved from flags and the file.
pub struct TeardownTarget {
    pub name: String,
    pub region: String,
    pub replica_region: Option<String>,
    pub include_replica: bool,
    pub delete_target: bool,
    pub wait: Duration,
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
    let seen = observe::observe(
        &aws,
        &r.spec.name,
        &names,
        &account,
        Some(&observe::Wanted {
            network: &r.spec.network,
            replica_network: &r.spec.replica_network,
            db_class: &r.spec.db.instance_class,
            engine_major: r.spec.db.engine_major,
            worker_type: r.spec.worker.as_ref().map(|w| w.instance_type.as_str()),
        }),
    )
    .await?;
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
        .with_fix("do what each conflict says (pass the settings it names, choose another --name, or move the resource that is in the way), then re-run; `heroku2rds plan` shows them all"));
    }
    let worker = match &r.spec.worker {
        Some(w)
            if !matches!(
                p.seen.worker_verdict(std::time::SystemTime::now()),
                Some(crate::aws::bootstrap::Verdict::Keep)
            ) =>
        {
            // A worker is launched: its presigned URLs must outlive the credentials' check
            // (again right before the launch), refused here before anything is created.
            crate::aws::bootstrap::check_url_lifetime(
                std::time::SystemTime::now(),
                p.aws.credentials_expiry().await?,
                crate::aws::bootstrap::URL_LIFETIME,
            )?;
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
pub async fn reach(a: &ReachSettings) -> Result<Reach> {
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

/// This machine's public IPv4 address, as AWS sees it (checkip.amazonaws.com), for the
/// operator's /32.
pub async fn detect_public_ip() -> Result<String> {
    let fail = |why: &str| {
        Error::usage(format!("could not detect your public address: {why}"))
            .with_fix("pass it with --operator-cidr 203.0.113.7/32 (`curl https://checkip.amazonaws.com` shows it)")
    };
    let cause = |e: reqwest::Error| {
        if e.is_timeout() {
            fail("checkip.amazonaws.com did not answer within 10 s")
        } else {
            fail("asking checkip.amazonaws.com").with_source(e)
        }
    };
    let body = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .user_agent("heroku2rds")
        .build()
        .map_err(cause)?
        .get("http://checkip.amazonaws.com/")
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .map_err(cause)?
        .text()
        .await
        .map_err(cause)?;
    body.trim()
        .parse::<std::net::Ipv4Addr>()
        .map(|ip| ip.to_string())
        .map_err(|_| fail("unexpected answer from checkip.amazonaws.com"))
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
    let cannot = |why: Box<dyn std::error::Error + Send + Sync>| {
        Error::usage(format!(
            "cannot download the RDS CA bundle from {}",
            super::userdata::RDS_CA_URL
        ))
        .with_boxed_source(why)
        .with_fix("download it yourself and pass --ca-bundle FILE")
    };
    let body = reqwest::get(super::userdata::RDS_CA_URL)
        .await
        .and_then(|r| r.error_for_status())
        .map_err(|e| cannot(e.into()))?
        .text()
        .await
        .map_err(|e| cannot(e.into()))?;
    if !body.contains("-----BEGIN CERTIFICATE-----") {
        return Err(cannot("the answer is not a PEM bundle".into()));
    }
    std::fs::create_dir_all(&dir).map_err(|e| cannot(e.into()))?;
    let tmp = dir.join(".rds-global-bundle.pem.tmp");
    std::fs::write(&tmp, body)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| cannot(e.into()))?;
    tracing::info!("downloaded the RDS CA bundle to {}", path.display());
    Ok(path)
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
    let mut seen = observe::observe(&aws, &t.name, &names, &account, None).await?;
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
pub async fn teardown(f: &Found, t: &TeardownTarget) -> Result<teardown::Report> {
    let opts = teardown::Options {
        include_replica: t.include_replica,
        delete_target: t.delete_target,
        wait: t.wait,
        poll: if f.aws.emulated() {
            Duration::from_millis(200)
        } else {
            Duration::from_secs(10)
        },
    };
    teardown::run(&f.aws, &t.name, &f.names, &f.seen, opts).await
}

/// Provision's JSON output.
#[derive(Serialize)]
pub struct ProvisionOutput<'a> {
    pub plan: &'a Plan,
    pub result: Option<&'a Provisioned>,
}
