//! The worker's user-data for real: the script `provision` renders, run as root in a Debian 12
//! container booted with systemd as PID 1 (systemd-nspawn), apt pointed at Debian's mirror.
//! What the stand-in cannot show is proven here by systemd itself: the unit starts with
//! DynamicUser=, LoadCredential= and its sandboxing, the real worker runs a job against local
//! clusters (the host's network is shared), the restart rules, and a wrong checksum leaving
//! nothing behind.
//!
//! The container's root is built once per machine with debootstrap (tests/container/build-root,
//! about a minute) and cached in ~/.cache/heroku2rds-nspawn/, keyed by that script's SHA-256;
//! each boot writes to a tmpfs overlay (--volatile=overlay), so every run starts clean. The
//! presigned URLs are played by a tiny local HTTP server (GET serves files, PUT stores the
//! bootstrap state), the RDS CA bundle by the test clusters' CA.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use heroku2rds::aws::job::{Job, JOB_VERSION};
use heroku2rds::aws::userdata::{self, UserData};
use heroku2rds::pg::preflight::KeylessMode;

use crate::support::binary::{h2r_env, BIN};
use crate::support::clusters::{root, rows, scratch_dir, Pair};
use crate::support::host::{free_port, is_root};
use crate::support::moto::python;
use crate::support::repo_file;

/// Where the test's files appear inside the container.
const SHARED: &str = "/run/h2r-test";
/// The file the test-only wrapper binary reads its exit code from.
const EXIT_CODE_FILE: &str = "/etc/h2r-test-exit-code";

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The cached Debian root, built when missing.
fn debian_root() -> PathBuf {
    let recipe = repo_file("tests/container/build-root");
    let key = sha256_hex(&std::fs::read(&recipe).expect("build-root"));
    let home = std::env::var("HOME").expect("HOME");
    let dest = Path::new(&home)
        .join(".cache/heroku2rds-nspawn")
        .join(&key[..16]);
    if !dest.is_dir() {
        let started = Instant::now();
        let out = Command::new(&recipe)
            .arg(&dest)
            .output()
            .expect("run tests/container/build-root");
        assert!(
            out.status.success() || dest.is_dir(),
            "building the Debian root failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "built the Debian root in {:.0}s: {}",
            started.elapsed().as_secs_f64(),
            dest.display()
        );
    }
    dest
}

/// A booted container, powered off (then killed) when dropped.
struct Container {
    nspawn: Child,
    /// The container's PID 1, as this machine numbers it.
    leader: u32,
}

impl Container {
    fn boot(root: &Path, shared: &Path, log: &Path) -> Container {
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(root)
            .args(["--volatile=overlay", "-b", "--register=no", "--keep-unit"])
            .arg(format!("--bind-ro={}:{SHARED}", shared.display()))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(log).expect("log"))
            .stderr(Stdio::from(
                std::fs::File::options()
                    .append(true)
                    .open(log)
                    .expect("log"),
            ))
            .spawn()
            .expect("systemd-nspawn (scripts/test installs systemd-container)");
        let mut c = Container { nspawn, leader: 0 };
        let deadline = Instant::now() + Duration::from_secs(60);
        while c.leader == 0 {
            assert!(
                Instant::now() < deadline,
                "the container did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            c.leader = find_leader(c.nspawn.id()).unwrap_or(0);
            std::thread::sleep(Duration::from_millis(100));
        }
        loop {
            let state = c.sh("systemctl is-system-running || true");
            let state = String::from_utf8_lossy(&state.stdout).trim().to_string();
            if state == "running" || state == "degraded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "systemd did not finish booting ({state}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        c
    }

    /// Runs `script` with sh inside the container (its namespaces, as root).
    fn sh(&self, script: &str) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-a", "sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    /// `sh`, which must succeed; its stdout.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// One property of the worker's unit, as systemd shows it.
    fn unit(&self, property: &str) -> String {
        self.ok(&format!(
            "systemctl show --value -p {property} {}",
            userdata::UNIT
        ))
    }

    /// Waits until the unit is failed (systemd will not restart it) after an exit with `code`.
    fn wait_failed_with(&self, code: u32) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let (state, status) = (self.unit("SubState"), self.unit("ExecMainStatus"));
            if state == "failed" && status == code.to_string() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the unit is {state} (last exit {status}), not failed after exit {code}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// The pid whose parent is `nspawn` and which is PID 1 in its own namespace.
fn find_leader(nspawn: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.split_whitespace().collect::<Vec<_>>())
        };
        let parent = field("PPid:").and_then(|v| v.first().and_then(|p| p.parse::<u32>().ok()));
        let inner = field("NSpid:").and_then(|v| v.last().map(|p| p.to_string()));
        if parent == Some(nspawn) && inner.as_deref() == Some("1") {
            return Some(pid);
        }
    }
    None
}

impl Drop for Container {
    fn drop(&mut self) {
        if matches!(self.nspawn.try_wait(), Ok(None)) {
            // SIGTERM: nspawn asks the container's systemd to power off.
            let _ = Command::new("kill")
                .args(["-TERM", &self.nspawn.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(self.nspawn.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = self.nspawn.kill();
            let _ = self.nspawn.wait();
        }
    }
}

/// A child process killed when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes the user-data for `binary` (served as `served_name`, announced with `sha256`).
fn user_data(dir: &Path, file: &str, base: &str, served_name: &str, sha256: &str) {
    let script = userdata::render(&UserData {
        migration: "ctr",
        version: env!("CARGO_PKG_VERSION"),
        pg_major: 15,
        binary_url: &format!("{base}/{served_name}?X-Amz-Signature=secret-binary"),
        binary_sha256: sha256,
        job_url: &format!("{base}/job.json?X-Amz-Signature=secret-job"),
        rds_ca_url: &format!("{base}/rds-ca.pem"),
        state_url: Some(&format!(
            "{base}/bootstrap-state.json?X-Amz-Signature=secret-state"
        )),
    });
    std::fs::write(dir.join(file), script).expect("user-data");
}

/// The bootstrap state the script PUT last.
fn state(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("bootstrap-state.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    v["state"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn user_data_boots_the_worker_under_systemd_in_a_debian_container() {
    assert!(
        is_root(),
        "systemd-nspawn needs root: run the suite as root (scripts/test)"
    );
    let debian = debian_root();
    let pair = Pair::new("ctr").await;
    pair.source_owner()
        .await
        .batch_execute(
            "CREATE TABLE public.items (id bigint PRIMARY KEY, note text NOT NULL);
             INSERT INTO public.items SELECT i, md5(i::text) FROM generate_series(1, 5000) i;",
        )
        .await
        .expect("source rows");

    // What the URLs serve: the real binary, a wrapper that exits with a chosen code, the job,
    // the CA bundle; the bootstrap state lands here too.
    let dir = scratch_dir("container");
    let binary = std::fs::read(BIN).expect("the heroku2rds binary");
    std::fs::write(dir.join("heroku2rds"), &binary).expect("binary");
    let wrapper = format!("#!/bin/sh\nexit \"$(cat {EXIT_CODE_FILE})\"\n");
    std::fs::write(dir.join("exit-with"), &wrapper).expect("wrapper");
    std::fs::copy(&root().ca, dir.join("rds-ca.pem")).expect("CA");
    let in_container =
        |url: String| url.replace(&root().ca.display().to_string(), userdata::RDS_CA_PATH);
    let job = Job {
        version: JOB_VERSION,
        migration: "ctr".into(),
        source_url: in_container(pair.source_url()),
        target_url: in_container(pair.target_url()),
        jobs: Some(2),
        keyless: KeylessMode::Recopy,
        verify_rate: None,
        source_key: Some(Job::new_source_key().expect("key")),
    };
    std::fs::write(dir.join("job.json"), job.to_bytes()).expect("job");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = KillOnDrop(
        Command::new(python())
            .arg(repo_file("tests/container/serve.py"))
            .arg(&dir)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(dir.join("serve.log")).expect("log"))
            .spawn()
            .expect("serve.py"),
    );
    user_data(
        &dir,
        "bad-checksum",
        &base,
        "heroku2rds",
        &sha256_hex(b"another binary"),
    );
    user_data(
        &dir,
        "wrapper",
        &base,
        "exit-with",
        &sha256_hex(wrapper.as_bytes()),
    );
    user_data(&dir, "real", &base, "heroku2rds", &sha256_hex(&binary));

    let started = Instant::now();
    let c = Container::boot(&debian, &dir, &dir.join("container.log"));
    eprintln!(
        "container booted in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let run_user_data = |file: &str| {
        let t = Instant::now();
        let out = c.sh(&format!("bash {SHARED}/{file}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("user-data {file}: {:.1}s", t.elapsed().as_secs_f64());
        assert!(
            !text.contains("X-Amz-Signature"),
            "a URL in the output:\n{text}"
        );
        (out.status.success(), text)
    };

    // 1. A binary that does not match its SHA-256: reported, and nothing is left running.
    let (ok, text) = run_user_data("bad-checksum");
    assert!(!ok, "{text}");
    assert_eq!(state(&dir), "binary-checksum-wrong", "{text}");
    assert_eq!(c.unit("LoadState"), "not-found", "{text}");
    c.ok("test ! -e /usr/local/bin/heroku2rds && test ! -e /usr/local/bin/.heroku2rds.download");
    assert_eq!(
        c.ok("systemctl list-units --all --plain --no-legend 'heroku2rds*' | wc -l"),
        "0"
    );
    assert!(
        !c.ok("dpkg-query -W -f='${Status}' postgresql-client-15 2>/dev/null || true")
            .contains("ok installed"),
        "apt ran after a wrong checksum"
    );

    // 2. The restart rules, with a test-only wrapper served instead of the binary (the real
    //    worker's exits 1, 3 and 4 need conditions that cannot be made on demand here): exit 1
    //    is restarted, exits 2, 3 and 4 are not.
    c.ok(&format!("echo 1 >{EXIT_CODE_FILE}"));
    let (ok, text) = run_user_data("wrapper");
    assert!(ok, "{text}");
    assert_eq!(state(&dir), "started", "{text}");
    // The PostgreSQL client came from Debian's own packages.
    c.ok("test -x /usr/lib/postgresql/15/bin/pg_dump");
    c.ok("test ! -e /etc/apt/sources.list.d/pgdg.list");
    c.ok(&format!(
        "grep -q 'state started' {}",
        userdata::BOOTSTRAP_LOG
    ));
    let deadline = Instant::now() + Duration::from_secs(90);
    while c.unit("NRestarts").parse::<u32>().unwrap_or(0) < 2 {
        assert!(Instant::now() < deadline, "exit 1 was not restarted twice");
        std::thread::sleep(Duration::from_millis(500));
    }
    for code in [2u32, 3, 4] {
        c.ok(&format!("echo {code} >{EXIT_CODE_FILE}"));
        if code != 2 {
            c.ok(&format!(
                "systemctl reset-failed {u}; systemctl start {u}",
                u = userdata::UNIT
            ));
        }
        c.wait_failed_with(code);
        let restarts = c.unit("NRestarts");
        // Longer than RestartSec=10: a restart would have happened.
        std::thread::sleep(Duration::from_secs(12));
        assert_eq!(c.unit("SubState"), "failed", "exit {code} was restarted");
        assert_eq!(c.unit("NRestarts"), restarts, "exit {code} was restarted");
    }

    // 3. The real worker: started under its sandbox, runs the job to completion.
    let (ok, text) = run_user_data("real");
    assert!(ok, "{text}");
    assert_eq!(state(&dir), "started", "{text}");
    let target_url = pair.target.url("postgres", &pair.name);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = h2r_env(
            &["status", "--json"],
            &[("HEROKU2RDS_TARGET_URL", target_url.as_str())],
        );
        if st.code == 0 {
            let v = st.json();
            if v["phase"] == "copied" && v["caught_up"] == true {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not finish the copy: {}\n{}",
            st.stdout,
            c.ok(&format!(
                "journalctl -u {} --no-pager | tail -30",
                userdata::UNIT
            ))
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let (src, tgt) = (
        pair.source_owner().await,
        pair.target.admin(&pair.name).await,
    );
    assert_eq!(
        rows(&src, "public.items", "true").await,
        rows(&tgt, "public.items", "true").await
    );
    // Proven by systemd and the kernel: a dynamic user, the job as a credential, a read-only
    // system.
    assert_eq!(c.unit("SubState"), "running");
    let pid = c.unit("MainPID");
    let uid: u32 = c
        .ok(&format!("stat -c %u /proc/{pid}"))
        .parse()
        .expect("uid");
    assert!(
        (61184..=65519).contains(&uid),
        "the worker runs as uid {uid}, not a dynamic user"
    );
    c.ok("test -f /run/credentials/heroku2rds-worker.service/job");
    let probe = c.sh(&format!("nsenter -t {pid} -m touch /usr/h2r-probe"));
    assert!(
        !probe.status.success()
            && String::from_utf8_lossy(&probe.stderr).contains("Read-only file system"),
        "ProtectSystem=strict not in force: {probe:?}"
    );
    let journal = c.ok(&format!("journalctl -u {} --no-pager", userdata::UNIT));
    assert!(
        journal.contains("running the job of migration ctr"),
        "{journal}"
    );
    assert!(
        !journal.contains(&root().password),
        "a password in the journal"
    );
    drop(c);
}
