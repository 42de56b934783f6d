//! The reporting ledger: every submission to a marketplace is a row written
//! in the same transaction as the outbox job that delivers it, with the body
//! rendered once, so every attempt sends the same bytes. The marketplace's
//! answer, the attempts and the outcome are kept for operators and for
//! `ListUsageReports`.

use super::BillingDomain;
use crate::entity::{invoice, usage_report};
use crate::jobs::{self, kind as job_kind};
use crate::marketplace::{Delivery, DeliveryAccount, UsageReporter, invoice_state};
use crate::submission::{Submission, kind as submission_kind};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::crypto::SecretString;
use marketbridge_core::ids::ReportId;
use marketbridge_core::time::{to_rfc3339, to_timestamp};
use marketbridge_core::{Error, ErrorCode, Marketplace, Result};
use marketbridge_proto::account::v1::{GetAccountRequest, GetMarketplaceCredentialRequest};
use marketbridge_proto::billing::v1 as pb;
use marketbridge_proto::common::v1::AccountSelector;
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::{
    JobError, NewJob, entity as outbox_entity, status as job_status,
};
use marketbridge_storage::paging::Page;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};
use std::sync::Arc;

/// Where a submission stands, as stored.
pub mod report_status {
    /// Queued for delivery (or being retried).
    pub const PENDING: &str = "pending";
    /// Accepted by the marketplace.
    pub const SENT: &str = "sent";
    /// Refused for good by the marketplace.
    pub const FAILED: &str = "failed";
    /// Held back: the marketplace says the customer cannot be billed now.
    pub const SUSPENDED: &str = "suspended";

    /// True when nothing more will be attempted.
    pub fn is_settled(status: &str) -> bool {
        matches!(status, SENT | FAILED)
    }
}

/// Longest answer kept per report.
const MAX_ANSWER_CHARS: usize = 8000;

/// A submission to record and deliver.
pub(crate) struct NewReport {
    /// Account.
    pub account_id: String,
    /// Subscription, or empty for account-wide submissions.
    pub subscription_id: String,
    /// Marketplace.
    pub marketplace: Marketplace,
    /// What to send.
    pub submission: Submission,
    /// Time covered.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Deterministic key, unique per marketplace and kind.
    pub idempotency_key: String,
    /// Our invoice, for invoice submissions.
    pub invoice_id: Option<String>,
}

fn status_to_proto(status: &str) -> pb::ReportStatus {
    match status {
        report_status::PENDING => pb::ReportStatus::Pending,
        report_status::SENT => pb::ReportStatus::Sent,
        report_status::FAILED => pb::ReportStatus::Failed,
        report_status::SUSPENDED => pb::ReportStatus::Suspended,
        _ => pb::ReportStatus::Unspecified,
    }
}

fn status_name(status: pb::ReportStatus) -> Option<&'static str> {
    match status {
        pb::ReportStatus::Pending => Some(report_status::PENDING),
        pb::ReportStatus::Sent => Some(report_status::SENT),
        pb::ReportStatus::Failed => Some(report_status::FAILED),
        pb::ReportStatus::Suspended => Some(report_status::SUSPENDED),
        pb::ReportStatus::Unspecified => None,
    }
}

/// A ledger row as the protobuf message.
pub fn report_to_proto(row: &usage_report::Model) -> pb::UsageReport {
    let marketplace = Marketplace::parse("marketplace", &row.marketplace)
        .map(Marketplace::to_proto)
        .unwrap_or_default();
    pb::UsageReport {
        id: row.id.clone(),
        account_id: row.account_id.clone(),
        subscription_id: row.subscription_id.clone(),
        marketplace,
        kind: row.kind.clone(),
        window_start: row.window_start.map(to_timestamp),
        window_end: row.window_end.map(to_timestamp),
        idempotency_key: row.idempotency_key.clone(),
        request_json: row.request_json.clone(),
        response: row.response.clone(),
        status: status_to_proto(&row.status) as i32,
        attempts: row.attempts.max(0) as u32,
        created_at: Some(to_timestamp(row.created_at)),
        sent_at: row.sent_at.map(to_timestamp),
        invoice_id: row.invoice_id.clone().unwrap_or_default(),
        updated_at: Some(to_timestamp(row.updated_at)),
    }
}

fn shorten(text: &str) -> String {
    text.chars().take(MAX_ANSWER_CHARS).collect()
}

/// Whether a failed delivery is worth another attempt.
fn is_transient(error: &Error) -> bool {
    matches!(
        error.code(),
        ErrorCode::Unavailable | ErrorCode::RateLimited | ErrorCode::Timeout | ErrorCode::Internal
    )
}

impl BillingDomain {
    /// Records a submission and enqueues its delivery inside `conn` (the
    /// transaction of the change that causes it). Returns `None` when a
    /// submission with the same key was recorded before.
    pub(crate) async fn record_report(
        &self,
        conn: &impl ConnectionTrait,
        reporter: &Arc<dyn UsageReporter>,
        report: NewReport,
    ) -> Result<Option<usage_report::Model>> {
        let now = self.now();
        let body = reporter.render(&report.submission)?;
        let row = usage_report::Model {
            id: ReportId::generate().into_string(),
            account_id: report.account_id,
            subscription_id: report.subscription_id,
            marketplace: report.marketplace.as_str().to_owned(),
            kind: report.submission.kind().to_owned(),
            window_start: report.window.map(|(start, _)| start),
            window_end: report.window.map(|(_, end)| end),
            idempotency_key: report.idempotency_key,
            request_json: body,
            response: String::new(),
            status: report_status::PENDING.to_owned(),
            attempts: 0,
            job_id: None,
            invoice_id: report.invoice_id,
            created_at: now,
            updated_at: now,
            sent_at: None,
        };
        let inserted = usage_report::Entity::insert(row.clone().into_active_model())
            .on_conflict(
                OnConflict::columns([
                    usage_report::Column::Marketplace,
                    usage_report::Column::Kind,
                    usage_report::Column::IdempotencyKey,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(conn)
            .await
            .map_err(db_error)?;
        if inserted == 0 {
            return Ok(None);
        }
        let row = self.enqueue_delivery(conn, row).await?;
        tracing::info!(
            report.id = %row.id,
            account.id = %row.account_id,
            marketplace = %row.marketplace,
            kind = %row.kind,
            key = %row.idempotency_key,
            "submission recorded"
        );
        Ok(Some(row))
    }

    /// Enqueues a delivery job for a recorded submission.
    async fn enqueue_delivery(
        &self,
        conn: &impl ConnectionTrait,
        mut row: usage_report::Model,
    ) -> Result<usage_report::Model> {
        let job = NewJob::new(
            job_kind::DELIVER_REPORT,
            &jobs::ReportJob {
                report_id: row.id.clone(),
            },
        )?;
        let job_id = self.outbox.enqueue(conn, job).await?;
        row.job_id = job_id.map(String::from);
        row.updated_at = self.now();
        usage_report::ActiveModel {
            id: Set(row.id.clone()),
            job_id: Set(row.job_id.clone()),
            updated_at: Set(row.updated_at),
            ..Default::default()
        }
        .update(conn)
        .await
        .map_err(db_error)?;
        Ok(row)
    }

    /// A page of the reporting ledger, newest first.
    pub async fn list_usage_reports(
        &self,
        request: pb::ListUsageReportsRequest,
    ) -> Result<pb::ListUsageReportsResponse> {
        let page = Page::from_request(request.page.as_ref());
        let mut query = usage_report::Entity::find()
            .order_by_desc(usage_report::Column::Id)
            .limit(page.fetch_limit());
        if !request.account_id.is_empty() {
            query = query.filter(usage_report::Column::AccountId.eq(request.account_id.clone()));
        }
        if !request.subscription_id.is_empty() {
            query = query
                .filter(usage_report::Column::SubscriptionId.eq(request.subscription_id.clone()));
        }
        if !request.kind.is_empty() {
            query = query.filter(usage_report::Column::Kind.eq(request.kind.clone()));
        }
        if request.status != 0 {
            let status = pb::ReportStatus::try_from(request.status)
                .ok()
                .and_then(status_name)
                .ok_or_else(|| Error::invalid_field("status", "is not a known report status"))?;
            query = query.filter(usage_report::Column::Status.eq(status));
        }
        if let Some(after) = &page.after {
            query = query.filter(usage_report::Column::Id.lt(after.clone()));
        }
        let rows = query.all(&self.db).await.map_err(db_error)?;
        let (rows, next) = page.finish(rows, |row| row.id.clone());
        Ok(pb::ListUsageReportsResponse {
            reports: rows.iter().map(report_to_proto).collect(),
            page: Some(next),
        })
    }

    /// One ledger row.
    pub(crate) async fn report(&self, report_id: &str) -> Result<Option<usage_report::Model>> {
        usage_report::Entity::find_by_id(report_id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error)
    }

    /// Whom a submission is delivered for: the account's marketplace id and,
    /// when it holds one, its marketplace credential.
    pub(crate) async fn delivery_account(&self, account_id: &str) -> Result<DeliveryAccount> {
        let mut accounts = self.peers.accounts.clone();
        let account = accounts
            .get_account(GetAccountRequest {
                account: Some(AccountSelector::by_id(account_id)),
            })
            .await
            .map_err(Error::from)?
            .into_inner();
        let external_id = account
            .marketplace_ref
            .map(|reference| reference.external_id)
            .unwrap_or_default();
        let credential = if account.has_credential {
            // The request may carry more than the account (what the call is
            // for); their defaults are what billing means.
            #[allow(clippy::needless_update)]
            let credential = accounts
                .get_marketplace_credential(GetMarketplaceCredentialRequest {
                    account: Some(AccountSelector::by_id(account_id)),
                    ..Default::default()
                })
                .await
                .map_err(Error::from)?
                .into_inner();
            Some(SecretString::new(credential.access_token))
        } else {
            None
        };
        Ok(DeliveryAccount {
            external_id,
            credential,
        })
    }

    /// Delivers one recorded submission (the outbox job). Settled reports
    /// are not sent again; a transient failure is recorded and retried with
    /// the same body.
    pub(crate) async fn deliver_report(&self, report_id: &str) -> Result<(), JobError> {
        let Some(row) = self.report(report_id).await? else {
            return Ok(());
        };
        if report_status::is_settled(&row.status) {
            return self.after_settled(&row).await;
        }
        let marketplace = Marketplace::parse("marketplace", &row.marketplace)?;
        let reporter = self
            .marketplaces
            .reporter(marketplace)
            .cloned()
            .ok_or_else(|| {
                JobError::Permanent(format!("no reporter is registered for {marketplace}"))
            })?;
        let grace = reporter
            .usage_grace()
            .filter(|_| row.kind == submission_kind::USAGE);
        if let (Some(grace), Some(end)) = (grace, row.window_end)
            && self.now() > end + grace
        {
            self.expire_report(&row, grace).await?;
            return Ok(());
        }
        if grace.is_some() && self.waits_for_earlier_window(&row).await? {
            // Its turn comes when the earlier window settles (or at the
            // scheduler's next run).
            tracing::debug!(report.id = %row.id, subscription.id = %row.subscription_id, "usage window waits for an earlier one");
            return Ok(());
        }
        let account = self.delivery_account(&row.account_id).await?;
        let outcome = reporter
            .deliver(&account, &row.kind, &row.request_json)
            .await;
        let now = self.now();
        if let (Some(grace), Some(end)) = (grace, row.window_end)
            && row.status == report_status::PENDING
        {
            // The first attempt that fails starts the grace period; the
            // later windows wait behind this one.
            let cause = match &outcome {
                Ok(Delivery::Suspended { .. }) => {
                    Some("the marketplace cannot bill the customer now")
                }
                Err(error) if is_transient(error) && row.attempts == 0 => {
                    Some("the marketplace is not reachable")
                }
                _ => None,
            };
            if let Some(cause) = cause {
                tracing::warn!(report.id = %row.id, subscription.id = %row.subscription_id, marketplace = %row.marketplace, window.end = %to_rfc3339(end), give_up_at = %to_rfc3339(end + grace), cause, "usage reporting is blocked; the grace period runs: this window and the later ones are kept and sent in order when it clears");
            }
        }
        let mut update = usage_report::ActiveModel {
            id: Set(row.id.clone()),
            attempts: Set(row.attempts + 1),
            updated_at: Set(now),
            ..Default::default()
        };
        let settled = match &outcome {
            Ok(Delivery::Accepted { answer, .. }) => {
                update.status = Set(report_status::SENT.to_owned());
                update.response = Set(shorten(answer));
                update.sent_at = Set(Some(now));
                tracing::info!(report.id = %row.id, kind = %row.kind, marketplace = %row.marketplace, "submission accepted");
                true
            }
            Ok(Delivery::Suspended { answer }) => {
                update.status = Set(report_status::SUSPENDED.to_owned());
                update.response = Set(shorten(answer));
                update.sent_at = Set(Some(now));
                tracing::warn!(report.id = %row.id, subscription.id = %row.subscription_id, answer = %answer, "the marketplace cannot bill this customer now; reporting is suspended");
                false
            }
            Ok(Delivery::Refused { answer }) => {
                update.status = Set(report_status::FAILED.to_owned());
                update.response = Set(shorten(answer));
                update.sent_at = Set(Some(now));
                tracing::error!(report.id = %row.id, kind = %row.kind, answer = %answer, "the marketplace refused a submission");
                true
            }
            Err(error) if is_transient(error) => {
                update.response = Set(shorten(&error.to_string()));
                tracing::warn!(report.id = %row.id, kind = %row.kind, error = %error, "submission failed, will retry");
                false
            }
            Err(error) => {
                update.status = Set(report_status::FAILED.to_owned());
                update.response = Set(shorten(&error.to_string()));
                tracing::error!(report.id = %row.id, kind = %row.kind, error = %error, "submission refused");
                true
            }
        };
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        let updated = update.update(&txn).await.map_err(db_error)?;
        if let (
            Ok(Delivery::Accepted {
                marketplace_invoice_id,
                ..
            }),
            Some(invoice_id),
        ) = (&outcome, &row.invoice_id)
        {
            self.invoice_submitted(
                &txn,
                marketplace,
                invoice_id,
                marketplace_invoice_id.as_deref(),
            )
            .await?;
        }
        let accepted = matches!(outcome, Ok(Delivery::Accepted { .. }));
        if settled
            && !accepted
            && let Some(invoice_id) = &row.invoice_id
        {
            tracing::error!(invoice.id = %invoice_id, "an invoice could not be submitted");
        }
        txn.commit().await.map_err(db_error)?;
        match outcome {
            Err(error) if is_transient(&error) => Err(JobError::Retry(error.to_string())),
            _ if settled => {
                if grace.is_some() {
                    self.requeue_next_window(&row.subscription_id).await?;
                }
                self.after_settled(&updated).await
            }
            _ => Ok(()),
        }
    }

    /// Follow-ups of a settled submission; safe to run more than once.
    async fn after_settled(&self, row: &usage_report::Model) -> Result<(), JobError> {
        if row.kind == submission_kind::FINALIZE && row.status == report_status::SENT {
            self.finalization_delivered(&row.account_id).await?;
        } else {
            self.advance_closure(&row.account_id).await?;
        }
        Ok(())
    }

    /// Stores the marketplace's id of a submitted invoice. A webhook about it
    /// may have arrived first and created a row of its own: that row's state
    /// is carried over and the row removed.
    async fn invoice_submitted(
        &self,
        conn: &impl ConnectionTrait,
        marketplace: Marketplace,
        invoice_id: &str,
        marketplace_invoice_id: Option<&str>,
    ) -> Result<()> {
        let Some(mut row) = invoice::Entity::find_by_id(invoice_id.to_owned())
            .one(conn)
            .await
            .map_err(db_error)?
        else {
            return Ok(());
        };
        if row.state == invoice_state::DRAFT {
            row.state = invoice_state::PENDING.to_owned();
            row.state_at = self.now();
        }
        if let Some(marketplace_invoice_id) = marketplace_invoice_id {
            let earlier = invoice::Entity::find()
                .filter(invoice::Column::Marketplace.eq(marketplace.as_str()))
                .filter(invoice::Column::MarketplaceInvoiceId.eq(marketplace_invoice_id))
                .filter(invoice::Column::Id.ne(invoice_id))
                .one(conn)
                .await
                .map_err(db_error)?;
            if let Some(earlier) = earlier {
                if earlier.state_at >= row.state_at {
                    row.state = earlier.state.clone();
                    row.state_at = earlier.state_at;
                    row.paid_at = row.paid_at.or(earlier.paid_at);
                }
                invoice::Entity::delete_by_id(earlier.id)
                    .exec(conn)
                    .await
                    .map_err(db_error)?;
            }
            row.marketplace_invoice_id = Some(marketplace_invoice_id.to_owned());
        }
        row.updated_at = self.now();
        row.into_active_model()
            .reset_all()
            .update(conn)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Puts submissions back in the queue that no job will deliver any more:
    /// those whose job was dead-lettered during a long outage, and suspended
    /// ones, whose check is tried again. Returns how many were queued.
    ///
    /// Each submission is re-read and locked inside the write transaction
    /// that enqueues its new job, and the job's dedupe key names the job it
    /// replaces, so two replicas (or a paused former leader) requeue a
    /// submission once.
    pub(crate) async fn requeue_stalled_reports(&self) -> Result<usize> {
        let waiting: Vec<(String, String, String, String)> = usage_report::Entity::find()
            .select_only()
            .column(usage_report::Column::Id)
            .column(usage_report::Column::Marketplace)
            .column(usage_report::Column::Kind)
            .column(usage_report::Column::SubscriptionId)
            .filter(
                usage_report::Column::Status
                    .is_in([report_status::PENDING, report_status::SUSPENDED]),
            )
            .order_by_asc(usage_report::Column::WindowStart)
            .order_by_asc(usage_report::Column::Id)
            .into_tuple()
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let mut requeued = 0;
        // Usage windows of marketplaces that take them in order: only the
        // oldest open window of each subscription is queued; the others
        // follow it.
        let mut heads = std::collections::HashSet::new();
        for (report_id, marketplace, kind, subscription_id) in waiting {
            let in_order = kind == submission_kind::USAGE
                && Marketplace::parse("marketplace", &marketplace)
                    .ok()
                    .and_then(|m| self.marketplaces.reporter(m))
                    .is_some_and(|reporter| reporter.usage_grace().is_some());
            if in_order && !heads.insert(subscription_id) {
                continue;
            }
            requeued += usize::from(self.requeue_report(report_id).await?);
        }
        Ok(requeued)
    }

    /// Queues a waiting submission again unless a job of it is still due or
    /// running. The row is re-read and locked inside the write transaction
    /// that enqueues its new job, and the job's dedupe key names the job it
    /// replaces, so two replicas (or a paused former leader) requeue it once.
    async fn requeue_report(&self, report_id: String) -> Result<bool> {
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        let Some(row) = usage_report::Entity::find_by_id(report_id)
            .lock_exclusive()
            .one(&txn)
            .await
            .map_err(db_error)?
        else {
            return Ok(false);
        };
        if row.status != report_status::PENDING && row.status != report_status::SUSPENDED {
            return Ok(false);
        }
        let job = match &row.job_id {
            Some(job_id) => outbox_entity::Entity::find_by_id(job_id.clone())
                .one(&txn)
                .await
                .map_err(db_error)?,
            None => None,
        };
        let job_finished = job
            .as_ref()
            .is_none_or(|job| job.status == job_status::DEAD || job.status == job_status::DONE);
        if !job_finished {
            return Ok(false);
        }
        // A suspended submission keeps its status (and holds the
        // subscription's later windows back) until an attempt passes.
        let replaces = row.job_id.clone().unwrap_or_else(|| "none".into());
        let job = NewJob::new(
            job_kind::DELIVER_REPORT,
            &jobs::ReportJob {
                report_id: row.id.clone(),
            },
        )?
        .dedupe_key(format!("report:{}:after:{replaces}", row.id));
        let Some(job_id) = self.outbox.enqueue(&txn, job).await? else {
            // Another replica requeued it already.
            return Ok(false);
        };
        usage_report::ActiveModel {
            id: Set(row.id.clone()),
            job_id: Set(Some(job_id.to_string())),
            updated_at: Set(self.now()),
            ..Default::default()
        }
        .update(&txn)
        .await
        .map_err(db_error)?;
        txn.commit().await.map_err(db_error)?;
        tracing::info!(report.id = %row.id, status = %row.status, "submission queued again");
        Ok(true)
    }

    /// The oldest open usage window of a subscription (pending or
    /// suspended), by window start.
    async fn oldest_open_window(
        &self,
        subscription_id: &str,
    ) -> Result<Option<usage_report::Model>> {
        usage_report::Entity::find()
            .filter(usage_report::Column::SubscriptionId.eq(subscription_id))
            .filter(usage_report::Column::Kind.eq(submission_kind::USAGE))
            .filter(
                usage_report::Column::Status
                    .is_in([report_status::PENDING, report_status::SUSPENDED]),
            )
            .order_by_asc(usage_report::Column::WindowStart)
            .order_by_asc(usage_report::Column::Id)
            .one(&self.db)
            .await
            .map_err(db_error)
    }

    /// True when an earlier usage window of the same subscription is still
    /// open: windows go out one after the other.
    async fn waits_for_earlier_window(&self, row: &usage_report::Model) -> Result<bool> {
        let Some(start) = row.window_start else {
            return Ok(false);
        };
        let earlier = usage_report::Entity::find()
            .filter(usage_report::Column::SubscriptionId.eq(row.subscription_id.clone()))
            .filter(usage_report::Column::Kind.eq(submission_kind::USAGE))
            .filter(
                usage_report::Column::Status
                    .is_in([report_status::PENDING, report_status::SUSPENDED]),
            )
            .filter(usage_report::Column::WindowStart.lt(start))
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(earlier.is_some())
    }

    /// Queues the next open usage window of a subscription once the one
    /// before it settled, so a backlog drains in order without waiting for
    /// the scheduler.
    pub(crate) async fn requeue_next_window(&self, subscription_id: &str) -> Result<()> {
        if let Some(next) = self.oldest_open_window(subscription_id).await?
            && self.requeue_report(next.id).await?
        {
            self.outbox.wake();
        }
        Ok(())
    }

    /// Gives a usage window up: the marketplace did not take it within its
    /// grace period. It is marked failed (with the last answer kept),
    /// logged and counted, and the next window takes its turn. False when
    /// it settled meanwhile.
    pub(crate) async fn expire_report(
        &self,
        row: &usage_report::Model,
        grace: ChronoDuration,
    ) -> Result<bool> {
        let answer = format!(
            "not accepted within the grace period of {} days after the window ended; given up; last answer: {}",
            grace.num_days(),
            row.response
        );
        let updated = usage_report::Entity::update_many()
            .col_expr(
                usage_report::Column::Status,
                Expr::value(report_status::FAILED),
            )
            .col_expr(
                usage_report::Column::Response,
                Expr::value(shorten(&answer)),
            )
            .col_expr(usage_report::Column::UpdatedAt, Expr::value(self.now()))
            .filter(usage_report::Column::Id.eq(row.id.clone()))
            .filter(
                usage_report::Column::Status
                    .is_in([report_status::PENDING, report_status::SUSPENDED]),
            )
            .exec(&self.db)
            .await
            .map_err(db_error)?;
        if updated.rows_affected == 0 {
            return Ok(false);
        }
        marketbridge_telemetry::metrics().record_google_usage_expired(1);
        tracing::error!(
            report.id = %row.id,
            subscription.id = %row.subscription_id,
            marketplace = %row.marketplace,
            window.start = %row.window_start.map(to_rfc3339).unwrap_or_default(),
            window.end = %row.window_end.map(to_rfc3339).unwrap_or_default(),
            attempts = row.attempts,
            "a usage window passed its grace period and is given up: it will not be billed"
        );
        self.requeue_next_window(&row.subscription_id).await?;
        Ok(true)
    }

    /// True when every submission of the account is settled.
    pub(crate) async fn reports_settled(&self, account_id: &str) -> Result<bool> {
        let open = usage_report::Entity::find()
            .filter(usage_report::Column::AccountId.eq(account_id))
            .filter(
                usage_report::Column::Status
                    .is_in([report_status::PENDING, report_status::SUSPENDED]),
            )
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(open.is_none())
    }

    /// Whether a submission with this key exists.
    pub(crate) async fn report_exists(
        &self,
        marketplace: Marketplace,
        kind: &str,
        idempotency_key: &str,
    ) -> Result<bool> {
        let found = usage_report::Entity::find()
            .filter(usage_report::Column::Marketplace.eq(marketplace.as_str()))
            .filter(usage_report::Column::Kind.eq(kind))
            .filter(usage_report::Column::IdempotencyKey.eq(idempotency_key))
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(found.is_some())
    }
}

/// How long after a window ends its usage is considered complete.
pub(crate) fn settle_delay(seconds: u64) -> ChronoDuration {
    ChronoDuration::seconds(seconds.min(86_400) as i64)
}
