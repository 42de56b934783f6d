//! `marketbridge demo google|aws|azure` walk their whole lifecycle against
//! the simulators, as a newcomer runs them (each demo checks every step and
//! fails on the first that does not happen).

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_google_demo_walks_the_whole_lifecycle() {
    crate::support::init_telemetry();
    marketbridge::demo::google(false)
        .await
        .expect("every step of the demo succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_demo_walks_the_whole_lifecycle() {
    crate::support::init_telemetry();
    marketbridge::demo::aws()
        .await
        .expect("every step of the demo succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_demo_walks_the_whole_lifecycle() {
    crate::support::init_telemetry();
    marketbridge::demo::azure()
        .await
        .expect("every step of the demo succeeds");
}
