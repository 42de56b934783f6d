//! The account's marketplace credential over its life: the token handed to
//! callers (short-lived when the marketplace issues them, one cache per
//! installation in the adapter), rotation and revocation through the outbox,
//! and the marketplace's `410 Gone`, after which nothing is called for the
//! account any more.

use super::{AccountDomain, context_key};
use crate::adapter::{AccountMarketplace, CallCredential};
use crate::convert::{account_to_proto, marketplace_of};
use crate::entity::account;
use crate::model::{AccountJob, AccountKey, AccountState, RotationId, RotationTask, TokenId};
use marketbridge_core::crypto::SecretString;
use marketbridge_core::ids::AccountId;
use marketbridge_core::time::to_timestamp;
use marketbridge_core::{Error, Result, Validator};
use marketbridge_proto::account::v1 as pb;
use marketbridge_storage::outbox::NewJob;
use marketbridge_storage::{Call, UnitOfWork, db_error, unit_of_work};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use std::sync::Arc;

/// What a rotation job found to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// Nothing: the rotation is complete (or the account is gone).
    Done,
    /// Retry later (the revocation failed; both credentials are kept).
    Again,
}

fn gone_error(row: &account::Model) -> Error {
    Error::unprocessable(format!(
        "the account is gone at its marketplace since {}: {}",
        row.marketplace_gone_at
            .map(|t| t.to_rfc3339())
            .unwrap_or_default(),
        row.marketplace_gone_reason.as_deref().unwrap_or_default()
    ))
}

impl AccountDomain {
    fn adapter_of(&self, row: &account::Model) -> Result<Arc<dyn AccountMarketplace>> {
        let marketplace = marketplace_of(&row.marketplace)?;
        self.adapters.get(marketplace).cloned().ok_or_else(|| {
            Error::unprocessable(format!(
                "no adapter is configured for marketplace {marketplace}"
            ))
        })
    }

    /// The marketplace credential: the stored one, or with `for_call` the
    /// token to call the marketplace with now.
    pub async fn credential(
        &self,
        account: &AccountKey,
        request: pb::GetMarketplaceCredentialRequest,
    ) -> Result<pb::MarketplaceCredential> {
        let row = self.require(&self.db, account).await?;
        let stored = self.credential_of(&row)?;
        if !request.for_call {
            let token = stored
                .ok_or_else(|| Error::not_found("no credential is stored for this account"))?;
            return Ok(pb::MarketplaceCredential {
                access_token: token.into_exposed(),
                token_type: row.credential_type,
                ..Default::default()
            });
        }
        if row.marketplace_gone_at.is_some() {
            return Err(gone_error(&row));
        }
        let stale = Some(TokenId::new(request.stale_token_id)).filter(|t| !t.is_empty());
        let token = match self.adapters.get(marketplace_of(&row.marketplace)?) {
            Some(adapter) => match adapter
                .call_token(&row, stored.as_ref(), stale.as_ref())
                .await
            {
                Ok(token) => token,
                Err(error) if adapter.is_gone(&error) => {
                    let row = self
                        .record_gone(&row.account_id()?, error.message())
                        .await?;
                    return Err(gone_error(&row));
                }
                Err(error) => return Err(error),
            },
            None => CallCredential {
                secret: stored
                    .ok_or_else(|| Error::not_found("no credential is stored for this account"))?,
                kind: "long-lived".to_owned(),
                expires_at: None,
            },
        };
        Ok(pb::MarketplaceCredential {
            access_token: token.secret.into_exposed(),
            token_type: if row.credential_type.is_empty() {
                "Bearer".to_owned()
            } else {
                row.credential_type
            },
            token_kind: token.kind,
            expires_at: token.expires_at.map(to_timestamp),
        })
    }

    /// Records that the marketplace answered `410 Gone` for the account
    /// (the first time and reason are kept) and forgets its tokens.
    pub(crate) async fn record_gone(
        &self,
        account_id: &AccountId,
        reason: &str,
    ) -> Result<account::Model> {
        let mut row = self.by_id(account_id).await?;
        if row.marketplace_gone_at.is_none() {
            let now = self.now();
            row.marketplace_gone_at = Some(now);
            row.marketplace_gone_reason = Some(reason.chars().take(1000).collect());
            row.updated_at = now;
            self.save_alone(&row).await?;
            tracing::warn!(
                account.id = %row.id,
                marketplace = %row.marketplace,
                installation.id = %row.external_id,
                reason = %reason,
                "the marketplace answered 410 Gone: the account is marked gone and no further calls are made for it; unsent invoices may be lost"
            );
        }
        if let Ok(adapter) = self.adapter_of(&row) {
            adapter.forget_tokens(&row);
        }
        Ok(row)
    }

    /// `MarkMarketplaceGone`.
    pub async fn mark_gone(
        &self,
        account: &AccountKey,
        request: pb::MarkMarketplaceGoneRequest,
    ) -> Result<pb::Account> {
        let mut validator = Validator::new();
        validator.require("reason", &request.reason);
        validator.max_len("reason", &request.reason, 1000);
        validator.finish()?;
        let row = self.require(&self.db, account).await?;
        let row = self
            .record_gone(&row.account_id()?, &request.reason)
            .await?;
        account_to_proto(&row)
    }

    /// `RotateMarketplaceCredential`: schedules a rotation (once per
    /// idempotency key).
    pub async fn rotate_credential(
        &self,
        account: &AccountKey,
        request: pb::RotateMarketplaceCredentialRequest,
    ) -> Result<pb::Account> {
        let key = context_key(request.context.as_ref()).to_owned();
        let call = Call::new(
            "account.RotateMarketplaceCredential",
            &key,
            &request,
            self.now(),
        )
        .sealed(&self.cipher);
        let mut work = unit_of_work!(call, &self.db, &self.outbox);
        let row = self.require(&*work, account).await?;
        self.check_rotatable(&row)?;
        let rotation_id = RotationId::new(if key.is_empty() {
            marketbridge_core::crypto::random_token(12)
        } else {
            key.clone()
        });
        work.enqueue(rotation_job(&row.account_id()?, rotation_id)?)
            .await?;
        tracing::info!(account.id = %row.id, "credential rotation requested");
        work.concerning(&row.id);
        work.finish(account_to_proto(&row)?).await
    }

    fn check_rotatable(&self, row: &account::Model) -> Result<()> {
        if row.state != AccountState::Active {
            return Err(Error::conflict("the account is deleted"));
        }
        if row.marketplace_gone_at.is_some() {
            return Err(gone_error(row));
        }
        if row.credential.is_none() {
            return Err(Error::unprocessable(
                "no credential is stored for this account",
            ));
        }
        if !self.adapter_of(row)?.rotates_credentials() {
            return Err(Error::unprocessable(
                "this marketplace does not rotate credentials",
            ));
        }
        Ok(())
    }

    /// Schedules a rotation of every active account of `marketplace` whose
    /// credential is older than `max_age` (once per credential); returns how
    /// many were scheduled.
    pub async fn schedule_rotations(
        &self,
        marketplace: marketbridge_core::Marketplace,
        max_age: chrono::Duration,
    ) -> Result<usize> {
        let now = self.now();
        let rows = account::Entity::find()
            .filter(account::Column::Marketplace.eq(marketplace.as_str()))
            .filter(account::Column::State.eq(AccountState::Active))
            .filter(account::Column::Credential.is_not_null())
            .filter(account::Column::MarketplaceGoneAt.is_null())
            .all(&self.db)
            .await
            .map_err(db_error)?;
        let mut scheduled = 0;
        let mut work = UnitOfWork::begin(&self.db, &self.outbox).await?;
        for row in rows {
            let since = row.credential_rotated_at.unwrap_or(row.created_at);
            if since + max_age > now {
                continue;
            }
            let rotation_id = RotationId::new(format!("scheduled-{}", since.timestamp_micros()));
            let job = rotation_job(&row.account_id()?, rotation_id)?;
            if work.enqueue(job).await?.is_some() {
                tracing::info!(account.id = %row.id, "scheduled credential rotation");
                scheduled += 1;
            }
        }
        work.commit().await?;
        Ok(scheduled)
    }

    /// One run of a rotation job: revokes a superseded credential still
    /// waiting, rotates (once per rotation id), stores the new credential
    /// next to the old one, then revokes the old one with the new one.
    pub async fn run_rotation(
        &self,
        account_id: &AccountId,
        rotation_id: &RotationId,
    ) -> Result<RotationStep> {
        let row = self.by_id(account_id).await?;
        if row.state != AccountState::Active || row.marketplace_gone_at.is_some() {
            tracing::info!(account.id = %row.id, "credential rotation skipped: the account is deleted or gone");
            return Ok(RotationStep::Done);
        }
        let adapter = self.adapter_of(&row)?;
        let rotated = row.credential_rotation_id.as_deref() == Some(rotation_id.as_str());
        if !rotated {
            if row.previous_credential.is_some() {
                // An earlier rotation's old credential is still live: retire
                // it before making another.
                if self.revoke_previous(&row, &adapter).await? == RotationStep::Again {
                    return Ok(RotationStep::Again);
                }
            }
            let row = self.by_id(account_id).await?;
            let current = self
                .credential_of(&row)?
                .ok_or_else(|| Error::unprocessable("no credential is stored for this account"))?;
            let new = match adapter.rotate_credential(&row, &current).await {
                Ok(new) => new,
                Err(error) if adapter.is_gone(&error) => {
                    self.record_gone(account_id, error.message()).await?;
                    return Ok(RotationStep::Done);
                }
                Err(error) => return Err(error),
            };
            if new.expose() == current.expose() {
                return Err(Error::unprocessable(
                    "the marketplace answered the rotation with the same credential",
                ));
            }
            let mut changed = row.clone();
            let now = self.now();
            changed.previous_credential = row.credential.clone();
            changed.credential = Some(self.cipher.encrypt(new.expose())?);
            changed.credential_rotated_at = Some(now);
            changed.credential_rotation_id = Some(rotation_id.as_str().to_owned());
            changed.updated_at = now;
            self.save_alone(&changed).await?;
            tracing::info!(account.id = %row.id, "credential rotated; callers use the new one");
        }
        let row = self.by_id(account_id).await?;
        if row.previous_credential.is_none() {
            return Ok(RotationStep::Done);
        }
        self.revoke_previous(&row, &adapter).await
    }

    async fn revoke_previous(
        &self,
        row: &account::Model,
        adapter: &Arc<dyn AccountMarketplace>,
    ) -> Result<RotationStep> {
        let (Some(live), Some(retired)) = (
            self.credential_of(row)?,
            row.previous_credential
                .as_deref()
                .map(|sealed| self.cipher.decrypt(sealed))
                .transpose()?,
        ) else {
            return Ok(RotationStep::Done);
        };
        if live.expose() != retired.expose() {
            // Never the last live credential: `live` stays.
            match adapter.revoke_credential(row, &live, &retired).await {
                Ok(()) => {}
                Err(error) if adapter.is_gone(&error) => {
                    self.record_gone(&row.account_id()?, error.message())
                        .await?;
                    return Ok(RotationStep::Done);
                }
                Err(error) => {
                    tracing::warn!(account.id = %row.id, error = %error, "revoking the superseded credential failed; both are kept and it is retried");
                    return if error.code().is_transient()
                        || error.code() == marketbridge_core::ErrorCode::Internal
                    {
                        Ok(RotationStep::Again)
                    } else {
                        Err(error)
                    };
                }
            }
        }
        let mut changed = row.clone();
        changed.previous_credential = None;
        changed.updated_at = self.now();
        self.save_alone(&changed).await?;
        tracing::info!(account.id = %row.id, "superseded credential revoked");
        Ok(RotationStep::Done)
    }

    /// The token to call the marketplace with for `row` (refreshes use it).
    pub(crate) async fn call_secret(&self, row: &account::Model) -> Result<Option<SecretString>> {
        if row.marketplace_gone_at.is_some() {
            return Err(gone_error(row));
        }
        let stored = self.credential_of(row)?;
        let Some(adapter) = self.adapters.get(marketplace_of(&row.marketplace)?) else {
            return Ok(stored);
        };
        if stored.is_none() {
            return Ok(None);
        }
        match adapter.call_token(row, stored.as_ref(), None).await {
            Ok(token) => Ok(Some(token.secret)),
            Err(error) if adapter.is_gone(&error) => {
                let row = self
                    .record_gone(&row.account_id()?, error.message())
                    .await?;
                Err(gone_error(&row))
            }
            Err(error) => Err(error),
        }
    }
}

/// The rotation job of an account, once per rotation id.
fn rotation_job(account_id: &AccountId, rotation_id: RotationId) -> Result<NewJob> {
    let dedupe = format!("rotate:{account_id}:{rotation_id}");
    Ok(NewJob::of(&AccountJob::RotateCredential(RotationTask {
        account_id: account_id.clone(),
        rotation_id,
    }))?
    .dedupe_key(dedupe))
}
