//! Migrations of the tables every service has. Each service's migrator lists
//! these before its own.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Creates `outbox_jobs`.
pub struct CreateOutboxJobs;

impl MigrationName for CreateOutboxJobs {
    fn name(&self) -> &str {
        "m0000_000001_create_outbox_jobs"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOutboxJobs {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("outbox_jobs")
                    .if_not_exists()
                    .col(string("id").primary_key())
                    .col(string("kind"))
                    .col(text("payload"))
                    .col(string_null("dedupe_key").unique_key())
                    .col(text_null("traceparent"))
                    .col(string("status"))
                    .col(integer("attempts"))
                    .col(integer("max_attempts"))
                    .col(timestamp_with_time_zone("run_at"))
                    .col(timestamp_with_time_zone_null("locked_until"))
                    .col(text_null("last_error"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("finished_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("outbox_jobs_due")
                    .table("outbox_jobs")
                    .col("status")
                    .col("run_at")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("outbox_jobs").to_owned())
            .await
    }
}

/// Creates `idempotency_records`.
pub struct CreateIdempotencyRecords;

impl MigrationName for CreateIdempotencyRecords {
    fn name(&self) -> &str {
        "m0000_000002_create_idempotency_records"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateIdempotencyRecords {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("idempotency_records")
                    .if_not_exists()
                    .col(string("scope"))
                    .col(string("key"))
                    .col(string("fingerprint"))
                    .col(blob("response"))
                    .col(timestamp_with_time_zone("created_at"))
                    .primary_key(Index::create().col("scope").col("key"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("idempotency_records").to_owned())
            .await
    }
}

/// Creates `leader_leases`.
pub struct CreateLeaderLeases;

impl MigrationName for CreateLeaderLeases {
    fn name(&self) -> &str {
        "m0000_000003_create_leader_leases"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateLeaderLeases {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("leader_leases")
                    .if_not_exists()
                    .col(string("name").primary_key())
                    .col(string("holder"))
                    .col(big_integer("term"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("leader_leases").to_owned())
            .await
    }
}

/// Adds `idempotency_records.subject`: the account a stored answer concerns.
pub struct AddIdempotencySubject;

impl MigrationName for AddIdempotencySubject {
    fn name(&self) -> &str {
        "m0000_000004_add_idempotency_subject"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AddIdempotencySubject {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("idempotency_records")
                    .add_column(string_null("subject"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idempotency_records_subject")
                    .table("idempotency_records")
                    .col("subject")
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idempotency_records_created_at")
                    .table("idempotency_records")
                    .col("created_at")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table("idempotency_records")
                    .drop_column("subject")
                    .to_owned(),
            )
            .await
    }
}

/// The shared migrations, in order; services prepend them to their own.
pub fn shared() -> Vec<Box<dyn MigrationTrait>> {
    vec![
        Box::new(CreateOutboxJobs),
        Box::new(CreateIdempotencyRecords),
        Box::new(CreateLeaderLeases),
        Box::new(AddIdempotencySubject),
        Box::new(CreateAuditLog),
        Box::new(IndexOutboxClaims),
        Box::new(CreateOutboxSpentKeys),
    ]
}

/// Creates `audit_log`, the operators' actions.
pub struct CreateAuditLog;

impl MigrationName for CreateAuditLog {
    fn name(&self) -> &str {
        "m0000_000005_create_audit_log"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateAuditLog {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("audit_log")
                    .if_not_exists()
                    .col(string("id").primary_key())
                    .col(string("actor"))
                    .col(string("action"))
                    .col(string("target"))
                    .col(string("account_id"))
                    .col(text("detail"))
                    .col(text("outcome"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_log_account")
                    .table("audit_log")
                    .col("account_id")
                    .col("id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("audit_log").to_owned())
            .await
    }
}

/// Replaces `outbox_jobs_due` (status, run_at) with `outbox_jobs_claim`
/// (status, run_at, id): a claim reads the due jobs in the order it takes
/// them (`run_at`, then `id`), so it stops after the few it wants however
/// long the queue is; with the old index every due job was read and sorted
/// at every claim.
pub struct IndexOutboxClaims;

impl MigrationName for IndexOutboxClaims {
    fn name(&self) -> &str {
        "m0000_000006_index_outbox_claims"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for IndexOutboxClaims {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("outbox_jobs_claim")
                    .table("outbox_jobs")
                    .col("status")
                    .col("run_at")
                    .col("id")
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("outbox_jobs_due")
                    .table("outbox_jobs")
                    .if_exists()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create()
                    .name("outbox_jobs_due")
                    .table("outbox_jobs")
                    .col("status")
                    .col("run_at")
                    .if_not_exists()
                    .to_owned(),
            )
            .await?;
        manager
            .drop_index(
                Index::drop()
                    .name("outbox_jobs_claim")
                    .table("outbox_jobs")
                    .if_exists()
                    .to_owned(),
            )
            .await
    }
}

/// Creates `outbox_spent_keys`: the dedupe keys of finished jobs the
/// retention sweep removed, so a key is still never enqueued twice.
pub struct CreateOutboxSpentKeys;

impl MigrationName for CreateOutboxSpentKeys {
    fn name(&self) -> &str {
        "m0000_000007_create_outbox_spent_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for CreateOutboxSpentKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table("outbox_spent_keys")
                    .if_not_exists()
                    .col(string("dedupe_key").primary_key())
                    .col(string("kind"))
                    .col(timestamp_with_time_zone_null("finished_at"))
                    .col(timestamp_with_time_zone("moved_at"))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table("outbox_spent_keys").to_owned())
            .await
    }
}
