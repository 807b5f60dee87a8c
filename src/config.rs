//! heroku2rds.toml + flags -> validated settings. Flags win over the file; the file wins over
//! defaults. Nothing here changes anything outside this process.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The default config file, in the current directory.
pub const DEFAULT_PATH: &str = "heroku2rds.toml";

/// The file's contents. Every field is optional; unknown fields are an error (a typo must not
/// silently fall back to a default).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// The migration's name.
    pub name: Option<String>,
    /// The Heroku app.
    pub app: Option<String>,
    /// AWS settings.
    #[serde(default)]
    pub aws: AwsFile,
}

/// The `[aws]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsFile {
    pub region: Option<String>,
    pub replica_region: Option<String>,
    pub operator_cidr: Option<String>,
    #[serde(default)]
    pub app_cidrs: Vec<String>,
    pub open_to_internet: Option<bool>,
    pub db_instance_class: Option<String>,
    pub worker_instance_type: Option<String>,
    pub worker_arch: Option<String>,
    pub engine_major: Option<u32>,
    pub storage_autoscaling_max_gb: Option<i32>,
    pub ssh_public_key: Option<PathBuf>,
    pub db_name: Option<String>,
    pub master_username: Option<String>,
    pub backup_retention_days: Option<i32>,
}

/// Reads `path`, or `heroku2rds.toml` in the current directory when it exists (no file is fine).
pub fn load(path: Option<&Path>) -> Result<File> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_PATH), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(File::default())
        }
        Err(e) => {
            return Err(Error::usage(format!("cannot read {}", path.display()))
                .with_fix("check the --config path (`heroku2rds init` writes one)")
                .with_source(e))
        }
    };
    toml::from_str(&text).map_err(|e| {
        Error::usage(format!("{} is not valid: {}", path.display(), e.message())).with_fix(
            "fix the file; `heroku2rds init` writes a commented example with every setting",
        )
    })
}

/// Finds this machine's public IPv4 address as AWS sees it (checkip.amazonaws.com), for the
/// operator's /32.
pub async fn detect_public_ip() -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fail = |why: String| {
        Error::usage(format!("could not detect your public address ({why})"))
            .with_fix("pass it with --operator-cidr 203.0.113.7/32 (`curl https://checkip.amazonaws.com` shows it)")
    };
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect("checkip.amazonaws.com:80")
            .await
            .map_err(|e| fail(e.to_string()))?;
        s.write_all(
            b"GET / HTTP/1.0\r\nHost: checkip.amazonaws.com\r\nUser-Agent: heroku2rds\r\n\r\n",
        )
        .await
        .map_err(|e| fail(e.to_string()))?;
        let mut buf = Vec::new();
        s.take(4096)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let text = String::from_utf8_lossy(&buf);
        let body = text
            .split("\r\n\r\n")
            .nth(1)
            .unwrap_or("")
            .trim()
            .to_string();
        body.parse::<std::net::Ipv4Addr>()
            .map(|ip| ip.to_string())
            .map_err(|_| fail("unexpected answer from checkip.amazonaws.com".into()))
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), attempt)
        .await
        .map_err(|_| fail("checkip.amazonaws.com did not answer within 10 s".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_refused_and_known_ones_read() {
        let ok: File = toml::from_str(
            "name = \"acme\"\n[aws]\nregion = \"us-east-2\"\napp_cidrs = [\"203.0.113.0/28\"]\n",
        )
        .unwrap();
        assert_eq!(ok.name.as_deref(), Some("acme"));
        assert_eq!(ok.aws.app_cidrs, vec!["203.0.113.0/28".to_string()]);
        assert!(toml::from_str::<File>("[aws]\nregoin = \"us-east-2\"\n").is_err());
    }
}
