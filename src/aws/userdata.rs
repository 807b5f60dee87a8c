//! The worker's user-data: a bash script cloud-init runs once at first boot. It installs the
//! PostgreSQL client of the source's major version and the heroku2rds binary (checked against its
//! SHA-256), fetches the job description through a short-lived presigned URL, and runs
//! `heroku2rds worker` under systemd (restarted on failure, started again after a reboot).
//!
//! The script holds no password, token or private key: the job description (which holds the
//! database URLs) lives in the private, encrypted bucket and is read through the presigned URL,
//! then kept on the worker's encrypted disk readable by root only; systemd hands it to the
//! service as a credential.

/// Where the unit reads the job, where the RDS CA bundle goes (the job's target URL names it).
pub const JOB_PATH: &str = "/etc/heroku2rds/job.json";
/// The RDS certificate bundle on the worker.
pub const RDS_CA_PATH: &str = "/etc/heroku2rds/rds-ca.pem";
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
}

/// Quotes `s` for bash (single quotes; embedded single quotes closed and escaped).
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The script.
pub fn render(u: &UserData<'_>) -> String {
    let unit = format!(
        "[Unit]\n\
         Description=heroku2rds worker for migration {migration}\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         DynamicUser=yes\n\
         LoadCredential=job:{JOB_PATH}\n\
         ExecStart=/usr/local/bin/heroku2rds worker --job %d/job\n\
         Restart=on-failure\n\
         RestartSec=10\n\
         RestartPreventExitStatus=2 3 4\n\
         NoNewPrivileges=yes\n\
         ProtectSystem=strict\n\
         ProtectHome=yes\n\
         PrivateTmp=yes\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        migration = u.migration
    );
    format!(
        r#"#!/bin/bash
# heroku2rds worker bootstrap for migration {migration} (heroku2rds {version}).
# Run once by cloud-init at first boot. Holds no password, token or key: the job description is
# fetched through a presigned URL that expires soon after boot.
set -euo pipefail
umask 077

readonly PG_MAJOR={pg_major}
readonly BINARY_URL={binary_url}
readonly BINARY_SHA256={binary_sha256}
readonly JOB_URL={job_url}
readonly RDS_CA_URL={rds_ca_url}
# H2R_ROOT is empty on the worker; tests point it at a scratch directory.
readonly ROOT="${{H2R_ROOT:-}}"

log() {{ echo "heroku2rds-bootstrap: $*" >&2; }}

fetch() {{
    curl --fail --silent --show-error --location --retry 10 --retry-delay 5 --retry-all-errors \
        --output "$2" "$1"
}}

install_postgresql_client() {{
    log "installing the PostgreSQL $PG_MAJOR client from apt.postgresql.org"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q ca-certificates curl
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
    apt-get update -q
    apt-get install -y -q "postgresql-client-$PG_MAJOR"
}}

install_heroku2rds() {{
    log "installing heroku2rds {version}"
    mkdir -p "$ROOT/usr/local/bin"
    local download="$ROOT/usr/local/bin/.heroku2rds.download"
    fetch "$BINARY_URL" "$download"
    if ! echo "$BINARY_SHA256  $download" | sha256sum --check --status; then
        rm -f "$download"
        log "the downloaded heroku2rds binary does not match its SHA-256; stopping"
        exit 1
    fi
    chmod 0755 "$download"
    mv "$download" "$ROOT/usr/local/bin/heroku2rds"
}}

fetch_job() {{
    log "fetching the job description"
    mkdir -p "$ROOT/etc/heroku2rds"
    chmod 0755 "$ROOT/etc/heroku2rds"
    fetch "$JOB_URL" "$ROOT{job_path}"
    chmod 0600 "$ROOT{job_path}"
    fetch "$RDS_CA_URL" "$ROOT{rds_ca_path}"
    chmod 0644 "$ROOT{rds_ca_path}"
}}

install_service() {{
    log "starting {unit_name}"
    mkdir -p "$ROOT/etc/systemd/system"
    cat >"$ROOT/etc/systemd/system/{unit_name}" <<'UNIT'
{unit}UNIT
    chmod 0644 "$ROOT/etc/systemd/system/{unit_name}"
    systemctl daemon-reload
    systemctl enable --now {unit_name}
}}

install_postgresql_client
install_heroku2rds
fetch_job
install_service
log "done; follow it with: journalctl -u {unit_name} -f"
"#,
        migration = u.migration,
        version = u.version,
        pg_major = u.pg_major,
        binary_url = sh_quote(u.binary_url),
        binary_sha256 = sh_quote(u.binary_sha256),
        job_url = sh_quote(u.job_url),
        rds_ca_url = sh_quote(RDS_CA_URL),
        job_path = JOB_PATH,
        rds_ca_path = RDS_CA_PATH,
        unit_name = UNIT,
        unit = unit,
    )
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

    fn sample(sha: &str) -> String {
        render(&UserData {
            migration: "acme",
            version: "1.2.3",
            pg_major: 15,
            binary_url: "https://bucket.s3.amazonaws.com/jobs/heroku2rds?X-Amz-Signature=ab&X-Amz-Expires=3600",
            binary_sha256: sha,
            job_url: "https://bucket.s3.amazonaws.com/jobs/job.json?X-Amz-Signature=cd&x='quote'",
        })
    }

    fn write_stub(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/bash\n{body}\n")).unwrap();
        let mut perm = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&path, perm).unwrap();
    }

    /// Runs the script with stub apt-get, systemctl and curl in a scratch root; returns the
    /// exit status, the root and the stub call log.
    fn run_in_scratch(binary: &[u8], sha: &str) -> (bool, tempdir::Dir, String) {
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
        write_stub(
            &stubs,
            "apt-get",
            &format!("echo \"apt-get $*\" >>{}", log.display()),
        );
        write_stub(
            &stubs,
            "systemctl",
            &format!("echo \"systemctl $*\" >>{}", log.display()),
        );
        // curl: copies the file named by the URL's last path segment to --output.
        write_stub(
            &stubs,
            "curl",
            &format!(
                "out=; url=\nwhile [ $# -gt 0 ]; do case $1 in --output) out=$2; shift 2;; --*) \
                 [ \"$1\" = --retry ] || [ \"$1\" = --retry-delay ] && shift; shift;; *) url=$1; shift;; esac; done\n\
                 name=${{url%%\\?*}}; name=${{name##*/}}\necho \"curl $name\" >>{log}\ncp {files}/\"$name\" \"$out\"",
                log = log.display(),
                files = files.display()
            ),
        );
        let script = scratch.path().join("user-data");
        std::fs::write(&script, sample(sha)).unwrap();
        let status = Command::new("bash")
            .arg(&script)
            .env("H2R_ROOT", &root)
            .env(
                "PATH",
                format!("{}:{}", stubs.display(), std::env::var("PATH").unwrap()),
            )
            .output()
            .unwrap();
        let calls = std::fs::read_to_string(&log).unwrap_or_default();
        let ok = status.status.success();
        if !ok {
            eprintln!("{}", String::from_utf8_lossy(&status.stderr));
        }
        (ok, scratch, calls)
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
    }

    #[test]
    fn steps_install_client_binary_job_and_service() {
        let binary = b"#!/bin/sh\necho fake heroku2rds\n";
        let (ok, scratch, calls) = run_in_scratch(binary, &sha256_hex(binary));
        assert!(ok, "{calls}");
        let root = scratch.path().join("root");
        assert!(
            calls.contains("apt-get install -y -q postgresql-client-15"),
            "{calls}"
        );
        assert!(calls.contains("systemctl daemon-reload"), "{calls}");
        assert!(
            calls.contains(&format!("systemctl enable --now {UNIT}")),
            "{calls}"
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
            "Restart=on-failure",
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
        let sources =
            std::fs::read_to_string(root.join("etc/apt/sources.list.d/pgdg.list")).unwrap();
        assert!(sources.contains("noble-pgdg main"), "{sources}");
    }

    #[test]
    fn a_binary_that_does_not_match_its_checksum_is_not_installed() {
        let (ok, scratch, calls) = run_in_scratch(b"tampered", &sha256_hex(b"original"));
        assert!(!ok);
        assert!(!scratch
            .path()
            .join("root/usr/local/bin/heroku2rds")
            .exists());
        assert!(!calls.contains("systemctl enable"), "{calls}");
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
