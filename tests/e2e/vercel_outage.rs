//! Vercel being down delays what marketbridge tells it, and loses nothing:
//! the calls wait in the outbox, are retried with backoff (honouring 429s),
//! and each reaches Vercel exactly once after it recovers.

use crate::vercel_support::{
    CACHE_DELAY_SECONDS, VercelOptions, provision_body, resource_path, vercel_set,
};
use marketbridge_simulators::common::Fault;
use marketbridge_storage::backend_test;
use serde_json::json;

backend_test!(
    calls_to_vercel_survive_an_outage_and_arrive_once,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::manual()).await;
        let sim = &vercel.sim;
        let (installation, admin) = vercel.install().await;
        let resource = vercel
            .provision(
                &installation,
                &admin,
                provision_body("cache", "standard", "cache", json!({})),
            )
            .await;
        let resource_id = resource["id"].as_str().unwrap().to_owned();
        let resource_url_path = format!(
            "/v1/installations/{}/resources/{resource_id}",
            installation.id
        );

        // Vercel fails the first calls: two 500s, then a 429.
        sim.faults()
            .inject(Fault::status(resource_url_path.clone(), 500, 2).method("PATCH"));
        let mut limited = Fault::status(resource_url_path.clone(), 429, 1).method("PATCH");
        limited.retry_after = Some(2);
        sim.faults().inject(limited);

        vercel.advance(CACHE_DELAY_SECONDS + 1);
        let mut rounds = 0;
        loop {
            vercel.drain().await;
            let delivered = sim
                .installation(&installation.id)
                .unwrap()
                .events_of_type("resource.updated")
                .len();
            if delivered > 0 {
                break;
            }
            rounds += 1;
            assert!(rounds < 20, "the change never reached Vercel");
            // Time passes; the outbox's backoff lets the next attempt run.
            vercel.advance(5);
        }
        assert!(rounds >= 3, "three refusals meant three more rounds");
        let patches = sim.recorder().calls_to("PATCH", &resource_url_path);
        let statuses: Vec<u16> = patches.iter().map(|c| c.status).collect();
        assert_eq!(statuses, [500, 500, 429, 200]);
        assert_eq!(
            sim.recorder().accepted("PATCH", &resource_url_path).len(),
            1
        );
        assert_eq!(
            sim.recorder()
                .accepted("PUT", &format!("{resource_url_path}/secrets"))
                .len(),
            1
        );
        assert_eq!(
            sim.recorder()
                .accepted(
                    "POST",
                    &format!("/v1/installations/{}/events", installation.id)
                )
                .len(),
            1
        );
        let jobs = vercel
            .test
            .set
            .provisioning
            .domain()
            .outbox()
            .jobs_of_kind("provisioning.notify_marketplace")
            .await
            .unwrap();
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].attempts, 4);
        assert_eq!(jobs[0].status, "done");
        assert_eq!(
            sim.resource(&installation.id, &resource_id).unwrap().status,
            "ready"
        );

        // A complete outage during a rotation: every call fails for a while.
        sim.faults().inject(Fault::status(
            format!("/v1/installations/{}/", installation.id),
            503,
            4,
        ));
        let rotated = vercel
            .partner
            .post(&format!(
                "{}/secrets/rotate",
                resource_path(&installation, &resource_id)
            ))
            .user(&admin)
            .json(&json!({"delayOldSecretsExpirationHours": 0.25}))
            .send()
            .await;
        assert_eq!(rotated.status, 202, "{}", rotated.text);
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
            assert!(rounds < 20, "the rotation never reached Vercel");
        }
        let at_vercel = sim.resource(&installation.id, &resource_id).unwrap();
        assert_eq!(
            at_vercel.secret_pushes.len(),
            2,
            "once at provisioning, once now"
        );
        let failed = sim
            .recorder()
            .calls()
            .into_iter()
            .filter(|c| c.status == 503)
            .count();
        assert_eq!(failed, 4);
        vercel.stop().await;
    }
);
