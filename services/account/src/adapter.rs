//! The seam where a marketplace plugs into the account service's domain:
//! an adapter for the calls the service makes to the marketplace about an
//! account. The domain holds the registered [`Adapters`]; the notifications
//! a marketplace sends plug in above the domain ([`crate::marketplace`]).

use crate::entity::account;
use crate::model::TokenId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use marketbridge_core::crypto::SecretString;
use marketbridge_core::{Error, Marketplace, Result};
use marketbridge_proto::account::v1::SignupState;
use marketbridge_proto::common::v1::Person;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// An account as the marketplace describes it now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccountSnapshot {
    /// Display name, when the marketplace has one.
    pub display_name: Option<String>,
    /// Account URL, when given.
    pub url: Option<String>,
    /// Main contact, when given.
    pub contact: Option<Person>,
    /// State, verbatim.
    pub marketplace_state: String,
    /// The marketplace's update time.
    pub update_time: Option<DateTime<Utc>>,
    /// The signup approval state, when the marketplace has one.
    pub signup: Option<SignupState>,
    /// Extras.
    pub attributes: BTreeMap<String, String>,
}

/// What a marketplace's purchase token stands for (AWS `ResolveCustomer`,
/// Azure `resolve`), as the adapter read it from the marketplace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResolvedPurchase {
    /// The account's id at the marketplace: the key it is recorded under.
    pub account_external_id: String,
    /// The account as the marketplace describes it.
    pub snapshot: AccountSnapshot,
    /// The subscription, agreement or license the token is for.
    pub subscription_external_id: String,
    /// The marketplace's product (offer, product code).
    pub product_id: String,
    /// The marketplace's plan, when it has one.
    pub plan_id: String,
    /// Seats or units bought, when the marketplace has a quantity.
    pub quantity: Option<u64>,
    /// The buyer, when the marketplace says who it is.
    pub purchaser: Option<Person>,
    /// Marketplace extras; never secrets.
    pub attributes: BTreeMap<String, String>,
}

/// The type of the event recorded when a purchase token is resolved.
pub const PURCHASE_RESOLVED: &str = "purchase.resolved";

/// The payload of a [`PURCHASE_RESOLVED`] event: what the token stood for,
/// for the marketplace's processor (which re-reads the marketplace anyway).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PurchasePayload {
    /// The account's id at the marketplace.
    pub account_external_id: String,
    /// The subscription, agreement or license.
    pub subscription_external_id: String,
    /// The marketplace's product.
    #[serde(default)]
    pub product_id: String,
    /// The marketplace's plan.
    #[serde(default)]
    pub plan_id: String,
    /// Seats or units bought.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u64>,
    /// Marketplace extras.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attributes: BTreeMap<String, String>,
}

impl ResolvedPurchase {
    /// The payload of its [`PURCHASE_RESOLVED`] event (no personal data).
    pub fn payload(&self) -> PurchasePayload {
        PurchasePayload {
            account_external_id: self.account_external_id.clone(),
            subscription_external_id: self.subscription_external_id.clone(),
            product_id: self.product_id.clone(),
            plan_id: self.plan_id.clone(),
            quantity: self.quantity,
            attributes: self.attributes.clone(),
        }
    }
}

/// Calls the account service makes to a marketplace.
#[async_trait]
pub trait AccountMarketplace: Send + Sync + 'static {
    /// Approves the account's provider signup (Google `accounts.approve`).
    /// Must succeed when it is already approved.
    async fn approve_signup(&self, account: &account::Model) -> Result<()>;
    /// Rejects the account's signup.
    async fn reject_signup(&self, account: &account::Model, reason: &str) -> Result<()>;
    /// Resets the account (Google `accounts.reset`).
    async fn reset(&self, account: &account::Model) -> Result<()>;
    /// Reads the account from the marketplace; `None` when it no longer
    /// exists there. `credential` is the stored access token, if any.
    async fn fetch(
        &self,
        account: &account::Model,
        credential: Option<&SecretString>,
    ) -> Result<Option<AccountSnapshot>>;

    /// The token to call the marketplace with now. `stored` is the stored
    /// credential; `stale_token` names a token the marketplace just
    /// refused. By default the stored credential.
    async fn call_token(
        &self,
        account: &account::Model,
        stored: Option<&SecretString>,
        stale_token: Option<&TokenId>,
    ) -> Result<CallCredential> {
        let _ = (account, stale_token);
        let secret = stored
            .cloned()
            .ok_or_else(|| Error::not_found("no credential is stored for this account"))?;
        Ok(CallCredential {
            secret,
            kind: "long-lived".to_owned(),
            expires_at: None,
        })
    }

    /// Resolves the purchase token the marketplace handed the buyer's
    /// browser. A token the marketplace refuses is `Unauthenticated`; a
    /// marketplace that does not answer is `Unavailable`. Marketplaces
    /// without purchase tokens keep the default, which refuses.
    async fn resolve_purchase(&self, token: &SecretString) -> Result<ResolvedPurchase> {
        let _ = token;
        Err(Error::unprocessable(
            "this marketplace has no purchase tokens",
        ))
    }

    /// Whether the marketplace can rotate credentials
    /// ([`Self::rotate_credential`], [`Self::revoke_credential`]).
    fn rotates_credentials(&self) -> bool {
        false
    }

    /// Has the marketplace issue a replacement for `current`; the old one
    /// stays valid until revoked.
    async fn rotate_credential(
        &self,
        account: &account::Model,
        current: &SecretString,
    ) -> Result<SecretString> {
        let _ = (account, current);
        Err(Error::unprocessable(
            "this marketplace does not rotate credentials",
        ))
    }

    /// Retires `retired`, authenticated with the live credential `live`.
    async fn revoke_credential(
        &self,
        account: &account::Model,
        live: &SecretString,
        retired: &SecretString,
    ) -> Result<()> {
        let _ = (account, live, retired);
        Err(Error::unprocessable(
            "this marketplace does not revoke credentials",
        ))
    }

    /// True when `error` says the account no longer exists at the
    /// marketplace (Vercel's `410 Gone`): terminal, never retried.
    fn is_gone(&self, error: &Error) -> bool {
        let _ = error;
        false
    }

    /// Forgets any token cached for the account (it is gone).
    fn forget_tokens(&self, account: &account::Model) {
        let _ = account;
    }
}

/// A token to call a marketplace with.
#[derive(Clone)]
pub struct CallCredential {
    /// The bearer token.
    pub secret: SecretString,
    /// `short-lived` or `long-lived`.
    pub kind: String,
    /// When it expires, for a short-lived token.
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for CallCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallCredential")
            .field("kind", &self.kind)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The adapters registered per marketplace.
#[derive(Clone, Default)]
pub struct Adapters {
    adapters: HashMap<Marketplace, Arc<dyn AccountMarketplace>>,
}

impl Adapters {
    /// Registers the adapter of a marketplace.
    pub fn insert(&mut self, marketplace: Marketplace, adapter: Arc<dyn AccountMarketplace>) {
        self.adapters.insert(marketplace, adapter);
    }

    /// The adapter of a marketplace, if one is registered.
    pub fn get(&self, marketplace: Marketplace) -> Option<&Arc<dyn AccountMarketplace>> {
        self.adapters.get(&marketplace)
    }
}
