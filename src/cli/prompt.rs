//! Questions asked on the terminal before destructive steps. Without a terminal every question
//! is refused with the flag that answers it in advance (`--yes`).

use std::io::{BufRead, IsTerminal, Write};

use crate::error::{Error, Result};

/// Prints `prompt` on the terminal and returns the answer; without a terminal, refuses with
/// "`needs` and there is no terminal to ask on".
fn ask(needs: &str, prompt: &str) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(
            Error::usage(format!("{needs} and there is no terminal to ask on"))
                .with_fix("run it in a terminal, or pass --yes to confirm in advance"),
        );
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Error::other("reading the answer").with_source(e))?;
    Ok(answer.trim().to_string())
}

/// Shows the cutover plan and asks for the app's name.
pub fn confirm_cutover(app: &str, plan: &[String]) -> Result<bool> {
    if std::io::stdin().is_terminal() {
        eprintln!("heroku2rds will switch app {app}:");
        for (i, line) in plan.iter().enumerate() {
            eprintln!("  {:>2}. {line}", i);
        }
    }
    let answer = ask(
        "cutover needs confirmation",
        &format!("type the app name ({app}) to proceed: "),
    )?;
    Ok(answer == app)
}

/// Asks yes/no on a terminal; refuses without one.
pub fn confirm(question: &str, command: &str) -> Result<()> {
    let answer = ask(
        &format!("{command} changes your AWS account"),
        &format!("{question} [y/N] "),
    )?;
    if matches!(answer.as_str(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(Error::usage(format!(
            "{command} cancelled; nothing was changed"
        )))
    }
}

/// Asks for the migration's name to be typed before deleting the database.
pub fn confirm_typed(name: &str) -> Result<()> {
    let answer = ask(
        "teardown --delete-target deletes the RDS database",
        &format!(
            "This deletes the RDS database of migration {name} (a final snapshot is kept) and the \
             archive bucket.\nType the migration's name to confirm: "
        ),
    )?;
    if answer == name {
        Ok(())
    } else {
        Err(Error::usage(
            "teardown cancelled (the name did not match); nothing was changed",
        ))
    }
}
