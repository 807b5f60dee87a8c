//! One Heroku app through the Platform API: maintenance, formation, dynos, config vars, add-ons,
//! attachments and releases; and which add-on is the app's Heroku Postgres database.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Api, Client, Request};
use crate::error::{Cause, Error, Result};

pub use super::addons::dyno_starters;

/// The add-on service of Heroku Postgres.
pub const POSTGRES_SERVICE: &str = "heroku-postgresql";

/// The attachment name under which the cutover keeps the Heroku database attached once
/// `DATABASE` points elsewhere (`HEROKU2RDS_PREVIOUS_DATABASE_URL`). [`choose_database`] takes
/// it for the database when nothing is attached as `DATABASE`.
pub const PREVIOUS_DATABASE_ATTACHMENT: &str = "HEROKU2RDS_PREVIOUS_DATABASE";

/// Percent-encodes one path segment.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `{id, name}` reference to another object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Named {
    /// Unique id.
    #[serde(default)]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
}

/// An app.
#[derive(Debug, Clone, Deserialize)]
pub struct AppInfo {
    /// Unique id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Whether maintenance mode is on.
    pub maintenance: bool,
    /// The space the app runs in; None outside Private Spaces.
    #[serde(default)]
    pub space: Option<Space>,
}

impl AppInfo {
    /// True when the app runs in a Private Space (Shield spaces included). There, scaling `web`
    /// to 0 shows errors instead of the maintenance page (the routing proxy lives on the web
    /// dynos), and dynos take minutes to roll out.
    pub fn in_private_space(&self) -> bool {
        self.space.is_some()
    }
}

/// The space of an app in a Private Space.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Space {
    /// Unique id.
    #[serde(default)]
    pub id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Whether it is a Shield space.
    #[serde(default)]
    pub shield: bool,
}

/// One process type of the formation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// Process type (`web`, `worker`, ...).
    #[serde(rename = "type")]
    pub process_type: String,
    /// Dynos of this type.
    pub quantity: i64,
    /// Dyno size (`standard-1X`, ...).
    pub size: String,
}

/// A dyno.
#[derive(Debug, Clone, Deserialize)]
pub struct Dyno {
    /// Unique id.
    pub id: String,
    /// `web.1`, `run.1234`.
    pub name: String,
    /// Process type (`run` for one-off dynos).
    #[serde(rename = "type")]
    pub process_type: String,
    /// `crashed`, `down`, `idle`, `starting` or `up` (the schema's list); `restarting` and
    /// `complete` are seen too.
    pub state: String,
    /// The release it runs.
    #[serde(default)]
    pub release: Option<ReleaseRef>,
    /// When it was created (ISO 8601).
    #[serde(default)]
    pub created_at: Option<String>,
    /// When its state last changed (ISO 8601).
    #[serde(default)]
    pub updated_at: Option<String>,
}

impl Dyno {
    /// True when the dyno runs or is about to: `starting`, `up` or `restarting` (any case).
    /// Every other state counts as stopped: `down`, `crashed`, `idle` (a sleeping Eco dyno),
    /// `complete` (a one-off dyno that exited: Heroku logs "State changed from up to complete")
    /// and anything unknown.
    ///
    /// Exact names, not substrings: "up" or "start" inside another word says nothing about the
    /// process, and a wrong "running" would make the cutover stop or wait for a dyno that no
    /// longer exists. Counting an unknown state as stopped is safe because the cutover's
    /// safety rests on the write fence in the database, not on dyno states; these only decide
    /// what to stop and what to wait for.
    pub fn may_run(&self) -> bool {
        let state = self.state.trim();
        ["starting", "up", "restarting"]
            .iter()
            .any(|s| state.eq_ignore_ascii_case(s))
    }
}

/// `{id, version}` of a release.
#[derive(Debug, Clone, Deserialize)]
pub struct ReleaseRef {
    /// Unique id.
    #[serde(default)]
    pub id: String,
    /// Version number.
    pub version: i64,
}

/// A release.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Release {
    /// Unique id.
    pub id: String,
    /// Version number.
    pub version: i64,
    /// `pending`, `succeeded` or `failed`.
    pub status: String,
    /// Whether dynos run it.
    #[serde(default)]
    pub current: bool,
    /// What made it.
    #[serde(default)]
    pub description: String,
}

/// An add-on.
#[derive(Debug, Clone, Deserialize)]
pub struct Addon {
    /// Unique id.
    pub id: String,
    /// Global name (`postgresql-concave-52656`).
    pub name: String,
    /// Plan (`heroku-postgresql:standard-0`).
    pub plan: Named,
    /// Service (`heroku-postgresql`).
    pub addon_service: Named,
    /// The billing app.
    pub app: Named,
}

impl std::fmt::Display for Addon {
    /// The add-on's global name.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

impl Addon {
    /// True for Heroku Postgres.
    pub fn is_postgres(&self) -> bool {
        self.addon_service.name == POSTGRES_SERVICE
            || self.plan.name.starts_with("heroku-postgresql:")
    }
}

/// The add-on side of an attachment.
#[derive(Debug, Clone, Deserialize)]
pub struct AttachedAddon {
    /// Unique id.
    pub id: String,
    /// Global name.
    pub name: String,
}

/// An add-on attachment: exposes the add-on to an app as `NAME_URL`.
#[derive(Debug, Clone, Deserialize)]
pub struct Attachment {
    /// Unique id (the only identity DELETE accepts).
    pub id: String,
    /// `DATABASE`, `HEROKU_POSTGRESQL_NAVY`, ...
    pub name: String,
    /// The add-on.
    pub addon: AttachedAddon,
    /// The app it is attached to.
    pub app: Named,
    /// Namespace (credentials, pooling), None for the plain attachment.
    #[serde(default)]
    pub namespace: Option<String>,
}

/// An app's Heroku Postgres database as the tool sees it.
#[derive(Debug, Clone)]
pub struct Database {
    /// The add-on.
    pub addon: Addon,
    /// The attachment named `DATABASE`, when there is one.
    pub database_attachment: Option<Attachment>,
}

/// Picks the app's Heroku Postgres add-on: `--addon NAME` when given (an add-on name or id, or
/// one of its attachment names), else the add-on attached as `DATABASE`, else (after a
/// cutover moved `DATABASE` away) the add-on attached as [`PREVIOUS_DATABASE_ATTACHMENT`],
/// else the only Postgres add-on. Pure, for tests.
pub fn choose_database(
    app: &str,
    addons: &[Addon],
    attachments: &[Attachment],
    requested: Option<&str>,
) -> Result<Database> {
    let pg: Vec<&Addon> = addons.iter().filter(|a| a.is_postgres()).collect();
    let names = || {
        pg.iter()
            .map(|a| {
                let att: Vec<&str> = attachments
                    .iter()
                    .filter(|t| t.addon.id == a.id && t.app.name == app)
                    .map(|t| t.name.as_str())
                    .collect();
                format!("{} (as {})", a.name, att.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    if pg.is_empty() {
        return Err(Error::usage(format!(
            "app {app} has no Heroku Postgres add-on: nothing to migrate"
        ))
        .with_fix("check the app name (--app); `heroku addons -a APP` lists its add-ons"));
    }
    let database_attachment = |a: &Addon| {
        attachments
            .iter()
            .find(|t| {
                t.addon.id == a.id
                    && t.name == "DATABASE"
                    && t.app.name == app
                    && t.namespace.is_none()
            })
            .cloned()
    };
    if let Some(want) = requested {
        let found = pg.iter().find(|a| {
            a.name == want
                || a.id == want
                || attachments.iter().any(|t| {
                    t.addon.id == a.id && (t.name == want || format!("{}_URL", t.name) == want)
                })
        });
        return match found {
            Some(a) => Ok(Database {
                addon: (*a).clone(),
                database_attachment: database_attachment(a),
            }),
            None => Err(Error::usage(format!(
                "app {app} has no Heroku Postgres add-on named {want}; it has: {}",
                names()
            ))
            .with_fix("pass one of these to --addon")),
        };
    }
    let attached: Vec<&&Addon> = pg
        .iter()
        .filter(|a| database_attachment(a).is_some())
        .collect();
    let previous: Vec<&&Addon> = pg
        .iter()
        .filter(|a| {
            attachments.iter().any(|t| {
                t.addon.id == a.id
                    && t.name == PREVIOUS_DATABASE_ATTACHMENT
                    && t.app.name == app
                    && t.namespace.is_none()
            })
        })
        .collect();
    match (attached.as_slice(), previous.as_slice(), pg.as_slice()) {
        ([a], _, _) => Ok(Database {
            addon: (**a).clone(),
            database_attachment: database_attachment(a),
        }),
        ([], [a], _) => Ok(Database {
            addon: (**a).clone(),
            database_attachment: None,
        }),
        ([], [], [only]) => Ok(Database {
            addon: (*only).clone(),
            database_attachment: None,
        }),
        _ => Err(Error::usage(format!(
            "app {app} has {} Heroku Postgres add-ons and none is attached as DATABASE: which one is the database to migrate? {}",
            pg.len(),
            names()
        ))
        .with_fix("name it with --addon NAME")),
    }
}

/// One app, by name.
pub struct App<'a> {
    client: &'a Client,
    name: String,
}

impl<'a> App<'a> {
    /// The app `name`.
    pub fn new(client: &'a Client, name: &str) -> Self {
        App {
            client,
            name: name.to_string(),
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client it talks through (e.g. for [`super::poll::Pace::dynos`]).
    pub fn client(&self) -> &'a Client {
        self.client
    }

    fn path(&self, rest: &str) -> String {
        format!("/apps/{}{rest}", seg(&self.name))
    }

    /// App info (also proves the token is valid and may see the app).
    pub async fn info(&self) -> Result<AppInfo> {
        self.client.get(&self.path("")).await
    }

    /// Turns maintenance mode on or off.
    pub async fn set_maintenance(&self, on: bool) -> Result<()> {
        let _: serde_json::Value = self
            .client
            .send(
                &Request::new(Method::PATCH, Api::Platform, self.path(""))
                    .json(serde_json::json!({ "maintenance": on })),
            )
            .await?;
        Ok(())
    }

    /// The formation.
    pub async fn formation(&self) -> Result<Vec<Process>> {
        self.client
            .list(&Request::get(self.path("/formation")))
            .await
    }

    /// Sets quantities (and sizes) of the given process types.
    pub async fn scale(&self, updates: &[Process]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        let list: Vec<serde_json::Value> = updates
            .iter()
            .map(|p| serde_json::json!({ "type": p.process_type, "quantity": p.quantity, "size": p.size }))
            .collect();
        let _: serde_json::Value = self
            .client
            .send(
                &Request::new(Method::PATCH, Api::Platform, self.path("/formation"))
                    .json(serde_json::json!({ "updates": list })),
            )
            .await?;
        Ok(())
    }

    /// Every dyno.
    pub async fn dynos(&self) -> Result<Vec<Dyno>> {
        self.client.list(&Request::get(self.path("/dynos"))).await
    }

    /// Stops one dyno (one-off dynos are not part of the formation). A dyno that is gone
    /// (404: it exited between the list and the stop) is stopped: Ok.
    pub async fn stop_dyno(&self, dyno: &Dyno) -> Result<()> {
        let stopped: Result<serde_json::Value> = self
            .client
            .send(
                &Request::new(
                    Method::POST,
                    Api::Platform,
                    self.path(&format!("/dynos/{}/actions/stop", seg(&dyno.id))),
                )
                // Stopping a stopped dyno changes nothing.
                .idempotent(),
            )
            .await;
        match stopped {
            Ok(_) => Ok(()),
            Err(e) if gone(&e) => {
                tracing::debug!(
                    "dyno {} of app {} is gone already (404 on stop): stopped",
                    dyno.name,
                    self.name
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Config vars. Values are secrets: callers never log them.
    pub async fn config_vars(&self) -> Result<BTreeMap<String, Option<String>>> {
        self.client.get(&self.path("/config-vars")).await
    }

    /// Sets (Some) or removes (None) config vars.
    pub async fn set_config_vars(&self, vars: &BTreeMap<String, Option<String>>) -> Result<()> {
        let body = serde_json::to_value(vars)
            .map_err(|e| Error::other("encoding config vars").with_source(e))?;
        let _: serde_json::Value = self
            .client
            .send(&Request::new(Method::PATCH, Api::Platform, self.path("/config-vars")).json(body))
            .await?;
        Ok(())
    }

    /// Add-ons the app bills.
    pub async fn addons(&self) -> Result<Vec<Addon>> {
        self.client.list(&Request::get(self.path("/addons"))).await
    }

    /// Attachments on the app.
    pub async fn attachments(&self) -> Result<Vec<Attachment>> {
        self.client
            .list(&Request::get(self.path("/addon-attachments")))
            .await
    }

    /// Attaches `addon` (id or name) to the app as `name`.
    pub async fn attach(&self, addon: &str, name: &str) -> Result<Attachment> {
        self.client
            .send(
                &Request::new(Method::POST, Api::Platform, "/addon-attachments").json(
                    serde_json::json!({ "addon": addon, "app": self.name, "name": name, "confirm": self.name }),
                ),
            )
            .await
    }

    /// Removes an attachment (by its id).
    pub async fn detach(&self, attachment_id: &str) -> Result<()> {
        let _: serde_json::Value = self
            .client
            .send(&Request::new(
                Method::DELETE,
                Api::Platform,
                format!("/addon-attachments/{}", seg(attachment_id)),
            ))
            .await?;
        Ok(())
    }

    /// The newest release, if any.
    pub async fn latest_release(&self) -> Result<Option<Release>> {
        let (_, page) = self
            .client
            .send_page::<Release>(
                &Request::get(self.path("/releases")),
                "version ..; max=1, order=desc",
            )
            .await?;
        Ok(page.into_iter().max_by_key(|r| r.version))
    }

    /// Every release newer than `version`, oldest first (`Range: version ]v..; max=200,
    /// order=asc`, following further pages).
    pub async fn releases_since(&self, version: i64) -> Result<Vec<Release>> {
        let range = format!("version ]{version}..; max=200, order=asc");
        let all: Vec<Release> = self
            .client
            .list_from(&Request::get(self.path("/releases")), Some(&range))
            .await?;
        Ok(releases_after(all, version))
    }

    /// One release by version.
    pub async fn release(&self, version: i64) -> Result<Release> {
        self.client
            .get(&self.path(&format!("/releases/{version}")))
            .await
    }

    /// Finds the app's Heroku Postgres database (see [`choose_database`]).
    pub async fn database(&self, requested: Option<&str>) -> Result<Database> {
        let addons = self.addons().await?;
        let attachments = self.attachments().await?;
        choose_database(&self.name, &addons, &attachments, requested)
    }
}

/// Whether an error is the API's 404: the object does not exist (any more).
pub fn gone(e: &Error) -> bool {
    matches!(e.cause(), Cause::Http { status: 404, .. })
}

/// The releases newer than `version`, oldest first, each once (whatever order and overlap the
/// pages came in).
fn releases_after(mut releases: Vec<Release>, version: i64) -> Vec<Release> {
    releases.retain(|r| r.version > version);
    releases.sort_by_key(|r| r.version);
    releases.dedup_by_key(|r| r.version);
    releases
}

/// A Heroku database URL with TLS required when it says nothing (Heroku's URLs carry no
/// `sslmode`, and Heroku Postgres always speaks TLS).
pub fn with_tls_required(url: &str) -> String {
    if url.contains("sslmode=") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&sslmode=require")
    } else {
        format!("{url}?sslmode=require")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addon(id: &str, name: &str, service: &str) -> Addon {
        Addon {
            id: id.into(),
            name: name.into(),
            plan: Named {
                id: String::new(),
                name: format!("{service}:standard-0"),
            },
            addon_service: Named {
                id: String::new(),
                name: service.into(),
            },
            app: Named {
                id: String::new(),
                name: "app".into(),
            },
        }
    }

    fn att(addon_id: &str, name: &str) -> Attachment {
        Attachment {
            id: format!("att-{name}"),
            name: name.into(),
            addon: AttachedAddon {
                id: addon_id.into(),
                name: format!("name-{addon_id}"),
            },
            app: Named {
                id: String::new(),
                name: "app".into(),
            },
            namespace: None,
        }
    }

    #[test]
    fn picks_the_database_addon() {
        let redis = addon("r", "redis-1", "heroku-redis");
        let pg1 = addon("p1", "postgresql-one", POSTGRES_SERVICE);
        let pg2 = addon("p2", "postgresql-two", POSTGRES_SERVICE);
        // No Postgres at all.
        let e = choose_database(
            "app",
            std::slice::from_ref(&redis),
            &[att("r", "REDIS")],
            None,
        )
        .expect_err("none");
        assert!(e.message().contains("no Heroku Postgres"));
        // One, attached as DATABASE.
        let d = choose_database(
            "app",
            &[redis.clone(), pg1.clone()],
            &[att("p1", "DATABASE")],
            None,
        )
        .expect("one");
        assert_eq!(d.addon.id, "p1");
        assert_eq!(d.database_attachment.expect("att").id, "att-DATABASE");
        // Two, one attached as DATABASE: that one.
        let both = [pg1.clone(), pg2.clone()];
        let d = choose_database(
            "app",
            &both,
            &[att("p2", "HEROKU_POSTGRESQL_RED"), att("p1", "DATABASE")],
            None,
        )
        .expect("database wins");
        assert_eq!(d.addon.id, "p1");
        // Two, neither attached as DATABASE: ambiguous, names both.
        let e = choose_database(
            "app",
            &both,
            &[
                att("p1", "HEROKU_POSTGRESQL_BLUE"),
                att("p2", "HEROKU_POSTGRESQL_RED"),
            ],
            None,
        )
        .expect_err("ambiguous");
        assert_eq!(e.kind(), crate::error::Kind::Usage);
        assert!(
            e.message().contains("postgresql-one") && e.message().contains("postgresql-two"),
            "{}",
            e.message()
        );
        assert!(e.fix().unwrap_or("").contains("--addon"));
        // --addon by add-on name, by attachment name, by config var; unknown.
        let atts = [
            att("p1", "HEROKU_POSTGRESQL_BLUE"),
            att("p2", "HEROKU_POSTGRESQL_RED"),
        ];
        assert_eq!(
            choose_database("app", &both, &atts, Some("postgresql-two"))
                .expect("by name")
                .addon
                .id,
            "p2"
        );
        assert_eq!(
            choose_database("app", &both, &atts, Some("HEROKU_POSTGRESQL_BLUE"))
                .expect("by att")
                .addon
                .id,
            "p1"
        );
        assert_eq!(
            choose_database("app", &both, &atts, Some("HEROKU_POSTGRESQL_RED_URL"))
                .expect("by var")
                .addon
                .id,
            "p2"
        );
        assert!(choose_database("app", &both, &atts, Some("nope")).is_err());
        // One Postgres, not attached as DATABASE (after a switch): found, without attachment.
        let d = choose_database(
            "app",
            std::slice::from_ref(&pg1),
            &[att("p1", "HEROKU2RDS_PREVIOUS_DATABASE")],
            None,
        )
        .expect("only");
        assert!(d.database_attachment.is_none());
    }

    #[test]
    fn after_a_cutover_the_previous_attachment_names_the_database() {
        let pg1 = addon("p1", "postgresql-one", POSTGRES_SERVICE);
        let pg2 = addon("p2", "postgresql-follower", POSTGRES_SERVICE);
        let both = [pg1.clone(), pg2.clone()];
        let mut foreign = att("p2", PREVIOUS_DATABASE_ATTACHMENT);
        foreign.app.name = "other-app".into();
        let mut pooled = att("p2", PREVIOUS_DATABASE_ATTACHMENT);
        pooled.namespace = Some("connection-pooling:default".into());
        // (attachments, requested, chosen add-on or None for an error, DATABASE attachment kept)
        type Case<'a> = (Vec<Attachment>, Option<&'a str>, Option<&'a str>, bool);
        let table: Vec<Case<'_>> = vec![
            // The switch: DATABASE gone, the old database kept as PREVIOUS, a follower too.
            (
                vec![
                    att("p1", PREVIOUS_DATABASE_ATTACHMENT),
                    att("p2", "HEROKU_POSTGRESQL_RED"),
                ],
                None,
                Some("p1"),
                false,
            ),
            // DATABASE still wins over PREVIOUS (a cutover under way or rolled back).
            (
                vec![
                    att("p2", "DATABASE"),
                    att("p1", PREVIOUS_DATABASE_ATTACHMENT),
                ],
                None,
                Some("p2"),
                true,
            ),
            // The add-on id the cutover recorded wins over everything.
            (
                vec![
                    att("p2", "DATABASE"),
                    att("p1", PREVIOUS_DATABASE_ATTACHMENT),
                ],
                Some("p1"),
                Some("p1"),
                false,
            ),
            // PREVIOUS on another app, or with a namespace, does not count: still ambiguous.
            (
                vec![att("p1", "HEROKU_POSTGRESQL_BLUE"), foreign],
                None,
                None,
                false,
            ),
            (
                vec![att("p1", "HEROKU_POSTGRESQL_BLUE"), pooled],
                None,
                None,
                false,
            ),
            // Two add-ons both attached as PREVIOUS (cannot happen: names are unique per
            // app), ambiguous rather than a guess.
            (
                vec![
                    att("p1", PREVIOUS_DATABASE_ATTACHMENT),
                    att("p2", PREVIOUS_DATABASE_ATTACHMENT),
                ],
                None,
                None,
                false,
            ),
        ];
        for (i, (atts, requested, want, kept)) in table.into_iter().enumerate() {
            let got = choose_database("app", &both, &atts, requested);
            match (want, got) {
                (Some(id), Ok(d)) => {
                    assert_eq!(d.addon.id, id, "case {i}");
                    assert_eq!(d.database_attachment.is_some(), kept, "case {i}");
                }
                (None, Err(e)) => {
                    assert!(e.message().contains("none is attached"), "case {i}: {e}")
                }
                (want, got) => panic!("case {i}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(seg("my-app_1.x"), "my-app_1.x");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn dyno_states() {
        let d = |s: &str| Dyno {
            id: "i".into(),
            name: "web.1".into(),
            process_type: "web".into(),
            state: s.into(),
            release: None,
            created_at: None,
            updated_at: None,
        };
        let table = [
            ("starting", true),
            ("up", true),
            ("restarting", true),
            ("Up", true),
            (" up ", true),
            ("down", false),
            ("crashed", false),
            ("idle", false),
            ("complete", false),
            ("", false),
            ("cleanup", false),
            ("startup_failed", false),
            ("provisioning", false),
        ];
        for (state, running) in table {
            assert_eq!(d(state).may_run(), running, "{state:?}");
        }
    }

    #[test]
    fn releases_after_a_version_oldest_first() {
        let r = |v: i64| Release {
            id: format!("r{v}"),
            version: v,
            status: "succeeded".into(),
            current: false,
            description: String::new(),
        };
        let versions = |rs: Vec<Release>| rs.iter().map(|r| r.version).collect::<Vec<_>>();
        let table: &[(&[i64], i64, &[i64])] = &[
            (&[], 5, &[]),
            (&[6, 7, 8], 5, &[6, 7, 8]),
            // A server ignoring the Range: older ones dropped, order restored.
            (&[9, 3, 5, 7], 5, &[7, 9]),
            // Overlapping pages: each once.
            (&[6, 7, 7, 8], 5, &[6, 7, 8]),
            (&[1, 2], 5, &[]),
        ];
        for (given, since, want) in table {
            let got = versions(releases_after(
                given.iter().map(|v| r(*v)).collect(),
                *since,
            ));
            assert_eq!(&got, want, "{given:?} since {since}");
        }
    }

    #[test]
    fn private_spaces_from_the_app_json() {
        let plain: AppInfo = serde_json::from_value(serde_json::json!({
            "id": "1", "name": "a", "maintenance": false, "space": null
        }))
        .expect("plain");
        assert!(!plain.in_private_space());
        let absent: AppInfo = serde_json::from_value(
            serde_json::json!({"id": "1", "name": "a", "maintenance": true}),
        )
        .expect("absent");
        assert!(!absent.in_private_space());
        let spaced: AppInfo = serde_json::from_value(serde_json::json!({
            "id": "1", "name": "a", "maintenance": false,
            "space": {"id": "s1", "name": "acme-space", "shield": true}
        }))
        .expect("space");
        assert!(spaced.in_private_space());
        assert_eq!(spaced.space.as_ref().map(|s| s.shield), Some(true));
    }

    #[test]
    fn a_404_is_gone() {
        use super::super::client::{api_error, ApiErrorBody, TokenSource};
        let e = |status| {
            api_error(
                status,
                &ApiErrorBody::default(),
                "POST /apps/a/dynos/d/actions/stop",
                None,
                TokenSource::Env,
            )
        };
        assert!(gone(&e(404)));
        for status in [400, 403, 409, 422, 429, 500] {
            assert!(!gone(&e(status)), "{status}");
        }
        assert!(!gone(&Error::other("no status")));
    }
}
