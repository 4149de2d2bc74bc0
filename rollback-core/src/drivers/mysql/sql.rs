//! SQL text helpers: identifier quoting, CREATE TABLE surgery, and the tab-separated
//! data format (the one `LOAD DATA` reads by default).

/// A quoted identifier: `` `a``b` ``. Safe for any name (quotes, semicolons, unicode).
pub(super) fn q(id: &str) -> String {
    format!("`{}`", id.replace('`', "``"))
}

/// `db`.`table`.
pub(super) fn qt(db: &str, table: &str) -> String {
    format!("{}.{}", q(db), q(table))
}

/// A string literal for SQL text (the session runs without NO_BACKSLASH_ESCAPES).
pub(super) fn lit(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('\'');
    for c in s.chars() {
        match c {
            '\'' => o.push_str("''"),
            '\\' => o.push_str("\\\\"),
            '\0' => o.push_str("\\0"),
            c => o.push(c),
        }
    }
    o.push('\'');
    o
}

/// The schema as compared by verify: `SHOW CREATE TABLE` without the counter that
/// moves with every insert.
pub(super) fn normalize_create(create: &str) -> String {
    // Only in the table options after the column list: a quoted name or comment
    // may hold anything.
    let split = top_level_newlines(create).into_iter().rev().find(|&i| create[i..].starts_with("\n)"));
    let (head, tail) = create.split_at(split.unwrap_or(0));
    let mut out = String::with_capacity(create.len());
    out.push_str(head);
    let mut rest = tail;
    while let Some(i) = rest.find(" AUTO_INCREMENT=") {
        out.push_str(&rest[..i]);
        let after = &rest[i + " AUTO_INCREMENT=".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

/// A CREATE TABLE split for a fast bulk load: the statement to create the table under
/// another name without its secondary indexes and foreign keys, the index clauses to
/// add after the load, and the foreign keys to add after the swap (their names are
/// unique per database, so the new table cannot carry them while the old one exists).
#[derive(Clone)]
pub(super) struct SplitCreate {
    pub create: String,
    pub indexes: Vec<String>,
    pub foreign_keys: Vec<String>,
}

/// Byte offsets of the line breaks of a `SHOW CREATE` text that are outside quoted
/// names (`` ` ``), strings (`'`, `"`) and so separate its items: a column may be
/// named with a line break in it, and a comment or default may hold one.
fn top_level_newlines(s: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut quote: Option<u8> = None;
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            None => match c {
                b'`' | b'\'' | b'"' => quote = Some(c),
                b'\n' => out.push(i),
                _ => {}
            },
            Some(qc) => {
                if c == b'\\' && qc != b'`' {
                    i += 1; // an escaped character inside a string
                } else if c == qc {
                    if b.get(i + 1) == Some(&qc) {
                        i += 1; // a doubled quote stays inside
                    } else {
                        quote = None;
                    }
                }
            }
        }
        i += 1;
    }
    out
}

pub(super) fn split_create(create: &str, table: &str, new_db: &str, new_name: &str) -> Option<SplitCreate> {
    let head = format!("CREATE TABLE {} (\n", q(table));
    let body_start = create.strip_prefix(&head)?;
    let breaks = top_level_newlines(body_start);
    let close = *breaks.iter().rev().find(|&&i| body_start[i..].starts_with("\n)"))?;
    let (body, tail) = (&body_start[..close], &body_start[close + 1..]);
    let mut keep = Vec::new();
    let mut indexes = Vec::new();
    let mut foreign_keys = Vec::new();
    let mut lines = Vec::new();
    let mut from = 0;
    for &i in breaks.iter().filter(|&&i| i < close) {
        lines.push(&body[from..i]);
        from = i + 1;
    }
    lines.push(&body[from..]);
    for line in lines {
        let item = line.trim_end().trim_end_matches(',').trim_start();
        if item.starts_with("KEY `") || item.starts_with("UNIQUE KEY `") {
            indexes.push(item.to_string());
        } else if item.starts_with("CONSTRAINT `") && item.contains(" FOREIGN KEY ") {
            foreign_keys.push(item.to_string());
        } else {
            keep.push(format!("  {item}"));
        }
    }
    Some(SplitCreate {
        create: format!("CREATE TABLE {} (\n{}\n{}", qt(new_db, new_name), keep.join(",\n"), tail),
        indexes,
        foreign_keys,
    })
}

/// Appends one value in `LOAD DATA`'s default escaping (`\N` is NULL).
pub(super) fn push_field(out: &mut Vec<u8>, v: Option<&[u8]>) {
    let Some(v) = v else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for &b in v {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            0 => out.extend_from_slice(b"\\0"),
            0x1a => out.extend_from_slice(b"\\Z"),
            b => out.push(b),
        }
    }
}

/// Parses one line of the data format back into values (for the INSERT path).
pub(super) fn parse_line(line: &[u8], ncols: usize) -> Option<Vec<Option<Vec<u8>>>> {
    let mut out = Vec::with_capacity(ncols);
    for field in line.split(|&b| b == b'\t') {
        if field == b"\\N" {
            out.push(None);
            continue;
        }
        let mut v = Vec::with_capacity(field.len());
        let mut i = 0;
        while i < field.len() {
            let b = field[i];
            if b == b'\\' && i + 1 < field.len() {
                i += 1;
                v.push(match field[i] {
                    b't' => b'\t',
                    b'n' => b'\n',
                    b'r' => b'\r',
                    b'0' => 0,
                    b'Z' => 0x1a,
                    other => other,
                });
            } else {
                v.push(b);
            }
            i += 1;
        }
        out.push(Some(v));
    }
    (out.len() == ncols).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(q("x`; DROP TABLE y; --"), "`x``; DROP TABLE y; --`");
        assert_eq!(lit("it's \\ \0"), "'it''s \\\\ \\0'");
    }

    #[test]
    fn fields_round_trip() {
        let vals: Vec<Option<&[u8]>> = vec![Some(b"a\tb\nc\\d\0\x1a\r"), None, Some(b""), Some(b"\\N")];
        let mut line = Vec::new();
        for (i, v) in vals.iter().enumerate() {
            if i > 0 {
                line.push(b'\t');
            }
            push_field(&mut line, *v);
        }
        let back = parse_line(&line, 4).unwrap();
        let want: Vec<Option<Vec<u8>>> = vals.iter().map(|v| v.map(<[u8]>::to_vec)).collect();
        assert_eq!(back, want);
    }

    #[test]
    fn create_is_split_and_normalized() {
        let c = "CREATE TABLE `t` (\n  `id` int(11) NOT NULL AUTO_INCREMENT,\n  `k` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`),\n  KEY `k_1` (`k`),\n  CONSTRAINT `fk` FOREIGN KEY (`k`) REFERENCES `p` (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=42 DEFAULT CHARSET=utf8mb4";
        let s = split_create(c, "t", "db", "_new").unwrap();
        assert_eq!(s.indexes, ["KEY `k_1` (`k`)"]);
        assert_eq!(s.foreign_keys.len(), 1);
        assert!(s.create.starts_with("CREATE TABLE `db`.`_new` (\n  `id`"), "{}", s.create);
        assert!(s.create.contains("PRIMARY KEY (`id`)\n) ENGINE"), "{}", s.create);
        assert!(!normalize_create(c).contains("AUTO_INCREMENT=42"));
        assert!(normalize_create(c).contains("NOT NULL AUTO_INCREMENT,"));
    }

    #[test]
    fn line_breaks_inside_names_and_strings_stay_where_they_are() {
        let c = "CREATE TABLE `t\n)` (\n  `col\n  umn ``x``,` int(11) NOT NULL,\n  `v` text DEFAULT 'a\n)b' COMMENT 'it''s\n  KEY `no`',\n  PRIMARY KEY (`col\n  umn ``x``,`)\n) ENGINE=InnoDB AUTO_INCREMENT=7";
        let s = split_create(c, "t\n)", "db", "_new").unwrap();
        assert!(s.indexes.is_empty(), "{:?}", s.indexes);
        assert!(
            s.create.contains("  `col\n  umn ``x``,` int(11) NOT NULL,\n  `v` text DEFAULT 'a\n)b'"),
            "{}",
            s.create
        );
        assert!(
            s.create.ends_with("PRIMARY KEY (`col\n  umn ``x``,`)\n) ENGINE=InnoDB AUTO_INCREMENT=7"),
            "{}",
            s.create
        );
        assert_eq!(normalize_create(c), c.replace(" AUTO_INCREMENT=7", ""));
    }
}
