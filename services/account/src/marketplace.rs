//! The seams where a marketplace plugs into the account service: an adapter
//! for the calls the service makes to the marketplace about an account
//! ([`crate::adapter`], held by the domain), a processor for the
//! notifications the marketplace sends and its background work (both run
//! above the domain, by the jobs and the server). Adding a marketplace means
//! registering them; nothing else changes.

pub use crate::adapter::{
    AccountMarketplace, AccountSnapshot, Adapters, CallCredential, PURCHASE_RESOLVED,
    PurchasePayload, ResolvedPurchase,
};
use crate::domain::AccountDomain;
use crate::entity::event;
use async_trait::async_trait;
use marketbridge_core::ids::AccountId;
use marketbridge_core::{Marketplace, Result};
use marketbridge_rpc::{BillingApi, ProvisioningApi};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// What processing an event achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// Acted on; `account_id` is the account it concerned, when known.
    Processed {
        /// Our account id.
        account_id: Option<AccountId>,
    },
    /// Not an event we act on; logged and acknowledged.
    Ignored,
}

/// What an event processor may use.
#[derive(Clone)]
pub struct EventServices {
    /// The account service's own operations.
    pub accounts: AccountDomain,
    /// The provisioning service.
    pub provisioning: Option<Arc<dyn ProvisioningApi>>,
    /// The billing service.
    pub billing: Option<Arc<dyn BillingApi>>,
}

/// Acts on the notifications of one marketplace.
#[async_trait]
pub trait EventProcessor: Send + Sync + 'static {
    /// Processes one recorded event. Called at least once per event; must be
    /// idempotent. A transient error retries later; any other error marks
    /// the event failed.
    async fn process(&self, event: &event::Model, services: &EventServices)
    -> Result<EventOutcome>;
}

/// Background work a marketplace needs in the account service (pulling
/// notifications, reconciling accounts): rounds of work separated by pauses.
#[async_trait]
pub trait MarketplaceWorker: Send + Sync + 'static {
    /// A name for logs and for running it on demand (`google.pull`).
    fn name(&self) -> &'static str;
    /// Wait before the first round.
    fn first_delay(&self) -> Duration;
    /// Wait after a round that did `done` units of work.
    fn pause_after(&self, done: usize) -> Duration;
    /// One round; returns how much it did. Errors are logged and the next
    /// round runs after the usual pause.
    async fn run_once(&self, services: &EventServices) -> Result<usize>;
}

/// The adapters and processors registered per marketplace.
#[derive(Clone, Default)]
pub struct Marketplaces {
    adapters: Adapters,
    processors: HashMap<Marketplace, Arc<dyn EventProcessor>>,
    workers: Vec<Arc<dyn MarketplaceWorker>>,
}

impl Marketplaces {
    /// Registers the adapter of a marketplace.
    pub fn with_adapter(
        mut self,
        marketplace: Marketplace,
        adapter: Arc<dyn AccountMarketplace>,
    ) -> Self {
        self.adapters.insert(marketplace, adapter);
        self
    }

    /// Registers the event processor of a marketplace.
    pub fn with_processor(
        mut self,
        marketplace: Marketplace,
        processor: Arc<dyn EventProcessor>,
    ) -> Self {
        self.processors.insert(marketplace, processor);
        self
    }

    /// Adds background work.
    pub fn with_worker(mut self, worker: Arc<dyn MarketplaceWorker>) -> Self {
        self.workers.push(worker);
        self
    }

    /// The registered background work.
    pub fn workers(&self) -> &[Arc<dyn MarketplaceWorker>] {
        &self.workers
    }

    /// The adapter of a marketplace, if one is registered.
    pub fn adapter(&self, marketplace: Marketplace) -> Option<&Arc<dyn AccountMarketplace>> {
        self.adapters.get(marketplace)
    }

    /// The registered adapters.
    pub fn adapters(&self) -> &Adapters {
        &self.adapters
    }

    /// The event processor of a marketplace, if one is registered.
    pub fn processor(&self, marketplace: Marketplace) -> Option<&Arc<dyn EventProcessor>> {
        self.processors.get(&marketplace)
    }
}
