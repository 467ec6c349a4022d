//! Test support: a fresh PostgreSQL database per test, on the loopback server.

#![allow(dead_code)] // each test binary uses its own subset

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// Admin URL of the test server; `THREEPORT_TEST_POSTGRES_URL` overrides it.
pub fn admin_url() -> String {
    std::env::var("THREEPORT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates an empty database and returns its URL. Panics (never skips) if PostgreSQL is not
/// reachable: `./scripts/test` starts it.
pub async fn fresh_postgres() -> String {
    let admin = admin_url();
    let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is required at {admin} (./scripts/test starts it): {e}")
    });
    let name = format!("threeport_test_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let base = admin.rsplit_once('/').expect("admin URL has a database").0;
    format!("{base}/{name}")
}
