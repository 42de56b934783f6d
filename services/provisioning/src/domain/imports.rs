//! Importing resources the provider already runs (Vercel "Import existing
//! resources"): the provider registers what an account may import, the
//! account picks one, and it becomes a LINKED resource: recorded here first,
//! then registered with the marketplace (with its secrets) before the answer.
//! Linked resources are never billed through the marketplace and are
//! detached, not destroyed, when removed.

use super::ProvisioningDomain;
use super::resources::NewResource;
use crate::convert::{attributes, from_json, marketplace_of, resource_to_proto};
use crate::driver::{Prepared, Secret};
use crate::entity::{importable, resource, subscription};
use crate::marketplace::ResourceChange;
use crate::model::{ImportSource, ImportableId, Ownership, ProductId, ResourceStatus};
use marketbridge_core::ids::{AccountId, ResourceId, SubscriptionId};
use marketbridge_core::metadata::{json_to_metadata, metadata_to_json};
use marketbridge_core::{Error, Result, Validator};
use marketbridge_proto::provisioning::v1 as pb;
use marketbridge_storage::UnitOfWork;
use marketbridge_storage::db_error;
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::{Value as Json, json};

/// Attribute marking the subscription of a linked resource.
pub const OWNERSHIP_ATTRIBUTE: &str = "ownership";

fn row_id(account_id: &AccountId, importable_id: &ImportableId) -> String {
    format!("{account_id}:{importable_id}")
}

/// True when the subscription pays for a linked resource (never billed
/// through the marketplace).
pub(crate) fn is_linked_subscription(row: &subscription::Model) -> Result<bool> {
    Ok(attributes(row)?
        .get(OWNERSHIP_ATTRIBUTE)
        .is_some_and(|v| v == Ownership::Linked.as_str()))
}

fn to_proto(
    row: &importable::Model,
    imported: Option<&resource::Model>,
) -> Result<pb::ImportableResource> {
    let metadata: Json = from_json("importable_resources.metadata", &row.metadata)?;
    Ok(pb::ImportableResource {
        importable_id: row.importable_id.clone(),
        account_id: row.account_id.clone(),
        product_id: row.product_id.clone(),
        name: row.name.clone(),
        metadata: json_to_metadata("metadata", &metadata).ok(),
        source: row.source.as_str().to_owned(),
        imported_resource_id: imported.map(|r| r.id.clone()).unwrap_or_default(),
    })
}

impl ProvisioningDomain {
    /// Registers an importable resource; see `RegisterImportableResource`.
    pub async fn register_importable(
        &self,
        request: pb::RegisterImportableResourceRequest,
    ) -> Result<pb::ImportableResource> {
        let mut validator = Validator::new();
        let importable_id = ImportableId::parse("importableId", &request.importable_id);
        if let Err(error) = &importable_id {
            for field in error.fields() {
                validator.invalid(field.field.clone(), field.message.clone());
            }
        }
        validator.require("productId", &request.product_id);
        validator.require("name", &request.name);
        validator.max_len("name", &request.name, 128);
        if request.name.chars().any(char::is_control) {
            validator.invalid("name", "must not contain control characters");
        }
        if request.secrets.is_empty() {
            validator.invalid("secrets", "at least one secret is required");
        }
        for secret in &request.secrets {
            if secret.name.trim().is_empty() {
                validator.invalid("secrets", "every secret needs a name");
            }
        }
        validator.finish()?;
        let importable_id = importable_id?;
        let product = self
            .catalog
            .require_product("productId", &request.product_id)?;
        let metadata = metadata_to_json(request.metadata.as_ref());
        let selector = request
            .account
            .clone()
            .ok_or_else(|| Error::invalid_field("account", "is required"))?;
        let account = self.account(selector).await?;
        if !account.active {
            return Err(Error::conflict("the account is uninstalled"));
        }
        let secrets: Vec<Secret> = request
            .secrets
            .iter()
            .map(|s| Secret {
                name: s.name.clone(),
                value: s.value.clone(),
                environment_overrides: s.environment_overrides.clone(),
            })
            .collect();
        let id = row_id(&account.id, &importable_id);
        let now = self.now();
        let work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let stored = importable::Entity::find_by_id(id.clone())
            .lock_exclusive()
            .one(&*work)
            .await
            .map_err(db_error)?;
        let live_import = match &stored {
            Some(row) => self.live_import(&*work, row).await?,
            None => None,
        };
        if live_import.is_some() {
            return Err(Error::conflict(
                "this resource is imported; it cannot be replaced while it is",
            ));
        }
        let row = importable::Model {
            id: id.clone(),
            account_id: account.id.to_string(),
            importable_id: importable_id.to_string(),
            product_id: product.id.clone(),
            name: request.name.trim().to_owned(),
            metadata: if metadata.is_object() {
                metadata.to_string()
            } else {
                "{}".to_owned()
            },
            secrets: self.seal(&secrets)?,
            source: ImportSource::Registered,
            imported_resource_id: String::new(),
            created_at: stored.as_ref().map(|s| s.created_at).unwrap_or(now),
            updated_at: now,
        };
        if stored.is_some() {
            row.update_in(&*work).await?;
        } else {
            importable::Entity::insert(row.clone().into_active_model())
                .exec_without_returning(&*work)
                .await
                .map_err(db_error)?;
        }
        work.commit().await?;
        tracing::info!(account.id = %account.id, importable.id = %row.importable_id, product = %row.product_id, "importable resource registered");
        to_proto(&row, None)
    }

    /// The live linked resource an importable row was imported as.
    async fn live_import(
        &self,
        conn: &impl ConnectionTrait,
        row: &importable::Model,
    ) -> Result<Option<resource::Model>> {
        if row.imported_resource_id.is_empty() {
            return Ok(None);
        }
        let resource_id = crate::model::stored_id::<ResourceId>(
            "importable_resources.imported_resource_id",
            &row.imported_resource_id,
        )?;
        Ok(self
            .load_resource(conn, &resource_id)
            .await?
            .filter(|r| r.status != ResourceStatus::Uninstalled))
    }

    /// What an account may import; see `ListImportableResources`.
    pub async fn list_importable(
        &self,
        request: pb::ListImportableResourcesRequest,
    ) -> Result<pb::ListImportableResourcesResponse> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let product_id = Some(ProductId::new(&request.product_id)).filter(|p| !p.is_empty());
        self.refresh_plugin_importables(&account_id, product_id.as_ref())
            .await?;
        let mut query = importable::Entity::find()
            .filter(importable::Column::AccountId.eq(account_id.as_str()))
            .order_by_desc(importable::Column::Source)
            .order_by_asc(importable::Column::ImportableId)
            .limit(1000);
        if !request.product_id.is_empty() {
            query = query.filter(importable::Column::ProductId.eq(request.product_id.clone()));
        }
        let rows = query.all(&self.db).await.map_err(db_error)?;
        let mut resources = Vec::with_capacity(rows.len());
        for row in &rows {
            let imported = self.live_import(&self.db, row).await?;
            resources.push(to_proto(row, imported.as_ref())?);
        }
        Ok(pb::ListImportableResourcesResponse { resources })
    }

    /// Asks the plug-ins of the account's products what it may import and
    /// records the answers (with their secrets, encrypted), so an import
    /// works from what the customer was shown. A plug-in that fails is
    /// logged and skipped: the other resources stay importable.
    async fn refresh_plugin_importables(
        &self,
        account_id: &AccountId,
        product_id: Option<&ProductId>,
    ) -> Result<()> {
        let products: Vec<&marketbridge_catalog::Product> = self
            .catalog
            .products()
            .iter()
            .filter(|p| p.driver == "plugin")
            .filter(|p| product_id.is_none_or(|id| p.id == id.as_str()))
            .collect();
        if products.is_empty() {
            return Ok(());
        }
        let account = self.account_by_id(account_id).await?;
        for product in products {
            let driver = self.driver(&product.driver)?.clone();
            let listed = match driver
                .list_importable(product, &account.id, &account.external_id)
                .await
            {
                Ok(listed) => listed,
                Err(error) => {
                    tracing::warn!(product = %product.id, error = %error, "the plug-in could not list importable resources");
                    continue;
                }
            };
            for item in listed {
                let Ok(importable_id) = ImportableId::parse("id", &item.id) else {
                    tracing::warn!(product = %product.id, "the plug-in listed an importable resource without a valid id; ignored");
                    continue;
                };
                if item.secrets.is_empty() {
                    tracing::warn!(product = %product.id, "the plug-in listed an importable resource without secrets; ignored");
                    continue;
                }
                self.upsert_plugin_importable(&account.id, product, &importable_id, item)
                    .await?;
            }
        }
        Ok(())
    }

    async fn upsert_plugin_importable(
        &self,
        account_id: &AccountId,
        product: &marketbridge_catalog::Product,
        importable_id: &ImportableId,
        item: crate::driver::Importable,
    ) -> Result<()> {
        let id = row_id(account_id, importable_id);
        let now = self.now();
        let work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let stored = importable::Entity::find_by_id(id.clone())
            .lock_exclusive()
            .one(&*work)
            .await
            .map_err(db_error)?;
        if let Some(stored) = &stored
            && (stored.source != ImportSource::Plugin
                || self.live_import(&*work, stored).await?.is_some())
        {
            // Registered by the provider, or imported: kept as it is.
            return Ok(());
        }
        let name: String = item
            .name
            .chars()
            .filter(|c| !c.is_control())
            .take(128)
            .collect();
        let row = importable::Model {
            id,
            account_id: account_id.to_string(),
            importable_id: item.id.clone(),
            product_id: product.id.clone(),
            name: if name.trim().is_empty() {
                item.id.clone()
            } else {
                name
            },
            metadata: if item.metadata.is_object() {
                item.metadata.to_string()
            } else {
                "{}".to_owned()
            },
            secrets: self.seal(&item.secrets)?,
            source: ImportSource::Plugin,
            imported_resource_id: String::new(),
            created_at: stored.as_ref().map(|s| s.created_at).unwrap_or(now),
            updated_at: now,
        };
        if stored.is_some() {
            row.update_in(&*work).await?;
        } else {
            importable::Entity::insert(row.into_active_model())
                .exec_without_returning(&*work)
                .await
                .map_err(db_error)?;
        }
        work.commit().await
    }

    /// Imports a resource; see `ImportResource`.
    pub async fn import_resource(
        &self,
        request: pb::ImportResourceRequest,
    ) -> Result<pb::CreateResourceResponse> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let importable_id = ImportableId::parse("importableId", &request.importable_id)?;
        let account = self.account_by_id(&account_id).await?;
        if !account.active {
            return Err(
                Error::conflict("the account is uninstalled; it cannot import resources")
                    .with_user_message("This installation has been removed"),
            );
        }
        let id = row_id(&account.id, &importable_id);
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let mut found = importable::Entity::find_by_id(id)
            .lock_exclusive()
            .one(&*work)
            .await
            .map_err(db_error)?
            .filter(|r| request.product_id.is_empty() || r.product_id == request.product_id)
            .ok_or_else(|| Error::not_found("no such importable resource"))?;
        let row = match self.live_import(&*work, &found).await? {
            Some(existing) => {
                work.commit().await?;
                existing
            }
            None => {
                let row = self.insert_linked(&mut work, &account, &found).await?;
                found.imported_resource_id = row.id.clone();
                found.updated_at = self.now();
                found.update_in(&*work).await?;
                work.commit().await?;
                tracing::info!(resource.id = %row.id, importable.id = %found.importable_id, "linked resource recorded");
                row
            }
        };
        let secrets = self.open(&row.secrets)?;
        // Outside any transaction: the marketplace must know the resource
        // before the browser goes back to it. Repeating the call is an
        // upsert at the marketplace, so a retried import is safe.
        // Direct customers (no marketplace adapter) need no registration.
        let marketplace = marketplace_of(&row.marketplace)?;
        if let Some(adapter) = self.marketplaces.adapter(marketplace).cloned() {
            adapter
                .import_resource(&ResourceChange {
                    account_external_id: account.external_id.clone(),
                    resource: row.clone(),
                    secrets: Some(secrets.clone()),
                })
                .await?;
        }
        Ok(pb::CreateResourceResponse {
            resource: Some(resource_to_proto(&row)?),
            secrets: secrets.iter().map(Secret::to_proto).collect(),
        })
    }

    /// Detaches a linked resource being removed, in `conn`: it becomes
    /// importable again and nothing is torn down. Secrets a plug-in issued
    /// for the marketplace are revoked (a job calls the plug-in's `Revoke`);
    /// a resource the provider registered keeps its own credentials, which
    /// marketbridge did not create.
    pub(crate) async fn detach_in(
        &self,
        work: &mut UnitOfWork,
        row: &resource::Model,
    ) -> Result<()> {
        let state: Json = from_json("resources.driver_state", &row.driver_state)?;
        let from_plugin = state["source"] == ImportSource::Plugin.as_str();
        if from_plugin {
            let job = crate::model::ProvisioningJob::Detach(crate::model::ResourceJob::plain(
                &row.resource_id()?,
            ));
            work.enqueue(
                marketbridge_storage::outbox::NewJob::of(&job)?
                    .dedupe_key(format!("detach:{}", row.id)),
            )
            .await?;
        }
        importable::Entity::update_many()
            .col_expr(
                importable::Column::ImportedResourceId,
                sea_orm::sea_query::Expr::value(""),
            )
            .filter(importable::Column::ImportedResourceId.eq(row.id.clone()))
            .exec(&**work)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    /// Records a linked resource and its (never billed) subscription.
    async fn insert_linked(
        &self,
        work: &mut UnitOfWork,
        account: &super::AccountInfo,
        found: &importable::Model,
    ) -> Result<resource::Model> {
        let product = self.product(&ProductId::new(&found.product_id))?;
        let plan = product
            .plans
            .first()
            .ok_or_else(|| Error::unprocessable("the product has no plan"))?;
        let now = self.now();
        let resource_id = ResourceId::generate();
        let subscription_id = SubscriptionId::generate();
        let subscription = super::resources::resource_subscription(
            &subscription_id,
            account,
            &resource_id,
            product,
            plan,
            json!({ OWNERSHIP_ATTRIBUTE: Ownership::Linked.as_str() }).to_string(),
            now,
        );
        subscription::Entity::insert(subscription.clone().into_active_model())
            .exec_without_returning(&**work)
            .await
            .map_err(db_error)?;
        self.enqueue_billing_change(work, &subscription, None)?;
        let metadata: Json = from_json("importable_resources.metadata", &found.metadata)?;
        let new = NewResource {
            resource_id: &resource_id,
            account_id: &account.id,
            subscription_id: Some(&subscription_id),
            product,
            plan,
            name: &found.name,
            metadata: &metadata,
            marketplace: account.marketplace.as_str(),
            external_id: "",
            protocol_settings: "{}",
        };
        // The provider runs it: its secrets are the ones registered, its
        // notes say where it came from.
        let prepared = Prepared {
            secrets: self.open(&found.secrets)?,
            state: json!({
                "imported": found.importable_id,
                "source": found.source.as_str(),
            }),
            ready: true,
            delay_seconds: 0,
        };
        self.insert_resource(work, new, &prepared, Ownership::Linked)
            .await
    }
}
