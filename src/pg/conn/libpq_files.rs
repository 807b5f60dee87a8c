//! libpq's connection files, so that passwords need not be in URLs or arguments: the service
//! file (`?service=NAME` in a URL: `~/.pg_service.conf` or `PGSERVICEFILE`, then
//! `PGSYSCONFDIR/pg_service.conf`) and the password file (`~/.pgpass` or `PGPASSFILE`, used only
//! when it is readable by its owner alone, as libpq does).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};

/// The `key=value` settings of section `[name]` of a service file's text.
pub fn service_section(text: &str, name: &str) -> Option<BTreeMap<String, String>> {
    let mut found = None;
    let mut current: Option<&str> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(section.trim());
            if current == Some(name) {
                found.get_or_insert_with(BTreeMap::new);
            }
            continue;
        }
        if current == Some(name) {
            if let Some((k, v)) = line.split_once('=') {
                found
                    .get_or_insert_with(BTreeMap::new)
                    .insert(k.trim().to_string(), v.trim().to_string());
            }
        }
    }
    found
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").map(PathBuf::from)
}

/// Service `name` from the files libpq reads, the first that defines it.
pub fn lookup_service(name: &str) -> Result<BTreeMap<String, String>> {
    let mut files = Vec::new();
    match std::env::var_os("PGSERVICEFILE") {
        Some(f) => files.push(PathBuf::from(f)),
        None => files.extend(home().map(|h| h.join(".pg_service.conf"))),
    }
    files.push(
        std::env::var_os("PGSYSCONFDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/etc/postgresql-common"))
            .join("pg_service.conf"),
    );
    for f in &files {
        if let Ok(text) = std::fs::read_to_string(f) {
            if let Some(s) = service_section(&text, name) {
                return Ok(s);
            }
        }
    }
    Err(Error::usage(format!(
        "service {name:?} is not defined in {}",
        files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(" or ")
    ))
    .with_fix(
        "add a [NAME] section with host, port, dbname, user (and sslmode) to ~/.pg_service.conf",
    ))
}

/// Splits a password-file line into its five fields (`\:` and `\\` escaped).
fn fields(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    if let Some(last) = out.last_mut() {
                        last.push(n);
                    }
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => {
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out
}

/// The password of the first matching line of a password file's text (`*` matches anything).
pub fn pgpass_match(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    // libpq matches "localhost" for Unix-socket connections too.
    let host = if host.starts_with('/') {
        "localhost"
    } else {
        host
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(fields)
        .filter(|f| f.len() == 5)
        .find(|f| {
            [host, port.as_str(), db, user]
                .iter()
                .zip(f.iter())
                .all(|(want, got)| got == "*" || got == want)
        })
        .map(|f| f[4].clone())
}

/// The password for a connection from the password file, if one matches.
pub fn lookup_pgpass(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".pgpass")))?;
    let meta = std::fs::metadata(&path).ok()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "ignoring the password file {}: others may read it (chmod 0600 it)",
                path.display()
            );
            return None;
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    pgpass_match(&std::fs::read_to_string(&path).ok()?, host, port, db, user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_sections() {
        let text = "# comment\n[prod]\nhost=db.example.com\nport = 6543\n\n[other]\nhost=x\n";
        let s = service_section(text, "prod").expect("prod");
        assert_eq!(s["host"], "db.example.com");
        assert_eq!(s["port"], "6543");
        assert!(!s.contains_key("x"));
        assert!(service_section(text, "missing").is_none());
    }

    #[test]
    fn password_file_lines() {
        let text = "# c\nother:5432:*:app:nope\ndb.example.com:*:prod:app:s3\\:cr\\\\et\n*:*:*:*:fallback\n";
        assert_eq!(
            pgpass_match(text, "db.example.com", 5432, "prod", "app").as_deref(),
            Some("s3:cr\\et")
        );
        assert_eq!(
            pgpass_match(text, "h", 1, "d", "u").as_deref(),
            Some("fallback")
        );
        assert_eq!(pgpass_match("h:1:d:u:pw\n", "h", 2, "d", "u"), None);
        assert_eq!(
            pgpass_match("localhost:5432:d:u:pw", "/tmp", 5432, "d", "u").as_deref(),
            Some("pw")
        );
    }
}
