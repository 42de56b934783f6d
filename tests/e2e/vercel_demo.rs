//! `marketbridge demo vercel` walks the whole flow, and the simulator's
//! `/_sim` controls let a person do the same by hand.

use crate::vercel_support::{VercelOptions, vercel_set};
use marketbridge_storage::backend_test;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_walks_the_whole_vercel_flow() {
    crate::support::init_telemetry();
    marketbridge::demo::run_vercel_demo(&marketbridge_config::Config::default())
        .await
        .expect("every step of the demo succeeds");
}

backend_test!(
    the_simulator_controls_drive_the_flow_by_hand,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let http = reqwest::Client::new();
        let created: Value = http
            .post(format!("{}/_sim/installations", vercel.sim.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["installationId"].as_str().unwrap().to_owned();
        let installed = http
            .put(vercel.url(&format!("/v1/installations/{id}")))
            .bearer_auth(created["adminToken"].as_str().unwrap())
            .header("X-Vercel-Auth", "user")
            .json(&created["upsertBody"])
            .send()
            .await
            .unwrap();
        assert_eq!(installed.status(), 204);
        let viewer = http
            .post(vercel.url(&format!("/v1/installations/{id}/resources")))
            .bearer_auth(created["viewerToken"].as_str().unwrap())
            .header("X-Vercel-Auth", "user")
            .json(&json!({"productId": "database", "name": "x", "metadata": {}, "billingPlanId": "free"}))
            .send()
            .await
            .unwrap();
        assert_eq!(viewer.status(), 403);
        let minted: Value = http
            .post(format!("{}/_sim/tokens", vercel.sim.url()))
            .body(json!({"installationId": id, "role": "ADMIN"}).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let provisioned = http
            .post(vercel.url(&format!("/v1/installations/{id}/resources")))
            .bearer_auth(minted["token"].as_str().unwrap())
            .header("X-Vercel-Auth", "user")
            .json(&json!({"productId": "database", "name": "x", "metadata": {}, "billingPlanId": "free"}))
            .send()
            .await
            .unwrap();
        assert_eq!(provisioned.status(), 200);
        let sso: Value = http
            .post(format!("{}/_sim/sso", vercel.sim.url()))
            .body(json!({"installationId": id, "redirectLoginUrl": vercel.url("/sso"), "path": "billing"}).to_string())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let browser = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let landing = browser
            .get(sso["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        // Without the integration's slug the person confirms the sign-in.
        assert_eq!(landing.status(), 200);
        assert!(landing.text().await.unwrap().contains("Confirm sign-in"));
        let seen: Value = http
            .get(format!("{}/_sim/installations/{id}", vercel.sim.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(seen["installationId"], id.as_str());
        assert_eq!(seen["finalized"], false);
        // The controls are not part of Vercel's API and are not recorded.
        assert!(
            vercel
                .sim
                .recorder()
                .calls()
                .iter()
                .all(|c| !c.path.starts_with("/_sim"))
        );
        vercel.stop().await;
    }
);
