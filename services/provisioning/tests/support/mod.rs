//! What the provisioning service's tests share: a service on a test
//! database with the example catalog and no other service reachable.

use marketbridge_catalog::Catalog;
use marketbridge_config::{Config, OutboxOptions};
use marketbridge_core::crypto::Cipher;
use marketbridge_core::ids::{AccountId, ResourceId, SubscriptionId};
use marketbridge_provisioning::driver::Drivers;
use marketbridge_provisioning::entity::resource;
use marketbridge_provisioning::model::{Ownership, ResourceStatus};
use marketbridge_provisioning::{ProvisioningDeps, ProvisioningServer, adapters};
use marketbridge_rpc::ServiceClients;
use std::sync::Arc;
use std::time::Duration;

const CATALOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../config/catalog.toml");

/// The drivers a default configuration has.
pub fn default_drivers() -> Drivers {
    adapters::drivers(&Config::default()).unwrap()
}

/// A provisioning service on `url` with `drivers`. The account and billing
/// services are never called by what these tests do (no resource is
/// created through the API), so their URLs lead nowhere.
pub async fn open(url: &str, cipher: &Cipher, drivers: Drivers) -> ProvisioningServer {
    let config = Config::default();
    let clients = ServiceClients::connect(
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        "http://127.0.0.1:1",
        &marketbridge_rpc::ClientCredentials::of_set(&config),
        Duration::from_secs(1),
    )
    .unwrap();
    let deps = ProvisioningDeps {
        clock: marketbridge_core::time::system_clock(),
        cipher: cipher.clone(),
        catalog: Arc::new(Catalog::load(CATALOG).unwrap()),
        drivers,
        marketplaces: Default::default(),
        accounts: Arc::new(clients.account),
        billing: None,
        usage_interval: Duration::ZERO,
    };
    ProvisioningServer::open(url, &OutboxOptions::default(), deps)
        .await
        .unwrap()
}

/// A resource row of product `database` (template driver) owned by
/// `account`, with no secrets yet, in `status`.
pub fn resource_row(
    id: &ResourceId,
    account: &AccountId,
    status: ResourceStatus,
    cipher: &Cipher,
) -> resource::Model {
    let now = marketbridge_storage::db::truncate_micros(chrono::Utc::now());
    resource::Model {
        id: id.to_string(),
        account_id: account.to_string(),
        subscription_id: SubscriptionId::generate().into_string(),
        product_id: "database".into(),
        plan_id: "free".into(),
        name: "first".into(),
        metadata: r#"{"region":"iad1"}"#.into(),
        status,
        status_message: String::new(),
        marketplace: "vercel".into(),
        external_id: String::new(),
        connections: "[]".into(),
        secrets: cipher.encrypt("[]").unwrap(),
        secrets_version: 1,
        previous_secrets: None,
        previous_secrets_expire_at: None,
        driver: "template".into(),
        driver_state: r#"{"username":"u"}"#.into(),
        created_at: now,
        updated_at: now,
        deleted_at: None,
        ownership: Ownership::Owned,
        protocol_settings: "{}".into(),
        production_only: false,
    }
}
