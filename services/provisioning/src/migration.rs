//! The provisioning service's schema.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Migrates the provisioning database.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = marketbridge_storage::migrations::shared();
        migrations.push(Box::new(CreateSubscriptions));
        migrations.push(Box::new(CreateResources));
        migrations.push(Box::new(CreateTransferClaims));
        migrations.push(Box::new(IndexResourcesBySubscription));
        migrations.push(Box::new(LinkedResources));
        migrations.push(Box::new(ResourceProtocolSettings));
        migrations.push(Box::new(ResourceProductionOnly));
        migrations.push(Box::new(ResourcesChangeNotifications));
        migrations.push(Box::new(ResourcesInsertsNotifyNothing));
        migrations
    }
}

struct CreateSubscriptions;

impl MigrationName for CreateSubscriptions {
    fn name(&self) -> &str {
        "m0001_000001_create_subscriptions"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateSubscriptions {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("subscriptions")
                    .if_not_exists()
                    .col(string("id").primary_key())
                    .col(string("account_id"))
                    .col(string("marketplace"))
                    .col(string("external_id"))
                    .col(string("product_id"))
                    .col(string("plan_id"))
                    .col(string("pending_plan_id"))
                    .col(string("state"))
                    .col(string("scope"))
                    .col(string("marketplace_state"))
                    .col(timestamp_with_time_zone_null("marketplace_update_time"))
                    .col(string("usage_reporting_id"))
                    .col(string("order_id"))
                    .col(boolean("awaiting_account_approval"))
                    .col(text("reason"))
                    .col(text("attributes"))
                    .col(big_integer("version"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("started_at"))
                    .col(timestamp_with_time_zone_null("ended_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("subscriptions_marketplace_identity")
                    .table("subscriptions")
                    .col("marketplace")
                    .col("external_id")
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("subscriptions_account")
                    .table("subscriptions")
                    .col("account_id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("subscriptions").to_owned())
            .await
    }
}

struct CreateResources;

impl MigrationName for CreateResources {
    fn name(&self) -> &str {
        "m0001_000002_create_resources"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateResources {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("resources")
                    .if_not_exists()
                    .col(string("id").primary_key())
                    .col(string("account_id"))
                    .col(string("subscription_id"))
                    .col(string("product_id"))
                    .col(string("plan_id"))
                    .col(text("name"))
                    .col(text("metadata"))
                    .col(string("status"))
                    .col(text("status_message"))
                    .col(string("marketplace"))
                    .col(string("external_id"))
                    .col(text("connections"))
                    .col(text("secrets"))
                    .col(integer("secrets_version"))
                    .col(text_null("previous_secrets"))
                    .col(timestamp_with_time_zone_null("previous_secrets_expire_at"))
                    .col(string("driver"))
                    .col(text("driver_state"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("deleted_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("resources_account")
                    .table("resources")
                    .col("account_id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("resources").to_owned())
            .await
    }
}

struct CreateTransferClaims;

impl MigrationName for CreateTransferClaims {
    fn name(&self) -> &str {
        "m0002_000001_create_transfer_claims"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateTransferClaims {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("transfer_claims")
                    .if_not_exists()
                    .col(string("id").primary_key())
                    .col(string("source_account_id"))
                    .col(text("resource_ids"))
                    .col(string("state"))
                    .col(string("target_account_id"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("accepted_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("transfer_claims_source")
                    .table("transfer_claims")
                    .col("source_account_id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("transfer_claims").to_owned())
            .await
    }
}

/// Indexes `resources.subscription_id`: every subscription change looks up
/// its resources, which otherwise scans the whole table.
struct IndexResourcesBySubscription;

impl MigrationName for IndexResourcesBySubscription {
    fn name(&self) -> &str {
        "m0003_000001_index_resources_by_subscription"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for IndexResourcesBySubscription {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("resources_subscription")
                    .table("resources")
                    .col("subscription_id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("resources_subscription")
                    .table("resources")
                    .to_owned(),
            )
            .await
    }
}

/// Imported resources: `resources.ownership` (`owned` for every resource
/// made before) and the `importable_resources` an account may import.
struct LinkedResources;

impl MigrationName for LinkedResources {
    fn name(&self) -> &str {
        "m0004_000001_linked_resources"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for LinkedResources {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if !manager.has_column("resources", "ownership").await? {
            manager
                .alter_table(
                    Table::alter()
                        .table("resources")
                        .add_column(string("ownership").default("owned"))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .create_table(
                Table::create()
                    .table("importable_resources")
                    .if_not_exists()
                    .col(string("id").primary_key())
                    .col(string("account_id"))
                    .col(string("importable_id"))
                    .col(string("product_id"))
                    .col(text("name"))
                    .col(text("metadata"))
                    .col(text("secrets"))
                    .col(string("source"))
                    .col(string("imported_resource_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("importable_resources_account")
                    .table("importable_resources")
                    .col("account_id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("importable_resources").to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table("resources")
                    .drop_column("ownership")
                    .to_owned(),
            )
            .await
    }
}

/// `resources.protocol_settings`: the marketplace's protocol settings (app
/// URLs, experimentation), `{}` for every resource made before.
struct ResourceProtocolSettings;

impl MigrationName for ResourceProtocolSettings {
    fn name(&self) -> &str {
        "m0004_000002_resource_protocol_settings"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ResourceProtocolSettings {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column("resources", "protocol_settings").await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table("resources")
                    .add_column(text("protocol_settings").default("{}"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("resources")
                    .drop_column("protocol_settings")
                    .to_owned(),
            )
            .await
    }
}

/// `resources.production_only`: Vercel's "Allowed Environments: Production
/// only", false for every resource made before.
struct ResourceProductionOnly;

impl MigrationName for ResourceProductionOnly {
    fn name(&self) -> &str {
        "m0004_000003_resource_production_only"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ResourceProductionOnly {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.has_column("resources", "production_only").await? {
            return Ok(());
        }
        manager
            .alter_table(
                Table::alter()
                    .table("resources")
                    .add_column(boolean("production_only").default(false))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("resources")
                    .drop_column("production_only")
                    .to_owned(),
            )
            .await
    }
}

/// PostgreSQL only: every statement that changes `resources` notifies
/// [`crate::resource_cache::CHANNEL`] when it commits, so each replica's
/// resource cache learns of the other replicas' changes (inserts no longer
/// do since [`ResourcesInsertsNotifyNothing`]). Nothing on SQLite, which one
/// process owns.
struct ResourcesChangeNotifications;

impl MigrationName for ResourcesChangeNotifications {
    fn name(&self) -> &str {
        "m0005_000001_resources_change_notifications"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ResourcesChangeNotifications {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        marketbridge_storage::row_cache::notify_on_change(
            manager.get_connection(),
            "resources",
            crate::resource_cache::CHANNEL,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        marketbridge_storage::row_cache::stop_notifying_on_change(
            manager.get_connection(),
            "resources",
        )
        .await
    }
}

/// PostgreSQL only: inserts into `resources` notify nothing (every provision
/// inserts one, and PostgreSQL serialises the commits that notify); updates,
/// deletions and truncations still do, naming the operation (see
/// [`marketbridge_storage::row_cache::notify_on_change`]).
struct ResourcesInsertsNotifyNothing;

impl MigrationName for ResourcesInsertsNotifyNothing {
    fn name(&self) -> &str {
        "m0006_000001_resources_inserts_notify_nothing"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ResourcesInsertsNotifyNothing {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The trigger of m0005, created again as `notify_on_change` now makes
        // it (a database migrated before this one has the one that fires on
        // inserts too).
        ResourcesChangeNotifications.up(manager).await
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // The trigger left behind serves the caches as well as the earlier
        // one did: an insert cannot make a kept row stale.
        Ok(())
    }
}
