//! Tables the provisioning service owns.

pub mod importable;
pub mod resource;
pub mod subscription;
pub mod transfer_claim;

use marketbridge_core::Error;
use sea_orm::DbErr;

/// A database error as the service reports it. A unique-constraint
/// violation becomes a conflict without the database's text (which would
/// otherwise reach a marketplace); the text is logged.
pub fn db_error(error: DbErr) -> Error {
    if marketbridge_storage::is_unique_violation(&error) {
        tracing::warn!(error = %error, "unique constraint violated");
        return Error::conflict("a concurrent change conflicted with this one; retry");
    }
    marketbridge_storage::db_error(error)
}

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
                    .map_err(db_error)?;
                Ok(())
            }
        }
    )+};
}

updated_whole!(importable, resource, subscription, transfer_claim);
