//! The account service's operations, independent of gRPC.
//!
//! Every write is one unit of work (`marketbridge_storage::UnitOfWork`):
//! the idempotency check, the transaction, the row changes and the jobs they
//! cause. Changes of an account's lifecycle come from the pure state machine
//! in [`crate::lifecycle`] and are applied here, in [`AccountDomain::apply`].

use crate::account_cache::AccountCache;
use crate::adapter::{AccountSnapshot, Adapters};
use crate::convert::{
    MAX_EXTERNAL_ID, StoredPerson, account_key, account_to_proto, event_to_proto, from_json,
    marketplace_of, signup_from_proto, to_json,
};
use crate::entity::{account, event};
use crate::lifecycle::{self, Deletion, Effect, Event, Lifecycle, Outcome, Refusal};
use crate::model::{AccountJob, AccountKey, AccountTask, EventStatus, EventTask, ExternalId};

pub mod credentials;
pub mod purchases;
use chrono::{DateTime, Utc};
use marketbridge_core::crypto::{Cipher, SecretString};
use marketbridge_core::ids::{AccountId, EventId};
use marketbridge_core::time::{SharedClock, from_optional_timestamp};
use marketbridge_core::{Error, ErrorCode, Marketplace, Result, Validator};
use marketbridge_proto::account::v1 as pb;
use marketbridge_proto::common::v1::{AccountSelector, MarketplaceRef, Person, RequestContext};
use marketbridge_storage::outbox::{NewJob, Outbox, truncate_micros};
use marketbridge_storage::paging::Page;
use marketbridge_storage::{
    Call, RowLocks, UnitOfWork, WriteTxn, db_error, idempotency, locked_in, unit_of_work,
};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most people remembered per account.
const MAX_PEOPLE: usize = 50;

/// The account service's state and operations.
#[derive(Clone)]
pub struct AccountDomain {
    db: DatabaseConnection,
    clock: SharedClock,
    cipher: Cipher,
    outbox: Outbox,
    adapters: Adapters,
    account_cache: Arc<AccountCache>,
}

fn context_key(context: Option<&RequestContext>) -> &str {
    context
        .map(|c| c.idempotency_key.as_str())
        .unwrap_or_default()
}

/// Writes the whole row back, in a write transaction: its commit empties the
/// account cache ([`crate::account_cache`]).
pub(crate) async fn save(conn: &WriteTxn, row: &account::Model) -> Result<()> {
    row.clone()
        .into_active_model()
        .reset_all()
        .update(conn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The lifecycle a row is in.
fn lifecycle_of(row: &account::Model) -> Lifecycle {
    Lifecycle {
        account: row.state,
        signup: row.signup_state,
        finalized: row.finalized_at.is_some(),
    }
}

/// The answer to a refused lifecycle event.
fn refused(refusal: Refusal) -> Error {
    match refusal {
        Refusal::SignupOfDeletedAccount => {
            Error::conflict("the account is deleted; it cannot sign up")
        }
        Refusal::SignupAlreadyAccepted => Error::new(
            ErrorCode::Unprocessable,
            "the account's signup was already accepted; its contact changes only through the account itself",
        ),
        Refusal::NoSignupToReject => Error::conflict("this account has no signup to reject"),
        Refusal::FinalizingActiveAccount => {
            Error::conflict("only a deleted account can be finalized")
        }
    }
}

impl AccountDomain {
    /// The domain over an open, migrated database.
    pub fn new(
        db: DatabaseConnection,
        clock: SharedClock,
        cipher: Cipher,
        outbox: Outbox,
        adapters: Adapters,
    ) -> Self {
        let account_cache = Arc::new(crate::account_cache::new(
            &db,
            crate::account_cache::DEFAULT_ENTRIES,
        ));
        Self {
            db,
            clock,
            cipher,
            outbox,
            adapters,
            account_cache,
        }
    }

    /// The read cache of accounts (see [`crate::account_cache`]).
    pub fn account_cache(&self) -> &Arc<AccountCache> {
        &self.account_cache
    }

    /// The database.
    pub fn db(&self) -> &DatabaseConnection {
        &self.db
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The registered marketplace adapters.
    pub fn adapters(&self) -> &Adapters {
        &self.adapters
    }

    fn now(&self) -> DateTime<Utc> {
        truncate_micros(self.clock.now())
    }

    /// Finds an account by selector.
    pub async fn find(
        &self,
        conn: &(impl ConnectionTrait + RowLocks),
        selector: Option<&AccountSelector>,
    ) -> Result<Option<account::Model>> {
        self.find_key(conn, &account_key(selector)?).await
    }

    /// Finds an account by our id or the marketplace's. Locked in a write
    /// transaction: writers re-read the row they change (`FOR UPDATE` on
    /// PostgreSQL; SQLite write transactions are serial); a plain read on
    /// the pool.
    pub async fn find_key(
        &self,
        conn: &(impl ConnectionTrait + RowLocks),
        key: &AccountKey,
    ) -> Result<Option<account::Model>> {
        match key {
            AccountKey::Id(id) => locked_in(account::Entity::find_by_id(id.as_str()), conn)
                .one(conn)
                .await
                .map_err(db_error),
            AccountKey::Ref(marketplace, external_id) => {
                self.find_by_ref(conn, *marketplace, external_id).await
            }
        }
    }

    async fn find_by_ref(
        &self,
        conn: &(impl ConnectionTrait + RowLocks),
        marketplace: Marketplace,
        external_id: &ExternalId,
    ) -> Result<Option<account::Model>> {
        let query = account::Entity::find()
            .filter(account::Column::Marketplace.eq(marketplace.as_str()))
            .filter(account::Column::ExternalId.eq(external_id.as_str()));
        locked_in(query, conn).one(conn).await.map_err(db_error)
    }

    /// Finds an account or answers NOT_FOUND.
    pub async fn require(
        &self,
        conn: &(impl ConnectionTrait + RowLocks),
        account: &AccountKey,
    ) -> Result<account::Model> {
        self.find_key(conn, account)
            .await?
            .ok_or_else(|| Error::not_found("account not found"))
    }

    /// Loads an account by our id.
    pub async fn by_id(&self, account_id: &AccountId) -> Result<account::Model> {
        account::Entity::find_by_id(account_id.as_str())
            .one(&self.db)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::not_found(format!("account {account_id} not found")))
    }

    /// Writes `row` back in a transaction of its own: a write transaction,
    /// as every write of `accounts` is, so the account cache (here and, on
    /// PostgreSQL, at every replica) forgets what it held.
    pub(crate) async fn save_alone(&self, row: &account::Model) -> Result<()> {
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        save(&txn, row).await?;
        txn.commit().await.map_err(db_error)
    }

    /// Applies a lifecycle transition to `row` and enqueues the jobs it
    /// causes: the one place where lifecycle effects become rows and jobs.
    /// The caller saves the row.
    async fn apply(
        &self,
        work: &mut UnitOfWork,
        row: &mut account::Model,
        (next, effects): Outcome,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let account_id = row.account_id()?;
        row.state = next.account;
        row.signup_state = next.signup;
        for effect in effects {
            let job = match effect {
                Effect::Reactivate => {
                    row.deletion_requested_at = None;
                    row.finalized_at = None;
                    row.purged = false;
                    continue;
                }
                Effect::ClearSignupReason => {
                    row.signup_reason.clear();
                    continue;
                }
                Effect::RecordSignupReason(reason) => {
                    row.signup_reason = reason;
                    continue;
                }
                Effect::RecordDeletion { reason } => {
                    row.deletion_requested_at = Some(now);
                    if !reason.is_empty() {
                        let mut attributes: BTreeMap<String, String> =
                            from_json("attributes", &row.attributes)?;
                        attributes.insert("deletion_reason".into(), reason);
                        row.attributes = to_json(&attributes);
                    }
                    continue;
                }
                Effect::RecordFinalization => {
                    row.finalized_at = Some(now);
                    continue;
                }
                Effect::DropCredential => {
                    row.credential = None;
                    continue;
                }
                Effect::Purge => {
                    if !row.purged {
                        purge(row);
                    }
                    // Stored answers about the account carry its people too.
                    idempotency::purge_subject(&**work, &row.id).await?;
                    continue;
                }
                Effect::ApproveAtMarketplace => {
                    NewJob::of(&AccountJob::ApproveSignup(AccountTask::new(&account_id)))?
                }
                Effect::RejectAtMarketplace { reason } => NewJob::of(&AccountJob::RejectSignup(
                    AccountTask::with_reason(&account_id, &reason),
                ))?,
                Effect::ResetAtMarketplace => {
                    NewJob::of(&AccountJob::Reset(AccountTask::new(&account_id)))?
                }
                Effect::NotifyApproved => {
                    NewJob::of(&AccountJob::NotifyApproved(AccountTask::new(&account_id)))?
                }
                Effect::EndSubscriptions { reason } => NewJob::of(&AccountJob::EndSubscriptions(
                    AccountTask::with_reason(&account_id, &reason),
                ))?
                .dedupe_key(format!("end-subscriptions:{account_id}")),
            };
            work.enqueue(job).await?;
        }
        Ok(())
    }

    /// Creates or updates an account from a marketplace's description.
    pub async fn upsert(&self, request: pb::UpsertAccountRequest) -> Result<pb::Account> {
        let (marketplace, external_id) = crate::convert::parse_marketplace_ref(
            "marketplaceRef",
            request.marketplace_ref.as_ref(),
        )?;
        let mut validator = Validator::new();
        validator.max_len("displayName", &request.display_name, 256);
        validator.max_len("url", &request.url, 2048);
        for (index, terms) in request.accepted_terms.iter().enumerate() {
            validator.require(
                &format!("acceptedTerms[{index}].policyId"),
                &terms.policy_id,
            );
        }
        if let Some(credential) = &request.credential {
            validator.require("credential.accessToken", &credential.access_token);
        }
        validator.finish()?;
        let update_time = from_optional_timestamp(
            "marketplaceUpdateTime",
            request.marketplace_update_time.as_ref(),
        )?
        .map(truncate_micros);
        let marketplace_signup = pb::SignupState::try_from(request.marketplace_signup_state)
            .ok()
            .and_then(signup_from_proto);
        let mut terms = BTreeMap::new();
        for accepted in &request.accepted_terms {
            let at =
                from_optional_timestamp("acceptedTerms.acceptedAt", accepted.accepted_at.as_ref())?
                    .unwrap_or_else(|| self.now());
            terms.insert(accepted.policy_id.trim().to_owned(), truncate_micros(at));
        }
        let sealed_credential = request
            .credential
            .as_ref()
            .map(|c| {
                self.cipher
                    .encrypt(&c.access_token)
                    .map(|sealed| (sealed, c.token_type.clone()))
            })
            .transpose()?;

        let key = context_key(request.context.as_ref()).to_owned();
        let call =
            Call::new("account.UpsertAccount", &key, &request, self.now()).sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let now = self.now();
        let existing = self.find_by_ref(&*work, marketplace, &external_id).await?;
        let actor = request
            .context
            .as_ref()
            .and_then(|c| c.actor.as_ref())
            .map(StoredPerson::from_proto);

        let row = match existing {
            Some(existing) => {
                if let (Some(stored), Some(incoming)) =
                    (existing.marketplace_update_time, update_time)
                    && incoming < stored
                {
                    tracing::info!(account.id = %existing.id, "ignoring a stale account description");
                    let response = account_to_proto(&existing)?;
                    return work.finish(response).await;
                }
                let mut row = existing.clone();
                self.apply_upsert(&mut row, &request, &terms, actor.as_ref(), now)?;
                if let Some((sealed, token_type)) = &sealed_credential {
                    row.credential = Some(sealed.clone());
                    row.credential_type = token_type.clone();
                    // A new credential from the marketplace means it knows
                    // the account again.
                    row.marketplace_gone_at = None;
                    row.marketplace_gone_reason = None;
                }
                if let Some(time) = update_time {
                    row.marketplace_update_time = Some(time);
                }
                let outcome = lifecycle::transition(
                    lifecycle_of(&existing),
                    Event::Described {
                        reported: marketplace_signup,
                    },
                )
                .map_err(refused)?;
                self.apply(&mut work, &mut row, outcome, now).await?;
                save(&work, &row).await?;
                row
            }
            None => {
                let (start, effects) =
                    lifecycle::created(marketplace_signup, request.signup_required);
                let mut row = account::Model {
                    id: AccountId::generate().into_string(),
                    marketplace: marketplace.as_str().to_owned(),
                    external_id: external_id.as_str().to_owned(),
                    display_name: String::new(),
                    url: String::new(),
                    contact: to_json(&StoredPerson::default()),
                    people: "[]".to_owned(),
                    company: String::new(),
                    state: start.account,
                    signup_state: start.signup,
                    signup_reason: String::new(),
                    accepted_terms: "{}".to_owned(),
                    scopes: "[]".to_owned(),
                    credential: sealed_credential.as_ref().map(|(sealed, _)| sealed.clone()),
                    credential_type: sealed_credential
                        .as_ref()
                        .map(|(_, t)| t.clone())
                        .unwrap_or_default(),
                    marketplace_state: String::new(),
                    marketplace_update_time: update_time,
                    attributes: "{}".to_owned(),
                    created_at: now,
                    updated_at: now,
                    deletion_requested_at: None,
                    finalized_at: None,
                    purged: false,
                    previous_credential: None,
                    credential_rotated_at: None,
                    credential_rotation_id: None,
                    marketplace_gone_at: None,
                    marketplace_gone_reason: None,
                };
                self.apply_upsert(&mut row, &request, &terms, actor.as_ref(), now)?;
                self.apply(&mut work, &mut row, (start, effects), now)
                    .await?;
                account::Entity::insert(row.clone().into_active_model())
                    .on_conflict(
                        OnConflict::columns([
                            account::Column::Marketplace,
                            account::Column::ExternalId,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .exec_without_returning(&*work)
                    .await
                    .map_err(db_error)?;
                let stored = self
                    .find_by_ref(&*work, marketplace, &external_id)
                    .await?
                    .ok_or_else(|| Error::unavailable("account was created concurrently; retry"))?;
                if stored.id != row.id {
                    return Err(Error::unavailable(
                        "account was created concurrently; retry",
                    ));
                }
                tracing::info!(account.id = %row.id, marketplace = %marketplace, "account created");
                row
            }
        };
        let response = account_to_proto(&row)?;
        work.concerning(&row.id);
        work.finish(response).await
    }

    fn apply_upsert(
        &self,
        row: &mut account::Model,
        request: &pb::UpsertAccountRequest,
        terms: &BTreeMap<String, DateTime<Utc>>,
        actor: Option<&StoredPerson>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if !request.display_name.trim().is_empty() {
            row.display_name = request.display_name.trim().to_owned();
        }
        if !request.url.trim().is_empty() {
            row.url = request.url.trim().to_owned();
        }
        if let Some(contact) = &request.contact {
            let contact = StoredPerson::from_proto(contact);
            if !contact.is_empty() {
                row.contact = to_json(&contact);
            }
        }
        if !terms.is_empty() {
            let mut stored: BTreeMap<String, DateTime<Utc>> =
                from_json("accepted_terms", &row.accepted_terms)?;
            for (policy, at) in terms {
                let keep_newer = stored.get(policy).is_some_and(|existing| existing >= at);
                if !keep_newer {
                    stored.insert(policy.clone(), *at);
                }
            }
            row.accepted_terms = to_json(&stored);
        }
        if !request.scopes.is_empty() {
            row.scopes = to_json(&request.scopes);
        }
        if !request.marketplace_state.is_empty() {
            row.marketplace_state = request.marketplace_state.clone();
        }
        if !request.attributes.is_empty() {
            let mut attributes: BTreeMap<String, String> =
                from_json("attributes", &row.attributes)?;
            attributes.extend(request.attributes.clone());
            row.attributes = to_json(&attributes);
        }
        if let Some(actor) = actor.filter(|a| !a.is_empty()) {
            remember_person(row, actor, now)?;
        }
        row.updated_at = now;
        Ok(())
    }

    /// One account, from the account cache when it holds it (see
    /// [`crate::account_cache`]), else from the database (and then kept).
    pub async fn get(&self, account: &AccountKey) -> Result<pb::Account> {
        let cache = &self.account_cache;
        let ticket = cache.ticket();
        if let Some(ticket) = ticket
            && let Some(found) = cache.get(&crate::account_cache::key(account), ticket)
        {
            return Ok(found.as_ref().clone());
        }
        let row = self.require(&self.db, account).await?;
        let found = account_to_proto(&row)?;
        if let Some(ticket) = ticket {
            cache.insert(
                crate::account_cache::keys_of(&row)?,
                Arc::new(found.clone()),
                ticket,
            );
        }
        Ok(found)
    }

    /// A page of accounts, newest first.
    pub async fn list(&self, request: pb::ListAccountsRequest) -> Result<pb::ListAccountsResponse> {
        let page = Page::from_request(request.page.as_ref());
        let mut query = account::Entity::find()
            .order_by_desc(account::Column::Id)
            .limit(page.fetch_limit());
        if request.marketplace != 0 {
            let marketplace = Marketplace::from_proto("marketplace", request.marketplace)?;
            query = query.filter(account::Column::Marketplace.eq(marketplace.as_str()));
        }
        if let Some(state) = pb::AccountState::try_from(request.state)
            .ok()
            .and_then(crate::convert::account_state_from_proto)
        {
            query = query.filter(account::Column::State.eq(state));
        }
        if let Some(after) = &page.after {
            query = query.filter(account::Column::Id.lt(after.clone()));
        }
        let rows = query.all(&self.db).await.map_err(db_error)?;
        let (rows, next) = page.finish(rows, |row| row.id.clone());
        Ok(pb::ListAccountsResponse {
            accounts: rows.iter().map(account_to_proto).collect::<Result<_>>()?,
            page: Some(next),
        })
    }

    /// Re-reads an account from its marketplace and applies what it says.
    pub async fn refresh(&self, account: &AccountKey) -> Result<pb::Account> {
        let row = self.require(&self.db, account).await?;
        self.refresh_row(row).await
    }

    /// Re-reads a loaded account from its marketplace.
    pub async fn refresh_row(&self, row: account::Model) -> Result<pb::Account> {
        let marketplace = marketplace_of(&row.marketplace)?;
        let account_id = row.account_id()?;
        let adapter = self.adapters.get(marketplace).ok_or_else(|| {
            Error::unprocessable(format!(
                "accounts of marketplace {marketplace} cannot be refreshed"
            ))
        })?;
        let credential = self.call_secret(&row).await?;
        let fetched = match adapter.fetch(&row, credential.as_ref()).await {
            Err(error) if adapter.is_gone(&error) => {
                self.record_gone(&account_id, error.message()).await?;
                return Err(error);
            }
            fetched => fetched?,
        };
        match fetched {
            Some(snapshot) => self.apply_snapshot(&account_id, snapshot).await,
            None => {
                tracing::info!(account.id = %row.id, "the marketplace no longer knows the account");
                let response = self
                    .delete(
                        &AccountKey::Id(account_id),
                        pb::DeleteAccountRequest {
                            account: Some(AccountSelector::by_id(&row.id)),
                            reason: "deleted at the marketplace".into(),
                            finalized: true,
                            purge: true,
                            end_subscriptions: true,
                            ..Default::default()
                        },
                    )
                    .await?;
                response
                    .account
                    .ok_or_else(|| Error::internal("delete returned no account"))
            }
        }
    }

    /// Applies what the marketplace said about an account (a refresh).
    pub async fn apply_snapshot(
        &self,
        account_id: &AccountId,
        snapshot: AccountSnapshot,
    ) -> Result<pb::Account> {
        let row = self.by_id(account_id).await?;
        let mut request = pb::UpsertAccountRequest {
            marketplace_ref: Some(MarketplaceRef::new(
                pb_marketplace(marketplace_of(&row.marketplace)?),
                row.external_id.clone(),
            )),
            display_name: snapshot.display_name.unwrap_or_default(),
            url: snapshot.url.unwrap_or_default(),
            contact: snapshot.contact,
            marketplace_state: snapshot.marketplace_state,
            marketplace_update_time: snapshot
                .update_time
                .map(marketbridge_core::time::to_timestamp),
            attributes: snapshot.attributes.into_iter().collect(),
            ..Default::default()
        };
        if let Some(signup) = snapshot.signup {
            request.marketplace_signup_state = signup as i32;
        }
        self.upsert(request).await
    }

    fn credential_of(&self, row: &account::Model) -> Result<Option<SecretString>> {
        row.credential
            .as_deref()
            .map(|sealed| self.cipher.decrypt(sealed))
            .transpose()
    }

    /// Records the customer's signup and starts the marketplace approval.
    pub async fn approve_signup(
        &self,
        account: &AccountKey,
        request: pb::ApproveSignupRequest,
    ) -> Result<pb::Account> {
        let key = context_key(request.context.as_ref()).to_owned();
        let mut validator = Validator::new();
        if let Some(person) = &request.person {
            validator.max_len("person.name", &person.name, 256);
            validator.max_len("person.email", &person.email, 320);
            if !person.email.is_empty() && !person.email.contains('@') {
                validator.invalid("person.email", "is not an e-mail address");
            }
        }
        validator.max_len("company", &request.company, 256);
        validator.finish()?;
        let call =
            Call::new("account.ApproveSignup", &key, &request, self.now()).sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let now = self.now();
        let mut row = self.require(&*work, account).await?;
        let outcome =
            lifecycle::transition(lifecycle_of(&row), Event::SignupSubmitted).map_err(refused)?;
        if let Some(person) = request
            .person
            .as_ref()
            .map(StoredPerson::from_proto)
            .filter(|p| !p.is_empty())
        {
            row.contact = to_json(&person);
            remember_person(&mut row, &person, now)?;
        }
        if !request.company.trim().is_empty() {
            row.company = request.company.trim().to_owned();
            if row.display_name.is_empty() {
                row.display_name = row.company.clone();
            }
        }
        self.apply(&mut work, &mut row, outcome, now).await?;
        row.updated_at = now;
        save(&work, &row).await?;
        work.concerning(&row.id);
        work.finish(account_to_proto(&row)?).await
    }

    /// Rejects the account's signup at the marketplace.
    pub async fn reject_signup(
        &self,
        account: &AccountKey,
        request: pb::RejectSignupRequest,
    ) -> Result<pb::Account> {
        let mut validator = Validator::new();
        validator.max_len("reason", &request.reason, 256);
        validator.finish()?;
        let key = context_key(request.context.as_ref()).to_owned();
        let call =
            Call::new("account.RejectSignup", &key, &request, self.now()).sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let now = self.now();
        let mut row = self.require(&*work, account).await?;
        let event = Event::SignupRejected {
            reason: request.reason.clone(),
        };
        let outcome = lifecycle::transition(lifecycle_of(&row), event).map_err(refused)?;
        self.apply(&mut work, &mut row, outcome, now).await?;
        row.updated_at = now;
        save(&work, &row).await?;
        work.concerning(&row.id);
        work.finish(account_to_proto(&row)?).await
    }

    /// Resets the account at the marketplace.
    pub async fn reset(
        &self,
        account: &AccountKey,
        request: pb::ResetAccountRequest,
    ) -> Result<pb::Account> {
        let key = context_key(request.context.as_ref()).to_owned();
        let call =
            Call::new("account.ResetAccount", &key, &request, self.now()).sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let now = self.now();
        let mut row = self.require(&*work, account).await?;
        let outcome = lifecycle::transition(lifecycle_of(&row), Event::Reset).map_err(refused)?;
        self.apply(&mut work, &mut row, outcome, now).await?;
        row.updated_at = now;
        save(&work, &row).await?;
        work.concerning(&row.id);
        work.finish(account_to_proto(&row)?).await
    }

    /// Soft-deletes an account; purges personal data when asked.
    pub async fn delete(
        &self,
        account: &AccountKey,
        request: pb::DeleteAccountRequest,
    ) -> Result<pb::DeleteAccountResponse> {
        let key = context_key(request.context.as_ref()).to_owned();
        let call =
            Call::new("account.DeleteAccount", &key, &request, self.now()).sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let now = self.now();
        let mut row = self.require(&*work, account).await?;
        let event = Event::Deleted(Deletion {
            reason: request.reason.clone(),
            finalized: request.finalized,
            purge: request.purge,
            end_subscriptions: request.end_subscriptions,
        });
        let outcome = lifecycle::transition(lifecycle_of(&row), event).map_err(refused)?;
        self.apply(&mut work, &mut row, outcome, now).await?;
        row.updated_at = now;
        save(&work, &row).await?;
        tracing::info!(account.id = %row.id, state = %row.state, purged = row.purged, "account deleted");
        let response = pb::DeleteAccountResponse {
            finalized: row.finalized_at.is_some(),
            account: Some(account_to_proto(&row)?),
        };
        work.concerning(&row.id);
        work.finish(response).await
    }

    /// Marks a deleted account's billing as finalized.
    pub async fn finalize(
        &self,
        account: &AccountKey,
        request: pb::FinalizeAccountRequest,
    ) -> Result<pb::Account> {
        let key = context_key(request.context.as_ref()).to_owned();
        let call =
            Call::new("account.FinalizeAccount", &key, &request, self.now()).sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let mut row = self.require(&*work, account).await?;
        let (next, effects) =
            lifecycle::transition(lifecycle_of(&row), Event::Finalized).map_err(refused)?;
        if !effects.is_empty() {
            let now = self.now();
            self.apply(&mut work, &mut row, (next, effects), now)
                .await?;
            row.updated_at = now;
            save(&work, &row).await?;
        }
        work.concerning(&row.id);
        work.finish(account_to_proto(&row)?).await
    }

    /// Durably records a marketplace event and schedules its processing.
    pub async fn record_event(
        &self,
        request: pb::RecordMarketplaceEventRequest,
    ) -> Result<pb::RecordMarketplaceEventResponse> {
        let marketplace = Marketplace::from_proto("marketplace", request.marketplace)?;
        let mut validator = Validator::new();
        validator.require("externalId", &request.external_id);
        validator.max_len("externalId", &request.external_id, MAX_EXTERNAL_ID);
        validator.require("eventType", &request.event_type);
        validator.max_len("eventType", &request.event_type, 128);
        validator.require("payloadJson", &request.payload_json);
        validator.max_len("payloadJson", &request.payload_json, 1024 * 1024);
        validator.finish()?;
        if serde_json::from_str::<serde_json::Value>(&request.payload_json).is_err() {
            return Err(Error::invalid_field("payloadJson", "is not JSON"));
        }
        let occurred_at = from_optional_timestamp("occurredAt", request.occurred_at.as_ref())?
            .map(truncate_micros);
        let now = self.now();
        let event_id = EventId::generate();
        let row = event::Model {
            id: event_id.as_str().to_owned(),
            marketplace: marketplace.as_str().to_owned(),
            external_id: request.external_id.clone(),
            event_type: request.event_type.clone(),
            payload: request.payload_json.clone(),
            occurred_at,
            received_at: now,
            status: EventStatus::Received,
            error: String::new(),
            channel: request.channel.clone(),
            account_id: None,
            deliveries: 1,
        };
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let inserted = event::Entity::insert(row.clone().into_active_model())
            .on_conflict(
                OnConflict::columns([event::Column::Marketplace, event::Column::ExternalId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&*work)
            .await
            .map_err(db_error)?;
        let duplicate = inserted == 0;
        let stored = if duplicate {
            let same = event::Column::Marketplace
                .eq(marketplace.as_str())
                .and(event::Column::ExternalId.eq(request.external_id.clone()));
            event::Entity::update_many()
                .col_expr(
                    event::Column::Deliveries,
                    Expr::col(event::Column::Deliveries).add(1),
                )
                .filter(same.clone())
                .exec(&*work)
                .await
                .map_err(db_error)?;
            event::Entity::find()
                .filter(same)
                .one(&*work)
                .await
                .map_err(db_error)?
                .ok_or_else(|| Error::unavailable("event recorded concurrently; retry"))?
        } else {
            work.enqueue(
                NewJob::of(&AccountJob::ProcessEvent(EventTask {
                    event_id: event_id.clone(),
                }))?
                .dedupe_key(format!("event:{event_id}")),
            )
            .await?;
            row
        };
        work.commit().await?;
        if duplicate {
            tracing::info!(event.id = %stored.id, event.external_id = %stored.external_id, "duplicate marketplace event acknowledged");
        } else {
            tracing::info!(event.id = %stored.id, event.type = %stored.event_type, marketplace = %marketplace, "marketplace event recorded");
        }
        Ok(pb::RecordMarketplaceEventResponse {
            event: Some(event_to_proto(&stored)?),
            duplicate,
        })
    }

    /// A page of recorded events, newest first.
    pub async fn list_events(
        &self,
        request: pb::ListMarketplaceEventsRequest,
    ) -> Result<pb::ListMarketplaceEventsResponse> {
        let page = Page::from_request(request.page.as_ref());
        let mut query = event::Entity::find()
            .order_by_desc(event::Column::Id)
            .limit(page.fetch_limit());
        if request.marketplace != 0 {
            let marketplace = Marketplace::from_proto("marketplace", request.marketplace)?;
            query = query.filter(event::Column::Marketplace.eq(marketplace.as_str()));
        }
        if !request.event_type.is_empty() {
            query = query.filter(event::Column::EventType.eq(request.event_type.clone()));
        }
        if !request.account_id.is_empty() {
            query = query.filter(event::Column::AccountId.eq(request.account_id.clone()));
        }
        if let Some(after) = &page.after {
            query = query.filter(event::Column::Id.lt(after.clone()));
        }
        let rows = query.all(&self.db).await.map_err(db_error)?;
        let (rows, next) = page.finish(rows, |row| row.id.clone());
        Ok(pb::ListMarketplaceEventsResponse {
            events: rows.iter().map(event_to_proto).collect::<Result<_>>()?,
            page: Some(next),
        })
    }

    /// Records an event's processing outcome.
    pub(crate) async fn finish_event(
        &self,
        event_id: &EventId,
        status: EventStatus,
        error: &str,
        account_id: Option<AccountId>,
    ) -> Result<()> {
        let mut update = event::ActiveModel {
            id: Set(event_id.as_str().to_owned()),
            status: Set(status),
            error: Set(error.chars().take(2000).collect()),
            ..Default::default()
        };
        if let Some(account_id) = account_id {
            update.account_id = Set(Some(account_id.into_string()));
        }
        let write = marketbridge_storage::write_once(&self.db).await?;
        update.update(&write).await.map_err(db_error)?;
        write.commit().await
    }

    /// Loads a recorded event.
    pub(crate) async fn event(&self, event_id: &EventId) -> Result<Option<event::Model>> {
        event::Entity::find_by_id(event_id.as_str())
            .one(&self.db)
            .await
            .map_err(db_error)
    }

    /// After the marketplace approved a signup: mark it and tell provisioning.
    pub(crate) async fn signup_approved_at_marketplace(
        &self,
        account_id: &AccountId,
    ) -> Result<()> {
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        let Some(mut row) = self
            .find_key(&*work, &AccountKey::Id(account_id.clone()))
            .await?
        else {
            return Ok(());
        };
        let (next, effects) =
            lifecycle::transition(lifecycle_of(&row), Event::ApprovedAtMarketplace)
                .map_err(refused)?;
        if effects.is_empty() {
            return Ok(());
        }
        let now = self.now();
        self.apply(&mut work, &mut row, (next, effects), now)
            .await?;
        row.updated_at = now;
        save(&work, &row).await?;
        work.commit().await
    }
}

fn pb_marketplace(marketplace: Marketplace) -> marketbridge_proto::common::v1::Marketplace {
    marketbridge_proto::common::v1::Marketplace::try_from(marketplace.to_proto())
        .unwrap_or(marketbridge_proto::common::v1::Marketplace::Unspecified)
}

fn remember_person(
    row: &mut account::Model,
    person: &StoredPerson,
    now: DateTime<Utc>,
) -> Result<()> {
    let mut people: Vec<StoredPerson> = from_json("people", &row.people)?;
    let mut seen = person.clone();
    seen.last_seen_at = Some(now);
    if let Some(existing) = people.iter_mut().find(|p| p.same_as(person)) {
        if seen.name.is_empty() {
            seen.name = existing.name.clone();
        }
        if seen.email.is_empty() {
            seen.email = existing.email.clone();
        }
        if seen.role.is_empty() {
            seen.role = existing.role.clone();
        }
        *existing = seen;
    } else {
        people.push(seen);
    }
    people.sort_by_key(|person| std::cmp::Reverse(person.last_seen_at));
    people.truncate(MAX_PEOPLE);
    row.people = to_json(&people);
    Ok(())
}

fn purge(row: &mut account::Model) {
    row.display_name.clear();
    row.url.clear();
    row.contact = to_json(&StoredPerson::default());
    row.people = "[]".to_owned();
    row.company.clear();
    row.accepted_terms = "{}".to_owned();
    row.credential = None;
    row.attributes = "{}".to_owned();
    row.purged = true;
}

/// The person acting in a request, if any.
pub fn actor_of(context: Option<&RequestContext>) -> Option<&Person> {
    context.and_then(|c| c.actor.as_ref())
}
