//! The billing service's schema.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Migrates the billing database.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = marketbridge_storage::migrations::shared();
        migrations.push(Box::new(CreateLedger));
        migrations.push(Box::new(CreateInvoices));
        migrations.push(Box::new(CreateReporting));
        migrations.push(Box::new(IndexScheduledLookups));
        migrations
    }
}

struct CreateLedger;

impl MigrationName for CreateLedger {
    fn name(&self) -> &str {
        "m0001_000001_create_ledger"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateLedger {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("billing_subscriptions")
                    .if_not_exists()
                    .col(string("subscription_id").primary_key())
                    .col(string("account_id"))
                    .col(string("account_marketplace"))
                    .col(string("account_external_id"))
                    .col(string("marketplace"))
                    .col(string("external_id"))
                    .col(string("product_id"))
                    .col(string("plan_id"))
                    .col(boolean("billable"))
                    .col(boolean("ended"))
                    .col(string("usage_reporting_id"))
                    .col(big_integer("version"))
                    .col(timestamp_with_time_zone("effective_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("billing_subscriptions_account")
                    .table("billing_subscriptions")
                    .col("account_id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("billing_resources")
                    .if_not_exists()
                    .col(string("resource_id").primary_key())
                    .col(string("subscription_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("plan_periods")
                    .if_not_exists()
                    .col(string("id").primary_key())
                    .col(string("subscription_id"))
                    .col(string("plan_id"))
                    .col(timestamp_with_time_zone("starts_at"))
                    .col(timestamp_with_time_zone_null("ends_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("plan_periods_subscription")
                    .table("plan_periods")
                    .col("subscription_id")
                    .col("starts_at")
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("usage_events")
                    .if_not_exists()
                    .col(string("event_id").primary_key())
                    .col(string("subscription_id"))
                    .col(string("resource_id"))
                    .col(string("metric_id"))
                    .col(big_integer("quantity"))
                    .col(timestamp_with_time_zone("occurred_at"))
                    .col(timestamp_with_time_zone("window_start"))
                    .col(timestamp_with_time_zone("recorded_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("usage_windows")
                    .if_not_exists()
                    .col(string("subscription_id"))
                    .col(string("resource_id"))
                    .col(string("metric_id"))
                    .col(timestamp_with_time_zone("window_start"))
                    .col(big_integer("quantity"))
                    .col(big_integer("event_count"))
                    .primary_key(
                        Index::create()
                            .col("subscription_id")
                            .col("resource_id")
                            .col("metric_id")
                            .col("window_start"),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            "usage_windows",
            "usage_events",
            "plan_periods",
            "billing_resources",
            "billing_subscriptions",
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

struct CreateInvoices;

impl MigrationName for CreateInvoices {
    fn name(&self) -> &str {
        "m0001_000002_create_invoices_and_balances"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateInvoices {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("invoices")
                    .if_not_exists()
                    .col(string("id").primary_key())
                    .col(string("account_id"))
                    .col(string("subscription_id"))
                    .col(string("marketplace"))
                    .col(string_null("marketplace_invoice_id"))
                    .col(string_null("external_id"))
                    .col(string("state"))
                    .col(timestamp_with_time_zone("state_at"))
                    .col(timestamp_with_time_zone_null("period_start"))
                    .col(timestamp_with_time_zone_null("period_end"))
                    .col(timestamp_with_time_zone_null("invoice_date"))
                    .col(text("items"))
                    .col(big_integer("total_minor"))
                    .col(string("currency"))
                    .col(boolean("test"))
                    .col(boolean("is_final"))
                    .col(big_integer("refund_total_minor"))
                    .col(text("refund_reason"))
                    .col(timestamp_with_time_zone_null("paid_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("invoices_marketplace_id")
                    .table("invoices")
                    .col("marketplace")
                    .col("marketplace_invoice_id")
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("invoices_external_id")
                    .table("invoices")
                    .col("account_id")
                    .col("external_id")
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("balances")
                    .if_not_exists()
                    .col(string("account_id"))
                    .col(string("resource_id"))
                    .col(big_integer("value_minor"))
                    .col(string("currency"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .primary_key(Index::create().col("account_id").col("resource_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("prepayment_credits")
                    .if_not_exists()
                    .col(string("marketplace"))
                    .col(string("marketplace_invoice_id"))
                    .col(string("account_id"))
                    .col(big_integer("amount_minor"))
                    .col(string("currency"))
                    .col(timestamp_with_time_zone("credited_at"))
                    .primary_key(
                        Index::create()
                            .col("marketplace")
                            .col("marketplace_invoice_id"),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["prepayment_credits", "balances", "invoices"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

struct CreateReporting;

impl MigrationName for CreateReporting {
    fn name(&self) -> &str {
        "m0001_000003_create_reporting_ledger"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateReporting {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("usage_reports")
                    .if_not_exists()
                    .col(string("id").primary_key())
                    .col(string("account_id"))
                    .col(string("subscription_id"))
                    .col(string("marketplace"))
                    .col(string("kind"))
                    .col(timestamp_with_time_zone_null("window_start"))
                    .col(timestamp_with_time_zone_null("window_end"))
                    .col(string("idempotency_key"))
                    .col(text("request_json"))
                    .col(text("response"))
                    .col(string("status"))
                    .col(integer("attempts"))
                    .col(string_null("job_id"))
                    .col(string_null("invoice_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("sent_at"))
                    .to_owned(),
            )
            .await?;
        for (name, columns, unique) in [
            (
                "usage_reports_key",
                &["marketplace", "kind", "idempotency_key"][..],
                true,
            ),
            ("usage_reports_account", &["account_id", "id"][..], false),
            (
                "usage_reports_subscription",
                &["subscription_id", "id"][..],
                false,
            ),
            ("usage_reports_status", &["status"][..], false),
        ] {
            let mut index = Index::create();
            index.name(name).table("usage_reports").if_not_exists();
            for column in columns {
                index.col(*column);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index.to_owned()).await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("account_closures")
                    .if_not_exists()
                    .col(string("account_id").primary_key())
                    .col(string("marketplace"))
                    .col(string("status"))
                    .col(timestamp_with_time_zone("requested_at"))
                    .col(timestamp_with_time_zone_null("invoiced_at"))
                    .col(timestamp_with_time_zone_null("finalized_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("billing_subscriptions")
                    .add_column(timestamp_with_time_zone_null("usage_closed_before"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("usage_events_subscription_time")
                    .table("usage_events")
                    .col("subscription_id")
                    .col("occurred_at")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in ["account_closures", "usage_reports"] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}

/// Indexes for the lookups the scheduler and the outbox jobs make, found by
/// the e2e test `indexes.rs` (SQLite's query plans of every statement).
struct IndexScheduledLookups;

impl MigrationName for IndexScheduledLookups {
    fn name(&self) -> &str {
        "m0002_000001_index_scheduled_lookups"
    }
}

/// (index name, table, columns).
const SCHEDULED_LOOKUP_INDEXES: [(&str, &str, &[&str]); 4] = [
    ("account_closures_status", "account_closures", &["status"]),
    ("invoices_state", "invoices", &["state"]),
    (
        "billing_resources_subscription",
        "billing_resources",
        &["subscription_id", "resource_id"],
    ),
    (
        "billing_subscriptions_marketplace",
        "billing_subscriptions",
        &["marketplace", "subscription_id"],
    ),
];

#[async_trait::async_trait]
impl MigrationTrait for IndexScheduledLookups {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, columns) in SCHEDULED_LOOKUP_INDEXES {
            let mut index = Index::create();
            index.name(name).table(table).if_not_exists();
            for column in columns {
                index.col(*column);
            }
            manager.create_index(index.to_owned()).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (name, table, _) in SCHEDULED_LOOKUP_INDEXES {
            manager
                .drop_index(Index::drop().name(name).table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
