//! Idempotency records: a mutating call with a key runs once; a replay with
//! the same key and the same request gets the first response back, and the
//! same key with a different request is refused. The record is written in the
//! same transaction as the change it answers for.

use crate::db::{db_error, is_unique_violation};
use chrono::{DateTime, Utc};
use marketbridge_core::crypto::sha256_hex;
use marketbridge_core::{Error, ErrorCode, Result};
use prost::Message;
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseConnection, DatabaseTransaction};
use std::ops::Deref;

/// The `idempotency_records` table.
pub mod entity {
    use sea_orm::entity::prelude::*;

    /// One answered request.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "idempotency_records")]
    pub struct Model {
        /// The operation (`provisioning.CreateResource`).
        #[sea_orm(primary_key, auto_increment = false)]
        pub scope: String,
        /// The caller's key.
        #[sea_orm(primary_key, auto_increment = false)]
        pub key: String,
        /// SHA-256 of the request.
        pub fingerprint: String,
        /// The encoded response.
        pub response: Vec<u8>,
        /// When it was first answered.
        pub created_at: ChronoDateTimeUtc,
    }

    /// No relations.
    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Longest accepted idempotency key.
pub const MAX_KEY_LEN: usize = 255;

/// Either the stored answer of an earlier identical call, or a transaction to
/// do the work in.
pub enum Started<M> {
    /// The call was made before; this was its answer.
    Replay(M),
    /// First time: do the work in this transaction, then `finish` it.
    Fresh(IdempotentTxn),
}

/// A transaction that records the response of an idempotent call when it
/// commits.
pub struct IdempotentTxn {
    txn: DatabaseTransaction,
    db: DatabaseConnection,
    record: Option<(String, String, String)>,
    now: DateTime<Utc>,
}

impl Deref for IdempotentTxn {
    type Target = DatabaseTransaction;

    fn deref(&self) -> &DatabaseTransaction {
        &self.txn
    }
}

/// Starts an idempotent call. With an empty `key` it is a plain transaction.
pub async fn start<M: Message + Default>(
    db: &DatabaseConnection,
    scope: &str,
    key: &str,
    request: &impl Message,
    now: DateTime<Utc>,
) -> Result<Started<M>> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid_field(
            "idempotencyKey",
            format!("must be at most {MAX_KEY_LEN} characters"),
        ));
    }
    let txn = crate::db::begin_write(db).await?;
    if key.is_empty() {
        return Ok(Started::Fresh(IdempotentTxn {
            txn,
            db: db.clone(),
            record: None,
            now,
        }));
    }
    let fingerprint = sha256_hex(&request.encode_to_vec());
    if let Some(stored) = lookup(&txn, scope, key).await? {
        return replay(stored, &fingerprint).map(Started::Replay);
    }
    Ok(Started::Fresh(IdempotentTxn {
        txn,
        db: db.clone(),
        record: Some((scope.to_owned(), key.to_owned(), fingerprint)),
        now,
    }))
}

async fn lookup(
    conn: &impl ConnectionTrait,
    scope: &str,
    key: &str,
) -> Result<Option<entity::Model>> {
    entity::Entity::find_by_id((scope.to_owned(), key.to_owned()))
        .one(conn)
        .await
        .map_err(db_error)
}

fn replay<M: Message + Default>(stored: entity::Model, fingerprint: &str) -> Result<M> {
    if stored.fingerprint != fingerprint {
        return Err(Error::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used for a different request",
        )
        .with_user_message("Retry with a new Idempotency-Key"));
    }
    M::decode(stored.response.as_slice())
        .map_err(|e| Error::internal(format!("stored response unreadable: {e}")))
}

impl IdempotentTxn {
    /// Records `response` (when keyed) and commits. When a concurrent call with
    /// the same key committed first, this transaction is rolled back and that
    /// call's response is returned instead, so the work happens once.
    pub async fn finish<M: Message + Default>(self, response: M) -> Result<M> {
        let IdempotentTxn {
            txn,
            db,
            record,
            now,
        } = self;
        let Some((scope, key, fingerprint)) = record else {
            txn.commit().await.map_err(db_error)?;
            return Ok(response);
        };
        let row = entity::ActiveModel {
            scope: Set(scope.clone()),
            key: Set(key.clone()),
            fingerprint: Set(fingerprint.clone()),
            response: Set(response.encode_to_vec()),
            created_at: Set(now),
        };
        let inserted = entity::Entity::insert(row)
            .exec_without_returning(&txn)
            .await;
        let committed = match inserted {
            Ok(_) => txn.commit().await,
            Err(error) => Err(error),
        };
        match committed {
            Ok(()) => Ok(response),
            Err(error) if is_unique_violation(&error) => {
                // A concurrent call with the same key won; this transaction was
                // rolled back, so answer with the winner's response.
                match lookup(&db, &scope, &key).await? {
                    Some(stored) => replay(stored, &fingerprint),
                    None => Err(Error::conflict(
                        "concurrent request with the same Idempotency-Key; retry",
                    )),
                }
            }
            Err(error) => Err(db_error(error)),
        }
    }

    /// Commits without recording a response (the call failed in a way that
    /// must not be replayed, but its partial writes are wanted).
    pub async fn commit_without_record(self) -> Result<()> {
        self.txn.commit().await.map_err(db_error)
    }

    /// The time the call started at.
    pub fn now(&self) -> DateTime<Utc> {
        self.now
    }
}

/// Deletes records older than `before`; returns how many.
pub async fn purge_older_than(db: &DatabaseConnection, before: DateTime<Utc>) -> Result<u64> {
    let result = entity::Entity::delete_many()
        .filter(entity::Column::CreatedAt.lt(before))
        .exec(db)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected)
}

/// Starts an idempotent call in a function returning `Result<Response>`: on a
/// replay it returns the stored response from the enclosing function, on a
/// first call it evaluates to the [`IdempotentTxn`] to do the work in.
///
/// ```ignore
/// let txn = idempotent_txn!(&self.db, "provisioning.CreateResource", &key, &request, now);
/// ```
#[macro_export]
macro_rules! idempotent_txn {
    ($db:expr, $scope:expr, $key:expr, $request:expr, $now:expr) => {
        match $crate::idempotency::start($db, $scope, $key, $request, $now).await? {
            $crate::idempotency::Started::Replay(response) => return Ok(response),
            $crate::idempotency::Started::Fresh(txn) => txn,
        }
    };
}
