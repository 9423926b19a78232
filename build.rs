//! Embeds the schema migrations: writes `OUT_DIR/migrations.rs` listing every
//! `migrations/{sqlite,postgres}/NNNN_description.sql` with its text
//! (`include_str!`), which `store::migrations` turns into sqlx migrators.
//! This replaces sqlx's `migrate!` macro, whose proc-macro crate compiled
//! sqlx and both database drivers a second time for the host.

use std::fmt::Write as _;
use std::path::Path;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    // A directory here means any file in it: a new migration reruns this.
    println!("cargo:rerun-if-changed=migrations");
    let root = std::env::var("CARGO_MANIFEST_DIR")?;
    let mut out = String::new();
    for (backend, constant) in [("sqlite", "SQLITE"), ("postgres", "POSTGRES")] {
        let dir = Path::new(&root).join("migrations").join(backend);
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_some_and(|ext| ext == "sql") {
                files.push(path);
            }
        }
        files.sort();
        writeln!(out, "pub(super) const {constant}: &[(i64, &str, &str)] = &[")?;
        for path in files {
            let named = || format!("{}: a migration is named NNNN_description.sql", path.display());
            let stem = path.file_stem().and_then(|s| s.to_str()).ok_or_else(named)?;
            let (version, description) = stem.split_once('_').ok_or_else(named)?;
            let version: i64 = version.parse().map_err(|_| named())?;
            // As sqlx names them, so `_sqlx_migrations` rows read the same.
            let description = description.replace('_', " ");
            let file = path.to_str().ok_or_else(named)?;
            writeln!(out, "    ({version}, {description:?}, include_str!({file:?})),")?;
        }
        writeln!(out, "];")?;
    }
    let target = Path::new(&std::env::var("OUT_DIR")?).join("migrations.rs");
    std::fs::write(&target, out).map_err(|e| format!("writing {}: {e}", target.display()))?;
    Ok(())
}
