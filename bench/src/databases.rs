//! Fresh databases for one run: SQLite files in a temporary folder, or new
//! databases on a PostgreSQL server, removed again afterwards.

use marketbridge_storage::sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use marketbridge_storage::testing::database_url_with_name;
use std::path::PathBuf;

/// The three service databases of a run.
pub struct RunDatabases {
    /// Account service database URL.
    pub account: String,
    /// Provisioning service database URL.
    pub provisioning: String,
    /// Billing service database URL.
    pub billing: String,
    folder: PathBuf,
    postgres: Option<(String, Vec<String>)>,
}

impl RunDatabases {
    /// SQLite files in a new temporary folder, or, with `postgres_url` (an
    /// admin URL such as `postgres://postgres@127.0.0.1:5432/postgres`),
    /// three new databases on that server.
    pub async fn create(postgres_url: Option<&str>) -> Result<Self, String> {
        let run = uuid::Uuid::new_v4().simple().to_string();
        let folder = std::env::temp_dir().join(format!("marketbridge-bench-{run}"));
        std::fs::create_dir_all(&folder).map_err(|e| format!("cannot create {folder:?}: {e}"))?;
        let Some(admin_url) = postgres_url else {
            let url = |service: &str| {
                format!(
                    "sqlite://{}?mode=rwc",
                    folder.join(format!("{service}.db")).display()
                )
            };
            return Ok(Self {
                account: url("account"),
                provisioning: url("provisioning"),
                billing: url("billing"),
                folder,
                postgres: None,
            });
        };
        let admin = Database::connect(admin_url)
            .await
            .map_err(|e| format!("cannot reach PostgreSQL: {e}"))?;
        let mut names = Vec::new();
        for service in ["account", "provisioning", "billing"] {
            let name = format!("mb_bench_{run}_{service}");
            admin
                .execute_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!("CREATE DATABASE \"{name}\""),
                ))
                .await
                .map_err(|e| format!("cannot create database {name}: {e}"))?;
            names.push(name);
        }
        let _ = admin.close().await;
        Ok(Self {
            account: database_url_with_name(admin_url, &names[0]),
            provisioning: database_url_with_name(admin_url, &names[1]),
            billing: database_url_with_name(admin_url, &names[2]),
            folder,
            postgres: Some((admin_url.to_owned(), names)),
        })
    }

    /// The folder for the set's other local files.
    pub fn folder(&self) -> &PathBuf {
        &self.folder
    }

    /// The names of the run's PostgreSQL databases; `None` on SQLite.
    pub fn postgres_names(&self) -> Option<Vec<String>> {
        self.postgres.as_ref().map(|(_, names)| names.clone())
    }

    /// Removes the databases and the folder.
    pub async fn remove(self) {
        if let Some((admin_url, names)) = &self.postgres
            && let Ok(admin) = Database::connect(admin_url.as_str()).await
        {
            for name in names {
                let _ = admin
                    .execute_raw(Statement::from_string(
                        DbBackend::Postgres,
                        format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
                    ))
                    .await;
            }
            let _ = admin.close().await;
        }
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}
