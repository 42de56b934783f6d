//! Rotations of one resource on two replicas of the service: one that
//! another replica's rotation overtook between its read and its
//! transaction starts again from the secrets that one left.

use async_trait::async_trait;
use marketbridge_core::Result;
use marketbridge_core::crypto::Cipher;
use marketbridge_core::ids::{AccountId, ResourceId};
use marketbridge_proto::provisioning::v1 as pb;
use marketbridge_provisioning::ProvisioningServer;
use marketbridge_provisioning::driver::template::TemplateDriver;
use marketbridge_provisioning::driver::{
    Driver, DriverContext, Measurement, Prepared, Provisioned, Rotation, Secret,
};
use marketbridge_provisioning::entity::resource;
use marketbridge_provisioning::model::ResourceStatus;
use marketbridge_storage::backend_test;
use marketbridge_storage::sea_orm::{EntityTrait, IntoActiveModel};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::sync::Semaphore;

mod support;

/// The template driver, except that its first rotation says it started
/// (`entered`) and then waits at `gate`.
struct HeldOnce {
    held: AtomicBool,
    entered: Arc<Semaphore>,
    gate: Arc<Semaphore>,
}

#[async_trait]
impl Driver for HeldOnce {
    fn name(&self) -> &'static str {
        TemplateDriver.name()
    }
    async fn prepare(&self, context: &DriverContext<'_>) -> Result<Prepared> {
        TemplateDriver.prepare(context).await
    }
    async fn provision(
        &self,
        context: &DriverContext<'_>,
        secrets: &[Secret],
    ) -> Result<Provisioned> {
        TemplateDriver.provision(context, secrets).await
    }
    async fn apply_plan(&self, context: &DriverContext<'_>) -> Result<()> {
        TemplateDriver.apply_plan(context).await
    }
    async fn rotate(&self, context: &DriverContext<'_>, current: &[Secret]) -> Result<Rotation> {
        if !self.held.swap(true, Ordering::SeqCst) {
            self.entered.add_permits(1);
            let _open = self.gate.acquire().await.expect("gate");
        }
        TemplateDriver.rotate(context, current).await
    }
    async fn complete_rotation(
        &self,
        context: &DriverContext<'_>,
        secrets: &[Secret],
    ) -> Result<()> {
        TemplateDriver.complete_rotation(context, secrets).await
    }
    async fn revoke(&self, context: &DriverContext<'_>, old: &[Secret]) -> Result<()> {
        TemplateDriver.revoke(context, old).await
    }
    async fn suspend(&self, context: &DriverContext<'_>) -> Result<()> {
        TemplateDriver.suspend(context).await
    }
    async fn resume(&self, context: &DriverContext<'_>) -> Result<()> {
        TemplateDriver.resume(context).await
    }
    async fn deprovision(&self, context: &DriverContext<'_>) -> Result<()> {
        TemplateDriver.deprovision(context).await
    }
    async fn measure(&self, context: &DriverContext<'_>) -> Result<Vec<Measurement>> {
        TemplateDriver.measure(context).await
    }
}

/// Stores a ready resource of product `database` with no secrets yet.
async fn insert_ready(server: &ProvisioningServer, cipher: &Cipher) -> ResourceId {
    let id = ResourceId::generate();
    let row = support::resource_row(&id, &AccountId::generate(), ResourceStatus::Ready, cipher);
    resource::Entity::insert(row.into_active_model())
        .exec_without_returning(server.domain().db())
        .await
        .unwrap();
    id
}

fn rotate(id: &ResourceId) -> pb::RotateSecretsRequest {
    pb::RotateSecretsRequest {
        resource_id: id.to_string(),
        reason: "test".into(),
        old_secrets_valid_for_seconds: 60,
        ..Default::default()
    }
}

backend_test!(
    a_rotation_another_replica_overtook_starts_again_from_its_secrets,
    |database| async move {
        let cipher = Cipher::from_base64_key(&Cipher::generate_base64_key()).unwrap();
        let (entered, gate) = (Arc::new(Semaphore::new(0)), Arc::new(Semaphore::new(0)));
        let held = HeldOnce {
            held: AtomicBool::new(false),
            entered: entered.clone(),
            gate: gate.clone(),
        };
        let first = support::open(
            database.url(),
            &cipher,
            support::default_drivers().with(Arc::new(held)),
        )
        .await;
        let second = support::open(database.url(), &cipher, support::default_drivers()).await;
        let id = insert_ready(&first, &cipher).await;

        // The first replica's rotation has read the secrets and waits in
        // its driver; the second replica's rotation runs to the end.
        let overtaken = {
            let (domain, request) = (first.domain().clone(), rotate(&id));
            tokio::spawn(async move { domain.rotate_secrets(request).await })
        };
        let _entered = entered.acquire().await.unwrap();
        let ahead = second.domain().rotate_secrets(rotate(&id)).await.unwrap();
        gate.add_permits(1);
        let overtaken = overtaken.await.unwrap().unwrap();

        let stored = first
            .domain()
            .resource_secrets(pb::GetResourceSecretsRequest {
                resource_id: id.to_string(),
            })
            .await
            .unwrap();
        assert_eq!(stored.secrets_version, 3, "both rotations were applied");
        assert_eq!(
            stored.secrets, overtaken.secrets,
            "the overtaken rotation, applied last, made the secrets in force"
        );
        assert_ne!(ahead.secrets, overtaken.secrets);
    }
);
