//! Fresh databases for tests, on SQLite always and on PostgreSQL when
//! `MARKETBRIDGE_TEST_POSTGRES_URL` names a server (CI always sets it, and a
//! test fails when that server cannot be reached).
//!
//! [`backend_test!`](crate::backend_test) turns one async test body into a
//! test per backend.

use sea_orm::sqlx;
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
        // Boxed: a whole test is a large future, and debug builds copy it
        // on the test thread's stack at every level that awaits it.
        Some(database) => Box::pin(body(database)).await,
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

/// A slice of the PostgreSQL server of [`POSTGRES_ENV`] for one test that
/// creates databases and roles of its own (the `postgres` driver): every
/// name it makes starts with `prefix`, and all of them are dropped when the
/// value goes.
pub struct PostgresSandbox {
    /// The admin URL.
    pub admin_url: String,
    /// The name prefix of this test's databases and roles.
    pub prefix: String,
}

/// A name in double quotes, for the clean-up of names the test made.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl PostgresSandbox {
    /// A sandbox, or `None` (with a note) when no server is configured.
    pub fn open() -> Option<PostgresSandbox> {
        let Some(admin_url) = std::env::var(POSTGRES_ENV).ok().filter(|v| !v.is_empty()) else {
            eprintln!("skipping: {POSTGRES_ENV} is not set");
            return None;
        };
        let id = uuid::Uuid::new_v4();
        Some(PostgresSandbox {
            admin_url,
            prefix: format!("mbs{}_", &id.simple().to_string()[..8]),
        })
    }

    /// A connection as the admin.
    pub async fn admin(&self) -> sqlx::PgConnection {
        use sqlx::Connection;
        sqlx::PgConnection::connect(&self.admin_url)
            .await
            .expect("admin connection")
    }

    /// Runs SQL the test wrote itself, as the admin.
    pub async fn admin_execute(&self, sql: &str) {
        let mut admin = self.admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// A URL of `database` as `user`, without password (a server that
    /// trusts loopback still checks the role may log in and connect).
    pub fn url_as(&self, user: &str, database: &str) -> String {
        let mut url =
            url::Url::parse(&database_url_with_name(&self.admin_url, database)).expect("admin URL");
        url.set_username(user).expect("user");
        url.set_password(None).expect("password");
        url.to_string()
    }

    /// The SCRAM verifier the server keeps for `role` (`None`: no password).
    pub async fn stored_verifier(&self, role: &str) -> Option<String> {
        let mut admin = self.admin().await;
        sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
            .bind(role)
            .fetch_one(&mut admin)
            .await
            .expect("the role exists")
    }

    /// True when a database of that name exists.
    pub async fn database_exists(&self, name: &str) -> bool {
        let mut admin = self.admin().await;
        sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_optional(&mut admin)
            .await
            .expect("query")
            .is_some()
    }

    /// How many of `names` are roles.
    pub async fn roles_named(&self, names: &[String]) -> i64 {
        let mut admin = self.admin().await;
        sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)")
            .bind(names.to_vec())
            .fetch_one(&mut admin)
            .await
            .expect("query")
    }

    /// Points the `postgres` driver's configuration at this server.
    pub fn configure(&self, config: &mut marketbridge_config::Config) {
        config.provisioning.postgres_admin_url = self.admin_url.clone();
    }

    /// Databases and roles outside every test's sandbox, as
    /// `(databases, roles)`.
    pub async fn others(&self) -> (Vec<String>, Vec<String>) {
        let mut admin = self.admin().await;
        let databases = sqlx::query_scalar(
            "SELECT datname FROM pg_database WHERE datname NOT LIKE 'mb%' ORDER BY 1",
        )
        .fetch_all(&mut admin)
        .await
        .expect("query");
        let roles = sqlx::query_scalar(
            "SELECT rolname FROM pg_roles WHERE rolname NOT LIKE 'mb%' ORDER BY 1",
        )
        .fetch_all(&mut admin)
        .await
        .expect("query");
        (databases, roles)
    }
}

impl Drop for PostgresSandbox {
    fn drop(&mut self) {
        use sqlx::Connection;
        let admin_url = self.admin_url.clone();
        let pattern = format!("{}%", self.prefix);
        // Dropping needs async I/O; do it on a thread of its own.
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await else {
                    return;
                };
                let databases: Vec<String> =
                    sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE $1")
                        .bind(&pattern)
                        .fetch_all(&mut admin)
                        .await
                        .unwrap_or_default();
                let roles: Vec<String> =
                    sqlx::query_scalar("SELECT rolname FROM pg_roles WHERE rolname LIKE $1")
                        .bind(&pattern)
                        .fetch_all(&mut admin)
                        .await
                        .unwrap_or_default();
                let statements = databases
                    .iter()
                    .map(|name| format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quoted(name)))
                    .chain(
                        roles
                            .iter()
                            .map(|name| format!("DROP ROLE IF EXISTS {}", quoted(name))),
                    );
                for sql in statements {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                        .execute(&mut admin)
                        .await;
                }
            });
        })
        .join();
    }
}

/// The tables every service has ([`crate::migrations::shared`]), as a
/// migrator for tests of the storage crate.
struct SharedTables;

impl sea_orm_migration::MigratorTrait for SharedTables {
    fn migrations() -> Vec<Box<dyn sea_orm_migration::MigrationTrait>> {
        crate::migrations::shared()
    }
}

/// `database` opened as a service opens its own ([`crate::connect`]), with
/// the tables every service has.
pub async fn open_with_shared_tables(database: &TestDatabase) -> sea_orm::DatabaseConnection {
    use sea_orm_migration::MigratorTrait;
    let db = crate::connect(database.url()).await.expect("connect");
    SharedTables::up(&db, None).await.expect("migrate");
    db
}

/// The SQL statements every connection of this process sent, with how many
/// times each was sent, once [`record_statements`] was called (a test's own
/// process; nextest runs each test in one). Used to check that every lookup
/// has an index, and to count the statements a call costs.
static RECORDED: std::sync::OnceLock<std::sync::Mutex<std::collections::BTreeMap<String, u64>>> =
    std::sync::OnceLock::new();

/// Starts recording the statements of every connection opened from now on
/// (see [`recorded_statements`] and [`statement_counts`]).
pub fn record_statements() {
    let _ = RECORDED.set(std::sync::Mutex::new(std::collections::BTreeMap::new()));
}

/// Every distinct statement (with its placeholders) sent since
/// [`record_statements`].
pub fn recorded_statements() -> Vec<String> {
    statement_counts().into_keys().collect()
}

/// Every distinct statement sent since [`record_statements`], with the
/// number of times it was sent. Subtract two snapshots to count what one
/// call cost.
pub fn statement_counts() -> std::collections::BTreeMap<String, u64> {
    RECORDED
        .get()
        .map(|counts| counts.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .unwrap_or_default()
}

/// The statements sent between two snapshots of [`statement_counts`], with
/// how many times each was sent; the total is the sum of the values.
pub fn statements_between(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> std::collections::BTreeMap<String, u64> {
    after
        .iter()
        .filter_map(|(sql, count)| {
            let sent = count - before.get(sql).copied().unwrap_or(0);
            (sent > 0).then(|| (sql.clone(), sent))
        })
        .collect()
}

/// Makes `db` report its statements when recording is on.
pub(crate) fn observe(db: &mut sea_orm::DatabaseConnection) {
    if let Some(counts) = RECORDED.get() {
        db.set_metric_callback(move |info| {
            *counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry(info.statement.sql.clone())
                .or_default() += 1;
        });
    }
}

/// How long a cache's listener may take to listen, or a replica's change to
/// reach a cache, in the cache tests: generous, not a measure of speed.
pub const CACHE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// Waits until `cache` serves (on PostgreSQL, once its listener listens).
pub async fn until_cache_serves<V>(cache: &crate::row_cache::RowCache<V>) {
    let deadline = std::time::Instant::now() + CACHE_PATIENCE;
    while !cache.serving() {
        assert!(
            std::time::Instant::now() < deadline,
            "the change listener never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads with `read` until a read comes from `cache` (a hit, and no
/// statement sent to any database) and returns what it read, checked equal
/// to the read before it. On PostgreSQL the notification of this process's
/// own last write may still be on its way: its arrival empties the cache
/// once more, so the first tries may miss. Needs [`record_statements`].
pub async fn read_from_cache<V, T, F, Fut>(cache: &crate::row_cache::RowCache<V>, read: F) -> T
where
    T: PartialEq + std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = std::time::Instant::now() + CACHE_PATIENCE;
    loop {
        let first = read().await;
        let hits = cache.hits();
        let before = statement_counts();
        let second = read().await;
        let sent = statements_between(&before, &statement_counts());
        if cache.hits() == hits + 1 {
            assert!(sent.is_empty(), "a hit sends nothing: {sent:?}");
            assert_eq!(first, second);
            return second;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the row was never served from the cache"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads with `read` until `check` accepts the answer (a change another
/// replica made reaching this one); `what` names the change for the
/// failure.
pub async fn until_read<T, F, Fut>(what: &str, read: F, check: impl Fn(&T) -> bool)
where
    T: std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = std::time::Instant::now() + CACHE_PATIENCE;
    loop {
        let answer = read().await;
        if check(&answer) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what} never became visible: still {answer:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `url` with its host spelled `localhost`: the same database to PostgreSQL,
/// another database to this process's change generations, as if a second
/// replica opening it ran in a process of its own.
pub fn spelled_otherwise(url: &str) -> String {
    let mut parsed = url::Url::parse(url).expect("a database URL");
    parsed.set_host(Some("localhost")).expect("a host");
    parsed.to_string()
}

/// One line of SQLite's `EXPLAIN QUERY PLAN`: its id, the id of the line it
/// sits under (0 at the top) and what it does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLine {
    pub id: i64,
    pub parent: i64,
    pub detail: String,
}

/// How SQLite would run `sql` (each `EXPLAIN QUERY PLAN` line), with every
/// parameter bound to NULL; `None` when `sql` does not fit this database (a
/// table it does not have).
pub async fn sqlite_query_plan_lines(
    db: &sea_orm::DatabaseConnection,
    sql: &str,
) -> Option<Vec<PlanLine>> {
    let statement = Statement::from_sql_and_values(
        DbBackend::Sqlite,
        format!("EXPLAIN QUERY PLAN {sql}"),
        vec![sea_orm::Value::String(None); sqlite_parameters(sql)],
    );
    let rows = db.query_all_raw(statement).await.ok()?;
    rows.iter()
        .map(|row| {
            Some(PlanLine {
                id: row.try_get("", "id").ok()?,
                parent: row.try_get("", "parent").ok()?,
                detail: row.try_get("", "detail").ok()?,
            })
        })
        .collect()
}

/// The `detail` of each line of [`sqlite_query_plan_lines`].
pub async fn sqlite_query_plan(db: &sea_orm::DatabaseConnection, sql: &str) -> Option<Vec<String>> {
    let lines = sqlite_query_plan_lines(db, sql).await?;
    Some(lines.into_iter().map(|line| line.detail).collect())
}

/// How many parameters SQLite sees in `sql`: `?N` is parameter N (and may
/// come back), a bare `?` is the one after the highest so far.
fn sqlite_parameters(sql: &str) -> usize {
    let mut highest = 0;
    for rest in sql.split('?').skip(1) {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        highest = match digits.parse::<usize>() {
            Ok(number) => highest.max(number),
            Err(_) => highest + 1,
        };
    }
    highest
}

/// The crash tests' writer: runs the test `name` of the calling test binary
/// as a child process with the environment variable `env` set, reads the
/// `ack <id>` lines it prints (one per write it saw committed) until `count`
/// came, kills it with SIGKILL mid-stream and returns the acknowledged ids.
pub async fn acknowledged_before_sigkill(
    name: &str,
    env: (&str, &str),
    count: usize,
) -> std::collections::BTreeSet<String> {
    use std::io::BufRead;
    let mut process = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env.0, env.1)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("the child starts");
    let stdout = process.stdout.take().expect("stdout");
    let acked = tokio::task::spawn_blocking(move || {
        let mut acked = std::collections::BTreeSet::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(id) = line.strip_prefix("ack ") {
                acked.insert(id.to_owned());
                if acked.len() == count {
                    break;
                }
            }
        }
        acked
    })
    .await
    .expect("reader");
    process.kill().expect("SIGKILL");
    let status = process.wait().expect("the child ends");
    assert!(!status.success(), "the child was killed: {status:?}");
    assert_eq!(acked.len(), count, "the child acknowledged writes");
    acked
}
