//! Importing existing resources (Vercel "Import Existing"): Vercel sends the
//! browser to the Import Resource URL with `installation_id`, `product_id`,
//! `state` and `return`; the user signs in through Vercel when they have no
//! session, picks one of the resources the provider registered for the
//! installation, and the gateway has it recorded as a linked resource and
//! imported at Vercel (`ownership: "linked"`, with its secrets) before the
//! browser goes back to `return` with the state unchanged. Linked resources
//! are never billed through Vercel and are detached, not destroyed.

use crate::billing_vercel::{bill, clock_to, record, usage};
use crate::vercel_support::{
    VercelOptions, VercelTest, installation_path, provision_body, resource_path, vercel_set,
};
use marketbridge_proto::common::v1::{AccountSelector, Marketplace, Secret};
use marketbridge_proto::provisioning::v1 as provisioning_pb;
use marketbridge_simulators::vercel::InstallationHandle;
use marketbridge_storage::backend_test;
use serde_json::json;

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn options() -> VercelOptions {
    VercelOptions {
        integration_slug: Some("acme-db".into()),
        ..Default::default()
    }
}

/// The `name=value` of cookie `name` set by `response`.
fn set_cookie(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// The sealed request in the import form of `page`.
fn form_request(page: &str) -> String {
    page.split("name=\"request\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the import form carries the request")
        .to_owned()
}

/// Registers a resource the provider runs as importable by `installation`.
async fn register(
    vercel: &VercelTest,
    installation: &InstallationHandle,
    importable_id: &str,
    product_id: &str,
    name: &str,
) {
    let mut provisioning = vercel.test.set.clients.provisioning.clone();
    provisioning
        .register_importable_resource(provisioning_pb::RegisterImportableResourceRequest {
            context: None,
            account: Some(AccountSelector::by_ref(
                Marketplace::Vercel,
                &installation.id,
            )),
            importable_id: importable_id.to_owned(),
            product_id: product_id.to_owned(),
            name: name.to_owned(),
            metadata: None,
            secrets: vec![Secret {
                name: "DATABASE_URL".into(),
                value: format!("postgres://app:s3cret@db.example.com/{importable_id}"),
                environment_overrides: Default::default(),
            }],
        })
        .await
        .expect("registered");
}

/// What an account may import now.
async fn importable(
    vercel: &VercelTest,
    installation: &InstallationHandle,
) -> Vec<provisioning_pb::ImportableResource> {
    let account = vercel.account(installation).await;
    let mut provisioning = vercel.test.set.clients.provisioning.clone();
    provisioning
        .list_importable_resources(provisioning_pb::ListImportableResourcesRequest {
            account_id: account.id,
            product_id: String::new(),
        })
        .await
        .expect("listed")
        .into_inner()
        .resources
}

/// A browser without a session opens the Import Resource URL: it goes
/// through Vercel's sign-in (bound to the browser) and comes back to the
/// import page with the request sealed. Returns the session cookie, the
/// page and the form's nonce cookie.
async fn sign_in_through_import(
    vercel: &VercelTest,
    browser: &reqwest::Client,
    import_url: &str,
) -> (String, String, String) {
    let answer = browser.get(import_url).send().await.unwrap();
    assert_eq!(answer.status(), 303, "{}", answer.text().await.unwrap());
    let to_vercel = location(&answer);
    assert!(
        to_vercel.starts_with(&format!("{}/sso/integrations/acme-db/", vercel.sim.url())),
        "{to_vercel}"
    );
    // The parameters travel sealed, not in the clear.
    let sealed_back = url::Url::parse(&to_vercel)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.into_owned())
        .expect("a way back");
    assert!(
        sealed_back.starts_with("/vercel/import?request="),
        "{sealed_back}"
    );
    assert!(!sealed_back.contains("state="), "{sealed_back}");
    let state_cookie = set_cookie(&answer, "mb_vercel_sso_state").expect("the sign-in nonce");
    let answer = browser.get(&to_vercel).send().await.unwrap();
    assert_eq!(answer.status(), 302);
    let answer = browser
        .get(location(&answer))
        .header("cookie", &state_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 303, "{}", answer.text().await.unwrap());
    let back = location(&answer);
    assert_eq!(back, sealed_back);
    let session = set_cookie(&answer, "mb_vercel_session").expect("a session");
    let (page, nonce) = open_page(vercel, browser, &vercel.test.url(&back), &session).await;
    (session, page, nonce)
}

/// Opens the import page with a session; the page and its nonce cookie.
async fn open_page(
    _vercel: &VercelTest,
    browser: &reqwest::Client,
    url: &str,
    session: &str,
) -> (String, String) {
    let answer = browser
        .get(url)
        .header("cookie", session)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let nonce = set_cookie(&answer, "mb_vercel_import").expect("the form nonce");
    assert!(
        answer.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("SameSite=Strict")
    );
    (answer.text().await.unwrap(), nonce)
}

/// Posts the import form.
async fn submit(
    vercel: &VercelTest,
    browser: &reqwest::Client,
    cookies: &str,
    request: &str,
    importable_id: &str,
) -> reqwest::Response {
    browser
        .post(vercel.url("/import"))
        .header("cookie", cookies)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "request={}&importable_id={}",
            urlencoding(request),
            urlencoding(importable_id)
        ))
        .send()
        .await
        .unwrap()
}

fn urlencoding(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

/// Imports `importable_id` into `installation` through the whole flow:
/// signs in through Vercel, picks it and follows the way back to Vercel.
/// Returns the imported resource id and the session cookie.
async fn import(
    vercel: &VercelTest,
    installation: &InstallationHandle,
    importable_id: &str,
) -> (String, String) {
    let browser = no_redirects();
    let (url, state) =
        vercel
            .sim
            .start_import(&vercel.url("/import"), &installation.id, Some("database"));
    let (session, page, nonce) = sign_in_through_import(vercel, &browser, &url).await;
    let answer = submit(
        vercel,
        &browser,
        &format!("{session}; {nonce}"),
        &form_request(&page),
        importable_id,
    )
    .await;
    assert_eq!(answer.status(), 303, "{}", answer.text().await.unwrap());
    let back = url::Url::parse(&location(&answer)).unwrap();
    let pairs: std::collections::BTreeMap<String, String> =
        back.query_pairs().into_owned().collect();
    assert_eq!(pairs["state"], state);
    let resource_id = pairs["resource_id"].clone();
    let done = browser.get(back.as_str()).send().await.unwrap();
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
    (resource_id, session)
}

backend_test!(
    an_import_signs_in_through_vercel_links_the_resource_and_returns_the_state,
    |database| async move {
        let vercel = vercel_set(&database, options()).await;
        let sim = &vercel.sim;
        let browser = no_redirects();
        let (installation, _) = vercel.install().await;
        register(&vercel, &installation, "orders-db", "database", "Orders").await;
        register(
            &vercel,
            &installation,
            "search-cache",
            "cache",
            "Search cache",
        )
        .await;

        // Vercel opens the Import Resource URL for the `database` product.
        let (url, state) =
            sim.start_import(&vercel.url("/import"), &installation.id, Some("database"));
        let (session, page, nonce) = sign_in_through_import(&vercel, &browser, &url).await;
        assert!(page.contains("Orders"), "{page}");
        assert!(page.contains("orders-db"), "{page}");
        assert!(!page.contains("Search cache"), "another product: {page}");
        assert!(
            sim.recorder().accepted("PUT", "/resources/").is_empty(),
            "nothing is imported before the user picks"
        );

        // The user picks the database: it is imported at Vercel as linked,
        // with its secrets, before the browser is sent back.
        let answer = submit(
            &vercel,
            &browser,
            &format!("{session}; {nonce}"),
            &form_request(&page),
            "orders-db",
        )
        .await;
        assert_eq!(answer.status(), 303, "{}", answer.text().await.unwrap());
        let back = url::Url::parse(&location(&answer)).unwrap();
        assert_eq!(
            format!("{}{}", back.origin().ascii_serialization(), back.path()),
            sim.import_return_url()
        );
        let pairs: std::collections::BTreeMap<String, String> =
            back.query_pairs().into_owned().collect();
        assert_eq!(pairs["installation_id"], installation.id);
        assert_eq!(pairs["state"], state, "the state comes back unchanged");
        let resource_id = pairs["resource_id"].clone();
        assert!(resource_id.starts_with("res_"), "{resource_id}");

        let at_vercel = sim
            .resource(&installation.id, &resource_id)
            .expect("the resource exists at Vercel before the return");
        assert_eq!(at_vercel.ownership.as_deref(), Some("linked"));
        assert_eq!(at_vercel.product_id, "database");
        assert_eq!(at_vercel.name, "Orders");
        assert_eq!(at_vercel.status, "ready");
        assert_eq!(
            at_vercel.secret("DATABASE_URL").as_deref(),
            Some("postgres://app:s3cret@db.example.com/orders-db")
        );
        let puts = sim
            .recorder()
            .accepted("PUT", &format!("/resources/{resource_id}"));
        assert_eq!(puts.len(), 1);
        let sent: serde_json::Value = serde_json::from_str(&puts[0].body).unwrap();
        assert_eq!(sent["ownership"], "linked");
        assert_eq!(sent["productId"], "database");
        assert_eq!(sent["secrets"][0]["name"], "DATABASE_URL");

        // Vercel checks the state and finds the resource.
        let done = browser.get(back.as_str()).send().await.unwrap();
        assert_eq!(done.status(), 200, "{}", done.text().await.unwrap());
        assert_eq!(
            sim.import(&state).unwrap().completed_resource_id.as_deref(),
            Some(resource_id.as_str())
        );
        let stored = vercel.stored_resource(&resource_id).await;
        assert_eq!(stored.ownership, "linked");
        assert_eq!(stored.name, "Orders");
        assert_eq!(stored.status, provisioning_pb::ResourceStatus::Ready as i32);
        let listed = importable(&vercel, &installation).await;
        let orders = listed
            .iter()
            .find(|i| i.importable_id == "orders-db")
            .unwrap();
        assert_eq!(orders.imported_resource_id, resource_id);

        // The form posted again (a double click) answers the same resource.
        let replay = submit(
            &vercel,
            &browser,
            &format!("{session}; {nonce}"),
            &form_request(&page),
            "orders-db",
        )
        .await;
        assert_eq!(replay.status(), 303);
        assert!(location(&replay).contains(&format!("resource_id={resource_id}")));

        // With the session, the next import goes straight to the page; a
        // product-less import lists every product, and what is imported
        // already is not offered again.
        let (url, state) = sim.start_import(&vercel.url("/import"), &installation.id, None);
        let (page, nonce) = open_page(&vercel, &browser, &url, &session).await;
        assert!(page.contains("Search cache"), "{page}");
        assert!(!page.contains("orders-db"), "{page}");
        let answer = submit(
            &vercel,
            &browser,
            &format!("{session}; {nonce}"),
            &form_request(&page),
            "search-cache",
        )
        .await;
        assert_eq!(answer.status(), 303, "{}", answer.text().await.unwrap());
        let back = location(&answer);
        assert!(back.contains(&format!("state={state}")), "{back}");
        let done = browser.get(&back).send().await.unwrap();
        assert_eq!(done.status(), 200);

        // Vercel's state is single-use at Vercel.
        let again = browser.get(&back).send().await.unwrap();
        assert_eq!(again.status(), 400);
        vercel.stop().await;
    }
);

backend_test!(
    imports_refuse_foreign_returns_other_installations_and_forged_forms,
    |database| async move {
        let vercel = vercel_set(&database, options()).await;
        let sim = &vercel.sim;
        let browser = no_redirects();
        let (installation, _) = vercel.install().await;
        let (other, _) = vercel.install().await;
        register(&vercel, &installation, "orders-db", "database", "Orders").await;
        register(&vercel, &other, "their-db", "database", "Theirs").await;
        let (url, _) = sim.start_import(&vercel.url("/import"), &installation.id, Some("database"));
        let (session, page, nonce) = sign_in_through_import(&vercel, &browser, &url).await;
        let request = form_request(&page);
        let cookies = format!("{session}; {nonce}");

        // A `return` on another origin: an error page, never a redirect.
        for foreign in [
            "https://evil.example/api/v1/integrations/installations/resources/import/complete",
            "https://vercel.com.evil.example/x",
            "javascript:alert(1)",
            "//evil.example/x",
        ] {
            let url = url::Url::parse_with_params(
                &vercel.url("/import"),
                &[
                    ("installation_id", installation.id.as_str()),
                    ("state", "s1"),
                    ("return", foreign),
                ],
            )
            .unwrap();
            let answer = browser
                .get(url.as_str())
                .header("cookie", &session)
                .send()
                .await
                .unwrap();
            assert!(
                answer.status().is_client_error(),
                "{foreign}: {}",
                answer.status()
            );
            assert!(answer.headers().get("location").is_none(), "{foreign}");
            assert!(
                answer
                    .text()
                    .await
                    .unwrap()
                    .contains("Cannot open this page")
            );
        }
        // Without a state or an installation: refused too.
        let stateless = url::Url::parse_with_params(
            &vercel.url("/import"),
            &[
                ("installation_id", installation.id.as_str()),
                ("return", &sim.import_return_url()),
            ],
        )
        .unwrap();
        let answer = browser.get(stateless.as_str()).send().await.unwrap();
        assert_eq!(answer.status(), 400);

        // A return URL with its own query keeps it.
        let with_query = format!("{}?flow=abc", sim.import_return_url());
        let url = url::Url::parse_with_params(
            &vercel.url("/import"),
            &[
                ("installation_id", installation.id.as_str()),
                ("product_id", "database"),
                ("state", "opaque+state/=="),
                ("return", with_query.as_str()),
            ],
        )
        .unwrap();
        let (page, own_nonce) = open_page(&vercel, &browser, url.as_str(), &session).await;
        let answer = submit(
            &vercel,
            &browser,
            &format!("{session}; {own_nonce}"),
            &form_request(&page),
            "orders-db",
        )
        .await;
        assert_eq!(answer.status(), 303);
        let back = url::Url::parse(&location(&answer)).unwrap();
        let pairs: Vec<(String, String)> = back.query_pairs().into_owned().collect();
        assert_eq!(pairs[0], ("flow".to_owned(), "abc".to_owned()));
        assert!(pairs.contains(&("state".to_owned(), "opaque+state/==".to_owned())));

        // A session of this installation cannot import into another one.
        let (foreign_url, _) = sim.start_import(&vercel.url("/import"), &other.id, None);
        let answer = browser
            .get(&foreign_url)
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(answer.status(), 403);
        assert!(answer.headers().get("location").is_none());

        // Forged or cross-site posts are refused and import nothing.
        let imports_before = sim.recorder().accepted("PUT", "/resources/").len();
        let without_nonce = submit(&vercel, &browser, &session, &request, "orders-db").await;
        assert_eq!(without_nonce.status(), 403);
        let tampered = submit(
            &vercel,
            &browser,
            &cookies,
            &format!("x{request}"),
            "orders-db",
        )
        .await;
        assert_eq!(tampered.status(), 400);
        let cross_site = browser
            .post(vercel.url("/import"))
            .header("cookie", &cookies)
            .header("origin", "https://evil.example")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "request={}&importable_id=orders-db",
                urlencoding(&request)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(cross_site.status(), 403);
        let someone_elses = submit(&vercel, &browser, &cookies, &request, "their-db").await;
        assert_eq!(someone_elses.status(), 404);
        let signed_out = submit(&vercel, &browser, &nonce, &request, "orders-db").await;
        assert_eq!(signed_out.status(), 401);
        assert_eq!(
            sim.recorder().accepted("PUT", "/resources/").len(),
            imports_before
        );
        vercel.stop().await;
    }
);

backend_test!(
    linked_resources_are_not_billed_and_are_detached_on_delete_and_uninstall,
    |database| async move {
        let mut options = options();
        options.manual = true;
        let vercel = vercel_set(&database, options).await;
        let test = &vercel.test;
        let (installation, admin) = vercel.install().await;
        register(&vercel, &installation, "orders-db", "database", "Orders").await;
        register(&vercel, &installation, "audit-db", "database", "Audit").await;
        let (linked, _) = import(&vercel, &installation, "orders-db").await;
        let owned = vercel
            .provision(
                &installation,
                &admin,
                provision_body("database", "pro", "owned-db", json!({"region": "iad1"})),
            )
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        vercel.drain().await;

        // Usage of the linked resource is refused; the owned one's is billed.
        let start = test.now();
        clock_to(test, start + chrono::Duration::minutes(10));
        let mut billing = test.set.clients.billing.clone();
        let refused = billing
            .record_usage(marketbridge_proto::billing::v1::RecordUsageRequest {
                events: vec![usage("l1", &linked, "requests", 1000, test.now())],
            })
            .await
            .expect_err("a linked resource has nothing billable");
        assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        let owned_usage = record(
            test,
            vec![usage("o1", &owned, "requests", 1000, test.now())],
        )
        .await;
        assert_eq!(owned_usage.accepted, 1);
        clock_to(test, start + chrono::Duration::hours(2));
        bill(test).await;
        let sent = vercel
            .sim
            .installation(&installation.id)
            .unwrap()
            .billing_data;
        assert!(!sent.is_empty(), "the owned resource is billed");
        let text = serde_json::to_string(&sent).unwrap();
        assert!(text.contains(&owned));
        assert!(!text.contains(&linked), "{text}");
        let balances = vercel.sim.installation(&installation.id).unwrap().balances;
        assert!(!serde_json::to_string(&balances).unwrap().contains(&linked));

        // Delete Resource detaches it: gone from Vercel's view, kept by the
        // provider, importable again.
        let answer = vercel
            .partner
            .delete(&resource_path(&installation, &linked))
            .user(&admin)
            .send()
            .await;
        assert_eq!(answer.status, 204, "{}", answer.text);
        vercel.drain().await;
        let stored = vercel.stored_resource(&linked).await;
        assert_eq!(
            stored.status,
            provisioning_pb::ResourceStatus::Uninstalled as i32
        );
        assert_eq!(stored.ownership, "linked");
        let listed = importable(&vercel, &installation).await;
        let orders = listed
            .iter()
            .find(|i| i.importable_id == "orders-db")
            .unwrap();
        assert_eq!(orders.imported_resource_id, "", "importable again");

        // Uninstalling with cascade detaches the other linked resource too.
        let (audit, _) = import(&vercel, &installation, "audit-db").await;
        let answer = vercel
            .partner
            .delete(&installation_path(&installation))
            .user(&admin)
            .json(&json!({"cascadeResourceDeletion": true}))
            .send()
            .await;
        assert!(
            answer.status == 200 || answer.status == 204,
            "{}",
            answer.text
        );
        vercel.drain().await;
        let stored = vercel.stored_resource(&audit).await;
        assert_eq!(
            stored.status,
            provisioning_pb::ResourceStatus::Uninstalled as i32
        );
        vercel.stop().await;
    }
);
