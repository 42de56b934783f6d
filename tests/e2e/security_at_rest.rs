//! No secret and no purged personal data sits in plain text in any database
//! of the set: the stored answers of idempotent calls are sealed, and
//! erasing an account erases them too. The check reads the database files
//! themselves (SQLite, with the WAL) or every table (PostgreSQL).

use crate::drivers_support::context;
use crate::support::{TestSet, set_on};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace, MarketplaceRef, Person};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::backend_test;
use marketbridge_storage::sea_orm::{ConnectionTrait, Database, Statement};

/// The set's three databases.
fn database_urls(test: &TestSet) -> [&String; 3] {
    let config = &test.set.config;
    [
        &config.account.database_url,
        &config.provisioning.database_url,
        &config.billing.database_url,
    ]
}

/// How many places in the set's databases hold `needle`.
async fn occurrences(test: &TestSet, needle: &str) -> usize {
    let mut found = 0;
    for url in database_urls(test) {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap();
            for file in [
                path.to_owned(),
                format!("{path}-wal"),
                format!("{path}-shm"),
            ] {
                let Ok(bytes) = std::fs::read(&file) else {
                    continue;
                };
                found += bytes
                    .windows(needle.len())
                    .filter(|w| *w == needle.as_bytes())
                    .count();
            }
        } else {
            let db = Database::connect(url.as_str()).await.unwrap();
            let tables = db
                .query_all_raw(Statement::from_string(
                    db.get_database_backend(),
                    "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
                ))
                .await
                .unwrap();
            let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
            for table in tables {
                let name: String = table.try_get("", "tablename").unwrap();
                let row = db
                    .query_one_raw(Statement::from_sql_and_values(
                        db.get_database_backend(),
                        format!(
                            "SELECT count(*) AS n FROM \"{name}\" t WHERE t::text LIKE $1 OR t::text LIKE $2"
                        ),
                        [format!("%{needle}%").into(), format!("%{hex}%").into()],
                    ))
                    .await
                    .unwrap()
                    .unwrap();
                let n: i64 = row.try_get("", "n").unwrap();
                found += n as usize;
            }
            db.close().await.unwrap();
        }
    }
    found
}

fn secret(secrets: &[marketbridge_proto::common::v1::Secret], name: &str) -> String {
    secrets
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.value.clone())
        .unwrap_or_else(|| {
            panic!(
                "no {name} in {:?}",
                secrets.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        })
}

/// How many rows of the set's tables hold `needle` (as text, or as the hex
/// of a binary column).
async fn rows_holding(test: &TestSet, needle: &str) -> usize {
    let mut found = 0;
    for url in database_urls(test) {
        if !url.starts_with("sqlite://") {
            // PostgreSQL's scan reads rows, not files.
            continue;
        }
        let db = Database::connect(url.as_str()).await.unwrap();
        let backend = db.get_database_backend();
        let tables = db
            .query_all_raw(Statement::from_string(
                backend,
                "SELECT name FROM sqlite_master WHERE type = 'table'",
            ))
            .await
            .unwrap();
        let hex: String = needle.bytes().map(|b| format!("{b:02X}")).collect();
        for table in tables {
            let name: String = table.try_get("", "name").unwrap();
            let columns = db
                .query_all_raw(Statement::from_string(
                    backend,
                    format!("SELECT name FROM pragma_table_info('{name}')"),
                ))
                .await
                .unwrap();
            let conditions: Vec<String> = columns
                .iter()
                .map(|c| {
                    let column: String = c.try_get("", "name").unwrap();
                    format!("CAST(\"{column}\" AS TEXT) LIKE ?1 OR hex(\"{column}\") LIKE ?2")
                })
                .collect();
            let row = db
                .query_one_raw(Statement::from_sql_and_values(
                    backend,
                    format!(
                        "SELECT count(*) AS n FROM \"{name}\" WHERE {}",
                        conditions.join(" OR ")
                    ),
                    [format!("%{needle}%").into(), format!("%{hex}%").into()],
                ))
                .await
                .unwrap()
                .unwrap();
            let n: i64 = row.try_get("", "n").unwrap();
            found += n as usize;
        }
        db.close().await.unwrap();
    }
    found
}

backend_test!(
    no_provisioned_password_or_purged_contact_is_stored_in_plain_text,
    |database| async move {
        let test = set_on(&database).start().await;
        let email = format!("alice-{}@example.com", uuid::Uuid::new_v4().simple());
        let mut accounts = test.set.clients.account.clone();
        let account = accounts
            .upsert_account(account_pb::UpsertAccountRequest {
                context: context("at-rest-account"),
                marketplace_ref: Some(MarketplaceRef::new(Marketplace::Direct, "at-rest")),
                display_name: "At rest".into(),
                contact: Some(Person {
                    email: email.clone(),
                    name: "Alice".into(),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();

        let mut provisioning = test.set.clients.provisioning.clone();
        let created = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                context: context("at-rest-resource"),
                account_id: account.id.clone(),
                product_id: "database".into(),
                plan_id: "pro".into(),
                name: "at-rest".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let first_password = secret(&created.secrets, "PGPASSWORD");
        let resource_id = created.resource.unwrap().id;
        let rotated = provisioning
            .rotate_secrets(provisioning_pb::RotateSecretsRequest {
                context: context("at-rest-rotation"),
                resource_id: resource_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let passwords = if rotated.sync {
            vec![first_password, secret(&rotated.secrets, "PGPASSWORD")]
        } else {
            vec![first_password]
        };
        test.set.drain().await.unwrap();

        // The replay still answers with the secrets…
        let replayed = provisioning
            .create_resource(provisioning_pb::CreateResourceRequest {
                context: context("at-rest-resource"),
                account_id: account.id.clone(),
                product_id: "database".into(),
                plan_id: "pro".into(),
                name: "at-rest".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(secret(&replayed.secrets, "PGPASSWORD"), passwords[0]);
        // …but no database holds them in plain text.
        for password in &passwords {
            assert!(password.len() >= 16, "a real password: {password}");
            assert_eq!(
                occurrences(&test, password).await,
                0,
                "a provisioned password is stored in plain text"
            );
        }

        // Erasing the account's personal data leaves no copy of it (the
        // search does find it while the account holds it).
        let is_sqlite = database.url().starts_with("sqlite://");
        let before = if is_sqlite {
            rows_holding(&test, &email).await
        } else {
            occurrences(&test, &email).await
        };
        assert!(before > 0, "the contact is stored before the purge");
        accounts
            .delete_account(account_pb::DeleteAccountRequest {
                context: context("at-rest-delete"),
                account: Some(AccountSelector {
                    selector: Some(
                        marketbridge_proto::common::v1::account_selector::Selector::AccountId(
                            account.id.clone(),
                        ),
                    ),
                }),
                purge: true,
                ..Default::default()
            })
            .await
            .unwrap();
        // Every table on SQLite (freed pages may keep old bytes until
        // reused), every table on PostgreSQL.
        let left_behind = if is_sqlite {
            rows_holding(&test, &email).await
        } else {
            occurrences(&test, &email).await
        };
        assert_eq!(left_behind, 0, "the purged contact survives in a table");
        let db = Database::connect(test.set.config.account.database_url.as_str())
            .await
            .unwrap();
        let left = db
            .query_one_raw(Statement::from_sql_and_values(
                db.get_database_backend(),
                match db.get_database_backend() {
                    marketbridge_storage::sea_orm::DbBackend::Postgres => {
                        "SELECT count(*) AS n FROM idempotency_records WHERE subject = $1"
                    }
                    _ => "SELECT count(*) AS n FROM idempotency_records WHERE subject = ?",
                },
                [account.id.clone().into()],
            ))
            .await
            .unwrap()
            .unwrap();
        let left: i64 = left.try_get("", "n").unwrap();
        assert_eq!(
            left, 1,
            "only the deletion's own answer (about the purged account) is left"
        );
        db.close().await.unwrap();
        test.stop().await;
    }
);
