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
