//! The Pub/Sub pull worker against the Google simulator on both databases:
//! every pulled notification is recorded once and acknowledged only after it
//! is recorded, slow batches get their ack deadline extended, redeliveries
//! are recognised, and unreadable messages are acknowledged and dropped.

use chrono::{Duration as ChronoDuration, TimeZone, Utc};
use marketbridge_account::adapters::google::GooglePull;
use marketbridge_account::marketplace::Marketplaces;
use marketbridge_account::{AccountDeps, AccountServer};
use marketbridge_config::OutboxOptions;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::time::{ManualClock, SharedClock};
use marketbridge_google::api::GoogleApi;
use marketbridge_google::pubsub::PubsubClient;
use marketbridge_google::service_account::{ServiceAccountKey, ServiceAccountTokens};
use marketbridge_proto::account::v1 as account_pb;
use marketbridge_simulators::common::Fault;
use marketbridge_simulators::google::{GoogleSimulator, GoogleSimulatorOptions, PRODUCT};
use marketbridge_storage::backend_test;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

backend_test!(
    pulled_notifications_are_recorded_then_acknowledged,
    |database| async move {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap());
        let shared: SharedClock = Arc::new(clock.clone());
        let sim = GoogleSimulator::start(GoogleSimulatorOptions::new(shared.clone()))
            .await
            .unwrap();
        let http =
            marketbridge_rpc::http::outbound_client(&Default::default(), Duration::from_secs(5))
                .unwrap();
        let key = ServiceAccountKey::from_json(&sim.service_account_key_json()).unwrap();
        let tokens =
            Arc::new(ServiceAccountTokens::new(http.clone(), key, "", shared.clone()).unwrap());
        let pubsub = PubsubClient::new(
            GoogleApi::new(http, sim.url(), tokens),
            sim.pull_subscription(),
        )
        .unwrap();
        let worker = GooglePull::new(pubsub).extend_deadline_after(Duration::ZERO);
        let server = AccountServer::open(
            database.url(),
            &OutboxOptions::default(),
            AccountDeps {
                clock: shared,
                cipher: Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap(),
                marketplaces: Marketplaces::default().with_worker(Arc::new(worker)),
                provisioning: None,
                billing: None,
            },
        )
        .await
        .unwrap();
        let events = || async {
            server
                .domain()
                .list_events(account_pb::ListMarketplaceEventsRequest::default())
                .await
                .unwrap()
                .events
        };

        sim.purchase(PRODUCT, "pro-plan");
        sim.purchase(PRODUCT, "free-plan");
        sim.publish_raw(json!({"providerId": sim.provider_id(), "account": {"id": "no-event-id"}}));
        assert_eq!(server.run_marketplace_work("google.pull").await.unwrap(), 5);
        let recorded = events().await;
        assert_eq!(recorded.len(), 4, "the unreadable message is dropped");
        assert!(recorded.iter().all(|e| e.channel == "pubsub_pull"));
        assert_eq!(sim.unacknowledged_pulls(), 0);
        let extensions = sim.api().recorder.accepted("POST", ":modifyAckDeadline");
        assert!(!extensions.is_empty(), "a slow batch extends its deadline");
        assert_eq!(extensions[0].json()["ackDeadlineSeconds"], 60);
        let acknowledged = sim.api().recorder.accepted("POST", ":acknowledge");
        assert_eq!(acknowledged.len(), 1, "one acknowledgement per batch");
        assert_eq!(
            acknowledged[0].json()["ackIds"].as_array().unwrap().len(),
            5
        );

        // The acknowledgement is lost: Pub/Sub redelivers after the deadline,
        // and the redeliveries are recognised as duplicates.
        sim.purchase(PRODUCT, "pro-plan");
        sim.api()
            .faults
            .inject(Fault::status(":acknowledge", 503, 1));
        assert!(server.run_marketplace_work("google.pull").await.is_err());
        assert_eq!(
            events().await.len(),
            6,
            "recorded before the acknowledgement"
        );
        assert_eq!(sim.unacknowledged_pulls(), 2);
        assert_eq!(
            server.run_marketplace_work("google.pull").await.unwrap(),
            0,
            "held until the deadline"
        );
        clock.advance(ChronoDuration::seconds(61));
        assert_eq!(server.run_marketplace_work("google.pull").await.unwrap(), 2);
        assert_eq!(
            events().await.len(),
            6,
            "redeliveries are not recorded twice"
        );
        assert_eq!(sim.unacknowledged_pulls(), 0);
        assert!(server.run_marketplace_work("google.nothing").await.is_err());
    }
);
