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

    /// A migration that has run is never edited: databases record each
    /// one's SHA-384 and refuse to start when it changes. These are the
    /// first bytes of each checksum as released.
    #[test]
    fn released_migrations_keep_their_checksums() {
        let released: [(&LazyLock<Migrator>, [&str; 8]); 2] = [
            (
                &SQLITE_MIGRATOR,
                [
                    "cf9894fcbd030f2fc53a3f55",
                    "fdb7ee2bee29cfb7934226ba",
                    "26d18e3dadcb35cd4648c9c7",
                    "030a74c33e12b1ffe51326ee",
                    "0ae55378d5d8e64487d027ff",
                    "f31e3b1a52f37e0e30fbdb2f",
                    "8369469b7006c3a17cf33052",
                    "575b6c49ab39dc078d2211b4",
                ],
            ),
            (
                &POSTGRES_MIGRATOR,
                [
                    "05b7961e3d4c18af978230ee",
                    "fdb7ee2bee29cfb7934226ba",
                    "0ece85a74d99344ed497ecc4",
                    "1cd7e31474c0e4c006220ba7",
                    "8d61fbc1b484c75aee5dc8e8",
                    "839aa5e507631b1b40ee8a87",
                    "e29d7c202efd82303deb66ae",
                    "68d3773ae3573d743cfa8e4d",
                ],
            ),
        ];
        for (migrator, checksums) in released {
            for (migration, expected) in migrator.iter().zip(checksums) {
                let found: String = migration.checksum.iter().map(|b| format!("{b:02x}")).collect();
                assert!(found.starts_with(expected), "migration {} changed: {found}", migration.version);
            }
        }
    }

    /// 0008 rebuilds SQLite's `events` (its envelope id may now be null):
    /// a database at 0007 with events and their deliveries keeps every row,
    /// and the foreign keys and unique keys still hold afterwards.
    #[tokio::test]
    async fn an_sqlite_database_with_events_upgrades_to_0008_keeping_them() {
        use sqlx::sqlite::SqliteConnectOptions;
        let dir = tempfile::tempdir().unwrap();
        let options =
            SqliteConnectOptions::new().filename(dir.path().join("old.db")).create_if_missing(true).foreign_keys(true);
        let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
        migrator(&SQLITE[..7]).run(&pool).await.unwrap();
        for statement in [
            "INSERT INTO envelopes (envelope_id, account_id, status, created_at, updated_at) VALUES ('e1', 'a1', 'processed', 1, 1)",
            "INSERT INTO events (id, envelope_id, rule, event_type, body, created_at, ordinal) VALUES ('v1', 'e1', 'onboarding', 't', '{}', 5, 2)",
            "INSERT INTO deliveries (event_id, sink, state, attempts, created_at, updated_at) VALUES ('v1', 'hr', 'delivered', 1, 5, 5)",
        ] {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
        SQLITE_MIGRATOR.run(&pool).await.unwrap();

        let event: (String, Option<String>, Option<String>, i64) =
            sqlx::query_as("SELECT id, envelope_id, agreement_id, ordinal FROM events").fetch_one(&pool).await.unwrap();
        assert_eq!(event, ("v1".into(), Some("e1".into()), None, 2));
        let deliveries: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM deliveries").fetch_one(&pool).await.unwrap();
        assert_eq!(deliveries, 1);
        let broken: Vec<(String,)> =
            sqlx::query_as("SELECT \"table\" FROM pragma_foreign_key_check").fetch_all(&pool).await.unwrap();
        assert!(broken.is_empty(), "{broken:?}");
        // The keys the code relies on: one event per (envelope, rule), an event names something.
        let twice = "INSERT INTO events (id, envelope_id, rule, event_type, body, created_at) VALUES ('v2', 'e1', 'onboarding', 't', '{}', 6)";
        assert!(sqlx::query(twice).execute(&pool).await.is_err());
        let orphan = "INSERT INTO events (id, rule, event_type, body, created_at) VALUES ('v3', 'r', 't', '{}', 6)";
        assert!(sqlx::query(orphan).execute(&pool).await.is_err());
        let dangling = "INSERT INTO deliveries (event_id, sink, state, attempts, created_at, updated_at) VALUES ('nope', 'hr', 'pending', 0, 1, 1)";
        assert!(sqlx::query(dangling).execute(&pool).await.is_err());
    }
}
