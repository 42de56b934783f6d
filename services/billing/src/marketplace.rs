//! The seam where a marketplace plugs into billing: reading and refunding its
//! invoices ([`BillingMarketplace`]), and receiving usage, invoices, balances
//! and finalization ([`UsageReporter`]).

use crate::lifecycle::invoice::InvoiceState;
use crate::model::ids::{ExternalAccountId, MarketplaceInvoiceId};
use crate::submission::{Submission, SubmissionKind};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marketbridge_core::crypto::SecretString;
use marketbridge_core::money::Money;
use marketbridge_core::{Marketplace, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// An invoice as the marketplace describes it now.
#[derive(Debug, Clone, PartialEq)]
pub struct InvoiceSnapshot {
    /// The marketplace's invoice id.
    pub marketplace_invoice_id: String,
    /// Our external id, when the invoice was ours.
    pub external_id: Option<String>,
    /// State.
    pub state: InvoiceState,
    /// Total.
    pub total: Money,
    /// Billing period.
    pub period: Option<(DateTime<Utc>, DateTime<Utc>)>,
    /// When it was paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// True for a test invoice.
    pub test: bool,
    /// The billing plans its lines name, in order (empty when the lines
    /// name none).
    pub plan_ids: Vec<String>,
}

/// Calls billing makes to a marketplace about invoices.
#[async_trait]
pub trait BillingMarketplace: Send + Sync + 'static {
    /// Reads an invoice of an account (`account_external_id` is the
    /// marketplace's account id); `None` when the marketplace does not know it.
    async fn fetch_invoice(
        &self,
        account_external_id: &ExternalAccountId,
        marketplace_invoice_id: &MarketplaceInvoiceId,
    ) -> Result<Option<InvoiceSnapshot>>;
    /// Refunds (part of) an invoice.
    async fn refund_invoice(
        &self,
        account_external_id: &ExternalAccountId,
        marketplace_invoice_id: &MarketplaceInvoiceId,
        amount: &Money,
        reason: &str,
    ) -> Result<()>;
}

/// Which submissions a marketplace receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportingPlan {
    /// Usage per subscription and window, as metering operations (Google).
    pub usage_operations: bool,
    /// Hourly interim billing and usage per account (Vercel).
    pub interim_billing: bool,
    /// Invoices per resource, period and plan at period end (Vercel).
    pub invoices: bool,
    /// Prepaid balances per account (Vercel).
    pub balances: bool,
    /// A finalization call once an uninstalled account's last invoice is out
    /// (Vercel).
    pub finalization: bool,
}

/// The account a submission is delivered for.
#[derive(Debug, Clone)]
pub struct DeliveryAccount {
    /// The marketplace's id of the account (Vercel installation id, Google
    /// procurement account id).
    pub external_id: ExternalAccountId,
    /// The marketplace credential the account holds, when it holds one
    /// (Vercel's installation token).
    pub credential: Option<SecretString>,
}

/// How the marketplace answered a delivery. A transient failure (429, 5xx,
/// no answer) is an `Err` of [`UsageReporter::deliver`] instead, and the
/// outbox tries again with the same body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted.
    Accepted {
        /// The answer, as received.
        answer: String,
        /// The marketplace's id of a submitted invoice.
        marketplace_invoice_id: Option<String>,
    },
    /// Not sent: the marketplace says the customer cannot be billed now
    /// (Google `checkErrors`). Reporting of the subscription is held until a
    /// later attempt passes.
    Suspended {
        /// The answer, as received.
        answer: String,
    },
    /// Refused for good.
    Refused {
        /// The answer, as received.
        answer: String,
    },
}

/// Renders and delivers billing's submissions to one marketplace.
#[async_trait]
pub trait UsageReporter: Send + Sync + 'static {
    /// Which submissions this marketplace receives.
    fn plan(&self) -> ReportingPlan;
    /// The wire body of a submission, exactly as [`UsageReporter::deliver`]
    /// will send it. The reporting ledger stores it before the first attempt.
    fn render(&self, submission: &Submission) -> Result<String>;
    /// Sends a rendered submission of `kind`. Called at least once per
    /// submission, always with the same body.
    async fn deliver(
        &self,
        account: &DeliveryAccount,
        kind: SubmissionKind,
        body: &str,
    ) -> Result<Delivery>;
    /// For marketplaces that take usage operations one window after the
    /// other (Google): how long after its end a window the marketplace
    /// cannot take yet is kept and retried. `None` (the default): usage
    /// submissions are independent and retried until they settle.
    fn usage_grace(&self) -> Option<chrono::Duration> {
        None
    }
}

/// Adapters per marketplace.
#[derive(Clone, Default)]
pub struct Marketplaces {
    adapters: HashMap<Marketplace, Arc<dyn BillingMarketplace>>,
    reporters: HashMap<Marketplace, Arc<dyn UsageReporter>>,
}

impl Marketplaces {
    /// Registers the adapter of a marketplace.
    pub fn with_adapter(
        mut self,
        marketplace: Marketplace,
        adapter: Arc<dyn BillingMarketplace>,
    ) -> Self {
        self.adapters.insert(marketplace, adapter);
        self
    }

    /// The adapter of a marketplace, if registered.
    pub fn adapter(&self, marketplace: Marketplace) -> Option<&Arc<dyn BillingMarketplace>> {
        self.adapters.get(&marketplace)
    }

    /// Registers the reporter of a marketplace.
    pub fn with_reporter(
        mut self,
        marketplace: Marketplace,
        reporter: Arc<dyn UsageReporter>,
    ) -> Self {
        self.reporters.insert(marketplace, reporter);
        self
    }

    /// The reporter of a marketplace, if registered.
    pub fn reporter(&self, marketplace: Marketplace) -> Option<&Arc<dyn UsageReporter>> {
        self.reporters.get(&marketplace)
    }

    /// The reporters whose reporting plan `wants` accepts.
    pub fn reporters_that(
        &self,
        wants: impl Fn(&ReportingPlan) -> bool,
    ) -> Vec<(Marketplace, Arc<dyn UsageReporter>)> {
        self.reporters
            .iter()
            .filter(|(_, reporter)| wants(&reporter.plan()))
            .map(|(marketplace, reporter)| (*marketplace, reporter.clone()))
            .collect()
    }
}
