//! Ids billing handles beyond our own rows' (`marketbridge_core::ids`): the
//! marketplaces' own ids (an account's, an invoice's), an invoice's owner,
//! and the catalog's plan and metric ids (shared with the other services).
//! Each is a newtype over the text, so a function says which id it takes.

pub use marketbridge_core::ids::{MetricId, PlanId};

marketbridge_core::text_id! {
    /// The marketplace's id of an account (Vercel's installation id,
    /// Google's procurement account id).
    ExternalAccountId;
    /// The marketplace's id of an invoice.
    MarketplaceInvoiceId;
    /// Who an invoice is for: a resource, or an account-level subscription.
    OwnerId;
}
