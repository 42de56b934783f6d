//! Closing an uninstalled account's billing: `closing` until the usage up to
//! the uninstall has settled and the final invoices are recorded, then
//! `invoiced` until every submission of the account is settled, then
//! `finalizing` while the marketplace's finalization is on its way (where
//! the marketplace has such a call), and `finalized` once the account
//! service finalized the account.

use super::text_enum;

text_enum!(
    /// How far an account's closing got, as stored.
    ClosureStatus, "closure status" {
        /// Waiting for the usage up to the uninstall to settle.
        Closing => "closing",
        /// Final invoices recorded; waiting for every submission to settle.
        Invoiced => "invoiced",
        /// The marketplace's finalization is on its way.
        Finalizing => "finalizing",
        /// Done: nothing more will be billed.
        Finalized => "finalized",
    }
);

impl ClosureStatus {
    /// The statuses the scheduler moves on.
    pub const OPEN: [ClosureStatus; 3] = [
        ClosureStatus::Closing,
        ClosureStatus::Invoiced,
        ClosureStatus::Finalizing,
    ];
}

/// What happens to a closing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosureEvent {
    /// `CloseAccountBilling`; `nothing_billable` when nothing was ever
    /// billable and nothing waits to be sent.
    Requested {
        /// Nothing to bill or send.
        nothing_billable: bool,
    },
    /// The usage up to the uninstall has settled.
    UsageSettled,
    /// Every submission of the account is settled; `marketplace_finalizes`
    /// when the marketplace takes a finalization call.
    ReportsSettled {
        /// The marketplace has a finalization call.
        marketplace_finalizes: bool,
    },
    /// The marketplace accepted the finalization.
    FinalizationSent,
}

/// What the domain does for a step, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosureEffect {
    /// Record the final invoices of the account's subscriptions.
    RecordFinalInvoices,
    /// Stamp `invoiced_at`.
    StampInvoiced,
    /// Record the marketplace's finalization submission.
    RecordFinalization,
    /// Ask the account service to finalize the account (before the status
    /// is written: a refusal leaves the closing where it is).
    FinalizeAccount,
    /// Stamp `finalized_at`.
    StampFinalized,
    /// See whether the closing can move on at once.
    Advance,
}

/// Why a step is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosureRefusal {
    /// There is no closing of the account.
    NotClosing,
    /// The account's billing is already being closed (or closed).
    AlreadyRequested(ClosureStatus),
    /// The closing is not at the step the event belongs to.
    NotNow(ClosureStatus),
    /// Nothing more happens to a finalized closing.
    AlreadyFinalized,
}

/// One step of a closing; `status` is `None` before it was requested.
pub fn closure_transition(
    status: Option<ClosureStatus>,
    event: ClosureEvent,
) -> Result<(ClosureStatus, Vec<ClosureEffect>), ClosureRefusal> {
    use ClosureEffect::*;
    use ClosureStatus::*;
    let Some(status) = status else {
        return match event {
            ClosureEvent::Requested {
                nothing_billable: true,
            } => Ok((Finalized, vec![StampInvoiced, StampFinalized])),
            ClosureEvent::Requested {
                nothing_billable: false,
            } => Ok((Closing, vec![])),
            _ => Err(ClosureRefusal::NotClosing),
        };
    };
    match (status, event) {
        (_, ClosureEvent::Requested { .. }) => Err(ClosureRefusal::AlreadyRequested(status)),
        (Finalized, _) => Err(ClosureRefusal::AlreadyFinalized),
        (Closing, ClosureEvent::UsageSettled) => {
            Ok((Invoiced, vec![RecordFinalInvoices, StampInvoiced, Advance]))
        }
        (
            Invoiced,
            ClosureEvent::ReportsSettled {
                marketplace_finalizes: true,
            },
        ) => Ok((Finalizing, vec![RecordFinalization])),
        (
            Invoiced,
            ClosureEvent::ReportsSettled {
                marketplace_finalizes: false,
            },
        ) => Ok((Finalized, vec![FinalizeAccount, StampFinalized])),
        (Invoiced | Finalizing, ClosureEvent::FinalizationSent) => {
            Ok((Finalized, vec![FinalizeAccount, StampFinalized]))
        }
        (status, _) => Err(ClosureRefusal::NotNow(status)),
    }
}

#[cfg(test)]
mod tests {
    use super::ClosureEffect::*;
    use super::ClosureStatus::*;
    use super::*;

    const EVENTS: [ClosureEvent; 6] = [
        ClosureEvent::Requested {
            nothing_billable: true,
        },
        ClosureEvent::Requested {
            nothing_billable: false,
        },
        ClosureEvent::UsageSettled,
        ClosureEvent::ReportsSettled {
            marketplace_finalizes: true,
        },
        ClosureEvent::ReportsSettled {
            marketplace_finalizes: false,
        },
        ClosureEvent::FinalizationSent,
    ];

    type Outcome = Result<(ClosureStatus, &'static [ClosureEffect]), ClosureRefusal>;

    #[test]
    fn every_transition_and_every_refusal() {
        use ClosureRefusal::*;
        // One row per status (none first), one column per event of EVENTS.
        let table: [(Option<ClosureStatus>, [Outcome; 6]); 5] = [
            (
                None,
                [
                    Ok((Finalized, &[StampInvoiced, StampFinalized])),
                    Ok((Closing, &[])),
                    Err(NotClosing),
                    Err(NotClosing),
                    Err(NotClosing),
                    Err(NotClosing),
                ],
            ),
            (
                Some(Closing),
                [
                    Err(AlreadyRequested(Closing)),
                    Err(AlreadyRequested(Closing)),
                    Ok((Invoiced, &[RecordFinalInvoices, StampInvoiced, Advance])),
                    Err(NotNow(Closing)),
                    Err(NotNow(Closing)),
                    Err(NotNow(Closing)),
                ],
            ),
            (
                Some(Invoiced),
                [
                    Err(AlreadyRequested(Invoiced)),
                    Err(AlreadyRequested(Invoiced)),
                    Err(NotNow(Invoiced)),
                    Ok((Finalizing, &[RecordFinalization])),
                    Ok((Finalized, &[FinalizeAccount, StampFinalized])),
                    Ok((Finalized, &[FinalizeAccount, StampFinalized])),
                ],
            ),
            (
                Some(Finalizing),
                [
                    Err(AlreadyRequested(Finalizing)),
                    Err(AlreadyRequested(Finalizing)),
                    Err(NotNow(Finalizing)),
                    Err(NotNow(Finalizing)),
                    Err(NotNow(Finalizing)),
                    Ok((Finalized, &[FinalizeAccount, StampFinalized])),
                ],
            ),
            (
                Some(Finalized),
                [
                    Err(AlreadyRequested(Finalized)),
                    Err(AlreadyRequested(Finalized)),
                    Err(AlreadyFinalized),
                    Err(AlreadyFinalized),
                    Err(AlreadyFinalized),
                    Err(AlreadyFinalized),
                ],
            ),
        ];
        for (from, outcomes) in table {
            for (event, expected) in EVENTS.into_iter().zip(outcomes) {
                assert_eq!(
                    closure_transition(from, event),
                    expected.map(|(to, effects)| (to, effects.to_vec())),
                    "{from:?} on {event:?}"
                );
            }
        }
    }

    #[test]
    fn statuses_keep_their_stored_names() {
        let names: Vec<_> = ClosureStatus::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["closing", "invoiced", "finalizing", "finalized"]);
        for status in ClosureStatus::ALL {
            assert_eq!(status.as_str().parse::<ClosureStatus>(), Ok(*status));
        }
        assert!("closed".parse::<ClosureStatus>().is_err());
    }
}
