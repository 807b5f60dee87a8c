//! `cutover`: switches a Heroku app to the target, with rollback before the point of no return.

use std::time::Duration;

use super::{heroku_config, print_json};
use crate::cli::render::{self, Mode};
use crate::cli::{prompt, signals, CutoverArgs};
use crate::cutover;
use crate::error::{Error, Result};
use crate::heroku::client::Client;
use crate::pg::conn::ConnSpec;

pub async fn run(a: CutoverArgs) -> Result<u8> {
    let target = ConnSpec::parse(&a.target.target, "target")?;
    let app_url = a
        .target_app_url
        .clone()
        .unwrap_or_else(|| a.target.target.clone());
    cutover::check_app_url(&app_url)?;
    if let Some(u) = &a.timing.pooler_url {
        cutover::check_app_url(u)?;
    }
    let source = a
        .source
        .as_deref()
        .map(|s| ConnSpec::parse(s, "source"))
        .transpose()?;
    if a.app.is_empty() {
        return Err(Error::usage("--app is empty"));
    }
    let client = Client::new(heroku_config()?)?;
    let secs = Duration::from_secs;
    let opts = cutover::Options {
        app: a.app.clone(),
        addon: a.addon.clone(),
        source,
        target,
        app_url,
        dry_run: a.dry_run,
        session_grace: secs(a.timing.session_grace_s),
        max_lag: secs(a.timing.max_lag_s),
        dyno_timeout: secs(a.timing.dyno_timeout_s),
        drain_timeout: secs(a.timing.drain_timeout_s),
        release_timeout: secs(a.timing.release_timeout_s),
        jobs: a.jobs.max(1),
        consent: a.timing.consent(),
        pooler_url: a.timing.pooler_url.clone(),
    };
    let yes = a.yes;
    let app = a.app.clone();
    let mut confirm = move |plan: &[String]| -> Result<bool> {
        if yes {
            Ok(true)
        } else {
            prompt::confirm_cutover(&app, plan)
        }
    };
    // Steps on stderr as they happen; stdout holds the report.
    let sink = render::sink(Mode::detect(false));
    let report = cutover::run(
        &client,
        &opts,
        &mut confirm,
        &signals::cutover_signals(),
        sink.as_ref(),
    )
    .await?;
    drop(sink);
    if a.json {
        print_json(&report)?;
    } else {
        print!("{}", cutover::render(&report));
    }
    Ok(0)
}
