//! Every lookup the services make has an index. A Vercel customer's whole
//! life (install, provision, read, update, usage, hourly reports, invoices,
//! uninstall and closing) runs on SQLite while every statement sent is
//! recorded; then SQLite explains each one, and a full scan of a table that
//! grows with customers fails the test. The few scans that are fine (tables
//! with one row per periodic task, or scans bounded by a limit over an
//! index) are listed below with the reason.

use crate::billing_vercel::{bill, clock_to, record, usage};
use crate::vercel_support::{
    VercelOptions, installation_path, provision_body, resource_path, vercel_set,
};
use marketbridge_storage::testing::{
    TestBackend, TestDatabase, record_statements, recorded_statements, sqlite_query_plan,
};
use serde_json::json;
use std::collections::BTreeMap;

/// Tables that may be scanned, and why.
const SCANS_ALLOWED: &[(&str, &str)] = &[
    ("seaql_migrations", "read once at start"),
    ("leader_leases", "one row per periodic task"),
    (
        "pragma_table_info",
        "schema introspection by the migrations at start",
    ),
];

fn at(text: &str) -> chrono::DateTime<chrono::Utc> {
    marketbridge_core::time::parse_rfc3339("at", text).expect("a time")
}

/// The table a plan line scans, when it is a full scan of a table.
fn scanned_table(detail: &str) -> Option<&str> {
    let rest = detail.strip_prefix("SCAN ")?;
    if rest.starts_with('(') || rest.starts_with("CONSTANT") {
        return None;
    }
    let table = rest.split_whitespace().next()?;
    // `SCAN t USING COVERING INDEX i` still reads every entry of the index.
    Some(table)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_lookup_of_a_customer_s_life_uses_an_index() {
    record_statements();
    let database = TestDatabase::create(TestBackend::Sqlite)
        .await
        .expect("SQLite");
    let vercel = vercel_set(&database, VercelOptions::manual()).await;
    let test = &vercel.test;
    let (installation, admin) = vercel.install().await;
    let resource = vercel
        .provision(
            &installation,
            &admin,
            provision_body("database", "pro", "indexed", json!({"region": "iad1"})),
        )
        .await;
    vercel.drain().await;
    let resource_id = resource["id"].as_str().expect("an id").to_owned();
    let path = resource_path(&installation, &resource_id);
    let read = vercel.partner.get(&path).user(&admin).send().await;
    assert_eq!(read.status, 200, "{}", read.text);
    let updated = vercel
        .partner
        .patch(&path)
        .user(&admin)
        .json(&json!({"name": "renamed"}))
        .send()
        .await;
    assert_eq!(updated.status, 200, "{}", updated.text);
    let plans = vercel
        .partner
        .get(&format!("{path}/plans"))
        .user(&admin)
        .send()
        .await;
    assert_eq!(plans.status, 200, "{}", plans.text);
    vercel.drain().await;

    clock_to(test, at("2026-11-23T12:31:00Z"));
    let recorded = record(
        test,
        vec![usage(
            "u1",
            &resource_id,
            "requests",
            1_100_000,
            at("2026-11-23T12:30:00Z"),
        )],
    )
    .await;
    assert_eq!(recorded.accepted, 1);
    clock_to(test, at("2026-11-23T14:06:00Z"));
    bill(test).await;
    clock_to(test, at("2026-12-01T00:06:00Z"));
    bill(test).await;
    let deleted = vercel
        .partner
        .delete(&installation_path(&installation))
        .user(&admin)
        .json(&json!({"cascadeResourceDeletion": true}))
        .send()
        .await;
    assert_eq!(deleted.status, 200, "{}", deleted.text);
    vercel.drain().await;
    clock_to(test, at("2026-12-01T00:20:00Z"));
    bill(test).await;
    test.drain().await;

    // What SQLite does with each statement, in the database it belongs to.
    let statements = recorded_statements();
    assert!(
        statements.len() > 20,
        "statements were recorded: {statements:?}"
    );
    let config = &test.set.config;
    let mut databases = Vec::new();
    for url in [
        &config.account.database_url,
        &config.provisioning.database_url,
        &config.billing.database_url,
    ] {
        databases.push(marketbridge_storage::connect(url).await.unwrap());
    }
    let mut explained = 0;
    // A table of each service, so no service's statements go unexplained.
    let mut covered = vec!["accounts", "resources", "subscriptions", "usage_events"];
    let mut scans: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for sql in &statements {
        let head = sql.trim_start().to_ascii_uppercase();
        if !["SELECT", "UPDATE", "DELETE", "WITH"]
            .iter()
            .any(|verb| head.starts_with(verb))
        {
            continue;
        }
        let mut plan = None;
        for db in &databases {
            if let Some(found) = sqlite_query_plan(db, sql).await {
                plan = Some(found);
                break;
            }
        }
        let Some(plan) = plan else {
            continue;
        };
        explained += 1;
        covered.retain(|table| !sql.contains(&format!("\"{table}\"")));
        for line in &plan {
            if let Some(table) = scanned_table(line) {
                scans
                    .entry(table.to_owned())
                    .or_default()
                    .push(format!("{line}: {sql}"));
            }
        }
    }
    assert!(explained > 20, "statements were explained: {explained}");
    assert!(covered.is_empty(), "no statement explained on {covered:?}");
    let unexpected: BTreeMap<&String, &Vec<String>> = scans
        .iter()
        .filter(|(table, _)| !SCANS_ALLOWED.iter().any(|(allowed, _)| allowed == table))
        .collect();
    assert!(
        unexpected.is_empty(),
        "lookups without an index ({explained} statements explained):\n{unexpected:#?}"
    );
    vercel.stop().await;
}
