//! The `postgres` driver against the real PostgreSQL server named by
//! `MARKETBRIDGE_TEST_POSTGRES_URL` (skipped, with a note, when it is unset).
//!
//! That server trusts every loopback connection, so it never checks a
//! password. The tests therefore prove credentials two ways the server does
//! check: connecting as a role (refused unless the role may log in, the
//! database accepts connections, the role may connect to it and the
//! connection limit allows it), and comparing the SCRAM verifier the server
//! stores with the password handed to the customer (the same computation the
//! server does when password authentication is on).
//!
//! The driver runs as an admin that is not a superuser (CREATEDB and
//! CREATEROLE only), made by each test; the superuser of the test URL only
//! sets the scene and inspects.

use marketbridge_catalog::{Catalog, Product};
use marketbridge_config::ProvisioningOptions;
use marketbridge_core::ErrorCode;
use marketbridge_core::ids::{AccountId, ResourceId};
use marketbridge_provisioning::driver::postgres::PostgresDriver;
use marketbridge_provisioning::driver::postgres::console as console_caps;
use marketbridge_provisioning::driver::postgres::names::{quote_identifier, quote_literal};
use marketbridge_provisioning::driver::postgres::scram;
use marketbridge_provisioning::driver::postgres::settings::ServerSettings;
use marketbridge_provisioning::driver::{Driver, DriverContext, Provisioned, Secret};
use marketbridge_storage::testing::PostgresSandbox;
use sea_orm::sqlx::{self, Connection, PgConnection};
use serde_json::{Value as Json, json};

/// The server slice of one test, with the driver and catalog over it.
struct Sandbox {
    inner: PostgresSandbox,
    /// The driver's admin role: CREATEDB and CREATEROLE, not a superuser.
    driver_admin: String,
}

impl std::ops::Deref for Sandbox {
    type Target = PostgresSandbox;

    fn deref(&self) -> &PostgresSandbox {
        &self.inner
    }
}

impl Sandbox {
    /// The slice, with an admin role for the driver that connects to a
    /// database of its own (so it needs no CONNECT on `postgres`).
    async fn open() -> Option<Sandbox> {
        let inner = PostgresSandbox::open()?;
        let driver_admin = format!("{}admin", inner.prefix);
        let quoted = quote_identifier(&driver_admin).unwrap();
        inner
            .admin_execute(&format!("CREATE ROLE {quoted} LOGIN CREATEDB CREATEROLE"))
            .await;
        inner
            .admin_execute(&format!("CREATE DATABASE {quoted} OWNER {quoted}"))
            .await;
        // As README asks of the provider's own databases.
        inner
            .admin_execute(&format!("REVOKE CONNECT ON DATABASE {quoted} FROM PUBLIC"))
            .await;
        Some(Sandbox {
            inner,
            driver_admin,
        })
    }

    /// The URL the driver connects with.
    fn driver_admin_url(&self) -> String {
        self.url_as(&self.driver_admin, &self.driver_admin)
    }

    fn options(&self) -> ProvisioningOptions {
        ProvisioningOptions {
            postgres_admin_url: self.driver_admin_url(),
            postgres_deletion_grace_seconds: 3600,
            ..ProvisioningOptions::default()
        }
    }

    fn driver(&self) -> PostgresDriver {
        PostgresDriver::from_options(&self.options())
            .expect("valid options")
            .expect("an admin URL is set")
    }

    fn catalog(&self) -> Catalog {
        let text = format!(
            r#"
[[products]]
id = "pg"
name = "Postgres"
driver = "postgres"
  [products.postgres]
  name_prefix = "{prefix}"
  storage_metric = "storage_mb"
  connections_metric = "connections"
  [products.postgres.environments.preview]
  host = "preview.db.internal"
  port = 6432
  url_parameters = "sslmode=disable"

  [[products.plans]]
  id = "small"
  name = "Small"
  limits = {{ max_connections = 2, storage_mb = 1 }}
    [[products.plans.metrics]]
    id = "storage_mb"
    name = "Storage"
    unit = "MB"
    kind = "total"
    [[products.plans.metrics]]
    id = "connections"
    name = "Connections"
    unit = "connections"
    kind = "total"

  [[products.plans]]
  id = "large"
  name = "Large"
  limits = {{ max_connections = 20, storage_mb = 1024 }}
"#,
            prefix = self.prefix
        );
        Catalog::from_toml_str(&text).expect("test catalog")
    }
}

/// A resource as the provisioning service would describe it to the driver.
struct Resource {
    id: String,
    account_id: String,
    name: String,
    metadata: Json,
    state: Json,
}

impl Resource {
    fn new(name: &str) -> Self {
        Resource {
            id: ResourceId::generate().into_string(),
            account_id: AccountId::generate().into_string(),
            name: name.to_owned(),
            metadata: json!({}),
            state: Json::Null,
        }
    }

    fn context<'a>(&'a self, product: &'a Product, plan: &str) -> DriverContext<'a> {
        DriverContext {
            app_urls: &[],
            resource_id: &self.id,
            account_id: &self.account_id,
            name: &self.name,
            product,
            plan: product.plan(plan).expect("plan"),
            metadata: &self.metadata,
            state: &self.state,
        }
    }
}

fn secret<'a>(secrets: &'a [Secret], name: &str) -> &'a Secret {
    secrets
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no secret {name}"))
}

async fn stored_verifier(sandbox: &Sandbox, role: &str) -> Option<String> {
    let mut admin = sandbox.admin().await;
    sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = $1")
        .bind(role)
        .fetch_one(&mut admin)
        .await
        .expect("role exists")
}

async fn database_exists(sandbox: &Sandbox, name: &str) -> bool {
    let mut admin = sandbox.admin().await;
    sqlx::query_scalar::<_, i32>("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut admin)
        .await
        .expect("query")
        .is_some()
}

async fn roles_named(sandbox: &Sandbox, names: &[&str]) -> i64 {
    let mut admin = sandbox.admin().await;
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = ANY($1)")
        .bind(names)
        .fetch_one(&mut admin)
        .await
        .expect("query")
}

/// Waits until the server has no backend on `database` (ended backends exit
/// shortly after their client is gone); panics after 10 seconds.
async fn wait_until_no_sessions(sandbox: &Sandbox, database: &str) {
    let mut admin = sandbox.admin().await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let sessions: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
                .bind(database)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        if sessions == 0 {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "sessions on {database} did not end"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_database_is_provisioned_idempotently_and_only_its_owner_gets_in() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    let driver = sandbox.driver();
    let catalog = sandbox.catalog();
    let product = catalog.product("pg").unwrap();
    driver.check_product(product).expect("settings are valid");
    let mut resource = Resource::new("orders");
    let prepared = driver
        .prepare(&resource.context(product, "small"))
        .await
        .unwrap();
    assert!(!prepared.ready, "the database is created in the background");
    let names: Vec<&str> = prepared.secrets.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "DATABASE_URL",
            "PGHOST",
            "PGPORT",
            "PGUSER",
            "PGPASSWORD",
            "PGDATABASE"
        ]
    );
    let database = secret(&prepared.secrets, "PGDATABASE").value.clone();
    let user = secret(&prepared.secrets, "PGUSER").value.clone();
    let password = secret(&prepared.secrets, "PGPASSWORD").value.clone();
    assert_eq!(database, format!("{}{}", sandbox.prefix, resource.id));
    assert_eq!(user, format!("{database}_a"));
    assert!(password.len() >= 32);
    let url = &secret(&prepared.secrets, "DATABASE_URL").value;
    assert_eq!(
        url,
        &format!("postgresql://{user}:{password}@127.0.0.1:5432/{database}")
    );
    assert_eq!(
        secret(&prepared.secrets, "DATABASE_URL").environment_overrides["preview"],
        format!(
            "postgresql://{user}:{password}@preview.db.internal:6432/{database}?sslmode=disable"
        )
    );
    assert_eq!(
        secret(&prepared.secrets, "PGPORT").environment_overrides["preview"],
        "6432"
    );
    assert!(
        !database_exists(&sandbox, &database).await,
        "prepare has no side effects"
    );

    resource.state = prepared.state.clone();
    let context = resource.context(product, "small");
    for attempt in 0..2 {
        assert_eq!(
            driver.provision(&context, &prepared.secrets).await.unwrap(),
            Provisioned::Ready,
            "attempt {attempt}"
        );
    }
    // A run that stopped half-way (database gone, roles left) completes.
    sandbox
        .admin_execute(&format!(
            "DROP DATABASE {} WITH (FORCE)",
            quote_identifier(&database).unwrap()
        ))
        .await;
    driver.provision(&context, &prepared.secrets).await.unwrap();

    let mut customer = PgConnection::connect(url)
        .await
        .expect("DATABASE_URL connects");
    sqlx::raw_sql("CREATE TABLE orders (id serial PRIMARY KEY, item text); INSERT INTO orders (item) VALUES ('tea')")
        .execute(&mut customer)
        .await
        .expect("the customer can create a table");
    let (current, owner): (String, String) = sqlx::query_as(
        "SELECT current_user::text, tableowner::text FROM pg_tables WHERE tablename = 'orders'",
    )
    .fetch_one(&mut customer)
    .await
    .unwrap();
    assert_eq!(current, database, "sessions act as the owner role");
    assert_eq!(owner, database, "tables belong to the owner role");
    customer.close().await.unwrap();

    let verifier = stored_verifier(&sandbox, &user).await.expect("a password");
    assert!(verifier.starts_with("SCRAM-SHA-256$"));
    assert!(scram::matches(&verifier, &password));
    assert!(!scram::matches(&verifier, "not-the-password"));
    assert_eq!(
        stored_verifier(&sandbox, &database).await,
        None,
        "the owner role has no password"
    );

    let mut admin = sandbox.admin().await;
    let (limit, comment, database_owner): (i32, String, String) = sqlx::query_as(
        "SELECT datconnlimit, shobj_description(oid, 'pg_database'), datdba::regrole::text FROM pg_database WHERE datname = $1",
    )
    .bind(&database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(limit, 2, "the plan's max_connections");
    assert_eq!(
        comment, resource.id,
        "the resource id, nothing the customer typed"
    );
    assert_eq!(
        database_owner, sandbox.driver_admin,
        "the provider owns the database"
    );
    let login_limits: Vec<(String, i32, bool, bool)> = sqlx::query_as(
        "SELECT rolname::text, rolconnlimit, rolinherit, rolcanlogin FROM pg_roles WHERE rolname = ANY($1) ORDER BY 1",
    )
    .bind(vec![user.clone(), format!("{database}_b")])
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(
        login_limits,
        vec![
            (user.clone(), 2, false, true),
            (format!("{database}_b"), 2, false, false)
        ],
        "each login has the plan's limit; only the current one may log in"
    );

    // Another login role of the server cannot connect to the database.
    let stranger = format!("{}stranger", sandbox.prefix);
    sandbox
        .admin_execute(&format!(
            "CREATE ROLE {} LOGIN",
            quote_identifier(&stranger).unwrap()
        ))
        .await;
    let refused = PgConnection::connect(&sandbox.url_as(&stranger, &database))
        .await
        .expect_err("strangers are refused");
    assert!(
        refused.to_string().contains("permission denied"),
        "{refused}"
    );
    let owner_login = PgConnection::connect(&sandbox.url_as(&database, &database))
        .await
        .expect_err("the owner role cannot log in");
    assert!(
        owner_login.to_string().contains("not permitted to log in"),
        "{owner_login}"
    );

    for attempt in 0..2 {
        driver.deprovision(&context).await.unwrap_or_else(|e| {
            panic!("deprovision attempt {attempt}: {e}");
        });
    }
    assert!(!database_exists(&sandbox, &database).await);
    assert_eq!(
        roles_named(
            &sandbox,
            &[
                &database,
                &user,
                &format!("{database}_b"),
                &format!("{database}_r")
            ]
        )
        .await,
        0
    );
}

#[tokio::test]
async fn connection_limit_and_storage_quota_follow_the_plan() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    let driver = sandbox.driver();
    let catalog = sandbox.catalog();
    let product = catalog.product("pg").unwrap();
    let mut resource = Resource::new("quota");
    let prepared = driver
        .prepare(&resource.context(product, "small"))
        .await
        .unwrap();
    resource.state = prepared.state.clone();
    let small = resource.context(product, "small");
    driver.provision(&small, &prepared.secrets).await.unwrap();
    let url = secret(&prepared.secrets, "DATABASE_URL").value.clone();

    let first = PgConnection::connect(&url).await.expect("first connection");
    let second = PgConnection::connect(&url)
        .await
        .expect("second connection");
    let third = PgConnection::connect(&url)
        .await
        .expect_err("the small plan allows two connections");
    assert!(
        third.to_string().contains("too many connections"),
        "{third}"
    );

    first.close().await.unwrap();
    second.close().await.unwrap();
    let database = secret(&prepared.secrets, "PGDATABASE").value.clone();
    wait_until_no_sessions(&sandbox, &database).await;

    // An empty database is several MiB, over the small plan's 1 MiB quota.
    let measured = driver.measure(&small).await.unwrap();
    let storage = measured
        .iter()
        .find(|m| m.metric_id == "storage_mb")
        .expect("storage measured");
    assert!(storage.quantity >= 2, "{measured:?}");
    assert_eq!(
        measured
            .iter()
            .find(|m| m.metric_id == "connections")
            .map(|m| m.quantity),
        Some(0)
    );
    let mut connection = PgConnection::connect(&url).await.expect("reconnects");
    let read_only: String = sqlx::query_scalar("SHOW default_transaction_read_only")
        .fetch_one(&mut connection)
        .await
        .unwrap();
    assert_eq!(read_only, "on");
    let refused = sqlx::raw_sql("CREATE TABLE t (x int)")
        .execute(&mut connection)
        .await
        .expect_err("writes are refused over quota");
    assert!(refused.to_string().contains("read-only"), "{refused}");
    let connections = driver.measure(&small).await.unwrap();
    assert_eq!(
        connections
            .iter()
            .find(|m| m.metric_id == "connections")
            .map(|m| m.quantity),
        Some(1)
    );
    connection.close().await.unwrap();
    wait_until_no_sessions(&sandbox, &database).await;

    let large = resource.context(product, "large");
    driver.apply_plan(&large).await.unwrap();
    let mut connection = PgConnection::connect(&url).await.expect("connects");
    sqlx::raw_sql("CREATE TABLE t (x int)")
        .execute(&mut connection)
        .await
        .expect("writable again on the larger plan");
    connection.close().await.unwrap();
    let mut admin = sandbox.admin().await;
    let limit: i32 = sqlx::query_scalar("SELECT datconnlimit FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
    assert_eq!(limit, 20);
    assert!(
        driver.measure(&large).await.unwrap().is_empty(),
        "the large plan defines no metrics"
    );
    driver.deprovision(&large).await.unwrap();
}

#[tokio::test]
async fn quoting_round_trips_hostile_text_through_the_server() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    let mut admin = sandbox.admin().await;
    let hostile = [
        "plain",
        "it's",
        "back\\slash\\' and quote",
        "x'); DROP ROLE postgres; --",
        "\"; DROP DATABASE postgres; --",
        "$$ dollar $$",
        "ünïcødé ✓",
    ];
    for conforming in ["on", "off"] {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET standard_conforming_strings = {conforming}"
        )))
        .execute(&mut admin)
        .await
        .unwrap();
        for text in hostile {
            let sql = format!("SELECT {}::text", quote_literal(text).unwrap());
            let echoed: String = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                .fetch_one(&mut admin)
                .await
                .unwrap();
            assert_eq!(echoed, text, "standard_conforming_strings={conforming}");
        }
    }
    for (index, text) in hostile.iter().enumerate() {
        let name = format!("{}{index}{text}", sandbox.prefix);
        let name: String = name.chars().take(40).collect();
        let quoted = quote_identifier(&name).unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE ROLE {quoted}")))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(roles_named(&sandbox, &[&name]).await, 1, "{name}");
    }
    assert_eq!(
        roles_named(&sandbox, &["postgres"]).await,
        1,
        "nothing was dropped"
    );
}

#[tokio::test]
async fn scram_verifiers_agree_with_postgres() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    let role = format!("{}scram", sandbox.prefix);
    // The server hashes this one itself.
    sandbox
        .admin_execute(&format!(
            "SET password_encryption = 'scram-sha-256'; CREATE ROLE {} LOGIN PASSWORD 'Server-Side_pw1'",
            quote_identifier(&role).unwrap()
        ))
        .await;
    let from_server = stored_verifier(&sandbox, &role).await.unwrap();
    assert!(scram::matches(&from_server, "Server-Side_pw1"));
    assert!(!scram::matches(&from_server, "Server-Side_pw2"));
    // Ours, with the server's salt and iterations, is byte for byte the same.
    let (parameters, _) = from_server
        .strip_prefix("SCRAM-SHA-256$")
        .unwrap()
        .split_once('$')
        .unwrap();
    let (iterations, salt) = parameters.split_once(':').unwrap();
    use base64::Engine;
    let salt = base64::engine::general_purpose::STANDARD
        .decode(salt)
        .unwrap();
    assert_eq!(
        scram::verifier_with_salt("Server-Side_pw1", &salt, iterations.parse().unwrap()).unwrap(),
        from_server
    );
}

#[tokio::test]
async fn refusals_are_permanent_and_outages_are_transient() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    let catalog = sandbox.catalog();
    let product = catalog.product("pg").unwrap();

    // An admin role that may create roles but not databases.
    let weak_admin = format!("{}weak_admin", sandbox.prefix);
    let quoted = quote_identifier(&weak_admin).unwrap();
    sandbox
        .admin_execute(&format!("CREATE ROLE {quoted} LOGIN CREATEROLE"))
        .await;
    sandbox
        .admin_execute(&format!("CREATE DATABASE {quoted} OWNER {quoted}"))
        .await;
    let weak = PostgresDriver::from_options(&ProvisioningOptions {
        postgres_admin_url: sandbox.url_as(&weak_admin, &weak_admin),
        ..ProvisioningOptions::default()
    })
    .unwrap()
    .unwrap();
    let mut resource = Resource::new("weak");
    let prepared = weak
        .prepare(&resource.context(product, "small"))
        .await
        .unwrap();
    resource.state = prepared.state.clone();
    let error = weak
        .provision(&resource.context(product, "small"), &prepared.secrets)
        .await
        .expect_err("CREATE DATABASE is refused");
    assert_eq!(error.code(), ErrorCode::Unprocessable, "{error}");
    assert!(error.message().contains("42501"), "{error}");
    assert_eq!(
        error.user_message(),
        Some("The database could not be set up. The provider has been notified.")
    );
    // What was made before the refusal cannot be used.
    let login = secret(&prepared.secrets, "PGUSER").value.clone();
    let mut admin = sandbox.admin().await;
    let can_login: Option<bool> =
        sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
            .bind(&login)
            .fetch_optional(&mut admin)
            .await
            .unwrap();
    assert_ne!(
        can_login,
        Some(true),
        "the login of a failed provisioning is disabled"
    );

    // A server that is not there is worth retrying.
    let mut absent = ServerSettings::from_options(&ProvisioningOptions {
        postgres_admin_url: "postgres://postgres@127.0.0.1:1/postgres".into(),
        ..ProvisioningOptions::default()
    })
    .unwrap()
    .unwrap();
    absent.acquire_timeout = std::time::Duration::from_millis(300);
    let absent = PostgresDriver::new(absent);
    let error = absent
        .provision(&resource.context(product, "small"), &prepared.secrets)
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(error.code(), ErrorCode::Unavailable, "{error}");
    assert!(error.code().is_transient());
}

#[tokio::test]
async fn hostile_resource_ids_and_settings_never_reach_sql() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    let driver = sandbox.driver();
    let catalog = sandbox.catalog();
    let product = catalog.product("pg").unwrap();
    let mut resource = Resource::new("x");
    resource.id = "res_0'); DROP ROLE postgres; --".into();
    let error = driver
        .prepare(&resource.context(product, "small"))
        .await
        .expect_err("not a resource id");
    assert_eq!(error.code(), ErrorCode::Validation);
    let error = driver
        .provision(&resource.context(product, "small"), &[])
        .await
        .expect_err("not a resource id");
    assert_eq!(error.code(), ErrorCode::Validation);

    let hostile_prefix = Catalog::from_toml_str(
        "[[products]]\nid='p'\nname='P'\ndriver='postgres'\n[products.postgres]\nname_prefix='x\"; DROP DATABASE postgres; --'\n",
    )
    .unwrap();
    let error = driver
        .check_product(hostile_prefix.product("p").unwrap())
        .expect_err("the prefix is refused at startup");
    assert!(error.message().contains("name_prefix"), "{error}");
    let unknown_setting = Catalog::from_toml_str(
        "[[products]]\nid='p'\nname='P'\ndriver='postgres'\n[products.postgres]\ncolour='red'\n",
    )
    .unwrap();
    assert!(
        driver
            .check_product(unknown_setting.product("p").unwrap())
            .is_err()
    );
    assert_eq!(roles_named(&sandbox, &["postgres"]).await, 1);
}

#[test]
fn the_driver_is_left_out_without_an_admin_url() {
    assert!(
        PostgresDriver::from_options(&ProvisioningOptions::default())
            .unwrap()
            .is_none()
    );
    let error = PostgresDriver::from_options(&ProvisioningOptions {
        postgres_admin_url: "mysql://nope".into(),
        ..ProvisioningOptions::default()
    })
    .expect_err("not a PostgreSQL URL");
    assert!(
        error.message().contains("provisioning.postgres_admin_url"),
        "{error}"
    );
}

/// A resource provisioned by the driver, with what its customer holds.
struct Tenant {
    resource: Resource,
    secrets: Vec<Secret>,
    database: String,
    login: String,
    url: String,
}

impl Tenant {
    /// Provisions a resource called `name` on `plan`.
    async fn provision(
        driver: &PostgresDriver,
        product: &Product,
        name: &str,
        plan: &str,
    ) -> Tenant {
        let mut resource = Resource::new(name);
        let prepared = driver
            .prepare(&resource.context(product, plan))
            .await
            .unwrap();
        resource.state = prepared.state.clone();
        driver
            .provision(&resource.context(product, plan), &prepared.secrets)
            .await
            .unwrap();
        Tenant {
            database: secret(&prepared.secrets, "PGDATABASE").value.clone(),
            login: secret(&prepared.secrets, "PGUSER").value.clone(),
            url: secret(&prepared.secrets, "DATABASE_URL").value.clone(),
            secrets: prepared.secrets,
            resource,
        }
    }

    fn quoted(&self, name: &str) -> String {
        quote_identifier(name).unwrap()
    }
}

/// Runs `sql` (the customer's own text) on a new connection to `url`; the
/// server's error when it refuses.
async fn as_customer(url: &str, sql: &str) -> Result<(), String> {
    let mut connection = PgConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut connection)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string());
    let _ = connection.close().await;
    result
}

/// A value the customer reads with their own connection.
async fn customer_reads(url: &str, sql: &str) -> Result<String, String> {
    let mut connection = PgConnection::connect(url)
        .await
        .map_err(|e| e.to_string())?;
    let result = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_one(&mut connection)
        .await
        .map_err(|e| e.to_string());
    let _ = connection.close().await;
    result
}

/// The console's answer flattened to text.
async fn console(
    driver: &PostgresDriver,
    context: &DriverContext<'_>,
    secrets: &[Secret],
    input: &str,
    read_only: bool,
) -> String {
    let blocks = driver
        .console(context, secrets, input, read_only)
        .await
        .expect("the console runs");
    format!("{blocks:?}")
}

/// `url` with its database replaced.
fn with_database(url: &str, database: &str) -> String {
    let mut url = url::Url::parse(url).unwrap();
    url.set_path(&format!("/{database}"));
    url.to_string()
}

async fn can_login(sandbox: &Sandbox, role: &str) -> Option<bool> {
    let mut admin = sandbox.admin().await;
    sqlx::query_scalar("SELECT rolcanlogin FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_optional(&mut admin)
        .await
        .unwrap()
}

async fn database_limits(sandbox: &Sandbox, database: &str) -> (i32, bool) {
    let mut admin = sandbox.admin().await;
    sqlx::query_as("SELECT datconnlimit, datallowconn FROM pg_database WHERE datname = $1")
        .bind(database)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn tenants_side_by_side_cannot_lift_their_limits_or_reach_each_other() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    // What README asks of a shared server; the test URL's superuser is not
    // affected by it.
    sandbox
        .admin_execute("REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC")
        .await;
    let driver = sandbox.driver();
    let catalog = sandbox.catalog();
    let product = catalog.product("pg").unwrap();
    driver
        .start(&[product])
        .await
        .expect("the start-up step runs");
    let alpha = Tenant::provision(&driver, product, "alpha-orders", "large").await;
    let beta = Tenant::provision(&driver, product, "beta-invoices", "large").await;
    let database = alpha.quoted(&alpha.database);
    let owner = alpha.quoted(&alpha.database);
    let login = alpha.quoted(&alpha.login);
    let other_slot = alpha.quoted(&format!("{}_b", alpha.database));
    let beta_login = beta.quoted(&beta.login);
    let beta_owner = beta.quoted(&beta.database);
    let admin = alpha.quoted(&sandbox.driver_admin);
    as_customer(
        &alpha.url,
        "CREATE TABLE orders (id int); INSERT INTO orders VALUES (1)",
    )
    .await
    .expect("the customer works in their database");

    let escapes = [
        format!("ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true"),
        format!("ALTER DATABASE {database} WITH CONNECTION LIMIT -1"),
        format!("ALTER DATABASE {database} RESET ALL"),
        format!("ALTER DATABASE {database} SET default_transaction_read_only = off"),
        format!("ALTER DATABASE {database} OWNER TO {owner}"),
        format!("ALTER ROLE {login} WITH CONNECTION LIMIT -1"),
        format!("ALTER ROLE {owner} WITH CONNECTION LIMIT -1"),
        format!("ALTER ROLE {login} WITH CREATEDB"),
        format!("ALTER ROLE {login} WITH INHERIT"),
        format!("ALTER ROLE {other_slot} WITH LOGIN"),
        format!(
            "ALTER ROLE {other_slot} SET role = {}",
            quote_literal(&alpha.database).unwrap()
        ),
        format!("ALTER ROLE {login} SET default_transaction_read_only = off"),
        format!("ALTER ROLE {admin} SET default_transaction_read_only = on"),
        format!("ALTER ROLE {beta_login} WITH NOLOGIN"),
        format!("GRANT {owner} TO {beta_login}"),
        format!("GRANT {login} TO {beta_login}"),
        format!("SET ROLE NONE; GRANT {login} TO {beta_login}"),
        format!("GRANT {beta_owner} TO {login}"),
        format!("SET ROLE {beta_owner}"),
        format!("SET ROLE {admin}"),
        "CREATE DATABASE escaped".to_owned(),
        "CREATE ROLE escaped".to_owned(),
        "CREATE ROLE escaped LOGIN SUPERUSER".to_owned(),
        "CREATE SCHEMA escaped".to_owned(),
        "SET ROLE NONE; CREATE TABLE escaped (x int)".to_owned(),
    ];
    for sql in &escapes {
        let refused = as_customer(&alpha.url, sql).await;
        assert!(refused.is_err(), "the customer ran `{sql}`");
    }
    // The same through the console, which runs as the customer too.
    let context = alpha.resource.context(product, "large");
    for sql in &escapes[..6] {
        let answer = console(&driver, &context, &alpha.secrets, sql, false).await;
        assert!(
            answer.contains("ERROR"),
            "the console ran `{sql}`: {answer}"
        );
    }
    // Ending a neighbour's sessions is refused (with a warning).
    let mut beta_session = PgConnection::connect(&beta.url).await.unwrap();
    let _ = as_customer(
        &alpha.url,
        &format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}",
            quote_literal(&beta.login).unwrap()
        ),
    )
    .await;
    sqlx::query("SELECT 1")
        .execute(&mut beta_session)
        .await
        .expect("the neighbour's session lives on");
    beta_session.close().await.unwrap();
    // A grant without the grant option changes nothing.
    let _ = as_customer(
        &alpha.url,
        &format!("GRANT CONNECT ON DATABASE {database} TO PUBLIC"),
    )
    .await;
    assert_eq!(database_limits(&sandbox, &alpha.database).await, (20, true));

    // Nobody reaches a database that is not theirs.
    for (url, target) in [
        (&alpha.url, &beta.database),
        (&beta.url, &alpha.database),
        (&alpha.url, &"postgres".to_owned()),
        (&alpha.url, &"template1".to_owned()),
        (&alpha.url, &sandbox.driver_admin),
    ] {
        let refused = PgConnection::connect(&with_database(url, target)).await;
        assert!(refused.is_err(), "{url} reached {target}");
    }
    assert!(
        PgConnection::connect(&sandbox.url_as(&beta.login, &alpha.database))
            .await
            .is_err()
    );

    // The catalogs are world-readable; what they hold about the neighbour
    // is an id.
    let seen = customer_reads(
        &alpha.url,
        &format!(
            "SELECT string_agg(datname || ' ' || coalesce(shobj_description(oid, 'pg_database'), ''), ',') FROM pg_database WHERE datname = {}",
            quote_literal(&beta.database).unwrap()
        ),
    )
    .await
    .unwrap();
    assert_eq!(seen, format!("{} {}", beta.database, beta.resource.id));
    // Among this driver's databases (other tests on the server make their
    // own, some in the first layout, whose comments named the account).
    let leaked = customer_reads(
        &alpha.url,
        &format!(
            "SELECT count(*)::text FROM pg_database WHERE left(datname, {}) = {} \
             AND (shobj_description(oid, 'pg_database') LIKE '%invoices%' \
             OR shobj_description(oid, 'pg_database') LIKE '%acc\\_%')",
            sandbox.prefix.len(),
            quote_literal(&sandbox.prefix).unwrap()
        ),
    )
    .await
    .unwrap();
    assert_eq!(leaked, "0");

    // Still the customer's database: they read and write their data.
    as_customer(&alpha.url, "INSERT INTO orders VALUES (2)")
        .await
        .unwrap();
    assert_eq!(
        customer_reads(&alpha.url, "SELECT count(*)::text FROM orders")
            .await
            .unwrap(),
        "2"
    );
    for tenant in [&alpha, &beta] {
        driver
            .deprovision(&tenant.resource.context(product, "large"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn over_the_storage_quota_the_customer_reads_and_cannot_write() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    let driver = sandbox.driver();
    let catalog = sandbox.catalog();
    let product = catalog.product("pg").unwrap();
    let tenant = Tenant::provision(&driver, product, "quota", "large").await;
    let owner = tenant.quoted(&tenant.database);
    let login = tenant.quoted(&tenant.login);
    // Prepared while writable: grants to everybody, a security-definer
    // function, a table owned by the login itself.
    as_customer(
        &tenant.url,
        &format!(
            "CREATE TABLE t (x int); INSERT INTO t VALUES (1); \
             CREATE FUNCTION w() RETURNS void LANGUAGE sql SECURITY DEFINER AS 'INSERT INTO t VALUES (9)'; \
             GRANT ALL ON t TO PUBLIC; GRANT ALL ON t TO {login}; \
             GRANT CREATE ON SCHEMA public TO PUBLIC"
        ),
    )
    .await
    .expect("the customer prepares");
    let _ = as_customer(&tenant.url, "SET ROLE NONE; CREATE TABLE mine (x int)").await;
    // A trap for the admin's own statements in the database (a better
    // match than pg_catalog's format(text, VARIADIC "any")).
    as_customer(
        &tenant.url,
        "CREATE TABLE trap (who text); \
         CREATE FUNCTION public.format(text, name) RETURNS text LANGUAGE sql \
         AS $$ INSERT INTO public.trap VALUES (current_user); SELECT $2::text $$",
    )
    .await
    .expect("the customer sets a trap");

    // The small plan's 1 MiB is less than any database.
    let small = tenant.resource.context(product, "small");
    driver.apply_plan(&small).await.unwrap();
    driver.measure(&small).await.unwrap();
    let escapes = [
        "INSERT INTO t VALUES (2)".to_owned(),
        "SET default_transaction_read_only = off; INSERT INTO t VALUES (2)".to_owned(),
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE; INSERT INTO t VALUES (2)"
            .to_owned(),
        "BEGIN READ WRITE; INSERT INTO t VALUES (2); COMMIT".to_owned(),
        "SET default_transaction_read_only = off; SELECT w()".to_owned(),
        "SET default_transaction_read_only = off; CREATE TABLE u (x int)".to_owned(),
        "SET default_transaction_read_only = off; SET ROLE NONE; INSERT INTO t VALUES (2)"
            .to_owned(),
        "SET default_transaction_read_only = off; SET ROLE NONE; CREATE TABLE u (x int)".to_owned(),
        "SET default_transaction_read_only = off; INSERT INTO mine VALUES (2)".to_owned(),
        format!("SET ROLE {owner}"),
        format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            tenant.quoted(&tenant.database)
        ),
    ];
    for sql in &escapes {
        assert!(
            as_customer(&tenant.url, sql).await.is_err(),
            "over the quota, the customer ran `{sql}`"
        );
    }
    // What a login may set for itself changes nothing either.
    let _ = as_customer(
        &tenant.url,
        &format!(
            "SET ROLE NONE; ALTER ROLE {login} SET default_transaction_read_only = off; \
             ALTER ROLE {login} SET role = {}",
            quote_literal(&tenant.database).unwrap()
        ),
    )
    .await;
    assert!(
        as_customer(&tenant.url, "INSERT INTO t VALUES (3)")
            .await
            .is_err(),
        "a login's own settings lift nothing"
    );
    let trapped = customer_reads(
        &sandbox.url_as("postgres", &tenant.database),
        "SELECT count(*)::text FROM trap",
    )
    .await
    .unwrap();
    assert_eq!(
        trapped, "0",
        "none of the customer's functions ran as the admin"
    );
    let answer = console(
        &driver,
        &small,
        &tenant.secrets,
        "INSERT INTO t VALUES (4)",
        false,
    )
    .await;
    assert!(answer.contains("ERROR"), "{answer}");
    assert_eq!(
        customer_reads(&tenant.url, "SELECT count(*)::text FROM t")
            .await
            .unwrap(),
        "1",
        "reads still work, nothing was written"
    );
    let answer = console(
        &driver,
        &small,
        &tenant.secrets,
        "SELECT count(*) FROM t",
        true,
    )
    .await;
    assert!(!answer.contains("ERROR"), "{answer}");

    // A larger plan makes it writable again, with everything it had.
    let large = tenant.resource.context(product, "large");
    driver.apply_plan(&large).await.unwrap();
    driver.measure(&large).await.unwrap();
    as_customer(
        &tenant.url,
        "INSERT INTO t VALUES (5); SELECT w(); CREATE TABLE u (x int)",
    )
    .await
    .expect("writable again");
    assert_eq!(
        customer_reads(&tenant.url, "SELECT count(*)::text FROM t")
            .await
            .unwrap(),
        "3"
    );
    driver.deprovision(&large).await.unwrap();
}

#[tokio::test]
async fn suspension_disables_every_login_and_only_the_provider_resumes() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    let driver = sandbox.driver();
    let catalog = sandbox.catalog();
    let product = catalog.product("pg").unwrap();
    let mut tenant = Tenant::provision(&driver, product, "suspended", "large").await;
    as_customer(
        &tenant.url,
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1)",
    )
    .await
    .unwrap();
    // A rotation in its grace period: both logins work.
    let rotation = driver
        .rotate(&tenant.resource.context(product, "large"), &tenant.secrets)
        .await
        .unwrap();
    tenant.resource.state = rotation.state.clone();
    let context = tenant.resource.context(product, "large");
    driver
        .complete_rotation(&context, &rotation.secrets)
        .await
        .unwrap();
    let new_url = secret(&rotation.secrets, "DATABASE_URL").value.clone();
    let new_login = secret(&rotation.secrets, "PGUSER").value.clone();
    let mut old_session = PgConnection::connect(&tenant.url).await.unwrap();
    let mut new_session = PgConnection::connect(&new_url).await.unwrap();

    driver.suspend(&context).await.unwrap();
    for session in [&mut old_session, &mut new_session] {
        assert!(
            sqlx::query("SELECT 1").execute(session).await.is_err(),
            "open sessions are ended"
        );
    }
    assert_eq!(can_login(&sandbox, &tenant.login).await, Some(false));
    assert_eq!(can_login(&sandbox, &new_login).await, Some(false));
    for url in [&tenant.url, &new_url] {
        assert!(PgConnection::connect(url).await.is_err(), "{url} connects");
    }
    // An outbox replay of the rotation does not let anyone back in.
    driver
        .complete_rotation(&context, &rotation.secrets)
        .await
        .unwrap();
    driver.apply_plan(&context).await.unwrap();
    assert_eq!(can_login(&sandbox, &new_login).await, Some(false));
    assert!(PgConnection::connect(&new_url).await.is_err());

    driver.resume(&context).await.unwrap();
    assert_eq!(
        customer_reads(&new_url, "SELECT count(*)::text FROM t")
            .await
            .unwrap(),
        "1",
        "resumed with the data"
    );
    driver.deprovision(&context).await.unwrap();
    assert!(!database_exists(&sandbox, &tenant.database).await);
}

/// The statements the first layout ran for a resource (before the role
/// layout of ARCHITECTURE.md), as its superuser admin did.
fn first_layout_statements(database: &str, login: &str, comment: &str) -> Vec<String> {
    let d = quote_identifier(database).unwrap();
    let l = quote_identifier(login).unwrap();
    vec![
        format!("CREATE ROLE {d} NOLOGIN"),
        format!("CREATE ROLE {l} NOLOGIN"),
        format!(
            "ALTER ROLE {l} WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'old-password'"
        ),
        format!("GRANT {d} TO {l}"),
        format!(
            "ALTER ROLE {l} SET role = {}",
            quote_literal(database).unwrap()
        ),
        format!("CREATE DATABASE {d} OWNER {d}"),
        format!("REVOKE ALL ON DATABASE {d} FROM PUBLIC"),
        format!(
            "COMMENT ON DATABASE {d} IS {}",
            quote_literal(comment).unwrap()
        ),
        format!("ALTER DATABASE {d} WITH CONNECTION LIMIT 2"),
        format!("ALTER DATABASE {d} WITH ALLOW_CONNECTIONS true"),
    ]
}

#[tokio::test]
async fn databases_of_the_first_layout_move_to_the_current_one_at_start() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    let catalog = sandbox.catalog();
    let product = catalog.product("pg").unwrap();
    // Three resources of the first layout: live, suspended, over quota.
    let mut old = Vec::new();
    for (name, allow_connections, read_only) in [
        ("live", true, false),
        ("suspended", false, false),
        ("full", true, true),
    ] {
        let mut resource = Resource::new(name);
        let database = format!("{}{}", sandbox.prefix, resource.id);
        let login = format!("{database}_a");
        resource.state = json!({ "database": database, "login_slot": "a" });
        let comment = format!(
            "marketbridge resource {} ({name}) of account {}, product pg",
            resource.id, resource.account_id
        );
        for statement in first_layout_statements(&database, &login, &comment) {
            sandbox.admin_execute(&statement).await;
        }
        let url = sandbox.url_as(&login, &database);
        as_customer(&url, "CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        let d = quote_identifier(&database).unwrap();
        if !allow_connections {
            sandbox
                .admin_execute(&format!("ALTER DATABASE {d} WITH ALLOW_CONNECTIONS false"))
                .await;
        }
        if read_only {
            sandbox
                .admin_execute(&format!(
                    "ALTER DATABASE {d} SET default_transaction_read_only = on"
                ))
                .await;
        }
        old.push((resource, database, login, url));
    }
    // The first layout's hole: the customer owns the database.
    let (_, live_database, _, live_url) = &old[0];
    let live = quote_identifier(live_database).unwrap();
    as_customer(
        live_url,
        &format!("ALTER DATABASE {live} WITH CONNECTION LIMIT -1"),
    )
    .await
    .expect("the first layout let customers lift their limit");
    sandbox
        .admin_execute(&format!("ALTER DATABASE {live} WITH CONNECTION LIMIT 2"))
        .await;

    // The service's start-up step, with the non-superuser admin.
    let driver = sandbox.driver();
    assert_eq!(driver.migrate(&[product]).await.unwrap(), 3);
    assert_eq!(
        driver.migrate(&[product]).await.unwrap(),
        3,
        "again, harmlessly"
    );
    driver.start(&[product]).await.unwrap();

    let mut admin = sandbox.admin().await;
    for (resource, database, login, _) in &old {
        let (owner, comment): (String, String) = sqlx::query_as(
            "SELECT datdba::regrole::text, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        )
        .bind(database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(owner, sandbox.driver_admin, "{database}");
        assert_eq!(&comment, &resource.id, "{database}");
        let (limit, inherits): (i32, bool) =
            sqlx::query_as("SELECT rolconnlimit, rolinherit FROM pg_roles WHERE rolname = $1")
                .bind(login)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        assert_eq!((limit, inherits), (2, false), "{login}");
    }

    // Live: the customer works and lifts nothing.
    for sql in [
        format!("ALTER DATABASE {live} WITH CONNECTION LIMIT -1"),
        format!("ALTER DATABASE {live} RESET ALL"),
        format!("ALTER DATABASE {live} WITH ALLOW_CONNECTIONS false"),
        "CREATE SCHEMA escaped".to_owned(),
    ] {
        assert!(as_customer(live_url, &sql).await.is_err(), "{sql}");
    }
    as_customer(live_url, "INSERT INTO t VALUES (2); CREATE TABLE u (x int)")
        .await
        .expect("still the customer's database");
    assert_eq!(database_limits(&sandbox, live_database).await, (2, true));

    // Suspended: stays so, and its login may not log in.
    let (_, suspended_database, suspended_login, suspended_url) = &old[1];
    assert_eq!(can_login(&sandbox, suspended_login).await, Some(false));
    assert!(PgConnection::connect(suspended_url).await.is_err());
    assert_eq!(
        database_limits(&sandbox, suspended_database).await,
        (2, false)
    );

    // Over quota: reads, and no setting lifts the quota.
    let (_, full_database, _, full_url) = &old[2];
    assert_eq!(
        customer_reads(full_url, "SELECT count(*)::text FROM t")
            .await
            .unwrap(),
        "1"
    );
    for sql in [
        "SET default_transaction_read_only = off; INSERT INTO t VALUES (2)".to_owned(),
        format!(
            "ALTER DATABASE {} RESET default_transaction_read_only",
            quote_identifier(full_database).unwrap()
        ),
    ] {
        assert!(as_customer(full_url, &sql).await.is_err(), "{sql}");
    }

    // The driver runs them as before.
    let context = old[0].0.context(product, "large");
    driver.apply_plan(&context).await.unwrap();
    assert!(
        !driver
            .measure(&old[0].0.context(product, "small"))
            .await
            .unwrap()
            .is_empty()
    );
    for (resource, database, _, _) in &old {
        driver
            .deprovision(&resource.context(product, "large"))
            .await
            .unwrap();
        assert!(!database_exists(&sandbox, database).await);
    }
}

#[tokio::test]
async fn the_start_up_check_names_databases_every_role_may_connect_to() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    let shared = format!("{}shared", sandbox.prefix);
    let quoted = quote_identifier(&shared).unwrap();
    sandbox
        .admin_execute(&format!("CREATE DATABASE {quoted}"))
        .await;
    let driver = sandbox.driver();
    let statements = driver.public_access_statements().await.unwrap();
    assert_eq!(statements.len(), 1, "{statements:?}");
    assert!(
        statements[0].starts_with("REVOKE CONNECT ON DATABASE ")
            && statements[0].ends_with(" FROM PUBLIC")
            && statements[0].contains(&shared),
        "{statements:?}"
    );
    sandbox
        .admin_execute(&format!("REVOKE CONNECT ON DATABASE {quoted} FROM PUBLIC"))
        .await;
    let statements = driver.public_access_statements().await.unwrap();
    assert!(
        statements.iter().all(|s| !s.contains(&shared)),
        "{statements:?}"
    );
}

#[tokio::test]
async fn the_console_stops_reading_at_its_byte_caps_and_says_so() {
    let Some(sandbox) = Sandbox::open().await else {
        return;
    };
    let driver = sandbox.driver();
    let catalog = sandbox.catalog();
    let product = catalog.product("pg").unwrap();
    let tenant = Tenant::provision(&driver, product, "console", "large").await;
    let context = tenant.resource.context(product, "large");
    let big = "SELECT repeat('x', 1048576) AS big FROM generate_series(1, 200)";
    let answers = futures::future::join_all(
        (0..4).map(|_| driver.console(&context, &tenant.secrets, big, true)),
    )
    .await;
    for answer in answers {
        let blocks = answer.expect("the console answers");
        let text = format!("{blocks:?}");
        assert!(
            text.len()
                < console_caps::MAX_ANSWER_BYTES + 2 * console_caps::MAX_CELL_BYTES + 64 * 1024,
            "{} bytes",
            text.len()
        );
        assert!(text.contains("the answer was cut"), "says so");
        assert!(text.contains("(cut at 4 KiB)"), "cells are cut");
    }
    // One huge value is cut by the server (it never reaches the service
    // whole); NULL stays NULL and values keep their text form.
    let text = console(
        &driver,
        &context,
        &tenant.secrets,
        "SELECT repeat('y', 8 * 1024 * 1024) AS huge, NULL AS nothing, true AS yes;",
        true,
    )
    .await;
    assert!(text.contains("(cut at 4 KiB)"), "{}", &text[..200]);
    assert!(
        text.contains("\"NULL\"") && text.contains("\"t\""),
        "{text:.300}"
    );
    // Cells are cut on character boundaries.
    let text = console(
        &driver,
        &context,
        &tenant.secrets,
        "SELECT repeat('é', 5000)",
        true,
    )
    .await;
    assert!(text.contains("é… (cut at 4 KiB)"), "{}", &text[..200]);
    // The connection is usable afterwards.
    let text = console(&driver, &context, &tenant.secrets, "SELECT 41 + 1", true).await;
    assert!(text.contains("42"), "{text}");
    driver.deprovision(&context).await.unwrap();
}
