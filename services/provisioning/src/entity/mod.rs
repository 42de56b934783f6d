//! Tables the provisioning service owns.

pub mod importable;
pub mod resource;
pub mod subscription;
pub mod transfer_claim;

macro_rules! updated_whole {
    ($($module:ident),+) => {$(
        impl $module::Model {
            /// Writes every column of this (stored) row in `conn`.
            pub async fn update_in(
                &self,
                conn: &impl sea_orm::ConnectionTrait,
            ) -> marketbridge_core::Result<()> {
                use sea_orm::{ActiveModelTrait, IntoActiveModel};
                self.clone()
                    .into_active_model()
                    .reset_all()
                    .update(conn)
                    .await
                    .map_err(marketbridge_storage::db_error)?;
                Ok(())
            }
        }
    )+};
}

updated_whole!(importable, resource, subscription, transfer_claim);
