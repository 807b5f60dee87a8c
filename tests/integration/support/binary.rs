//! The compiled heroku2rds binary as a black box: a command with exactly the environment a test
//! gives it, and the outcome of a run (exit code, stdout, stderr).

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_heroku2rds");

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(out: Output) -> Run {
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "unexpected exit code; stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
}

/// The binary with `args` and `env`; the URL variables of this process are not passed on (those
/// in `env` are set).
pub fn command<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    args: impl IntoIterator<Item = impl AsRef<OsStr>>,
    env: &[(K, V)],
) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env_remove("HEROKU2RDS_SOURCE_URL")
        .env_remove("HEROKU2RDS_TARGET_URL")
        .envs(env.iter().map(|(k, v)| (k, v)));
    c
}

/// Runs the binary with nothing added to the environment (the URL variables cleared).
pub fn h2r(args: &[&str]) -> Run {
    h2r_env::<&str, &str>(args, &[])
}

/// Runs the binary with extra environment; the URL variables are cleared unless given.
pub fn h2r_env<K: AsRef<OsStr>, V: AsRef<OsStr>>(args: &[&str], env: &[(K, V)]) -> Run {
    Run::from_output(command(args, env).output().expect("run heroku2rds"))
}

/// Starts the binary in the background with `env` (the URL variables are cleared unless given),
/// its stdout and stderr going to `log` (a pipe nobody reads would block a long run).
pub fn spawn_h2r_logged<K: AsRef<OsStr>, V: AsRef<OsStr>>(
    args: &[&str],
    env: &[(K, V)],
    log: &Path,
) -> Child {
    let out = std::fs::File::create(log).expect("create the log file");
    let err = out.try_clone().expect("clone the log file");
    command(args, env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .expect("spawn heroku2rds")
}
