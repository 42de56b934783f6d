//! The lookups on the hot paths use an index, on SQLite and PostgreSQL.

use marketbridge_provisioning::migration::Migrator;
use marketbridge_storage::sea_orm::{ConnectionTrait, DbBackend, Statement};
use marketbridge_storage::{backend_test, open_migrated};

backend_test!(
    resources_are_found_by_subscription_through_an_index,
    |database| async move {
        let db = open_migrated::<Migrator>(database.url()).await.unwrap();
        let backend = db.get_database_backend();
        let (sql, column) = match backend {
            DbBackend::Postgres => (
                // Without rows the planner would scan anyway; forbid it.
                "EXPLAIN SELECT * FROM resources WHERE subscription_id = 'sub_x'",
                "QUERY PLAN",
            ),
            _ => (
                "EXPLAIN QUERY PLAN SELECT * FROM resources WHERE subscription_id = 'sub_x'",
                "detail",
            ),
        };
        if backend == DbBackend::Postgres {
            db.execute_unprepared("SET enable_seqscan = off")
                .await
                .unwrap();
        }
        let rows = db
            .query_all_raw(Statement::from_string(backend, sql))
            .await
            .unwrap();
        let plan: Vec<String> = rows
            .iter()
            .map(|row| row.try_get::<String>("", column).unwrap())
            .collect();
        assert!(
            plan.iter()
                .any(|line| line.contains("resources_subscription")),
            "{plan:?}"
        );
    }
);
