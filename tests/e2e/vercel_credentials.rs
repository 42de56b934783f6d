//! Installation credentials (contract §3.2, §4): short-lived tokens from the
//! client-credentials grant, cached per installation, replaced before they
//! expire and after a 401, one request at a time; the stored long-lived
//! token while the grant fails; rotation and revocation through the outbox;
//! and `410 Gone`, which stops every call for the installation.

use crate::vercel_support::{
    CACHE_DELAY_SECONDS, VercelOptions, VercelTest, provision_body, resource_path, vercel_set,
};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_proto::common::v1::{AccountSelector, Marketplace, RequestContext};
use marketbridge_simulators::common::Fault;
use marketbridge_simulators::vercel::InstallationHandle;
use marketbridge_simulators::vercel::tokens::GRANT_PATH;
use marketbridge_storage::backend_test;
use serde_json::json;

fn long_lived(config: &mut marketbridge_config::Config) {
    config.vercel.installation_tokens = "long-lived".into();
}

fn scheduled_rotation(config: &mut marketbridge_config::Config) {
    config.vercel.installation_tokens = "long-lived".into();
    config.vercel.credential_rotation_days = 30;
}

fn with_tweak(tweak: fn(&mut marketbridge_config::Config)) -> VercelOptions {
    VercelOptions {
        tweak: Some(tweak),
        ..VercelOptions::manual()
    }
}

fn selector(installation: &InstallationHandle) -> Option<AccountSelector> {
    Some(AccountSelector::by_ref(
        Marketplace::Vercel,
        &installation.id,
    ))
}

/// The token a caller gets for a call now.
async fn call_token(
    vercel: &VercelTest,
    installation: &InstallationHandle,
    stale_token_id: &str,
) -> Result<account_pb::MarketplaceCredential, tonic::Status> {
    let mut accounts = vercel.test.set.clients.account.clone();
    accounts
        .get_marketplace_credential(account_pb::GetMarketplaceCredentialRequest {
            account: selector(installation),
            for_call: true,
            stale_token_id: stale_token_id.to_owned(),
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The tokens `n` callers asking at the same moment get.
async fn concurrent_tokens(
    vercel: &VercelTest,
    installation: &InstallationHandle,
    n: usize,
) -> Vec<String> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let mut accounts = vercel.test.set.clients.account.clone();
        let account = selector(installation);
        tasks.spawn(async move {
            accounts
                .get_marketplace_credential(account_pb::GetMarketplaceCredentialRequest {
                    account,
                    for_call: true,
                    stale_token_id: String::new(),
                })
                .await
                .expect("a token")
                .into_inner()
                .access_token
        });
    }
    tasks.join_all().await
}

/// The stored (long-lived) credential.
async fn stored_token(vercel: &VercelTest, installation: &InstallationHandle) -> String {
    let mut accounts = vercel.test.set.clients.account.clone();
    accounts
        .get_marketplace_credential(account_pb::GetMarketplaceCredentialRequest {
            account: selector(installation),
            ..Default::default()
        })
        .await
        .expect("a stored credential")
        .into_inner()
        .access_token
}

async fn rotate(
    vercel: &VercelTest,
    installation: &InstallationHandle,
    key: &str,
) -> account_pb::Account {
    let mut accounts = vercel.test.set.clients.account.clone();
    accounts
        .rotate_marketplace_credential(account_pb::RotateMarketplaceCredentialRequest {
            context: Some(RequestContext {
                idempotency_key: key.to_owned(),
                actor: None,
            }),
            account: selector(installation),
        })
        .await
        .expect("the rotation is accepted")
        .into_inner()
}

/// Provisions a `cache` resource and lets it become ready, which tells
/// Vercel (status, secrets, event); returns its id.
async fn ready_cache(
    vercel: &VercelTest,
    installation: &InstallationHandle,
    admin: &str,
) -> String {
    let resource = vercel
        .provision(
            installation,
            admin,
            provision_body("cache", "standard", "cache", json!({})),
        )
        .await;
    let resource_id = resource["id"].as_str().unwrap().to_owned();
    vercel.advance(CACHE_DELAY_SECONDS + 1);
    vercel.drain().await;
    assert_eq!(
        vercel
            .sim
            .resource(&installation.id, &resource_id)
            .unwrap()
            .status,
        "ready"
    );
    resource_id
}

/// Asks for new secrets of a `cache` resource (pushed to Vercel later, from
/// the outbox).
async fn rotate_secrets(
    vercel: &VercelTest,
    installation: &InstallationHandle,
    admin: &str,
    resource_id: &str,
) {
    let answer = vercel
        .partner
        .post(&format!(
            "{}/secrets/rotate",
            resource_path(installation, resource_id)
        ))
        .user(admin)
        .json(&json!({}))
        .send()
        .await;
    assert_eq!(answer.status, 202, "{}", answer.text);
}

/// The bearer tokens the Vercel API received for an installation's
/// resources, in order, with the answer's status.
fn resource_calls(vercel: &VercelTest, installation: &InstallationHandle) -> Vec<(String, u16)> {
    let prefix = format!("/v1/installations/{}/", installation.id);
    vercel
        .sim
        .recorder()
        .calls()
        .into_iter()
        .filter(|c| c.path.starts_with(&prefix))
        .map(|c| {
            let token = c
                .header("authorization")
                .unwrap_or_default()
                .trim_start_matches("Bearer ")
                .to_owned();
            (token, c.status)
        })
        .collect()
}

backend_test!(
    short_lived_tokens_are_cached_refreshed_and_requested_once_at_a_time,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let sim = &vercel.sim;
        let (installation, admin) = vercel.install().await;

        // Provisioning tells Vercel three times; one grant serves them all.
        let resource_id = ready_cache(&vercel, &installation, &admin).await;
        assert_eq!(sim.token_grants(&installation.id), 1);
        let calls = resource_calls(&vercel, &installation);
        assert!(calls.len() >= 3, "{calls:?}");
        assert!(
            calls
                .iter()
                .all(|(token, status)| token.starts_with("vst_") && *status < 300),
            "every call used the short-lived token: {calls:?}"
        );
        let first = call_token(&vercel, &installation, "").await.unwrap();
        assert_eq!(first.token_kind, "short-lived");
        assert_eq!(first.access_token, calls[0].0);
        assert_ne!(first.access_token, installation.token);
        let expires_at = first.expires_at.unwrap();
        let now = vercel.test.now().timestamp();
        assert!(
            (expires_at.seconds - now - 3600).abs() <= 1,
            "an hour from the grant"
        );

        // Concurrent callers share the cached token.
        for token in concurrent_tokens(&vercel, &installation, 8).await {
            assert_eq!(token, first.access_token);
        }
        assert_eq!(sim.token_grants(&installation.id), 1);

        // Five minutes before expiry the token is replaced, once, however
        // many callers ask at the same moment.
        vercel.advance(3600 - 300 - 1);
        assert_eq!(
            call_token(&vercel, &installation, "")
                .await
                .unwrap()
                .access_token,
            first.access_token
        );
        vercel.advance(2);
        let renewed = concurrent_tokens(&vercel, &installation, 8).await;
        assert_eq!(sim.token_grants(&installation.id), 2);
        assert!(renewed.iter().all(|t| t == &renewed[0]));
        assert_ne!(renewed[0], first.access_token);

        // Vercel expires the token early: the call's 401 gets one new token
        // and one retry, and the job succeeds.
        sim.expire_short_lived_tokens(&installation.id);
        let before = resource_calls(&vercel, &installation).len();
        rotate_secrets(&vercel, &installation, &admin, &resource_id).await;
        let mut rounds = 0;
        while sim
            .installation(&installation.id)
            .unwrap()
            .events_of_type("resource.updated")
            .len()
            < 2
        {
            vercel.drain().await;
            vercel.advance(5);
            rounds += 1;
            assert!(rounds < 20, "the new secrets never reached Vercel");
        }
        let after = resource_calls(&vercel, &installation)[before..].to_vec();
        assert_eq!(after[0].1, 401, "{after:?}");
        assert_eq!(after[0].0, renewed[0]);
        assert!(
            after[1..].iter().all(|(_, status)| *status < 300),
            "{after:?}"
        );
        assert!(after[1..].iter().all(|(token, _)| token != &renewed[0]));
        assert_eq!(
            after.iter().filter(|(_, status)| *status == 401).count(),
            1,
            "one refusal, one retry"
        );
        assert_eq!(sim.token_grants(&installation.id), 3);

        // A refusal reported late, for a token already replaced, asks for
        // nothing new.
        let current = call_token(&vercel, &installation, "").await.unwrap();
        let stale_id = marketbridge_vercel::api::credentials::token_id(
            &marketbridge_core::crypto::SecretString::new(renewed[0].clone()),
        );
        let again = call_token(&vercel, &installation, &stale_id).await.unwrap();
        assert_eq!(again.access_token, current.access_token);
        assert_eq!(sim.token_grants(&installation.id), 3);
        vercel.stop().await;
    }
);

backend_test!(
    the_long_lived_token_serves_while_the_grant_fails,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let sim = &vercel.sim;
        let (installation, admin) = vercel.install().await;
        sim.faults().inject(Fault::status(GRANT_PATH, 503, 1000));

        let token = call_token(&vercel, &installation, "").await.unwrap();
        assert_eq!(token.token_kind, "long-lived");
        assert_eq!(token.access_token, installation.token);
        assert!(token.expires_at.is_none());

        ready_cache(&vercel, &installation, &admin).await;
        let calls = resource_calls(&vercel, &installation);
        assert!(calls.len() >= 3);
        assert!(
            calls
                .iter()
                .all(|(token, status)| token == &installation.token && *status < 300),
            "{calls:?}"
        );
        assert_eq!(sim.token_grants(&installation.id), 0);

        // Once the grant answers, calls move to short-lived tokens.
        sim.faults().clear();
        let token = call_token(&vercel, &installation, "").await.unwrap();
        assert_eq!(token.token_kind, "short-lived");
        assert_eq!(sim.token_grants(&installation.id), 1);
        vercel.stop().await;
    }
);

backend_test!(
    an_operator_rotation_rotates_then_revokes_once,
    |database| async move {
        let vercel = vercel_set(&database, with_tweak(long_lived)).await;
        let sim = &vercel.sim;
        let (installation, _admin) = vercel.install().await;
        let rotate_path = format!("/v1/installations/{}/credentials/rotate", installation.id);
        let revoke_path = format!("/v1/installations/{}/credentials/revoke", installation.id);

        let first = rotate(&vercel, &installation, "rotate-1").await;
        let replay = rotate(&vercel, &installation, "rotate-1").await;
        assert_eq!(first, replay);
        vercel.drain().await;
        assert_eq!(sim.recorder().accepted("POST", &rotate_path).len(), 1);
        assert_eq!(sim.recorder().accepted("POST", &revoke_path).len(), 1);
        // Rotate authenticates with the old token and the client secret;
        // revoke with the new token, naming the old one.
        let rotation = &sim.recorder().accepted("POST", &rotate_path)[0];
        assert_eq!(
            rotation.header("authorization").unwrap(),
            format!("Bearer {}", installation.token)
        );
        assert_eq!(rotation.json()["client_secret"], sim.client_secret());
        let new_token = stored_token(&vercel, &installation).await;
        assert_ne!(new_token, installation.token);
        assert_eq!(
            sim.live_credentials(&installation.id),
            std::slice::from_ref(&new_token)
        );
        let revocation = &sim.recorder().accepted("POST", &revoke_path)[0];
        assert_eq!(
            revocation.header("authorization").unwrap(),
            format!("Bearer {new_token}")
        );
        assert_eq!(revocation.json()["token"], installation.token);

        let account = vercel.account(&installation).await;
        assert!(account.credential_rotated_at.is_some());
        assert!(!account.credential_revocation_pending);

        // The old token is refused; calls keep working with the new one.
        let http = reqwest::Client::new();
        let old = http
            .get(format!(
                "{}/v1/installations/{}/account",
                sim.url(),
                installation.id
            ))
            .bearer_auth(&installation.token)
            .send()
            .await
            .unwrap();
        assert_eq!(old.status(), 401);
        let token = call_token(&vercel, &installation, "").await.unwrap();
        assert_eq!(token.token_kind, "long-lived");
        assert_eq!(token.access_token, new_token);
        let mut accounts = vercel.test.set.clients.account.clone();
        accounts
            .refresh_account(account_pb::RefreshAccountRequest {
                account: selector(&installation),
            })
            .await
            .expect("a refresh with the new token");
        let reads = sim.recorder().accepted(
            "GET",
            &format!("/v1/installations/{}/account", installation.id),
        );
        assert_eq!(
            reads.last().unwrap().header("authorization").unwrap(),
            format!("Bearer {new_token}")
        );

        // The same key again changes nothing.
        rotate(&vercel, &installation, "rotate-1").await;
        vercel.drain().await;
        assert_eq!(sim.recorder().accepted("POST", &rotate_path).len(), 1);

        // Vercel itself never retires the last live credential.
        let last = http
            .post(format!("{}{revoke_path}", sim.url()))
            .bearer_auth(&new_token)
            .json(&json!({"client_secret": sim.client_secret(), "token": new_token}))
            .send()
            .await
            .unwrap();
        assert_eq!(last.status(), 409);
        vercel.stop().await;
    }
);

backend_test!(
    a_failed_revocation_keeps_both_credentials_and_is_retried,
    |database| async move {
        let vercel = vercel_set(&database, with_tweak(long_lived)).await;
        let sim = &vercel.sim;
        let (installation, _admin) = vercel.install().await;
        let revoke_path = format!("/v1/installations/{}/credentials/revoke", installation.id);
        sim.faults()
            .inject(Fault::status(revoke_path.clone(), 503, 1));

        rotate(&vercel, &installation, "rotate-2").await;
        vercel.drain().await;
        let account = vercel.account(&installation).await;
        assert!(account.credential_revocation_pending);
        let new_token = stored_token(&vercel, &installation).await;
        let mut live = sim.live_credentials(&installation.id);
        live.sort();
        let mut both = vec![installation.token.clone(), new_token.clone()];
        both.sort();
        assert_eq!(live, both, "both stay valid");

        let mut rounds = 0;
        while sim.recorder().accepted("POST", &revoke_path).is_empty() {
            vercel.advance(60);
            vercel.drain().await;
            rounds += 1;
            assert!(rounds < 20, "the revocation was never retried");
        }
        assert_eq!(sim.recorder().calls_to("POST", &revoke_path).len(), 2);
        assert!(
            !vercel
                .account(&installation)
                .await
                .credential_revocation_pending
        );
        assert_eq!(sim.live_credentials(&installation.id), [new_token]);
        assert_eq!(
            sim.recorder()
                .accepted(
                    "POST",
                    &format!("/v1/installations/{}/credentials/rotate", installation.id)
                )
                .len(),
            1,
            "the retry only revokes"
        );
        vercel.stop().await;
    }
);

backend_test!(
    credentials_older_than_the_setting_are_rotated_on_schedule,
    |database| async move {
        let vercel = vercel_set(&database, with_tweak(scheduled_rotation)).await;
        let sim = &vercel.sim;
        let (installation, _admin) = vercel.install().await;
        let account = &vercel.test.set.account;
        assert_eq!(
            account
                .run_marketplace_work("vercel.rotate_credentials")
                .await
                .unwrap(),
            0,
            "a new credential is not due"
        );
        vercel.advance(31 * 24 * 3600);
        assert_eq!(
            account
                .run_marketplace_work("vercel.rotate_credentials")
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            account
                .run_marketplace_work("vercel.rotate_credentials")
                .await
                .unwrap(),
            0,
            "scheduled once"
        );
        vercel.drain().await;
        let new_token = stored_token(&vercel, &installation).await;
        assert_ne!(new_token, installation.token);
        assert_eq!(sim.live_credentials(&installation.id), [new_token]);
        assert_eq!(
            account
                .run_marketplace_work("vercel.rotate_credentials")
                .await
                .unwrap(),
            0,
            "the new credential is young"
        );
        vercel.stop().await;
    }
);

async fn notify_jobs(vercel: &VercelTest) -> Vec<marketbridge_storage::outbox::entity::Model> {
    vercel
        .test
        .set
        .provisioning
        .domain()
        .outbox()
        .jobs_of_kind("provisioning.notify_marketplace")
        .await
        .unwrap()
}

async fn assert_gone(vercel: &VercelTest, installation: &InstallationHandle, reason: &str) {
    let account = vercel.account(installation).await;
    assert!(account.marketplace_gone_at.is_some());
    assert!(
        account.marketplace_gone_reason.contains(reason),
        "{}",
        account.marketplace_gone_reason
    );
    assert!(account.marketplace_gone_reason.contains("410"));
    let refused = call_token(vercel, installation, "").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(refused.message().contains("gone"), "{}", refused.message());
}

backend_test!(
    a_410_from_a_call_stops_the_job_and_marks_the_installation_gone,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let sim = &vercel.sim;
        let (installation, admin) = vercel.install().await;
        let resource_id = ready_cache(&vercel, &installation, &admin).await;
        let path = format!(
            "/v1/installations/{}/resources/{resource_id}",
            installation.id
        );
        sim.faults()
            .inject(Fault::status(path.clone(), 410, 100).method("PATCH"));

        rotate_secrets(&vercel, &installation, &admin, &resource_id).await;
        for _ in 0..5 {
            vercel.drain().await;
            vercel.advance(60);
        }
        assert_eq!(
            sim.recorder()
                .calls_to("PATCH", &path)
                .iter()
                .filter(|c| c.status == 410)
                .count(),
            1,
            "never retried"
        );
        let job = notify_jobs(&vercel).await.pop().unwrap();
        assert_eq!(job.status, "dead");
        assert_eq!(job.attempts, 1);
        assert!(
            job.last_error
                .as_deref()
                .unwrap_or_default()
                .contains("410")
        );
        assert_gone(&vercel, &installation, "PATCH").await;

        // Later work for the installation stops before calling Vercel.
        let calls = sim.recorder().calls().len();
        let grants = sim.token_grants(&installation.id);
        rotate_secrets(&vercel, &installation, &admin, &resource_id).await;
        for _ in 0..3 {
            vercel.drain().await;
            vercel.advance(60);
        }
        assert_eq!(sim.recorder().calls().len(), calls);
        assert_eq!(sim.token_grants(&installation.id), grants);
        let job = notify_jobs(&vercel).await.pop().unwrap();
        assert_eq!(job.status, "dead");
        assert_eq!(job.attempts, 1);
        vercel.stop().await;
    }
);

backend_test!(
    a_410_from_the_token_request_marks_the_installation_gone,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let sim = &vercel.sim;
        let (installation, admin) = vercel.install().await;
        let resource_id = ready_cache(&vercel, &installation, &admin).await;
        // The cached token would still serve: make it expire first.
        sim.expire_short_lived_tokens(&installation.id);
        vercel.advance(3600);
        sim.set_gone(&installation.id, true);

        rotate_secrets(&vercel, &installation, &admin, &resource_id).await;
        for _ in 0..5 {
            vercel.drain().await;
            vercel.advance(60);
        }
        let grants: Vec<u16> = sim
            .recorder()
            .calls_to("POST", GRANT_PATH)
            .iter()
            .map(|c| c.status)
            .collect();
        assert_eq!(
            grants.iter().filter(|s| **s == 410).count(),
            1,
            "{grants:?}"
        );
        let job = notify_jobs(&vercel).await.pop().unwrap();
        assert_eq!(job.status, "dead");
        assert_eq!(job.attempts, 1);
        assert_gone(&vercel, &installation, "token grant").await;
        vercel.stop().await;
    }
);
