//! The account service's operations, independent of gRPC.

use crate::convert::{
    StoredPerson, account_state, account_to_proto, event_status, event_to_proto, from_json,
    signup_from_proto, signup_state, to_json,
};
use crate::entity::{account, event};
use crate::jobs::{self, kind};

pub mod credentials;
use crate::marketplace::{AccountSnapshot, Marketplaces};
use chrono::{DateTime, Utc};
use marketbridge_core::crypto::{Cipher, SecretString};
use marketbridge_core::ids::{AccountId, EventId};
use marketbridge_core::time::{SharedClock, from_optional_timestamp};
use marketbridge_core::{Error, ErrorCode, Marketplace, Result, Validator};
use marketbridge_proto::account::v1 as pb;
use marketbridge_proto::common::v1::{
    AccountSelector, MarketplaceRef, Person, RequestContext, account_selector,
};
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::{NewJob, Outbox, truncate_micros};
use marketbridge_storage::paging::Page;
use marketbridge_storage::{idempotency, idempotent_txn};
use sea_orm::sea_query::{Expr, ExprTrait, OnConflict};
use sea_orm::{
    ActiveModelTrait, ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseConnection,
    EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, QuerySelect,
};
use std::collections::BTreeMap;

/// Longest marketplace id we accept.
const MAX_EXTERNAL_ID: usize = 255;
/// Most people remembered per account.
const MAX_PEOPLE: usize = 50;

/// The account service's state and operations.
#[derive(Clone)]
pub struct AccountDomain {
    db: DatabaseConnection,
    clock: SharedClock,
    cipher: Cipher,
    outbox: Outbox,
    marketplaces: Marketplaces,
}

fn context_key(context: Option<&RequestContext>) -> &str {
    context
        .map(|c| c.idempotency_key.as_str())
        .unwrap_or_default()
}

/// Checks a marketplace identity from a request.
pub fn parse_marketplace_ref(
    field: &str,
    reference: Option<&MarketplaceRef>,
) -> Result<(Marketplace, String)> {
    let reference = reference.ok_or_else(|| Error::invalid_field(field, "is required"))?;
    let marketplace =
        Marketplace::from_proto(&format!("{field}.marketplace"), reference.marketplace)?;
    let external_id = reference.external_id.trim();
    let mut validator = Validator::new();
    validator.require(&format!("{field}.externalId"), external_id);
    validator.max_len(&format!("{field}.externalId"), external_id, MAX_EXTERNAL_ID);
    validator.finish()?;
    Ok((marketplace, external_id.to_owned()))
}

impl AccountDomain {
    /// The domain over an open, migrated database.
    pub fn new(
        db: DatabaseConnection,
        clock: SharedClock,
        cipher: Cipher,
        outbox: Outbox,
        marketplaces: Marketplaces,
    ) -> Self {
        Self {
            db,
            clock,
            cipher,
            outbox,
            marketplaces,
        }
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
    pub fn marketplaces(&self) -> &Marketplaces {
        &self.marketplaces
    }

    fn now(&self) -> DateTime<Utc> {
        truncate_micros(self.clock.now())
    }

    /// Finds an account by selector.
    pub async fn find(
        &self,
        conn: &impl ConnectionTrait,
        selector: Option<&AccountSelector>,
    ) -> Result<Option<account::Model>> {
        let selector = selector.and_then(|s| s.selector.as_ref()).ok_or_else(|| {
            Error::invalid_field(
                "account",
                "an account id or marketplace reference is required",
            )
        })?;
        match selector {
            account_selector::Selector::AccountId(id) => {
                let id = AccountId::parse("account.accountId", id)?;
                // Locked: writers re-read the row they change (`FOR UPDATE`
                // on PostgreSQL; SQLite write transactions are serial).
                account::Entity::find_by_id(id.into_string())
                    .lock_exclusive()
                    .one(conn)
                    .await
                    .map_err(db_error)
            }
            account_selector::Selector::MarketplaceRef(reference) => {
                let (marketplace, external_id) =
                    parse_marketplace_ref("account.marketplaceRef", Some(reference))?;
                self.find_by_ref(conn, marketplace, &external_id).await
            }
        }
    }

    async fn find_by_ref(
        &self,
        conn: &impl ConnectionTrait,
        marketplace: Marketplace,
        external_id: &str,
    ) -> Result<Option<account::Model>> {
        account::Entity::find()
            .filter(account::Column::Marketplace.eq(marketplace.as_str()))
            .filter(account::Column::ExternalId.eq(external_id))
            .lock_exclusive()
            .one(conn)
            .await
            .map_err(db_error)
    }

    /// Finds an account or answers NOT_FOUND.
    pub async fn require(
        &self,
        conn: &impl ConnectionTrait,
        selector: Option<&AccountSelector>,
    ) -> Result<account::Model> {
        self.find(conn, selector)
            .await?
            .ok_or_else(|| Error::not_found("account not found"))
    }

    /// Loads an account by our id.
    pub async fn by_id(&self, account_id: &str) -> Result<account::Model> {
        account::Entity::find_by_id(account_id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::not_found(format!("account {account_id} not found")))
    }

    /// Creates or updates an account from a marketplace's description.
    pub async fn upsert(&self, request: pb::UpsertAccountRequest) -> Result<pb::Account> {
        let (marketplace, external_id) =
            parse_marketplace_ref("marketplaceRef", request.marketplace_ref.as_ref())?;
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
        let mut txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "account.UpsertAccount",
            &key,
            &request,
            self.now()
        );
        let now = self.now();
        let existing = self.find_by_ref(&*txn, marketplace, &external_id).await?;
        let actor = request
            .context
            .as_ref()
            .and_then(|c| c.actor.as_ref())
            .map(StoredPerson::from_proto);

        let (row, approved_now) = match existing {
            Some(existing) => {
                if let (Some(stored), Some(incoming)) =
                    (existing.marketplace_update_time, update_time)
                    && incoming < stored
                {
                    tracing::info!(account.id = %existing.id, "ignoring a stale account description");
                    let response = account_to_proto(&existing);
                    return txn.finish(response).await;
                }
                let was_approved = existing.signup_state == signup_state::APPROVED;
                let mut row = existing.clone();
                self.apply_upsert(&mut row, &request, &terms, actor.as_ref(), now);
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
                if let Some(reported) = marketplace_signup {
                    row.signup_state = merge_signup(&row.signup_state, reported).to_owned();
                }
                if row.state != account_state::ACTIVE {
                    row.state = account_state::ACTIVE.to_owned();
                    row.deletion_requested_at = None;
                    row.finalized_at = None;
                    row.purged = false;
                }
                let approved_now = !was_approved && row.signup_state == signup_state::APPROVED;
                row.clone()
                    .into_active_model()
                    .reset_all()
                    .update(&*txn)
                    .await
                    .map_err(db_error)?;
                (row, approved_now)
            }
            None => {
                let signup = match (marketplace_signup, request.signup_required) {
                    (Some(reported), _) => reported,
                    (None, true) => signup_state::PENDING,
                    (None, false) => signup_state::NOT_REQUIRED,
                };
                let mut row = account::Model {
                    id: AccountId::generate().into_string(),
                    marketplace: marketplace.as_str().to_owned(),
                    external_id: external_id.clone(),
                    display_name: String::new(),
                    url: String::new(),
                    contact: to_json(&StoredPerson::default()),
                    people: "[]".to_owned(),
                    company: String::new(),
                    state: account_state::ACTIVE.to_owned(),
                    signup_state: signup.to_owned(),
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
                self.apply_upsert(&mut row, &request, &terms, actor.as_ref(), now);
                let approved_now = row.signup_state == signup_state::APPROVED;
                account::Entity::insert(row.clone().into_active_model())
                    .on_conflict(
                        OnConflict::columns([
                            account::Column::Marketplace,
                            account::Column::ExternalId,
                        ])
                        .do_nothing()
                        .to_owned(),
                    )
                    .exec_without_returning(&*txn)
                    .await
                    .map_err(db_error)?;
                let stored = self
                    .find_by_ref(&*txn, marketplace, &external_id)
                    .await?
                    .ok_or_else(|| Error::unavailable("account was created concurrently; retry"))?;
                if stored.id != row.id {
                    return Err(Error::unavailable(
                        "account was created concurrently; retry",
                    ));
                }
                tracing::info!(account.id = %row.id, marketplace = %marketplace, "account created");
                (row, approved_now)
            }
        };
        if approved_now {
            self.outbox
                .enqueue(
                    &*txn,
                    NewJob::new(kind::NOTIFY_APPROVED, &jobs::AccountJob::new(&row.id))?,
                )
                .await?;
        }
        let response = account_to_proto(&row);
        txn.concerning(&row.id);
        let response = txn.finish(response).await?;
        self.outbox.wake();
        Ok(response)
    }

    fn apply_upsert(
        &self,
        row: &mut account::Model,
        request: &pb::UpsertAccountRequest,
        terms: &BTreeMap<String, DateTime<Utc>>,
        actor: Option<&StoredPerson>,
        now: DateTime<Utc>,
    ) {
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
            let mut stored: BTreeMap<String, DateTime<Utc>> = from_json(&row.accepted_terms);
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
            let mut attributes: BTreeMap<String, String> = from_json(&row.attributes);
            attributes.extend(request.attributes.clone());
            row.attributes = to_json(&attributes);
        }
        if let Some(actor) = actor.filter(|a| !a.is_empty()) {
            remember_person(row, actor, now);
        }
        row.updated_at = now;
    }

    /// One account.
    pub async fn get(&self, request: pb::GetAccountRequest) -> Result<pb::Account> {
        let row = self.require(&self.db, request.account.as_ref()).await?;
        Ok(account_to_proto(&row))
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
            accounts: rows.iter().map(account_to_proto).collect(),
            page: Some(next),
        })
    }

    /// Re-reads an account from its marketplace and applies what it says.
    pub async fn refresh(&self, request: pb::RefreshAccountRequest) -> Result<pb::Account> {
        let row = self.require(&self.db, request.account.as_ref()).await?;
        self.refresh_row(row).await
    }

    /// Re-reads a loaded account from its marketplace.
    pub async fn refresh_row(&self, row: account::Model) -> Result<pb::Account> {
        let marketplace = crate::convert::marketplace_of(&row.marketplace)?;
        let adapter = self.marketplaces.adapter(marketplace).ok_or_else(|| {
            Error::unprocessable(format!(
                "accounts of marketplace {marketplace} cannot be refreshed"
            ))
        })?;
        let credential = self.call_secret(&row).await?;
        let fetched = match adapter.fetch(&row, credential.as_ref()).await {
            Err(error) if adapter.is_gone(&error) => {
                self.record_gone(&row.id, error.message()).await?;
                return Err(error);
            }
            fetched => fetched?,
        };
        match fetched {
            Some(snapshot) => self.apply_snapshot(&row.id, snapshot).await,
            None => {
                tracing::info!(account.id = %row.id, "the marketplace no longer knows the account");
                let response = self
                    .delete(pb::DeleteAccountRequest {
                        account: Some(AccountSelector::by_id(&row.id)),
                        reason: "deleted at the marketplace".into(),
                        finalized: true,
                        purge: true,
                        end_subscriptions: true,
                        ..Default::default()
                    })
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
        account_id: &str,
        snapshot: AccountSnapshot,
    ) -> Result<pb::Account> {
        let row = self.by_id(account_id).await?;
        let mut request = pb::UpsertAccountRequest {
            marketplace_ref: Some(MarketplaceRef::new(
                pb_marketplace(crate::convert::marketplace_of(&row.marketplace)?),
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
    pub async fn approve_signup(&self, request: pb::ApproveSignupRequest) -> Result<pb::Account> {
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
        let mut txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "account.ApproveSignup",
            &key,
            &request,
            self.now()
        );
        let now = self.now();
        let mut row = self.require(&*txn, request.account.as_ref()).await?;
        if row.state != account_state::ACTIVE {
            return Err(Error::conflict("the account is deleted; it cannot sign up"));
        }
        if matches!(
            row.signup_state.as_str(),
            signup_state::APPROVING | signup_state::APPROVED
        ) {
            // A signup, once accepted, is not rewritten by a later form.
            return Err(Error::new(
                ErrorCode::Unprocessable,
                "the account's signup was already accepted; its contact changes only through the account itself",
            ));
        }
        if let Some(person) = request
            .person
            .as_ref()
            .map(StoredPerson::from_proto)
            .filter(|p| !p.is_empty())
        {
            row.contact = to_json(&person);
            remember_person(&mut row, &person, now);
        }
        if !request.company.trim().is_empty() {
            row.company = request.company.trim().to_owned();
            if row.display_name.is_empty() {
                row.display_name = row.company.clone();
            }
        }
        let needs_approval = matches!(
            row.signup_state.as_str(),
            signup_state::PENDING | signup_state::REJECTED
        );
        if needs_approval {
            row.signup_state = signup_state::APPROVING.to_owned();
            row.signup_reason.clear();
            self.outbox
                .enqueue(
                    &*txn,
                    NewJob::new(kind::APPROVE_SIGNUP, &jobs::AccountJob::new(&row.id))?,
                )
                .await?;
        }
        row.updated_at = now;
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&*txn)
            .await
            .map_err(db_error)?;
        txn.concerning(&row.id);
        let response = txn.finish(account_to_proto(&row)).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Rejects the account's signup at the marketplace.
    pub async fn reject_signup(&self, request: pb::RejectSignupRequest) -> Result<pb::Account> {
        let mut validator = Validator::new();
        validator.max_len("reason", &request.reason, 256);
        validator.finish()?;
        let key = context_key(request.context.as_ref()).to_owned();
        let mut txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "account.RejectSignup",
            &key,
            &request,
            self.now()
        );
        let mut row = self.require(&*txn, request.account.as_ref()).await?;
        if row.signup_state == signup_state::NOT_REQUIRED {
            return Err(Error::conflict("this account has no signup to reject"));
        }
        row.signup_state = signup_state::REJECTED.to_owned();
        row.signup_reason = request.reason.clone();
        row.updated_at = self.now();
        self.outbox
            .enqueue(
                &*txn,
                NewJob::new(
                    kind::REJECT_SIGNUP,
                    &jobs::AccountJob::with_reason(&row.id, &request.reason),
                )?,
            )
            .await?;
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&*txn)
            .await
            .map_err(db_error)?;
        txn.concerning(&row.id);
        let response = txn.finish(account_to_proto(&row)).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Resets the account at the marketplace.
    pub async fn reset(&self, request: pb::ResetAccountRequest) -> Result<pb::Account> {
        let key = context_key(request.context.as_ref()).to_owned();
        let mut txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "account.ResetAccount",
            &key,
            &request,
            self.now()
        );
        let mut row = self.require(&*txn, request.account.as_ref()).await?;
        if row.signup_state != signup_state::NOT_REQUIRED {
            row.signup_state = signup_state::PENDING.to_owned();
            row.signup_reason.clear();
        }
        row.updated_at = self.now();
        self.outbox
            .enqueue(
                &*txn,
                NewJob::new(kind::RESET, &jobs::AccountJob::new(&row.id))?,
            )
            .await?;
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&*txn)
            .await
            .map_err(db_error)?;
        txn.concerning(&row.id);
        let response = txn.finish(account_to_proto(&row)).await?;
        self.outbox.wake();
        Ok(response)
    }

    /// Soft-deletes an account; purges personal data when asked.
    pub async fn delete(
        &self,
        request: pb::DeleteAccountRequest,
    ) -> Result<pb::DeleteAccountResponse> {
        let key = context_key(request.context.as_ref()).to_owned();
        let mut txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "account.DeleteAccount",
            &key,
            &request,
            self.now()
        );
        let now = self.now();
        let mut row = self.require(&*txn, request.account.as_ref()).await?;
        if row.state == account_state::ACTIVE {
            row.deletion_requested_at = Some(now);
            row.state = account_state::DELETION_PENDING.to_owned();
            if !request.reason.is_empty() {
                let mut attributes: BTreeMap<String, String> = from_json(&row.attributes);
                attributes.insert("deletion_reason".into(), request.reason.clone());
                row.attributes = to_json(&attributes);
            }
        }
        if request.finalized && row.finalized_at.is_none() {
            row.state = account_state::DELETED.to_owned();
            row.finalized_at = Some(now);
        }
        if request.purge && !row.purged {
            purge(&mut row);
        }
        if request.purge {
            // Stored answers about the account carry its people too.
            idempotency::purge_subject(&*txn, &row.id).await?;
        }
        if request.end_subscriptions {
            let job = NewJob::new(
                kind::END_SUBSCRIPTIONS,
                &jobs::AccountJob::with_reason(&row.id, &request.reason),
            )?
            .dedupe_key(format!("end-subscriptions:{}", row.id));
            self.outbox.enqueue(&*txn, job).await?;
        }
        row.updated_at = now;
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&*txn)
            .await
            .map_err(db_error)?;
        tracing::info!(account.id = %row.id, state = %row.state, purged = row.purged, "account deleted");
        let response = pb::DeleteAccountResponse {
            finalized: row.finalized_at.is_some(),
            account: Some(account_to_proto(&row)),
        };
        txn.concerning(&row.id);
        let response = txn.finish(response).await?;
        if request.end_subscriptions {
            self.outbox.wake();
        }
        Ok(response)
    }

    /// Marks a deleted account's billing as finalized.
    pub async fn finalize(&self, request: pb::FinalizeAccountRequest) -> Result<pb::Account> {
        let key = context_key(request.context.as_ref()).to_owned();
        let mut txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "account.FinalizeAccount",
            &key,
            &request,
            self.now()
        );
        let mut row = self.require(&*txn, request.account.as_ref()).await?;
        if row.state == account_state::ACTIVE {
            return Err(Error::conflict("only a deleted account can be finalized"));
        }
        if row.finalized_at.is_none() {
            let now = self.now();
            row.finalized_at = Some(now);
            row.state = account_state::DELETED.to_owned();
            // The marketplace retires the token at finalization.
            row.credential = None;
            row.updated_at = now;
            row.clone()
                .into_active_model()
                .reset_all()
                .update(&*txn)
                .await
                .map_err(db_error)?;
        }
        txn.concerning(&row.id);
        txn.finish(account_to_proto(&row)).await
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
        let row = event::Model {
            id: EventId::generate().into_string(),
            marketplace: marketplace.as_str().to_owned(),
            external_id: request.external_id.clone(),
            event_type: request.event_type.clone(),
            payload: request.payload_json.clone(),
            occurred_at,
            received_at: now,
            status: event_status::RECEIVED.to_owned(),
            error: String::new(),
            channel: request.channel.clone(),
            account_id: None,
            deliveries: 1,
        };
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        let inserted = event::Entity::insert(row.clone().into_active_model())
            .on_conflict(
                OnConflict::columns([event::Column::Marketplace, event::Column::ExternalId])
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await
            .map_err(db_error)?;
        let duplicate = inserted == 0;
        let stored = if duplicate {
            event::Entity::update_many()
                .col_expr(
                    event::Column::Deliveries,
                    Expr::col(event::Column::Deliveries).add(1),
                )
                .filter(event::Column::Marketplace.eq(marketplace.as_str()))
                .filter(event::Column::ExternalId.eq(request.external_id.clone()))
                .exec(&txn)
                .await
                .map_err(db_error)?;
            event::Entity::find()
                .filter(event::Column::Marketplace.eq(marketplace.as_str()))
                .filter(event::Column::ExternalId.eq(request.external_id.clone()))
                .one(&txn)
                .await
                .map_err(db_error)?
                .ok_or_else(|| Error::unavailable("event recorded concurrently; retry"))?
        } else {
            self.outbox
                .enqueue(
                    &txn,
                    NewJob::new(
                        kind::PROCESS_EVENT,
                        &jobs::EventJob {
                            event_id: row.id.clone(),
                        },
                    )?
                    .dedupe_key(format!("event:{}", row.id)),
                )
                .await?;
            row
        };
        txn.commit().await.map_err(db_error)?;
        if duplicate {
            tracing::info!(event.id = %stored.id, event.external_id = %stored.external_id, "duplicate marketplace event acknowledged");
        } else {
            tracing::info!(event.id = %stored.id, event.type = %stored.event_type, marketplace = %marketplace, "marketplace event recorded");
            self.outbox.wake();
        }
        Ok(pb::RecordMarketplaceEventResponse {
            event: Some(event_to_proto(&stored)),
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
            events: rows.iter().map(event_to_proto).collect(),
            page: Some(next),
        })
    }

    /// Records an event's processing outcome.
    pub(crate) async fn finish_event(
        &self,
        event_id: &str,
        status: &str,
        error: &str,
        account_id: Option<String>,
    ) -> Result<()> {
        let mut update = event::ActiveModel {
            id: Set(event_id.to_owned()),
            status: Set(status.to_owned()),
            error: Set(error.chars().take(2000).collect()),
            ..Default::default()
        };
        if account_id.is_some() {
            update.account_id = Set(account_id);
        }
        update.update(&self.db).await.map_err(db_error)?;
        Ok(())
    }

    /// Loads a recorded event.
    pub(crate) async fn event(&self, event_id: &str) -> Result<Option<event::Model>> {
        event::Entity::find_by_id(event_id.to_owned())
            .one(&self.db)
            .await
            .map_err(db_error)
    }

    /// After the marketplace approved a signup: mark it and tell provisioning.
    pub(crate) async fn signup_approved_at_marketplace(&self, account_id: &str) -> Result<()> {
        let txn = marketbridge_storage::begin_write(&self.db).await?;
        let Some(mut row) = account::Entity::find_by_id(account_id.to_owned())
            .lock_exclusive()
            .one(&txn)
            .await
            .map_err(db_error)?
        else {
            return Ok(());
        };
        if row.signup_state != signup_state::APPROVING {
            return Ok(());
        }
        row.signup_state = signup_state::APPROVED.to_owned();
        row.updated_at = self.now();
        row.clone()
            .into_active_model()
            .reset_all()
            .update(&txn)
            .await
            .map_err(db_error)?;
        self.outbox
            .enqueue(
                &txn,
                NewJob::new(kind::NOTIFY_APPROVED, &jobs::AccountJob::new(&row.id))?,
            )
            .await?;
        txn.commit().await.map_err(db_error)?;
        self.outbox.wake();
        Ok(())
    }
}

fn pb_marketplace(marketplace: Marketplace) -> marketbridge_proto::common::v1::Marketplace {
    marketbridge_proto::common::v1::Marketplace::try_from(marketplace.to_proto())
        .unwrap_or(marketbridge_proto::common::v1::Marketplace::Unspecified)
}

/// The local signup state after the marketplace reported `reported`.
fn merge_signup(local: &str, reported: &'static str) -> &'static str {
    match (local, reported) {
        // Our approval is on its way; the marketplace has not seen it yet.
        (signup_state::APPROVING, signup_state::PENDING) => signup_state::APPROVING,
        // The marketplace confirmed our approval; a pending state read before
        // that (a notification processed late, on another replica) does not
        // take it back. Only our own reset makes an approved signup pending.
        (signup_state::APPROVED, signup_state::PENDING) => signup_state::APPROVED,
        (signup_state::NOT_REQUIRED, signup_state::NOT_REQUIRED) => signup_state::NOT_REQUIRED,
        (_, reported) => reported,
    }
}

fn remember_person(row: &mut account::Model, person: &StoredPerson, now: DateTime<Utc>) {
    let mut people: Vec<StoredPerson> = from_json(&row.people);
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
