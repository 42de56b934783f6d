//! Calls about billing: interim usage, invoices, refunds, prepaid balances
//! and the finalization of an uninstalled installation.

use super::{NO_BODY, VercelApi, path_segment};
use crate::model::vercel_api::{
    BalanceSubmission, BillingData, Invoice, InvoiceAction, InvoiceReceipt, InvoiceSubmission,
};
use marketbridge_core::crypto::SecretString;
use marketbridge_core::{ErrorCode, Result};
use reqwest::Method;

fn billing_path(installation_id: &str, rest: &str) -> Result<String> {
    let id = path_segment("installationId", installation_id)?;
    Ok(format!("/v1/installations/{id}/billing{rest}"))
}

impl VercelApi {
    /// `POST /v1/installations/{id}/billing`: interim billing and usage
    /// (display only; the latest submission of a period wins).
    pub async fn submit_billing_data(
        &self,
        token: &SecretString,
        installation_id: &str,
        data: &BillingData,
    ) -> Result<()> {
        self.call(
            token,
            Method::POST,
            "/v1/installations/{id}/billing",
            &billing_path(installation_id, "")?,
            Some(data),
        )
        .await
        .map(drop)
    }

    /// `POST /v1/installations/{id}/billing/invoices`: submits an invoice.
    pub async fn submit_invoice(
        &self,
        token: &SecretString,
        installation_id: &str,
        invoice: &InvoiceSubmission,
    ) -> Result<InvoiceReceipt> {
        self.call_json(
            token,
            Method::POST,
            "/v1/installations/{id}/billing/invoices",
            &billing_path(installation_id, "/invoices")?,
            Some(invoice),
        )
        .await
    }

    /// `GET /v1/installations/{id}/billing/invoices/{invoiceId}`; `None`
    /// when Vercel does not know the invoice.
    pub async fn get_invoice(
        &self,
        token: &SecretString,
        installation_id: &str,
        invoice_id: &str,
    ) -> Result<Option<Invoice>> {
        let invoice = path_segment("invoiceId", invoice_id)?;
        let answer = self
            .call_json(
                token,
                Method::GET,
                "/v1/installations/{id}/billing/invoices/{invoiceId}",
                &billing_path(installation_id, &format!("/invoices/{invoice}"))?,
                NO_BODY,
            )
            .await;
        match answer {
            Ok(invoice) => Ok(Some(invoice)),
            Err(error) if error.code() == ErrorCode::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// `POST .../billing/invoices/{invoiceId}/actions`: refunds (part of)
    /// an invoice; on an unpaid invoice this cancels it.
    pub async fn refund_invoice(
        &self,
        token: &SecretString,
        installation_id: &str,
        invoice_id: &str,
        action: &InvoiceAction,
    ) -> Result<()> {
        let invoice = path_segment("invoiceId", invoice_id)?;
        self.call(
            token,
            Method::POST,
            "/v1/installations/{id}/billing/invoices/{invoiceId}/actions",
            &billing_path(installation_id, &format!("/invoices/{invoice}/actions"))?,
            Some(action),
        )
        .await
        .map(drop)
    }

    /// `POST /v1/installations/{id}/billing/balance`: prepaid balances.
    pub async fn submit_balances(
        &self,
        token: &SecretString,
        installation_id: &str,
        balances: &BalanceSubmission,
    ) -> Result<()> {
        self.call(
            token,
            Method::POST,
            "/v1/installations/{id}/billing/balance",
            &billing_path(installation_id, "/balance")?,
            Some(balances),
        )
        .await
        .map(drop)
    }

    /// `POST /v1/installations/{id}/billing/finalize`: the last invoice of an
    /// uninstalled installation is out; its token stops working.
    pub async fn finalize_installation(
        &self,
        token: &SecretString,
        installation_id: &str,
    ) -> Result<()> {
        self.call(
            token,
            Method::POST,
            "/v1/installations/{id}/billing/finalize",
            &billing_path(installation_id, "/finalize")?,
            NO_BODY,
        )
        .await
        .map(drop)
    }
}
