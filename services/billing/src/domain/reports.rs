//! The reporting ledger: every submission to a marketplace is a row written
//! in the same transaction as the outbox job that delivers it, with the body
//! rendered once, so every attempt sends the same bytes. The marketplace's
//! answer, the attempts and the outcome are kept for operators and for
//! `ListUsageReports`.

use super::BillingDomain;
use crate::entity::{invoice, usage_report};
use crate::lifecycle::invoice::{InvoiceEvent, invoice_transition};
use crate::lifecycle::report::{
    ReportEffect, ReportEvent, ReportRefusal, ReportStatus, report_transition,
};
use crate::marketplace::{Delivery, DeliveryAccount, UsageReporter};
use crate::model::ids::{ExternalAccountId, MarketplaceInvoiceId};
use crate::model::job::{BillingJob, ReportJob};
use crate::submission::{Submission, SubmissionKind};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::crypto::SecretString;
use marketbridge_core::ids::{AccountId, InvoiceId, ReportId, SubscriptionId};
use marketbridge_core::time::{to_rfc3339, to_timestamp};
use marketbridge_core::{Error, ErrorCode, Marketplace, Result};
use marketbridge_proto::account::v1::{GetAccountRequest, GetMarketplaceCredentialRequest};
use marketbridge_proto::billing::v1 as pb;
use marketbridge_proto::common::v1::AccountSelector;
use marketbridge_storage::UnitOfWork;
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::{
    JobError, NewJob, entity as outbox_entity, status as job_status,
};
use marketbridge_storage::paging::Page;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, QuerySelect,
};
use std::sync::Arc;

/// Longest answer kept per report.
const MAX_ANSWER_CHARS: usize = 8000;

/// A submission to record and deliver.
pub(crate) struct NewReport {
    /// Account.
    pub account_id: AccountId,
    /// Subscription; `None` for account-wide submissions.
    pub subscription_id: Option<SubscriptionId>,
    /// Marketplace.
    pub marketplace: Marketplace,
    /// What to send.
    pub submission: Submission,
    /// Time covered.
    pub window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// Deterministic key, unique per marketplace and kind.
    pub idempotency_key: String,
    /// Our invoice, for invoice submissions.
    pub invoice_id: Option<InvoiceId>,
}

fn status_to_proto(status: ReportStatus) -> pb::ReportStatus {
    match status {
        ReportStatus::Pending => pb::ReportStatus::Pending,
        ReportStatus::Sent => pb::ReportStatus::Sent,
        ReportStatus::Failed => pb::ReportStatus::Failed,
        ReportStatus::Suspended => pb::ReportStatus::Suspended,
    }
}

fn status_from_proto(status: pb::ReportStatus) -> Option<ReportStatus> {
    match status {
        pb::ReportStatus::Pending => Some(ReportStatus::Pending),
        pb::ReportStatus::Sent => Some(ReportStatus::Sent),
        pb::ReportStatus::Failed => Some(ReportStatus::Failed),
        pb::ReportStatus::Suspended => Some(ReportStatus::Suspended),
        pb::ReportStatus::Unspecified => None,
    }
}

/// A ledger row as the protobuf message.
pub fn report_to_proto(row: &usage_report::Model) -> Result<pb::UsageReport> {
    let marketplace = Marketplace::parse("marketplace", &row.marketplace)
        .map_err(|_| {
            tracing::error!(report.id = %row.id, marketplace = %row.marketplace, "a stored report names an unknown marketplace");
            Error::internal("a stored report names an unknown marketplace")
        })?
        .to_proto();
    Ok(pb::UsageReport {
        id: row.id.clone(),
        account_id: row.account_id.clone(),
        subscription_id: row.subscription_id.clone(),
        marketplace,
        kind: row.kind.as_str().to_owned(),
        window_start: row.window_start.map(to_timestamp),
        window_end: row.window_end.map(to_timestamp),
        idempotency_key: row.idempotency_key.clone(),
        request_json: row.request_json.clone(),
        response: row.response.clone(),
        status: status_to_proto(row.status) as i32,
        attempts: row.attempts.max(0) as u32,
        created_at: Some(to_timestamp(row.created_at)),
        sent_at: row.sent_at.map(to_timestamp),
        invoice_id: row.invoice_id.clone().unwrap_or_default(),
        updated_at: Some(to_timestamp(row.updated_at)),
    })
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
        work: &mut UnitOfWork,
        reporter: &Arc<dyn UsageReporter>,
        report: NewReport,
    ) -> Result<Option<usage_report::Model>> {
        let now = self.now();
        let body = reporter.render(&report.submission)?;
        let row = usage_report::Model {
            id: ReportId::generate().into_string(),
            account_id: report.account_id.into_string(),
            subscription_id: report
                .subscription_id
                .map(SubscriptionId::into_string)
                .unwrap_or_default(),
            marketplace: report.marketplace.as_str().to_owned(),
            kind: report.submission.kind(),
            window_start: report.window.map(|(start, _)| start),
            window_end: report.window.map(|(_, end)| end),
            idempotency_key: report.idempotency_key,
            request_json: body,
            response: String::new(),
            status: ReportStatus::Pending,
            attempts: 0,
            job_id: None,
            invoice_id: report.invoice_id.map(InvoiceId::into_string),
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
            .exec_without_returning(&**work)
            .await
            .map_err(db_error)?;
        if inserted == 0 {
            return Ok(None);
        }
        let row = self.enqueue_delivery(work, row).await?;
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
        work: &mut UnitOfWork,
        mut row: usage_report::Model,
    ) -> Result<usage_report::Model> {
        let job = NewJob::of(&BillingJob::DeliverReport(ReportJob::of(&row.report()?)))?;
        let job_id = work.enqueue(job).await?;
        row.job_id = job_id.map(String::from);
        row.updated_at = self.now();
        usage_report::ActiveModel {
            id: Set(row.id.clone()),
            job_id: Set(row.job_id.clone()),
            updated_at: Set(row.updated_at),
            ..Default::default()
        }
        .update(&**work)
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
                .and_then(status_from_proto)
                .ok_or_else(|| Error::invalid_field("status", "is not a known report status"))?;
            query = query.filter(usage_report::Column::Status.eq(status));
        }
        if let Some(after) = &page.after {
            query = query.filter(usage_report::Column::Id.lt(after.clone()));
        }
        let rows = query.all(&self.db).await.map_err(db_error)?;
        let (rows, next) = page.finish(rows, |row| row.id.clone());
        Ok(pb::ListUsageReportsResponse {
            reports: rows.iter().map(report_to_proto).collect::<Result<_>>()?,
            page: Some(next),
        })
    }

    /// One ledger row.
    pub(crate) async fn report(&self, report_id: &ReportId) -> Result<Option<usage_report::Model>> {
        usage_report::Entity::find_by_id(report_id.as_str())
            .one(&self.db)
            .await
            .map_err(db_error)
    }

    /// Whom a submission is delivered for: the account's marketplace id and,
    /// when it holds one, its marketplace credential.
    pub(crate) async fn delivery_account(&self, account_id: &AccountId) -> Result<DeliveryAccount> {
        let account_id = account_id.as_str();
        let accounts = &self.peers.accounts;
        let account = accounts
            .get_account(GetAccountRequest {
                account: Some(AccountSelector::by_id(account_id)),
            })
            .await?;
        let external_id = ExternalAccountId::new(
            account
                .marketplace_ref
                .map(|reference| reference.external_id)
                .unwrap_or_default(),
        );
        let credential = if account.has_credential {
            // The request may carry more than the account (what the call is
            // for); their defaults are what billing means.
            #[allow(clippy::needless_update)]
            let credential = accounts
                .get_marketplace_credential(GetMarketplaceCredentialRequest {
                    account: Some(AccountSelector::by_id(account_id)),
                    ..Default::default()
                })
                .await?;
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
    pub(crate) async fn deliver_report(&self, report_id: &ReportId) -> Result<(), JobError> {
        let Some(row) = self.report(report_id).await? else {
            return Ok(());
        };
        if row.status.is_settled() {
            return Ok(self.after_settled(&row).await?);
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
            .filter(|_| row.kind == SubmissionKind::Usage);
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
        let account = self.delivery_account(&row.account()?).await?;
        let outcome = reporter
            .deliver(&account, row.kind, &row.request_json)
            .await;
        if let (Some(grace), Some(end)) = (grace, row.window_end)
            && row.status == ReportStatus::Pending
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
        let (event, answer, accepted_invoice) = match &outcome {
            Ok(Delivery::Accepted {
                answer,
                marketplace_invoice_id,
            }) => {
                tracing::info!(report.id = %row.id, kind = %row.kind, marketplace = %row.marketplace, "submission accepted");
                (
                    ReportEvent::Accepted,
                    answer.clone(),
                    marketplace_invoice_id
                        .clone()
                        .map(MarketplaceInvoiceId::new),
                )
            }
            Ok(Delivery::Suspended { answer }) => {
                tracing::warn!(report.id = %row.id, subscription.id = %row.subscription_id, answer = %answer, "the marketplace cannot bill this customer now; reporting is suspended");
                (ReportEvent::Suspended, answer.clone(), None)
            }
            Ok(Delivery::Refused { answer }) => {
                tracing::error!(report.id = %row.id, kind = %row.kind, answer = %answer, "the marketplace refused a submission");
                (ReportEvent::Refused, answer.clone(), None)
            }
            Err(error) if is_transient(error) => {
                tracing::warn!(report.id = %row.id, kind = %row.kind, error = %error, "submission failed, will retry");
                (
                    ReportEvent::Failed { transient: true },
                    error.to_string(),
                    None,
                )
            }
            Err(error) => {
                tracing::error!(report.id = %row.id, kind = %row.kind, error = %error, "submission refused");
                (
                    ReportEvent::Failed { transient: false },
                    error.to_string(),
                    None,
                )
            }
        };
        let step = match report_transition(row.status, event) {
            Ok(step) => step,
            Err(ReportRefusal::Settled(_)) => return Ok(self.after_settled(&row).await?),
        };
        self.apply_report_step(
            &row,
            step,
            ReportAnswer {
                answer,
                marketplace: Some(marketplace),
                marketplace_invoice_id: accepted_invoice,
                in_order: grace.is_some(),
            },
        )
        .await
    }

    /// Applies a step of a submission's lifecycle: the row (status, answer,
    /// attempt) and the invoice it carries in one unit of work, then what
    /// follows once it is committed (a retry, the next window, the
    /// account's closing). The one place report effects are carried out.
    async fn apply_report_step(
        &self,
        row: &usage_report::Model,
        (status, effects): (ReportStatus, Vec<ReportEffect>),
        answer: ReportAnswer,
    ) -> Result<(), JobError> {
        let now = self.now();
        let mut update = usage_report::ActiveModel {
            id: Set(row.id.clone()),
            attempts: Set(row.attempts + 1),
            updated_at: Set(now),
            ..Default::default()
        };
        if !effects.contains(&ReportEffect::Retry) {
            update.status = Set(status);
        }
        let invoice = row.invoice()?;
        let work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        for effect in &effects {
            match effect {
                ReportEffect::RecordAnswer => update.response = Set(shorten(&answer.answer)),
                ReportEffect::StampSent => update.sent_at = Set(Some(now)),
                ReportEffect::InvoiceSubmitted => {
                    if let (Some(invoice), Some(marketplace)) = (&invoice, answer.marketplace) {
                        self.invoice_submitted(
                            &work,
                            marketplace,
                            invoice,
                            answer.marketplace_invoice_id.as_ref(),
                        )
                        .await?;
                    }
                }
                ReportEffect::InvoiceNotSubmitted => {
                    if let Some(invoice) = &invoice {
                        tracing::error!(invoice.id = %invoice, "an invoice could not be submitted");
                    }
                }
                ReportEffect::NextWindow
                | ReportEffect::AfterSettled
                | ReportEffect::Retry
                | ReportEffect::EnqueueDelivery => {}
            }
        }
        let updated = update.update(&*work).await.map_err(db_error)?;
        work.commit().await?;
        if effects.contains(&ReportEffect::Retry) {
            return Err(JobError::Retry(answer.answer));
        }
        Ok(self.after_report_step(&updated, &effects, &answer).await?)
    }

    /// What follows a committed step: the next window, the account's
    /// closing.
    async fn after_report_step(
        &self,
        row: &usage_report::Model,
        effects: &[ReportEffect],
        answer: &ReportAnswer,
    ) -> Result<()> {
        if effects.contains(&ReportEffect::NextWindow)
            && answer.in_order
            && let Some(subscription) = row.subscription()?
        {
            self.requeue_next_window(&subscription).await?;
        }
        if effects.contains(&ReportEffect::AfterSettled) {
            self.after_settled(row).await?;
        }
        Ok(())
    }

    /// Follow-ups of a settled submission; safe to run more than once.
    async fn after_settled(&self, row: &usage_report::Model) -> Result<()> {
        let account = row.account()?;
        if row.kind == SubmissionKind::Finalize && row.status == ReportStatus::Sent {
            self.finalization_delivered(&account).await?;
        } else {
            self.advance_closure(&account).await?;
        }
        Ok(())
    }

    /// Stores the marketplace's id of a submitted invoice. A webhook about it
    /// may have arrived first and created a row of its own: that row's state
    /// is carried over and the row removed.
    async fn invoice_submitted(
        &self,
        work: &UnitOfWork,
        marketplace: Marketplace,
        invoice_id: &InvoiceId,
        marketplace_invoice_id: Option<&MarketplaceInvoiceId>,
    ) -> Result<()> {
        let conn = &**work;
        let Some(mut row) = invoice::Entity::find_by_id(invoice_id.as_str())
            .one(conn)
            .await
            .map_err(db_error)?
        else {
            return Ok(());
        };
        if let Ok((state, _)) = invoice_transition(Some(row.state), InvoiceEvent::Submitted)
            && state != row.state
        {
            row.state = state;
            row.state_at = self.now();
        }
        if let Some(marketplace_invoice_id) = marketplace_invoice_id {
            let earlier = invoice::Entity::find()
                .filter(invoice::Column::Marketplace.eq(marketplace.as_str()))
                .filter(invoice::Column::MarketplaceInvoiceId.eq(marketplace_invoice_id.as_str()))
                .filter(invoice::Column::Id.ne(invoice_id.as_str()))
                .one(conn)
                .await
                .map_err(db_error)?;
            if let Some(earlier) = earlier {
                if earlier.state_at >= row.state_at
                    && let Ok((state, _)) =
                        invoice_transition(Some(row.state), InvoiceEvent::Merged(earlier.state))
                {
                    row.state = state;
                    row.state_at = earlier.state_at;
                    row.paid_at = row.paid_at.or(earlier.paid_at);
                }
                invoice::Entity::delete_by_id(earlier.id)
                    .exec(conn)
                    .await
                    .map_err(db_error)?;
            }
            row.marketplace_invoice_id = Some(marketplace_invoice_id.as_str().to_owned());
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
        let waiting: Vec<(String, String, SubmissionKind, String)> = usage_report::Entity::find()
            .select_only()
            .column(usage_report::Column::Id)
            .column(usage_report::Column::Marketplace)
            .column(usage_report::Column::Kind)
            .column(usage_report::Column::SubscriptionId)
            .filter(usage_report::Column::Status.is_in(ReportStatus::OPEN))
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
            let in_order = kind == SubmissionKind::Usage
                && Marketplace::parse("marketplace", &marketplace)
                    .ok()
                    .and_then(|m| self.marketplaces.reporter(m))
                    .is_some_and(|reporter| reporter.usage_grace().is_some());
            if in_order && !heads.insert(subscription_id) {
                continue;
            }
            let report = crate::entity::report_id(&report_id)?;
            requeued += usize::from(self.requeue_report(&report).await?);
        }
        Ok(requeued)
    }

    /// Queues a waiting submission again unless a job of it is still due or
    /// running. The row is re-read and locked inside the write transaction
    /// that enqueues its new job, and the job's dedupe key names the job it
    /// replaces, so two replicas (or a paused former leader) requeue it once.
    async fn requeue_report(&self, report_id: &ReportId) -> Result<bool> {
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let Some(row) = usage_report::Entity::find_by_id(report_id.as_str())
            .lock_exclusive()
            .one(&*work)
            .await
            .map_err(db_error)?
        else {
            return Ok(false);
        };
        let Ok((_, effects)) = report_transition(row.status, ReportEvent::Requeued) else {
            return Ok(false);
        };
        let job = match &row.job_id {
            Some(job_id) => outbox_entity::Entity::find_by_id(job_id.clone())
                .one(&*work)
                .await
                .map_err(db_error)?,
            None => None,
        };
        let job_finished = job
            .as_ref()
            .is_none_or(|job| job.status == job_status::DEAD || job.status == job_status::DONE);
        if !job_finished || !effects.contains(&ReportEffect::EnqueueDelivery) {
            return Ok(false);
        }
        // A suspended submission keeps its status (and holds the
        // subscription's later windows back) until an attempt passes.
        let replaces = row.job_id.clone().unwrap_or_else(|| "none".into());
        let job = NewJob::of(&BillingJob::DeliverReport(ReportJob::of(report_id)))?
            .dedupe_key(format!("report:{}:after:{replaces}", row.id));
        let Some(job_id) = work.enqueue(job).await? else {
            // Another replica requeued it already.
            return Ok(false);
        };
        usage_report::ActiveModel {
            id: Set(row.id.clone()),
            job_id: Set(Some(job_id.to_string())),
            updated_at: Set(self.now()),
            ..Default::default()
        }
        .update(&*work)
        .await
        .map_err(db_error)?;
        work.commit().await?;
        tracing::info!(report.id = %row.id, status = %row.status, "submission queued again");
        Ok(true)
    }

    /// The oldest open usage window of a subscription (pending or
    /// suspended), by window start.
    async fn oldest_open_window(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<Option<usage_report::Model>> {
        usage_report::Entity::find()
            .filter(usage_report::Column::SubscriptionId.eq(subscription_id.as_str()))
            .filter(usage_report::Column::Kind.eq(SubmissionKind::Usage))
            .filter(usage_report::Column::Status.is_in(ReportStatus::OPEN))
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
            .filter(usage_report::Column::Kind.eq(SubmissionKind::Usage))
            .filter(usage_report::Column::Status.is_in(ReportStatus::OPEN))
            .filter(usage_report::Column::WindowStart.lt(start))
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(earlier.is_some())
    }

    /// Queues the next open usage window of a subscription once the one
    /// before it settled, so a backlog drains in order without waiting for
    /// the scheduler.
    pub(crate) async fn requeue_next_window(&self, subscription_id: &SubscriptionId) -> Result<()> {
        if let Some(next) = self.oldest_open_window(subscription_id).await? {
            // The unit of work wakes the worker when it queued the window.
            self.requeue_report(&next.report()?).await?;
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
        let Ok((status, effects)) = report_transition(row.status, ReportEvent::Expired) else {
            return Ok(false);
        };
        let period = if grace.num_hours() >= 48 {
            format!("{} days", grace.num_days())
        } else {
            format!("{} hours", grace.num_hours())
        };
        let answer = format!(
            "not accepted within the grace period of {period} after the window ended; given up; last answer: {}",
            row.response
        );
        let mut update = usage_report::Entity::update_many()
            .col_expr(usage_report::Column::Status, Expr::value(status))
            .col_expr(usage_report::Column::UpdatedAt, Expr::value(self.now()));
        if effects.contains(&ReportEffect::RecordAnswer) {
            update = update.col_expr(
                usage_report::Column::Response,
                Expr::value(shorten(&answer)),
            );
        }
        let write = marketbridge_storage::write_once(&self.db).await?;
        let updated = update
            .filter(usage_report::Column::Id.eq(row.id.clone()))
            .filter(usage_report::Column::Status.is_in(ReportStatus::OPEN))
            .exec(&write)
            .await
            .map_err(db_error)?;
        write.commit().await?;
        if updated.rows_affected == 0 {
            return Ok(false);
        }
        let marketplace = marketbridge_core::Marketplace::parse("marketplace", &row.marketplace)
            .map(marketbridge_core::Marketplace::as_str)
            .unwrap_or("unknown");
        marketbridge_telemetry::metrics().record_usage_expired(marketplace, 1);
        tracing::error!(
            report.id = %row.id,
            subscription.id = %row.subscription_id,
            marketplace = %row.marketplace,
            window.start = %row.window_start.map(to_rfc3339).unwrap_or_default(),
            window.end = %row.window_end.map(to_rfc3339).unwrap_or_default(),
            attempts = row.attempts,
            "a usage window passed its grace period and is given up: it will not be billed"
        );
        let answer = ReportAnswer {
            answer,
            marketplace: None,
            marketplace_invoice_id: None,
            in_order: true,
        };
        self.after_report_step(row, &effects, &answer).await?;
        Ok(true)
    }

    /// True when every submission of the account is settled.
    pub(crate) async fn reports_settled(&self, account_id: &AccountId) -> Result<bool> {
        let open = usage_report::Entity::find()
            .filter(usage_report::Column::AccountId.eq(account_id.as_str()))
            .filter(usage_report::Column::Status.is_in(ReportStatus::OPEN))
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(open.is_none())
    }

    /// Whether a submission with this key exists.
    pub(crate) async fn report_exists(
        &self,
        marketplace: Marketplace,
        kind: SubmissionKind,
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

/// What a marketplace answered, for [`BillingDomain::apply_report_step`].
struct ReportAnswer {
    /// The answer (or the error), as received.
    answer: String,
    /// The marketplace of the submission.
    marketplace: Option<Marketplace>,
    /// The marketplace's id of an accepted invoice.
    marketplace_invoice_id: Option<MarketplaceInvoiceId>,
    /// The marketplace takes usage windows in order.
    in_order: bool,
}

/// How long after a window ends its usage is considered complete.
pub(crate) fn settle_delay(seconds: u64) -> ChronoDuration {
    ChronoDuration::seconds(seconds.min(86_400) as i64)
}
