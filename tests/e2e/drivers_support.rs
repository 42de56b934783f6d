//! What the driver tests share: direct accounts, catalogs written to a
//! temporary file, and a slice of the real PostgreSQL server whose databases
//! and roles are dropped when the test ends.

#![allow(dead_code)]

use crate::support::TestSet;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{Marketplace, MarketplaceRef, RequestContext, Secret};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
pub use marketbridge_storage::testing::PostgresSandbox;

/// A request context with an idempotency key.
pub fn context(key: &str) -> Option<RequestContext> {
    Some(RequestContext {
        idempotency_key: key.to_owned(),
        actor: None,
    })
}

/// An account created directly (no marketplace), signup done.
pub async fn direct_account(test: &TestSet, external_id: &str) -> account_pb::Account {
    let mut accounts = test.set.clients.account.clone();
    accounts
        .upsert_account(account_pb::UpsertAccountRequest {
            marketplace_ref: Some(MarketplaceRef::new(Marketplace::Direct, external_id)),
            display_name: format!("Team {external_id}"),
            ..Default::default()
        })
        .await
        .expect("account upsert")
        .into_inner()
}

/// The secret called `name`.
pub fn secret<'a>(secrets: &'a [Secret], name: &str) -> &'a str {
    secrets
        .iter()
        .find(|s| s.name == name)
        .map(|s| s.value.as_str())
        .unwrap_or_else(|| panic!("no secret {name}"))
}

/// A resource as provisioning describes it now.
pub async fn resource(test: &TestSet, resource_id: &str) -> provisioning_pb::Resource {
    let mut provisioning = test.set.clients.provisioning.clone();
    provisioning
        .get_resource(provisioning_pb::GetResourceRequest {
            resource_id: resource_id.to_owned(),
            ..Default::default()
        })
        .await
        .expect("get resource")
        .into_inner()
}

/// The current secrets of a resource.
pub async fn current_secrets(test: &TestSet, resource_id: &str) -> Vec<Secret> {
    let mut provisioning = test.set.clients.provisioning.clone();
    provisioning
        .get_resource_secrets(provisioning_pb::GetResourceSecretsRequest {
            resource_id: resource_id.to_owned(),
        })
        .await
        .expect("get secrets")
        .into_inner()
        .secrets
}

/// A catalog file that lives as long as the value.
pub struct CatalogFile {
    folder: tempfile::TempDir,
}

impl CatalogFile {
    /// Writes `text` as a catalog.
    pub fn new(text: &str) -> CatalogFile {
        let folder = tempfile::tempdir().expect("temporary folder");
        std::fs::write(folder.path().join("catalog.toml"), text).expect("write the catalog");
        CatalogFile { folder }
    }

    /// Its path.
    pub fn path(&self) -> String {
        self.folder
            .path()
            .join("catalog.toml")
            .display()
            .to_string()
    }
}
