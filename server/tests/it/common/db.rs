//! Test databases: a fresh SQLite file in a temporary folder, or a fresh
//! PostgreSQL database `tandem_test_<random>` on the server that
//! `TANDEM_TEST_POSTGRES_URL` names (e.g.
//! `postgres://postgres@127.0.0.1:5432/postgres`), dropped (`WITH (FORCE)`)
//! when the test lets go of it.
//!
//! `TANDEM_TEST_BACKEND=postgres` runs every test that does not need a
//! file on PostgreSQL: `TestDir::new` and `test_store` then give a fresh
//! PostgreSQL database. Tests that inspect or break the SQLite file itself
//! (a full tmpfs, a read-only or unreadable file, SQLite's own migrations
//! and counters) ask for `TestDir::sqlite` and stay on SQLite.

use std::path::Path;
use std::sync::Arc;

use sqlx::Connection;
use tandem::store::Store;

/// The PostgreSQL server for tests, if any.
pub fn postgres_url() -> Option<String> {
    std::env::var("TANDEM_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
}

/// Whether tests run on PostgreSQL (`TANDEM_TEST_BACKEND=postgres`).
pub fn postgres_backend() -> bool {
    let on = std::env::var("TANDEM_TEST_BACKEND").is_ok_and(|b| b == "postgres");
    if on && postgres_url().is_none() {
        panic!("TANDEM_TEST_BACKEND=postgres needs TANDEM_TEST_POSTGRES_URL");
    }
    on
}

/// A database of its own on the test server; dropped on drop.
pub struct PgDatabase {
    admin_url: String,
    pub name: String,
    /// What the server is given.
    pub url: String,
}

impl PgDatabase {
    /// Creates a fresh database, or returns `None` (saying so) when
    /// `TANDEM_TEST_POSTGRES_URL` is not set.
    pub async fn create() -> Option<PgDatabase> {
        let Some(admin_url) = postgres_url() else {
            eprintln!("skipped: TANDEM_TEST_POSTGRES_URL is not set");
            return None;
        };
        let name = format!("tandem_test_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect to TANDEM_TEST_POSTGRES_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        conn.close().await.ok();
        let url = with_database(&admin_url, &name);
        Some(PgDatabase {
            admin_url,
            name,
            url,
        })
    }
}

/// `url` with its database (the path) replaced by `name`.
pub fn with_database(url: &str, name: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("TANDEM_TEST_POSTGRES_URL parses");
    parsed.set_path(&format!("/{name}"));
    parsed.to_string()
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Drop may run inside an async test: a thread of its own with a
        // runtime of its own, joined, so the database is gone when it ends.
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}

/// Where a test server keeps its data: a temporary folder (its SQLite
/// file, and anything else a test puts there) and, on PostgreSQL, its
/// database. Restarting a server on the same `TestDir` finds its data.
pub struct TestDir {
    pub tmp: Arc<tempfile::TempDir>,
    pub pg: Option<PgDatabase>,
}

impl TestDir {
    /// On the backend the switch selects.
    pub async fn new() -> TestDir {
        if postgres_backend() {
            TestDir::postgres()
                .await
                .expect("TANDEM_TEST_POSTGRES_URL is set")
        } else {
            TestDir::sqlite()
        }
    }

    /// Always SQLite: for tests about the file itself.
    pub fn sqlite() -> TestDir {
        TestDir::sqlite_in(Arc::new(tempfile::tempdir().expect("temp dir")))
    }

    /// SQLite in a folder the test made (a tmpfs, say).
    pub fn sqlite_in(tmp: Arc<tempfile::TempDir>) -> TestDir {
        TestDir { tmp, pg: None }
    }

    /// A fresh PostgreSQL database; `None` (saying so) without
    /// `TANDEM_TEST_POSTGRES_URL`.
    pub async fn postgres() -> Option<TestDir> {
        let pg = PgDatabase::create().await?;
        Some(TestDir {
            tmp: Arc::new(tempfile::tempdir().expect("temp dir")),
            pg: Some(pg),
        })
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    pub fn is_postgres(&self) -> bool {
        self.pg.is_some()
    }

    /// The server's `TANDEM_DATABASE_URL`.
    pub fn db_url(&self) -> String {
        match &self.pg {
            Some(pg) => pg.url.clone(),
            None => format!("sqlite://{}/data/tandem.db", self.path().display()),
        }
    }
}

/// A fresh store on the backend the switch selects, for tests of the store
/// itself. Keep the `TestDir` as long as the store.
pub async fn test_store() -> (TestDir, Arc<dyn Store>) {
    let dir = TestDir::new().await;
    let store = tandem::store::open(&dir.db_url())
        .await
        .expect("store opens");
    (dir, store)
}

/// Two `i64`s one query returns, on either backend (counting rows, say).
pub async fn query_pair(url: &str, sql: &str) -> (i64, i64) {
    if url.starts_with("postgres") {
        let mut conn = sqlx::PgConnection::connect(url).await.expect("open db");
        let pair = sqlx::query_as(sql)
            .fetch_one(&mut conn)
            .await
            .expect("query");
        conn.close().await.ok();
        pair
    } else {
        let pool = sqlx::SqlitePool::connect(url).await.expect("open db");
        let pair = sqlx::query_as(sql).fetch_one(&pool).await.expect("query");
        pool.close().await;
        pair
    }
}
