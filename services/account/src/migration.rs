//! The account service's schema.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Migrates the account database.
pub struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        let mut migrations = marketbridge_storage::migrations::shared();
        migrations.push(Box::new(CreateAccounts));
        migrations.push(Box::new(CreateMarketplaceEvents));
        migrations.push(Box::new(AddCredentialLifecycle));
        migrations.push(Box::new(CountEventDeliveries));
        migrations.push(Box::new(AccountsChangeNotifications));
        migrations
    }
}

struct CreateAccounts;

impl MigrationName for CreateAccounts {
    fn name(&self) -> &str {
        "m0001_000001_create_accounts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateAccounts {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("accounts")
                    .if_not_exists()
                    .col(string("id").primary_key())
                    .col(string("marketplace"))
                    .col(string("external_id"))
                    .col(text("display_name"))
                    .col(text("url"))
                    .col(text("contact"))
                    .col(text("people"))
                    .col(text("company"))
                    .col(string("state"))
                    .col(string("signup_state"))
                    .col(text("signup_reason"))
                    .col(text("accepted_terms"))
                    .col(text("scopes"))
                    .col(text_null("credential"))
                    .col(string("credential_type"))
                    .col(string("marketplace_state"))
                    .col(timestamp_with_time_zone_null("marketplace_update_time"))
                    .col(text("attributes"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("deletion_requested_at"))
                    .col(timestamp_with_time_zone_null("finalized_at"))
                    .col(boolean("purged"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("accounts_marketplace_identity")
                    .table("accounts")
                    .col("marketplace")
                    .col("external_id")
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("accounts").to_owned())
            .await
    }
}

struct CreateMarketplaceEvents;

impl MigrationName for CreateMarketplaceEvents {
    fn name(&self) -> &str {
        "m0001_000002_create_marketplace_events"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateMarketplaceEvents {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("marketplace_events")
                    .if_not_exists()
                    .col(string("id").primary_key())
                    .col(string("marketplace"))
                    .col(string("external_id"))
                    .col(string("event_type"))
                    .col(text("payload"))
                    .col(timestamp_with_time_zone_null("occurred_at"))
                    .col(timestamp_with_time_zone("received_at"))
                    .col(string("status"))
                    .col(text("error"))
                    .col(string("channel"))
                    .col(string_null("account_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("marketplace_events_identity")
                    .table("marketplace_events")
                    .col("marketplace")
                    .col("external_id")
                    .unique()
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("marketplace_events").to_owned())
            .await
    }
}

/// Credential rotation and the marketplace's `410 Gone`: the superseded
/// credential awaiting revocation (sealed), when and by which request the
/// credential was last rotated, and when and why the marketplace said the
/// account is gone.
struct AddCredentialLifecycle;

impl MigrationName for AddCredentialLifecycle {
    fn name(&self) -> &str {
        "m0002_000001_add_credential_lifecycle"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddCredentialLifecycle {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one at a time.
        let columns = [
            text_null("previous_credential"),
            timestamp_with_time_zone_null("credential_rotated_at"),
            string_null("credential_rotation_id"),
            timestamp_with_time_zone_null("marketplace_gone_at"),
            text_null("marketplace_gone_reason"),
        ];
        for mut column in columns {
            manager
                .alter_table(
                    Table::alter()
                        .table("accounts")
                        .add_column(&mut column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for column in [
            "previous_credential",
            "credential_rotated_at",
            "credential_rotation_id",
            "marketplace_gone_at",
            "marketplace_gone_reason",
        ] {
            manager
                .alter_table(
                    Table::alter()
                        .table("accounts")
                        .drop_column(Alias::new(column))
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}

/// How many times a marketplace delivered each event: a redelivery is
/// acknowledged without being stored again, and counted here so the
/// console's inbox can mark duplicates.
struct CountEventDeliveries;

impl MigrationName for CountEventDeliveries {
    fn name(&self) -> &str {
        "m0002_000002_count_event_deliveries"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CountEventDeliveries {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("marketplace_events")
                    .add_column(integer("deliveries").default(1))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("marketplace_events")
                    .drop_column(Alias::new("deliveries"))
                    .to_owned(),
            )
            .await
    }
}

/// Every statement that changes `accounts` notifies
/// [`crate::account_cache::CHANNEL`] when it commits (PostgreSQL), so each
/// replica's account cache learns of the other replicas' changes.
struct AccountsChangeNotifications;

impl MigrationName for AccountsChangeNotifications {
    fn name(&self) -> &str {
        "m0003_000001_accounts_change_notifications"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AccountsChangeNotifications {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        marketbridge_storage::row_cache::notify_on_change(
            manager.get_connection(),
            "accounts",
            crate::account_cache::CHANNEL,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        marketbridge_storage::row_cache::stop_notifying_on_change(
            manager.get_connection(),
            "accounts",
        )
        .await
    }
}
