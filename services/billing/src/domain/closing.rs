//! Closing an uninstalled account's billing. `CloseAccountBilling` answers
//! at once whether billing is already final (nothing was ever billable and
//! nothing is waiting to be sent); otherwise it records the closing, and the
//! scheduler takes it from there: final invoices once the usage up to the
//! uninstall has settled, the marketplace's finalization once every
//! submission of the account is settled, and finally
//! `AccountService.FinalizeAccount`.

use super::BillingDomain;
use super::reports::{NewReport, report_status, settle_delay};
use crate::entity::{account_closure, billing_subscription, usage_report};
use crate::submission::{Submission, kind as submission_kind};
use chrono::{DateTime, Utc};
use marketbridge_core::ids::AccountId;
use marketbridge_core::{Error, ErrorCode, Marketplace, Result};
use marketbridge_proto::account::v1::FinalizeAccountRequest;
use marketbridge_proto::billing::v1 as pb;
use marketbridge_proto::common::v1::PageRequest;
use marketbridge_proto::common::v1::{AccountSelector, RequestContext};
use marketbridge_proto::provisioning::v1::ListSubscriptionsRequest;
use marketbridge_storage::db_error;
use marketbridge_storage::idempotent_txn;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder,
};

/// How far an account's closing got, as stored.
pub mod closure_status {
    /// Waiting for the usage up to the uninstall to settle.
    pub const CLOSING: &str = "closing";
    /// Final invoices recorded; waiting for every submission to settle.
    pub const INVOICED: &str = "invoiced";
    /// The marketplace's finalization is on its way.
    pub const FINALIZING: &str = "finalizing";
    /// Done: nothing more will be billed.
    pub const FINALIZED: &str = "finalized";
}

impl BillingDomain {
    /// Starts closing an account's billing; `finalized` is true only when
    /// nothing is left to bill or send.
    pub async fn close_account_billing(
        &self,
        request: pb::CloseAccountBillingRequest,
    ) -> Result<pb::CloseAccountBillingResponse> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let existing = account_closure::Entity::find_by_id(account_id.as_str().to_owned())
            .one(&self.db)
            .await
            .map_err(db_error)?;
        if let Some(closure) = existing {
            return Ok(pb::CloseAccountBillingResponse {
                finalized: closure.status == closure_status::FINALIZED,
            });
        }
        let subscriptions = billing_subscription::Entity::find()
            .filter(billing_subscription::Column::AccountId.eq(account_id.as_str()))
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let mut nothing_billable = self.reports_settled(account_id.as_str()).await?;
        for subscription in &subscriptions {
            let product = self.catalog.product(&subscription.product_id);
            for period in self.plan_periods(&subscription.subscription_id).await? {
                nothing_billable &= product
                    .and_then(|p| p.plan(&period.plan_id))
                    .is_some_and(|plan| plan.is_free());
            }
        }
        if nothing_billable {
            nothing_billable = self
                .provisioning_agrees(account_id.as_str(), &subscriptions)
                .await?;
        }
        let marketplace = match subscriptions.first() {
            Some(subscription) => {
                Marketplace::parse("accountMarketplace", &subscription.account_marketplace)?
            }
            None => self.account_identity(account_id.as_str()).await?.0,
        };
        let key = request
            .context
            .as_ref()
            .map(|c| c.idempotency_key.clone())
            .unwrap_or_default();
        let txn = idempotent_txn!(
            &self.db,
            "billing.CloseAccountBilling",
            &key,
            &request,
            self.now()
        );
        let now = self.now();
        let closure = account_closure::Model {
            account_id: account_id.as_str().to_owned(),
            marketplace: marketplace.as_str().to_owned(),
            status: if nothing_billable {
                closure_status::FINALIZED
            } else {
                closure_status::CLOSING
            }
            .to_owned(),
            requested_at: now,
            invoiced_at: nothing_billable.then_some(now),
            finalized_at: nothing_billable.then_some(now),
            updated_at: now,
        };
        account_closure::Entity::insert(closure.into_active_model())
            .exec_without_returning(&*txn)
            .await
            .map_err(|error| {
                if marketbridge_storage::is_unique_violation(&error) {
                    Error::conflict("the account's billing is already being closed")
                } else {
                    db_error(error)
                }
            })?;
        tracing::info!(account.id = %account_id, finalized = nothing_billable, "account billing closing");
        txn.finish(pb::CloseAccountBillingResponse {
            finalized: nothing_billable,
        })
        .await
    }

    /// Moves every open closing forward as far as it can go now. Returns how
    /// many changed.
    pub(crate) async fn progress_closures(&self, now: DateTime<Utc>) -> Result<usize> {
        let closures = account_closure::Entity::find()
            .filter(account_closure::Column::Status.is_in([
                closure_status::CLOSING,
                closure_status::INVOICED,
                closure_status::FINALIZING,
            ]))
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
        match closure.status.as_str() {
            closure_status::CLOSING => self.invoice_closure(closure, now).await?,
            closure_status::INVOICED => self.advance_closure(&closure.account_id).await?,
            closure_status::FINALIZING if self.finalization_sent(&closure.account_id).await? => {
                self.finalization_delivered(&closure.account_id).await?
            }
            _ => {}
        }
        let after = self.closure(&closure.account_id).await?.map(|c| c.status);
        Ok(after.as_deref() != Some(closure.status.as_str()))
    }

    async fn closure(&self, account_id: &str) -> Result<Option<account_closure::Model>> {
        account_closure::Entity::find_by_id(account_id.to_owned())
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

    async fn invoice_closure(
        &self,
        closure: &account_closure::Model,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let final_end = self.final_end(closure);
        if now < final_end + settle_delay(self.options.usage_settle_seconds) {
            return Ok(());
        }
        let marketplace = Marketplace::parse("marketplace", &closure.marketplace)?;
        let reporter = self
            .marketplaces
            .reporter(marketplace)
            .filter(|reporter| reporter.plan().invoices)
            .cloned();
        if let Some(reporter) = reporter {
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
                    &subscription.subscription_id,
                    final_end,
                )
                .await?;
            }
        }
        let now = self.now();
        account_closure::ActiveModel {
            account_id: Set(closure.account_id.clone()),
            status: Set(closure_status::INVOICED.to_owned()),
            invoiced_at: Set(Some(now)),
            updated_at: Set(now),
            ..Default::default()
        }
        .update(&self.db)
        .await
        .map_err(db_error)?;
        self.outbox.wake();
        tracing::info!(account.id = %closure.account_id, "final invoices recorded");
        self.advance_closure(&closure.account_id).await
    }

    /// Once every submission of an invoiced closing is settled, asks the
    /// marketplace to finalize (or finalizes at once where the marketplace
    /// has no such call).
    pub(crate) async fn advance_closure(&self, account_id: &str) -> Result<()> {
        let Some(closure) = self.closure(account_id).await? else {
            return Ok(());
        };
        if closure.status != closure_status::INVOICED || !self.reports_settled(account_id).await? {
            return Ok(());
        }
        let marketplace = Marketplace::parse("marketplace", &closure.marketplace)?;
        let reporter = self
            .marketplaces
            .reporter(marketplace)
            .filter(|reporter| reporter.plan().finalization)
            .cloned();
        let Some(reporter) = reporter else {
            return self.finalization_delivered(account_id).await;
        };
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        self.record_report(
            &txn,
            &reporter,
            NewReport {
                account_id: account_id.to_owned(),
                subscription_id: String::new(),
                marketplace,
                submission: Submission::Finalize,
                window: None,
                idempotency_key: account_id.to_owned(),
                invoice_id: None,
            },
        )
        .await?;
        let now = self.now();
        account_closure::ActiveModel {
            account_id: Set(account_id.to_owned()),
            status: Set(closure_status::FINALIZING.to_owned()),
            updated_at: Set(now),
            ..Default::default()
        }
        .update(&txn)
        .await
        .map_err(db_error)?;
        txn.commit().await.map_err(db_error)?;
        self.outbox.wake();
        Ok(())
    }

    async fn finalization_sent(&self, account_id: &str) -> Result<bool> {
        let sent = usage_report::Entity::find()
            .filter(usage_report::Column::AccountId.eq(account_id))
            .filter(usage_report::Column::Kind.eq(submission_kind::FINALIZE))
            .filter(usage_report::Column::Status.eq(report_status::SENT))
            .one(&self.db)
            .await
            .map_err(db_error)?;
        Ok(sent.is_some())
    }

    /// The marketplace finalized the account's billing: marks the account
    /// finalized and the closing done. Safe to call again.
    pub(crate) async fn finalization_delivered(&self, account_id: &str) -> Result<()> {
        let Some(closure) = self.closure(account_id).await? else {
            return Ok(());
        };
        if closure.status == closure_status::FINALIZED {
            return Ok(());
        }
        let mut accounts = self.peers.accounts.clone();
        accounts
            .finalize_account(FinalizeAccountRequest {
                context: Some(RequestContext {
                    idempotency_key: format!("billing.finalize:{account_id}"),
                    actor: None,
                }),
                account: Some(AccountSelector::by_id(account_id)),
            })
            .await
            .map_err(|status| {
                let error = Error::from(status);
                if error.code() == ErrorCode::Conflict {
                    Error::unavailable(format!(
                        "the account is not deleted yet, finalization waits: {}",
                        error.message()
                    ))
                } else {
                    error
                }
            })?;
        let now = self.now();
        account_closure::ActiveModel {
            account_id: Set(account_id.to_owned()),
            status: Set(closure_status::FINALIZED.to_owned()),
            finalized_at: Set(Some(now)),
            updated_at: Set(now),
            ..Default::default()
        }
        .update(&self.db)
        .await
        .map_err(db_error)?;
        tracing::info!(account.id = %account_id, "account billing finalized");
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
        account_id: &str,
        recorded: &[billing_subscription::Model],
    ) -> Result<bool> {
        let mut provisioning = self.peers.provisioning.clone();
        let mut page_token = String::new();
        loop {
            let page = provisioning
                .list_subscriptions(ListSubscriptionsRequest {
                    account_id: account_id.to_owned(),
                    page: Some(PageRequest {
                        page_size: 500,
                        page_token,
                    }),
                    ..Default::default()
                })
                .await
                .map_err(marketbridge_core::Error::from)?
                .into_inner();
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
