//! The AWS emulator (a moto server started by localstack/start) on free ports, stopped by a
//! watchdog when the test process ends: one shared by the tests whose resources carry names of
//! their own, private ones for tests that turn IAM enforcement on (global to a server) or need
//! an RDS backing of their own. Users, policies and an independent boto3 inventory of what exists
//! (aws_tool.py beside this file).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::host::{after_exit, free_port};
use crate::support::repo_file;

/// The operator's address range the tests provision for (a documentation range).
pub const OPERATOR: &str = "203.0.113.7/32";

/// A moto server of the test process's own, on a free port, stopped by a watchdog when the test
/// process ends.
pub struct Moto {
    pub url: String,
}

impl Moto {
    /// Starts an emulator of the caller's own with extra environment (e.g. the RDS backing), on
    /// a free port; stopped when this process ends. For a test that turns IAM enforcement on
    /// (global to a server) or needs a backing of its own.
    pub fn private(env: &[(&str, &str)]) -> Moto {
        start(free_port(), env)
    }
}

fn start(port: u16, env: &[(&str, &str)]) -> Moto {
    let out = Command::new(repo_file("localstack/start"))
        .envs(env.iter().copied())
        .env("MOTO_PORT", port.to_string())
        .env("HEROKU2RDS_NO_FAKE_HEROKU", "1")
        .stderr(Stdio::inherit())
        .output()
        .expect("run localstack/start");
    assert!(out.status.success(), "localstack/start failed");
    after_exit(
        "stops the AWS emulator",
        &format!(
            "MOTO_PORT={port} '{stop}' >/dev/null 2>&1",
            stop = repo_file("localstack/stop").display()
        ),
    );
    Moto {
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// A policy that allows everything (the emulator's administrator under enforcement).
pub const ADMIN_POLICY: &str =
    r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"*","Resource":"*"}]}"#;

/// Creates the IAM user `label` with the inline policy `policy` (the policy file goes into
/// `dir`), as the user behind `creator`; returns the environment with its keys.
pub fn iam_user(
    m: &Moto,
    creator: &[(String, String)],
    label: &str,
    policy: &Value,
    dir: &Path,
) -> Vec<(String, String)> {
    let file = dir.join(format!("{label}.json"));
    std::fs::write(&file, policy.to_string()).unwrap();
    let keys = tool(creator, &["user", label, file.to_str().unwrap()]);
    aws_env(
        m,
        keys["id"].as_str().unwrap(),
        keys["secret"].as_str().unwrap(),
    )
}

/// Turns IAM enforcement on for every later request to `m` (global to the server: create the
/// users needed first, with the emulator's root keys).
pub fn enforce_iam(m: &Moto) {
    let status = Command::new("curl")
        .args([
            "-sf",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            "--data-binary",
            "0",
            "-H",
            "Content-Type: application/octet-stream",
            &format!("{}/moto-api/reset-auth", m.url),
        ])
        .status()
        .unwrap();
    assert!(status.success(), "moto refused to turn IAM enforcement on");
}

/// The shared emulator (IAM enforcement off).
pub fn moto() -> &'static Moto {
    static M: OnceLock<Moto> = OnceLock::new();
    M.get_or_init(|| start(free_port(), &[]))
}

/// Environment that points the binary (and boto3) at `moto` with the given keys, and away from
/// any AWS configuration of the machine.
pub fn aws_env(m: &Moto, key: &str, secret: &str) -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL".into(), m.url.clone()),
        ("AWS_ACCESS_KEY_ID".into(), key.into()),
        ("AWS_SECRET_ACCESS_KEY".into(), secret.into()),
        ("AWS_REGION".into(), "us-east-2".into()),
        ("AWS_DEFAULT_REGION".into(), "us-east-2".into()),
        ("AWS_CONFIG_FILE".into(), "/dev/null".into()),
        ("AWS_SHARED_CREDENTIALS_FILE".into(), "/dev/null".into()),
        ("AWS_EC2_METADATA_DISABLED".into(), "true".into()),
    ]
}

/// The emulator venv's python (with boto3).
pub fn python() -> PathBuf {
    let cache = std::env::var("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache"));
    std::env::var("HEROKU2RDS_MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| cache.join("heroku2rds/moto-venv"))
        .join("bin/python")
}

pub fn tool(env: &[(String, String)], args: &[&str]) -> Value {
    let mut c = Command::new(python());
    c.arg(repo_file("tests/integration/support/aws_tool.py"))
        .args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("run aws_tool.py");
    assert!(
        out.status.success(),
        "aws_tool.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("aws_tool.py prints JSON")
}

pub fn inventory(env: &[(String, String)], name: &str) -> serde_json::Map<String, Value> {
    tool(env, &["inventory", name, "us-east-2,us-east-1"])
        .as_object()
        .unwrap()
        .clone()
}

pub fn unique(prefix: &str) -> String {
    let mut b = [0u8; 3];
    getrandom::fill(&mut b).unwrap();
    format!("{prefix}-{}", hex::encode(b))
}
