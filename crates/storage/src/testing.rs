//! Fresh databases for tests, on SQLite always and on PostgreSQL when
//! `MARKETBRIDGE_TEST_POSTGRES_URL` names a server (CI always sets it, and a
//! test fails when that server cannot be reached).
//!
//! [`backend_test!`](crate::backend_test) turns one async test body into a
//! test per backend.

use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use std::future::Future;
use std::path::PathBuf;

/// Environment variable with an admin URL of the PostgreSQL server tests may
/// create databases on, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
pub const POSTGRES_ENV: &str = "MARKETBRIDGE_TEST_POSTGRES_URL";

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestBackend {
    /// A SQLite file in a temporary folder.
    Sqlite,
    /// A new database on the PostgreSQL server of `POSTGRES_ENV`.
    Postgres,
}

/// A database that exists for the lifetime of this value.
#[derive(Debug)]
pub struct TestDatabase {
    url: String,
    backend: TestBackend,
    folder: Option<PathBuf>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// Creates a fresh database. `None` when the backend is PostgreSQL and
    /// `POSTGRES_ENV` is unset.
    pub async fn create(backend: TestBackend) -> Option<TestDatabase> {
        match backend {
            TestBackend::Sqlite => {
                let folder = std::env::temp_dir().join(format!(
                    "marketbridge-test-{}",
                    uuid::Uuid::new_v4().simple()
                ));
                std::fs::create_dir_all(&folder).expect("create a temporary folder");
                let url = format!("sqlite://{}?mode=rwc", folder.join("test.db").display());
                Some(TestDatabase {
                    url,
                    backend,
                    folder: Some(folder),
                    postgres: None,
                })
            }
            TestBackend::Postgres => {
                let admin_url = std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty())?;
                let name = format!("mb_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(admin_url.as_str())
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{POSTGRES_ENV} is set but PostgreSQL is unreachable: {e}")
                    });
                admin
                    .execute_raw(Statement::from_string(
                        DbBackend::Postgres,
                        format!("CREATE DATABASE \"{name}\""),
                    ))
                    .await
                    .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
                let _ = admin.close().await;
                let url = database_url_with_name(&admin_url, &name);
                Some(TestDatabase {
                    url,
                    backend,
                    folder: None,
                    postgres: Some((admin_url, name)),
                })
            }
        }
    }

    /// Another fresh database on the same backend (a second service).
    pub async fn sibling(&self) -> TestDatabase {
        TestDatabase::create(self.backend)
            .await
            .expect("the backend was available a moment ago")
    }

    /// The URL to connect to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend.
    pub fn backend(&self) -> TestBackend {
        self.backend
    }
}

/// The admin URL with its database name replaced.
pub fn database_url_with_name(admin_url: &str, name: &str) -> String {
    match url::Url::parse(admin_url) {
        Ok(mut url) => {
            url.set_path(&format!("/{name}"));
            url.to_string()
        }
        Err(_) => format!("{}/{name}", admin_url.trim_end_matches('/')),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Some(folder) = self.folder.take() {
            let _ = std::fs::remove_dir_all(folder);
        }
        if let Some((admin_url, name)) = self.postgres.take() {
            // Dropping needs async I/O; do it on a thread of its own so this
            // works inside and outside a runtime.
            let _ = std::thread::spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    if let Ok(admin) = Database::connect(admin_url.as_str()).await {
                        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        let _ = admin
                            .execute_raw(Statement::from_string(DbBackend::Postgres, sql))
                            .await;
                        let _ = admin.close().await;
                    }
                });
            })
            .join();
        }
    }
}

/// Runs `body` against a fresh database of `backend`; on PostgreSQL without
/// `POSTGRES_ENV` it says so and returns.
pub async fn run_on<F, Fut>(backend: TestBackend, body: F)
where
    F: FnOnce(TestDatabase) -> Fut,
    Fut: Future<Output = ()>,
{
    match TestDatabase::create(backend).await {
        Some(database) => body(database).await,
        None => eprintln!("skipping the PostgreSQL run: {POSTGRES_ENV} is not set"),
    }
}

/// Declares a test module with one test per backend running the same async
/// body, which receives a fresh [`TestDatabase`].
///
/// ```ignore
/// marketbridge_storage::backend_test!(creates_accounts, |db| async move { ... });
/// ```
#[macro_export]
macro_rules! backend_test {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::testing::run_on($crate::testing::TestBackend::Sqlite, $body).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::testing::run_on($crate::testing::TestBackend::Postgres, $body).await;
            }
        }
    };
}
