//! Schema copy through pg_dump: the pre-data section (types, tables, functions) is restored before
//! the data, the post-data section (indexes, constraints, triggers) after it, item by item so that
//! the work runs in parallel and resumes after a crash.

use std::process::Stdio;

use tokio::process::Command;

use super::catalog::TOOL_SCHEMA;
use super::conn::ConnSpec;
use crate::error::{Error, Kind, Result};

/// The schema of the source as two SQL scripts.
#[derive(Debug, Clone)]
pub struct SchemaScripts {
    /// Restored before the data, in one transaction.
    pub pre_data: String,
    /// Restored after the data, split into [`PostDataItem`]s.
    pub post_data: String,
}

/// The major version of `pg_dump` on PATH, or None when it is missing.
pub async fn pg_dump_major() -> Option<u32> {
    let out = Command::new("pg_dump")
        .arg("--version")
        .output()
        .await
        .ok()?;
    parse_tool_major(&String::from_utf8_lossy(&out.stdout))
}

/// `pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` -> 15.
pub fn parse_tool_major(s: &str) -> Option<u32> {
    let after = s.split(')').nth(1)?.trim();
    let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Dumps the source schema (no data, no owners, no privileges, the tool's schema left out).
pub async fn dump(source: &ConnSpec) -> Result<SchemaScripts> {
    let dir = std::env::temp_dir().join(format!(
        "heroku2rds-schema-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("schema.dump");
    let result = async {
        run_tool(
            Command::new("pg_dump")
                .args([
                    "--schema-only",
                    "--format=custom",
                    "--no-owner",
                    "--no-acl",
                    "--no-publications",
                    "--no-subscriptions",
                    "--no-security-labels",
                    "--lock-wait-timeout=60000",
                ])
                .arg(format!("--exclude-schema={TOOL_SCHEMA}"))
                .arg("--file")
                .arg(&file)
                .arg("--dbname")
                .arg(source.libpq_conninfo())
                .envs(source.child_env()),
            "pg_dump of the source schema",
        )
        .await?;
        // Comments on extensions belong to the extension's owner: a non-superuser target (the
        // RDS master user) cannot set them, so they are left out of the restore list.
        let toc = run_tool(
            Command::new("pg_restore").arg("--list").arg(&file),
            "listing the schema dump",
        )
        .await?;
        let list = dir.join("schema.list");
        let kept: Vec<&str> = toc
            .lines()
            .filter(|l| !l.contains(" COMMENT - EXTENSION "))
            // The capture and fence triggers this tool installs on the source are not the application's.
            .filter(|l| {
                !(l.contains(" TRIGGER ")
                    && (l.contains(" heroku2rds_capture_") || l.contains(" heroku2rds_fence")))
            })
            .collect();
        std::fs::write(&list, kept.join("\n"))?;
        let mut sections = Vec::new();
        for section in ["pre-data", "post-data"] {
            let out = run_tool(
                Command::new("pg_restore")
                    .arg(format!("--section={section}"))
                    .args(["--no-owner", "--no-acl", "--file", "-", "--use-list"])
                    .arg(&list)
                    .arg(&file),
                "pg_restore of the schema dump",
            )
            .await?;
            sections.push(strip_meta_commands(&out));
        }
        let post_data = sections.pop().unwrap_or_default();
        let pre_data = sections.pop().unwrap_or_default();
        Ok(SchemaScripts {
            pre_data,
            post_data,
        })
    }
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id() as u64);
    h.finish()
}

async fn run_tool(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd.stdin(Stdio::null()).output().await.map_err(|e| {
        Error::other(format!("{what}: cannot run it")).with_source(e)
            .with_fix("install the PostgreSQL client tools (pg_dump, pg_restore) of the source's major version or newer")
    })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // A child process reports only text: it is read here, once, into the error's kind.
        let kind = if stderr.contains("permission denied") {
            Kind::Refused
        } else {
            Kind::Other
        };
        return Err(Error::new(
            kind,
            format!("{what} failed: {}", stderr.trim()),
        ));
    }
    String::from_utf8(out.stdout)
        .map_err(|_| Error::other(format!("{what} printed non-UTF-8 output")))
}

/// Drops psql meta-commands (`\restrict` / `\unrestrict`, added by recent pg_dump releases): the
/// scripts run through a server connection, not psql.
fn strip_meta_commands(script: &str) -> String {
    script
        .lines()
        .filter(|l| !(l.starts_with("\\restrict ") || l.starts_with("\\unrestrict ")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One post-data object (an index, a constraint, a trigger, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostDataItem {
    /// Position in the script: the item's identity in the state tables.
    pub ordinal: i32,
    /// pg_dump's object type, e.g. `INDEX`, `FK CONSTRAINT`, `TRIGGER`.
    pub object_type: String,
    /// The `-- Name: ...` header line.
    pub header: String,
    /// SQL to run.
    pub sql: String,
}

impl PostDataItem {
    /// The SQL to run: foreign keys on plain tables are added NOT VALID (see replicate.rs).
    /// Partitioned tables (no `ONLY` in pg_dump's statement) do not support NOT VALID foreign keys.
    pub fn sql_to_run(&self) -> String {
        if self.object_type == "FK CONSTRAINT"
            && self.sql.trim_start().starts_with("ALTER TABLE ONLY ")
        {
            let body = self.sql.trim_end();
            if let Some(stmt) = body.strip_suffix(';') {
                return format!("{stmt} NOT VALID;\n");
            }
        }
        self.sql.clone()
    }

    /// Items of a lower wave run before items of a higher wave: indexes and key constraints
    /// first, then index attachments to partitioned parents, then everything that depends on
    /// them (foreign keys, triggers, rules, policies, comments).
    pub fn wave(&self) -> u8 {
        match self.object_type.as_str() {
            "INDEX" | "CONSTRAINT" => 0,
            "INDEX ATTACH" => 1,
            _ => 2,
        }
    }
}

impl PostDataItem {
    /// The object as people write it, e.g. `constraint t_pkey on public.t`, `index i on
    /// public.t`, `trigger audit on public.orders`, for messages (the header stays the item's
    /// record in the state tables).
    pub fn label(&self) -> String {
        let field = |key: &str| {
            self.header
                .split("; ")
                .find_map(|f| f.strip_prefix(key))
                .filter(|v| !v.is_empty() && *v != "-")
        };
        let name = field("Name: ").unwrap_or(self.header.as_str());
        let schema = field("Schema: ");
        let qualified = |n: &str| match schema {
            Some(s) => format!("{s}.{n}"),
            None => n.to_string(),
        };
        let kind = match self.object_type.as_str() {
            "FK CONSTRAINT" => "foreign key".to_string(),
            "INDEX ATTACH" => "index attachment".to_string(),
            other => other.to_lowercase(),
        };
        match self.object_type.as_str() {
            // pg_restore names these "<table> <object>".
            "CONSTRAINT" | "FK CONSTRAINT" | "TRIGGER" | "RULE" | "POLICY" => {
                match name.split_once(' ') {
                    Some((table, object)) => format!("{kind} {object} on {}", qualified(table)),
                    None => format!("{kind} {}", qualified(name)),
                }
            }
            "INDEX" => match item_table(self) {
                Some((s, t)) => format!("index {name} on {s}.{t}"),
                None => format!("index {}", qualified(name)),
            },
            // "COLUMN t.c", "TABLE t", ...
            "COMMENT" => match name.split_once(' ') {
                Some((what, object)) => {
                    format!("comment on {} {}", what.to_lowercase(), qualified(object))
                }
                None => format!("comment on {}", qualified(name)),
            },
            _ => format!("{kind} {}", qualified(name)),
        }
    }
}

/// The table an index or a key constraint is built on, as (schema, table), parsed from pg_dump's
/// statement; None for other items and for anything unexpected.
pub fn item_table(item: &PostDataItem) -> Option<(String, String)> {
    let sql = item.sql.trim_start();
    let rest = match item.object_type.as_str() {
        "INDEX" => {
            let rest = sql.strip_prefix("CREATE ")?;
            let rest = rest.strip_prefix("UNIQUE ").unwrap_or(rest);
            let rest = rest.strip_prefix("INDEX ")?;
            let (_, rest) = parse_ident(rest)?;
            rest.strip_prefix(" ON ")?
        }
        "CONSTRAINT" => sql.strip_prefix("ALTER TABLE ")?,
        _ => return None,
    };
    let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
    let (schema, rest) = parse_ident(rest)?;
    let (table, _) = parse_ident(rest.strip_prefix('.')?)?;
    Some((schema, table))
}

/// Parses one SQL identifier (quoted or not) at the start of `s`.
fn parse_ident(s: &str) -> Option<(String, &str)> {
    if let Some(body) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|&(_, n)| n) == Some('"') {
                    out.push('"');
                    chars.next();
                } else {
                    return Some((out, &body[i + 1..]));
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_string(), &s[end..]))
    }
}

/// Splits a post-data script into items at pg_restore's `-- Name: ...; Type: ...;` headers. The
/// settings at the top of the script are returned separately: each item runs after them.
pub fn split_post_data(script: &str) -> (String, Vec<PostDataItem>) {
    let mut preamble = String::new();
    let mut items: Vec<PostDataItem> = Vec::new();
    for line in script.lines() {
        if let Some(object_type) = header_type(line) {
            items.push(PostDataItem {
                ordinal: items.len() as i32,
                object_type,
                header: line.trim_start_matches("-- ").to_string(),
                sql: String::new(),
            });
            continue;
        }
        // pg_restore's own comment lines (`--`, `-- ...`) separate items; SQL never starts a
        // line that way in post-data objects.
        if line == "--" || line.starts_with("-- ") {
            continue;
        }
        match items.last_mut() {
            Some(item) => {
                item.sql.push_str(line);
                item.sql.push('\n');
            }
            None => {
                preamble.push_str(line);
                preamble.push('\n');
            }
        }
    }
    items.retain(|i| !i.sql.trim().is_empty());
    (preamble, items)
}

fn header_type(line: &str) -> Option<String> {
    let rest = line.strip_prefix("-- Name: ")?;
    let t = rest.split("; Type: ").nth(1)?;
    let t = t.split("; Schema: ").next()?;
    Some(t.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_versions() {
        assert_eq!(
            parse_tool_major("pg_dump (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(parse_tool_major("pg_dump (PostgreSQL) 17.2\n"), Some(17));
        assert_eq!(parse_tool_major("garbage"), None);
    }

    #[test]
    fn splits_post_data_into_waves() {
        let script = "--\n-- PostgreSQL database dump\n--\n\nSET statement_timeout = 0;\n\
            SELECT pg_catalog.set_config('search_path', '', false);\n\n\
            --\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\n\
            ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n\n\n\
            --\n-- Name: p_1_pkey; Type: INDEX ATTACH; Schema: public; Owner: -\n--\n\n\
            ALTER INDEX public.p_pkey ATTACH PARTITION public.p_1_pkey;\n\n\
            --\n-- Name: u u_t_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -\n--\n\n\
            ALTER TABLE ONLY public.u\n    ADD CONSTRAINT u_t_fkey FOREIGN KEY (t) REFERENCES public.t(id);\n\n\
            --\n-- PostgreSQL database dump complete\n--\n\n";
        let (pre, items) = split_post_data(script);
        assert!(pre.contains("SET statement_timeout = 0;"));
        assert!(pre.contains("set_config('search_path'"));
        let got: Vec<(&str, u8)> = items
            .iter()
            .map(|i| (i.object_type.as_str(), i.wave()))
            .collect();
        assert_eq!(
            got,
            vec![("CONSTRAINT", 0), ("INDEX ATTACH", 1), ("FK CONSTRAINT", 2)]
        );
        assert!(items[0]
            .sql
            .contains("ADD CONSTRAINT t_pkey PRIMARY KEY (id);"));
        assert!(!items[2].sql.contains("dump complete"));
        assert_eq!(items[2].ordinal, 2);
    }

    #[test]
    fn labels_name_objects_the_way_users_write_them() {
        let item = |t: &str, header: &str, sql: &str| PostDataItem {
            ordinal: 0,
            object_type: t.into(),
            header: header.into(),
            sql: sql.into(),
        };
        let cases = [
            (
                item(
                    "CONSTRAINT",
                    "Name: pgbench_accounts pgbench_accounts_pkey; Type: CONSTRAINT; Schema: public; Owner: -",
                    "ALTER TABLE ONLY public.pgbench_accounts\n    ADD CONSTRAINT pgbench_accounts_pkey PRIMARY KEY (aid);\n",
                ),
                "constraint pgbench_accounts_pkey on public.pgbench_accounts",
            ),
            (
                item(
                    "INDEX",
                    "Name: i_a; Type: INDEX; Schema: public; Owner: app",
                    "CREATE INDEX i_a ON public.t USING btree (a);\n",
                ),
                "index i_a on public.t",
            ),
            (
                item(
                    "FK CONSTRAINT",
                    "Name: u u_t_fkey; Type: FK CONSTRAINT; Schema: public; Owner: -",
                    "ALTER TABLE ONLY public.u ADD CONSTRAINT u_t_fkey FOREIGN KEY (t) REFERENCES public.t(id);\n",
                ),
                "foreign key u_t_fkey on public.u",
            ),
            (
                item(
                    "TRIGGER",
                    "Name: orders audit; Type: TRIGGER; Schema: sales; Owner: -",
                    "CREATE TRIGGER audit ...;\n",
                ),
                "trigger audit on sales.orders",
            ),
            (
                item(
                    "INDEX ATTACH",
                    "Name: p_1_pkey; Type: INDEX ATTACH; Schema: public; Owner: -",
                    "ALTER INDEX public.p_pkey ATTACH PARTITION public.p_1_pkey;\n",
                ),
                "index attachment public.p_1_pkey",
            ),
            (
                item(
                    "COMMENT",
                    "Name: COLUMN t.c; Type: COMMENT; Schema: public; Owner: -",
                    "COMMENT ON COLUMN public.t.c IS 'x';\n",
                ),
                "comment on column public.t.c",
            ),
            (
                item(
                    "INDEX",
                    "Name: odd; Type: INDEX; Schema: -; Owner: -",
                    "unexpected",
                ),
                "index odd",
            ),
        ];
        for (item, want) in cases {
            assert_eq!(item.label(), want, "{}", item.header);
        }
        // Labels come from the headers split_post_data keeps.
        let (_, items) = split_post_data(
            "--\n-- Name: t t_pkey; Type: CONSTRAINT; Schema: public; Owner: -\n--\n\n\
             ALTER TABLE ONLY public.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n",
        );
        assert_eq!(items[0].label(), "constraint t_pkey on public.t");
    }

    #[test]
    fn finds_the_table_of_indexes_and_constraints() {
        let item = |t: &str, sql: &str| PostDataItem {
            ordinal: 0,
            object_type: t.into(),
            header: String::new(),
            sql: sql.into(),
        };
        let cases = [
            ("INDEX", "CREATE INDEX i ON public.t USING btree (a);", Some(("public", "t"))),
            ("INDEX", "CREATE UNIQUE INDEX \"x ON y\" ON ONLY \"Sales Data\".\"Order \"\"Lines\"\"\" USING btree (a);", Some(("Sales Data", "Order \"Lines\""))),
            ("CONSTRAINT", "ALTER TABLE ONLY billing.invoices\n    ADD CONSTRAINT p PRIMARY KEY (id);", Some(("billing", "invoices"))),
            ("CONSTRAINT", "ALTER TABLE public.events\n    ADD CONSTRAINT p PRIMARY KEY (id);", Some(("public", "events"))),
            ("FK CONSTRAINT", "ALTER TABLE ONLY public.a ADD CONSTRAINT f FOREIGN KEY (b) REFERENCES public.b(id);", None),
            ("INDEX", "CREATE INDEX broken", None),
        ];
        for (t, sql, want) in cases {
            let got = item_table(&item(t, sql));
            assert_eq!(
                got,
                want.map(|(a, b)| (a.to_string(), b.to_string())),
                "{sql}"
            );
        }
    }

    #[test]
    fn strips_restrict_lines_only() {
        let s = "\\restrict abc\nCREATE TABLE t();\nSELECT '\\restrict x';\n\\unrestrict abc\n";
        assert_eq!(
            strip_meta_commands(s),
            "CREATE TABLE t();\nSELECT '\\restrict x';"
        );
    }
}
