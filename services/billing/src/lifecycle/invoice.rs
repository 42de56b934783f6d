//! An invoice's states (Vercel's names). The marketplace is the authority on
//! where an invoice stands: what it reports is taken, unless it is older than
//! what is stored, or a read that predates a refund we asked for. Billing
//! moves an invoice itself twice: `draft` to `pending` once the marketplace
//! accepted the submission, and to `refund_requested` when a refund is asked
//! for. An `overdue` invoice suspends the account's resources; paying or
//! refunding it resumes them.

use super::text_enum;

text_enum!(
    /// An invoice's state, as stored.
    InvoiceState, "invoice state" {
        /// Recorded by billing, not accepted by the marketplace yet.
        Draft => "draft",
        /// Accepted by the marketplace.
        Pending => "pending",
        /// To be charged at a set time.
        Scheduled => "scheduled",
        /// Issued to the customer.
        Invoiced => "invoiced",
        /// Paid.
        Paid => "paid",
        /// A payment failed; automatic retries run.
        Notpaid => "notpaid",
        /// Retries are over: unpaid.
        Overdue => "overdue",
        /// A refund was asked for.
        RefundRequested => "refund_requested",
        /// Refunded.
        Refunded => "refunded",
    }
);

impl InvoiceState {
    /// Settled: nothing more will change it by itself (the refresh stops
    /// reading it).
    pub fn is_settled(self) -> bool {
        matches!(self, InvoiceState::Paid | InvoiceState::Refunded)
    }

    /// A refund may be asked for.
    pub fn is_refundable(self) -> bool {
        matches!(
            self,
            InvoiceState::Paid
                | InvoiceState::Notpaid
                | InvoiceState::Overdue
                | InvoiceState::Invoiced
        )
    }
}

/// What happens to an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceEvent {
    /// The marketplace accepted our submission of it.
    Submitted,
    /// A row the marketplace told us of before our submission was answered
    /// (a webhook) is merged into ours, with its state.
    Merged(InvoiceState),
    /// The marketplace reported a state (`RecordInvoiceState`); `stale` when
    /// the report is older than the stored state.
    Reported {
        /// The state reported.
        state: InvoiceState,
        /// Older than the stored state.
        stale: bool,
    },
    /// The invoice as read from the marketplace (the hourly refresh).
    Read(InvoiceState),
    /// We ask the marketplace for a refund.
    RefundAsked,
}

/// What the domain does after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceEffect {
    /// The invoice is paid: stamp `paid_at` unless it is stamped.
    StampPaid,
    /// Enqueue the suspension of the account's resources (overdue).
    SuspendResources,
    /// Enqueue the resumption of what the overdue invoice suspended.
    ResumeResources,
    /// Enqueue the refund call to the marketplace.
    RequestRefund,
}

/// Why a step is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceRefusal {
    /// There is no such invoice yet; only a report can create one.
    Unknown,
    /// The report is older than the stored state.
    Stale,
    /// The read shows the stored state.
    Unchanged,
    /// The read predates the refund we asked for.
    RefundInFlight,
    /// An invoice in this state cannot be refunded.
    NotRefundable(InvoiceState),
}

/// What moving from `from` to `to` calls for besides the state.
fn follow(from: Option<InvoiceState>, to: InvoiceState) -> Vec<InvoiceEffect> {
    use InvoiceState::*;
    let mut effects = Vec::new();
    if to == Paid {
        effects.push(InvoiceEffect::StampPaid);
    }
    match (from, to) {
        (from, Overdue) if from != Some(Overdue) => effects.push(InvoiceEffect::SuspendResources),
        (Some(Overdue), Paid | RefundRequested | Refunded) => {
            effects.push(InvoiceEffect::ResumeResources)
        }
        _ => {}
    }
    effects
}

/// One step of an invoice's lifecycle; `state` is `None` when billing has
/// no row of the invoice yet.
pub fn invoice_transition(
    state: Option<InvoiceState>,
    event: InvoiceEvent,
) -> Result<(InvoiceState, Vec<InvoiceEffect>), InvoiceRefusal> {
    use InvoiceState::*;
    let known = state.ok_or(InvoiceRefusal::Unknown);
    match event {
        InvoiceEvent::Reported { stale: true, .. } if state.is_some() => Err(InvoiceRefusal::Stale),
        InvoiceEvent::Reported { state: to, .. } => Ok((to, follow(state, to))),
        InvoiceEvent::Submitted => Ok((
            match known? {
                Draft => Pending,
                other => other,
            },
            Vec::new(),
        )),
        InvoiceEvent::Merged(to) => {
            known?;
            Ok((to, Vec::new()))
        }
        InvoiceEvent::Read(to) => {
            let from = known?;
            if from == RefundRequested && !matches!(to, RefundRequested | Refunded) {
                Err(InvoiceRefusal::RefundInFlight)
            } else if from == to {
                Err(InvoiceRefusal::Unchanged)
            } else {
                Ok((to, follow(Some(from), to)))
            }
        }
        InvoiceEvent::RefundAsked => {
            let from = known?;
            if !from.is_refundable() {
                return Err(InvoiceRefusal::NotRefundable(from));
            }
            let mut effects = vec![InvoiceEffect::RequestRefund];
            effects.extend(follow(Some(from), RefundRequested));
            Ok((RefundRequested, effects))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InvoiceEffect::*;
    use super::InvoiceState::*;
    use super::*;

    /// Rows: from (none, then every state in lifecycle order); columns: to,
    /// in lifecycle order. `-` the state only, `p` paid stamped, `s`
    /// resources suspended, `r` resumed, `q` resumed and paid stamped, `u`
    /// unchanged, `f` refund in flight, `!` unknown invoice.
    fn effects(cell: char) -> Result<Vec<InvoiceEffect>, InvoiceRefusal> {
        match cell {
            '-' => Ok(vec![]),
            'p' => Ok(vec![StampPaid]),
            's' => Ok(vec![SuspendResources]),
            'r' => Ok(vec![ResumeResources]),
            'q' => Ok(vec![StampPaid, ResumeResources]),
            'u' => Err(InvoiceRefusal::Unchanged),
            'f' => Err(InvoiceRefusal::RefundInFlight),
            '!' => Err(InvoiceRefusal::Unknown),
            other => panic!("bad cell {other}"),
        }
    }

    fn froms() -> Vec<Option<InvoiceState>> {
        std::iter::once(None)
            .chain(InvoiceState::ALL.iter().copied().map(Some))
            .collect()
    }

    fn check(matrix: &[&str], event: impl Fn(InvoiceState) -> InvoiceEvent) {
        let froms = froms();
        assert_eq!(matrix.len(), froms.len());
        for (from, row) in froms.into_iter().zip(matrix) {
            let cells: Vec<char> = row.split_whitespace().flat_map(str::chars).collect();
            assert_eq!(cells.len(), InvoiceState::ALL.len(), "{row}");
            for (to, cell) in InvoiceState::ALL.iter().zip(cells) {
                let expected = effects(cell).map(|effects| (*to, effects));
                assert_eq!(
                    invoice_transition(from, event(*to)),
                    expected,
                    "{from:?} on {:?}",
                    event(*to)
                );
            }
        }
    }

    #[test]
    fn a_report_moves_to_the_state_reported() {
        //         dr pe sc in pa np ov rr rf
        check(
            &[
                "- - - - p - s - -", // none: the report creates the row
                "- - - - p - s - -", // draft
                "- - - - p - s - -", // pending
                "- - - - p - s - -", // scheduled
                "- - - - p - s - -", // invoiced
                "- - - - p - s - -", // paid
                "- - - - p - s - -", // notpaid
                "- - - - q - - r r", // overdue
                "- - - - p - s - -", // refund_requested
                "- - - - p - s - -", // refunded
            ],
            |state| InvoiceEvent::Reported {
                state,
                stale: false,
            },
        );
    }

    #[test]
    fn a_stale_report_is_refused_once_the_invoice_is_known() {
        for from in InvoiceState::ALL {
            for to in InvoiceState::ALL {
                assert_eq!(
                    invoice_transition(
                        Some(*from),
                        InvoiceEvent::Reported {
                            state: *to,
                            stale: true
                        }
                    ),
                    Err(InvoiceRefusal::Stale)
                );
            }
        }
        assert_eq!(
            invoice_transition(
                None,
                InvoiceEvent::Reported {
                    state: Paid,
                    stale: true
                }
            ),
            Ok((Paid, vec![StampPaid])),
            "nothing stored is newer"
        );
    }

    #[test]
    fn a_read_moves_unless_it_matches_or_predates_a_refund() {
        //         dr pe sc in pa np ov rr rf
        check(
            &[
                "! ! ! ! ! ! ! ! !", // none
                "u - - - p - s - -", // draft
                "- u - - p - s - -", // pending
                "- - u - p - s - -", // scheduled
                "- - - u p - s - -", // invoiced
                "- - - - u - s - -", // paid
                "- - - - p u s - -", // notpaid
                "- - - - q - u r r", // overdue
                "f f f f f f f u -", // refund_requested
                "- - - - p - s - u", // refunded
            ],
            InvoiceEvent::Read,
        );
    }

    #[test]
    fn a_merged_row_brings_its_state_without_effects() {
        //         dr pe sc in pa np ov rr rf
        check(
            &[
                "! ! ! ! ! ! ! ! !",
                "- - - - - - - - -",
                "- - - - - - - - -",
                "- - - - - - - - -",
                "- - - - - - - - -",
                "- - - - - - - - -",
                "- - - - - - - - -",
                "- - - - - - - - -",
                "- - - - - - - - -",
                "- - - - - - - - -",
            ],
            InvoiceEvent::Merged,
        );
    }

    #[test]
    fn a_submission_makes_a_draft_pending_and_leaves_a_reported_state() {
        let table = [
            (None, Err(InvoiceRefusal::Unknown)),
            (Some(Draft), Ok(Pending)),
            (Some(Pending), Ok(Pending)),
            (Some(Scheduled), Ok(Scheduled)),
            (Some(Invoiced), Ok(Invoiced)),
            (Some(Paid), Ok(Paid)),
            (Some(Notpaid), Ok(Notpaid)),
            (Some(Overdue), Ok(Overdue)),
            (Some(RefundRequested), Ok(RefundRequested)),
            (Some(Refunded), Ok(Refunded)),
        ];
        for (from, to) in table {
            assert_eq!(
                invoice_transition(from, InvoiceEvent::Submitted),
                to.map(|to| (to, vec![])),
                "{from:?}"
            );
        }
    }

    #[test]
    fn only_issued_invoices_can_be_refunded() {
        let table = [
            (None, Err(InvoiceRefusal::Unknown)),
            (Some(Draft), Err(InvoiceRefusal::NotRefundable(Draft))),
            (Some(Pending), Err(InvoiceRefusal::NotRefundable(Pending))),
            (
                Some(Scheduled),
                Err(InvoiceRefusal::NotRefundable(Scheduled)),
            ),
            (Some(Invoiced), Ok(vec![RequestRefund])),
            (Some(Paid), Ok(vec![RequestRefund])),
            (Some(Notpaid), Ok(vec![RequestRefund])),
            (Some(Overdue), Ok(vec![RequestRefund, ResumeResources])),
            (
                Some(RefundRequested),
                Err(InvoiceRefusal::NotRefundable(RefundRequested)),
            ),
            (Some(Refunded), Err(InvoiceRefusal::NotRefundable(Refunded))),
        ];
        for (from, expected) in table {
            assert_eq!(
                invoice_transition(from, InvoiceEvent::RefundAsked),
                expected.map(|effects| (RefundRequested, effects)),
                "{from:?}"
            );
        }
    }

    #[test]
    fn states_keep_their_stored_names() {
        let names: Vec<_> = InvoiceState::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "draft",
                "pending",
                "scheduled",
                "invoiced",
                "paid",
                "notpaid",
                "overdue",
                "refund_requested",
                "refunded"
            ]
        );
        for state in InvoiceState::ALL {
            assert_eq!(state.as_str().parse::<InvoiceState>(), Ok(*state));
        }
        assert!("issued".parse::<InvoiceState>().is_err());
    }
}
