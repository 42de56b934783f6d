//! Marketplaces' signing keys outlive an outage of their key endpoints: once
//! fetched, a key keeps verifying tokens past the cache lifetime while the
//! endpoint fails (counted in `jwks_stale_total`), failed fetches back off
//! instead of following every request, and forged key ids cannot make the
//! gateway hammer the endpoint.

use crate::google_support::{Delivery, start_with};
use crate::support::TestSet;
use crate::vercel_support::{VercelOptions, installation_path, vercel_set};
use marketbridge_google::notification::encode_base64;
use marketbridge_simulators::common::Fault;
use marketbridge_simulators::vercel::TokenFlaw;
use marketbridge_storage::testing::{TestBackend, run_on};
use serde_json::json;
use std::time::Duration;

/// The key cache lifetime of these tests, in seconds.
const CACHE_SECONDS: u64 = 1;

/// Waits until the keys fetched so far are past their lifetime.
async fn outlive_the_key_cache() {
    tokio::time::sleep(Duration::from_millis(CACHE_SECONDS * 1000 + 250)).await;
}

/// The set's Prometheus scrape, from its internal metrics listener.
pub async fn scrape(test: &TestSet) -> String {
    let address = test.set.addresses.metrics.expect("a metrics listener");
    let answer = test
        .http
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .expect("the metrics listener answers");
    assert_eq!(answer.status(), 200);
    answer.text().await.expect("a scrape")
}

/// The value of counter `name` for `key_set` (0 when absent).
fn counter(scrape: &str, name: &str, key_set: &str) -> u64 {
    let label = format!("key_set=\"{key_set}\"");
    scrape
        .lines()
        .find(|line| line.starts_with(name) && line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vercel_calls_succeed_with_known_keys_while_the_jwks_endpoint_is_down() {
    run_on(TestBackend::Sqlite, |database| async move {
        let vercel = vercel_set(
            &database,
            VercelOptions {
                jwks_cache_seconds: Some(CACHE_SECONDS),
                ..Default::default()
            },
        )
        .await;
        let (installation, admin) = vercel.install().await;
        let sim = &vercel.sim;
        sim.faults()
            .inject(Fault::status("/.well-known/jwks", 503, u32::MAX));
        outlive_the_key_cache().await;

        for _ in 0..30 {
            let answer = vercel
                .partner
                .get(&installation_path(&installation))
                .user(&admin)
                .send()
                .await;
            assert_eq!(answer.status, 200, "{}", answer.text);
        }
        let failed_fetches = sim
            .recorder()
            .calls_to("GET", "/.well-known/jwks")
            .into_iter()
            .filter(|call| call.status == 503)
            .count();
        assert!(
            failed_fetches >= 1,
            "the keys were past their lifetime, so the endpoint was asked"
        );
        assert!(
            failed_fetches < 10,
            "failed fetches back off instead of following the 30 calls: {failed_fetches}"
        );
        let metrics = scrape(&vercel.test).await;
        assert!(
            counter(&metrics, "jwks_stale_total", "vercel") >= 1,
            "{metrics}"
        );
        assert!(counter(&metrics, "jwks_fetch_failures_total", "vercel") >= 1);

        // Forged key ids are refused without a fetch each: the endpoint is
        // backing off, so they are answered from the cache.
        let asked_before = sim.recorder().calls_to("GET", "/.well-known/jwks").len();
        for _ in 0..20 {
            let forged = sim.flawed_token(&installation, TokenFlaw::UnknownKey);
            let answer = vercel
                .partner
                .get(&installation_path(&installation))
                .user(&forged)
                .send()
                .await;
            assert!(
                answer.status == 401 || answer.status == 503,
                "{} {}",
                answer.status,
                answer.text
            );
        }
        let asked_after = sim.recorder().calls_to("GET", "/.well-known/jwks").len();
        assert!(
            asked_after - asked_before <= 2,
            "20 forged key ids made {} fetches",
            asked_after - asked_before
        );

        // The endpoint recovers: fresh keys again, and forged ids are 401.
        sim.faults().clear();
        vercel
            .test
            .eventually("the keys are fetched again", || async {
                sim.recorder().accepted("GET", "/.well-known/jwks").len() > 1
            })
            .await;
        let forged = sim.flawed_token(&installation, TokenFlaw::UnknownKey);
        let answer = vercel
            .partner
            .get(&installation_path(&installation))
            .user(&forged)
            .send()
            .await;
        assert_eq!(answer.status, 401, "{}", answer.text);
        vercel.test.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_pushes_and_signups_verify_with_known_keys_while_the_key_endpoints_are_down() {
    run_on(TestBackend::Sqlite, |database| async move {
        let google = start_with(&database, Delivery::Push, |config| {
            config.gateway.jwks_cache_seconds = CACHE_SECONDS;
        })
        .await;
        let sim = &google.sim;
        let push_url = google.test.url(&google.test.set.config.google.push_path);
        let push = |token: String| {
            let envelope = json!({
                "message": {
                    "data": encode_base64(json!({"eventId": "keys-1", "eventType": "ACCOUNT_ACTIVE",
                        "providerId": sim.provider_id(), "account": {"id": "acct-keys", "updateTime": "2026-11-23T12:00:00Z"}}).to_string().as_bytes()),
                    "messageId": "1",
                    "publishTime": "2026-11-23T12:00:00.000Z"
                },
                "subscription": "projects/marketbridge-demo/subscriptions/marketbridge-push"
            });
            let request = google
                .test
                .http
                .post(&push_url)
                .header("authorization", format!("Bearer {token}"))
                .json(&envelope);
            async move {
                let answer = request.send().await.expect("the push endpoint answers");
                let status = answer.status().as_u16();
                (status, answer.text().await.unwrap_or_default())
            }
        };

        // Both key sets are fetched once while the endpoints work.
        let (status, text) = push(sim.sign_push_claims(&sim.push_claims())).await;
        assert!(status < 300, "{status} {text}");
        let (status, page) = google.open_signup(&sim.signup_token("acct-keys")).await;
        assert_eq!(status, 200, "{page}");

        sim.api()
            .faults
            .inject(Fault::status("/oauth2/v3/certs", 503, u32::MAX));
        sim.api()
            .faults
            .inject(Fault::status("/robot/v1/metadata/jwk", 503, u32::MAX));
        outlive_the_key_cache().await;

        for _ in 0..10 {
            let (status, text) = push(sim.sign_push_claims(&sim.push_claims())).await;
            assert!(status < 300, "{status} {text}");
            let (status, page) = google.open_signup(&sim.signup_token("acct-keys")).await;
            assert_eq!(status, 200, "{page}");
        }
        let failed = |fragment: &str| {
            sim.api()
                .recorder
                .calls_to("GET", fragment)
                .into_iter()
                .filter(|call| call.status == 503)
                .count()
        };
        for fragment in ["/oauth2/v3/certs", "/robot/v1/metadata/jwk"] {
            let count = failed(fragment);
            assert!(
                (1..10).contains(&count),
                "{fragment}: {count} failed fetches for 10 deliveries"
            );
        }
        let metrics = scrape(&google.test).await;
        assert!(counter(&metrics, "jwks_stale_total", "google-push") >= 1, "{metrics}");
        assert!(counter(&metrics, "jwks_stale_total", "google-signup") >= 1, "{metrics}");
        google.stop().await;
    })
    .await;
}
