//! The worker's user-data: a bash script cloud-init runs once at first boot. It fetches
//! everything that comes through presigned URLs first (the job description, the RDS CA bundle,
//! the heroku2rds binary, checked against its SHA-256): the URLs die with the credentials that
//! signed them, so nothing waits for apt before using them. Then it installs the PostgreSQL
//! client of the source's major version (the distribution's package when it has one,
//! apt.postgresql.org's otherwise) and runs `heroku2rds worker` under systemd (restarted on
//! failure, started again after a reboot).
//!
//! apt waits for the dpkg lock (unattended-upgrades holds it at first boot) and is retried a
//! few times. Every step is logged to [`BOOTSTRAP_LOG`] and the console, and reported as a
//! [`crate::aws::bootstrap::State`] through a presigned PUT URL, where `migrate` reads it.
//!
//! The script holds no password, token or private key: the job description (which holds the
//! database URLs) lives in the private, encrypted bucket and is read through the presigned URL,
//! then kept on the worker's encrypted disk readable by root only; systemd hands it to the
//! service as a credential.

/// Where the unit reads the job, where the RDS CA bundle goes (the job's target URL names it).
pub const JOB_PATH: &str = "/etc/heroku2rds/job.json";
/// The RDS certificate bundle on the worker.
pub const RDS_CA_PATH: &str = "/etc/heroku2rds/rds-ca.pem";
/// The bootstrap's log on the worker (also on the console, so in `aws ec2 get-console-output`).
pub const BOOTSTRAP_LOG: &str = "/var/log/heroku2rds-bootstrap.log";
/// The systemd unit's name.
pub const UNIT: &str = "heroku2rds-worker.service";
/// AWS's global RDS CA bundle.
pub const RDS_CA_URL: &str = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem";

/// What the script needs.
pub struct UserData<'a> {
    pub migration: &'a str,
    pub version: &'a str,
    pub pg_major: u32,
    pub binary_url: &'a str,
    pub binary_sha256: &'a str,
    pub job_url: &'a str,
    /// Where the RDS CA bundle is downloaded from ([`RDS_CA_URL`] on AWS; tests serve their own).
    pub rds_ca_url: &'a str,
    /// A presigned PUT URL for the bootstrap state object; `None`: the state is only logged.
    pub state_url: Option<&'a str>,
}

/// Quotes `s` for bash (single quotes; embedded single quotes closed and escaped).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The unit; `@MIGRATION@` is replaced.
const UNIT_TEMPLATE: &str = "[Unit]
Description=heroku2rds worker for migration @MIGRATION@
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
DynamicUser=yes
LoadCredential=job:@JOB_PATH@
ExecStart=/usr/local/bin/heroku2rds worker --job %d/job
Restart=on-failure
RestartSec=10
RestartPreventExitStatus=2 3 4
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes

[Install]
WantedBy=multi-user.target
";

/// The script; every `@NAME@` is replaced by [`render`] (values already quoted for bash).
const SCRIPT_TEMPLATE: &str = r#"#!/bin/bash
# heroku2rds worker bootstrap for migration @MIGRATION@ (heroku2rds @VERSION@).
# Run once by cloud-init at first boot. Holds no password, token or key: the job description is
# fetched through a presigned URL that expires soon after boot, so it is fetched first.
set -euo pipefail
umask 077

readonly PG_MAJOR=@PG_MAJOR@
readonly BINARY_URL=@BINARY_URL@
readonly BINARY_SHA256=@BINARY_SHA256@
readonly JOB_URL=@JOB_URL@
readonly RDS_CA_URL=@RDS_CA_URL@
readonly STATE_URL=@STATE_URL@
# H2R_ROOT and H2R_RETRY_SECONDS are unset on the worker; tests set them (a scratch root, no
# waiting between attempts).
readonly ROOT="${H2R_ROOT:-}"
readonly RETRY_SECONDS="${H2R_RETRY_SECONDS:-15}"
readonly LOG="$ROOT@BOOTSTRAP_LOG@"

mkdir -p "$(dirname "$LOG")"
# Everything to the log file and to the console (cloud-init's output reaches the console).
exec > >(tee -a "$LOG") 2>&1

log() { echo "heroku2rds-bootstrap: $(date -u +%Y-%m-%dT%H:%M:%SZ) $*"; }

# The stage the script is in: named in the state reported when it stops on an error.
STAGE=fetching

# report STATE DETAIL: logs the state and PUTs it where the laptop reads it (never fatal).
report() {
    log "state $1: $2"
    [ -n "$STATE_URL" ] || return 0
    local body
    body="$(printf '{"state":"%s","at":%s,"detail":"%s"}' "$1" "$(date +%s)" "$2")"
    curl --fail --silent --show-error --max-time 20 --retry 3 --retry-delay 2 --retry-all-errors \
        --request PUT --header 'Content-Type: application/json' --data-binary "$body" \
        --output /dev/null "$STATE_URL" || log "could not report the state $1"
}

on_exit() {
    local status=$?
    [ "$status" -ne 0 ] || return 0
    case "$STAGE" in
        fetching) report fetch-failed "a download failed (see @BOOTSTRAP_LOG@)" ;;
        installing-postgresql-client) report apt-failed "apt could not install postgresql-client-$PG_MAJOR (see @BOOTSTRAP_LOG@)" ;;
        starting-service) report service-failed "systemd did not start @UNIT_NAME@ (see journalctl -u @UNIT_NAME@)" ;;
        *) ;;
    esac
}
trap on_exit EXIT

# fetch URL FILE: errors name the file, never the URL (its query carries the signature).
fetch() {
    if ! curl --fail --silent --show-error --location --retry 10 --retry-delay 5 --retry-all-errors \
        --max-time 600 --output "$2" "$1"; then
        log "downloading $2 failed"
        return 1
    fi
}

# retry N COMMAND...: up to N attempts, 15 seconds apart.
retry() {
    local attempts=$1 i
    shift
    for ((i = 1; ; i++)); do
        if "$@"; then
            return 0
        fi
        if [ "$i" -ge "$attempts" ]; then
            log "gave up after $attempts attempts: $*"
            return 1
        fi
        log "attempt $i of $attempts failed: $*; trying again in $RETRY_SECONDS s"
        sleep "$RETRY_SECONDS"
    done
}

# apt-get waiting up to 10 minutes for the dpkg lock (unattended-upgrades holds it at first boot).
apt_get() {
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q "$@"
}

# Whether the configured apt sources offer package $1.
offered() {
    local candidate
    candidate="$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p')"
    [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
}

fetch_everything() {
    report fetching "the job, the RDS CA bundle and heroku2rds @VERSION@"
    mkdir -p "$ROOT/etc/heroku2rds" "$ROOT/usr/local/bin"
    chmod 0755 "$ROOT/etc/heroku2rds"
    fetch "$JOB_URL" "$ROOT@JOB_PATH@"
    chmod 0600 "$ROOT@JOB_PATH@"
    fetch "$RDS_CA_URL" "$ROOT@RDS_CA_PATH@"
    chmod 0644 "$ROOT@RDS_CA_PATH@"
    local download="$ROOT/usr/local/bin/.heroku2rds.download"
    fetch "$BINARY_URL" "$download"
    if ! echo "$BINARY_SHA256  $download" | sha256sum --check --status; then
        rm -f "$download"
        STAGE=stopped
        report binary-checksum-wrong "the downloaded heroku2rds binary does not match its SHA-256; nothing was installed"
        exit 1
    fi
    chmod 0755 "$download"
    mv "$download" "$ROOT/usr/local/bin/heroku2rds"
}

add_apt_postgresql_org() {
    log "the distribution has no postgresql-client-$PG_MAJOR: adding apt.postgresql.org"
    local keyring="$ROOT/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc"
    mkdir -p "$(dirname "$keyring")"
    fetch https://www.postgresql.org/media/keys/ACCC4CF8.asc "$keyring"
    chmod 0644 "$keyring"
    local codename
    # shellcheck source=/dev/null
    codename="$(. "$ROOT/etc/os-release" && echo "$VERSION_CODENAME")"
    mkdir -p "$ROOT/etc/apt/sources.list.d"
    echo "deb [signed-by=/usr/share/postgresql-common/pgdg/apt.postgresql.org.asc] https://apt.postgresql.org/pub/repos/apt $codename-pgdg main" \
        >"$ROOT/etc/apt/sources.list.d/pgdg.list"
    chmod 0644 "$ROOT/etc/apt/sources.list.d/pgdg.list"
    retry 5 apt_get update
}

install_postgresql_client() {
    STAGE=installing-postgresql-client
    report installing-postgresql-client "postgresql-client-$PG_MAJOR"
    retry 5 apt_get update
    if ! offered "postgresql-client-$PG_MAJOR"; then
        add_apt_postgresql_org
    fi
    retry 5 apt_get install -y "postgresql-client-$PG_MAJOR"
}

install_service() {
    STAGE=starting-service
    report starting-service "@UNIT_NAME@"
    mkdir -p "$ROOT/etc/systemd/system"
    cat >"$ROOT/etc/systemd/system/@UNIT_NAME@" <<'UNIT'
@UNIT@UNIT
    chmod 0644 "$ROOT/etc/systemd/system/@UNIT_NAME@"
    systemctl daemon-reload
    systemctl enable @UNIT_NAME@
    systemctl restart @UNIT_NAME@
    STAGE=started
    report started "@UNIT_NAME@ runs; follow it with: journalctl -u @UNIT_NAME@ -f"
}

fetch_everything
install_postgresql_client
install_service
"#;

/// The script.
pub fn render(u: &UserData<'_>) -> String {
    let unit = fill(
        UNIT_TEMPLATE,
        &[("MIGRATION", u.migration), ("JOB_PATH", JOB_PATH)],
    );
    fill(
        SCRIPT_TEMPLATE,
        &[
            ("UNIT", &unit),
            ("MIGRATION", u.migration),
            ("VERSION", u.version),
            ("PG_MAJOR", &u.pg_major.to_string()),
            ("BINARY_URL", &sh_quote(u.binary_url)),
            ("BINARY_SHA256", &sh_quote(u.binary_sha256)),
            ("JOB_URL", &sh_quote(u.job_url)),
            ("RDS_CA_URL", &sh_quote(u.rds_ca_url)),
            ("STATE_URL", &sh_quote(u.state_url.unwrap_or_default())),
            ("BOOTSTRAP_LOG", BOOTSTRAP_LOG),
            ("JOB_PATH", JOB_PATH),
            ("RDS_CA_PATH", RDS_CA_PATH),
            ("UNIT_NAME", UNIT),
        ],
    )
}

/// Replaces each `@NAME@` of `template` in one pass (values are never scanned again, so a
/// value holding `@...@` stays as it is); unknown `@` are kept.
fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 4096);
    let mut rest = template;
    while let Some(at) = rest.find('@') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let known = vars
            .iter()
            .find(|(name, _)| after.starts_with(name) && after[name.len()..].starts_with('@'));
        match known {
            Some((name, value)) => {
                out.push_str(value);
                rest = &after[name.len() + 1..];
            }
            None => {
                out.push('@');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("a b"), "'a b'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }

    #[test]
    fn fill_replaces_known_names_once() {
        assert_eq!(
            fill("a @X@ b @Y@ @Z@ c@", &[("X", "@Y@"), ("Y", "y")]),
            "a @Y@ b y @Z@ c@"
        );
    }

    const STATE_URL: &str =
        "https://bucket.s3.amazonaws.com/jobs/bootstrap-state.json?X-Amz-Signature=ef";

    fn sample(sha: &str) -> String {
        render(&UserData {
            migration: "acme",
            version: "1.2.3",
            pg_major: 15,
            binary_url: "https://bucket.s3.amazonaws.com/jobs/heroku2rds?X-Amz-Signature=ab&X-Amz-Expires=3600",
            binary_sha256: sha,
            job_url: "https://bucket.s3.amazonaws.com/jobs/job.json?X-Amz-Signature=cd&x='quote'",
            rds_ca_url: RDS_CA_URL,
            state_url: Some(STATE_URL),
        })
    }

    fn write_stub(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
        let mut perm = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).unwrap();
    }

    /// How the stubbed distribution behaves.
    struct Distro {
        /// apt-cache offers postgresql-client-15.
        offers_client: bool,
        /// apt-get install fails every time.
        install_fails: bool,
    }

    const UBUNTU: Distro = Distro {
        offers_client: true,
        install_fails: false,
    };

    struct Ran {
        ok: bool,
        scratch: tempdir::Dir,
        /// Every stubbed command, in order.
        calls: String,
    }

    impl Ran {
        fn root(&self) -> std::path::PathBuf {
            self.scratch.path().join("root")
        }

        /// The states reported through the state URL, in order.
        fn states(&self) -> Vec<String> {
            self.calls
                .lines()
                .filter_map(|l| l.strip_prefix("curl PUT bootstrap-state.json "))
                .map(|body| {
                    let v: serde_json::Value = serde_json::from_str(body).unwrap();
                    assert!(v["at"].as_i64().is_some(), "{body}");
                    v["state"].as_str().unwrap().to_string()
                })
                .collect()
        }
    }

    /// Runs the script with stub apt-get, apt-cache, systemctl and curl in a scratch root.
    fn run_in_scratch(binary: &[u8], sha: &str, distro: Distro) -> Ran {
        let scratch = tempdir::Dir::new();
        let root = scratch.path().join("root");
        let stubs = scratch.path().join("stubs");
        let files = scratch.path().join("files");
        for d in [&root, &stubs, &files, &root.join("etc")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(root.join("etc/os-release"), "VERSION_CODENAME=noble\n").unwrap();
        std::fs::write(files.join("heroku2rds"), binary).unwrap();
        std::fs::write(files.join("job.json"), b"{\"version\":1}").unwrap();
        std::fs::write(files.join("global-bundle.pem"), b"CA").unwrap();
        std::fs::write(files.join("ACCC4CF8.asc"), b"KEY").unwrap();
        let log = scratch.path().join("calls.log");
        let fail = if distro.install_fails {
            "case \" $* \" in *\" install \"*) exit 100;; esac"
        } else {
            ""
        };
        write_stub(
            &stubs,
            "apt-get",
            &format!("echo \"apt-get $*\" >>{}\n{fail}", log.display()),
        );
        let candidate = if distro.offers_client {
            "15.8-0ubuntu0.24.04.1"
        } else {
            "(none)"
        };
        write_stub(
            &stubs,
            "apt-cache",
            &format!(
                "echo \"apt-cache $*\" >>{}\necho \"$2:\"\necho \"  Installed: (none)\"\necho \"  Candidate: {candidate}\"",
                log.display()
            ),
        );
        write_stub(
            &stubs,
            "systemctl",
            &format!("echo \"systemctl $*\" >>{}", log.display()),
        );
        // curl: a GET copies the file named by the URL's last path segment to --output; a PUT
        // logs its body.
        write_stub(
            &stubs,
            "curl",
            &format!(
                "out=; url=; method=GET; data=\n\
                 while [ $# -gt 0 ]; do case $1 in\n\
                 --output) out=$2; shift 2;;\n\
                 --request) method=$2; shift 2;;\n\
                 --data-binary) data=$2; shift 2;;\n\
                 --retry|--retry-delay|--max-time|--header) shift 2;;\n\
                 --*) shift;;\n\
                 *) url=$1; shift;;\n\
                 esac; done\n\
                 name=${{url%%\\?*}}; name=${{name##*/}}\n\
                 if [ \"$method\" = PUT ]; then echo \"curl PUT $name $data\" >>{log}; exit 0; fi\n\
                 echo \"curl $name\" >>{log}\ncp {files}/\"$name\" \"$out\"",
                log = log.display(),
                files = files.display()
            ),
        );
        let script = scratch.path().join("user-data");
        std::fs::write(&script, sample(sha)).unwrap();
        let status = Command::new("bash")
            .arg(&script)
            .env("H2R_ROOT", &root)
            .env("H2R_RETRY_SECONDS", "0")
            .env(
                "PATH",
                format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        let ok = status.status.success();
        if !ok {
            eprintln!("{}", String::from_utf8_lossy(&status.stdout));
        }
        Ran { ok, scratch, calls }
    }

    fn sha256_hex(bytes: &[u8]) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(bytes))
    }

    #[test]
    fn script_is_valid_bash_and_passes_shellcheck() {
        let script = sample(&"0".repeat(64));
        let dir = tempdir::Dir::new();
        let path = dir.path().join("user-data");
        std::fs::write(&path, &script).unwrap();
        let n = Command::new("bash").arg("-n").arg(&path).status().unwrap();
        assert!(n.success());
        let sc = Command::new("shellcheck")
            .arg("--severity=style")
            .arg(&path)
            .output()
            .expect("shellcheck must be installed (scripts/test installs it)");
        assert!(
            sc.status.success(),
            "shellcheck: {}",
            String::from_utf8_lossy(&sc.stdout)
        );
        assert!(script.contains(
            "'https://bucket.s3.amazonaws.com/jobs/job.json?X-Amz-Signature=cd&x='\\''quote'\\'''"
        ));
        assert!(!script.contains("@UNIT"), "a placeholder left:\n{script}");
    }

    #[test]
    fn fetches_first_then_installs_the_distributions_client_and_starts_the_service() {
        let binary = b"#!/bin/sh\necho fake heroku2rds\n";
        let ran = run_in_scratch(binary, &sha256_hex(binary), UBUNTU);
        let calls = &ran.calls;
        assert!(ran.ok, "{calls}");
        let root = ran.root();
        // Everything presigned is fetched before apt runs.
        let first_apt = calls.find("apt-get").expect("apt-get ran");
        for fetched in ["curl job.json", "curl global-bundle.pem", "curl heroku2rds"] {
            let at = calls
                .find(fetched)
                .unwrap_or_else(|| panic!("{fetched}: {calls}"));
            assert!(at < first_apt, "{fetched} after apt:\n{calls}");
        }
        for line in calls.lines().filter(|l| l.starts_with("apt-get")) {
            assert!(line.contains("-o DPkg::Lock::Timeout=600"), "{line}");
        }
        assert!(
            calls.contains("apt-cache policy postgresql-client-15"),
            "{calls}"
        );
        assert!(calls.contains("install -y postgresql-client-15"), "{calls}");
        assert!(!calls.contains("ACCC4CF8.asc"), "{calls}");
        assert!(!root.join("etc/apt/sources.list.d/pgdg.list").exists());
        assert!(calls.contains("systemctl daemon-reload"), "{calls}");
        assert!(
            calls.contains(&format!("systemctl enable {UNIT}")),
            "{calls}"
        );
        assert!(
            calls.contains(&format!("systemctl restart {UNIT}")),
            "{calls}"
        );
        assert_eq!(
            ran.states(),
            [
                "fetching",
                "installing-postgresql-client",
                "starting-service",
                "started"
            ]
        );
        let installed = std::fs::read(root.join("usr/local/bin/heroku2rds")).unwrap();
        assert_eq!(installed, binary);
        use std::os::unix::fs::PermissionsExt;
        let job_mode = std::fs::metadata(root.join("etc/heroku2rds/job.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(job_mode & 0o777, 0o600);
        let unit =
            std::fs::read_to_string(root.join(format!("etc/systemd/system/{UNIT}"))).unwrap();
        for line in [
            "Description=heroku2rds worker for migration acme",
            "Restart=on-failure",
            "RestartPreventExitStatus=2 3 4",
            "WantedBy=multi-user.target",
            "LoadCredential=job:/etc/heroku2rds/job.json",
            "ExecStart=/usr/local/bin/heroku2rds worker --job %d/job",
            "DynamicUser=yes",
        ] {
            assert!(
                unit.lines().any(|l| l == line),
                "{line} missing from\n{unit}"
            );
        }
        let log =
            std::fs::read_to_string(root.join(BOOTSTRAP_LOG.trim_start_matches('/'))).unwrap();
        assert!(log.contains("state started"), "{log}");
        assert!(
            !log.contains("X-Amz-Signature"),
            "a signature in the log:\n{log}"
        );
    }

    #[test]
    fn apt_postgresql_org_only_when_the_distribution_lacks_the_client() {
        let binary = b"bin";
        let ran = run_in_scratch(
            binary,
            &sha256_hex(binary),
            Distro {
                offers_client: false,
                install_fails: false,
            },
        );
        assert!(ran.ok, "{}", ran.calls);
        let sources =
            std::fs::read_to_string(ran.root().join("etc/apt/sources.list.d/pgdg.list")).unwrap();
        assert!(sources.contains("noble-pgdg main"), "{sources}");
        assert!(ran.calls.contains("curl ACCC4CF8.asc"), "{}", ran.calls);
    }

    #[test]
    fn a_binary_that_does_not_match_its_checksum_is_reported_and_nothing_is_installed() {
        let ran = run_in_scratch(b"tampered", &sha256_hex(b"original"), UBUNTU);
        assert!(!ran.ok);
        assert!(!ran.root().join("usr/local/bin/heroku2rds").exists());
        assert!(!ran.calls.contains("apt-get"), "{}", ran.calls);
        assert!(!ran.calls.contains("systemctl"), "{}", ran.calls);
        assert_eq!(ran.states(), ["fetching", "binary-checksum-wrong"]);
    }

    #[test]
    fn apt_is_retried_then_reported_as_failed() {
        let binary = b"bin";
        let ran = run_in_scratch(
            binary,
            &sha256_hex(binary),
            Distro {
                offers_client: true,
                install_fails: true,
            },
        );
        assert!(!ran.ok);
        let installs = ran
            .calls
            .lines()
            .filter(|l| l.contains("install -y postgresql-client-15"))
            .count();
        assert_eq!(installs, 5, "{}", ran.calls);
        assert!(!ran.calls.contains("systemctl"), "{}", ran.calls);
        assert_eq!(
            ran.states(),
            ["fetching", "installing-postgresql-client", "apt-failed"]
        );
    }

    /// A scratch directory removed on drop (no extra crate for it).
    mod tempdir {
        use std::path::{Path, PathBuf};
        pub struct Dir(PathBuf);
        impl Dir {
            pub fn new() -> Dir {
                let mut bytes = [0u8; 8];
                getrandom::fill(&mut bytes).unwrap();
                let p = std::env::temp_dir().join(format!("heroku2rds-ud-{}", hex::encode(bytes)));
                std::fs::create_dir_all(&p).unwrap();
                Dir(p)
            }
            pub fn path(&self) -> &Path {
                &self.0
            }
        }
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }
}
