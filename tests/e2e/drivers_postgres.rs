//! The built-in `postgres` driver through the whole set: resources created
//! over gRPC become real databases on the PostgreSQL server of
//! `MARKETBRIDGE_TEST_POSTGRES_URL`, and every later step (rotation, plan
//! change, usage, suspension, deletion) reaches the server through the
//! outbox.
//!
//! The server trusts loopback connections, so passwords are not checked by
//! it. What is checked: connecting as a role (the server refuses roles that
//! may not log in, databases that refuse connections, roles without CONNECT,
//! and connections over the limit), and the SCRAM verifier the server holds
//! against the password the customer was given (what password
//! authentication compares).

use crate::drivers_support::{
    CatalogFile, PostgresSandbox, context, current_secrets, direct_account, resource, secret,
};
use crate::support::{TestSet, set_on};
use chrono::Duration as ChronoDuration;
use marketbridge_core::metadata::json_to_metadata;
use marketbridge_proto::billing::v1 as billing_pb;
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_provisioning::driver::postgres::names::quote_identifier;
use marketbridge_provisioning::driver::postgres::scram;
use marketbridge_storage::backend_test;
use marketbridge_storage::testing::TestDatabase;
use provisioning_pb::ResourceStatus;
use sea_orm::sqlx::{self, Connection, PgConnection};
use serde_json::json;

/// Seconds a deleted database is kept in these tests.
const GRACE_SECONDS: i64 = 86_400;

fn catalog(prefix: &str) -> CatalogFile {
    CatalogFile::new(&format!(
        r#"
[[products]]
id = "pg"
name = "Postgres"
driver = "postgres"
  [products.postgres]
  name_prefix = "{prefix}"
  storage_metric = "storage_mb"
  connections_metric = "connections"
  [products.postgres.environments.development]
  host = "localhost"

  [[products.plans]]
  id = "small"
  name = "Small"
  limits = {{ max_connections = 5, storage_mb = 1024 }}
    [[products.plans.metrics]]
    id = "storage_mb"
    name = "Storage"
    unit = "MB"
    kind = "total"

  [[products.plans]]
  id = "large"
  name = "Large"
  limits = {{ max_connections = 50, storage_mb = 10240 }}
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
"#
    ))
}

/// A driver admin that is not a superuser (CREATEDB and CREATEROLE, with a
/// database of its own to connect to), made in the sandbox; its URL.
async fn driver_admin(sandbox: &PostgresSandbox) -> String {
    let name = format!("{}admin", sandbox.prefix);
    let quoted = quote_identifier(&name).unwrap();
    sandbox
        .admin_execute(&format!("CREATE ROLE {quoted} LOGIN CREATEDB CREATEROLE"))
        .await;
    sandbox
        .admin_execute(&format!("CREATE DATABASE {quoted} OWNER {quoted}"))
        .await;
    // As README asks of the provider's own databases.
    sandbox
        .admin_execute(&format!("REVOKE CONNECT ON DATABASE {quoted} FROM PUBLIC"))
        .await;
    sandbox.url_as(&name, &name)
}

async fn connects(url: &str) -> Result<PgConnection, String> {
    PgConnection::connect(url).await.map_err(|e| e.to_string())
}

async fn count_orders(connection: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(connection)
        .await
        .expect("orders are readable")
}

backend_test!(
    postgres_resources_live_through_their_whole_lifecycle,
    |database| async move {
        let Some(sandbox) = PostgresSandbox::open() else {
            return;
        };
        let catalog = catalog(&sandbox.prefix);
        let admin_url = driver_admin(&sandbox).await;
        let test = set_on(&database)
            .manual_clock()
            .without_workers()
            .configure(|config| {
                config.provisioning.postgres_admin_url = admin_url;
                config.catalog.path = catalog.path();
                config.provisioning.postgres_deletion_grace_seconds = GRACE_SECONDS as u64;
            })
            .start()
            .await;
        let clock = test.clock.clone().expect("manual clock");
        let account = direct_account(&test, "team-pg").await;
        let mut provisioning = test.set.clients.provisioning.clone();

        let created = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                context: context("create-orders"),
                account_id: account.id.clone(),
                product_id: "pg".into(),
                plan_id: "small".into(),
                name: "orders".into(),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner();
        let resource_id = created.resource.as_ref().unwrap().id.clone();
        assert_eq!(
            created.resource.as_ref().unwrap().status,
            ResourceStatus::Pending as i32,
            "the database is created in the background"
        );
        let first = created.secrets.clone();
        let database_name = secret(&first, "PGDATABASE").to_owned();
        let first_user = secret(&first, "PGUSER").to_owned();
        let first_url = secret(&first, "DATABASE_URL").to_owned();
        assert_eq!(database_name, format!("{}{resource_id}", sandbox.prefix));
        assert_eq!(secret(&first, "PGHOST"), "127.0.0.1");
        assert_eq!(secret(&first, "PGPORT"), "5432");
        let development = &first
            .iter()
            .find(|s| s.name == "DATABASE_URL")
            .unwrap()
            .environment_overrides["development"];
        assert!(development.contains("@localhost:5432/"), "{development}");
        assert!(
            connects(&first_url).await.is_err(),
            "nothing exists before the provisioning job"
        );

        test.drain().await;
        assert_eq!(
            resource(&test, &resource_id).await.status,
            ResourceStatus::Ready as i32
        );
        let mut customer = connects(&first_url).await.expect("DATABASE_URL connects");
        sqlx::raw_sql(
            "CREATE TABLE orders (id serial PRIMARY KEY, item text); INSERT INTO orders (item) VALUES ('tea'), ('cake')",
        )
        .execute(&mut customer)
        .await
        .expect("the customer can create a table");
        customer.close().await.unwrap();
        let first_password = secret(&first, "PGPASSWORD").to_owned();
        assert!(scram::matches(
            &sandbox.stored_verifier(&first_user).await.unwrap(),
            &first_password
        ));

        // Rotation: a second login, both work until the grace period ends.
        let rotated = provisioning
            .rotate_secrets(provisioning_pb::RotateSecretsRequest {
                context: context("rotate-1"),
                resource_id: resource_id.clone(),
                old_secrets_valid_for_seconds: 3600,
                ..Default::default()
            })
            .await
            .expect("rotate")
            .into_inner();
        assert!(
            !rotated.sync,
            "the new login is made in the background, then pushed"
        );
        test.drain().await;
        let second = current_secrets(&test, &resource_id).await;
        let second_user = secret(&second, "PGUSER").to_owned();
        let second_password = secret(&second, "PGPASSWORD").to_owned();
        assert_ne!(second_user, first_user);
        assert_ne!(second_password, first_password);
        assert_eq!(secret(&second, "PGDATABASE"), database_name);
        for (user, password, url) in [
            (&first_user, &first_password, first_url.as_str()),
            (
                &second_user,
                &second_password,
                secret(&second, "DATABASE_URL"),
            ),
        ] {
            let verifier = sandbox.stored_verifier(user).await.expect("a password");
            assert!(scram::matches(&verifier, password), "{user}");
            let mut connection = connects(url).await.expect("both logins work");
            assert_eq!(count_orders(&mut connection).await, 2);
            connection.close().await.unwrap();
        }
        clock.advance(ChronoDuration::seconds(3599));
        test.drain().await;
        assert!(
            connects(&first_url).await.is_ok(),
            "still inside the grace period"
        );
        clock.advance(ChronoDuration::seconds(2));
        test.drain().await;
        let refused = connects(&first_url)
            .await
            .expect_err("the old login is revoked");
        assert!(refused.contains("not permitted to log in"), "{refused}");
        assert_eq!(
            sandbox.stored_verifier(&first_user).await,
            None,
            "and its password is gone"
        );
        let mut connection = connects(secret(&second, "DATABASE_URL"))
            .await
            .expect("the new login works");
        assert_eq!(count_orders(&mut connection).await, 2);
        connection.close().await.unwrap();

        // Plan change: the new connection limit.
        provisioning
            .update_resource(provisioning_pb::UpdateResourceRequest {
                context: context("upgrade"),
                resource_id: resource_id.clone(),
                plan_id: Some("large".into()),
                ..Default::default()
            })
            .await
            .expect("plan change");
        test.drain().await;
        let mut admin = sandbox.admin().await;
        let limit: i32 =
            sqlx::query_scalar("SELECT datconnlimit FROM pg_database WHERE datname = $1")
                .bind(&database_name)
                .fetch_one(&mut admin)
                .await
                .unwrap();
        assert_eq!(limit, 50);

        // Usage: measured into the billing ledger, once per window.
        let meter = test.set.provisioning.usage_meter();
        let round = meter.run_round().await.expect("a round");
        assert_eq!(
            (round.resources, round.accepted, round.failed),
            (1, 2, 0),
            "{round:?}"
        );
        let again = meter.run_round().await.expect("a second round");
        assert_eq!(
            (again.accepted, again.duplicates),
            (0, 2),
            "the same window is not counted twice"
        );
        let mut billing = test.set.clients.billing.clone();
        let usage = billing
            .query_usage(billing_pb::QueryUsageRequest {
                customer: Some(billing_pb::query_usage_request::Customer::ResourceId(
                    resource_id.clone(),
                )),
                metric_id: "storage_mb".into(),
                ..Default::default()
            })
            .await
            .expect("usage")
            .into_inner();
        let storage: i64 = usage.windows.iter().map(|w| w.quantity).sum();
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size($1)")
            .bind(&database_name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        let expected = (size + (1 << 20) - 1) >> 20;
        assert!(
            storage >= 1 && (storage - expected).abs() <= 1,
            "MiB, rounded up: {storage} for {size} bytes"
        );

        // Suspension refuses connections and keeps the data.
        provisioning
            .suspend_resource(provisioning_pb::SuspendResourceRequest {
                context: context("suspend"),
                resource_id: resource_id.clone(),
                reason: "unpaid invoice".into(),
            })
            .await
            .expect("suspend");
        test.drain().await;
        let refused = connects(secret(&second, "DATABASE_URL"))
            .await
            .expect_err("a suspended database refuses connections");
        assert!(refused.contains("not permitted to log in"), "{refused}");
        provisioning
            .resume_resource(provisioning_pb::ResumeResourceRequest {
                context: context("resume"),
                resource_id: resource_id.clone(),
            })
            .await
            .expect("resume");
        test.drain().await;
        let mut connection = connects(secret(&second, "DATABASE_URL"))
            .await
            .expect("resumed");
        assert_eq!(count_orders(&mut connection).await, 2, "data kept");
        connection.close().await.unwrap();

        // Deletion: refused at once, dropped after the grace period.
        provisioning
            .delete_resource(provisioning_pb::DeleteResourceRequest {
                context: context("delete"),
                resource_id: resource_id.clone(),
                ..Default::default()
            })
            .await
            .expect("delete");
        test.drain().await;
        assert!(connects(secret(&second, "DATABASE_URL")).await.is_err());
        assert!(
            sandbox.database_exists(&database_name).await,
            "kept during the grace period"
        );
        clock.advance(ChronoDuration::seconds(GRACE_SECONDS + 1));
        test.drain().await;
        assert!(!sandbox.database_exists(&database_name).await);
        let roles = [
            database_name.clone(),
            first_user.clone(),
            second_user.clone(),
        ];
        assert_eq!(
            sandbox.roles_named(&roles).await,
            0,
            "the roles are dropped too"
        );
        test.stop().await;
    }
);

/// A set on the sandbox server whose deleted databases are dropped at once,
/// with outboxes run by the test.
async fn dropping_at_once(
    database: &TestDatabase,
    sandbox: &PostgresSandbox,
    catalog: &CatalogFile,
) -> TestSet {
    let admin_url = driver_admin(sandbox).await;
    set_on(database)
        .without_workers()
        .configure(|config| {
            config.provisioning.postgres_admin_url = admin_url;
            config.catalog.path = catalog.path();
            config.provisioning.postgres_deletion_grace_seconds = 0;
        })
        .start()
        .await
}

backend_test!(
    hostile_resource_names_and_metadata_cannot_inject_sql,
    |database| async move {
        let Some(sandbox) = PostgresSandbox::open() else {
            return;
        };
        let catalog = catalog(&sandbox.prefix);
        let test = dropping_at_once(&database, &sandbox, &catalog).await;
        let account = direct_account(&test, "team-hostile").await;
        let mut provisioning = test.set.clients.provisioning.clone();
        let before = sandbox.others().await;
        let hostile = [
            "x'); DROP DATABASE postgres; --",
            "\"; DROP ROLE postgres; --",
            "back\\slash\\'); DROP TABLE pg_class; --",
            "$$; ALTER ROLE postgres NOSUPERUSER; $$",
            "Robert'); DROP TABLE students;-- ünïcødé",
        ];
        let mut created = Vec::new();
        for (index, name) in hostile.iter().enumerate() {
            let answer = provisioning
                .create_resource(provisioning_pb::CreateResourceRequest {
                    context: context(&format!("hostile-{index}")),
                    account_id: account.id.clone(),
                    product_id: "pg".into(),
                    plan_id: "small".into(),
                    name: (*name).into(),
                    metadata: Some(
                        json_to_metadata("metadata", &json!({ "note": *name })).unwrap(),
                    ),
                    ..Default::default()
                })
                .await
                .expect("hostile names are just names")
                .into_inner();
            created.push(answer);
        }
        test.drain().await;
        let mut admin = sandbox.admin().await;
        for (answer, name) in created.iter().zip(hostile) {
            let resource_id = &answer.resource.as_ref().unwrap().id;
            assert_eq!(
                crate::drivers_support::resource(&test, resource_id)
                    .await
                    .status,
                ResourceStatus::Ready as i32,
                "{name}"
            );
            let database_name = secret(&answer.secrets, "PGDATABASE");
            assert_eq!(database_name, format!("{}{resource_id}", sandbox.prefix));
            let comment: String = sqlx::query_scalar(
                "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            )
            .bind(database_name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
            assert_eq!(
                &comment, resource_id,
                "the cluster keeps the id, not what the customer typed"
            );
            let mut connection = connects(secret(&answer.secrets, "DATABASE_URL"))
                .await
                .expect("connects");
            sqlx::raw_sql("CREATE TABLE t (x int)")
                .execute(&mut connection)
                .await
                .unwrap();
            connection.close().await.unwrap();
        }
        let superuser: bool =
            sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = 'postgres'")
                .fetch_one(&mut admin)
                .await
                .unwrap();
        assert!(superuser);
        assert_eq!(
            sandbox.others().await,
            before,
            "no database or role outside the resources changed"
        );

        for (index, answer) in created.iter().enumerate() {
            provisioning
                .delete_resource(provisioning_pb::DeleteResourceRequest {
                    context: context(&format!("delete-{index}")),
                    resource_id: answer.resource.as_ref().unwrap().id.clone(),
                    ..Default::default()
                })
                .await
                .expect("delete");
        }
        test.drain().await;
        for answer in &created {
            assert!(
                !sandbox
                    .database_exists(secret(&answer.secrets, "PGDATABASE"))
                    .await
            );
        }
        test.stop().await;
    }
);

backend_test!(
    a_database_the_server_refuses_ends_in_error_with_a_message,
    |database| async move {
        let Some(sandbox) = PostgresSandbox::open() else {
            return;
        };
        // An admin that may create roles but not databases.
        let weak_admin = format!("{}weak_admin", sandbox.prefix);
        let quoted = quote_identifier(&weak_admin).unwrap();
        sandbox
            .admin_execute(&format!("CREATE ROLE {quoted} LOGIN CREATEROLE"))
            .await;
        sandbox
            .admin_execute(&format!("CREATE DATABASE {quoted} OWNER {quoted}"))
            .await;
        let catalog = catalog(&sandbox.prefix);
        let weak_url = sandbox.url_as(&weak_admin, &weak_admin);
        let test = set_on(&database)
            .without_workers()
            .configure(|config| {
                config.provisioning.postgres_admin_url = weak_url;
                config.catalog.path = catalog.path();
            })
            .start()
            .await;
        let account = direct_account(&test, "team-refused").await;
        let mut provisioning = test.set.clients.provisioning.clone();
        let created = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                context: context("create-refused"),
                account_id: account.id.clone(),
                product_id: "pg".into(),
                plan_id: "small".into(),
                name: "refused".into(),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner();
        test.drain().await;
        let failed = resource(&test, &created.resource.unwrap().id).await;
        assert_eq!(failed.status, ResourceStatus::Error as i32);
        assert_eq!(
            failed.status_message,
            "The database could not be set up. The provider has been notified.",
            "the customer sees a message, not the SQL error"
        );
        test.stop().await;
    }
);

#[test]
fn marketbridge_config_masks_the_driver_secrets() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_marketbridge"))
        .arg("config")
        .env(
            "MARKETBRIDGE_PROVISIONING__POSTGRES_ADMIN_URL",
            "postgres://admin:hunter2@db.internal:5432/postgres",
        )
        .env("MARKETBRIDGE_PROVISIONING__PLUGIN_TOKEN", "plugin-secret-7")
        .output()
        .expect("run marketbridge config");
    assert!(output.status.success());
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.contains(
            "provisioning.postgres_admin_url = \"postgres://admin:***@db.internal:5432/postgres\""
        ),
        "{printed}"
    );
    assert!(printed.contains("provisioning.plugin_token = \"***\""));
    assert!(!printed.contains("hunter2") && !printed.contains("plugin-secret-7"));
}

/// Console output flattened: paragraphs as their text, tables as rows of
/// cells (the header first, when there is one).
fn console_text(blocks: &[provisioning_pb::OutputBlock]) -> Vec<Vec<String>> {
    use provisioning_pb::output_block::Block;
    let spans = |spans: &[provisioning_pb::TextSpan]| -> Vec<String> {
        spans.iter().map(|s| s.text.clone()).collect()
    };
    let mut lines = Vec::new();
    for block in blocks {
        match block.block.as_ref().expect("a block") {
            Block::Paragraph(paragraph) => lines.push(vec![spans(&paragraph.spans).concat()]),
            Block::Table(table) => {
                if !table.header.is_empty() {
                    lines.push(spans(&table.header));
                }
                lines.extend(table.rows.iter().map(|row| spans(&row.cells)));
            }
        }
    }
    lines
}

backend_test!(
    the_database_console_runs_one_statement_as_the_customer,
    |database| async move {
        let Some(sandbox) = PostgresSandbox::open() else {
            return;
        };
        let catalog = catalog(&sandbox.prefix);
        let test = dropping_at_once(&database, &sandbox, &catalog).await;
        let account = direct_account(&test, "team-console").await;
        let mut provisioning = test.set.clients.provisioning.clone();
        let created = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                context: context("console-db"),
                account_id: account.id.clone(),
                product_id: "pg".into(),
                plan_id: "small".into(),
                name: "console".into(),
                ..Default::default()
            })
            .await
            .expect("create")
            .into_inner();
        let resource_id = created.resource.as_ref().unwrap().id.clone();
        let console = provisioning.clone();
        let run = |input: &str, read_only: bool| {
            let mut provisioning = console.clone();
            let request = provisioning_pb::RunResourceCommandRequest {
                resource_id: resource_id.clone(),
                account_id: account.id.clone(),
                input: input.to_owned(),
                read_only,
            };
            async move { provisioning.run_resource_command(request).await }
        };
        let early = run("SELECT 1", true).await.expect_err("not ready yet");
        assert_eq!(early.code(), tonic::Code::FailedPrecondition, "{early:?}");
        test.drain().await;

        let lines = |answer: Result<
            tonic::Response<provisioning_pb::RunResourceCommandResponse>,
            tonic::Status,
        >| {
            console_text(&answer.expect("the console answers").into_inner().blocks)
        };
        assert_eq!(
            lines(run("CREATE TABLE notes (id int, body text)", false).await),
            vec![vec!["OK, 0 rows affected".to_owned()]]
        );
        assert_eq!(
            lines(run("INSERT INTO notes VALUES (1, 'tea'), (2, NULL)", false).await),
            vec![vec!["OK, 2 rows affected".to_owned()]]
        );
        assert_eq!(
            lines(run("SELECT id, body, id * 1.5 AS half, now() > '2000-01-01' AS recent FROM notes ORDER BY id;", true).await),
            vec![
                vec!["id".to_owned(), "body".into(), "half".into(), "recent".into()],
                vec!["1".to_owned(), "tea".into(), "1.5".into(), "t".into()],
                vec!["2".to_owned(), "NULL".into(), "3.0".into(), "t".into()],
                vec!["2 rows".to_owned()],
            ],
            "every type arrives as text"
        );
        assert_eq!(
            lines(run("SELECT * FROM notes WHERE id > 5", true).await),
            vec![
                vec!["id".to_owned(), "body".into()],
                vec!["0 rows".to_owned()]
            ]
        );

        // Read-only means read-only, even for a command that tries to end
        // the transaction first; a SQL error is output, not a failure.
        let refused = lines(run("DELETE FROM notes", true).await);
        assert!(
            refused[0][0].contains("read-only transaction"),
            "{refused:?}"
        );
        assert!(refused[0][0].contains("25006"), "{refused:?}");
        let smuggled = lines(run("COMMIT; DELETE FROM notes", true).await);
        assert!(
            smuggled[0][0].contains("42601"),
            "one statement only: {smuggled:?}"
        );
        let smuggled = lines(run("SELECT 1; DROP TABLE notes", false).await);
        assert!(smuggled[0][0].starts_with("ERROR:"), "{smuggled:?}");
        let broken = lines(run("SELEC nonsense", false).await);
        assert!(broken[0][0].contains("syntax error"), "{broken:?}");
        let blocks = run("SELECT count(*) FROM notes", true)
            .await
            .unwrap()
            .into_inner()
            .blocks;
        assert_eq!(
            console_text(&blocks)[1],
            vec!["2".to_owned()],
            "nothing was lost"
        );
        let failure = run("SELEC nonsense", false)
            .await
            .unwrap()
            .into_inner()
            .blocks;
        match failure[0].block.as_ref().unwrap() {
            provisioning_pb::output_block::Block::Paragraph(p) => {
                assert_eq!(p.spans[0].color, "red")
            }
            other => panic!("an error paragraph, not {other:?}"),
        }

        // A slow statement is stopped; the rows shown are capped.
        let slow = lines(run("SELECT pg_sleep(5)", true).await);
        assert!(slow[0][0].contains("57014"), "statement timeout: {slow:?}");
        let many = lines(run("SELECT g FROM generate_series(1, 450) g", true).await);
        assert_eq!(many.len(), 1 + 200 + 1);
        assert_eq!(many.last().unwrap()[0], "450 rows, 250 not shown");

        // The built-in commands answer for every product.
        let info = lines(run("info", true).await);
        assert!(
            info.contains(&vec!["id".to_owned(), resource_id.clone()]),
            "{info:?}"
        );
        assert!(
            info.iter()
                .any(|row| row[0] == "secrets" && row[1].contains("DATABASE_URL")),
            "secret names, never values: {info:?}"
        );
        let password = secret(&created.secrets, "PGPASSWORD");
        assert!(!format!("{info:?}").contains(password));
        let help = lines(run("help", true).await);
        assert!(
            help.iter().any(|l| l[0].contains("SQL statement")),
            "{help:?}"
        );

        // Input is checked; a suspended database has no console.
        let empty = run("   ", true).await.expect_err("empty input");
        assert_eq!(empty.code(), tonic::Code::InvalidArgument);
        provisioning
            .suspend_resource(provisioning_pb::SuspendResourceRequest {
                context: context("console-suspend"),
                resource_id: resource_id.clone(),
                reason: "unpaid".into(),
            })
            .await
            .expect("suspend");
        test.drain().await;
        let suspended = run("SELECT 1", true).await.expect_err("suspended");
        assert_eq!(suspended.code(), tonic::Code::FailedPrecondition);
        test.stop().await;
    }
);

backend_test!(
    names_the_driver_cannot_keep_are_refused_before_anything_is_made,
    |database| async move {
        let Some(sandbox) = PostgresSandbox::open() else {
            return;
        };
        let catalog = catalog(&sandbox.prefix);
        let test = dropping_at_once(&database, &sandbox, &catalog).await;
        let account = direct_account(&test, "team-nul").await;
        let mut provisioning = test.set.clients.provisioning.clone();
        for (index, name) in ["nul\0byte", "line\nbreak", "bell\u{7}", "escape\u{1b}[31m"]
            .iter()
            .enumerate()
        {
            let refused = provisioning
                .create_resource(provisioning_pb::CreateResourceRequest {
                    context: context(&format!("control-{index}")),
                    account_id: account.id.clone(),
                    product_id: "pg".into(),
                    plan_id: "small".into(),
                    name: (*name).into(),
                    ..Default::default()
                })
                .await
                .expect_err("control characters are refused");
            assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{name:?}");
        }
        test.drain().await;
        let mut admin = sandbox.admin().await;
        let made: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM pg_database WHERE datname LIKE $1 || 'res%') + \
                    (SELECT count(*) FROM pg_roles WHERE rolname LIKE $1 || 'res%')",
        )
        .bind(&sandbox.prefix)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(made, 0, "nothing was made");
        test.stop().await;
    }
);

backend_test!(
    the_service_moves_databases_of_the_first_layout_at_start,
    |database| async move {
        let Some(sandbox) = PostgresSandbox::open() else {
            return;
        };
        // A resource as the first layout made it (with a superuser admin).
        let resource_id = marketbridge_core::ids::ResourceId::generate().into_string();
        let name = format!("{}{resource_id}", sandbox.prefix);
        let login = format!("{name}_a");
        let d = quote_identifier(&name).unwrap();
        let l = quote_identifier(&login).unwrap();
        for statement in [
            format!("CREATE ROLE {d} NOLOGIN"),
            format!("CREATE ROLE {l} NOLOGIN"),
            format!(
                "ALTER ROLE {l} WITH LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD 'pw'"
            ),
            format!("GRANT {d} TO {l}"),
            format!("ALTER ROLE {l} SET role = '{name}'"),
            format!("CREATE DATABASE {d} OWNER {d}"),
            format!("REVOKE ALL ON DATABASE {d} FROM PUBLIC"),
            format!(
                "COMMENT ON DATABASE {d} IS 'marketbridge resource {resource_id} (orders) of account acc_x, product pg'"
            ),
            format!("ALTER DATABASE {d} WITH CONNECTION LIMIT 5"),
            format!("ALTER DATABASE {d} WITH ALLOW_CONNECTIONS false"),
        ] {
            sandbox.admin_execute(&statement).await;
        }
        let url = sandbox.url_as(&login, &name);
        let catalog = catalog(&sandbox.prefix);
        let test = dropping_at_once(&database, &sandbox, &catalog).await;
        // Started: the suspended database's login is disabled, and the
        // database is the provider's.
        let mut admin = sandbox.admin().await;
        let (owner, comment, can_login): (String, String, bool) = sqlx::query_as(
            "SELECT datdba::regrole::text, shobj_description(d.oid, 'pg_database'), \
                    (SELECT rolcanlogin FROM pg_roles WHERE rolname = $2) \
             FROM pg_database d WHERE datname = $1",
        )
        .bind(&name)
        .bind(&login)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(owner, format!("{}admin", sandbox.prefix));
        assert_eq!(comment, resource_id);
        assert!(!can_login, "a suspended resource's login may not log in");
        // Even with connections allowed by someone, the customer gets
        // nowhere, and owns nothing that would let them undo it.
        sandbox
            .admin_execute(&format!("ALTER DATABASE {d} WITH ALLOW_CONNECTIONS true"))
            .await;
        let refused = connects(&url).await.expect_err("the login is disabled");
        assert!(refused.contains("not permitted to log in"), "{refused}");
        sandbox
            .admin_execute(&format!("ALTER ROLE {l} WITH LOGIN"))
            .await;
        let mut customer = connects(&url).await.expect("enabled by the provider");
        let escape = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER DATABASE {d} WITH CONNECTION LIMIT -1"
        )))
        .execute(&mut customer)
        .await;
        assert!(escape.is_err(), "the database is not the customer's");
        customer.close().await.unwrap();
        test.stop().await;
    }
);

backend_test!(
    a_name_with_control_characters_is_a_400_at_the_partner_api,
    |database| async move {
        use crate::vercel_support::{
            VercelOptions, assert_error, field_keys, installation_path, provision_body, vercel_set,
        };
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let (installation, admin) = vercel.install().await;
        let resources = format!("{}/resources", installation_path(&installation));
        for name in ["nul\u{0}byte", "line\nbreak", "escape\u{1b}[31m"] {
            let answer = vercel
                .partner
                .post(&resources)
                .user(&admin)
                .json(&provision_body("database", "free", name, json!({})))
                .send()
                .await;
            assert_error(&answer, 400, "validation_error");
            assert_eq!(field_keys(&answer), ["name"], "{name:?}: {}", answer.text);
        }
    }
);
