//! The provisioning service's operations, independent of gRPC.

mod console;
mod entitlement;
mod imports;
mod resources;
mod subscriptions;
mod transfers;

pub(crate) use imports::is_linked_subscription;

use crate::convert::from_json;
use crate::driver::{Driver, DriverContext, Drivers, Secret};
use crate::entity::{resource, subscription};
use crate::marketplace::Marketplaces;
use crate::model::{
    BillingChangeJob, ExternalId, PlanId, ProductId, ProvisioningJob, ResourceJob, ResourceStatus,
    SubscriptionAsOf,
};
use crate::resource_cache::ResourceCache;
use chrono::{DateTime, Utc};
use marketbridge_catalog::{Catalog, Plan, Product};
use marketbridge_core::crypto::Cipher;
use marketbridge_core::ids::{AccountId, ResourceId, SubscriptionId};
use marketbridge_core::time::SharedClock;
use marketbridge_core::{Error, ErrorCode, Marketplace, Result};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{AccountSelector, RequestContext};
use marketbridge_rpc::AccountApi;
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::{NewJob, Outbox, truncate_micros};
use marketbridge_storage::{RowLocks, UnitOfWork, locked_in};
use sea_orm::sea_query::{Expr, ExprTrait, IntoCondition};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};
use serde_json::Value as Json;
use std::collections::HashMap;
use std::sync::Arc;

/// What provisioning knows of an account (from the account service).
#[derive(Debug, Clone)]
pub struct AccountInfo {
    /// Our id.
    pub id: AccountId,
    /// Its marketplace.
    pub marketplace: Marketplace,
    /// The marketplace's id.
    pub external_id: ExternalId,
    /// True while the account is not deleted.
    pub active: bool,
    /// True when its signup is approved or not required.
    pub signup_done: bool,
}

impl AccountInfo {
    fn from_proto(account: &account_pb::Account) -> Result<Self> {
        let reference = account.marketplace_ref.clone().unwrap_or_default();
        let signup = account_pb::SignupState::try_from(account.signup_state).unwrap_or_default();
        Ok(Self {
            id: AccountId::parse("account.id", &account.id)?,
            marketplace: Marketplace::from_proto("account.marketplace", reference.marketplace)?,
            external_id: ExternalId::new(reference.external_id),
            active: account.state == account_pb::AccountState::Active as i32,
            signup_done: matches!(
                signup,
                account_pb::SignupState::Approved | account_pb::SignupState::NotRequired
            ),
        })
    }
}

/// Most accounts whose marketplace reference [`AccountRefs`] keeps.
const ACCOUNT_REFS: usize = 4096;

/// The marketplace references (marketplace, and the account's id there) of
/// accounts provisioning has read. A reference never changes: the account
/// service creates an account under its reference, never rewrites either
/// column and never deletes the row (a purge keeps them), so a kept entry
/// is always right. Bounded: when full it starts again empty.
#[derive(Default)]
struct AccountRefs(std::sync::Mutex<HashMap<AccountId, (Marketplace, ExternalId)>>);

impl AccountRefs {
    fn get(&self, account_id: &AccountId) -> Option<(Marketplace, ExternalId)> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(account_id)
            .cloned()
    }

    fn remember(&self, info: &AccountInfo) {
        let mut refs = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if refs.len() >= ACCOUNT_REFS && !refs.contains_key(&info.id) {
            refs.clear();
        }
        refs.insert(
            info.id.clone(),
            (info.marketplace, info.external_id.clone()),
        );
    }
}

/// Turns of the rotations this process runs: rotations of one resource take
/// turns (a rotation reads the secrets, has the driver decide new ones, then
/// writes, and one that another overtook in between must start again).
/// Resources share a fixed number of turns by the hash of their id, so the
/// table never grows; two resources sharing one only wait for each other.
pub(crate) struct RotationTurns([tokio::sync::Mutex<()>; ROTATION_TURNS]);

/// How many turns [`RotationTurns`] holds.
const ROTATION_TURNS: usize = 64;

impl Default for RotationTurns {
    fn default() -> Self {
        Self(std::array::from_fn(|_| tokio::sync::Mutex::new(())))
    }
}

impl RotationTurns {
    /// Waits for the turn of `resource_id`'s rotations; the turn is held
    /// until the guard drops.
    pub(crate) async fn take(&self, resource_id: &ResourceId) -> tokio::sync::MutexGuard<'_, ()> {
        use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(resource_id.as_str());
        self.0[(hash % ROTATION_TURNS as u64) as usize].lock().await
    }
}

/// The provisioning service's state and operations.
#[derive(Clone)]
pub struct ProvisioningDomain {
    db: DatabaseConnection,
    clock: SharedClock,
    cipher: Cipher,
    outbox: Outbox,
    catalog: Arc<Catalog>,
    drivers: Drivers,
    marketplaces: Marketplaces,
    accounts: Arc<dyn AccountApi>,
    resource_cache: Arc<ResourceCache>,
    account_refs: Arc<AccountRefs>,
    rotation_turns: Arc<RotationTurns>,
}

pub(crate) fn context_key(context: Option<&RequestContext>) -> String {
    context
        .map(|c| c.idempotency_key.clone())
        .unwrap_or_default()
}

impl ProvisioningDomain {
    /// The domain over an open, migrated database.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        db: DatabaseConnection,
        clock: SharedClock,
        cipher: Cipher,
        outbox: Outbox,
        catalog: Arc<Catalog>,
        drivers: Drivers,
        marketplaces: Marketplaces,
        accounts: Arc<dyn AccountApi>,
    ) -> Self {
        let resource_cache = Arc::new(crate::resource_cache::new(
            &db,
            crate::resource_cache::DEFAULT_ENTRIES,
        ));
        Self {
            db,
            clock,
            cipher,
            outbox,
            catalog,
            drivers,
            marketplaces,
            accounts,
            resource_cache,
            account_refs: Arc::default(),
            rotation_turns: Arc::default(),
        }
    }

    /// The read cache of resource rows (see [`crate::resource_cache`]).
    pub fn resource_cache(&self) -> &Arc<ResourceCache> {
        &self.resource_cache
    }

    /// The database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The catalog.
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// The marketplace adapters.
    pub fn marketplaces(&self) -> &Marketplaces {
        &self.marketplaces
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        truncate_micros(self.clock.now())
    }

    /// The account behind `selector`, from the account service.
    pub async fn account(&self, selector: AccountSelector) -> Result<AccountInfo> {
        let account = self
            .accounts
            .get_account(account_pb::GetAccountRequest {
                account: Some(selector),
            })
            .await?;
        let info = AccountInfo::from_proto(&account)?;
        self.account_refs.remember(&info);
        Ok(info)
    }

    /// The account with our id `account_id`, from the account service.
    pub async fn account_by_id(&self, account_id: &AccountId) -> Result<AccountInfo> {
        self.account(AccountSelector::by_id(account_id.as_str()))
            .await
    }

    /// The account behind `selector`, creating a bare record when the
    /// marketplace announced a subscription before its account.
    pub(crate) async fn account_or_create(
        &self,
        marketplace: Marketplace,
        external_id: &ExternalId,
    ) -> Result<AccountInfo> {
        match self
            .account(AccountSelector::by_ref(
                proto_marketplace(marketplace),
                external_id.as_str(),
            ))
            .await
        {
            Err(error) if error.code() == ErrorCode::NotFound => {
                let account = self
                    .accounts
                    .upsert_account(account_pb::UpsertAccountRequest {
                        marketplace_ref: Some(marketbridge_proto::common::v1::MarketplaceRef::new(
                            proto_marketplace(marketplace),
                            external_id.as_str(),
                        )),
                        signup_required: matches!(
                            marketplace,
                            Marketplace::Google | Marketplace::Aws | Marketplace::Azure
                        ),
                        ..Default::default()
                    })
                    .await?;
                AccountInfo::from_proto(&account)
            }
            other => other,
        }
    }

    pub(crate) fn seal(&self, secrets: &[Secret]) -> Result<String> {
        let json =
            serde_json::to_string(secrets).map_err(|e| Error::internal(format!("secrets: {e}")))?;
        self.cipher.encrypt(&json)
    }

    pub(crate) fn open(&self, sealed: &str) -> Result<Vec<Secret>> {
        let json = self.cipher.decrypt(sealed)?;
        serde_json::from_str(json.expose())
            .map_err(|e| Error::internal(format!("stored secrets unreadable: {e}")))
    }

    pub(crate) fn product(&self, product_id: &ProductId) -> Result<&Product> {
        self.catalog.product(product_id.as_str()).ok_or_else(|| {
            Error::internal(format!(
                "product `{product_id}` is no longer in the catalog"
            ))
        })
    }

    pub(crate) fn plan<'a>(&self, product: &'a Product, plan_id: &PlanId) -> Result<&'a Plan> {
        product.plan(plan_id.as_str()).ok_or_else(|| {
            Error::internal(format!(
                "plan `{plan_id}` of `{}` is no longer in the catalog",
                product.id
            ))
        })
    }

    pub(crate) fn driver(&self, name: &str) -> Result<&Arc<dyn Driver>> {
        self.drivers
            .get(name)
            .ok_or_else(|| Error::internal(format!("no driver named `{name}`")))
    }

    /// The driver of a stored resource, with everything to build its context.
    pub(crate) fn driver_for(&self, row: &resource::Model) -> Result<ResourceDriver> {
        let product = self.product(&ProductId::new(&row.product_id))?.clone();
        let plan = self.plan(&product, &PlanId::new(&row.plan_id))?.clone();
        Ok(ResourceDriver {
            driver: self.driver(&row.driver)?.clone(),
            resource_id: row.id.clone(),
            account_id: row.account_id.clone(),
            name: row.name.clone(),
            product,
            plan,
            metadata: from_json("resources.metadata", &row.metadata)?,
            state: from_json("resources.driver_state", &row.driver_state)?,
            app_urls: crate::protocol::app_urls(&row.protocol_settings)?,
        })
    }

    /// Schedules telling billing about a subscription's version (with the
    /// inserts held for the commit: one job per version of the
    /// subscription, whoever asks). `resource_ids`: the subscription's live
    /// resources, when the caller knows them all (a new subscription and its
    /// resource); the job then carries what billing is told and runs without
    /// reading. Otherwise it reads the subscription when it runs.
    /// `resource_ids` is given only for a subscription this transaction
    /// creates.
    pub(crate) fn enqueue_billing_change(
        &self,
        work: &mut UnitOfWork,
        subscription: &subscription::Model,
        resource_ids: Option<Vec<String>>,
    ) -> Result<()> {
        let new_subscription = resource_ids.is_some();
        let job = ProvisioningJob::BillingChange(BillingChangeJob {
            subscription_id: subscription.subscription_id()?,
            as_of: resource_ids
                .map(|ids| billing_terms(subscription, ids))
                .transpose()?,
        });
        let job = NewJob::of(&job)?.dedupe_key(format!(
            "billing:{}:{}",
            subscription.id, subscription.version
        ));
        // A subscription this transaction creates has an id no job names
        // yet: its job may go to this process's worker at the commit.
        work.enqueue_at_commit(if new_subscription {
            job.key_is_new()
        } else {
            job
        });
        Ok(())
    }

    /// Schedules telling the marketplace a resource changed.
    pub(crate) async fn enqueue_notify(
        &self,
        work: &mut UnitOfWork,
        row: &resource::Model,
        push_secrets: bool,
    ) -> Result<()> {
        let job = ProvisioningJob::Notify(ResourceJob {
            resource_id: row.resource_id()?,
            push_secrets,
            sealed: None,
        });
        work.enqueue(NewJob::of(&job)?).await?;
        Ok(())
    }

    pub(crate) async fn load_resource(
        &self,
        conn: &impl ConnectionTrait,
        resource_id: &ResourceId,
    ) -> Result<Option<resource::Model>> {
        resource::Entity::find_by_id(resource_id.as_str().to_owned())
            .one(conn)
            .await
            .map_err(db_error)
    }

    /// A resource for reading only, from the resource cache when it holds
    /// the row (see [`crate::resource_cache`]), else from the database (and
    /// then kept). Never inside a write transaction: it reads the pool.
    pub(crate) async fn load_resource_cached(
        &self,
        resource_id: &ResourceId,
    ) -> Result<Option<Arc<resource::Model>>> {
        let cache = &self.resource_cache;
        let Some(ticket) = cache.ticket() else {
            return Ok(self
                .load_resource(&self.db, resource_id)
                .await?
                .map(Arc::new));
        };
        if let Some(row) = cache.get(resource_id.as_str(), ticket) {
            return Ok(Some(row));
        }
        let row = self
            .load_resource(&self.db, resource_id)
            .await?
            .map(Arc::new);
        if let Some(row) = &row {
            cache.insert([row.id.clone()], row.clone(), ticket);
        }
        Ok(row)
    }

    /// A subscription, locked when `conn` is a write transaction (its
    /// writers re-read it), a plain read on the pool.
    pub(crate) async fn load_subscription(
        &self,
        conn: &(impl ConnectionTrait + RowLocks),
        subscription_id: &SubscriptionId,
    ) -> Result<Option<subscription::Model>> {
        locked_in(
            subscription::Entity::find_by_id(subscription_id.as_str().to_owned()),
            conn,
        )
        .one(conn)
        .await
        .map_err(db_error)
    }

    pub(crate) async fn live_resources_of_subscription(
        &self,
        conn: &impl ConnectionTrait,
        subscription_id: &SubscriptionId,
    ) -> Result<Vec<resource::Model>> {
        live_of_subscription(subscription_id)
            .all(conn)
            .await
            .map_err(db_error)
    }

    /// A subscription with the ids of its live resources (oldest first), in
    /// one statement: a left join that gives the subscription's columns once
    /// per live resource (once with no id when it has none). On the pool: a
    /// job reads what it tells another service.
    pub async fn subscription_with_resource_ids(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<Option<(subscription::Model, Vec<String>)>> {
        let live_resources: sea_orm::RelationDef =
            resource::Entity::belongs_to(subscription::Entity)
                .from(resource::Column::SubscriptionId)
                .to(subscription::Column::Id)
                .on_condition(|resources, _| {
                    Expr::col((resources, resource::Column::Status))
                        .ne(ResourceStatus::Uninstalled)
                        .into_condition()
                })
                .into();
        let rows = subscription::Entity::find_by_id(subscription_id.as_str().to_owned())
            .join_rev(sea_orm::JoinType::LeftJoin, live_resources)
            .column_as(
                Expr::col((resource::Entity, resource::Column::Id)),
                LIVE_RESOURCE_ID,
            )
            .order_by_asc(Expr::col((resource::Entity, resource::Column::Id)))
            .into_model::<SubscriptionWithResource>()
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let mut rows = rows.into_iter();
        let Some(first) = rows.next() else {
            return Ok(None);
        };
        let ids = std::iter::once(first.resource_id)
            .chain(rows.map(|row| row.resource_id))
            .flatten()
            .collect();
        Ok(Some((first.subscription, ids)))
    }

    /// What billing is told of a subscription now: its latest state with
    /// its live resources, read in one statement (`None` for an unknown id).
    pub async fn billing_terms_now(
        &self,
        subscription_id: &SubscriptionId,
    ) -> Result<Option<SubscriptionAsOf>> {
        self.subscription_with_resource_ids(subscription_id)
            .await?
            .map(|(row, resource_ids)| billing_terms(&row, resource_ids))
            .transpose()
    }

    pub(crate) async fn resource_ids_of(
        &self,
        conn: &impl ConnectionTrait,
        subscription_id: &SubscriptionId,
    ) -> Result<Vec<String>> {
        // The ids alone: a row also carries its sealed secrets and metadata.
        live_of_subscription(subscription_id)
            .select_only()
            .column(resource::Column::Id)
            .into_tuple()
            .all(conn)
            .await
            .map_err(db_error)
    }

    /// The marketplace id of an account, for notifications.
    pub(crate) async fn account_external_id(
        &self,
        account_id: &AccountId,
    ) -> Result<(Marketplace, ExternalId)> {
        // A reference never changes (see `AccountRefs`): the account service
        // is asked once per account, not at every job.
        if let Some(known) = self.account_refs.get(account_id) {
            return Ok(known);
        }
        let info = self.account_by_id(account_id).await?;
        Ok((info.marketplace, info.external_id))
    }
}

/// What billing is told of a subscription in `row`'s state, whose live
/// resources are `resource_ids`. Linked (imported) resources are never
/// billed through the marketplace.
fn billing_terms(row: &subscription::Model, resource_ids: Vec<String>) -> Result<SubscriptionAsOf> {
    Ok(SubscriptionAsOf {
        account_id: row.owner_id()?,
        marketplace: row.marketplace.clone(),
        external_id: row.external_id.clone(),
        product_id: row.product_id.clone(),
        plan_id: row.plan_id.clone(),
        billable: row.state.is_usable() && !is_linked_subscription(row)?,
        ended: row.state.is_final(),
        usage_reporting_id: row.usage_reporting_id.clone(),
        resource_ids,
        effective_at: row.updated_at,
        version: row.version,
    })
}

/// The protobuf marketplace enum of a marketplace.
pub fn proto_marketplace(marketplace: Marketplace) -> marketbridge_proto::common::v1::Marketplace {
    marketbridge_proto::common::v1::Marketplace::try_from(marketplace.to_proto())
        .unwrap_or(marketbridge_proto::common::v1::Marketplace::Unspecified)
}

/// A resource's driver and the owned values its context borrows.
pub(crate) struct ResourceDriver {
    pub(crate) driver: Arc<dyn Driver>,
    resource_id: String,
    account_id: String,
    name: String,
    product: Product,
    plan: Plan,
    metadata: Json,
    pub(crate) state: Json,
    app_urls: Vec<marketbridge_proto::provisioning::v1::AppUrl>,
}

impl ResourceDriver {
    /// The context to call the driver with.
    pub(crate) fn context(&self) -> DriverContext<'_> {
        DriverContext {
            resource_id: &self.resource_id,
            account_id: &self.account_id,
            name: &self.name,
            product: &self.product,
            plan: &self.plan,
            metadata: &self.metadata,
            state: &self.state,
            app_urls: &self.app_urls,
        }
    }
}

/// The column [`ProvisioningDomain::subscription_with_resource_ids`] names
/// a live resource's id by.
const LIVE_RESOURCE_ID: &str = "live_resource_id";

/// A row of [`ProvisioningDomain::subscription_with_resource_ids`].
struct SubscriptionWithResource {
    subscription: subscription::Model,
    resource_id: Option<String>,
}

impl sea_orm::FromQueryResult for SubscriptionWithResource {
    fn from_query_result(
        row: &sea_orm::QueryResult,
        pre: &str,
    ) -> std::result::Result<Self, sea_orm::DbErr> {
        Ok(Self {
            subscription: subscription::Model::from_query_result(row, pre)?,
            resource_id: row.try_get(pre, LIVE_RESOURCE_ID)?,
        })
    }
}

/// A subscription's resources that are not uninstalled, oldest id first.
fn live_of_subscription(subscription_id: &SubscriptionId) -> sea_orm::Select<resource::Entity> {
    resource::Entity::find()
        .filter(resource::Column::SubscriptionId.eq(subscription_id.as_str()))
        .filter(resource::Column::Status.ne(ResourceStatus::Uninstalled))
        .order_by_asc(resource::Column::Id)
}
