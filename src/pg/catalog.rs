//! What the source holds: the tables to replicate, their columns, keys and sizes.

use tokio_postgres::Client;

use super::conn::{query_error, quote_ident};
use crate::error::Result;

/// The schema the tool keeps its own objects in, on both servers.
pub const TOOL_SCHEMA: &str = "heroku2rds";

/// A column of a replicated table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Column {
    /// Column name.
    pub name: String,
    /// Type as `format_type` prints it.
    pub type_name: String,
    /// `GENERATED ALWAYS AS (...) STORED`: computed by the target, never copied.
    pub generated: bool,
    /// NOT NULL.
    pub not_null: bool,
}

/// How rows of a table are identified.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyKind {
    /// The primary key.
    PrimaryKey,
    /// A unique index over NOT NULL columns (named).
    UniqueIndex(String),
    /// No usable key.
    None,
}

/// A table whose rows are replicated (a plain table or a leaf partition).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Table {
    /// Source OID (informational: OIDs differ between servers).
    pub oid: u32,
    /// Schema name.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Columns in attnum order, dropped columns left out.
    pub columns: Vec<Column>,
    /// Key columns (empty when keyless).
    pub key: Vec<String>,
    /// Where the key comes from.
    pub key_kind: KeyKind,
    /// True when the key is one column of type smallint, integer or bigint.
    pub integer_key: bool,
    /// UNLOGGED table.
    pub unlogged: bool,
    /// A partition of a partitioned table.
    pub partition_of: Option<String>,
    /// Estimated rows (`reltuples`; -1 when never analyzed).
    pub est_rows: i64,
    /// Heap + TOAST size in bytes.
    pub bytes: i64,
    /// Heap pages (for ctid chunks).
    pub pages: i64,
    /// Whether the connected role owns the table (directly or through a role it belongs to).
    pub owned: bool,
}

impl Table {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// `schema.name` for humans and state keys.
    pub fn display_name(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// Quoted list of the columns COPY moves (generated columns left out).
    pub fn copy_columns(&self) -> String {
        self.columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Quoted list of every column, generated ones included (for comparisons).
    pub fn all_columns(&self) -> String {
        self.columns
            .iter()
            .map(|c| quote_ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// True when the table has a usable key.
    pub fn has_key(&self) -> bool {
        !self.key.is_empty()
    }
}

/// Schemas the tool never touches.
const SYSTEM_SCHEMAS: &str = "('pg_catalog', 'information_schema', 'pg_toast', 'heroku2rds')";

/// Lists every table whose rows the tool replicates: ordinary tables and leaf partitions outside
/// system schemas and not owned by an extension.
pub async fn tables(client: &Client) -> Result<Vec<Table>> {
    let sql = format!(
        r#"
        SELECT c.oid, n.nspname, c.relname, c.relpersistence = 'u',
               CASE WHEN c.relispartition THEN
                 (SELECT pn.nspname || '.' || p.relname FROM pg_inherits i
                    JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace pn ON pn.oid = p.relnamespace
                   WHERE i.inhrelid = c.oid LIMIT 1) END,
               c.reltuples::bigint, pg_table_size(c.oid), pg_relation_size(c.oid) / current_setting('block_size')::bigint,
               pg_has_role(c.relowner, 'USAGE')
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind = 'r' AND n.nspname NOT IN {SYSTEM_SCHEMAS} AND n.nspname NOT LIKE 'pg_temp%'
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                             AND d.objid = c.oid AND d.deptype = 'e')
         ORDER BY n.nspname, c.relname"#
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| query_error(e, "listing tables"))?;
    // Type names fully qualified (search_path = pg_catalog) so that they resolve the same way
    // in every session, on both servers.
    client
        .batch_execute("BEGIN READ ONLY; SET LOCAL search_path = pg_catalog")
        .await
        .map_err(|e| query_error(e, "listing columns"))?;
    let cols = client
        .query(
            "SELECT a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attgenerated <> '', a.attnotnull
               FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
              WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attrelid, a.attnum",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "listing columns"))?;
    client
        .batch_execute("COMMIT")
        .await
        .map_err(|e| query_error(e, "listing columns"))?;
    // Candidate keys: the primary key first, then unique, valid, non-partial, non-expression
    // indexes over NOT NULL columns, fewest columns first.
    let keys = client
        .query(
            "SELECT i.indrelid, i.indisprimary, ic.relname,
                    array_agg(a.attname::text ORDER BY k.ord),
                    bool_and(a.attnotnull),
                    bool_and(a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype)) AND count(*) = 1
               FROM pg_index i
               JOIN pg_class ic ON ic.oid = i.indexrelid
               CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, ord)
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
              WHERE i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
              GROUP BY i.indrelid, i.indisprimary, ic.relname, i.indnatts
              ORDER BY i.indrelid, i.indisprimary DESC, i.indnatts, ic.relname",
            &[],
        )
        .await
        .map_err(|e| query_error(e, "listing keys"))?;

    let mut tables: Vec<Table> = rows
        .iter()
        .map(|r| Table {
            oid: r.get(0),
            schema: r.get(1),
            name: r.get(2),
            unlogged: r.get(3),
            partition_of: r.get(4),
            est_rows: r.get(5),
            bytes: r.get(6),
            pages: r.get(7),
            owned: r.get(8),
            columns: Vec::new(),
            key: Vec::new(),
            key_kind: KeyKind::None,
            integer_key: false,
        })
        .collect();
    let by_oid: std::collections::HashMap<u32, usize> =
        tables.iter().enumerate().map(|(i, t)| (t.oid, i)).collect();
    for c in &cols {
        let oid: u32 = c.get(0);
        if let Some(&i) = by_oid.get(&oid) {
            tables[i].columns.push(Column {
                name: c.get(1),
                type_name: c.get(2),
                generated: c.get(3),
                not_null: c.get(4),
            });
        }
    }
    for k in &keys {
        let oid: u32 = k.get(0);
        let Some(&i) = by_oid.get(&oid) else { continue };
        let t = &mut tables[i];
        let primary: bool = k.get(1);
        let all_not_null: bool = k.get(4);
        if t.has_key() || !(primary || all_not_null) {
            continue;
        }
        t.key = k.get(3);
        t.integer_key = k.get(5);
        t.key_kind = if primary {
            KeyKind::PrimaryKey
        } else {
            KeyKind::UniqueIndex(k.get(2))
        };
    }
    Ok(tables)
}

/// The server's major version (e.g. 15).
pub async fn server_major(client: &Client) -> Result<u32> {
    let row = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .map_err(|e| query_error(e, "reading the server version"))?;
    let num: i32 = row.get(0);
    Ok((num / 10000) as u32)
}

/// Sequences outside system schemas and not owned by extensions, as `"schema"."name"`.
pub async fn sequences(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind = 'S' AND n.nspname NOT IN {SYSTEM_SCHEMAS} AND n.nspname NOT LIKE 'pg_temp%'
                    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                      AND d.objid = c.oid AND d.deptype = 'e')
                  ORDER BY 1, 2"
            ),
            &[],
        )
        .await
        .map_err(|e| query_error(e, "listing sequences"))?;
    Ok(rows
        .iter()
        .map(|r| format!("{}.{}", quote_ident(r.get(0)), quote_ident(r.get(1))))
        .collect())
}

/// Materialized views, in creation order, as `"schema"."name"`.
pub async fn materialized_views(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind = 'm' AND n.nspname NOT IN {SYSTEM_SCHEMAS} ORDER BY c.oid"
            ),
            &[],
        )
        .await
        .map_err(|e| query_error(e, "listing materialized views"))?;
    Ok(rows
        .iter()
        .map(|r| format!("{}.{}", quote_ident(r.get(0)), quote_ident(r.get(1))))
        .collect())
}

/// True when the database holds any table, view or sequence outside system schemas.
pub async fn has_user_relations(client: &impl tokio_postgres::GenericClient) -> Result<bool> {
    let row = client
        .query_one(
            &format!(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE c.relkind IN ('r','p','v','m','S','f') AND n.nspname NOT IN {SYSTEM_SCHEMAS}
                    AND n.nspname NOT LIKE 'pg_temp%'
                    AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                      AND d.objid = c.oid AND d.deptype = 'e'))"
            ),
            &[],
        )
        .await
        .map_err(|e| query_error(e, "checking whether the target is empty"))?;
    Ok(row.get(0))
}
