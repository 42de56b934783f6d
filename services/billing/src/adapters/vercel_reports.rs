//! What Vercel receives from billing: hourly interim billing and usage
//! (`POST .../billing`), invoices at period end and at uninstall
//! (`POST .../billing/invoices`), prepaid balances (`POST .../billing/balance`)
//! and the finalization of an uninstalled installation
//! (`POST .../billing/finalize`), each with the installation's token.

use crate::marketplace::{Delivery, DeliveryAccount, ReportingPlan, UsageReporter};
use crate::model::ids::ExternalAccountId;
use crate::submission::{
    BalancesDraft, ChargeLine, InterimBilling, InvoiceDraft, Submission, SubmissionKind, UsageLine,
};
use async_trait::async_trait;
use marketbridge_catalog::MetricKind;
use marketbridge_core::crypto::SecretString;
use marketbridge_core::time::to_rfc3339;
use marketbridge_core::{Error, Result};
use marketbridge_vercel::VercelApi;
use marketbridge_vercel::api::credentials::AccountTokens;
use marketbridge_vercel::model::vercel_api::{
    BalanceSubmission, BillingData, BillingItem, BillingLines, InvoiceSubmission, InvoiceTest,
    UsageLine as VercelUsageLine, UsageType,
};
use marketbridge_vercel::model::{Balance, Period};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Vercel bills in US dollars.
const CURRENCY: &str = "USD";

/// Renders and delivers billing's submissions to Vercel.
#[derive(Debug, Clone)]
pub struct VercelReporter {
    api: VercelApi,
    tokens: Option<AccountTokens>,
}

impl VercelReporter {
    /// A reporter calling the Vercel API with the token billing read.
    pub fn new(api: VercelApi) -> Self {
        Self { api, tokens: None }
    }

    /// Takes each call's token from the account service instead (short-lived
    /// when available, refreshed once on a 401, a 410 recorded).
    pub fn with_tokens(mut self, tokens: AccountTokens) -> Self {
        self.tokens = Some(tokens);
        self
    }
}

/// A price in micro-units as a decimal string with at least two decimals
/// (`0.00001`, `0.25`, `20.00`).
pub fn decimal_from_micros(micros: i64) -> String {
    let sign = if micros < 0 { "-" } else { "" };
    let micros = micros.unsigned_abs();
    let whole = micros / 1_000_000;
    let fraction = format!("{:06}", micros % 1_000_000);
    let trimmed = fraction.trim_end_matches('0');
    let fraction = if trimmed.len() < 2 {
        &fraction[..2]
    } else {
        trimmed
    };
    format!("{sign}{whole}.{fraction}")
}

fn item(line: &ChargeLine) -> Result<BillingItem> {
    if line.total.currency != CURRENCY {
        return Err(Error::validation(format!(
            "Vercel bills in {CURRENCY}, not {}",
            line.total.currency
        )));
    }
    Ok(BillingItem {
        billing_plan_id: line.marketplace_plan_id.clone(),
        resource_id: line.resource_id.clone(),
        start: Some(to_rfc3339(line.start)),
        end: Some(to_rfc3339(line.end)),
        name: line.name.clone(),
        details: Some(line.details.clone()).filter(|details| !details.is_empty()),
        price: decimal_from_micros(line.unit_price_micros),
        quantity: line.quantity as f64,
        units: line.units.clone(),
        total: line.total.to_decimal_string(),
    })
}

fn usage_line(line: &UsageLine) -> VercelUsageLine {
    VercelUsageLine {
        resource_id: line.resource_id.clone(),
        name: line.name.clone(),
        usage_type: match line.kind {
            MetricKind::Interval => UsageType::Interval,
            MetricKind::Total => UsageType::Total,
            MetricKind::Rate => UsageType::Rate,
        },
        units: line.units.clone(),
        day_value: line.day_value as f64,
        period_value: line.period_value as f64,
        plan_value: line.plan_value.map(|value| value as f64),
    }
}

fn billing_data(billing: &InterimBilling) -> Result<BillingData> {
    Ok(BillingData {
        timestamp: to_rfc3339(billing.timestamp),
        eod: to_rfc3339(billing.day_end),
        period: Period {
            start: to_rfc3339(billing.period_start),
            end: to_rfc3339(billing.period_end),
        },
        billing: BillingLines {
            items: billing.items.iter().map(item).collect::<Result<_>>()?,
            discounts: Vec::new(),
        },
        usage: billing.usage.iter().map(usage_line).collect(),
    })
}

fn invoice(draft: &InvoiceDraft) -> Result<InvoiceSubmission> {
    Ok(InvoiceSubmission {
        external_id: Some(draft.external_id.clone()),
        invoice_date: to_rfc3339(draft.invoice_date),
        memo: draft.memo.clone(),
        period: Period {
            start: to_rfc3339(draft.period_start),
            end: to_rfc3339(draft.period_end),
        },
        items: draft.items.iter().map(item).collect::<Result<_>>()?,
        discounts: None,
        is_final: draft.is_final.then_some(true),
        test: draft.test.as_ref().map(|test| InvoiceTest {
            validate: None,
            result: test.result.clone(),
        }),
    })
}

fn balances(draft: &BalancesDraft) -> BalanceSubmission {
    BalanceSubmission {
        timestamp: to_rfc3339(draft.timestamp),
        balances: draft
            .balances
            .iter()
            .map(|balance| Balance {
                resource_id: balance.resource_id.clone(),
                credit: Some(balance.credit.clone()),
                name_label: Some(balance.name_label.clone()),
                currency_value_in_cents: balance.value.amount_minor,
            })
            .collect(),
    }
}

fn to_json(body: &impl Serialize) -> Result<String> {
    serde_json::to_string(body).map_err(|e| Error::internal(format!("vercel body: {e}")))
}

fn from_json<T: DeserializeOwned>(body: &str) -> Result<T> {
    serde_json::from_str(body)
        .map_err(|e| Error::unprocessable(format!("a stored Vercel body does not read back: {e}")))
}

fn token(account: &DeliveryAccount) -> Result<&SecretString> {
    account
        .credential
        .as_ref()
        .ok_or_else(|| Error::unprocessable("the installation holds no Vercel token"))
}

fn accepted(answer: impl Into<String>) -> Delivery {
    Delivery::Accepted {
        answer: answer.into(),
        marketplace_invoice_id: None,
    }
}

#[async_trait]
impl UsageReporter for VercelReporter {
    fn plan(&self) -> ReportingPlan {
        ReportingPlan {
            usage_operations: false,
            interim_billing: true,
            invoices: true,
            balances: true,
            finalization: true,
        }
    }

    fn render(&self, submission: &Submission) -> Result<String> {
        match submission {
            Submission::BillingData(billing) => to_json(&billing_data(billing)?),
            Submission::Invoice(draft) => to_json(&invoice(draft)?),
            Submission::Balances(draft) => to_json(&balances(draft)),
            Submission::Finalize => Ok(String::new()),
            Submission::Usage(_) => Err(Error::validation(
                "Vercel takes usage as interim billing data, not as operations",
            )),
        }
    }

    async fn deliver(
        &self,
        account: &DeliveryAccount,
        submission_kind: SubmissionKind,
        body: &str,
    ) -> Result<Delivery> {
        let installation = &account.external_id;
        match &self.tokens {
            Some(tokens) => {
                self.api
                    .with_token(tokens, installation.as_str(), |token| async move {
                        self.send(&token, installation, submission_kind, body).await
                    })
                    .await
            }
            None => {
                self.send(token(account)?, installation, submission_kind, body)
                    .await
            }
        }
    }
}

impl VercelReporter {
    async fn send(
        &self,
        token: &SecretString,
        installation: &ExternalAccountId,
        submission_kind: SubmissionKind,
        body: &str,
    ) -> Result<Delivery> {
        let installation_id = installation.as_str();
        match submission_kind {
            SubmissionKind::BillingData => {
                let data: BillingData = from_json(body)?;
                self.api
                    .submit_billing_data(token, installation_id, &data)
                    .await?;
                Ok(accepted("201 Created"))
            }
            SubmissionKind::Invoice => {
                let submission: InvoiceSubmission = from_json(body)?;
                let receipt = self
                    .api
                    .submit_invoice(token, installation_id, &submission)
                    .await?;
                let answer = to_json(&receipt)?;
                if let Some(errors) = receipt.validation_errors.filter(|e| !e.is_empty()) {
                    tracing::warn!(installation.id = %installation_id, errors = ?errors, "Vercel refused an invoice");
                    return Ok(Delivery::Refused { answer });
                }
                Ok(Delivery::Accepted {
                    answer,
                    marketplace_invoice_id: receipt.invoice_id,
                })
            }
            SubmissionKind::Balances => {
                let submission: BalanceSubmission = from_json(body)?;
                self.api
                    .submit_balances(token, installation_id, &submission)
                    .await?;
                Ok(accepted("201 Created"))
            }
            SubmissionKind::Finalize => {
                self.api
                    .finalize_installation(token, installation_id)
                    .await?;
                Ok(accepted("204 No Content"))
            }
            SubmissionKind::Usage => Err(Error::validation(format!(
                "Vercel takes no `{submission_kind}` submissions"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_keep_their_precision_and_two_decimals_at_least() {
        assert_eq!(decimal_from_micros(10), "0.00001");
        assert_eq!(decimal_from_micros(250_000), "0.25");
        assert_eq!(decimal_from_micros(20_000_000), "20.00");
        assert_eq!(decimal_from_micros(1_500_000), "1.50");
        assert_eq!(decimal_from_micros(0), "0.00");
    }
}
