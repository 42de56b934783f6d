//! Drivers run the provider's product: they create what a resource stands
//! for, issue and revoke its credentials, apply plan limits, suspend, resume,
//! tear down and measure usage. The catalog names each product's driver.
//!
//! Every driver method may be called more than once for the same resource
//! (the outbox retries), so each must be idempotent.

pub mod plugin;
pub mod postgres;
pub mod template;

use crate::model::ExternalId;
use async_trait::async_trait;
use marketbridge_catalog::{Plan, Product};
use marketbridge_core::ids::AccountId;
use marketbridge_core::{Error, Result};
use marketbridge_proto::common::v1 as common;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// A secret handed to the customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// Variable name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Per-environment values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment_overrides: BTreeMap<String, String>,
}

impl Secret {
    /// A plain secret.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            value: value.into(),
            environment_overrides: BTreeMap::new(),
        }
    }

    /// The secret as a production-only resource hands it out: without the
    /// development and preview values (Vercel no longer uses them there).
    pub fn production_values(&self) -> Self {
        let mut secret = self.clone();
        secret
            .environment_overrides
            .retain(|environment, _| environment == "production");
        secret
    }

    /// The protobuf form.
    pub fn to_proto(&self) -> common::Secret {
        common::Secret {
            name: self.name.clone(),
            value: self.value.clone(),
            environment_overrides: self.environment_overrides.clone(),
        }
    }
}

/// Everything a driver knows about the resource it works on.
#[derive(Debug, Clone, Copy)]
pub struct DriverContext<'a> {
    /// Resource id (`res_...`).
    pub resource_id: &'a str,
    /// Owning account.
    pub account_id: &'a str,
    /// Customer-chosen name.
    pub name: &'a str,
    /// The product.
    pub product: &'a Product,
    /// The plan in force.
    pub plan: &'a Plan,
    /// Customer configuration.
    pub metadata: &'a Json,
    /// What the driver noted about the resource earlier.
    pub state: &'a Json,
    /// The URLs of the customer's projects that sign in through the product
    /// (Vercel `protocolSettings.authentication.appUrls`), the full set.
    pub app_urls: &'a [marketbridge_proto::provisioning::v1::AppUrl],
}

/// A resource's credentials and notes, decided before it exists.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// Secrets returned to the marketplace at creation.
    pub secrets: Vec<Secret>,
    /// The driver's notes, kept with the resource.
    pub state: Json,
    /// True when the resource is usable at once; false to provision in the
    /// background.
    pub ready: bool,
    /// When not ready, how long to wait before provisioning, in seconds.
    pub delay_seconds: u64,
}

/// Where provisioning left the resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provisioned {
    /// Usable.
    Ready,
    /// Usable once the customer finishes setup.
    Onboarding,
}

/// New credentials.
#[derive(Debug, Clone, PartialEq)]
pub struct Rotation {
    /// The new secrets (all of them, or only the changed ones when
    /// `partial`).
    pub secrets: Vec<Secret>,
    /// True when the new secrets work now; false when the driver needs time
    /// and they are pushed to the marketplace later.
    pub sync: bool,
    /// True when only some secrets changed.
    pub partial: bool,
    /// Updated notes.
    pub state: Json,
}

/// A usage measurement taken by a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// Metric id from the catalog.
    pub metric_id: String,
    /// Quantity in the metric's unit.
    pub quantity: i64,
}

/// A resource the provider runs that an account may import (from
/// [`Driver::list_importable`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Importable {
    /// The provider's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its configuration.
    pub metadata: Json,
    /// Secrets issued for the marketplace.
    pub secrets: Vec<Secret>,
}

/// Runs one kind of product.
#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The name the catalog uses.
    fn name(&self) -> &'static str;
    /// Checks a catalog product this driver serves (its driver settings),
    /// so a broken catalog is refused at startup rather than at first use.
    fn check_product(&self, _product: &Product) -> Result<()> {
        Ok(())
    }
    /// Runs once when the provisioning service starts, with the catalog's
    /// products of this driver: checks and migrations of what the driver
    /// made before. An error is logged; the service starts anyway.
    async fn start(&self, _products: &[&Product]) -> Result<()> {
        Ok(())
    }
    /// How long a deleted resource is kept, suspended, before
    /// [`Driver::deprovision`] tears it down; 0 tears it down at once.
    fn deletion_grace_seconds(&self, _context: &DriverContext<'_>) -> u64 {
        0
    }
    /// Decides the secrets of a new resource. Must not have side effects
    /// beyond the returned values: the resource may never be created.
    async fn prepare(&self, context: &DriverContext<'_>) -> Result<Prepared>;
    /// Creates the resource with the prepared secrets.
    async fn provision(
        &self,
        context: &DriverContext<'_>,
        secrets: &[Secret],
    ) -> Result<Provisioned>;
    /// Applies the plan in `context` (limits) to a running resource.
    async fn apply_plan(&self, context: &DriverContext<'_>) -> Result<()>;
    /// Issues new credentials; the current ones keep working.
    async fn rotate(&self, context: &DriverContext<'_>, current: &[Secret]) -> Result<Rotation>;
    /// Finishes an asynchronous rotation (makes `secrets` work).
    async fn complete_rotation(
        &self,
        context: &DriverContext<'_>,
        secrets: &[Secret],
    ) -> Result<()>;
    /// Revokes credentials replaced by a rotation.
    async fn revoke(&self, context: &DriverContext<'_>, old: &[Secret]) -> Result<()>;
    /// Refuses access, keeping data.
    async fn suspend(&self, context: &DriverContext<'_>) -> Result<()>;
    /// Restores access.
    async fn resume(&self, context: &DriverContext<'_>) -> Result<()>;
    /// Tears the resource down for good.
    async fn deprovision(&self, context: &DriverContext<'_>) -> Result<()>;
    /// Measures usage now.
    async fn measure(&self, context: &DriverContext<'_>) -> Result<Vec<Measurement>>;
    /// The resources of `product` the account may import (the marketplace's
    /// import flow); none by default.
    async fn list_importable(
        &self,
        _product: &Product,
        _account_id: &AccountId,
        _marketplace_account_id: &ExternalId,
    ) -> Result<Vec<Importable>> {
        Ok(Vec::new())
    }
    /// What the resource's console understands beyond `help` and `info`,
    /// in one line for `help`; `None` when the driver has no console.
    fn console_help(&self) -> Option<&'static str> {
        None
    }
    /// Runs a console command with the resource's current `secrets`. Errors
    /// of the command itself (bad SQL) are output, not `Err`; `Err` is for
    /// when the console could not run at all.
    async fn console(
        &self,
        _context: &DriverContext<'_>,
        _secrets: &[Secret],
        _input: &str,
        _read_only: bool,
    ) -> Result<Vec<marketbridge_proto::provisioning::v1::OutputBlock>> {
        Err(Error::unprocessable("this product has no console"))
    }
}

/// The drivers available, by name.
#[derive(Clone, Default)]
pub struct Drivers {
    drivers: HashMap<String, Arc<dyn Driver>>,
}

impl Drivers {
    /// The built-in drivers.
    pub fn builtin() -> Self {
        Self::default().with(Arc::new(template::TemplateDriver))
    }

    /// Adds (or replaces) a driver.
    pub fn with(mut self, driver: Arc<dyn Driver>) -> Self {
        self.drivers.insert(driver.name().to_owned(), driver);
        self
    }

    /// A driver by name.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn Driver>> {
        self.drivers.get(name)
    }

    /// Names of every driver.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.drivers.keys().cloned().collect();
        names.sort();
        names
    }
}
