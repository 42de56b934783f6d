//! Transfer claims: an account offers some of its resources, another
//! account of the same marketplace accepts them before the claim expires.
//! Accepting moves each resource together with its own subscription, so the
//! target account is billed for it from then on (Vercel claim deployments).

use super::{AccountInfo, ProvisioningDomain, context_key};
use crate::convert::{from_json, resource_to_proto, scope, status, to_json};
use crate::entity::{resource, transfer_claim};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::ids::{AccountId, ClaimId, ResourceId};
use marketbridge_core::time::{from_optional_timestamp, to_timestamp};
use marketbridge_core::{Error, Result};
use marketbridge_proto::common::v1::AccountSelector;
use marketbridge_proto::provisioning::v1 as pb;
use marketbridge_storage::db_error;
use marketbridge_storage::idempotent_txn;
use marketbridge_storage::outbox::truncate_micros;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter,
};

/// Most resources one claim may offer.
const MAX_CLAIM_RESOURCES: usize = 100;
/// Longest a claim may stay open.
const MAX_CLAIM_DAYS: i64 = 30;
/// Longest claim id a marketplace may choose.
const MAX_CLAIM_ID: usize = 128;

/// Claim states, as stored.
mod claim_state {
    pub const PENDING: &str = "pending";
    pub const ACCEPTED: &str = "accepted";
}

fn claim_to_proto(row: &transfer_claim::Model) -> pb::TransferClaim {
    pb::TransferClaim {
        id: row.id.clone(),
        source_account_id: row.source_account_id.clone(),
        resource_ids: from_json(&row.resource_ids),
        state: match row.state.as_str() {
            claim_state::ACCEPTED => pb::TransferClaimState::Accepted,
            _ => pb::TransferClaimState::Pending,
        } as i32,
        target_account_id: row.target_account_id.clone(),
        expires_at: Some(to_timestamp(row.expires_at)),
        created_at: Some(to_timestamp(row.created_at)),
        accepted_at: row.accepted_at.map(to_timestamp),
    }
}

/// A claim id chosen by a marketplace: printable, no spaces or slashes.
fn valid_chosen_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CLAIM_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
}

impl ProvisioningDomain {
    /// Offers resources to another account; see `CreateTransferClaim`.
    pub async fn create_transfer_claim(
        &self,
        request: pb::CreateTransferClaimRequest,
    ) -> Result<pb::TransferClaim> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let mut resource_ids: Vec<String> = Vec::new();
        for (index, id) in request.resource_ids.iter().enumerate() {
            let id = ResourceId::parse(&format!("resourceIds[{index}]"), id.trim())?;
            if !resource_ids.contains(&id.as_str().to_owned()) {
                resource_ids.push(id.into_string());
            }
        }
        if resource_ids.is_empty() || resource_ids.len() > MAX_CLAIM_RESOURCES {
            return Err(Error::invalid_field(
                "resourceIds",
                format!("must name 1 to {MAX_CLAIM_RESOURCES} resources"),
            ));
        }
        let now = self.now();
        let expires_at = from_optional_timestamp("expiresAt", request.expires_at.as_ref())?
            .ok_or_else(|| Error::invalid_field("expiresAt", "is required"))?;
        if expires_at <= now {
            return Err(Error::invalid_field("expiresAt", "must be in the future"));
        }
        if expires_at > now + ChronoDuration::days(MAX_CLAIM_DAYS) {
            return Err(Error::invalid_field(
                "expiresAt",
                format!("must be at most {MAX_CLAIM_DAYS} days ahead"),
            ));
        }
        let claim_id = match request.claim_id.trim() {
            "" => ClaimId::generate().into_string(),
            chosen if valid_chosen_id(chosen) => chosen.to_owned(),
            _ => {
                return Err(Error::invalid_field(
                    "claimId",
                    format!("must be 1 to {MAX_CLAIM_ID} letters, digits, `_`, `-`, `.` or `:`"),
                ));
            }
        };
        let source = self
            .account(AccountSelector::by_id(account_id.as_str()))
            .await?;
        if !source.active {
            return Err(Error::conflict("the account is uninstalled"));
        }

        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.CreateTransferClaim",
            &key,
            &request,
            now
        );
        if let Some(existing) = transfer_claim::Entity::find_by_id(claim_id.clone())
            .one(&*txn)
            .await
            .map_err(db_error)?
        {
            let offered: Vec<String> = from_json(&existing.resource_ids);
            let mut asked = resource_ids.clone();
            let mut stored = offered.clone();
            asked.sort();
            stored.sort();
            if existing.source_account_id != source.id || asked != stored {
                return Err(Error::conflict(format!(
                    "claim `{claim_id}` exists and offers other resources"
                )));
            }
            return txn.finish(claim_to_proto(&existing)).await;
        }
        for id in &resource_ids {
            self.transferable(&*txn, id, &source.id).await?;
        }
        let row = transfer_claim::Model {
            id: claim_id,
            source_account_id: source.id.clone(),
            resource_ids: to_json(&resource_ids),
            state: claim_state::PENDING.to_owned(),
            target_account_id: String::new(),
            expires_at: truncate_micros(expires_at),
            created_at: now,
            accepted_at: None,
        };
        transfer_claim::Entity::insert(row.clone().into_active_model())
            .exec_without_returning(&*txn)
            .await
            .map_err(db_error)?;
        tracing::info!(claim.id = %row.id, account.id = %row.source_account_id, resources = resource_ids.len(), "transfer claim created");
        txn.finish(claim_to_proto(&row)).await
    }

    /// A live resource of `account_id` that has a subscription of its own.
    async fn transferable(
        &self,
        conn: &impl ConnectionTrait,
        resource_id: &str,
        account_id: &str,
    ) -> Result<resource::Model> {
        let row = self
            .load_resource(conn, resource_id)
            .await?
            .filter(|row| row.account_id == account_id)
            .ok_or_else(|| Error::not_found(format!("resource `{resource_id}` not found")))?;
        if row.status == status::UNINSTALLED {
            return Err(Error::conflict(format!(
                "resource `{resource_id}` is deleted"
            )));
        }
        let subscription = self.load_subscription(conn, &row.subscription_id).await?;
        if subscription.is_none_or(|s| s.scope != scope::RESOURCE) {
            return Err(Error::conflict(format!(
                "resource `{resource_id}` is billed under the account's plan and cannot move on its own"
            )));
        }
        Ok(row)
    }

    async fn require_claim(
        &self,
        conn: &impl ConnectionTrait,
        claim_id: &str,
    ) -> Result<transfer_claim::Model> {
        if claim_id.trim().is_empty() {
            return Err(Error::invalid_field("claimId", "is required"));
        }
        transfer_claim::Entity::find_by_id(claim_id.trim().to_owned())
            .one(conn)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::not_found("transfer claim not found"))
    }

    /// The target account, when it may take resources from `claim`'s source.
    async fn claim_target(
        &self,
        claim: &transfer_claim::Model,
        target_account_id: &str,
    ) -> Result<AccountInfo> {
        let target_id = AccountId::parse("targetAccountId", target_account_id)?;
        let target = self
            .account(AccountSelector::by_id(target_id.as_str()))
            .await?;
        if !target.active {
            return Err(Error::conflict("the target account is uninstalled"));
        }
        if target.id == claim.source_account_id {
            return Err(Error::conflict(
                "a claim cannot be accepted by the account that offered it",
            ));
        }
        let source = self
            .account(AccountSelector::by_id(&claim.source_account_id))
            .await?;
        if source.marketplace != target.marketplace {
            return Err(Error::conflict(
                "resources move only between accounts of the same marketplace",
            ));
        }
        Ok(target)
    }

    /// Why `claim` cannot be accepted by `target_id` at `now`, if it cannot.
    fn claim_open_for(
        claim: &transfer_claim::Model,
        target_id: &str,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        if claim.state == claim_state::ACCEPTED {
            return if claim.target_account_id == target_id {
                Ok(false)
            } else {
                Err(Error::conflict("the claim was accepted by another account"))
            };
        }
        if claim.expires_at <= now {
            return Err(Error::unprocessable("the claim expired")
                .with_user_message("This transfer link expired; ask for a new one"));
        }
        Ok(true)
    }

    /// Whether an account may accept a claim now; see `VerifyTransferClaim`.
    pub async fn verify_transfer_claim(
        &self,
        request: pb::VerifyTransferClaimRequest,
    ) -> Result<pb::VerifyTransferClaimResponse> {
        let claim = self.require_claim(&self.db, &request.claim_id).await?;
        let target = self
            .claim_target(&claim, &request.target_account_id)
            .await?;
        let open = Self::claim_open_for(&claim, &target.id, self.now())?;
        let owner = if open {
            &claim.source_account_id
        } else {
            &target.id
        };
        let mut resources = Vec::new();
        for id in from_json::<Vec<String>>(&claim.resource_ids) {
            resources.push(resource_to_proto(
                &self.transferable(&self.db, &id, owner).await?,
            ));
        }
        Ok(pb::VerifyTransferClaimResponse {
            claim: Some(claim_to_proto(&claim)),
            resources,
        })
    }

    /// Moves a claim's resources; see `AcceptTransferClaim`.
    pub async fn accept_transfer_claim(
        &self,
        request: pb::AcceptTransferClaimRequest,
    ) -> Result<pb::TransferClaim> {
        let found = self.require_claim(&self.db, &request.claim_id).await?;
        let target = self
            .claim_target(&found, &request.target_account_id)
            .await?;
        let now = self.now();
        let key = context_key(request.context.as_ref());
        let txn = idempotent_txn!(
            sealed(&self.cipher),
            &self.db,
            "provisioning.AcceptTransferClaim",
            &key,
            &request,
            now
        );
        // Taking the claim first locks its row: of two concurrent accepts,
        // the second sees it accepted.
        let taken = transfer_claim::Entity::update_many()
            .col_expr(
                transfer_claim::Column::State,
                Expr::value(claim_state::ACCEPTED),
            )
            .col_expr(
                transfer_claim::Column::TargetAccountId,
                Expr::value(target.id.clone()),
            )
            .col_expr(transfer_claim::Column::AcceptedAt, Expr::value(now))
            .filter(transfer_claim::Column::Id.eq(found.id.clone()))
            .filter(transfer_claim::Column::State.eq(claim_state::PENDING))
            .filter(transfer_claim::Column::ExpiresAt.gt(now))
            .exec(&*txn)
            .await
            .map_err(db_error)?
            .rows_affected;
        let claim = self.require_claim(&*txn, &found.id).await?;
        if taken == 0 {
            // Accepted before (by this account: nothing to do again), by
            // another account, or expired.
            Self::claim_open_for(&claim, &target.id, now)?;
            return txn.finish(claim_to_proto(&claim)).await;
        }
        for id in from_json::<Vec<String>>(&claim.resource_ids) {
            let mut row = self
                .transferable(&*txn, &id, &claim.source_account_id)
                .await?;
            let mut subscription = self
                .load_subscription(&*txn, &row.subscription_id)
                .await?
                .ok_or_else(|| Error::internal("resource without subscription"))?;
            subscription.account_id = target.id.clone();
            subscription.version += 1;
            subscription.updated_at = now;
            subscription
                .clone()
                .into_active_model()
                .reset_all()
                .update(&*txn)
                .await
                .map_err(db_error)?;
            self.enqueue_billing_change(&*txn, &subscription).await?;
            row.account_id = target.id.clone();
            row.updated_at = now;
            row.into_active_model()
                .reset_all()
                .update(&*txn)
                .await
                .map_err(db_error)?;
        }
        tracing::info!(claim.id = %claim.id, from = %claim.source_account_id, to = %target.id, "transfer claim accepted");
        let response = txn.finish(claim_to_proto(&claim)).await?;
        self.outbox.wake();
        Ok(response)
    }
}
