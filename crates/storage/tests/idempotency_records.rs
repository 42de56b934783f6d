//! Stored answers: sealed at rest, erased with the account they concern,
//! and kept no longer than the retention, on SQLite and PostgreSQL.

use chrono::Utc;
use marketbridge_config::OutboxOptions;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::time::system_clock;
use marketbridge_proto::common::v1::MarketplaceRef;
use marketbridge_storage::Call;
use marketbridge_storage::backend_test;
use marketbridge_storage::idempotency::{self, Started, entity};
use marketbridge_storage::outbox::Outbox;
use marketbridge_storage::sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, Set};
use marketbridge_storage::testing::open_with_shared_tables;

fn secret_answer(secret: &str) -> MarketplaceRef {
    MarketplaceRef {
        marketplace: 2,
        external_id: secret.into(),
    }
}

fn outbox(db: &DatabaseConnection) -> Outbox {
    Outbox::new(db.clone(), system_clock(), OutboxOptions::default())
}

/// A sealed call: a replay is answered by the read outside any transaction
/// (`Call::replayed`); a first call records `secret` as its answer.
async fn sealed_call(
    db: &DatabaseConnection,
    cipher: &Cipher,
    key: &str,
    subject: &str,
    secret: &str,
) -> MarketplaceRef {
    let request = secret_answer(key);
    let mut call = Call::new("test.Secret", key, &request, Utc::now()).sealed(cipher);
    if let Some(answer) = call.replayed::<MarketplaceRef>(db).await.unwrap() {
        return answer;
    }
    match call.begin::<MarketplaceRef>(db, &outbox(db)).await.unwrap() {
        Started::Replay(response) => response,
        Started::Fresh(mut work) => {
            work.concerning(subject);
            work.finish(secret_answer(secret)).await.unwrap()
        }
    }
}

backend_test!(
    sealed_answers_replay_but_never_sit_in_plain_text,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let cipher = Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap();
        let secret = "postgres://u:pw-4f1c9a2e7b@db/x";
        let first = sealed_call(&db, &cipher, "k1", "acc_1", secret).await;
        assert_eq!(first.external_id, secret);
        // The replay opens the sealed answer.
        let replay = sealed_call(&db, &cipher, "k1", "acc_1", "other").await;
        assert_eq!(replay.external_id, secret);
        let rows = entity::Entity::find().all(&db).await.unwrap();
        assert_eq!(rows.len(), 1);
        assert!(
            !rows[0]
                .response
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "the stored answer holds the secret in plain text"
        );
        // Without the key, a sealed answer is an error, not a default, on
        // both the read-only replay and inside the transaction.
        let request = secret_answer("k1");
        let unsealed = || Call::new("test.Secret", "k1", &request, Utc::now());
        assert!(unsealed().replayed::<MarketplaceRef>(&db).await.is_err());
        assert!(
            unsealed()
                .begin::<MarketplaceRef>(&db, &outbox(&db))
                .await
                .is_err()
        );
    }
);

backend_test!(
    plain_answers_of_an_earlier_version_are_sealed_at_start,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let cipher = Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap();
        let secret = "PGPASSWORD=pw-0b7d3e";
        use prost::Message;
        entity::ActiveModel {
            scope: Set("test.Secret".into()),
            key: Set("old".into()),
            fingerprint: Set(marketbridge_core::crypto::sha256_hex(
                &secret_answer("old").encode_to_vec(),
            )),
            response: Set(secret_answer(secret).encode_to_vec()),
            subject: Set(None),
            created_at: Set(Utc::now()),
        }
        .insert(&db)
        .await
        .unwrap();
        assert_eq!(
            idempotency::seal_plaintext_records(&db, &cipher)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            idempotency::seal_plaintext_records(&db, &cipher)
                .await
                .unwrap(),
            0
        );
        let row = entity::Entity::find().one(&db).await.unwrap().unwrap();
        assert!(
            !row.response
                .windows(secret.len())
                .any(|w| w == secret.as_bytes())
        );
        let replay = sealed_call(&db, &cipher, "old", "acc_1", "new").await;
        assert_eq!(replay.external_id, secret);
    }
);

backend_test!(
    records_go_with_their_account_and_their_retention,
    |database| async move {
        let db = open_with_shared_tables(&database).await;
        let cipher = Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap();
        sealed_call(&db, &cipher, "a1", "acc_a", "alice@example.com").await;
        sealed_call(&db, &cipher, "a2", "acc_a", "alice@example.com").await;
        sealed_call(&db, &cipher, "b1", "acc_b", "bob@example.com").await;
        assert_eq!(idempotency::purge_subject(&db, "acc_a").await.unwrap(), 2);
        let left = entity::Entity::find().all(&db).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].subject.as_deref(), Some("acc_b"));

        // Housekeeping with a zero retention leaves nothing older than now.
        let stop = tokio_util::sync::CancellationToken::new();
        stop.cancel();
        idempotency::housekeeping(db.clone(), Some(cipher), std::time::Duration::ZERO, stop).await;
        assert!(entity::Entity::find().all(&db).await.unwrap().is_empty());
    }
);
