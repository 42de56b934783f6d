//! Idempotency records: a mutating call with a key runs once; a replay with
//! the same key and the same request gets the first response back, and the
//! same key with a different request is refused. The record is written in the
//! same transaction as the change it answers for.
//!
//! Services whose answers carry secrets or personal data start their calls
//! sealed ([`crate::unit_of_work::Call::sealed`]): the stored answer is encrypted with the at-rest
//! key, so no secret sits in this table in plain text. A record may name the
//! account it concerns, so erasing an account's personal data erases its
//! records too ([`purge_subject`]), and [`purge_older_than`] keeps the table
//! to the retention the operator set.

use crate::db::{WriteTxn, db_error, is_unique_violation};
use chrono::{DateTime, Utc};
use marketbridge_core::crypto::{Cipher, sha256_hex};
use marketbridge_core::{Error, ErrorCode, Result};
use prost::Message;
use sea_orm::entity::prelude::*;
use sea_orm::{ActiveValue::Set, DatabaseConnection};
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
        /// The encoded response; sealed ones start with a zero byte (which
        /// no encoded protobuf message starts with).
        pub response: Vec<u8>,
        /// The account the call concerned, when the service said so.
        pub subject: Option<String>,
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

/// First byte of a sealed response.
const SEALED: u8 = 0;

/// Either the stored answer of an earlier identical call, or a transaction to
/// do the work in.
// A value of this type lives for one call and is matched at once; boxing
// the transaction would only add an allocation per call.
#[allow(clippy::large_enum_variant)]
pub enum Started<M, W = IdempotentTxn> {
    /// The call was made before; this was its answer.
    Replay(M),
    /// First time: do the work in this transaction, then `finish` it.
    Fresh(W),
}

/// A transaction that records the response of an idempotent call when it
/// commits.
pub struct IdempotentTxn {
    txn: WriteTxn,
    db: DatabaseConnection,
    record: Option<(String, String, String)>,
    now: DateTime<Utc>,
    seal: Option<Cipher>,
    subject: Option<String>,
}

impl Deref for IdempotentTxn {
    type Target = WriteTxn;

    fn deref(&self) -> &WriteTxn {
        &self.txn
    }
}

fn check_key(key: &str) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(Error::invalid_field(
            "idempotencyKey",
            format!("must be at most {MAX_KEY_LEN} characters"),
        ));
    }
    Ok(())
}

/// Starts an idempotent call (the request already encoded): the stored
/// answer of an earlier identical call, or a transaction to do the work in.
/// With an empty `key` it is a plain transaction. `checked`: the caller
/// found no stored answer on the pool just before (see
/// [`crate::unit_of_work::Call::begin`]). Callers use
/// [`crate::unit_of_work::Call`].
pub(crate) async fn start_encoded<M: Message + Default>(
    db: &DatabaseConnection,
    seal: Option<&Cipher>,
    scope: &str,
    key: &str,
    request: &[u8],
    now: DateTime<Utc>,
    checked: bool,
) -> Result<Started<M, IdempotentTxn>> {
    check_key(key)?;
    let txn = crate::db::begin_write(db).await?;
    let fresh = |txn, record| {
        Started::Fresh(IdempotentTxn {
            txn,
            db: db.clone(),
            record,
            now,
            seal: seal.cloned(),
            subject: None,
        })
    };
    if key.is_empty() {
        return Ok(fresh(txn, None));
    }
    let fingerprint = sha256_hex(request);
    let sqlite = crate::db::Backend::of(db) == crate::db::Backend::Sqlite;
    // On SQLite the check inside the transaction also sees the records of
    // writers of the same group commit, which a read on the pool cannot: it
    // is made even when the caller checked.
    if !checked || sqlite {
        // Read as the transaction's first statement would see it: on
        // PostgreSQL on the pool, so the transaction does not begin for it (a
        // call that then only inserts sends them as one statement, see
        // [`WriteTxn::insert_at_commit`]); on SQLite under the file's write
        // turn.
        let stored = lookup(&txn.reads_before_writes(), scope, key).await?;
        if let Some(stored) = stored {
            if sqlite {
                // The record may be another writer's of this group commit,
                // not yet durable: it is answered with once the group
                // committed.
                txn.commit().await.map_err(db_error)?;
            }
            return replay(stored, &fingerprint, seal).map(Started::Replay);
        }
    }
    Ok(fresh(
        txn,
        Some((scope.to_owned(), key.to_owned(), fingerprint)),
    ))
}

/// The stored answer of an earlier identical call, read outside any
/// transaction; `None` for a first call or an empty key.
pub(crate) async fn replayed<M: Message + Default>(
    db: &DatabaseConnection,
    seal: Option<&Cipher>,
    scope: &str,
    key: &str,
    request: &[u8],
) -> Result<Option<M>> {
    check_key(key)?;
    if key.is_empty() {
        return Ok(None);
    }
    match lookup(db, scope, key).await? {
        Some(stored) => replay(stored, &sha256_hex(request), seal).map(Some),
        None => Ok(None),
    }
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

fn replay<M: Message + Default>(
    stored: entity::Model,
    fingerprint: &str,
    seal: Option<&Cipher>,
) -> Result<M> {
    if stored.fingerprint != fingerprint {
        return Err(Error::new(
            ErrorCode::IdempotencyKeyReused,
            "this Idempotency-Key was already used for a different request",
        )
        .with_user_message("Retry with a new Idempotency-Key"));
    }
    let opened;
    let encoded = match stored.response.split_first() {
        Some((&SEALED, sealed)) => {
            let cipher = seal.ok_or_else(|| {
                Error::internal("a sealed stored response was read without the key")
            })?;
            opened = cipher.open_bytes(sealed)?;
            opened.as_slice()
        }
        _ => stored.response.as_slice(),
    };
    M::decode(encoded).map_err(|e| Error::internal(format!("stored response unreadable: {e}")))
}

/// What is stored for `response`: sealed when the call was started sealed.
fn stored_bytes(seal: Option<&Cipher>, encoded: &[u8]) -> Result<Vec<u8>> {
    match seal {
        Some(cipher) => {
            let mut stored = vec![SEALED];
            stored.extend(cipher.seal_bytes(encoded)?);
            Ok(stored)
        }
        None => Ok(encoded.to_vec()),
    }
}

impl IdempotentTxn {
    /// Names the account this call concerns, so erasing the account's
    /// personal data erases the stored answer too.
    pub fn concerning(&mut self, account_id: &str) {
        self.subject = Some(account_id.to_owned());
    }

    /// Records `response` (when keyed) and commits. When a concurrent call with
    /// the same key committed first, this transaction is rolled back and that
    /// call's response is returned instead, so the work happens once.
    pub async fn finish<M: Message + Default>(self, response: M) -> Result<M> {
        Ok(self.finish_committed(response).await?.0)
    }

    /// [`IdempotentTxn::finish`], also telling whether this transaction
    /// committed (false: a concurrent identical call won, and the answer is
    /// its).
    pub(crate) async fn finish_committed<M: Message + Default>(
        self,
        response: M,
    ) -> Result<(M, bool)> {
        let IdempotentTxn {
            txn,
            db,
            record,
            now,
            seal,
            subject,
        } = self;
        let Some((scope, key, fingerprint)) = record else {
            txn.commit().await.map_err(db_error)?;
            return Ok((response, true));
        };
        let row = entity::ActiveModel {
            scope: Set(scope.clone()),
            key: Set(key.clone()),
            fingerprint: Set(fingerprint.clone()),
            response: Set(stored_bytes(seal.as_ref(), &response.encode_to_vec())?),
            subject: Set(subject),
            created_at: Set(now),
        };
        // With the call's other deferred inserts: on PostgreSQL a call that
        // only inserts is one statement.
        txn.insert_at_commit(sea_orm::QueryTrait::into_query(entity::Entity::insert(row)));
        match txn.commit().await {
            Ok(()) => Ok((response, true)),
            Err(error) if is_unique_violation(&error) => {
                // A concurrent call with the same key won; this transaction was
                // rolled back, so answer with the winner's response. (No
                // record: the violation was another row's.)
                match lookup(&db, &scope, &key).await? {
                    Some(stored) => Ok((replay(stored, &fingerprint, seal.as_ref())?, false)),
                    None => Err(db_error(error)),
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
    let write = crate::db::write_once(db).await?;
    let result = entity::Entity::delete_many()
        .filter(entity::Column::CreatedAt.lt(before))
        .exec(&write)
        .await
        .map_err(db_error)?;
    write.commit().await?;
    Ok(result.rows_affected)
}

/// The housekeeping of a service's records: seals answers an earlier
/// version stored in plain text (when the service seals), then keeps the
/// table to `retention`, purging older records now and every hour until
/// `stop`. Running it on several replicas at once is harmless (each step is
/// idempotent).
pub async fn housekeeping(
    db: DatabaseConnection,
    seal: Option<Cipher>,
    retention: std::time::Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    if let Some(cipher) = &seal {
        match seal_plaintext_records(&db, cipher).await {
            Ok(0) => {}
            Ok(sealed) => tracing::info!(sealed, "sealed idempotency records stored in plain text"),
            Err(error) => tracing::warn!(%error, "sealing stored idempotency records failed"),
        }
    }
    let retention = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
    loop {
        let cutoff = Utc::now()
            .checked_sub_signed(retention)
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        match purge_older_than(&db, cutoff).await {
            Ok(0) => {}
            Ok(purged) => tracing::info!(purged, "purged idempotency records past their retention"),
            Err(error) => tracing::warn!(%error, "purging idempotency records failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
        }
    }
}

/// Deletes the records naming `account_id` (erasing an account's personal
/// data); returns how many.
pub async fn purge_subject(conn: &impl ConnectionTrait, account_id: &str) -> Result<u64> {
    let result = entity::Entity::delete_many()
        .filter(entity::Column::Subject.eq(account_id))
        .exec(conn)
        .await
        .map_err(db_error)?;
    Ok(result.rows_affected)
}

/// Seals the answers an earlier version stored in plain text; returns how
/// many. Services that seal run it at start.
pub async fn seal_plaintext_records(db: &DatabaseConnection, cipher: &Cipher) -> Result<u64> {
    let rows = entity::Entity::find().all(db).await.map_err(db_error)?;
    let mut sealed = 0;
    for row in rows {
        if row.response.first() == Some(&SEALED) {
            continue;
        }
        let response = stored_bytes(Some(cipher), &row.response)?;
        let write = crate::db::write_once(db).await?;
        entity::Entity::update_many()
            .col_expr(entity::Column::Response, Expr::value(response))
            .filter(entity::Column::Scope.eq(row.scope))
            .filter(entity::Column::Key.eq(row.key))
            .exec(&write)
            .await
            .map_err(db_error)?;
        write.commit().await?;
        sealed += 1;
    }
    Ok(sealed)
}
