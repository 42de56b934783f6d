//! Concurrent writes to one account, as two replicas make them: a signup
//! completing while the account's notification is applied. Writers re-read
//! the row under a lock inside their transaction, so neither loses the
//! other's change; a pending state read before our approval went through
//! does not take the approval back.

use marketbridge_account::convert::account_key;
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace, MarketplaceRef, Person};
use marketbridge_storage::backend_test;
use marketbridge_storage::sea_orm::{ActiveModelTrait, IntoActiveModel};
use std::time::Duration;

mod support;

fn google(external_id: &str) -> Option<AccountSelector> {
    Some(AccountSelector::by_ref(Marketplace::Google, external_id))
}

fn described(
    external_id: &str,
    signup: account_pb::SignupState,
) -> account_pb::UpsertAccountRequest {
    account_pb::UpsertAccountRequest {
        marketplace_ref: Some(MarketplaceRef::new(Marketplace::Google, external_id)),
        signup_required: true,
        marketplace_signup_state: signup as i32,
        marketplace_state: "ACCOUNT_ACTIVE".into(),
        ..Default::default()
    }
}

backend_test!(
    a_signup_waits_for_a_concurrent_write_and_keeps_it,
    |database| async move {
        let server = support::open(database.url()).await;
        let domain = server.domain().clone();
        domain
            .upsert(described("acct-1", account_pb::SignupState::Pending))
            .await
            .unwrap();

        // Another replica writes the account from what it read: it holds
        // the row until it commits.
        let txn = marketbridge_storage::begin_write(domain.db())
            .await
            .unwrap();
        let row = domain
            .find(&txn, google("acct-1").as_ref())
            .await
            .unwrap()
            .unwrap();
        let signup = tokio::spawn({
            let domain = domain.clone();
            async move {
                let account = account_key(google("acct-1").as_ref()).unwrap();
                domain
                    .approve_signup(
                        &account,
                        account_pb::ApproveSignupRequest {
                            account: google("acct-1"),
                            person: Some(Person {
                                name: "Ada".into(),
                                email: "ada@example.com".into(),
                                ..Default::default()
                            }),
                            company: "Engines".into(),
                            ..Default::default()
                        },
                    )
                    .await
            }
        });
        // Let the signup reach its read of the row while it is held.
        tokio::time::sleep(Duration::from_millis(300)).await;
        // It writes the whole row it read, as upsert does.
        let mut changed = row.clone();
        changed.url = "https://renamed.example".into();
        changed
            .into_active_model()
            .reset_all()
            .update(&txn)
            .await
            .unwrap();
        txn.commit().await.unwrap();
        let signed_up = signup.await.unwrap().unwrap();

        let stored = domain
            .find(domain.db(), google("acct-1").as_ref())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            stored.url, "https://renamed.example",
            "the other write is kept"
        );
        assert_eq!(
            stored.signup_state.as_str(),
            "approving",
            "the signup is kept"
        );
        assert_eq!(stored.company, "Engines");
        assert_eq!(
            signed_up.signup_state,
            account_pb::SignupState::Approving as i32
        );
    }
);

backend_test!(
    a_pending_state_read_before_our_approval_does_not_undo_it,
    |database| async move {
        let server = support::open(database.url()).await;
        let domain = server.domain();
        domain
            .upsert(described("acct-2", account_pb::SignupState::Pending))
            .await
            .unwrap();
        let approved = domain
            .upsert(described("acct-2", account_pb::SignupState::Approved))
            .await
            .unwrap();
        assert_eq!(
            approved.signup_state,
            account_pb::SignupState::Approved as i32
        );
        // A notification processed late, with what Google said before.
        let late = domain
            .upsert(described("acct-2", account_pb::SignupState::Pending))
            .await
            .unwrap();
        assert_eq!(
            late.signup_state,
            account_pb::SignupState::Approved as i32,
            "the approval stays"
        );
    }
);
