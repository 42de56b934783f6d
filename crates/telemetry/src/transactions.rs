//! The "no network call inside a database transaction" invariant, checked at
//! run time.
//!
//! Every write transaction a service opens holds an [`OpenTransaction`] guard
//! (taken by `marketbridge-storage`), which counts it against the tokio task it
//! runs in. Every outbound gRPC and HTTP call asks [`check_no_open_transaction`]
//! first. A call made while the calling task holds a transaction is a bug: a
//! slow peer would hold SQLite's write lock (or a PostgreSQL connection and its
//! row locks) for as long as it takes to answer. Debug builds, and so every
//! test, panic with the call's name; release builds log an error and count it
//! in [`violations`], so production keeps serving while the mistake is visible.
//!
//! Tasks are the unit because a service handles each gRPC request, and runs
//! each outbox job, in a task of its own. Work that is not inside a tokio task
//! is not tracked.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

static OPEN: Mutex<Option<HashMap<tokio::task::Id, u32>>> = Mutex::new(None);
static VIOLATIONS: AtomicU64 = AtomicU64::new(0);

fn with_open<R>(change: impl FnOnce(&mut HashMap<tokio::task::Id, u32>) -> R) -> R {
    let mut guard = OPEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    change(guard.get_or_insert_with(HashMap::new))
}

/// Marks a database transaction as open in the current task until dropped.
#[derive(Debug)]
#[must_use = "the transaction counts as open only while the guard lives"]
pub struct OpenTransaction {
    task: Option<tokio::task::Id>,
}

impl OpenTransaction {
    /// Counts a transaction opened by the current task.
    pub fn begin() -> Self {
        let task = tokio::task::try_id();
        if let Some(task) = task {
            with_open(|open| *open.entry(task).or_default() += 1);
        }
        Self { task }
    }
}

impl Drop for OpenTransaction {
    fn drop(&mut self) {
        let Some(task) = self.task else { return };
        with_open(|open| {
            if let Some(count) = open.get_mut(&task) {
                *count -= 1;
                if *count == 0 {
                    open.remove(&task);
                }
            }
        });
    }
}

/// Whether the current task holds an open database transaction.
pub fn transaction_open() -> bool {
    match tokio::task::try_id() {
        Some(task) => with_open(|open| open.contains_key(&task)),
        None => false,
    }
}

/// Called before every outbound network call; `call` names it (`GET /v1/...`
/// at `vercel`, a gRPC path). See the module documentation for what happens
/// when a transaction is open.
pub fn check_no_open_transaction(call: impl std::fmt::Display) {
    if !transaction_open() {
        return;
    }
    VIOLATIONS.fetch_add(1, Ordering::Relaxed);
    if cfg!(debug_assertions) {
        panic!("network call `{call}` made while a database transaction is open in this task");
    }
    tracing::error!(
        call = %call,
        "network call made while a database transaction is open; this is a bug"
    );
}

/// How many calls this process made while a transaction was open.
pub fn violations() -> u64 {
    VIOLATIONS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `body` in a task of its own (a test's body is not a task).
    async fn in_task<T: Send + 'static>(body: impl Future<Output = T> + Send + 'static) -> T {
        tokio::spawn(body).await.expect("the task panicked")
    }

    #[tokio::test]
    async fn a_call_outside_a_transaction_passes() {
        in_task(async {
            assert!(!transaction_open());
            check_no_open_transaction("GET /outside");
            {
                let _txn = OpenTransaction::begin();
                assert!(transaction_open());
            }
            assert!(!transaction_open());
            check_no_open_transaction("GET /after");
        })
        .await;
    }

    #[tokio::test]
    async fn a_call_inside_a_transaction_is_refused() {
        let result = tokio::spawn(async {
            let _txn = OpenTransaction::begin();
            check_no_open_transaction("POST /inside");
        })
        .await;
        let panic = result.expect_err("the call must be refused").into_panic();
        let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(message.contains("POST /inside"), "{message}");
        assert!(violations() >= 1);
        // The panic dropped the guard: the task's count is gone with it.
        assert!(!in_task(async { transaction_open() }).await);
    }

    #[tokio::test]
    async fn another_task_is_not_held_by_this_tasks_transaction() {
        in_task(async {
            let _txn = OpenTransaction::begin();
            let other = tokio::spawn(async { transaction_open() }).await.unwrap();
            assert!(!other);
            assert!(transaction_open());
        })
        .await;
    }

    #[tokio::test]
    async fn nested_transactions_close_one_at_a_time() {
        in_task(async {
            let outer = OpenTransaction::begin();
            let inner = OpenTransaction::begin();
            drop(inner);
            assert!(transaction_open());
            drop(outer);
            assert!(!transaction_open());
        })
        .await;
    }
}
