//! One Heroku app through the Platform API: maintenance, formation, dynos, config vars, add-ons,
//! attachments and releases; and which add-on is the app's Heroku Postgres database.

use std::collections::BTreeMap;

use reqwest::Method;
use serde::{Deserialize, Serialize};

use super::client::{Api, Client, Request};
use crate::error::{Error, Result};

/// The add-on service of Heroku Postgres.
pub const POSTGRES_SERVICE: &str = "heroku-postgresql";

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
    /// `crashed`, `down`, `idle`, `starting` or `up`.
    pub state: String,
    /// The release it runs.
    #[serde(default)]
    pub release: Option<ReleaseRef>,
}

impl Dyno {
    /// True unless the dyno is known to be stopped: every state but `down` and `crashed` may
    /// still be talking to the database.
    pub fn may_run(&self) -> bool {
        !matches!(self.state.as_str(), "down" | "crashed")
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

/// Picks the app's Heroku Postgres add-on: `--addon NAME` when given (an add-on name or one of
/// its attachment names), else the add-on attached as `DATABASE`, else the only Postgres
/// add-on. Pure, for tests.
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
    match (attached.as_slice(), pg.as_slice()) {
        ([a], _) => Ok(Database {
            addon: (**a).clone(),
            database_attachment: database_attachment(a),
        }),
        ([], [only]) => Ok(Database {
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

    /// Stops one dyno (one-off dynos are not part of the formation).
    pub async fn stop_dyno(&self, dyno: &Dyno) -> Result<()> {
        let _: serde_json::Value = self
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
            .await?;
        Ok(())
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
            &[pg1],
            &[att("p1", "HEROKU2RDS_PREVIOUS_DATABASE")],
            None,
        )
        .expect("only");
        assert!(d.database_attachment.is_none());
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
        };
        assert!(d("up").may_run() && d("starting").may_run() && d("idle").may_run());
        assert!(!d("down").may_run() && !d("crashed").may_run());
    }
}
