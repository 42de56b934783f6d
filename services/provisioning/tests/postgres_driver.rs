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

use marketbridge_catalog::{Catalog, Product};
use marketbridge_config::ProvisioningOptions;
use marketbridge_core::ErrorCode;
use marketbridge_core::ids::{AccountId, ResourceId};
use marketbridge_provisioning::driver::postgres::PostgresDriver;
use marketbridge_provisioning::driver::postgres::names::{quote_identifier, quote_literal};
use marketbridge_provisioning::driver::postgres::scram;
use marketbridge_provisioning::driver::postgres::settings::ServerSettings;
use marketbridge_provisioning::driver::{Driver, DriverContext, Provisioned, Secret};
use marketbridge_storage::testing::PostgresSandbox;
use sea_orm::sqlx::{self, Connection, PgConnection};
use serde_json::{Value as Json, json};

/// The server slice of one test, with the driver and catalog over it.
struct Sandbox(PostgresSandbox);

impl std::ops::Deref for Sandbox {
    type Target = PostgresSandbox;

    fn deref(&self) -> &PostgresSandbox {
        &self.0
    }
}

impl Sandbox {
    fn open() -> Option<Sandbox> {
        PostgresSandbox::open().map(Sandbox)
    }

    fn options(&self) -> ProvisioningOptions {
        ProvisioningOptions {
            postgres_admin_url: self.admin_url.clone(),
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
    let Some(sandbox) = Sandbox::open() else {
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
    let (limit, comment): (i32, String) = sqlx::query_as(
        "SELECT datconnlimit, shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
    )
    .bind(&database)
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(limit, 2, "the plan's max_connections");
    assert!(comment.contains(&resource.id) && comment.contains("(orders)"));

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
        roles_named(&sandbox, &[&database, &user, &format!("{database}_b")]).await,
        0
    );
}

#[tokio::test]
async fn connection_limit_and_storage_quota_follow_the_plan() {
    let Some(sandbox) = Sandbox::open() else {
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
    let Some(sandbox) = Sandbox::open() else {
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
    let Some(sandbox) = Sandbox::open() else {
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
    let Some(sandbox) = Sandbox::open() else {
        return;
    };
    let catalog = sandbox.catalog();
    let product = catalog.product("pg").unwrap();

    // An admin role that may create roles but not databases.
    let weak_admin = format!("{}weak_admin", sandbox.prefix);
    sandbox
        .admin_execute(&format!(
            "CREATE ROLE {} LOGIN CREATEROLE",
            quote_identifier(&weak_admin).unwrap()
        ))
        .await;
    let weak = PostgresDriver::from_options(&ProvisioningOptions {
        postgres_admin_url: sandbox.url_as(&weak_admin, "postgres"),
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
    let Some(sandbox) = Sandbox::open() else {
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
