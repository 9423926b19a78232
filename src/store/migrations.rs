//! The schema migrations of both stores, embedded in the binary (build.rs
//! lists `migrations/sqlite` and `migrations/postgres`) and applied at
//! start-up. Versions, descriptions and checksums are what sqlx's own
//! `migrate!` macro recorded, so databases migrated by earlier builds carry
//! on.

use std::borrow::Cow;
use std::sync::LazyLock;

use sqlx::migrate::{Migration, MigrationType, Migrator};

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

pub(super) static SQLITE_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrator(SQLITE));
pub(super) static POSTGRES_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| migrator(POSTGRES));

fn migrator(files: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    let migrations: Vec<Migration> = files
        .iter()
        .map(|&(version, description, sql)| {
            let no_tx = sql.starts_with("-- no-transaction");
            Migration::new(version, Cow::Borrowed(description), MigrationType::Simple, Cow::Borrowed(sql), no_tx)
        })
        .collect();
    Migrator { migrations: Cow::Owned(migrations), ..Migrator::DEFAULT }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// Every file of each folder is embedded, in version order, and both
    /// stores have the same migrations.
    #[test]
    fn every_migration_file_is_embedded_in_order() {
        for (folder, embedded) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(folder);
            let files = std::fs::read_dir(dir).unwrap().count();
            assert_eq!(embedded.len(), files, "{folder}");
            let versions: Vec<i64> = embedded.iter().map(|m| m.0).collect();
            assert!(versions.windows(2).all(|w| w[0] < w[1]), "{folder}: {versions:?}");
            assert_eq!(versions, (1..=files as i64).collect::<Vec<_>>(), "{folder}");
        }
        let names = |list: &[(i64, &str, &str)]| list.iter().map(|m| m.1.to_string()).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
        assert_eq!(SQLITE[0].1, "initial");
        assert_eq!(SQLITE[4].1, "notification keys by time");
    }
}
