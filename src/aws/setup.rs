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
    /// Where the worker's binary comes from (checked when a worker is to be launched).
    pub worker_binary: BinarySetting,
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
    /// The worker's binary, checked, when the plan launches a worker.
    pub worker_binary: Option<WorkerBinary>,
}

/// Where the worker's binary comes from, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BinarySetting {
    /// This executable, when it is a Linux build for the worker's architecture.
    ThisExecutable,
    /// `--worker-binary PATH`.
    File(PathBuf),
    /// `--worker-binary-url` with `--worker-binary-sha256`: the worker downloads it and checks
    /// it; nothing is uploaded (operators on macOS or another architecture).
    Url { url: String, sha256: String },
}

/// The worker's binary, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerBinary {
    /// A Linux executable for the worker, uploaded to the private bucket.
    Upload(PathBuf),
    /// Downloaded by the worker from `url` and checked against `sha256` (lowercase hex).
    Url { url: String, sha256: String },
}

/// Validates the three worker-binary settings together (flags or file): a URL needs its
/// SHA-256 and excludes a file; https only (http only to this machine, for tests); no
/// credentials in the URL (user-data is readable by whoever may describe the instance). The
/// URL is never quoted back: it may be a presigned one.
pub fn binary_setting(
    file: Option<PathBuf>,
    url: Option<String>,
    sha256: Option<String>,
) -> Result<BinarySetting> {
    let url = match (file, url, sha256.as_deref()) {
        (Some(_), Some(_), _) => {
            return Err(Error::usage(
                "--worker-binary and --worker-binary-url both given: the worker takes one binary",
            )
            .with_fix("keep --worker-binary PATH (uploaded) or --worker-binary-url URL with --worker-binary-sha256 (downloaded by the worker), not both"))
        }
        (Some(_), None, Some(_)) => {
            return Err(Error::usage("--worker-binary-sha256 goes with --worker-binary-url")
                .with_fix("leave --worker-binary-sha256 out: the SHA-256 of an uploaded file is computed here"))
        }
        (None, None, Some(_)) => {
            return Err(Error::usage("--worker-binary-sha256 without --worker-binary-url")
                .with_fix("give the URL the worker downloads the binary from with --worker-binary-url"))
        }
        (Some(p), None, None) => return Ok(BinarySetting::File(p)),
        (None, None, None) => return Ok(BinarySetting::ThisExecutable),
        (None, Some(u), _) => u,
    };
    let Some(sha) = sha256 else {
        return Err(Error::usage("--worker-binary-url needs --worker-binary-sha256")
            .with_fix("give the binary's SHA-256 (64 hex digits, e.g. from `sha256sum heroku2rds` or the release's checksum file): the worker refuses a download that does not match"));
    };
    let sha = sha.trim().to_ascii_lowercase();
    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::usage(format!(
            "--worker-binary-sha256 is not a SHA-256 ({} characters; 64 hex digits expected)",
            sha.len()
        ))
        .with_fix("give the 64 hex digits `sha256sum heroku2rds` prints for the binary"));
    }
    let parsed = url::Url::parse(&url).map_err(|e| {
        Error::usage(format!("--worker-binary-url is not a URL ({e})")).with_fix(
            "give the full https:// address of a Linux heroku2rds binary, e.g. a release download",
        )
    })?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        other => {
            return Err(Error::usage(format!(
                "--worker-binary-url must be https, not {other}"
            ))
            .with_fix("give an https:// address (the SHA-256 is checked too, but the download must not be readable or changeable on the way); http is accepted only for this machine's own address, in tests"))
        }
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(Error::usage("--worker-binary-url holds a user name or password")
            .with_fix("give a URL without credentials (a public release download, or a presigned URL): the worker's user-data, which carries it, is readable by anyone allowed to describe the instance"));
    }
    Ok(BinarySetting::Url { url, sha256: sha })
}

/// Checks that `path` is a Linux executable the worker (Ubuntu 24.04 on `arch`) can run: ELF
/// for its CPU, and no newer glibc than 2.39. `what` names the file in messages.
pub fn check_worker_executable(path: &std::path::Path, arch: &str, what: &str) -> Result<()> {
    let build_fix = format!(
        "build on a distribution with glibc 2.39 or older (Ubuntu 24.04, Debian 12), or a static musl binary (`cargo build --release --target {}-unknown-linux-musl`), and pass it with --worker-binary; or pass --worker-binary-url with --worker-binary-sha256 (e.g. a release download) and the worker fetches it",
        if arch == "arm64" { "aarch64" } else { "x86_64" }
    );
    let mut file = std::fs::File::open(path).map_err(|e| {
        Error::usage(format!("cannot read {what} {}", path.display()))
            .with_source(e)
            .with_fix("pass --worker-binary with the path of a Linux heroku2rds executable")
    })?;
    let needs = super::elf::read_needs(&mut file).map_err(|u| {
        Error::usage(format!("{what} {} {}", path.display(), u.describe()))
            .with_fix(format!("the worker runs Linux on {arch}: {build_fix}"))
    })?;
    if let Some(why) = super::elf::refusal(&needs, arch) {
        return Err(Error::usage(format!(
            "{what} {} {why}; nothing was created",
            path.display()
        ))
        .with_fix(build_fix));
    }
    Ok(())
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
        worker_binary: None,
    })
}

/// When the plan launches a worker, checks its binary (see [`worker_binary`]) and keeps it in
/// the plan: `plan`, `provision` and `migrate` call this before anything is created.
pub fn check_worker_binary(r: &Resolved, p: &mut Planned) -> Result<()> {
    if let Some(w) = &r.spec.worker {
        if p.seen.workers.is_empty() {
            p.worker_binary = Some(worker_binary(&r.worker_binary, &w.arch)?);
        }
    }
    Ok(())
}

/// The worker's binary, checked before anything is created: the given file or this executable
/// (an ELF for the worker's CPU needing no newer glibc than the worker's), or the given URL.
pub fn worker_binary(setting: &BinarySetting, arch: &str) -> Result<WorkerBinary> {
    let (path, what) = match setting {
        BinarySetting::Url { url, sha256 } => {
            return Ok(WorkerBinary::Url {
                url: url.clone(),
                sha256: sha256.clone(),
            })
        }
        BinarySetting::File(p) => (p.clone(), "the worker binary"),
        BinarySetting::ThisExecutable => {
            let same = cfg!(target_os = "linux")
                && ((arch == "amd64" && cfg!(target_arch = "x86_64"))
                    || (arch == "arm64" && cfg!(target_arch = "aarch64")));
            if !same {
                return Err(Error::usage(format!(
                    "this heroku2rds binary cannot run on a Linux {arch} worker"
                ))
                .with_fix(format!(
                    "pass --worker-binary-url with the URL of a Linux {arch} build of heroku2rds {} and --worker-binary-sha256 with its SHA-256 (the worker downloads it), or --worker-binary with such a file",
                    env!("CARGO_PKG_VERSION")
                )));
            }
            let exe = std::env::current_exe()
                .map_err(|e| Error::other("cannot locate this executable").with_source(e))?;
            (exe, "this heroku2rds executable")
        }
    };
    if !path.is_file() {
        return Err(Error::usage(format!(
            "the worker binary {} is not a file",
            path.display()
        ))
        .with_fix("pass --worker-binary with the path of a Linux heroku2rds executable"));
    }
    check_worker_executable(&path, arch, what)?;
    Ok(WorkerBinary::Upload(path))
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
    let keep = matches!(
        p.seen.worker_verdict(p.seen.at),
        Some(crate::aws::bootstrap::Verdict::Keep)
    );
    let worker = match (&r.spec.worker, &r.source_url) {
        // A worker runs: its job's source URL is compared with the current one (see
        // `aws::job`); without a source URL there is nothing to compare.
        (Some(_), Some(source_url)) if keep => {
            ConnSpec::parse(source_url, "source")?;
            Some(WorkerInput {
                source_url: source_url.clone(),
                binary: None,
                jobs: r.jobs,
                keyless: r.keyless,
                local_reach: None,
                reach: r.reach.clone(),
            })
        }
        (Some(w), _) if !keep => {
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
            let binary = match p.worker_binary.clone() {
                Some(b) => b,
                None => worker_binary(&r.worker_binary, &w.arch)?,
            };
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
                binary: Some(binary),
                jobs: r.jobs,
                keyless: r.keyless,
                local_reach,
                reach: r.reach.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_binary_settings() {
        let sha = "ab".repeat(32);
        let url = |u: &str| Some(u.to_string());
        let ok = |f: Option<PathBuf>, u: Option<String>, s: Option<String>| {
            binary_setting(f, u, s).unwrap()
        };
        assert_eq!(ok(None, None, None), BinarySetting::ThisExecutable);
        assert_eq!(
            ok(Some("w".into()), None, None),
            BinarySetting::File("w".into())
        );
        assert_eq!(
            ok(
                None,
                url("https://example.com/h2r"),
                Some(sha.to_uppercase())
            ),
            BinarySetting::Url {
                url: "https://example.com/h2r".into(),
                sha256: sha.clone()
            }
        );
        for loopback in [
            "http://127.0.0.1:8000/h",
            "http://localhost/h",
            "http://[::1]/h",
        ] {
            assert!(matches!(
                ok(None, url(loopback), Some(sha.clone())),
                BinarySetting::Url { .. }
            ));
        }
        // (file, url, sha, what the message names, what the fix says)
        type Case<'a> = (
            Option<PathBuf>,
            Option<String>,
            Option<String>,
            &'a str,
            &'a str,
        );
        let refused: Vec<Case> = vec![
            (
                None,
                url("https://example.com/h2r"),
                None,
                "needs --worker-binary-sha256",
                "64 hex",
            ),
            (
                None,
                url("https://example.com/h2r"),
                Some("abc".into()),
                "not a SHA-256",
                "64 hex",
            ),
            (
                None,
                url("https://example.com/h2r"),
                Some("zz".repeat(32)),
                "not a SHA-256",
                "64 hex",
            ),
            (
                None,
                url("http://example.com/h2r"),
                Some(sha.clone()),
                "must be https, not http",
                "https://",
            ),
            (
                None,
                url("http://10.0.0.1/h2r"),
                Some(sha.clone()),
                "must be https",
                "https://",
            ),
            (
                None,
                url("ftp://example.com/h2r"),
                Some(sha.clone()),
                "must be https, not ftp",
                "https://",
            ),
            (
                None,
                url("example.com/h2r"),
                Some(sha.clone()),
                "is not a URL",
                "https://",
            ),
            (
                None,
                url("https://u:secret@example.com/h2r"),
                Some(sha.clone()),
                "user name or password",
                "without credentials",
            ),
            (
                Some("w".into()),
                url("https://example.com/h2r"),
                Some(sha.clone()),
                "both given",
                "not both",
            ),
            (
                None,
                None,
                Some(sha.clone()),
                "without --worker-binary-url",
                "--worker-binary-url",
            ),
            (
                Some("w".into()),
                None,
                Some(sha.clone()),
                "goes with --worker-binary-url",
                "computed here",
            ),
        ];
        for (f, u, s, message, fix) in refused {
            let e = binary_setting(f, u.clone(), s).unwrap_err();
            assert_eq!(e.kind(), crate::error::Kind::Usage);
            assert!(e.message().contains(message), "{u:?}: {}", e.message());
            assert!(
                e.fix().is_some_and(|x| x.contains(fix)),
                "{u:?}: {:?}",
                e.fix()
            );
            assert!(!e.message().contains("secret"), "{}", e.message());
        }
    }
}
