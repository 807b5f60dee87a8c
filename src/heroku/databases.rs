//! Heroku Postgres databases through the data API (`GET /client/v11/databases/{addon_id}`, what
//! `heroku pg:info` shows), and which of an app's Postgres add-ons follow a given leader.
//!
//! How a follower is recognised, as the Heroku CLI reads the same answer: a follower's info has
//! `following` (the leader's URL, without credentials; `pg:unfollow` refuses a database
//! without it) and an `info` entry named "Following" whose values are URLs (`pg:info` turns
//! them into attachment names by comparing scheme, host, port and path with the app's config
//! vars); a leader's info has a "Followers" entry of the same kind, and every database has
//! `resource_url`, its own URL. `leader` (null, a string, or an object with `addon_id`/`id` and
//! `name`) names the leader directly: when a database has one, it decides.

use std::fmt;

use reqwest::Method;
use serde::Deserialize;

use super::app::{gone, seg, Addon, Named};
use super::client::{Api, Client, Request};
use crate::error::Result;

/// One line of `pg:info` (`{"name": "Following", "values": [...]}`).
#[derive(Clone, Default, Deserialize)]
pub struct InfoEntry {
    /// `Plan`, `Status`, `Following`, `Followers`, ...
    #[serde(default)]
    pub name: String,
    /// Its values (strings on the real API; numbers tolerated).
    #[serde(default)]
    pub values: Vec<serde_json::Value>,
}

impl InfoEntry {
    /// The values as text.
    pub fn texts(&self) -> Vec<String> {
        self.values
            .iter()
            .map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect()
    }
}

impl fmt::Debug for InfoEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // "Following"/"Followers" carry URLs: shown without credentials.
        let values: Vec<String> = self.texts().iter().map(|v| redact(v)).collect();
        write!(f, "{}: {values:?}", self.name)
    }
}

/// A database as the data API describes it (the fields the tool reads).
#[derive(Clone, Default, Deserialize)]
pub struct DatabaseInfo {
    /// The add-on's id.
    #[serde(default)]
    pub addon_id: String,
    /// The add-on's name.
    #[serde(default)]
    pub name: String,
    /// The database's own URL (may carry credentials: never logged).
    #[serde(default)]
    pub resource_url: Option<String>,
    /// The leader's URL when this database is a follower.
    #[serde(default)]
    pub following: Option<String>,
    /// The leader, when the API names it: a string or `{"addon_id"/"id", "name"}`.
    #[serde(default)]
    pub leader: Option<serde_json::Value>,
    /// Size of the database in bytes.
    #[serde(default)]
    pub num_bytes: Option<i64>,
    /// The lines `pg:info` shows.
    #[serde(default)]
    pub info: Vec<InfoEntry>,
}

impl fmt::Debug for DatabaseInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseInfo")
            .field("addon_id", &self.addon_id)
            .field("name", &self.name)
            .field("resource_url", &self.resource_url.as_deref().map(redact))
            .field("following", &self.following.as_deref().map(redact))
            .field("leader", &self.leader)
            .field("info", &self.info)
            .finish()
    }
}

impl DatabaseInfo {
    /// The values of the `info` entry `name` (none when absent).
    pub fn info_values(&self, name: &str) -> Vec<String> {
        self.info
            .iter()
            .filter(|e| e.name.eq_ignore_ascii_case(name))
            .flat_map(InfoEntry::texts)
            .collect()
    }

    /// The ids and names by which `leader` names the leader (none when null or absent).
    pub fn leader_names(&self) -> Vec<String> {
        let text = |v: &serde_json::Value| {
            v.as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        match &self.leader {
            Some(serde_json::Value::Object(o)) => ["addon_id", "id", "name"]
                .iter()
                .filter_map(|k| o.get(*k).and_then(text))
                .collect(),
            Some(v) => text(v).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// True when the API says this database follows another one.
    pub fn is_follower(&self) -> bool {
        self.following.as_deref().is_some_and(|f| !f.is_empty())
            || !self.info_values("Following").is_empty()
            || !self.leader_names().is_empty()
    }
}

impl Client {
    /// The data API's description of a Heroku Postgres add-on (`heroku pg:info`). A 404 means
    /// the database is not provisioned yet.
    pub async fn database_info(&self, addon_id: &str) -> Result<DatabaseInfo> {
        self.send(&Request::new(
            Method::GET,
            Api::Data,
            format!("/client/v11/databases/{}", seg(addon_id)),
        ))
        .await
    }

    /// The Heroku Postgres add-ons among `addons` (typically the app's) that follow the add-on
    /// `leader_id` (which may be billed to another app and need not be among them). Reads the
    /// data API info of each Postgres add-on and of the leader; one not provisioned yet (404)
    /// is skipped. The rules: [`databases::followers_of`](crate::heroku::databases::followers_of).
    pub async fn followers_of(&self, leader_id: &str, addons: &[Addon]) -> Result<Vec<Addon>> {
        let mut dbs = Vec::new();
        for a in addons.iter().filter(|a| a.is_postgres()) {
            match self.database_info(&a.id).await {
                Ok(info) => dbs.push((a.clone(), info)),
                Err(e) if gone(&e) => {
                    tracing::debug!("add-on {} is not provisioned yet: skipped", a.name);
                }
                Err(e) => return Err(e),
            }
        }
        if !dbs.iter().any(|(a, _)| a.id == leader_id) {
            match self.database_info(leader_id).await {
                Ok(info) => {
                    let leader = Addon {
                        id: leader_id.to_string(),
                        name: info.name.clone(),
                        plan: Named::default(),
                        addon_service: Named::default(),
                        app: Named::default(),
                    };
                    dbs.push((leader, info));
                }
                Err(e) if gone(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(followers_of(leader_id, &dbs))
    }
}

/// Where a database lives: host, port and (when known) database name.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Location {
    host: String,
    port: u16,
    db: Option<String>,
}

/// Reads `postgres://user:pw@host:port/db`, `postgres://host/db` or `host:port[/db]`.
fn locate(s: &str) -> Option<Location> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let with_scheme = if s.contains("://") {
        s.to_string()
    } else {
        format!("postgres://{s}")
    };
    let url = url::Url::parse(&with_scheme).ok()?;
    let host = url
        .host_str()?
        .trim_matches(['[', ']'])
        .to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let db = url.path().trim_matches('/');
    Some(Location {
        host,
        port: url.port().unwrap_or(5432),
        db: (!db.is_empty()).then(|| db.to_string()),
    })
}

/// Whether two URLs name the same database: same host and port, and the same database name
/// when both give one.
fn same_database(a: &str, b: &str) -> bool {
    match (locate(a), locate(b)) {
        (Some(a), Some(b)) => {
            a.host == b.host
                && a.port == b.port
                && match (&a.db, &b.db) {
                    (Some(x), Some(y)) => x == y,
                    _ => true,
                }
        }
        _ => false,
    }
}

/// A URL without its user and password, for logs.
fn redact(s: &str) -> String {
    match url::Url::parse(s) {
        Ok(mut u) if u.has_host() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ if s.contains('@') => "[redacted]".to_string(),
        _ => s.to_string(),
    }
}

/// The add-ons among `dbs` (each with its data API info) that follow the add-on `leader_id`,
/// in the given order. A database whose `leader` names an add-on follows that one and no
/// other (by id, or by the leader's name). Otherwise URLs decide: its `following` or
/// "Following" values locate the leader's `resource_url`, or, being a follower, its own
/// `resource_url` is among the leader's "Followers". The leader's own entry in `dbs` gives its
/// URL, "Followers" line and name; without it only `leader` can tell. Pure, for tests.
pub fn followers_of(leader_id: &str, dbs: &[(Addon, DatabaseInfo)]) -> Vec<Addon> {
    let leader = dbs.iter().find(|(a, _)| a.id == leader_id);
    let leader_name = leader
        .map(|(a, _)| a.name.as_str())
        .filter(|n| !n.is_empty());
    let leader_info = leader.map(|(_, i)| i);
    let leader_url = leader_info.and_then(|i| i.resource_url.as_deref());
    let leader_lists: Vec<String> = leader_info
        .map(|i| i.info_values("Followers"))
        .unwrap_or_default();
    dbs.iter()
        .filter(|(a, _)| a.id != leader_id)
        .filter(|(_, info)| {
            let named = info.leader_names();
            if !named.is_empty() {
                return named
                    .iter()
                    .any(|l| l == leader_id || Some(l.as_str()) == leader_name);
            }
            let points_at_leader = leader_url.is_some_and(|lu| {
                info.following
                    .iter()
                    .cloned()
                    .chain(info.info_values("Following"))
                    .any(|f| same_database(&f, lu))
            });
            let listed_by_leader = info.is_follower()
                && info
                    .resource_url
                    .as_deref()
                    .is_some_and(|own| leader_lists.iter().any(|f| same_database(f, own)));
            points_at_leader || listed_by_leader
        })
        .map(|(a, _)| a.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heroku::app::{Named, POSTGRES_SERVICE};
    use serde_json::json;

    fn addon(id: &str) -> Addon {
        Addon {
            id: id.into(),
            name: format!("postgresql-{id}"),
            plan: Named {
                id: String::new(),
                name: "heroku-postgresql:standard-0".into(),
            },
            addon_service: Named {
                id: String::new(),
                name: POSTGRES_SERVICE.into(),
            },
            app: Named::default(),
        }
    }

    fn info(v: serde_json::Value) -> DatabaseInfo {
        serde_json::from_value(v).expect("database info")
    }

    const LEADER: &str = "postgres://u:p@ec2-1-1-1-1.compute-1.amazonaws.com:5432/dleader";
    const OTHER: &str = "postgres://u:p@ec2-2-2-2-2.compute-1.amazonaws.com:5432/dother";

    #[test]
    fn locations_compare_host_port_and_database() {
        let table = [
            // The CLI's own comparison: credentials do not matter.
            (
                LEADER,
                "postgres://ec2-1-1-1-1.compute-1.amazonaws.com:5432/dleader",
                true,
            ),
            // Default port; postgresql:// scheme; host case.
            (
                LEADER,
                "postgresql://EC2-1-1-1-1.compute-1.amazonaws.com/dleader",
                true,
            ),
            // host:port without a database name (the fake's resource_url).
            (LEADER, "ec2-1-1-1-1.compute-1.amazonaws.com:5432", true),
            (
                LEADER,
                "postgres://ec2-1-1-1-1.compute-1.amazonaws.com:5433/dleader",
                false,
            ),
            (
                LEADER,
                "postgres://ec2-1-1-1-1.compute-1.amazonaws.com:5432/dother",
                false,
            ),
            (LEADER, OTHER, false),
            (LEADER, "", false),
            ("not a url at all", LEADER, false),
        ];
        for (a, b, want) in table {
            assert_eq!(same_database(a, b), want, "{a} vs {b}");
            assert_eq!(same_database(b, a), want, "{b} vs {a}");
        }
    }

    #[test]
    fn finds_followers_as_the_cli_reads_them() {
        let leader = addon("lead");
        let lead_info = |extra: serde_json::Value| {
            let mut v = json!({"addon_id": "lead", "resource_url": LEADER, "following": null,
                "info": [{"name": "Plan", "values": ["Standard 0"]}]});
            if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            info(v)
        };
        let plain = info(
            json!({"addon_id": "x", "resource_url": OTHER, "following": null,
            "info": [{"name": "Tables", "values": [3]}]}),
        );
        // (case, the leader's info, the candidate's info, follows)
        let table: Vec<(&str, DatabaseInfo, DatabaseInfo, bool)> = vec![
            (
                "following field",
                lead_info(json!({})),
                info(json!({"resource_url": OTHER,
                    "following": "postgres://ec2-1-1-1-1.compute-1.amazonaws.com:5432/dleader"})),
                true,
            ),
            (
                "Following info line",
                lead_info(json!({})),
                info(json!({"resource_url": OTHER, "info": [{"name": "Following",
                    "resolve_db_name": true,
                    "values": ["postgres://ec2-1-1-1-1.compute-1.amazonaws.com:5432/dleader"]}]})),
                true,
            ),
            (
                "listed in the leader's Followers",
                lead_info(
                    json!({"info": [{"name": "Followers", "resolve_db_name": true,
                    "values": ["postgres://ec2-2-2-2-2.compute-1.amazonaws.com:5432/dother"]}]}),
                ),
                info(json!({"resource_url": OTHER,
                    "following": "postgres://ec2-9-9-9-9.compute-1.amazonaws.com/d"})),
                true,
            ),
            (
                "listed in the leader's Followers but following nothing",
                lead_info(json!({"info": [{"name": "Followers",
                    "values": ["postgres://ec2-2-2-2-2.compute-1.amazonaws.com:5432/dother"]}]})),
                info(json!({"resource_url": OTHER})),
                false,
            ),
            (
                "leader named by an object (the fake's shape)",
                lead_info(json!({})),
                info(json!({"resource_url": OTHER,
                    "leader": {"addon_id": "lead", "name": "postgresql-lead"}})),
                true,
            ),
            (
                "leader named: another add-on, whatever the URLs say",
                lead_info(json!({})),
                info(json!({"resource_url": OTHER, "following": LEADER,
                    "leader": {"addon_id": "else", "name": "postgresql-else"}})),
                false,
            ),
            (
                // resource_url without a database name (host:port, as the fake gives it):
                // every database on that server looks alike by URL; `leader` decides.
                "same server, named leader decides",
                info(json!({"addon_id": "lead",
                    "resource_url": "ec2-1-1-1-1.compute-1.amazonaws.com:5432"})),
                info(
                    json!({"resource_url": "ec2-1-1-1-1.compute-1.amazonaws.com:5432",
                    "following": "postgres://ec2-1-1-1-1.compute-1.amazonaws.com:5432/dsome",
                    "leader": {"addon_id": "someone"}}),
                ),
                false,
            ),
            (
                "leader named by add-on name",
                lead_info(json!({})),
                info(json!({"resource_url": OTHER, "leader": "postgresql-lead"})),
                true,
            ),
            (
                "follows another database",
                lead_info(json!({})),
                info(json!({"resource_url": OTHER,
                    "following": "postgres://ec2-9-9-9-9.compute-1.amazonaws.com:5432/d9"})),
                false,
            ),
            (
                "a plain second database",
                lead_info(json!({})),
                plain.clone(),
                false,
            ),
            (
                "a leader without a URL cannot be matched by URL",
                info(json!({"addon_id": "lead"})),
                info(json!({"resource_url": OTHER,
                    "following": "postgres://ec2-1-1-1-1.compute-1.amazonaws.com:5432/dleader"})),
                false,
            ),
        ];
        for (case, lead, candidate, follows) in table {
            let dbs = vec![(leader.clone(), lead), (addon("cand"), candidate)];
            let got: Vec<String> = followers_of(&leader.id, &dbs)
                .into_iter()
                .map(|a| a.id)
                .collect();
            let want: Vec<String> = if follows { vec!["cand".into()] } else { vec![] };
            assert_eq!(got, want, "{case}");
        }
        // The leader never follows itself; several followers keep their order.
        let dbs = vec![
            (addon("f1"), info(json!({"following": LEADER}))),
            (leader.clone(), lead_info(json!({"following": LEADER}))),
            (addon("plain"), plain),
            (
                addon("f2"),
                info(json!({"info": [{"name": "Following", "values": [LEADER]}]})),
            ),
        ];
        let got: Vec<String> = followers_of(&leader.id, &dbs)
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(got, ["f1", "f2"]);
        // Without the leader's own info, only a `leader` field naming its id tells.
        let dbs = vec![
            (addon("f1"), info(json!({"following": LEADER}))),
            (addon("f3"), info(json!({"leader": "lead"}))),
            (addon("f4"), info(json!({"leader": "postgresql-lead"}))),
        ];
        let got: Vec<String> = followers_of("lead", &dbs)
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(got, ["f3"]);
    }

    #[test]
    fn followers_and_urls_in_debug_output_carry_no_credentials() {
        assert_eq!(
            info(json!({"leader": {"addon_id": "a", "name": "n", "x": 1}})).leader_names(),
            ["a", "n"]
        );
        assert_eq!(info(json!({"leader": " p "})).leader_names(), ["p"]);
        assert!(info(json!({"leader": null})).leader_names().is_empty());
        assert!(info(json!({"leader": ""})).leader_names().is_empty());
        let i = info(json!({"resource_url": LEADER, "following": OTHER,
            "info": [{"name": "Following", "values": [OTHER]}, {"name": "Tables", "values": [3]}]}));
        assert!(i.is_follower());
        let shown = format!("{i:?}");
        assert!(!shown.contains("u:p@"), "{shown}");
        assert!(shown.contains("ec2-1-1-1-1"), "{shown}");
        assert_eq!(i.info_values("tables"), ["3"]);
        assert!(!info(json!({"following": null})).is_follower());
    }
}
