//! The database console: one SQL statement at a time, run in the customer's
//! database with the customer's own login, inside a transaction that is
//! read-only when asked, with a statement timeout.
//!
//! The statement is first prepared, which the server refuses for more than
//! one statement, so a read-only request cannot end the read-only
//! transaction and carry on writing. It then runs over the simple query
//! protocol, whose results arrive as text whatever their type.

use super::admin::sql_error;
use crate::console::{failure, paragraph, table, text};
use futures::StreamExt;
use marketbridge_core::{Error, Result};
use marketbridge_proto::provisioning::v1::OutputBlock;
use sea_orm::sqlx;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, Column, Connection, Either, Executor, Row, SqlSafeStr, Statement};
use std::time::Duration;

/// Longest a statement may run.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest to wait for the connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Rows shown; the rest are counted.
const MAX_ROWS: usize = 200;

/// Runs `input` and describes what happened.
pub async fn run(
    options: PgConnectOptions,
    input: &str,
    read_only: bool,
) -> Result<Vec<OutputBlock>> {
    let mut connection =
        match tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(&options)).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => return Err(sql_error("open the console", error)),
            Err(_) => {
                return Err(Error::unavailable(
                    "postgres: the console could not connect in time",
                ));
            }
        };
    let setup = format!(
        "SET statement_timeout = {}; BEGIN{}",
        STATEMENT_TIMEOUT.as_millis(),
        if read_only { " READ ONLY" } else { "" }
    );
    // Built from fixed text and a number only.
    sqlx::raw_sql(AssertSqlSafe(setup))
        .execute(&mut connection)
        .await
        .map_err(|e| sql_error("start the console transaction", e))?;
    let blocks = match statement(&mut connection, input).await {
        Ok(blocks) => {
            let end = if read_only { "ROLLBACK" } else { "COMMIT" };
            match sqlx::raw_sql(end).execute(&mut connection).await {
                Ok(_) => blocks,
                Err(error) => vec![sql_failure(&error)],
            }
        }
        Err(error) => vec![sql_failure(&error)],
    };
    let _ = connection.close().await;
    Ok(blocks)
}

/// Runs the one statement in `input`.
async fn statement(
    connection: &mut PgConnection,
    input: &str,
) -> std::result::Result<Vec<OutputBlock>, sqlx::Error> {
    // The customer's own text, run with the customer's own privileges; the
    // prepare refuses more than one statement.
    let prepared = connection
        .prepare(AssertSqlSafe(input.to_owned()).into_sql_str())
        .await?;
    let header: Vec<String> = prepared
        .columns()
        .iter()
        .map(|c| c.name().to_owned())
        .collect();
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut hidden = 0usize;
    let mut affected = None;
    let mut results = sqlx::raw_sql(AssertSqlSafe(input.to_owned())).fetch_many(&mut *connection);
    while let Some(item) = results.next().await {
        match item? {
            Either::Left(done) => affected = Some(done.rows_affected()),
            Either::Right(row) => {
                if rows.len() >= MAX_ROWS {
                    hidden += 1;
                    continue;
                }
                let cells = (0..row.len())
                    .map(|i| {
                        row.try_get_unchecked::<Option<String>, _>(i)
                            .ok()
                            .flatten()
                            .unwrap_or_else(|| "NULL".to_owned())
                    })
                    .collect();
                rows.push(cells);
            }
        }
    }
    let mut blocks = Vec::new();
    let shown = rows.len();
    if header.is_empty() {
        blocks.push(paragraph(vec![text(format!(
            "OK, {} row{} affected",
            affected.unwrap_or(0),
            if affected == Some(1) { "" } else { "s" }
        ))]));
    } else {
        let total = shown + hidden;
        blocks.push(table(header, rows));
        let mut summary = format!("{total} row{}", if total == 1 { "" } else { "s" });
        if hidden > 0 {
            summary.push_str(&format!(", {hidden} not shown"));
        }
        blocks.push(paragraph(vec![text(summary)]));
    }
    Ok(blocks)
}

/// An SQL error as the console shows it.
fn sql_failure(error: &sqlx::Error) -> OutputBlock {
    match error {
        sqlx::Error::Database(database) => failure(format!(
            "ERROR: {} (SQLSTATE {})",
            database.message(),
            database.code().unwrap_or_default()
        )),
        other => failure(format!("ERROR: {other}")),
    }
}
