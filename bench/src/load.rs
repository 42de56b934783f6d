//! Driving calls over several connections at once and timing each.

use crate::stats::Samples;
use std::future::Future;
use std::time::Instant;
use tokio::task::JoinSet;

/// Makes `calls` calls spread over `connections` (one task each, calls one
/// after the other on its connection) and times every call. `call` gets the
/// connection's context and the call's index (0..calls, each once). The
/// first failure ends the run with its message.
pub async fn drive<C, F, Fut>(connections: Vec<C>, calls: usize, call: F) -> Result<Samples, String>
where
    C: Clone + Send + 'static,
    F: Fn(C, usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    let count = connections.len().max(1);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for (position, connection) in connections.into_iter().enumerate() {
        let share = calls / count + usize::from(position < calls % count);
        let call = call.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(share);
            for round in 0..share {
                let sent = Instant::now();
                call(connection.clone(), round * count + position).await?;
                latencies.push(sent.elapsed());
            }
            Ok::<_, String>(latencies)
        });
    }
    let mut samples = Samples::default();
    while let Some(joined) = tasks.join_next().await {
        samples.extend(joined.map_err(|e| format!("a load task failed: {e}"))??);
    }
    samples.elapsed = started.elapsed();
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn every_index_is_called_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let samples = drive(vec![(); 3], 10, move |(), index| {
            let record = record.clone();
            async move {
                record.lock().expect("lock").push(index);
                Ok(())
            }
        })
        .await
        .expect("runs");
        assert_eq!(samples.count(), 10);
        let mut seen = seen.lock().expect("lock").clone();
        seen.sort_unstable();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failure_ends_the_run() {
        let outcome = drive(vec![(); 2], 4, |(), index| async move {
            if index == 2 {
                Err("refused".to_owned())
            } else {
                Ok(())
            }
        })
        .await;
        assert_eq!(outcome.err().as_deref(), Some("refused"));
    }
}
