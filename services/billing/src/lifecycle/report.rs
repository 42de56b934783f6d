//! A submission's delivery: `pending` until the marketplace answers, then
//! `sent` or `failed` for good, or `suspended` while the marketplace cannot
//! bill the customer (retried until an attempt passes).

use super::text_enum;

text_enum!(
    /// Where a submission stands, as stored.
    ReportStatus, "report status" {
        /// Queued for delivery (or being retried).
        Pending => "pending",
        /// Accepted by the marketplace.
        Sent => "sent",
        /// Refused for good by the marketplace.
        Failed => "failed",
        /// Held back: the marketplace says the customer cannot be billed now.
        Suspended => "suspended",
    }
);

impl ReportStatus {
    /// The statuses still waiting for an attempt to pass.
    pub const OPEN: [ReportStatus; 2] = [ReportStatus::Pending, ReportStatus::Suspended];

    /// True when nothing more will be attempted.
    pub fn is_settled(self) -> bool {
        matches!(self, ReportStatus::Sent | ReportStatus::Failed)
    }
}

/// What happened to a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportEvent {
    /// The marketplace accepted it.
    Accepted,
    /// The marketplace cannot bill the customer now (Google `checkErrors`).
    Suspended,
    /// The marketplace refused it for good.
    Refused,
    /// The attempt failed; `transient` when another attempt may pass
    /// (unreachable, rate limited, a server error).
    Failed {
        /// Worth another attempt.
        transient: bool,
    },
    /// A usage window passed the marketplace's grace period.
    Expired,
    /// The scheduler queues a waiting submission again.
    Requeued,
}

/// What the domain does after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportEffect {
    /// Keep the marketplace's answer (or the error) as the response.
    RecordAnswer,
    /// Stamp `sent_at`: the marketplace answered.
    StampSent,
    /// The invoice this submission carries was accepted: store the
    /// marketplace's id of it.
    InvoiceSubmitted,
    /// The submission settled without being accepted; an invoice it
    /// carries is logged as not submitted.
    InvoiceNotSubmitted,
    /// The next usage window of the subscription takes its turn (for
    /// marketplaces that take windows in order).
    NextWindow,
    /// Settled: what waits on the submission moves on (the account's
    /// closing, its finalization).
    AfterSettled,
    /// Fail the job so the outbox retries it with the same body.
    Retry,
    /// Enqueue a new delivery job.
    EnqueueDelivery,
}

/// Why a step is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportRefusal {
    /// The submission is settled: nothing more is attempted.
    Settled(ReportStatus),
}

/// One step of a submission's lifecycle.
pub fn report_transition(
    status: ReportStatus,
    event: ReportEvent,
) -> Result<(ReportStatus, Vec<ReportEffect>), ReportRefusal> {
    use ReportEffect::*;
    if status.is_settled() {
        return Err(ReportRefusal::Settled(status));
    }
    Ok(match event {
        ReportEvent::Accepted => (
            ReportStatus::Sent,
            vec![
                RecordAnswer,
                StampSent,
                InvoiceSubmitted,
                NextWindow,
                AfterSettled,
            ],
        ),
        ReportEvent::Suspended => (ReportStatus::Suspended, vec![RecordAnswer, StampSent]),
        ReportEvent::Refused => (
            ReportStatus::Failed,
            vec![
                RecordAnswer,
                StampSent,
                InvoiceNotSubmitted,
                NextWindow,
                AfterSettled,
            ],
        ),
        ReportEvent::Failed { transient: true } => (status, vec![RecordAnswer, Retry]),
        ReportEvent::Failed { transient: false } => (
            ReportStatus::Failed,
            vec![RecordAnswer, InvoiceNotSubmitted, NextWindow, AfterSettled],
        ),
        ReportEvent::Expired => (ReportStatus::Failed, vec![RecordAnswer, NextWindow]),
        ReportEvent::Requeued => (status, vec![EnqueueDelivery]),
    })
}

#[cfg(test)]
mod tests {
    use super::ReportEffect::*;
    use super::ReportStatus::*;
    use super::*;

    const EVENTS: [ReportEvent; 7] = [
        ReportEvent::Accepted,
        ReportEvent::Suspended,
        ReportEvent::Refused,
        ReportEvent::Failed { transient: true },
        ReportEvent::Failed { transient: false },
        ReportEvent::Expired,
        ReportEvent::Requeued,
    ];

    #[test]
    fn every_transition_of_an_open_submission() {
        type Row = (
            ReportStatus,
            ReportEvent,
            ReportStatus,
            &'static [ReportEffect],
        );
        let table: &[Row] = &[
            (
                Pending,
                ReportEvent::Accepted,
                Sent,
                &[
                    RecordAnswer,
                    StampSent,
                    InvoiceSubmitted,
                    NextWindow,
                    AfterSettled,
                ],
            ),
            (
                Pending,
                ReportEvent::Suspended,
                Suspended,
                &[RecordAnswer, StampSent],
            ),
            (
                Pending,
                ReportEvent::Refused,
                Failed,
                &[
                    RecordAnswer,
                    StampSent,
                    InvoiceNotSubmitted,
                    NextWindow,
                    AfterSettled,
                ],
            ),
            (
                Pending,
                ReportEvent::Failed { transient: true },
                Pending,
                &[RecordAnswer, Retry],
            ),
            (
                Pending,
                ReportEvent::Failed { transient: false },
                Failed,
                &[RecordAnswer, InvoiceNotSubmitted, NextWindow, AfterSettled],
            ),
            (
                Pending,
                ReportEvent::Expired,
                Failed,
                &[RecordAnswer, NextWindow],
            ),
            (Pending, ReportEvent::Requeued, Pending, &[EnqueueDelivery]),
            (
                Suspended,
                ReportEvent::Accepted,
                Sent,
                &[
                    RecordAnswer,
                    StampSent,
                    InvoiceSubmitted,
                    NextWindow,
                    AfterSettled,
                ],
            ),
            (
                Suspended,
                ReportEvent::Suspended,
                Suspended,
                &[RecordAnswer, StampSent],
            ),
            (
                Suspended,
                ReportEvent::Refused,
                Failed,
                &[
                    RecordAnswer,
                    StampSent,
                    InvoiceNotSubmitted,
                    NextWindow,
                    AfterSettled,
                ],
            ),
            (
                Suspended,
                ReportEvent::Failed { transient: true },
                Suspended,
                &[RecordAnswer, Retry],
            ),
            (
                Suspended,
                ReportEvent::Failed { transient: false },
                Failed,
                &[RecordAnswer, InvoiceNotSubmitted, NextWindow, AfterSettled],
            ),
            (
                Suspended,
                ReportEvent::Expired,
                Failed,
                &[RecordAnswer, NextWindow],
            ),
            (
                Suspended,
                ReportEvent::Requeued,
                Suspended,
                &[EnqueueDelivery],
            ),
        ];
        for (from, event, to, effects) in table {
            assert_eq!(
                report_transition(*from, *event),
                Ok((*to, effects.to_vec())),
                "{from} on {event:?}"
            );
        }
        assert_eq!(table.len(), ReportStatus::OPEN.len() * EVENTS.len());
    }

    #[test]
    fn a_settled_submission_refuses_every_event() {
        for from in [Sent, Failed] {
            for event in EVENTS {
                assert_eq!(
                    report_transition(from, event),
                    Err(ReportRefusal::Settled(from)),
                    "{from} on {event:?}"
                );
            }
        }
    }

    #[test]
    fn statuses_keep_their_stored_names() {
        let names: Vec<_> = ReportStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["pending", "sent", "failed", "suspended"]);
        for status in ReportStatus::ALL {
            assert_eq!(status.as_str().parse::<ReportStatus>(), Ok(*status));
        }
        assert!("Sent".parse::<ReportStatus>().is_err());
        assert!("".parse::<ReportStatus>().is_err());
        assert!(Sent.is_settled() && Failed.is_settled());
        assert!(!Pending.is_settled() && !Suspended.is_settled());
    }
}
