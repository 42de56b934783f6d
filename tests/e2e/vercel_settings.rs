//! Resource settings Vercel sends on Provision and Update Resource
//! (`protocolSettings`): the app URLs of projects that sign in through an
//! authentication product, checked and kept as the full set, and the
//! experimentation (Global Config) settings, kept verbatim; both served back
//! on the resource.

use crate::vercel_support::{
    VercelOptions, assert_error, field_keys, provision_body, resource_path, vercel_set,
};
use marketbridge_storage::backend_test;
use serde_json::json;

backend_test!(
    app_urls_and_experimentation_settings_are_checked_kept_and_served_back,
    |database| async move {
        let vercel = vercel_set(&database, VercelOptions::default()).await;
        let (installation, admin) = vercel.install().await;
        let resources = format!("/v1/installations/{}/resources", installation.id);
        let app_urls = json!([
            {"url": "https://my-app.vercel.app", "target": "production"},
            {"url": "https://my-app-git-main.vercel.app", "target": "preview"},
            {"url": "http://localhost:3000", "target": "development"}
        ]);
        let experimentation = json!({
            "edgeConfigSyncingEnabled": true,
            "edgeConfigId": "ecfg_abc",
            "edgeConfigTokenId": "tok_1",
            "globalConfigId": "gcfg_abc"
        });
        let mut body = provision_body("database", "pro", "auth-db", json!({"region": "iad1"}));
        body["protocolSettings"] = json!({
            "authentication": {"appUrls": app_urls},
            "experimentation": experimentation,
            "somethingNew": {"ignored": true}
        });
        let created = vercel.provision(&installation, &admin, body).await;
        let resource_id = created["id"].as_str().unwrap().to_owned();
        assert_eq!(
            created["protocolSettings"]["authentication"]["appUrls"],
            app_urls
        );
        assert_eq!(
            created["protocolSettings"]["experimentation"],
            experimentation
        );
        let read = vercel
            .partner
            .get(&resource_path(&installation, &resource_id))
            .user(&admin)
            .send()
            .await;
        assert_eq!(read.status, 200, "{}", read.text);
        assert_eq!(read.body["protocolSettings"], created["protocolSettings"]);

        // An update with only experimentation keeps the app URLs; one with
        // app URLs replaces the whole set.
        let changed = vercel
            .partner
            .patch(&resource_path(&installation, &resource_id))
            .user(&admin)
            .json(&json!({"protocolSettings": {"experimentation": {"globalConfigId": "gcfg_new"}}}))
            .send()
            .await;
        assert_eq!(changed.status, 200, "{}", changed.text);
        assert_eq!(
            changed.body["protocolSettings"]["authentication"]["appUrls"],
            app_urls
        );
        assert_eq!(
            changed.body["protocolSettings"]["experimentation"],
            json!({"globalConfigId": "gcfg_new"})
        );
        let one = json!([{"url": "https://only.example.com/callback", "target": "production"}]);
        let replaced = vercel
            .partner
            .patch(&resource_path(&installation, &resource_id))
            .user(&admin)
            .json(&json!({"protocolSettings": {"authentication": {"appUrls": one}}}))
            .send()
            .await;
        assert_eq!(replaced.status, 200, "{}", replaced.text);
        assert_eq!(
            replaced.body["protocolSettings"]["authentication"]["appUrls"],
            one
        );
        let emptied = vercel
            .partner
            .patch(&resource_path(&installation, &resource_id))
            .user(&admin)
            .json(&json!({"protocolSettings": {"authentication": {"appUrls": []}}}))
            .send()
            .await;
        assert_eq!(emptied.status, 200, "{}", emptied.text);
        assert_eq!(
            emptied.body["protocolSettings"]["authentication"]["appUrls"],
            json!([])
        );

        // Bad app URLs: 400 with the field, nothing stored.
        for (bad, key) in [
            (
                json!({"authentication": {"appUrls": [{"url": "http://my-app.vercel.app", "target": "production"}]}}),
                "protocolSettings.authentication.appUrls[0].url",
            ),
            (
                json!({"authentication": {"appUrls": [{"url": "http://localhost:3000", "target": "preview"}]}}),
                "protocolSettings.authentication.appUrls[0].url",
            ),
            (
                json!({"authentication": {"appUrls": [{"url": "https://a.example", "target": "staging"}]}}),
                "protocolSettings.authentication.appUrls[0].target",
            ),
            (
                json!({"authentication": {"appUrls": [{"url": "https://a.example"}]}}),
                "protocolSettings.authentication.appUrls[0]",
            ),
            (
                json!({"authentication": {"appUrls": "https://a.example"}}),
                "protocolSettings.authentication.appUrls",
            ),
            (
                json!({"experimentation": "ecfg_abc"}),
                "protocolSettings.experimentation",
            ),
        ] {
            let mut body = provision_body("database", "pro", "bad", json!({"region": "iad1"}));
            body["protocolSettings"] = bad.clone();
            let answer = vercel
                .partner
                .post(&resources)
                .user(&admin)
                .json(&body)
                .send()
                .await;
            assert_error(&answer, 400, "validation_error");
            assert_eq!(field_keys(&answer), vec![key.to_owned()], "{bad}");
            let answer = vercel
                .partner
                .patch(&resource_path(&installation, &resource_id))
                .user(&admin)
                .json(&json!({"protocolSettings": bad}))
                .send()
                .await;
            assert_error(&answer, 400, "validation_error");
        }
        let kept = vercel.stored_resource(&resource_id).await;
        assert_eq!(
            kept.protocol_settings.unwrap().app_urls.unwrap().urls.len(),
            0
        );
        vercel.stop().await;
    }
);
