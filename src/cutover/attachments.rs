//! Every attachment of the Heroku Postgres add-on, on every app, and what the cutover does with
//! each (pure, with table tests). An attachment left pointing at the Heroku database after the
//! switch is a writer the migration does not see: the server-side pooler
//! (`DATABASE_CONNECTION_POOL`, namespace `connection-pooling:default`), colour aliases
//! (`HEROKU_POSTGRESQL_<COLOR>`), credential attachments (`credential:NAME`) and other apps
//! attached to the same add-on. By default each of them refuses the cutover, named with its fix;
//! with consent the cutover freezes those apps too and points each variable at the target.

use super::*;

/// What an attachment is, for the plan and the decisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `DATABASE` on the app being migrated.
    Database,
    /// Heroku's server-side connection pooler.
    Pooler,
    /// A credential attachment (another role's URL for the same database).
    Credential,
    /// Another name on an app (a colour alias such as `HEROKU_POSTGRESQL_RED`).
    Alias,
    /// `DATABASE` (or any plain name) on another app.
    OtherApp,
}

impl Kind {
    /// A few words for people.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Database => "the app's database",
            Kind::Pooler => "Heroku's connection pooler",
            Kind::Credential => "a credential attachment",
            Kind::Alias => "an alias of the database",
            Kind::OtherApp => "another app's attachment",
        }
    }
}

/// What the user allowed the cutover to move besides the app's `DATABASE`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consent {
    /// `--include-app`: other apps attached to the add-on, frozen and switched together.
    pub include_apps: Vec<String>,
    /// `--move-pooler`: point the pooler's variable at the target (or `--pooler-url`).
    pub move_pooler: bool,
    /// `--move-aliases`: point colour aliases and credential attachments at the target.
    pub move_aliases: bool,
}

/// One attachment the cutover moves: after the switch `NAME_URL` on `app` is the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Move {
    /// The app that holds the attachment.
    pub app: String,
    /// The attachment's id (what DELETE takes).
    pub attachment_id: String,
    /// Its name; the variable is `NAME_URL`.
    pub name: String,
    /// What it is.
    pub kind: Kind,
}

impl Move {
    /// The config var it sets.
    pub fn var(&self) -> String {
        format!("{}_URL", self.name)
    }
}

/// Classifies one attachment of the add-on seen from `app`. None: the tool's own
/// [`PREVIOUS_ATTACHMENT`].
pub fn kind_of(app: &str, a: &Attachment) -> Option<Kind> {
    let ns = a.namespace.as_deref().unwrap_or("");
    if a.name == PREVIOUS_ATTACHMENT && a.app.name == app {
        return None;
    }
    Some(if ns.starts_with("connection-pooling") {
        Kind::Pooler
    } else if ns.starts_with("credential") {
        Kind::Credential
    } else if a.app.name != app {
        Kind::OtherApp
    } else if a.name == "DATABASE" {
        Kind::Database
    } else {
        Kind::Alias
    })
}

/// Decides, for every attachment of the add-on, whether the cutover moves it or refuses. Pure.
pub fn decide(
    app: &str,
    attachments: &[Attachment],
    consent: &Consent,
) -> (Vec<Move>, Vec<Blocker>) {
    let mut moves = Vec::new();
    let mut blockers = Vec::new();
    for a in attachments {
        let Some(kind) = kind_of(app, a) else {
            continue;
        };
        let other_app = a.app.name != app;
        let app_ok = !other_app || consent.include_apps.contains(&a.app.name);
        let kind_ok = match kind {
            Kind::Database | Kind::OtherApp => true,
            Kind::Pooler => consent.move_pooler,
            Kind::Credential | Kind::Alias => consent.move_aliases,
        };
        if app_ok && kind_ok {
            moves.push(Move {
                app: a.app.name.clone(),
                attachment_id: a.id.clone(),
                name: a.name.clone(),
                kind,
            });
            continue;
        }
        let var = format!("{}_URL", a.name);
        let mut fixes = Vec::new();
        if !app_ok {
            fixes.push(format!(
                "pass --include-app {} (that app is then frozen and switched together with {app})",
                a.app.name
            ));
        }
        if !kind_ok {
            fixes.push(match kind {
                Kind::Pooler => "pass --move-pooler (its variable then points at the target, or at --pooler-url: an RDS Proxy or PgBouncer in front of it)".to_string(),
                _ => "pass --move-aliases (the variable then points at the target)".to_string(),
            });
        }
        let detach = format!(
            "or detach it first if nothing uses it: `heroku addons:detach {} -a {}`",
            a.name, a.app.name
        );
        blockers.push(Blocker {
            code: "attachment-not-moved",
            message: format!(
                "app {} reaches the Heroku database as {var} ({}{}): after the switch it would keep writing there",
                a.app.name,
                kind.describe(),
                a.namespace
                    .as_deref()
                    .map(|n| format!(", namespace {n}"))
                    .unwrap_or_default()
            ),
            fix: format!("{}, {detach}", fixes.join(" and ")),
        });
    }
    for wanted in &consent.include_apps {
        if !moves.iter().any(|m| m.app == *wanted) {
            blockers.push(Blocker {
                code: "include-app-unattached",
                message: format!(
                    "--include-app {wanted}: that app has no attachment of the Heroku database"
                ),
                fix: "leave it out (only apps attached to the add-on are switched)".into(),
            });
        }
    }
    (moves, blockers)
}

/// The apps the cutover freezes and switches: `app` first, then the others with moves.
pub fn apps_of(app: &str, moves: &[Move]) -> Vec<String> {
    let mut out = vec![app.to_string()];
    for m in moves {
        if !out.contains(&m.app) {
            out.push(m.app.clone());
        }
    }
    out
}

/// One line per attachment for the plan and `--dry-run`.
pub fn plan_lines(app: &str, attachments: &[Attachment], moves: &[Move]) -> Vec<String> {
    attachments
        .iter()
        .filter_map(|a| {
            let kind = kind_of(app, a)?;
            let moved = moves.iter().any(|m| m.attachment_id == a.id);
            Some(format!(
                "attachment {}_URL on app {} ({}): {}",
                a.name,
                a.app.name,
                kind.describe(),
                if moved {
                    if kind == Kind::Pooler {
                        "detached; the variable is set to the pooler URL (--pooler-url, default the target)"
                    } else {
                        "detached; the variable is set to the target"
                    }
                } else {
                    "NOT moved: the cutover refuses (see below)"
                }
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heroku::app::{AttachedAddon, Named};

    fn att(app: &str, name: &str, ns: Option<&str>) -> Attachment {
        Attachment {
            id: format!("{app}-{name}"),
            name: name.into(),
            addon: AttachedAddon {
                id: "addon-1".into(),
                name: "postgresql-x".into(),
            },
            app: Named {
                id: format!("id-{app}"),
                name: app.into(),
            },
            namespace: ns.map(String::from),
        }
    }

    #[test]
    fn kinds() {
        let cases = [
            (att("shop", "DATABASE", None), Some(Kind::Database)),
            (att("shop", PREVIOUS_ATTACHMENT, None), None),
            (
                att(
                    "shop",
                    "DATABASE_CONNECTION_POOL",
                    Some("connection-pooling:default"),
                ),
                Some(Kind::Pooler),
            ),
            (
                att("shop", "ANALYST", Some("credential:analyst")),
                Some(Kind::Credential),
            ),
            (
                att("shop", "HEROKU_POSTGRESQL_RED", None),
                Some(Kind::Alias),
            ),
            (att("admin", "DATABASE", None), Some(Kind::OtherApp)),
            // The pooler of another app is still the pooler.
            (
                att(
                    "admin",
                    "DATABASE_CONNECTION_POOL",
                    Some("connection-pooling:default"),
                ),
                Some(Kind::Pooler),
            ),
            // Another app's attachment with the tool's name is not the tool's.
            (
                att("admin", PREVIOUS_ATTACHMENT, None),
                Some(Kind::OtherApp),
            ),
        ];
        for (a, want) in cases {
            assert_eq!(kind_of("shop", &a), want, "{a:?}");
        }
    }

    #[test]
    fn refuses_each_unconsented_attachment_and_moves_with_consent() {
        let all = vec![
            att("shop", "DATABASE", None),
            att("shop", PREVIOUS_ATTACHMENT, None),
            att(
                "shop",
                "DATABASE_CONNECTION_POOL",
                Some("connection-pooling:default"),
            ),
            att("shop", "HEROKU_POSTGRESQL_RED", None),
            att("shop", "ANALYST", Some("credential:analyst")),
            att("admin", "DATABASE", None),
        ];
        let (moves, blockers) = decide("shop", &all, &Consent::default());
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].var(), "DATABASE_URL");
        let text: Vec<String> = blockers
            .iter()
            .map(|b| format!("{} | {}", b.message, b.fix))
            .collect();
        assert_eq!(blockers.len(), 4, "{text:#?}");
        for (needle, fix) in [
            ("DATABASE_CONNECTION_POOL_URL", "--move-pooler"),
            ("HEROKU_POSTGRESQL_RED_URL", "--move-aliases"),
            ("ANALYST_URL", "--move-aliases"),
            ("app admin reaches", "--include-app admin"),
        ] {
            assert!(
                text.iter().any(|t| t.contains(needle) && t.contains(fix)),
                "{needle} / {fix}: {text:#?}"
            );
        }
        let consent = Consent {
            include_apps: vec!["admin".into()],
            move_pooler: true,
            move_aliases: true,
        };
        let (moves, blockers) = decide("shop", &all, &consent);
        assert!(blockers.is_empty(), "{blockers:?}");
        assert_eq!(moves.len(), 5);
        assert_eq!(apps_of("shop", &moves), vec!["shop", "admin"]);
        // A pooler on another app needs both consents.
        let pool = vec![att(
            "admin",
            "DATABASE_CONNECTION_POOL",
            Some("connection-pooling:default"),
        )];
        let only_pooler = Consent {
            move_pooler: true,
            ..Consent::default()
        };
        let (m, b) = decide("shop", &pool, &only_pooler);
        assert!(m.is_empty() && b.len() == 1 && b[0].fix.contains("--include-app admin"));
        // An included app without any attachment is named.
        let (_, b) = decide(
            "shop",
            &[att("shop", "DATABASE", None)],
            &Consent {
                include_apps: vec!["ghost".into()],
                ..Consent::default()
            },
        );
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].code, "include-app-unattached");
    }
}
