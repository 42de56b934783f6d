//! The operators' audit log: one row per action an operator took through a
//! service's admin API (retrying a job, suspending a resource, approving a
//! signup by hand), naming the gRPC caller, what was done to what, and how
//! it ended. Every service has the table; each records the actions it
//! performs. Actions of the set's own parts are not operator actions and are
//! not recorded here.

use crate::db::{begin_write, db_error};
use crate::outbox::{Outbox, job_to_proto};
use marketbridge_core::ids::AuditId;
use marketbridge_core::time::{SharedClock, to_timestamp};
use marketbridge_core::{Error, Result};
use marketbridge_proto::common::v1 as pb;
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseConnection, QueryOrder, QuerySelect};

/// The `audit_log` table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One operator action.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit_log")]
    pub struct Model {
        /// Entry id (`aud_...`, time-ordered).
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        /// The gRPC caller's configured name.
        pub actor: String,
        /// What was done (`outbox.retry`).
        pub action: String,
        /// What it was done to.
        pub target: String,
        /// The account concerned; empty when none is known.
        pub account_id: String,
        /// The reason given and the request's essentials.
        pub detail: String,
        /// `ok`, or the error the action ended with.
        pub outcome: String,
        /// When.
        pub created_at: ChronoDateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// An action to record.
#[derive(Debug, Clone, Default)]
pub struct Action {
    /// The caller.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// The account concerned, if known.
    pub account_id: String,
    /// Reason and essentials.
    pub detail: String,
}

impl Action {
    /// `actor` did `action` to `target`.
    pub fn new(actor: &str, action: &str, target: &str) -> Self {
        Self {
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            ..Self::default()
        }
    }

    /// The account concerned.
    pub fn account(mut self, account_id: &str) -> Self {
        self.account_id = account_id.to_owned();
        self
    }

    /// The reason and essentials.
    pub fn detail(mut self, detail: &str) -> Self {
        self.detail = detail.chars().take(1000).collect();
        self
    }
}

/// The audit log of one service database.
#[derive(Clone)]
pub struct AuditLog {
    db: DatabaseConnection,
    clock: SharedClock,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

impl AuditLog {
    /// The log in `db`.
    pub fn new(db: DatabaseConnection, clock: SharedClock) -> Self {
        Self { db, clock }
    }

    /// Records `action` ending with `outcome` (`ok` or an error), in `conn`.
    /// Also logged, with the operator's name on the current span.
    pub async fn record_in(
        &self,
        conn: &impl ConnectionTrait,
        action: &Action,
        outcome: &str,
    ) -> Result<()> {
        tracing::info!(
            audit.actor = %action.actor,
            audit.action = %action.action,
            audit.target = %action.target,
            audit.outcome = %outcome,
            "operator action"
        );
        let row = entity::ActiveModel {
            id: Set(AuditId::generate().into_string()),
            actor: Set(action.actor.clone()),
            action: Set(action.action.clone()),
            target: Set(action.target.clone()),
            account_id: Set(action.account_id.clone()),
            detail: Set(action.detail.clone()),
            outcome: Set(outcome.chars().take(1000).collect()),
            created_at: Set(crate::db::truncate_micros(self.clock.now())),
        };
        entity::Entity::insert(row)
            .exec_without_returning(conn)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Records how `result` ended for `action`, and passes it on. A failure
    /// to record is logged, never hides the action's own answer.
    pub async fn record<T>(&self, action: Action, result: Result<T>) -> Result<T> {
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(error) => error.to_string(),
        };
        let recorded = async {
            let write = crate::db::write_once(&self.db).await?;
            self.record_in(&write, &action, &outcome).await?;
            write.commit().await
        };
        if let Err(error) = recorded.await {
            tracing::error!(error = %error, audit.action = %action.action, "recording an operator action failed");
        }
        result
    }

    /// Records `action` by `actor` when there is one (an operator, not the
    /// set itself), with the account the answer names, and passes the
    /// answer on.
    pub async fn record_for<T>(
        &self,
        actor: Option<String>,
        mut action: Action,
        result: Result<T>,
        account_of: impl FnOnce(&T) -> String,
    ) -> Result<T> {
        let Some(actor) = actor else {
            return result;
        };
        action.actor = actor;
        if let Ok(answer) = &result {
            let account = account_of(answer);
            if !account.is_empty() {
                action.account_id = account;
            }
        }
        self.record(action, result).await
    }

    /// A page of entries, newest first.
    pub async fn list(
        &self,
        request: &pb::ListAuditEntriesRequest,
    ) -> Result<pb::ListAuditEntriesResponse> {
        let page = crate::paging::Page::from_request(request.page.as_ref());
        let mut query = entity::Entity::find()
            .order_by_desc(entity::Column::Id)
            .limit(page.fetch_limit());
        if !request.account_id.trim().is_empty() {
            query = query.filter(entity::Column::AccountId.eq(request.account_id.trim()));
        }
        if let Some(after) = &page.after {
            query = query.filter(entity::Column::Id.lt(after.clone()));
        }
        let rows = query.all(&self.db).await.map_err(db_error)?;
        let (rows, next) = page.finish(rows, |row| row.id.clone());
        Ok(pb::ListAuditEntriesResponse {
            entries: rows.iter().map(entry_to_proto).collect(),
            page: Some(next),
        })
    }
}

/// An entry as the admin API answers it.
pub fn entry_to_proto(row: &entity::Model) -> pb::AuditEntry {
    pb::AuditEntry {
        id: row.id.clone(),
        actor: row.actor.clone(),
        action: row.action.clone(),
        target: row.target.clone(),
        account_id: row.account_id.clone(),
        detail: row.detail.clone(),
        outcome: row.outcome.clone(),
        at: Some(to_timestamp(row.created_at)),
    }
}

/// The admin RPCs every service serves over its outbox and audit log.
#[derive(Clone, Debug)]
pub struct OutboxAdmin {
    outbox: Outbox,
    audit: AuditLog,
    db: DatabaseConnection,
}

impl OutboxAdmin {
    /// The admin API over `outbox` (in `db`).
    pub fn new(db: DatabaseConnection, outbox: Outbox) -> Self {
        Self {
            audit: AuditLog::new(db.clone(), outbox.clock().clone()),
            outbox,
            db,
        }
    }

    /// The audit log.
    pub fn audit(&self) -> &AuditLog {
        &self.audit
    }

    /// `ListOutboxJobs`.
    pub async fn list_jobs(
        &self,
        request: pb::ListOutboxJobsRequest,
    ) -> Result<pb::ListOutboxJobsResponse> {
        self.outbox.list_jobs(&request).await
    }

    /// `ListAuditEntries`.
    pub async fn list_audit(
        &self,
        request: pb::ListAuditEntriesRequest,
    ) -> Result<pb::ListAuditEntriesResponse> {
        self.audit.list(&request).await
    }

    /// `RetryOutboxJob` by `actor`: the job's change and the audit row
    /// commit together; a refused retry is recorded too.
    pub async fn retry(
        &self,
        actor: &str,
        request: pb::OutboxJobActionRequest,
    ) -> Result<pb::OutboxJob> {
        let answer = self.act(actor, "outbox.retry", &request).await;
        if answer.is_ok() {
            self.outbox.wake();
        }
        answer
    }

    /// `DiscardOutboxJob` by `actor`.
    pub async fn discard(
        &self,
        actor: &str,
        request: pb::OutboxJobActionRequest,
    ) -> Result<pb::OutboxJob> {
        self.act(actor, "outbox.discard", &request).await
    }

    async fn act(
        &self,
        actor: &str,
        name: &str,
        request: &pb::OutboxJobActionRequest,
    ) -> Result<pb::OutboxJob> {
        let job_id = request.job_id.trim();
        if job_id.is_empty() {
            return Err(Error::invalid_field("job_id", "is required"));
        }
        let row = self.outbox.job(job_id).await?;
        let action = Action::new(actor, name, job_id)
            .account(&account_of_payload(&row.payload))
            .detail(&format!("{} {}", row.kind, request.reason.trim()));
        let tx = begin_write(&self.db).await?;
        let changed = if name == "outbox.retry" {
            self.outbox.retry_job(&tx, job_id).await
        } else {
            self.outbox.discard_job(&tx, job_id).await
        };
        match changed {
            Ok(row) => {
                self.audit.record_in(&tx, &action, "ok").await?;
                tx.commit().await.map_err(db_error)?;
                Ok(job_to_proto(&row))
            }
            Err(error) => {
                drop(tx.rollback().await);
                self.audit.record(action, Err(error)).await
            }
        }
    }
}

/// The account a job's payload names (`account_id`), if it names one.
fn account_of_payload(payload: &str) -> String {
    serde_json::from_str::<serde_json::Value>(payload)
        .ok()
        .and_then(|value| {
            value
                .get("account_id")
                .and_then(|v| v.as_str())
                .map(str::to_owned)
        })
        .unwrap_or_default()
}
