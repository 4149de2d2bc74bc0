//! What is in scope, the schema digest and content checksums.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::conn::{pg_error, qname};
use crate::error::{Error, ErrorKind, Result};

/// Which objects a component covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub(super) enum Scope {
    /// Every schema but the system ones.
    Database,
    /// These schemas.
    Schemas { schemas: Vec<String> },
    /// These tables (with the sequences they own).
    Tables { tables: Vec<(String, String)> },
}

impl Scope {
    pub(super) fn describe(&self) -> String {
        match self {
            Scope::Database => "the whole database".into(),
            Scope::Schemas { schemas } => format!("schemas {}", schemas.join(", ")),
            Scope::Tables { tables } => {
                format!("tables {}", tables.iter().map(|(s, t)| format!("{s}.{t}")).collect::<Vec<_>>().join(", "))
            }
        }
    }
}

/// A relation in scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Rel {
    pub(super) oid: u32,
    pub(super) schema: String,
    pub(super) name: String,
    pub(super) kind: char,
    pub(super) populated: bool,
}

impl Rel {
    pub(super) fn qname(&self) -> String {
        qname(&self.schema, &self.name)
    }
    pub(super) fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }
    /// Relations whose rows are copied (partitions are copied leaf by leaf).
    pub(super) fn has_data(&self) -> bool {
        self.kind == 'r'
    }
}

const RELS: &str = "
SELECT c.oid, n.nspname::text, c.relname::text, c.relkind::text, c.relispopulated,
       (SELECT d.refobjid FROM pg_depend d
         WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
           AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1) AS owner
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
   AND n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema'
   AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_class'::regclass
                    AND e.objid = c.oid AND e.deptype = 'e')
 ORDER BY 2, 3";

/// The relations in scope, in name order.
pub(super) async fn relations(client: &Client, scope: &Scope) -> Result<Vec<Rel>> {
    let rows = client.query(RELS, &[]).await.map_err(|e| pg_error(&e, "cannot read the catalog"))?;
    let all: Vec<(Rel, Option<u32>)> = rows
        .iter()
        .map(|r| {
            let kind: String = r.get(3);
            (
                Rel {
                    oid: r.get(0),
                    schema: r.get(1),
                    name: r.get(2),
                    kind: kind.chars().next().unwrap_or('r'),
                    populated: r.get(4),
                },
                r.get(5),
            )
        })
        .collect();
    Ok(match scope {
        Scope::Database => all.into_iter().map(|(r, _)| r).collect(),
        Scope::Schemas { schemas } => {
            all.into_iter().filter(|(r, _)| schemas.contains(&r.schema)).map(|(r, _)| r).collect()
        }
        Scope::Tables { tables } => {
            let listed: BTreeSet<u32> = all
                .iter()
                .filter(|(r, _)| tables.iter().any(|(s, t)| *s == r.schema && *t == r.name))
                .map(|(r, _)| r.oid)
                .collect();
            all.into_iter()
                .filter(|(r, owner)| listed.contains(&r.oid) || owner.is_some_and(|o| listed.contains(&o)))
                .map(|(r, _)| r)
                .collect()
        }
    })
}

/// Schemas that exist among `names`.
pub(super) async fn existing_schemas(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' AND nspname <> 'information_schema'
              AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_namespace'::regclass
                               AND e.objid = pg_namespace.oid AND e.deptype = 'e')
             ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| pg_error(&e, "cannot list schemas"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Extensions created in one of `schemas`.
pub(super) async fn extensions_in(client: &Client, schemas: &[String]) -> Result<Vec<String>> {
    let rows = client
        .query(
            "SELECT e.extname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
              WHERE n.nspname = ANY($1) ORDER BY 1",
            &[&schemas],
        )
        .await
        .map_err(|e| pg_error(&e, "cannot list extensions"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// The database's publications.
pub(super) async fn publications(client: &Client) -> Result<Vec<String>> {
    let rows = client
        .query("SELECT pubname::text FROM pg_publication ORDER BY 1", &[])
        .await
        .map_err(|e| pg_error(&e, "cannot list publications"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

const SCHEMA_LINES: &str = "
SELECT 'rel|' || n.nspname || '.' || c.relname || '|' || c.relkind::text
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY($1)
UNION ALL
SELECT 'col|' || n.nspname || '.' || c.relname || '|'
       || (row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum))::text || '|' || a.attname || '|'
       || format_type(a.atttypid, a.atttypmod) || '|' || a.attnotnull::text || '|'
       || coalesce(pg_get_expr(d.adbin, d.adrelid), '') || '|' || a.attidentity::text || a.attgenerated::text
       || '|' || coalesce(co.collname::text, '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
 WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'idx|' || pg_get_indexdef(i.indexrelid) FROM pg_index i WHERE i.indrelid = ANY($1)
UNION ALL
SELECT 'con|' || n.nspname || '.' || c.relname || '|' || k.conname || '|' || pg_get_constraintdef(k.oid)
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE k.conrelid = ANY($1)
UNION ALL
SELECT 'view|' || n.nspname || '.' || c.relname || '|' || pg_get_viewdef(c.oid)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY($1) AND c.relkind IN ('v', 'm')
UNION ALL
SELECT 'trg|' || pg_get_triggerdef(t.oid) FROM pg_trigger t WHERE t.tgrelid = ANY($1) AND NOT t.tgisinternal
UNION ALL
SELECT 'seq|' || n.nspname || '.' || c.relname || '|' || format_type(s.seqtypid, NULL) || '|'
       || s.seqincrement::text || '|' || s.seqmin::text || '|' || s.seqmax::text || '|' || s.seqcycle::text
  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE s.seqrelid = ANY($1)
UNION ALL
SELECT 'fn|' || n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')|'
       || md5(pg_get_functiondef(p.oid))
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = ANY($2) AND p.prokind IN ('f', 'p')
   AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass
                    AND e.objid = p.oid AND e.deptype = 'e')
UNION ALL
SELECT 'type|' || n.nspname || '.' || t.typname || '|' || t.typtype::text || '|'
       || coalesce((SELECT string_agg(enumlabel::text, ',' ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid), '')
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = ANY($2) AND t.typtype IN ('e', 'd') 
UNION ALL
SELECT 'schema|' || s FROM unnest($2::text[]) AS s";

/// Which catalog facts a snapshot's schema lines hold: a snapshot is verified with
/// the set it was captured with, whichever build reads it (its digest was taken
/// over those lines).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum Facts {
    /// Columns, types, indexes, constraints, views, triggers, sequences, functions:
    /// snapshots from before `facts` was recorded.
    Structure,
    /// Also owners, grants, comments, storage (UNLOGGED, reloptions), row security
    /// and policies, partition keys and bounds, inheritance, rules, trigger and rule
    /// enablement, aggregates, procedures, composite/range/domain types in full,
    /// extensions, and for a whole database its event triggers and publications.
    #[default]
    Everything,
}

impl Facts {
    /// What a state without the field was captured with.
    pub(super) fn legacy() -> Facts {
        Facts::Structure
    }
}

/// What `Facts::Everything` adds to `SCHEMA_LINES`. `$1`: the relations in scope;
/// `$2`: the schemas in scope; `$3`: whether the scope is the whole database.
const MORE_LINES: &str = "
SELECT 'relx|' || n.nspname || '.' || c.relname || '|' || c.relpersistence::text || '|'
       || c.relrowsecurity::text || ',' || c.relforcerowsecurity::text || '|'
       || coalesce(array_to_string(c.reloptions, ','), '') || '|' || pg_get_userbyid(c.relowner) || '|'
       || coalesce(c.relacl::text, '') || '|' || coalesce(pg_get_partkeydef(c.oid), '') || '|'
       || coalesce(pg_get_expr(c.relpartbound, c.oid), '') || '|' || coalesce(obj_description(c.oid, 'pg_class'), '')
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = ANY($1)
UNION ALL
SELECT 'colx|' || n.nspname || '.' || c.relname || '|' || a.attname || '|'
       || coalesce(col_description(c.oid, a.attnum), '') || '|' || coalesce(a.attacl::text, '')
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
   AND (col_description(c.oid, a.attnum) IS NOT NULL OR a.attacl IS NOT NULL)
UNION ALL
SELECT 'inh|' || i.inhrelid::regclass::text || '|' || i.inhparent::regclass::text || '|' || i.inhseqno::text
  FROM pg_inherits i WHERE i.inhrelid = ANY($1)
UNION ALL
SELECT 'pol|' || n.nspname || '.' || c.relname || '|' || p.polname || '|' || p.polcmd::text || '|'
       || p.polpermissive::text || '|' || p.polroles::regrole[]::text || '|'
       || coalesce(pg_get_expr(p.polqual, p.polrelid), '') || '|' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE p.polrelid = ANY($1)
UNION ALL
SELECT 'rule|' || pg_get_ruledef(r.oid) || '|' || r.ev_enabled::text
  FROM pg_rewrite r WHERE r.ev_class = ANY($1) AND r.rulename <> '_RETURN'
UNION ALL
SELECT 'trgx|' || n.nspname || '.' || c.relname || '|' || t.tgname || '|' || t.tgenabled::text
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE t.tgrelid = ANY($1) AND NOT t.tgisinternal
UNION ALL
SELECT 'nsp|' || n.nspname || '|' || pg_get_userbyid(n.nspowner) || '|' || coalesce(n.nspacl::text, '') || '|'
       || coalesce(obj_description(n.oid, 'pg_namespace'), '')
  FROM pg_namespace n WHERE n.nspname = ANY($2)
UNION ALL
SELECT 'fnx|' || n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')|'
       || p.prokind::text || '|' || pg_get_userbyid(p.proowner) || '|' || coalesce(p.proacl::text, '') || '|'
       || coalesce(obj_description(p.oid, 'pg_proc'), '') || '|'
       || coalesce((SELECT a.aggkind::text || ',' || a.aggtransfn::regproc::text || ',' || a.aggfinalfn::regproc::text
                           || ',' || format_type(a.aggtranstype, NULL) || ',' || coalesce(a.agginitval, '')
                      FROM pg_aggregate a WHERE a.aggfnoid = p.oid), '')
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = ANY($2)
   AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_proc'::regclass
                    AND e.objid = p.oid AND e.deptype = 'e')
UNION ALL
SELECT 'typx|' || n.nspname || '.' || t.typname || '|' || t.typtype::text || '|' || pg_get_userbyid(t.typowner) || '|'
       || coalesce(t.typacl::text, '') || '|' || coalesce(obj_description(t.oid, 'pg_type'), '') || '|'
       || CASE t.typtype
            WHEN 'd' THEN format_type(t.typbasetype, t.typtypmod) || ',' || t.typnotnull::text || ','
                          || coalesce(t.typdefault, '') || ','
                          || coalesce((SELECT string_agg(k.conname || ' ' || pg_get_constraintdef(k.oid), ';' ORDER BY k.conname)
                                         FROM pg_constraint k WHERE k.contypid = t.oid), '')
            WHEN 'r' THEN (SELECT format_type(r.rngsubtype, NULL) FROM pg_range r WHERE r.rngtypid = t.oid)
            WHEN 'c' THEN (SELECT string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ',' ORDER BY a.attnum)
                             FROM pg_attribute a WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped)
            ELSE ''
          END
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE n.nspname = ANY($2) AND t.typtype IN ('e', 'd', 'r', 'c')
   -- a composite type of its own, not a table's row type
   AND (t.typtype <> 'c' OR EXISTS (SELECT 1 FROM pg_class k WHERE k.oid = t.typrelid AND k.relkind = 'c'))
   AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.classid = 'pg_type'::regclass
                    AND e.objid = t.oid AND e.deptype = 'e')
UNION ALL
SELECT 'ext|' || e.extname || '|' || e.extversion || '|' || n.nspname
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE $3 OR n.nspname = ANY($2)
UNION ALL
SELECT 'evt|' || v.evtname || '|' || v.evtevent || '|' || v.evtenabled::text || '|'
       || coalesce(array_to_string(v.evttags, ','), '') || '|' || v.evtfoid::regprocedure::text || '|'
       || pg_get_userbyid(v.evtowner)
  FROM pg_event_trigger v WHERE $3
UNION ALL
SELECT 'pub|' || p.pubname || '|' || p.puballtables::text || '|' || p.pubinsert::text || p.pubupdate::text
       || p.pubdelete::text || p.pubtruncate::text || '|'
       || coalesce((SELECT string_agg(r.prrelid::regclass::text, ',' ORDER BY 1) FROM pg_publication_rel r
                     WHERE r.prpubid = p.oid), '')
  FROM pg_publication p WHERE $3";

/// One line per catalog fact of the scoped objects (columns, types, indexes,
/// constraints, views, triggers, sequences, functions; with `Facts::Everything`
/// also what `MORE_LINES` reads), sorted.
pub(super) async fn schema_lines(client: &Client, scope: &Scope, rels: &[Rel], facts: Facts) -> Result<Vec<String>> {
    let oids: Vec<u32> = rels.iter().map(|r| r.oid).collect();
    let schemas: Vec<String> = match scope {
        Scope::Database => existing_schemas(client).await?,
        Scope::Schemas { schemas } => {
            let have = existing_schemas(client).await?;
            schemas.iter().filter(|s| have.contains(s)).cloned().collect()
        }
        Scope::Tables { .. } => Vec::new(),
    };
    let rows = client
        .query(SCHEMA_LINES, &[&oids, &schemas])
        .await
        .map_err(|e| pg_error(&e, "cannot read the schema from the catalog"))?;
    let mut lines: Vec<String> = rows.iter().map(|r| r.get::<_, Option<String>>(0).unwrap_or_default()).collect();
    if facts == Facts::Everything {
        let whole = matches!(scope, Scope::Database);
        let rows = client
            .query(MORE_LINES, &[&oids, &schemas, &whole])
            .await
            .map_err(|e| pg_error(&e, "cannot read owners, grants and storage from the catalog"))?;
        lines.extend(rows.iter().map(|r| r.get::<_, Option<String>>(0).unwrap_or_default()));
    }
    lines.sort();
    Ok(lines)
}

pub(super) fn digest_lines(lines: &[String]) -> String {
    let mut h = Sha256::new();
    for l in lines {
        h.update(l.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// An object outside the scope that a restore's `DROP … CASCADE` would remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OutsideDependent {
    /// As PostgreSQL names it: `column side of table other.fills`.
    pub(super) object: String,
    /// The scoped objects it depends on: `type app.side`.
    pub(super) depends_on: String,
    /// The schema it lives in, when it has one (what to add to `schemas`).
    pub(super) schema: Option<String>,
}

/// What a restore drops, found the way `DROP … CASCADE` finds it: the scoped schemas
/// (or listed tables), then everything that is part of them — objects in the schemas,
/// and what hangs off an object in scope by an auto, internal or extension dependency
/// (columns, defaults, indexes, constraints, triggers, rules, row and array types,
/// owned sequences, extension members; a table's TOAST table in `pg_toast`). Publication memberships are never part of the
/// scope: the scoped dump does not hold publications. Anything else that depends on
/// an object in scope — a column of a scoped enum type, a view over a scoped function,
/// a `DEFAULT nextval` on a scoped sequence, a foreign key into a listed table — would
/// be dropped with it although the snapshot does not hold it.
const OUTSIDE_DEPENDENTS: &str = "
WITH RECURSIVE inside(classid, objid) AS (
    SELECT 'pg_namespace'::regclass::oid, n.oid FROM pg_namespace n WHERE n.nspname = ANY($2)
    UNION
    SELECT 'pg_class'::regclass::oid, r FROM unnest($1::oid[]) AS r
    UNION
    SELECT d.classid, d.objid
      FROM inside x JOIN pg_depend d ON d.refclassid = x.classid AND d.refobjid = x.objid
     WHERE d.objsubid = 0
       AND (x.classid = 'pg_namespace'::regclass OR d.deptype IN ('a', 'i', 'e'))
       AND d.classid NOT IN ('pg_publication_rel'::regclass, 'pg_publication_namespace'::regclass)
       -- pg_identify_object gives the schema quoted as an identifier.
       AND (cardinality($2::text[]) = 0
            OR coalesce((pg_identify_object(d.classid, d.objid, 0)).schema
                        = ANY(ARRAY(SELECT quote_ident(s) FROM unnest($2::text[]) s) || 'pg_toast'::text), true))
), outside AS (
    SELECT d.classid, d.objid, d.objsubid,
           pg_describe_object(d.refclassid, d.refobjid, 0) AS depends_on
      FROM inside x JOIN pg_depend d ON d.refclassid = x.classid AND d.refobjid = x.objid
     WHERE d.deptype IN ('n', 'a', 'i', 'e')
       AND NOT EXISTS (SELECT 1 FROM inside y WHERE y.classid = d.classid AND y.objid = d.objid)
)
SELECT pg_describe_object(o.classid, o.objid, o.objsubid),
       string_agg(DISTINCT o.depends_on, ', '),
       coalesce((pg_identify_object(o.classid, o.objid, o.objsubid)).schema,
                (SELECT c.relnamespace::regnamespace::text FROM pg_class c
                  WHERE c.oid = CASE o.classid
                      WHEN 'pg_attrdef'::regclass THEN (SELECT adrelid FROM pg_attrdef WHERE oid = o.objid)
                      WHEN 'pg_rewrite'::regclass THEN (SELECT ev_class FROM pg_rewrite WHERE oid = o.objid)
                      WHEN 'pg_trigger'::regclass THEN (SELECT tgrelid FROM pg_trigger WHERE oid = o.objid)
                      WHEN 'pg_policy'::regclass THEN (SELECT polrelid FROM pg_policy WHERE oid = o.objid)
                  END))
  FROM outside o
 GROUP BY o.classid, o.objid, o.objsubid
 ORDER BY 1";

/// `"we""ird"` → `we"ird`: a name as `quote_ident` gave it, as it is stored.
fn unquote_ident(s: &str) -> String {
    match s.strip_prefix('"').and_then(|x| x.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => s.to_string(),
    }
}

/// Objects outside the scope that a restore's `DROP … CASCADE` would silently remove.
pub(super) async fn outside_dependents(client: &Client, scope: &Scope, rels: &[Rel]) -> Result<Vec<OutsideDependent>> {
    let (oids, schemas): (Vec<u32>, Vec<String>) = match scope {
        Scope::Database => return Ok(Vec::new()),
        Scope::Schemas { schemas } => (Vec::new(), schemas.clone()),
        Scope::Tables { .. } => (rels.iter().map(|r| r.oid).collect(), Vec::new()),
    };
    let rows = client
        .query(OUTSIDE_DEPENDENTS, &[&oids, &schemas])
        .await
        .map_err(|e| pg_error(&e, "cannot read dependencies from the catalog"))?;
    Ok(rows
        .iter()
        .map(|r| OutsideDependent {
            object: r.get::<_, Option<String>>(0).unwrap_or_default(),
            depends_on: r.get::<_, Option<String>>(1).unwrap_or_default(),
            schema: r.get::<_, Option<String>>(2).map(|s| unquote_ident(&s)),
        })
        .collect())
}

/// Hashes the rows of a binary COPY stream as they arrive: each row's hash goes into
/// a list whose sorted form gives an order-independent checksum (and exact multiset
/// differences for the discard report).
/// How each row is hashed; recorded in a dump snapshot's state, so that a snapshot
/// is verified with the function it was captured with whichever build reads it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RowHash {
    /// First 8 bytes of SHA-256: snapshots from before `row_hash` was recorded.
    Sha256,
    /// XXH3-64: a fifth of a capture's time less than SHA-256 at a million rows.
    #[default]
    Xxh3,
}

impl RowHash {
    /// What a state without the field was captured with.
    pub(super) fn legacy() -> RowHash {
        RowHash::Sha256
    }

    fn hash(self, row: &[u8]) -> u64 {
        match self {
            RowHash::Sha256 => u64::from_le_bytes(Sha256::digest(row)[..8].try_into().expect("8 bytes")),
            RowHash::Xxh3 => twox_hash::XxHash3_64::oneshot(row),
        }
    }
}

#[derive(Default)]
pub(super) struct RowHasher {
    algo: RowHash,
    buf: Vec<u8>,
    header_done: bool,
    ended: bool,
    pub(super) hashes: Vec<u64>,
    /// Set by `finish`: sha256 of the sorted row hashes.
    pub(super) checksum: String,
}

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

impl RowHasher {
    pub(super) fn new(algo: RowHash) -> RowHasher {
        RowHasher { algo, ..Default::default() }
    }

    /// Takes the next piece of the stream, in any chunking (a chunk is one row as the
    /// server sends it, but need not be).
    pub(super) fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        if self.buf.is_empty() {
            // The usual case: whole rows, hashed where they lie.
            let used = self.parse(chunk)?;
            self.buf.extend_from_slice(&chunk[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.buf);
            buf.extend_from_slice(chunk);
            let used = self.parse(&buf)?;
            buf.drain(..used);
            self.buf = buf;
        }
        Ok(())
    }

    /// Hashes the complete rows at the start of `buf`; returns the bytes consumed.
    fn parse(&mut self, buf: &[u8]) -> Result<usize> {
        let mut pos = 0usize;
        if !self.header_done {
            if buf.len() < 19 {
                return Ok(0);
            }
            if &buf[..11] != SIGNATURE {
                return Err(Error::new(ErrorKind::Corrupt, "not a binary COPY stream"));
            }
            let ext = u32::from_be_bytes([buf[15], buf[16], buf[17], buf[18]]) as usize;
            if buf.len() < 19 + ext {
                return Ok(0);
            }
            pos = 19 + ext;
            self.header_done = true;
        }
        while !self.ended && buf.len() >= pos + 2 {
            let n = i16::from_be_bytes([buf[pos], buf[pos + 1]]);
            if n == -1 {
                self.ended = true;
                pos += 2;
                break;
            }
            let mut p = pos + 2;
            let mut complete = true;
            for _ in 0..n.max(0) {
                if buf.len() < p + 4 {
                    complete = false;
                    break;
                }
                let len = i32::from_be_bytes([buf[p], buf[p + 1], buf[p + 2], buf[p + 3]]);
                p += 4;
                if len > 0 {
                    p += len as usize;
                }
                if buf.len() < p {
                    complete = false;
                    break;
                }
            }
            if !complete {
                break;
            }
            self.hashes.push(self.algo.hash(&buf[pos..p]));
            pos = p;
        }
        Ok(pos)
    }

    /// Sorts the row hashes; returns (rows, checksum).
    pub(super) fn finish(&mut self) -> Result<(u64, String)> {
        if !self.ended || !self.buf.is_empty() {
            return Err(Error::new(ErrorKind::Corrupt, "binary COPY stream ended early"));
        }
        self.hashes.sort_unstable();
        let mut h = Sha256::new();
        for x in &self.hashes {
            h.update(x.to_le_bytes());
        }
        self.checksum = hex::encode(h.finalize());
        Ok((self.hashes.len() as u64, self.checksum.clone()))
    }

    pub(super) fn rows(&self) -> u64 {
        self.hashes.len() as u64
    }
}

/// Streams one table out (binary COPY), hashing rows and handing chunks to `sink`.
pub(super) async fn copy_out(
    client: &Client,
    rel: &Rel,
    algo: RowHash,
    mut sink: impl FnMut(&[u8]) -> Result<()>,
) -> Result<RowHasher> {
    let stream = client
        .copy_out(&format!("COPY {} TO STDOUT (FORMAT binary)", rel.qname()))
        .await
        .map_err(|e| pg_error(&e, &format!("cannot read table {}", rel.display())))?;
    futures_util::pin_mut!(stream);
    let mut h = RowHasher::new(algo);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| pg_error(&e, &format!("cannot read table {}", rel.display())))?;
        sink(&chunk)?;
        h.feed(&chunk)?;
    }
    h.finish()?;
    Ok(h)
}

pub(super) use crate::drivers::multiset_diff;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_hash_the_same_however_chunked() {
        let mut s = SIGNATURE.to_vec();
        s.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
        for (a, b) in [(1i32, &b"x"[..]), (2, &b""[..])] {
            s.extend_from_slice(&2i16.to_be_bytes());
            s.extend_from_slice(&4i32.to_be_bytes());
            s.extend_from_slice(&a.to_be_bytes());
            s.extend_from_slice(&(b.len() as i32).to_be_bytes());
            s.extend_from_slice(b);
        }
        s.extend_from_slice(&(-1i16).to_be_bytes());
        let mut whole = RowHasher::default();
        whole.feed(&s).unwrap();
        let w = whole.finish().unwrap();
        let mut bytewise = RowHasher::default();
        for b in &s {
            bytewise.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(bytewise.finish().unwrap(), w);
        assert_eq!(w.0, 2);
        let mut cut = RowHasher::default();
        cut.feed(&s[..s.len() - 3]).unwrap();
        assert!(cut.finish().is_err());
        assert_eq!(multiset_diff(&[1, 2, 2, 5], &[2, 3, 5, 6]), (2, 2));

        // A snapshot from before `row_hash` was recorded verifies with SHA-256 still.
        let mut legacy = RowHasher::new(RowHash::legacy());
        legacy.feed(&s).unwrap();
        legacy.finish().unwrap();
        let first_row = &s[19..19 + 2 + 4 + 4 + 4 + 1];
        let sha = u64::from_le_bytes(Sha256::digest(first_row)[..8].try_into().unwrap());
        assert!(legacy.hashes.contains(&sha));
        assert_ne!(legacy.checksum, w.1, "the two functions give different checksums");
        let st: RowHash = serde_json::from_value(serde_json::json!("xxh3")).unwrap();
        assert_eq!(st, RowHash::Xxh3);
    }
}
