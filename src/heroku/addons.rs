//! Add-ons seen from the cutover: every attachment of an add-on on every app, and the add-ons
//! that start or scale dynos (or write to the database) behind the tool's back.

use super::app::{seg, Addon, Attachment};
use super::client::{Client, Request};
use crate::error::Result;

impl Client {
    /// Every attachment of an add-on (id or global name), on every app it is attached to
    /// (`GET /addons/{addon}/addon-attachments`, all pages). `App::attachments` only lists
    /// those of one app.
    pub async fn addon_attachments(&self, addon: &str) -> Result<Vec<Attachment>> {
        self.list(&Request::get(format!(
            "/addons/{}/addon-attachments",
            seg(addon)
        )))
        .await
    }
}

/// Add-on services known to start or scale dynos, or to write to the database, without the
/// tool: `(service name, what it does)`. A best-effort list of the services' slugs on the
/// Elements marketplace (`heroku addons:create SLUG`); an add-on unknown here is not
/// detected, which is why the cutover's safety rests on the fence in the database.
pub const DYNO_STARTERS: &[(&str, &str)] = &[
    (
        "scheduler",
        "Heroku Scheduler: starts one-off dynos (scheduler.N) on a schedule, also in maintenance mode",
    ),
    (
        "advanced-scheduler",
        "Advanced Scheduler: starts one-off dynos on a schedule",
    ),
    (
        "crontogo",
        "Cron To Go: starts one-off dynos on a schedule",
    ),
    (
        "process-scheduler",
        "Process Scheduler: scales process types up and down on a schedule",
    ),
    (
        "temporize",
        "Temporize: scheduled jobs and callbacks that make the app run work",
    ),
    (
        "hirefire",
        "HireFire: autoscaler; scales dynos through the Platform API and may scale back to a formation it cached up to 10 minutes earlier",
    ),
    (
        "hirefire-resource",
        "HireFire: autoscaler; scales dynos through the Platform API and may scale back to a formation it cached up to 10 minutes earlier",
    ),
    (
        "rails-autoscale",
        "Rails Autoscale: autoscaler; scales dynos through the Platform API",
    ),
    (
        "railsautoscale",
        "Rails Autoscale: autoscaler; scales dynos through the Platform API",
    ),
    (
        "judoscale",
        "Judoscale: autoscaler; scales dynos through the Platform API",
    ),
    (
        "adept-scale",
        "Adept Scale: autoscaler; scales dynos through the Platform API",
    ),
    (
        "herokuconnect",
        "Heroku Connect: syncs Salesforce with the database; an external writer that scaling dynos does not stop",
    ),
];

/// The add-ons among `addons` that start or scale dynos (or write to the database) behind the
/// tool's back, in the given order, as `(add-on name, service, what it does)`. Matched on
/// `addon_service.name` (case-insensitive), or on the plan's service part
/// (`scheduler:standard`) when the service name is missing.
pub fn dyno_starters(addons: &[Addon]) -> Vec<(String, String, &'static str)> {
    addons
        .iter()
        .filter_map(|a| {
            let service = if a.addon_service.name.is_empty() {
                a.plan.name.split(':').next().unwrap_or_default()
            } else {
                a.addon_service.name.as_str()
            };
            DYNO_STARTERS
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(service.trim()))
                .map(|(s, does)| (a.name.clone(), (*s).to_string(), *does))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::heroku::app::Named;

    fn addon(name: &str, service: &str, plan: &str) -> Addon {
        Addon {
            id: format!("id-{name}"),
            name: name.into(),
            plan: Named {
                id: String::new(),
                name: plan.into(),
            },
            addon_service: Named {
                id: String::new(),
                name: service.into(),
            },
            app: Named::default(),
        }
    }

    #[test]
    fn finds_the_addons_that_start_dynos() {
        // (service, plan, detected service)
        let table: &[(&str, &str, Option<&str>)] = &[
            ("scheduler", "scheduler:standard", Some("scheduler")),
            (
                "advanced-scheduler",
                "advanced-scheduler:free",
                Some("advanced-scheduler"),
            ),
            ("crontogo", "crontogo:basic", Some("crontogo")),
            (
                "process-scheduler",
                "process-scheduler:basic",
                Some("process-scheduler"),
            ),
            ("temporize", "temporize:developer", Some("temporize")),
            ("hirefire", "hirefire:standard", Some("hirefire")),
            (
                "hirefire-resource",
                "hirefire-resource:standard",
                Some("hirefire-resource"),
            ),
            (
                "rails-autoscale",
                "rails-autoscale:bronze",
                Some("rails-autoscale"),
            ),
            (
                "railsautoscale",
                "railsautoscale:bronze",
                Some("railsautoscale"),
            ),
            ("judoscale", "judoscale:basic", Some("judoscale")),
            ("adept-scale", "adept-scale:basic", Some("adept-scale")),
            ("herokuconnect", "herokuconnect:demo", Some("herokuconnect")),
            ("Scheduler", "scheduler:standard", Some("scheduler")),
            // No service name: the plan's service part.
            ("", "scheduler:standard", Some("scheduler")),
            // Not dyno starters.
            ("heroku-postgresql", "heroku-postgresql:standard-0", None),
            ("heroku-redis", "heroku-redis:mini", None),
            ("papertrail", "papertrail:choklad", None),
            ("scheduler-like", "scheduler-like:x", None),
            ("", "", None),
        ];
        for (service, plan, want) in table {
            let got = dyno_starters(&[addon("a-1", service, plan)]);
            assert_eq!(
                got.first().map(|(_, s, _)| s.as_str()),
                *want,
                "{service} / {plan}"
            );
            if let Some((addon, _, does)) = got.first() {
                assert_eq!(addon, "a-1");
                assert!(!does.is_empty());
            }
        }
        // Several, in the app's order.
        let got = dyno_starters(&[
            addon("db", "heroku-postgresql", "heroku-postgresql:standard-0"),
            addon("jobs", "scheduler", "scheduler:standard"),
            addon("scale", "judoscale", "judoscale:basic"),
        ]);
        let names: Vec<&str> = got.iter().map(|(a, _, _)| a.as_str()).collect();
        assert_eq!(names, ["jobs", "scale"]);
    }
}
