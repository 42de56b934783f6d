//! The simplified `/marketplace/...` flow: account with terms, plans,
//! resources with environment variables, project connection, plan change,
//! deletion, and its `{error:{code,message,details}}` body, all on the same
//! services and authenticated like the partner API.

use crate::vercel_support::{VercelOptions, vercel_set};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_storage::backend_test;
use serde_json::json;

backend_test!(
    the_simplified_flow_runs_on_the_same_services,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let sim = &vercel.sim;
        let partner = &vercel.partner;
        let installation = sim.new_installation();
        let admin = sim.admin_token(&installation);

        // Account and terms.
        let account = partner
            .post("/marketplace/account")
            .user(&admin)
            .idempotency_key("flow-account")
            .json(&json!({
                "installationId": installation.id,
                "teamId": installation.team_id,
                "acceptTerms": true,
                "credentials": {"access_token": installation.token, "token_type": "Bearer"},
                "contact": {"email": "owner@example.com", "name": "Owner"}
            }))
            .send()
            .await;
        assert_eq!(account.status, 200, "{}", account.text);
        assert_eq!(
            account.body,
            json!({"installationId": installation.id, "teamId": installation.team_id, "status": "active", "termsAccepted": true})
        );
        let stored = vercel.account(&installation).await;
        assert!(stored.has_credential);
        assert_eq!(stored.accepted_terms[0].policy_id, "toc");

        // Plans.
        let plans = partner
            .get("/marketplace/plans?productId=database")
            .user(&admin)
            .send()
            .await;
        assert_eq!(plans.status, 200, "{}", plans.text);
        let pro = plans.body["plans"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == "pro")
            .unwrap()
            .clone();
        assert_eq!(pro["price"], 2000);
        assert_eq!(pro["name"], "Pro");
        assert!(
            pro["features"]
                .as_array()
                .unwrap()
                .contains(&json!("Storage: 100 GB"))
        );

        // A resource with its environment variables.
        let created = partner
            .post("/marketplace/resources")
            .user(&admin)
            .idempotency_key("flow-resource")
            .json(&json!({
                "teamId": installation.team_id,
                "installationId": installation.id,
                "productId": "database",
                "planId": "pro",
                "configuration": {"name": "my-database", "region": "fra1"}
            }))
            .send()
            .await;
        assert_eq!(created.status, 200, "{}", created.text);
        assert_eq!(created.body["status"], "active");
        let resource_id = created.body["resourceId"].as_str().unwrap().to_owned();
        let variables = created.body["environmentVariables"].as_array().unwrap();
        let url = variables
            .iter()
            .find(|v| v["key"] == "DATABASE_URL")
            .unwrap();
        assert!(url["value"].as_str().unwrap().starts_with("postgresql://"));
        assert!(url["value"].as_str().unwrap().contains("fra1"));
        assert_eq!(
            url["target"],
            json!(["production", "preview", "development"])
        );
        let stored = vercel.stored_resource(&resource_id).await;
        assert_eq!(stored.name, "my-database");
        assert_eq!(stored.plan_id, "pro");

        // Connect it to a project.
        let connected = partner
            .post(&format!("/marketplace/resources/{resource_id}/connect"))
            .user(&admin)
            .json(&json!({"projectId": "prj_flow", "resourceId": resource_id}))
            .send()
            .await;
        assert_eq!(connected.status, 200, "{}", connected.text);
        assert_eq!(connected.body["status"], "connected");
        let stored = vercel.stored_resource(&resource_id).await;
        assert_eq!(stored.connections[0].project_id, "prj_flow");
        assert_eq!(stored.connections[0].targets.len(), 3);

        // Change its plan.
        let changed = partner
            .patch(&format!("/marketplace/resources/{resource_id}/plan"))
            .user(&admin)
            .json(&json!({"resourceId": resource_id, "newPlanId": "pro-eu"}))
            .send()
            .await;
        assert_eq!(changed.status, 200, "{}", changed.text);
        assert_eq!(changed.body["planId"], "pro-eu");
        assert_eq!(changed.body["status"], "active");

        // Errors in the flow's shape.
        let invalid = partner
            .post("/marketplace/resources")
            .user(&admin)
            .json(&json!({"productId": "database", "planId": "pro", "configuration": {"name": "x", "region": "us-west-1"}}))
            .send()
            .await;
        assert_eq!(invalid.status, 400);
        assert_eq!(invalid.body["error"]["code"], "VALIDATION_ERROR");
        assert!(invalid.body["error"]["message"].is_string());
        assert!(
            invalid.body["error"]["details"]
                .as_str()
                .unwrap()
                .contains("region")
        );
        let bad_plan = partner
            .patch(&format!("/marketplace/resources/{resource_id}/plan"))
            .user(&admin)
            .json(&json!({"newPlanId": "enterprise"}))
            .send()
            .await;
        assert_eq!(bad_plan.status, 400);
        assert!(
            bad_plan.body["error"]["details"]
                .as_str()
                .unwrap()
                .contains("newPlanId")
        );
        let missing = partner
            .post("/marketplace/resources")
            .user(&admin)
            .json(&json!({"productId": "database", "planId": "pro"}))
            .send()
            .await;
        assert_eq!(missing.status, 400);
        assert!(
            missing.body["error"]["details"]
                .as_str()
                .unwrap()
                .contains("configuration")
        );
        let other = sim.new_installation();
        let foreign = partner
            .post("/marketplace/resources")
            .user(&admin)
            .json(&json!({"installationId": other.id, "productId": "database", "planId": "pro", "configuration": {"name": "x"}}))
            .send()
            .await;
        assert_eq!(foreign.status, 403);
        assert_eq!(foreign.body["error"]["code"], "FORBIDDEN");
        let viewer = sim.user_token(
            &installation,
            &marketbridge_simulators::vercel::tokens::SimUser::viewer(),
        );
        let read_only = partner
            .delete(&format!("/marketplace/resources/{resource_id}"))
            .user(&viewer)
            .send()
            .await;
        assert_eq!(read_only.status, 403);
        let unauthenticated = partner
            .post("/marketplace/resources")
            .json(&json!({}))
            .send()
            .await;
        assert_eq!(unauthenticated.status, 401);

        // Delete, twice.
        for _ in 0..2 {
            let deleted = partner
                .delete(&format!("/marketplace/resources/{resource_id}"))
                .user(&admin)
                .send()
                .await;
            assert_eq!(deleted.status, 200, "{}", deleted.text);
            assert_eq!(deleted.body["status"], "deleted");
        }
        assert_eq!(
            vercel.stored_resource(&resource_id).await.status,
            provisioning_pb::ResourceStatus::Uninstalled as i32
        );
        let gone = partner
            .get(&format!("/marketplace/resources/{resource_id}"))
            .user(&admin)
            .send()
            .await;
        assert_eq!(gone.status, 404);
        assert_eq!(gone.body["error"]["code"], "NOT_FOUND");
        vercel.stop().await;
    }
);
