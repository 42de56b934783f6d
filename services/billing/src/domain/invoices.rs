//! Invoices as the marketplaces report them, refunds, and prepaid balances
//! credited from paid purchase invoices.

use super::BillingDomain;
use crate::entity::{balance, invoice, prepayment};
use crate::jobs::{self, kind};
use crate::marketplace::invoice_state;
use chrono::{DateTime, Utc};
use marketbridge_core::ids::{AccountId, InvoiceId};
use marketbridge_core::money::Money;
use marketbridge_core::time::{from_optional_timestamp, to_timestamp};
use marketbridge_core::{Error, Marketplace, Result, Validator};
use marketbridge_proto::account::v1::GetAccountRequest;
use marketbridge_proto::billing::v1 as pb;
use marketbridge_proto::common::v1::AccountSelector;
use marketbridge_storage::db_error;
use marketbridge_storage::idempotent_txn;
use marketbridge_storage::outbox::{NewJob, truncate_micros};
use marketbridge_storage::paging::Page;
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

/// The stored name of an invoice state.
pub fn state_name(state: pb::InvoiceState) -> Option<&'static str> {
    Some(match state {
        pb::InvoiceState::Draft => invoice_state::DRAFT,
        pb::InvoiceState::Pending => invoice_state::PENDING,
        pb::InvoiceState::Scheduled => invoice_state::SCHEDULED,
        pb::InvoiceState::Invoiced => invoice_state::INVOICED,
        pb::InvoiceState::Paid => invoice_state::PAID,
        pb::InvoiceState::Notpaid => invoice_state::NOTPAID,
        pb::InvoiceState::Overdue => invoice_state::OVERDUE,
        pb::InvoiceState::RefundRequested => invoice_state::REFUND_REQUESTED,
        pb::InvoiceState::Refunded => invoice_state::REFUNDED,
        pb::InvoiceState::Unspecified => return None,
    })
}

fn state_to_proto(name: &str) -> pb::InvoiceState {
    invoice_state::ALL
        .iter()
        .zip([
            pb::InvoiceState::Draft,
            pb::InvoiceState::Pending,
            pb::InvoiceState::Scheduled,
            pb::InvoiceState::Invoiced,
            pb::InvoiceState::Paid,
            pb::InvoiceState::Notpaid,
            pb::InvoiceState::Overdue,
            pb::InvoiceState::RefundRequested,
            pb::InvoiceState::Refunded,
        ])
        .find(|(stored, _)| **stored == name)
        .map(|(_, state)| state)
        .unwrap_or(pb::InvoiceState::Unspecified)
}

/// An invoice row as the protobuf message.
pub fn invoice_to_proto(row: &invoice::Model) -> pb::Invoice {
    let items: Vec<StoredItem> = serde_json::from_str(&row.items).unwrap_or_default();
    let money = |minor: i64| Some(Money::new(minor, row.currency.clone()).to_proto());
    pb::Invoice {
        id: row.id.clone(),
        account_id: row.account_id.clone(),
        marketplace_invoice_id: row.marketplace_invoice_id.clone().unwrap_or_default(),
        external_id: row.external_id.clone().unwrap_or_default(),
        state: state_to_proto(&row.state) as i32,
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
    }
}

impl BillingDomain {
    /// The marketplace identity of an account, from the account service.
    pub(crate) async fn account_identity(&self, account_id: &str) -> Result<(Marketplace, String)> {
        let mut accounts = self.peers.accounts.clone();
        let account = accounts
            .get_account(GetAccountRequest {
                account: Some(AccountSelector::by_id(account_id)),
            })
            .await
            .map_err(Error::from)?
            .into_inner();
        let reference = account.marketplace_ref.unwrap_or_default();
        Ok((
            Marketplace::from_proto("account.marketplace", reference.marketplace)?,
            reference.external_id,
        ))
    }

    async fn find_invoice_by_marketplace_id(
        &self,
        conn: &impl ConnectionTrait,
        marketplace: Marketplace,
        marketplace_invoice_id: &str,
    ) -> Result<Option<invoice::Model>> {
        invoice::Entity::find()
            .filter(invoice::Column::Marketplace.eq(marketplace.as_str()))
            .filter(invoice::Column::MarketplaceInvoiceId.eq(marketplace_invoice_id))
            .one(conn)
            .await
            .map_err(db_error)
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
        let state = pb::InvoiceState::try_from(request.state)
            .ok()
            .and_then(state_name)
            .ok_or_else(|| Error::invalid_field("state", "a known invoice state is required"))?;
        let occurred_at = truncate_micros(
            from_optional_timestamp("occurredAt", request.occurred_at.as_ref())?
                .unwrap_or_else(|| self.now()),
        );
        let period_start = from_optional_timestamp("periodStart", request.period_start.as_ref())?
            .map(truncate_micros);
        let period_end =
            from_optional_timestamp("periodEnd", request.period_end.as_ref())?.map(truncate_micros);
        let (marketplace, _) = self.account_identity(account_id.as_str()).await?;
        let key = request
            .context
            .as_ref()
            .map(|c| c.idempotency_key.clone())
            .unwrap_or_default();
        let txn = idempotent_txn!(
            &self.db,
            "billing.RecordInvoiceState",
            &key,
            &request,
            self.now()
        );
        let now = self.now();
        let existing = self
            .find_invoice_by_marketplace_id(&*txn, marketplace, &request.marketplace_invoice_id)
            .await?;
        let previous_state = existing
            .as_ref()
            .map(|r| r.state.clone())
            .unwrap_or_default();
        let row = match existing {
            Some(row) if occurred_at < row.state_at => {
                tracing::info!(invoice.id = %row.id, "ignoring a stale invoice state");
                row
            }
            Some(mut row) => {
                row.state = state.to_owned();
                row.state_at = occurred_at;
                if state == invoice_state::PAID && row.paid_at.is_none() {
                    row.paid_at = Some(occurred_at);
                }
                if let Some(total) = &request.total {
                    row.total_minor = total.amount_minor;
                }
                row.period_start = period_start.or(row.period_start);
                row.period_end = period_end.or(row.period_end);
                row.updated_at = now;
                row.clone()
                    .into_active_model()
                    .reset_all()
                    .update(&*txn)
                    .await
                    .map_err(db_error)?;
                row
            }
            None => {
                let total = request
                    .total
                    .as_ref()
                    .map(Money::from_proto)
                    .unwrap_or_else(|| Money::usd_cents(0));
                let row = invoice::Model {
                    id: InvoiceId::generate().into_string(),
                    account_id: account_id.into_string(),
                    subscription_id: String::new(),
                    marketplace: marketplace.as_str().to_owned(),
                    marketplace_invoice_id: Some(request.marketplace_invoice_id.clone()),
                    external_id: None,
                    state: state.to_owned(),
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
                    paid_at: (state == invoice_state::PAID).then_some(occurred_at),
                    created_at: now,
                    updated_at: now,
                };
                invoice::Entity::insert(row.clone().into_active_model())
                    .exec_without_returning(&*txn)
                    .await
                    .map_err(db_error)?;
                row
            }
        };
        tracing::info!(invoice.id = %row.id, state = %row.state, "invoice state recorded");
        self.follow_invoice_state(&*txn, &row, &previous_state)
            .await?;
        let answer = txn.finish(invoice_to_proto(&row)).await?;
        self.outbox.wake();
        Ok(answer)
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
        row.map(|row| invoice_to_proto(&row))
            .ok_or_else(|| Error::not_found("invoice not found"))
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
            invoices: rows.iter().map(invoice_to_proto).collect(),
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
        let txn = idempotent_txn!(
            &self.db,
            "billing.RefundInvoice",
            &key,
            &request,
            self.now()
        );
        let mut row = invoice::Entity::find_by_id(invoice_id.into_string())
            .one(&*txn)
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
        if !matches!(
            row.state.as_str(),
            invoice_state::PAID
                | invoice_state::NOTPAID
                | invoice_state::OVERDUE
                | invoice_state::INVOICED
        ) {
            return Err(Error::conflict(format!(
                "a {} invoice cannot be refunded",
                row.state
            )));
        }
        let previous_state = row.state.clone();
        row.state = invoice_state::REFUND_REQUESTED.to_owned();
        row.refund_total_minor += amount.amount_minor;
        row.refund_reason = request.reason.clone();
        row.updated_at = self.now();
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&*txn)
            .await
            .map_err(db_error)?;
        let job = jobs::RefundJob {
            invoice_id: row.id.clone(),
            marketplace_invoice_id,
            amount_minor: amount.amount_minor,
            currency: amount.currency.clone(),
            reason: request.reason.clone(),
        };
        self.outbox
            .enqueue(&*txn, NewJob::new(kind::REFUND, &job)?)
            .await?;
        // A refund cancels a notpaid or overdue invoice: what it suspended
        // comes back.
        self.follow_invoice_state(&*txn, &row, &previous_state)
            .await?;
        let response = txn.finish(invoice_to_proto(&row)).await?;
        self.outbox.wake();
        Ok(response)
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
        let (marketplace, account_external_id) = self.account_identity(account_id.as_str()).await?;
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
        // Read the invoice before taking the write lock.
        let snapshot = match already {
            Some(_) => None,
            None => {
                let adapter = self.marketplaces.adapter(marketplace).ok_or_else(|| {
                    Error::unprocessable(format!(
                        "prepayment is not available on marketplace {marketplace}"
                    ))
                })?;
                let snapshot = adapter
                    .fetch_invoice(&account_external_id, &request.marketplace_invoice_id)
                    .await?
                    .ok_or_else(|| {
                        Error::unprocessable("the marketplace does not know this invoice")
                    })?;
                if snapshot.state != invoice_state::PAID {
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
        let key = request
            .context
            .as_ref()
            .map(|c| c.idempotency_key.clone())
            .unwrap_or_default();
        let txn = idempotent_txn!(
            &self.db,
            "billing.ProvisionPrepayment",
            &key,
            &request,
            self.now()
        );
        let now = self.now();
        if let Some(snapshot) = snapshot {
            let credited = prepayment::Entity::insert(prepayment::ActiveModel {
                marketplace: Set(marketplace.as_str().to_owned()),
                marketplace_invoice_id: Set(request.marketplace_invoice_id.clone()),
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
            .exec_without_returning(&*txn)
            .await
            .map_err(db_error)?;
            if credited == 1 {
                self.add_to_balance(&*txn, account_id.as_str(), "", &snapshot.total)
                    .await?;
                tracing::info!(account.id = %account_id, amount = %snapshot.total, "prepaid balance credited");
            }
        }
        let balances = self.balances_of(&*txn, account_id.as_str()).await?;
        txn.finish(balances).await
    }

    async fn add_to_balance(
        &self,
        conn: &impl ConnectionTrait,
        account_id: &str,
        resource_id: &str,
        amount: &Money,
    ) -> Result<()> {
        let existing = balance::Entity::find_by_id((account_id.to_owned(), resource_id.to_owned()))
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
                    account_id: Set(account_id.to_owned()),
                    resource_id: Set(resource_id.to_owned()),
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
        self.balances_of(&self.db, account_id.as_str()).await
    }

    /// After the marketplace accepted a refund request.
    pub(crate) async fn refund_sent(&self, invoice_id: &str) -> Result<Option<invoice::Model>> {
        invoice::Entity::find_by_id(invoice_id.to_owned())
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
            .filter(invoice::Column::State.is_in(
                invoice_state::ALL.into_iter().filter(|state| {
                    ![invoice_state::PAID, invoice_state::REFUNDED].contains(state)
                }),
            ))
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
            let job = NewJob::new(
                kind::REFRESH_INVOICE,
                &jobs::InvoiceJob {
                    invoice_id: row.id.clone(),
                },
            )?
            .dedupe_key(format!("refresh:{}:{}", row.id, hour.timestamp()));
            queued += usize::from(self.outbox.enqueue(&self.db, job).await?.is_some());
        }
        Ok(queued)
    }

    /// Reads an invoice from its marketplace and records the state it is in
    /// (outbox job). A refund we asked for is not undone by a read that
    /// predates it.
    pub(crate) async fn refresh_invoice(&self, invoice_id: &str) -> Result<()> {
        let Some(row) = invoice::Entity::find_by_id(invoice_id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error)?
        else {
            return Ok(());
        };
        let (Some(marketplace_invoice_id), Ok(marketplace)) = (
            row.marketplace_invoice_id.clone(),
            Marketplace::parse("marketplace", &row.marketplace),
        ) else {
            return Ok(());
        };
        let Some(adapter) = self.marketplaces.adapter(marketplace).cloned() else {
            return Ok(());
        };
        let (_, account_external_id) = self.account_identity(&row.account_id).await?;
        let Some(snapshot) = adapter
            .fetch_invoice(&account_external_id, &marketplace_invoice_id)
            .await?
        else {
            tracing::warn!(invoice.id = %row.id, "the marketplace does not know a submitted invoice");
            return Ok(());
        };
        let refund_in_flight = row.state == invoice_state::REFUND_REQUESTED
            && !matches!(
                snapshot.state.as_str(),
                invoice_state::REFUND_REQUESTED | invoice_state::REFUNDED
            );
        if snapshot.state == row.state || refund_in_flight {
            return Ok(());
        }
        let now = self.now();
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        let Some(mut current) = invoice::Entity::find_by_id(invoice_id.to_owned())
            .one(&txn)
            .await
            .map_err(db_error)?
        else {
            return Ok(());
        };
        let previous_state = current.state.clone();
        current.state = snapshot.state.clone();
        current.state_at = now;
        if snapshot.state == invoice_state::PAID && current.paid_at.is_none() {
            current.paid_at = Some(snapshot.paid_at.unwrap_or(now));
        }
        current.updated_at = now;
        current
            .clone()
            .into_active_model()
            .reset_all()
            .update(&txn)
            .await
            .map_err(db_error)?;
        self.follow_invoice_state(&txn, &current, &previous_state)
            .await?;
        txn.commit().await.map_err(db_error)?;
        self.outbox.wake();
        tracing::info!(invoice.id = %invoice_id, state = %snapshot.state, "invoice state read from the marketplace");
        Ok(())
    }
}
