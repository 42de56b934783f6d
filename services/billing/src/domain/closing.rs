//! Closing an uninstalled account's billing. `CloseAccountBilling` answers
//! at once whether billing is already final (nothing was ever billable and
//! nothing is waiting to be sent); otherwise it records the closing, and the
//! scheduler takes it from there: final invoices once the usage up to the
//! uninstall has settled, the marketplace's finalization once every
//! submission of the account is settled, and finally
//! `AccountService.FinalizeAccount`.

use super::BillingDomain;
use super::reports::{NewReport, settle_delay};
use crate::entity::{account_closure, billing_subscription, usage_report};
use crate::lifecycle::closing::{ClosureEffect, ClosureEvent, ClosureStatus, closure_transition};
use crate::lifecycle::report::ReportStatus;
use crate::submission::{Submission, SubmissionKind};
use chrono::{DateTime, Utc};
use marketbridge_core::ids::AccountId;
use marketbridge_core::{Error, ErrorCode, Marketplace, Result};
use marketbridge_proto::account::v1::FinalizeAccountRequest;
use marketbridge_proto::billing::v1 as pb;
use marketbridge_proto::common::v1::PageRequest;
use marketbridge_proto::common::v1::{AccountSelector, RequestContext};
use marketbridge_proto::provisioning::v1::ListSubscriptionsRequest;
use marketbridge_storage::db_error;
use marketbridge_storage::{Call, UnitOfWork, unit_of_work};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder,
};

impl BillingDomain {
    /// Starts closing an account's billing; `finalized` is true only when
    /// nothing is left to bill or send.
    pub async fn close_account_billing(
        &self,
        request: pb::CloseAccountBillingRequest,
    ) -> Result<pb::CloseAccountBillingResponse> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        if let Some(closure) = self.closure(&account_id).await? {
            return Ok(pb::CloseAccountBillingResponse {
                finalized: closure.status == ClosureStatus::Finalized,
            });
        }
        let subscriptions = billing_subscription::Entity::find()
            .filter(billing_subscription::Column::AccountId.eq(account_id.as_str()))
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let mut nothing_billable = self.reports_settled(&account_id).await?;
        for subscription in &subscriptions {
            let product = self.catalog.product(&subscription.product_id);
            for period in self.plan_periods(&subscription.subscription()?).await? {
                nothing_billable &= product
                    .and_then(|p| p.plan(&period.plan_id))
                    .is_some_and(|plan| plan.is_free());
            }
        }
        if nothing_billable {
            nothing_billable = self
                .provisioning_agrees(&account_id, &subscriptions)
                .await?;
        }
        let marketplace = match subscriptions.first() {
            Some(subscription) => {
                Marketplace::parse("accountMarketplace", &subscription.account_marketplace)?
            }
            None => self.account_identity(&account_id).await?.0,
        };
        let (status, effects) =
            closure_transition(None, ClosureEvent::Requested { nothing_billable })
                .map_err(|refusal| Error::internal(format!("closing refused: {refusal:?}")))?;
        let key = request
            .context
            .as_ref()
            .map(|c| c.idempotency_key.clone())
            .unwrap_or_default();
        let call = Call::new("billing.CloseAccountBilling", &key, &request, self.now());
        let work = unit_of_work!(call, &self.db, &self.outbox);
        let now = self.now();
        let stamped = |effect| effects.contains(&effect).then_some(now);
        let closure = account_closure::Model {
            account_id: account_id.as_str().to_owned(),
            marketplace: marketplace.as_str().to_owned(),
            status,
            requested_at: now,
            invoiced_at: stamped(ClosureEffect::StampInvoiced),
            finalized_at: stamped(ClosureEffect::StampFinalized),
            updated_at: now,
        };
        account_closure::Entity::insert(closure.into_active_model())
            .exec_without_returning(&*work)
            .await
            .map_err(|error| {
                if marketbridge_storage::is_unique_violation(&error) {
                    Error::conflict("the account's billing is already being closed")
                } else {
                    db_error(error)
                }
            })?;
        tracing::info!(account.id = %account_id, finalized = nothing_billable, "account billing closing");
        work.finish(pb::CloseAccountBillingResponse {
            finalized: status == ClosureStatus::Finalized,
        })
        .await
    }

    /// Moves every open closing forward as far as it can go now. Returns how
    /// many changed.
    pub(crate) async fn progress_closures(&self, now: DateTime<Utc>) -> Result<usize> {
        let closures = account_closure::Entity::find()
            .filter(account_closure::Column::Status.is_in(ClosureStatus::OPEN))
            .order_by_asc(account_closure::Column::RequestedAt)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let mut changed = 0;
        for closure in closures {
            match self.progress_closure(&closure, now).await {
                Ok(moved) => changed += usize::from(moved),
                Err(error) => {
                    tracing::warn!(account.id = %closure.account_id, status = %closure.status, error = %error, "closing could not move on; trying again next run")
                }
            }
        }
        Ok(changed)
    }

    async fn progress_closure(
        &self,
        closure: &account_closure::Model,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let account_id = closure.account()?;
        match closure.status {
            ClosureStatus::Closing => {
                let final_end = self.final_end(closure);
                if now >= final_end + settle_delay(self.options.usage_settle_seconds) {
                    self.step_closure(closure, ClosureEvent::UsageSettled)
                        .await?;
                }
            }
            ClosureStatus::Invoiced => self.advance_closure(&account_id).await?,
            ClosureStatus::Finalizing if self.finalization_sent(&account_id).await? => {
                self.finalization_delivered(&account_id).await?
            }
            ClosureStatus::Finalizing | ClosureStatus::Finalized => {}
        }
        let after = self.closure(&account_id).await?.map(|c| c.status);
        Ok(after != Some(closure.status))
    }

    async fn closure(&self, account_id: &AccountId) -> Result<Option<account_closure::Model>> {
        account_closure::Entity::find_by_id(account_id.as_str())
            .one(&self.db)
            .await
            .map_err(db_error)
    }

    /// The end of the last billed stretch: the uninstall, plus the clock skew
    /// usage may carry, so usage accepted just before the uninstall is still
    /// billed.
    fn final_end(&self, closure: &account_closure::Model) -> DateTime<Utc> {
        closure.requested_at + self.future_skew()
    }

    /// Once every submission of an invoiced closing is settled, asks the
    /// marketplace to finalize (or finalizes at once where the marketplace
    /// has no such call).
    pub(crate) async fn advance_closure(&self, account_id: &AccountId) -> Result<()> {
        let Some(closure) = self.closure(account_id).await? else {
            return Ok(());
        };
        if closure.status != ClosureStatus::Invoiced || !self.reports_settled(account_id).await? {
            return Ok(());
        }
        let marketplace = Marketplace::parse("marketplace", &closure.marketplace)?;
        let marketplace_finalizes = self
            .marketplaces
            .reporter(marketplace)
            .is_some_and(|reporter| reporter.plan().finalization);
        self.step_closure(
            &closure,
            ClosureEvent::ReportsSettled {
                marketplace_finalizes,
            },
        )
        .await
    }

    async fn finalization_sent(&self, account_id: &AccountId) -> Result<bool> {
        let sent = usage_report::Entity::find()
            .filter(usage_report::Column::AccountId.eq(account_id.as_str()))
            .filter(usage_report::Column::Kind.eq(SubmissionKind::Finalize))
            .filter(usage_report::Column::Status.eq(ReportStatus::Sent))
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(sent.is_some())
    }

    /// The marketplace finalized the account's billing: marks the account
    /// finalized and the closing done. Safe to call again.
    pub(crate) async fn finalization_delivered(&self, account_id: &AccountId) -> Result<()> {
        let Some(closure) = self.closure(account_id).await? else {
            return Ok(());
        };
        self.step_closure(&closure, ClosureEvent::FinalizationSent)
            .await
    }

    /// Takes one step of a closing and applies its effects: the calls and
    /// the final invoices first (each in its own unit of work), then the
    /// closing's row, with the finalization submission, in one unit of
    /// work. A refused step changes nothing. The one place closing effects
    /// are carried out.
    async fn step_closure(
        &self,
        closure: &account_closure::Model,
        event: ClosureEvent,
    ) -> Result<()> {
        let Ok((status, effects)) = closure_transition(Some(closure.status), event) else {
            return Ok(());
        };
        let account_id = closure.account()?;
        let marketplace = Marketplace::parse("marketplace", &closure.marketplace)?;
        for effect in &effects {
            match effect {
                ClosureEffect::RecordFinalInvoices => {
                    self.record_final_invoices(closure, marketplace).await?
                }
                ClosureEffect::FinalizeAccount => self.finalize_account(&account_id).await?,
                ClosureEffect::StampInvoiced
                | ClosureEffect::StampFinalized
                | ClosureEffect::RecordFinalization
                | ClosureEffect::Advance => {}
            }
        }
        let now = self.now();
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        if effects.contains(&ClosureEffect::RecordFinalization) {
            let reporter = self
                .marketplaces
                .reporter(marketplace)
                .cloned()
                .ok_or_else(|| {
                    Error::internal(format!("no reporter is registered for {marketplace}"))
                })?;
            self.record_report(
                &mut work,
                &reporter,
                NewReport {
                    account_id: account_id.clone(),
                    subscription_id: None,
                    marketplace,
                    submission: Submission::Finalize,
                    window: None,
                    idempotency_key: account_id.as_str().to_owned(),
                    invoice_id: None,
                },
            )
            .await?;
        }
        let mut update = account_closure::ActiveModel {
            account_id: Set(closure.account_id.clone()),
            status: Set(status),
            updated_at: Set(now),
            ..Default::default()
        };
        if effects.contains(&ClosureEffect::StampInvoiced) {
            update.invoiced_at = Set(Some(now));
        }
        if effects.contains(&ClosureEffect::StampFinalized) {
            update.finalized_at = Set(Some(now));
        }
        update.update(&*work).await.map_err(db_error)?;
        work.commit().await?;
        match status {
            ClosureStatus::Invoiced => {
                tracing::info!(account.id = %account_id, "final invoices recorded")
            }
            ClosureStatus::Finalized => {
                tracing::info!(account.id = %account_id, "account billing finalized")
            }
            _ => {}
        }
        if effects.contains(&ClosureEffect::Advance) {
            Box::pin(self.advance_closure(&account_id)).await?;
        }
        Ok(())
    }

    /// The final invoices of every subscription of a closing account, where
    /// the marketplace takes invoices.
    async fn record_final_invoices(
        &self,
        closure: &account_closure::Model,
        marketplace: Marketplace,
    ) -> Result<()> {
        let reporter = self
            .marketplaces
            .reporter(marketplace)
            .filter(|reporter| reporter.plan().invoices)
            .cloned();
        let Some(reporter) = reporter else {
            return Ok(());
        };
        let final_end = self.final_end(closure);
        let subscriptions = billing_subscription::Entity::find()
            .filter(billing_subscription::Column::AccountId.eq(closure.account_id.clone()))
            .order_by_asc(billing_subscription::Column::SubscriptionId)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        for subscription in subscriptions {
            self.invoice_final(
                marketplace,
                &reporter,
                &subscription.subscription()?,
                final_end,
            )
            .await?;
        }
        Ok(())
    }

    /// Asks the account service to finalize the account; while the account
    /// is not deleted yet, that waits (a transient error).
    async fn finalize_account(&self, account_id: &AccountId) -> Result<()> {
        let accounts = &self.peers.accounts;
        accounts
            .finalize_account(FinalizeAccountRequest {
                context: Some(RequestContext {
                    idempotency_key: format!("billing.finalize:{account_id}"),
                    actor: None,
                }),
                account: Some(AccountSelector::by_id(account_id.as_str())),
            })
            .await
            .map_err(|error| {
                if error.code() == ErrorCode::Conflict {
                    Error::unavailable(format!(
                        "the account is not deleted yet, finalization waits: {}",
                        error.message()
                    ))
                } else {
                    error
                }
            })?;
        Ok(())
    }
}

impl BillingDomain {
    /// Billing hears of subscriptions through provisioning's outbox, so a
    /// change may still be on its way when an account is closed. Nothing is
    /// billable only if every subscription provisioning holds for the account
    /// is recorded here on its current plan, and that plan is free.
    async fn provisioning_agrees(
        &self,
        account_id: &AccountId,
        recorded: &[billing_subscription::Model],
    ) -> Result<bool> {
        let provisioning = &self.peers.provisioning;
        let mut page_token = String::new();
        loop {
            let page = provisioning
                .list_subscriptions(ListSubscriptionsRequest {
                    account_id: account_id.as_str().to_owned(),
                    page: Some(PageRequest {
                        page_size: 500,
                        page_token,
                    }),
                    ..Default::default()
                })
                .await?;
            for subscription in &page.subscriptions {
                let caught_up = recorded.iter().any(|known| {
                    known.subscription_id == subscription.id
                        && known.plan_id == subscription.plan_id
                });
                let free = self
                    .catalog
                    .product(&subscription.product_id)
                    .and_then(|product| product.plan(&subscription.plan_id))
                    .is_some_and(|plan| plan.is_free());
                if !caught_up || !free {
                    return Ok(false);
                }
            }
            page_token = page.page.map(|p| p.next_page_token).unwrap_or_default();
            if page_token.is_empty() {
                return Ok(true);
            }
        }
    }
}
