//! What the benchmarks share.

use sqlx::{Connection, Executor};

pub fn postgres_admin_url() -> String {
    std::env::var("POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Creates `countersign_bench_<random>`; returns its URL and name.
pub async fn fresh_postgres() -> (String, String) {
    let admin = postgres_admin_url();
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("PostgreSQL at POSTGRES_URL");
    let name = format!("countersign_bench_{}", uuid::Uuid::new_v4().simple());
    conn.execute(format!("CREATE DATABASE \"{name}\"").as_str()).await.unwrap();
    let mut url = url::Url::parse(&admin).unwrap();
    url.set_path(&name);
    (url.to_string(), name)
}

pub async fn drop_postgres(name: &str) {
    let mut conn = sqlx::PgConnection::connect(&postgres_admin_url()).await.unwrap();
    conn.execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str()).await.unwrap();
}
