//! Invoices as the marketplaces report them, refunds, and prepaid balances
//! credited from paid purchase invoices.

use super::BillingDomain;
use crate::entity::{balance, invoice, prepayment};
use crate::lifecycle::invoice::{
    InvoiceEffect, InvoiceEvent, InvoiceRefusal, InvoiceState, invoice_transition,
};
use crate::model::ids::{ExternalAccountId, MarketplaceInvoiceId};
use crate::model::job::{BillingJob, InvoiceJob, RefundJob};
use chrono::{DateTime, Utc};
use marketbridge_core::ids::{AccountId, InvoiceId, ResourceId};
use marketbridge_core::money::Money;
use marketbridge_core::time::{from_optional_timestamp, to_timestamp};
use marketbridge_core::{Error, Marketplace, Result, Validator};
use marketbridge_proto::account::v1::GetAccountRequest;
use marketbridge_proto::billing::v1 as pb;
use marketbridge_proto::common::v1::AccountSelector;
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::{NewJob, truncate_micros};
use marketbridge_storage::paging::Page;
use marketbridge_storage::{Call, UnitOfWork, unit_of_work};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};

/// An invoice line, as stored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredItem {
    pub plan_id: String,
    #[serde(default)]
    pub resource_id: String,
    pub name: String,
    #[serde(default)]
    pub details: String,
    pub unit_price_micros: i64,
    pub quantity: i64,
    #[serde(default)]
    pub units: String,
    pub total_minor: i64,
    #[serde(default)]
    pub start: Option<DateTime<Utc>>,
    #[serde(default)]
    pub end: Option<DateTime<Utc>>,
}

/// An invoice state as received.
pub fn state_from_proto(state: pb::InvoiceState) -> Option<InvoiceState> {
    Some(match state {
        pb::InvoiceState::Draft => InvoiceState::Draft,
        pb::InvoiceState::Pending => InvoiceState::Pending,
        pb::InvoiceState::Scheduled => InvoiceState::Scheduled,
        pb::InvoiceState::Invoiced => InvoiceState::Invoiced,
        pb::InvoiceState::Paid => InvoiceState::Paid,
        pb::InvoiceState::Notpaid => InvoiceState::Notpaid,
        pb::InvoiceState::Overdue => InvoiceState::Overdue,
        pb::InvoiceState::RefundRequested => InvoiceState::RefundRequested,
        pb::InvoiceState::Refunded => InvoiceState::Refunded,
        pb::InvoiceState::Unspecified => return None,
    })
}

fn state_to_proto(state: InvoiceState) -> pb::InvoiceState {
    match state {
        InvoiceState::Draft => pb::InvoiceState::Draft,
        InvoiceState::Pending => pb::InvoiceState::Pending,
        InvoiceState::Scheduled => pb::InvoiceState::Scheduled,
        InvoiceState::Invoiced => pb::InvoiceState::Invoiced,
        InvoiceState::Paid => pb::InvoiceState::Paid,
        InvoiceState::Notpaid => pb::InvoiceState::Notpaid,
        InvoiceState::Overdue => pb::InvoiceState::Overdue,
        InvoiceState::RefundRequested => pb::InvoiceState::RefundRequested,
        InvoiceState::Refunded => pb::InvoiceState::Refunded,
    }
}

/// An invoice's stored lines, read back; unreadable lines are an error.
pub fn stored_items(row: &invoice::Model) -> Result<Vec<StoredItem>> {
    serde_json::from_str(&row.items).map_err(|e| {
        Error::internal(format!(
            "the stored lines of invoice {} are unreadable: {e}",
            row.id
        ))
    })
}

/// An invoice row as the protobuf message.
pub fn invoice_to_proto(row: &invoice::Model) -> Result<pb::Invoice> {
    let items = stored_items(row)?;
    let money = |minor: i64| Some(Money::new(minor, row.currency.clone()).to_proto());
    Ok(pb::Invoice {
        id: row.id.clone(),
        account_id: row.account_id.clone(),
        marketplace_invoice_id: row.marketplace_invoice_id.clone().unwrap_or_default(),
        external_id: row.external_id.clone().unwrap_or_default(),
        state: state_to_proto(row.state) as i32,
        period_start: row.period_start.map(to_timestamp),
        period_end: row.period_end.map(to_timestamp),
        invoice_date: row.invoice_date.map(to_timestamp),
        items: items
            .into_iter()
            .map(|item| pb::InvoiceItem {
                plan_id: item.plan_id,
                resource_id: item.resource_id,
                name: item.name,
                details: item.details,
                unit_price_micros: item.unit_price_micros,
                quantity: item.quantity,
                units: item.units,
                total: money(item.total_minor),
                start: item.start.map(to_timestamp),
                end: item.end.map(to_timestamp),
            })
            .collect(),
        total: money(row.total_minor),
        test: row.test,
        r#final: row.is_final,
        refund_total: money(row.refund_total_minor),
        refund_reason: row.refund_reason.clone(),
        paid_at: row.paid_at.map(to_timestamp),
        created_at: Some(to_timestamp(row.created_at)),
        updated_at: Some(to_timestamp(row.updated_at)),
        subscription_id: row.subscription_id.clone(),
    })
}

impl BillingDomain {
    /// The marketplace identity of an account, from the account service.
    pub(crate) async fn account_identity(
        &self,
        account_id: &AccountId,
    ) -> Result<(Marketplace, ExternalAccountId)> {
        let accounts = &self.peers.accounts;
        let account = accounts
            .get_account(GetAccountRequest {
                account: Some(AccountSelector::by_id(account_id.as_str())),
            })
            .await?;
        let reference = account.marketplace_ref.unwrap_or_default();
        Ok((
            Marketplace::from_proto("account.marketplace", reference.marketplace)?,
            ExternalAccountId::new(reference.external_id),
        ))
    }

    async fn find_invoice_by_marketplace_id(
        &self,
        work: &UnitOfWork,
        marketplace: Marketplace,
        marketplace_invoice_id: &MarketplaceInvoiceId,
    ) -> Result<Option<invoice::Model>> {
        invoice::Entity::find()
            .filter(invoice::Column::Marketplace.eq(marketplace.as_str()))
            .filter(invoice::Column::MarketplaceInvoiceId.eq(marketplace_invoice_id.as_str()))
            .one(&**work)
            .await
            .map_err(db_error)
    }

    /// Applies a step of an invoice's lifecycle to `row` (its state, the
    /// payment stamp) and enqueues the jobs the step calls for in `work`;
    /// the caller writes the row in the same unit of work. `paid_at` is when
    /// a payment is stamped; `refund` is the refund a refund step asks for.
    /// The one place invoice effects are carried out.
    async fn apply_invoice_step(
        &self,
        work: &mut UnitOfWork,
        row: &mut invoice::Model,
        previous: Option<InvoiceState>,
        (state, effects): (InvoiceState, Vec<InvoiceEffect>),
        paid_at: DateTime<Utc>,
        refund: Option<RefundJob>,
    ) -> Result<()> {
        row.state = state;
        let invoice = row.invoice()?;
        for effect in effects {
            let job = match effect {
                InvoiceEffect::StampPaid => {
                    row.paid_at = row.paid_at.or(Some(paid_at));
                    continue;
                }
                InvoiceEffect::RequestRefund => {
                    let refund = refund
                        .clone()
                        .ok_or_else(|| Error::internal("a refund step carries no refund"))?;
                    work.enqueue(NewJob::of(&BillingJob::Refund(refund))?)
                        .await?;
                    continue;
                }
                InvoiceEffect::SuspendResources => {
                    BillingJob::InvoiceOverdue(InvoiceJob::of(&invoice))
                }
                InvoiceEffect::ResumeResources => {
                    BillingJob::InvoiceSettled(InvoiceJob::of(&invoice))
                }
            };
            let job = NewJob::of(&job)?;
            let key = format!("{}:{}", job.kind(), invoice);
            work.enqueue(job.dedupe_key(key)).await?;
            tracing::info!(invoice.id = %invoice, from = %previous.map(InvoiceState::as_str).unwrap_or_default(), to = %state, "invoice state followed");
        }
        Ok(())
    }

    /// Records an invoice state a marketplace reported; an older report than
    /// the stored state changes nothing.
    pub async fn record_invoice_state(
        &self,
        request: pb::RecordInvoiceStateRequest,
    ) -> Result<pb::Invoice> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let mut validator = Validator::new();
        validator.require("invoiceId", &request.marketplace_invoice_id);
        validator.max_len("invoiceId", &request.marketplace_invoice_id, 255);
        validator.finish()?;
        let marketplace_invoice_id =
            MarketplaceInvoiceId::new(request.marketplace_invoice_id.clone());
        let state = pb::InvoiceState::try_from(request.state)
            .ok()
            .and_then(state_from_proto)
            .ok_or_else(|| Error::invalid_field("state", "a known invoice state is required"))?;
        let occurred_at = truncate_micros(
            from_optional_timestamp("occurredAt", request.occurred_at.as_ref())?
                .unwrap_or_else(|| self.now()),
        );
        let period_start = from_optional_timestamp("periodStart", request.period_start.as_ref())?
            .map(truncate_micros);
        let period_end =
            from_optional_timestamp("periodEnd", request.period_end.as_ref())?.map(truncate_micros);
        let key = request
            .context
            .as_ref()
            .map(|c| c.idempotency_key.clone())
            .unwrap_or_default();
        let mut call = Call::new("billing.RecordInvoiceState", &key, &request, self.now());
        if let Some(answer) = call.replayed(&self.db).await? {
            return Ok(answer);
        }
        let (marketplace, _) = self.account_identity(&account_id).await?;
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let now = self.now();
        let existing = self
            .find_invoice_by_marketplace_id(&work, marketplace, &marketplace_invoice_id)
            .await?;
        let previous = existing.as_ref().map(|row| row.state);
        let event = InvoiceEvent::Reported {
            state,
            stale: existing
                .as_ref()
                .is_some_and(|row| occurred_at < row.state_at),
        };
        let step = invoice_transition(previous, event);
        let row = match (existing, step) {
            (Some(row), Err(InvoiceRefusal::Stale)) => {
                tracing::info!(invoice.id = %row.id, "ignoring a stale invoice state");
                row
            }
            (_, Err(refusal)) => {
                return Err(Error::internal(format!(
                    "an invoice report was refused: {refusal:?}"
                )));
            }
            (Some(mut row), Ok(step)) => {
                self.apply_invoice_step(&mut work, &mut row, previous, step, occurred_at, None)
                    .await?;
                row.state_at = occurred_at;
                if let Some(total) = &request.total {
                    row.total_minor = total.amount_minor;
                }
                row.period_start = period_start.or(row.period_start);
                row.period_end = period_end.or(row.period_end);
                row.updated_at = now;
                row.clone()
                    .into_active_model()
                    .reset_all()
                    .update(&*work)
                    .await
                    .map_err(db_error)?;
                row
            }
            (None, Ok(step)) => {
                let total = request
                    .total
                    .as_ref()
                    .map(Money::from_proto)
                    .unwrap_or_else(|| Money::usd_cents(0));
                let mut row = invoice::Model {
                    id: InvoiceId::generate().into_string(),
                    account_id: account_id.as_str().to_owned(),
                    subscription_id: String::new(),
                    marketplace: marketplace.as_str().to_owned(),
                    marketplace_invoice_id: Some(marketplace_invoice_id.as_str().to_owned()),
                    external_id: None,
                    state,
                    state_at: occurred_at,
                    period_start,
                    period_end,
                    invoice_date: None,
                    items: "[]".to_owned(),
                    total_minor: total.amount_minor,
                    currency: total.currency,
                    test: false,
                    is_final: false,
                    refund_total_minor: 0,
                    refund_reason: String::new(),
                    paid_at: None,
                    created_at: now,
                    updated_at: now,
                };
                self.apply_invoice_step(&mut work, &mut row, previous, step, occurred_at, None)
                    .await?;
                invoice::Entity::insert(row.clone().into_active_model())
                    .exec_without_returning(&*work)
                    .await
                    .map_err(db_error)?;
                row
            }
        };
        tracing::info!(invoice.id = %row.id, state = %row.state, "invoice state recorded");
        work.finish(invoice_to_proto(&row)?).await
    }

    /// One invoice.
    pub async fn get_invoice(&self, request: pb::GetInvoiceRequest) -> Result<pb::Invoice> {
        let row = match request.selector {
            Some(pb::get_invoice_request::Selector::InvoiceId(id)) => {
                let id = InvoiceId::parse("invoiceId", &id)?;
                invoice::Entity::find_by_id(id.into_string())
                    .one(&self.db)
                    .await
                    .map_err(db_error)?
            }
            Some(pb::get_invoice_request::Selector::MarketplaceInvoiceId(id)) => {
                invoice::Entity::find()
                    .filter(invoice::Column::MarketplaceInvoiceId.eq(id))
                    .one(&self.db)
                    .await
                    .map_err(db_error)?
            }
            None => {
                return Err(Error::invalid_field(
                    "selector",
                    "an invoice id is required",
                ));
            }
        };
        invoice_to_proto(&row.ok_or_else(|| Error::not_found("invoice not found"))?)
    }

    /// A page of an account's invoices, newest first.
    pub async fn list_invoices(
        &self,
        request: pb::ListInvoicesRequest,
    ) -> Result<pb::ListInvoicesResponse> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let page = Page::from_request(request.page.as_ref());
        let mut query = invoice::Entity::find()
            .filter(invoice::Column::AccountId.eq(account_id.into_string()))
            .order_by_desc(invoice::Column::Id)
            .limit(page.fetch_limit());
        if let Some(after) = &page.after {
            query = query.filter(invoice::Column::Id.lt(after.clone()));
        }
        let rows = query.all(&self.db).await.map_err(db_error)?;
        let (rows, next) = page.finish(rows, |row| row.id.clone());
        Ok(pb::ListInvoicesResponse {
            invoices: rows.iter().map(invoice_to_proto).collect::<Result<_>>()?,
            page: Some(next),
        })
    }

    /// Asks the marketplace to refund (part of) an invoice.
    pub async fn refund_invoice(&self, request: pb::RefundInvoiceRequest) -> Result<pb::Invoice> {
        let invoice_id = InvoiceId::parse("invoiceId", &request.invoice_id)?;
        let mut validator = Validator::new();
        validator.require("reason", &request.reason);
        validator.max_len("reason", &request.reason, 512);
        validator.finish()?;
        let key = request
            .context
            .as_ref()
            .map(|c| c.idempotency_key.clone())
            .unwrap_or_default();
        let call = Call::new("billing.RefundInvoice", &key, &request, self.now());
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let mut row = invoice::Entity::find_by_id(invoice_id.as_str())
            .one(&*work)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::not_found("invoice not found"))?;
        let marketplace_invoice_id = row
            .marketplace_invoice_id
            .clone()
            .ok_or_else(|| Error::conflict("the marketplace has not issued this invoice yet"))?;
        let amount = request
            .amount
            .as_ref()
            .map(Money::from_proto)
            .unwrap_or_else(|| {
                Money::new(
                    row.total_minor - row.refund_total_minor,
                    row.currency.clone(),
                )
            });
        if amount.currency != row.currency {
            return Err(Error::invalid_field(
                "amount.currency",
                format!("must be {}", row.currency),
            ));
        }
        if amount.amount_minor <= 0
            || amount.amount_minor > row.total_minor - row.refund_total_minor
        {
            return Err(Error::invalid_field(
                "amount",
                "must be positive and at most what is left to refund",
            ));
        }
        let previous = row.state;
        let step =
            invoice_transition(Some(previous), InvoiceEvent::RefundAsked).map_err(|refusal| {
                match refusal {
                    InvoiceRefusal::NotRefundable(state) => {
                        Error::conflict(format!("a {state} invoice cannot be refunded"))
                    }
                    other => Error::internal(format!("a refund was refused: {other:?}")),
                }
            })?;
        let refund = RefundJob {
            invoice_id: row.id.clone(),
            marketplace_invoice_id,
            amount_minor: amount.amount_minor,
            currency: amount.currency.clone(),
            reason: request.reason.clone(),
        };
        // A refund cancels a notpaid or overdue invoice: what it suspended
        // comes back.
        let now = self.now();
        self.apply_invoice_step(&mut work, &mut row, Some(previous), step, now, Some(refund))
            .await?;
        row.refund_total_minor += amount.amount_minor;
        row.refund_reason = request.reason.clone();
        row.updated_at = now;
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&*work)
            .await
            .map_err(db_error)?;
        work.finish(invoice_to_proto(&row)?).await
    }

    /// Credits the account's prepaid balance with a paid purchase invoice,
    /// once per invoice.
    pub async fn provision_prepayment(
        &self,
        request: pb::ProvisionPrepaymentRequest,
    ) -> Result<pb::Balances> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let mut validator = Validator::new();
        validator.require("invoiceId", &request.marketplace_invoice_id);
        validator.max_len("invoiceId", &request.marketplace_invoice_id, 255);
        validator.finish()?;
        let marketplace_invoice_id =
            MarketplaceInvoiceId::new(request.marketplace_invoice_id.clone());
        let key = request
            .context
            .as_ref()
            .map(|c| c.idempotency_key.clone())
            .unwrap_or_default();
        let mut call = Call::new("billing.ProvisionPrepayment", &key, &request, self.now());
        if let Some(answer) = call.replayed(&self.db).await? {
            return Ok(answer);
        }
        let (marketplace, account_external_id) = self.account_identity(&account_id).await?;
        let already = prepayment::Entity::find_by_id((
            marketplace.as_str().to_owned(),
            request.marketplace_invoice_id.clone(),
        ))
        .one(&self.db)
        .await
        .map_err(db_error)?;
        if let Some(credit) = &already
            && credit.account_id != account_id.as_str()
        {
            return Err(Error::conflict(
                "this invoice was credited to another account",
            ));
        }
        // Read the invoice before the transaction starts.
        let snapshot = match already {
            Some(_) => None,
            None => {
                let adapter = self.marketplaces.adapter(marketplace).ok_or_else(|| {
                    Error::unprocessable(format!(
                        "prepayment is not available on marketplace {marketplace}"
                    ))
                })?;
                let snapshot = adapter
                    .fetch_invoice(&account_external_id, &marketplace_invoice_id)
                    .await?
                    .ok_or_else(|| {
                        Error::unprocessable("the marketplace does not know this invoice")
                    })?;
                if snapshot.state != InvoiceState::Paid {
                    return Err(Error::unprocessable(format!(
                        "the invoice is {}, not paid",
                        snapshot.state
                    ))
                    .with_user_message("The purchase has not been paid yet"));
                }
                self.check_prepayment_purchase(marketplace, &snapshot)
                    .await?;
                Some(snapshot)
            }
        };
        let work = unit_of_work!(call, &self.db, &self.outbox);
        let now = self.now();
        if let Some(snapshot) = snapshot {
            let credited = prepayment::Entity::insert(prepayment::ActiveModel {
                marketplace: Set(marketplace.as_str().to_owned()),
                marketplace_invoice_id: Set(marketplace_invoice_id.as_str().to_owned()),
                account_id: Set(account_id.as_str().to_owned()),
                amount_minor: Set(snapshot.total.amount_minor),
                currency: Set(snapshot.total.currency.clone()),
                credited_at: Set(now),
            })
            .on_conflict(
                OnConflict::columns([
                    prepayment::Column::Marketplace,
                    prepayment::Column::MarketplaceInvoiceId,
                ])
                .do_nothing()
                .to_owned(),
            )
            .exec_without_returning(&*work)
            .await
            .map_err(db_error)?;
            if credited == 1 {
                self.add_to_balance(&*work, &account_id, None, &snapshot.total)
                    .await?;
                tracing::info!(account.id = %account_id, amount = %snapshot.total, "prepaid balance credited");
            }
        }
        let balances = self.balances_of(&*work, &account_id).await?;
        work.finish(balances).await
    }

    async fn add_to_balance(
        &self,
        conn: &impl ConnectionTrait,
        account_id: &AccountId,
        resource_id: Option<&ResourceId>,
        amount: &Money,
    ) -> Result<()> {
        let resource = resource_id.map(ResourceId::as_str).unwrap_or_default();
        let existing =
            balance::Entity::find_by_id((account_id.as_str().to_owned(), resource.to_owned()))
                .one(conn)
                .await
                .map_err(db_error)?;
        let now = self.now();
        match existing {
            Some(mut row) => {
                if row.currency != amount.currency {
                    return Err(Error::conflict(format!(
                        "the balance is kept in {}",
                        row.currency
                    )));
                }
                row.value_minor += amount.amount_minor;
                row.updated_at = now;
                row.into_active_model()
                    .reset_all()
                    .update(conn)
                    .await
                    .map_err(db_error)?;
            }
            None => {
                balance::Entity::insert(balance::ActiveModel {
                    account_id: Set(account_id.as_str().to_owned()),
                    resource_id: Set(resource.to_owned()),
                    value_minor: Set(amount.amount_minor),
                    currency: Set(amount.currency.clone()),
                    updated_at: Set(now),
                })
                .exec_without_returning(conn)
                .await
                .map_err(db_error)?;
            }
        }
        Ok(())
    }

    /// Current balances of an account.
    pub async fn get_balances(&self, request: pb::GetBalancesRequest) -> Result<pb::Balances> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        self.balances_of(&self.db, &account_id).await
    }

    /// After the marketplace accepted a refund request.
    pub(crate) async fn refund_sent(
        &self,
        invoice_id: &InvoiceId,
    ) -> Result<Option<invoice::Model>> {
        invoice::Entity::find_by_id(invoice_id.as_str())
            .one(&self.db)
            .await
            .map_err(db_error)
    }
}

impl BillingDomain {
    /// Queues a read of every invoice we submitted that is not settled yet
    /// (paid or refunded), once per hour, so states missed by webhooks are
    /// still followed. Returns how many reads were queued.
    pub(crate) async fn queue_invoice_refreshes(&self, now: DateTime<Utc>) -> Result<usize> {
        let open = invoice::Entity::find()
            .filter(invoice::Column::ExternalId.is_not_null())
            .filter(invoice::Column::MarketplaceInvoiceId.is_not_null())
            .filter(
                invoice::Column::State.is_in(
                    InvoiceState::ALL
                        .iter()
                        .copied()
                        .filter(|state| !state.is_settled()),
                ),
            )
            .order_by_asc(invoice::Column::Id)
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let hour = marketbridge_core::time::hour_floor(now);
        let mut queued = 0;
        for row in open {
            let Ok(marketplace) = Marketplace::parse("marketplace", &row.marketplace) else {
                continue;
            };
            if self.marketplaces.adapter(marketplace).is_none() {
                continue;
            }
            let job = NewJob::of(&BillingJob::RefreshInvoice(InvoiceJob::of(&row.invoice()?)))?
                .dedupe_key(format!("refresh:{}:{}", row.id, hour.timestamp()));
            let write = marketbridge_storage::write_once(&self.db).await?;
            queued += usize::from(self.outbox.enqueue(&write, job).await?.is_some());
            write.commit().await?;
        }
        Ok(queued)
    }

    /// Reads an invoice from its marketplace and records the state it is in
    /// (outbox job). A refund we asked for is not undone by a read that
    /// predates it.
    pub(crate) async fn refresh_invoice(&self, invoice_id: &InvoiceId) -> Result<()> {
        let Some(row) = invoice::Entity::find_by_id(invoice_id.as_str())
            .one(&self.db)
            .await
            .map_err(db_error)?
        else {
            return Ok(());
        };
        let (Some(marketplace_invoice_id), Ok(marketplace)) = (
            row.marketplace_invoice_id
                .clone()
                .map(MarketplaceInvoiceId::new),
            Marketplace::parse("marketplace", &row.marketplace),
        ) else {
            return Ok(());
        };
        let Some(adapter) = self.marketplaces.adapter(marketplace).cloned() else {
            return Ok(());
        };
        let (_, account_external_id) = self.account_identity(&row.account()?).await?;
        let Some(snapshot) = adapter
            .fetch_invoice(&account_external_id, &marketplace_invoice_id)
            .await?
        else {
            tracing::warn!(invoice.id = %row.id, "the marketplace does not know a submitted invoice");
            return Ok(());
        };
        if invoice_transition(Some(row.state), InvoiceEvent::Read(snapshot.state)).is_err() {
            return Ok(());
        }
        let now = self.now();
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let Some(mut current) = invoice::Entity::find_by_id(invoice_id.as_str())
            .one(&*work)
            .await
            .map_err(db_error)?
        else {
            return Ok(());
        };
        let previous = current.state;
        // Checked again on the row as it is now.
        let Ok(step) = invoice_transition(Some(previous), InvoiceEvent::Read(snapshot.state))
        else {
            return Ok(());
        };
        self.apply_invoice_step(
            &mut work,
            &mut current,
            Some(previous),
            step,
            snapshot.paid_at.unwrap_or(now),
            None,
        )
        .await?;
        current.state_at = now;
        current.updated_at = now;
        current
            .clone()
            .into_active_model()
            .reset_all()
            .update(&*work)
            .await
            .map_err(db_error)?;
        work.commit().await?;
        tracing::info!(invoice.id = %invoice_id, state = %snapshot.state, "invoice state read from the marketplace");
        Ok(())
    }
}
