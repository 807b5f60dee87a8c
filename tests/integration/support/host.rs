//! What the tests need of this machine: free loopback ports, whether they run as root, signals,
//! and clean-up that runs once this test process has ended, however it ended.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// A loopback port that is free right now (the system's pick; nothing holds it afterwards, so a
/// test that needs a closed port can use one too).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// True when the tests run as root (the PostgreSQL servers then run as `postgres`).
pub fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// Sends `signal` (such as `-TERM`) to `pid` with kill(1); true if it was delivered.
pub fn kill(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill")
        .success()
}

/// Runs the shell `script` once this test process has ended, in a session of its own so that
/// nothing that stops the tests stops it. `what` names it if it cannot start.
pub fn after_exit(what: &str, script: &str) {
    let watchdog = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {script}",
        pid = std::process::id()
    );
    // Deliberately not waited for: it must outlive this process to clean up after it.
    #[allow(clippy::zombie_processes)]
    let _watchdog = Command::new("setsid")
        .args(["sh", "-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start the watchdog that {what}: {e}"));
}
