//! What both stores' migrations share: the list of files per backend, the checksum each
//! applied file is recorded with, and the refusal to start on a file edited after it was
//! applied. Each store runs the SQL in its own dialect (`sqlite::migrate`,
//! `postgres::migrate`); the rules of the table `taskd_migrations` are decided here.
//!
//! Migrations are append-only: a change is a new file with the next number. A database that
//! recorded a file under one checksum and now finds another would run a schema that no file
//! describes, so the server refuses to start and names the version and the file.

use sha2::{Digest, Sha256};

use super::StoreError;

/// One migration file, compiled in.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    /// The path below `migrations/`, for messages.
    pub file: &'static str,
    pub sql: &'static str,
}

macro_rules! migration {
    ($version:literal, $name:literal, $file:literal) => {
        Migration {
            version: $version,
            name: $name,
            file: $file,
            sql: include_str!(concat!("../../migrations/", $file)),
        }
    };
}

/// SQLite's migrations, in order.
pub const SQLITE: &[Migration] = &[
    migration!(1, "tasks", "sqlite/0001_tasks.sql"),
    migration!(2, "events", "sqlite/0002_events.sql"),
    migration!(3, "callback_trigger", "sqlite/0003_callback_trigger.sql"),
    migration!(4, "api_keys", "sqlite/0004_api_keys.sql"),
    migration!(5, "traceparent", "sqlite/0005_traceparent.sql"),
    migration!(6, "dependencies", "sqlite/0006_dependencies.sql"),
    migration!(7, "schedules", "sqlite/0007_schedules.sql"),
    migration!(8, "queue_rate", "sqlite/0008_queue_rate.sql"),
    migration!(9, "lean_drain", "sqlite/0009_lean_drain.sql"),
    migration!(
        11,
        "state_index_without_running",
        "sqlite/0011_state_index_without_running.sql"
    ),
    migration!(
        13,
        "counts_by_statement",
        "sqlite/0013_counts_by_statement.sql"
    ),
    migration!(
        14,
        "checks_without_in_lists",
        "sqlite/0014_checks_without_in_lists.sql"
    ),
];

/// PostgreSQL's migrations, in order, numbered as SQLite's.
pub const POSTGRES: &[Migration] = &[
    migration!(1, "tasks", "postgres/0001_tasks.sql"),
    migration!(2, "events", "postgres/0002_events.sql"),
    migration!(4, "api_keys", "postgres/0004_api_keys.sql"),
    migration!(5, "traceparent", "postgres/0005_traceparent.sql"),
    migration!(6, "dependencies", "postgres/0006_dependencies.sql"),
    migration!(7, "schedules", "postgres/0007_schedules.sql"),
    migration!(8, "queue_rate", "postgres/0008_queue_rate.sql"),
    migration!(9, "lean_drain", "postgres/0009_lean_drain.sql"),
    migration!(
        10,
        "events_numbered_at_insert",
        "postgres/0010_events_numbered_at_insert.sql"
    ),
    migration!(
        11,
        "state_index_without_running",
        "postgres/0011_state_index_without_running.sql"
    ),
    migration!(
        12,
        "trigger_joins_hashed",
        "postgres/0012_trigger_joins_hashed.sql"
    ),
];

/// The versions only SQLite has, each with why; every other version exists on both
/// backends under one name. `0003`, `0013` and `0014` move off costs PostgreSQL never paid
/// (see their files).
pub const ONLY_SQLITE: &[(i64, &str)] = &[
    (
        3,
        "PostgreSQL tests a row trigger's WHEN before running it, so it keeps 0002's trigger",
    ),
    (
        13,
        "PostgreSQL's count trigger runs once per statement, on its transition tables, already",
    ),
    (
        14,
        "PostgreSQL evaluates a CHECK's IN list in place; SQLite built a table of it per row",
    ),
];

/// The versions only PostgreSQL has, each with why.
pub const ONLY_POSTGRES: &[(i64, &str)] = &[
    (
        10,
        "SQLite numbers events at insert already (one writer: insert order is commit order)",
    ),
    (
        12,
        "SQLite's triggers run once per row and join nothing; PostgreSQL's statement \
         triggers join their transition tables",
    ),
];

impl Migration {
    /// The SHA-256 of the file, hex; carriage returns are left out, so a checkout with
    /// CRLF line ends records the same sum.
    pub fn checksum(&self) -> String {
        let mut hasher = Sha256::new();
        for chunk in self.sql.split('\r') {
            hasher.update(chunk.as_bytes());
        }
        hex::encode(hasher.finalize())
    }

    /// What to do with this migration, given the checksum the database recorded for its
    /// version (`None`: not applied; `Some(None)`: applied before checksums were recorded).
    pub fn decide(&self, recorded: Option<Option<String>>) -> Result<Step, StoreError> {
        match recorded {
            None => Ok(Step::Apply),
            Some(None) => Ok(Step::Record),
            Some(Some(sum)) if sum == self.checksum() => Ok(Step::Nothing),
            Some(Some(sum)) => Err(StoreError::MigrationEdited {
                version: self.version,
                file: format!("migrations/{}", self.file),
                recorded: sum,
                found: self.checksum(),
            }),
        }
    }
}

/// What a store does with one migration at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Not applied yet: run it and record it with its checksum.
    Apply,
    /// Applied by a version of taskd that recorded no checksum: record the file's now.
    Record,
    /// Applied, and the file is the one applied.
    Nothing,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn by_version(list: &[Migration]) -> BTreeMap<i64, &'static str> {
        list.iter().map(|m| (m.version, m.name)).collect()
    }

    /// The two lists differ only where declared: the same versions under the same names,
    /// but for `ONLY_SQLITE` and `ONLY_POSTGRES`; each list ascends, and each file's name carries its version.
    #[test]
    fn the_backends_differ_only_as_declared() {
        let sqlite = by_version(SQLITE);
        let mut postgres = by_version(POSTGRES);
        for (version, _why) in ONLY_SQLITE {
            assert!(
                sqlite.contains_key(version),
                "{version} is declared but absent"
            );
            assert!(
                !postgres.contains_key(version),
                "{version} exists on PostgreSQL"
            );
            postgres.insert(*version, sqlite[version]);
        }
        for (version, _why) in ONLY_POSTGRES {
            assert!(!sqlite.contains_key(version), "{version} exists on SQLite");
            assert!(
                postgres.remove(version).is_some(),
                "{version} is declared but absent"
            );
        }
        assert_eq!(
            sqlite, postgres,
            "an undeclared difference between the backends"
        );
        for list in [SQLITE, POSTGRES] {
            assert!(list.windows(2).all(|w| w[0].version < w[1].version));
            for m in list {
                let stem = m.file.rsplit('/').next().unwrap_or_default();
                assert_eq!(
                    stem,
                    format!("{:04}_{}.sql", m.version, m.name),
                    "{}",
                    m.file
                );
            }
        }
    }

    /// Every file under `migrations/` is in its backend's list (none forgotten).
    #[test]
    fn every_file_is_listed() {
        for (dir, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let path = format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR"));
            let mut files: Vec<String> = std::fs::read_dir(&path)
                .expect("the migrations directory")
                .map(|entry| format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy()))
                .collect();
            files.sort();
            let listed: Vec<String> = list.iter().map(|m| m.file.to_owned()).collect();
            assert_eq!(files, listed);
        }
    }

    /// A recorded sum decides: apply, record, nothing, or refuse naming version and file.
    #[test]
    fn an_edited_file_is_refused() {
        let first = SQLITE[0];
        assert_eq!(first.decide(None).unwrap(), Step::Apply);
        assert_eq!(first.decide(Some(None)).unwrap(), Step::Record);
        assert_eq!(
            first.decide(Some(Some(first.checksum()))).unwrap(),
            Step::Nothing
        );
        let refused = first.decide(Some(Some("0".repeat(64)))).unwrap_err();
        let said = refused.to_string();
        assert!(
            said.contains("migration 1") && said.contains("migrations/sqlite/0001_tasks.sql"),
            "{said}"
        );
    }
}
