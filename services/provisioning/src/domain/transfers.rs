//! Transfer claims: an account offers some of its resources, another
//! account of the same marketplace accepts them before the claim expires.
//! Accepting moves each resource together with its own subscription, so the
//! target account is billed for it from then on (Vercel claim deployments).

use super::{AccountInfo, ProvisioningDomain, context_key};
use crate::convert::{from_json, resource_to_proto, to_json};
use crate::entity::{resource, transfer_claim};
use crate::model::{ClaimState, ResourceStatus, SubscriptionScope, TransferClaimId, stored_id};
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use marketbridge_core::ids::{AccountId, ResourceId};
use marketbridge_core::time::{from_optional_timestamp, to_timestamp};
use marketbridge_core::{Error, Result};
use marketbridge_proto::provisioning::v1 as pb;
use marketbridge_storage::db_error;
use marketbridge_storage::outbox::truncate_micros;
use marketbridge_storage::{Call, RowLocks, UnitOfWork, unit_of_work};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, IntoActiveModel, QueryFilter};

/// Most resources one claim may offer.
const MAX_CLAIM_RESOURCES: usize = 100;
/// Longest a claim may stay open.
const MAX_CLAIM_DAYS: i64 = 30;

/// The resources a stored claim offers, in order.
fn offered(row: &transfer_claim::Model) -> Result<Vec<ResourceId>> {
    from_json::<Vec<String>>("transfer_claims.resource_ids", &row.resource_ids)?
        .iter()
        .map(|id| stored_id("transfer_claims.resource_ids", id))
        .collect()
}

fn claim_to_proto(row: &transfer_claim::Model) -> Result<pb::TransferClaim> {
    Ok(pb::TransferClaim {
        id: row.id.clone(),
        source_account_id: row.source_account_id.clone(),
        resource_ids: from_json("transfer_claims.resource_ids", &row.resource_ids)?,
        state: match row.state {
            ClaimState::Accepted => pb::TransferClaimState::Accepted,
            ClaimState::Pending => pb::TransferClaimState::Pending,
        } as i32,
        target_account_id: row.target_account_id.clone(),
        expires_at: Some(to_timestamp(row.expires_at)),
        created_at: Some(to_timestamp(row.created_at)),
        accepted_at: row.accepted_at.map(to_timestamp),
    })
}

impl ProvisioningDomain {
    /// Offers resources to another account; see `CreateTransferClaim`.
    pub async fn create_transfer_claim(
        &self,
        request: pb::CreateTransferClaimRequest,
    ) -> Result<pb::TransferClaim> {
        let account_id = AccountId::parse("accountId", &request.account_id)?;
        let mut resource_ids: Vec<ResourceId> = Vec::new();
        for (index, id) in request.resource_ids.iter().enumerate() {
            let id = ResourceId::parse(&format!("resourceIds[{index}]"), id.trim())?;
            if !resource_ids.contains(&id) {
                resource_ids.push(id);
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
            "" => TransferClaimId::generate(),
            chosen => TransferClaimId::parse("claimId", chosen)?,
        };
        let key = context_key(request.context.as_ref());
        let mut call =
            Call::new("provisioning.CreateTransferClaim", &key, &request, now).sealed(&self.cipher);
        if let Some(answer) = call.replayed(&self.db).await? {
            return Ok(answer);
        }
        let source = self.account_by_id(&account_id).await?;
        if !source.active {
            return Err(Error::conflict("the account is uninstalled"));
        }

        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        work.concerning(&source.id);
        if let Some(existing) = transfer_claim::Entity::find_by_id(claim_id.to_string())
            .one(&*work)
            .await
            .map_err(db_error)?
        {
            let mut asked = resource_ids.clone();
            let mut stored = offered(&existing)?;
            asked.sort();
            stored.sort();
            if existing.source_account_id != source.id.as_str() || asked != stored {
                return Err(Error::conflict(format!(
                    "claim `{claim_id}` exists and offers other resources"
                )));
            }
            let response = claim_to_proto(&existing)?;
            return work.finish(response).await;
        }
        for id in &resource_ids {
            self.transferable(&*work, id, &source.id).await?;
        }
        let texts: Vec<&str> = resource_ids.iter().map(ResourceId::as_str).collect();
        let row = transfer_claim::Model {
            id: claim_id.to_string(),
            source_account_id: source.id.to_string(),
            resource_ids: to_json(&texts)?,
            state: ClaimState::Pending,
            target_account_id: String::new(),
            expires_at: truncate_micros(expires_at),
            created_at: now,
            accepted_at: None,
        };
        transfer_claim::Entity::insert(row.clone().into_active_model())
            .exec_without_returning(&*work)
            .await
            .map_err(db_error)?;
        tracing::info!(claim.id = %row.id, account.id = %row.source_account_id, resources = resource_ids.len(), "transfer claim created");
        let response = claim_to_proto(&row)?;
        work.finish(response).await
    }

    /// A live resource of `account_id` that has a subscription of its own.
    async fn transferable(
        &self,
        conn: &(impl ConnectionTrait + RowLocks),
        resource_id: &ResourceId,
        account_id: &AccountId,
    ) -> Result<resource::Model> {
        let row = self
            .load_resource(conn, resource_id)
            .await?
            .filter(|row| row.account_id == account_id.as_str())
            .ok_or_else(|| Error::not_found(format!("resource `{resource_id}` not found")))?;
        if row.status == ResourceStatus::Uninstalled {
            return Err(Error::conflict(format!(
                "resource `{resource_id}` is deleted"
            )));
        }
        let subscription = self
            .load_subscription(conn, &row.paying_subscription_id()?)
            .await?;
        if subscription.is_none_or(|s| s.scope != SubscriptionScope::Resource) {
            return Err(Error::conflict(format!(
                "resource `{resource_id}` is billed under the account's plan and cannot move on its own"
            )));
        }
        Ok(row)
    }

    async fn require_claim(
        &self,
        conn: &impl ConnectionTrait,
        claim_id: &TransferClaimId,
    ) -> Result<transfer_claim::Model> {
        transfer_claim::Entity::find_by_id(claim_id.to_string())
            .one(conn)
            .await
            .map_err(db_error)?
            .ok_or_else(|| Error::not_found("transfer claim not found"))
    }

    /// The target account, when it may take resources from `claim`'s source.
    async fn claim_target(
        &self,
        claim: &transfer_claim::Model,
        target_id: &AccountId,
    ) -> Result<AccountInfo> {
        let target = self.account_by_id(target_id).await?;
        if !target.active {
            return Err(Error::conflict("the target account is uninstalled"));
        }
        if target.id.as_str() == claim.source_account_id {
            return Err(Error::conflict(
                "a claim cannot be accepted by the account that offered it",
            ));
        }
        let source_id = stored_id::<AccountId>(
            "transfer_claims.source_account_id",
            &claim.source_account_id,
        )?;
        let source = self.account_by_id(&source_id).await?;
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
        target_id: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        if claim.state == ClaimState::Accepted {
            return if claim.target_account_id == target_id.as_str() {
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
        let claim_id = parse_claim_id(&request.claim_id)?;
        let target_id = AccountId::parse("targetAccountId", &request.target_account_id)?;
        let claim = self.require_claim(&self.db, &claim_id).await?;
        let target = self.claim_target(&claim, &target_id).await?;
        let open = Self::claim_open_for(&claim, &target.id, self.now())?;
        let owner = if open {
            stored_id::<AccountId>(
                "transfer_claims.source_account_id",
                &claim.source_account_id,
            )?
        } else {
            target.id.clone()
        };
        let mut resources = Vec::new();
        for id in offered(&claim)? {
            resources.push(resource_to_proto(
                &self.transferable(&self.db, &id, &owner).await?,
            )?);
        }
        Ok(pb::VerifyTransferClaimResponse {
            claim: Some(claim_to_proto(&claim)?),
            resources,
        })
    }

    /// Moves a claim's resources; see `AcceptTransferClaim`.
    pub async fn accept_transfer_claim(
        &self,
        request: pb::AcceptTransferClaimRequest,
    ) -> Result<pb::TransferClaim> {
        let claim_id = parse_claim_id(&request.claim_id)?;
        let target_id = AccountId::parse("targetAccountId", &request.target_account_id)?;
        let now = self.now();
        let key = context_key(request.context.as_ref());
        let mut call =
            Call::new("provisioning.AcceptTransferClaim", &key, &request, now).sealed(&self.cipher);
        if let Some(answer) = call.replayed(&self.db).await? {
            return Ok(answer);
        }
        let found = self.require_claim(&self.db, &claim_id).await?;
        let target = self.claim_target(&found, &target_id).await?;
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        work.concerning(&target.id);
        // Taking the claim first locks its row: of two concurrent accepts,
        // the second sees it accepted.
        let taken = transfer_claim::Entity::update_many()
            .col_expr(
                transfer_claim::Column::State,
                Expr::value(ClaimState::Accepted),
            )
            .col_expr(
                transfer_claim::Column::TargetAccountId,
                Expr::value(target.id.to_string()),
            )
            .col_expr(transfer_claim::Column::AcceptedAt, Expr::value(now))
            .filter(transfer_claim::Column::Id.eq(found.id.clone()))
            .filter(transfer_claim::Column::State.eq(ClaimState::Pending))
            .filter(transfer_claim::Column::ExpiresAt.gt(now))
            .exec(&*work)
            .await
            .map_err(db_error)?
            .rows_affected;
        let claim = self.require_claim(&*work, &claim_id).await?;
        if taken == 0 {
            // Accepted before (by this account: nothing to do again), by
            // another account, or expired.
            Self::claim_open_for(&claim, &target.id, now)?;
            let response = claim_to_proto(&claim)?;
            return work.finish(response).await;
        }
        let source_id = stored_id::<AccountId>(
            "transfer_claims.source_account_id",
            &claim.source_account_id,
        )?;
        for id in offered(&claim)? {
            let row = self.transferable(&*work, &id, &source_id).await?;
            self.move_resource(&mut work, row, &target.id, now).await?;
        }
        tracing::info!(claim.id = %claim.id, from = %claim.source_account_id, to = %target.id, "transfer claim accepted");
        let response = claim_to_proto(&claim)?;
        work.finish(response).await
    }

    /// Moves a resource with its own subscription to `target`.
    async fn move_resource(
        &self,
        work: &mut UnitOfWork,
        mut row: resource::Model,
        target: &AccountId,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut subscription = self
            .load_subscription(&**work, &row.paying_subscription_id()?)
            .await?
            .ok_or_else(|| Error::internal("resource without subscription"))?;
        subscription.account_id = target.to_string();
        subscription.version += 1;
        subscription.updated_at = now;
        subscription.update_in(&**work).await?;
        self.enqueue_billing_change(work, &subscription, None)?;
        row.account_id = target.to_string();
        row.updated_at = now;
        row.update_in(&**work).await?;
        Ok(())
    }
}

/// A claim id from a request.
fn parse_claim_id(text: &str) -> Result<TransferClaimId> {
    if text.trim().is_empty() {
        return Err(Error::invalid_field("claimId", "is required"));
    }
    Ok(TransferClaimId::new(text.trim()))
}
