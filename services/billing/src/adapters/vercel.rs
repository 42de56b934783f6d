//! Vercel's side of billing: reading an invoice (a prepayment purchase must
//! be paid before it is credited) and refunding one, with the
//! installation's token from the account service.

use crate::lifecycle::invoice::InvoiceState;
use crate::marketplace::{BillingMarketplace, InvoiceSnapshot};
use crate::model::ids::{ExternalAccountId, MarketplaceInvoiceId};
use async_trait::async_trait;
use marketbridge_core::money::Money;
use marketbridge_core::time::parse_rfc3339;
use marketbridge_core::{Error, Result};
use marketbridge_rpc::AccountApi;
use marketbridge_vercel::VercelApi;
use marketbridge_vercel::api::credentials::AccountTokens;
use marketbridge_vercel::model::vercel_api::{Invoice, InvoiceAction};
use std::sync::Arc;

/// Vercel bills in US dollars.
const CURRENCY: &str = "USD";

/// The Vercel billing adapter.
#[derive(Clone)]
pub struct VercelBilling {
    api: VercelApi,
    accounts: Arc<dyn AccountApi>,
}

impl VercelBilling {
    /// An adapter calling the Vercel API with tokens from the account
    /// service.
    pub fn new(api: VercelApi, accounts: Arc<dyn AccountApi>) -> Self {
        Self { api, accounts }
    }

    fn tokens(&self) -> AccountTokens {
        AccountTokens::new(self.accounts.clone())
    }
}

/// An invoice as billing reads it. States Vercel adds later are refused
/// rather than guessed.
pub fn snapshot(invoice: &Invoice) -> Result<InvoiceSnapshot> {
    let state: InvoiceState = invoice.state.parse().map_err(|_| {
        Error::unprocessable(format!(
            "Vercel reported an unknown invoice state `{}`",
            invoice.state
        ))
    })?;
    let total = if invoice.total.trim().is_empty() {
        Money::zero(CURRENCY)
    } else {
        Money::parse_decimal("total", &invoice.total, CURRENCY)?
    };
    let period = match &invoice.period {
        Some(period) => Some((
            parse_rfc3339("period.start", &period.start)?,
            parse_rfc3339("period.end", &period.end)?,
        )),
        None => None,
    };
    let paid_at = invoice
        .paid_at
        .as_deref()
        .map(|t| parse_rfc3339("paidAt", t))
        .transpose()?;
    Ok(InvoiceSnapshot {
        marketplace_invoice_id: invoice.invoice_id.clone(),
        external_id: invoice.external_id.clone(),
        state,
        total,
        period,
        paid_at,
        test: invoice.test.unwrap_or(false),
        plan_ids: invoice
            .items
            .iter()
            .filter_map(|item| item.get("billingPlanId").and_then(|id| id.as_str()))
            .map(str::to_owned)
            .collect(),
    })
}

#[async_trait]
impl BillingMarketplace for VercelBilling {
    async fn fetch_invoice(
        &self,
        account_external_id: &ExternalAccountId,
        marketplace_invoice_id: &MarketplaceInvoiceId,
    ) -> Result<Option<InvoiceSnapshot>> {
        let (account_external_id, marketplace_invoice_id) = (
            account_external_id.as_str(),
            marketplace_invoice_id.as_str(),
        );
        let api = &self.api;
        let invoice = api
            .with_token(&self.tokens(), account_external_id, |token| async move {
                api.get_invoice(&token, account_external_id, marketplace_invoice_id)
                    .await
            })
            .await?;
        invoice.as_ref().map(snapshot).transpose()
    }

    async fn refund_invoice(
        &self,
        account_external_id: &ExternalAccountId,
        marketplace_invoice_id: &MarketplaceInvoiceId,
        amount: &Money,
        reason: &str,
    ) -> Result<()> {
        let (account_external_id, marketplace_invoice_id) = (
            account_external_id.as_str(),
            marketplace_invoice_id.as_str(),
        );
        if amount.currency != CURRENCY {
            return Err(Error::invalid_field("amount", "Vercel refunds in USD only"));
        }
        let reason = if reason.trim().is_empty() {
            "refund"
        } else {
            reason
        };
        let action = &InvoiceAction::refund(reason, &amount.to_decimal_string());
        let api = &self.api;
        api.with_token(&self.tokens(), account_external_id, |token| async move {
            api.refund_invoice(&token, account_external_id, marketplace_invoice_id, action)
                .await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use marketbridge_vercel::model::Period;

    #[test]
    fn invoices_read_into_snapshots() {
        let invoice = Invoice {
            invoice_id: "inv_1".into(),
            state: "paid".into(),
            total: "12.34".into(),
            period: Some(Period {
                start: "2026-10-01T00:00:00Z".into(),
                end: "2026-11-01T00:00:00Z".into(),
            }),
            paid_at: Some("2026-11-02T00:00:00Z".into()),
            ..Default::default()
        };
        let read = snapshot(&invoice).unwrap();
        assert_eq!(read.state, InvoiceState::Paid);
        assert_eq!(read.total, Money::usd_cents(1234));
        assert!(read.period.is_some() && read.paid_at.is_some());
        let unknown = Invoice {
            state: "issued".into(),
            ..invoice
        };
        assert!(snapshot(&unknown).is_err());
    }
}
