//! An account's lifecycle as a pure state machine: its state (active,
//! deletion pending, deleted), its provider signup (not required, pending,
//! approving, approved, rejected) and whether its billing is finalized.
//!
//! [`transition`] takes the current [`Lifecycle`] and an [`Event`] and
//! answers the next lifecycle with the [`Effect`]s the change causes (rows
//! to change, jobs to enqueue), or a [`Refusal`]. It knows no database and
//! no network: the domain applies the effects, in one place.

use crate::model::{AccountState, SignupState};

/// Where an account stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifecycle {
    /// Live or deleted.
    pub account: AccountState,
    /// The provider signup.
    pub signup: SignupState,
    /// Billing finalized (the account is deleted for good).
    pub finalized: bool,
}

/// What happens to an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The marketplace described the account (an upsert or a refresh),
    /// reporting its signup state when it has one.
    Described {
        /// The signup state the marketplace reports.
        reported: Option<SignupState>,
    },
    /// The customer submitted the signup form.
    SignupSubmitted,
    /// An operator rejected the signup.
    SignupRejected {
        /// Why.
        reason: String,
    },
    /// An operator reset the account at the marketplace.
    Reset,
    /// The marketplace accepted our approval.
    ApprovedAtMarketplace,
    /// The account is deleted.
    Deleted(Deletion),
    /// Billing of the deleted account is finalized.
    Finalized,
}

/// How an account is deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Deletion {
    /// Why (kept in the account's attributes).
    pub reason: String,
    /// Billing is already finalized.
    pub finalized: bool,
    /// Erase the personal data.
    pub purge: bool,
    /// End the subscriptions and deprovision the resources.
    pub end_subscriptions: bool,
}

/// What a transition causes, applied in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The deletion is undone: no deletion time, no finalization, not purged.
    Reactivate,
    /// The signup's rejection reason is cleared.
    ClearSignupReason,
    /// The signup's rejection reason is recorded.
    RecordSignupReason(String),
    /// The deletion is requested now (with its reason, when given).
    RecordDeletion {
        /// Why.
        reason: String,
    },
    /// Billing is finalized now.
    RecordFinalization,
    /// The marketplace retires the token at finalization: it is dropped.
    DropCredential,
    /// The account's personal data is erased.
    Purge,
    /// Job: approve the signup at the marketplace.
    ApproveAtMarketplace,
    /// Job: reject the signup at the marketplace.
    RejectAtMarketplace {
        /// Why.
        reason: String,
    },
    /// Job: reset the account at the marketplace.
    ResetAtMarketplace,
    /// Job: tell provisioning the signup is approved.
    NotifyApproved,
    /// Job: end the subscriptions and deprovision the resources.
    EndSubscriptions {
        /// Why.
        reason: String,
    },
}

/// Why an event cannot happen to the account now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A deleted account cannot sign up.
    SignupOfDeletedAccount,
    /// The signup was already accepted; a later form does not rewrite it.
    SignupAlreadyAccepted,
    /// The account needs no signup, so none can be rejected.
    NoSignupToReject,
    /// Only a deleted account can be finalized.
    FinalizingActiveAccount,
}

/// A transition's outcome: the next lifecycle and its effects.
pub type Outcome = (Lifecycle, Vec<Effect>);

/// A new account's lifecycle: the signup the marketplace reports, else
/// pending when the marketplace requires one.
pub fn created(reported: Option<SignupState>, signup_required: bool) -> Outcome {
    let signup = match (reported, signup_required) {
        (Some(reported), _) => reported,
        (None, true) => SignupState::Pending,
        (None, false) => SignupState::NotRequired,
    };
    let state = Lifecycle {
        account: AccountState::Active,
        signup,
        finalized: false,
    };
    let effects = if signup == SignupState::Approved {
        vec![Effect::NotifyApproved]
    } else {
        Vec::new()
    };
    (state, effects)
}

/// The next lifecycle after `event`, or why it cannot happen.
pub fn transition(state: Lifecycle, event: Event) -> Result<Outcome, Refusal> {
    use SignupState::*;
    let mut next = state;
    let mut effects = Vec::new();
    match event {
        Event::Described { reported } => {
            if let Some(reported) = reported {
                next.signup = merge_signup(state.signup, reported);
            }
            if state.account != AccountState::Active {
                next.account = AccountState::Active;
                next.finalized = false;
                effects.push(Effect::Reactivate);
            }
            if state.signup != Approved && next.signup == Approved {
                effects.push(Effect::NotifyApproved);
            }
        }
        Event::SignupSubmitted => {
            if state.account != AccountState::Active {
                return Err(Refusal::SignupOfDeletedAccount);
            }
            match state.signup {
                Approving | Approved => return Err(Refusal::SignupAlreadyAccepted),
                Pending | Rejected => {
                    next.signup = Approving;
                    effects.push(Effect::ClearSignupReason);
                    effects.push(Effect::ApproveAtMarketplace);
                }
                // Nothing to approve; the form's details are still kept.
                NotRequired => {}
            }
        }
        Event::SignupRejected { reason } => {
            if state.signup == NotRequired {
                return Err(Refusal::NoSignupToReject);
            }
            next.signup = Rejected;
            effects.push(Effect::RecordSignupReason(reason.clone()));
            effects.push(Effect::RejectAtMarketplace { reason });
        }
        Event::Reset => {
            if state.signup != NotRequired {
                next.signup = Pending;
                effects.push(Effect::ClearSignupReason);
            }
            effects.push(Effect::ResetAtMarketplace);
        }
        Event::ApprovedAtMarketplace => {
            // Only an approval on its way is confirmed; anything else
            // happened since (a reset, a rejection) and stands.
            if state.signup == Approving {
                next.signup = Approved;
                effects.push(Effect::NotifyApproved);
            }
        }
        Event::Deleted(deletion) => {
            if state.account == AccountState::Active {
                next.account = AccountState::DeletionPending;
                effects.push(Effect::RecordDeletion {
                    reason: deletion.reason.clone(),
                });
            }
            if deletion.finalized && !state.finalized {
                next.account = AccountState::Deleted;
                next.finalized = true;
                effects.push(Effect::RecordFinalization);
            }
            if deletion.purge {
                effects.push(Effect::Purge);
            }
            if deletion.end_subscriptions {
                effects.push(Effect::EndSubscriptions {
                    reason: deletion.reason,
                });
            }
        }
        Event::Finalized => {
            if state.account == AccountState::Active {
                return Err(Refusal::FinalizingActiveAccount);
            }
            if !state.finalized {
                next.account = AccountState::Deleted;
                next.finalized = true;
                effects.push(Effect::RecordFinalization);
                effects.push(Effect::DropCredential);
            }
        }
    }
    Ok((next, effects))
}

/// The local signup state after the marketplace reported `reported`.
fn merge_signup(local: SignupState, reported: SignupState) -> SignupState {
    use SignupState::*;
    match (local, reported) {
        // Our approval is on its way; the marketplace has not seen it yet.
        (Approving, Pending) => Approving,
        // The marketplace confirmed our approval; a pending state read before
        // that (a notification processed late, on another replica) does not
        // take it back. Only our own reset makes an approved signup pending.
        (Approved, Pending) => Approved,
        (_, reported) => reported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccountState::{Active, Deleted as Gone, DeletionPending};
    use SignupState::*;

    fn at(account: AccountState, signup: SignupState, finalized: bool) -> Lifecycle {
        Lifecycle {
            account,
            signup,
            finalized,
        }
    }

    fn live(signup: SignupState) -> Lifecycle {
        at(Active, signup, false)
    }

    const SIGNUPS: [SignupState; 5] = [NotRequired, Pending, Approving, Approved, Rejected];
    /// Every reachable account state with its finalization.
    const ACCOUNTS: [(AccountState, bool); 3] =
        [(Active, false), (DeletionPending, false), (Gone, true)];

    fn every_state() -> Vec<Lifecycle> {
        ACCOUNTS
            .iter()
            .flat_map(|&(account, finalized)| {
                SIGNUPS
                    .iter()
                    .map(move |&signup| at(account, signup, finalized))
            })
            .collect()
    }

    #[test]
    fn a_new_account_starts_active_with_the_reported_or_required_signup() {
        let table = [
            (None, false, NotRequired, vec![]),
            (None, true, Pending, vec![]),
            (Some(NotRequired), true, NotRequired, vec![]),
            (Some(Pending), false, Pending, vec![]),
            (Some(Approving), true, Approving, vec![]),
            (Some(Approved), true, Approved, vec![Effect::NotifyApproved]),
            (
                Some(Approved),
                false,
                Approved,
                vec![Effect::NotifyApproved],
            ),
            (Some(Rejected), true, Rejected, vec![]),
        ];
        for (reported, required, signup, effects) in table {
            assert_eq!(
                created(reported, required),
                (live(signup), effects),
                "created({reported:?}, {required})"
            );
        }
    }

    #[test]
    fn a_description_merges_the_reported_signup() {
        // (local, reported) -> merged, on a live account.
        let table = [
            (NotRequired, NotRequired, NotRequired),
            (NotRequired, Pending, Pending),
            (NotRequired, Approving, Approving),
            (NotRequired, Approved, Approved),
            (NotRequired, Rejected, Rejected),
            (Pending, NotRequired, NotRequired),
            (Pending, Pending, Pending),
            (Pending, Approving, Approving),
            (Pending, Approved, Approved),
            (Pending, Rejected, Rejected),
            (Approving, NotRequired, NotRequired),
            (Approving, Pending, Approving),
            (Approving, Approving, Approving),
            (Approving, Approved, Approved),
            (Approving, Rejected, Rejected),
            (Approved, NotRequired, NotRequired),
            (Approved, Pending, Approved),
            (Approved, Approving, Approving),
            (Approved, Approved, Approved),
            (Approved, Rejected, Rejected),
            (Rejected, NotRequired, NotRequired),
            (Rejected, Pending, Pending),
            (Rejected, Approving, Approving),
            (Rejected, Approved, Approved),
            (Rejected, Rejected, Rejected),
        ];
        assert_eq!(table.len(), SIGNUPS.len() * SIGNUPS.len());
        for (local, reported, merged) in table {
            let effects = if local != Approved && merged == Approved {
                vec![Effect::NotifyApproved]
            } else {
                vec![]
            };
            assert_eq!(
                transition(
                    live(local),
                    Event::Described {
                        reported: Some(reported)
                    }
                ),
                Ok((live(merged), effects)),
                "{local:?} described as {reported:?}"
            );
        }
        for state in every_state() {
            let (next, _) = transition(state, Event::Described { reported: None }).unwrap();
            assert_eq!(next.signup, state.signup, "no report keeps {state:?}");
        }
    }

    #[test]
    fn a_description_reactivates_a_deleted_account() {
        for (account, finalized) in [(DeletionPending, false), (Gone, true)] {
            for signup in SIGNUPS {
                assert_eq!(
                    transition(
                        at(account, signup, finalized),
                        Event::Described { reported: None }
                    ),
                    Ok((live(signup), vec![Effect::Reactivate])),
                );
            }
            assert_eq!(
                transition(
                    at(account, Approving, finalized),
                    Event::Described {
                        reported: Some(Approved)
                    }
                ),
                Ok((
                    live(Approved),
                    vec![Effect::Reactivate, Effect::NotifyApproved]
                )),
            );
        }
        for signup in SIGNUPS {
            assert_eq!(
                transition(live(signup), Event::Described { reported: None }),
                Ok((live(signup), vec![])),
            );
        }
    }

    #[test]
    fn a_signup_starts_the_approval_once() {
        let table = [
            (NotRequired, Ok((live(NotRequired), vec![]))),
            (
                Pending,
                Ok((
                    live(Approving),
                    vec![Effect::ClearSignupReason, Effect::ApproveAtMarketplace],
                )),
            ),
            (
                Rejected,
                Ok((
                    live(Approving),
                    vec![Effect::ClearSignupReason, Effect::ApproveAtMarketplace],
                )),
            ),
            (Approving, Err(Refusal::SignupAlreadyAccepted)),
            (Approved, Err(Refusal::SignupAlreadyAccepted)),
        ];
        for (signup, outcome) in table {
            assert_eq!(
                transition(live(signup), Event::SignupSubmitted),
                outcome,
                "signup from {signup:?}"
            );
        }
        for (account, finalized) in [(DeletionPending, false), (Gone, true)] {
            for signup in SIGNUPS {
                assert_eq!(
                    transition(at(account, signup, finalized), Event::SignupSubmitted),
                    Err(Refusal::SignupOfDeletedAccount),
                );
            }
        }
    }

    #[test]
    fn a_rejection_applies_to_any_signup_but_none() {
        for state in every_state() {
            let outcome = transition(
                state,
                Event::SignupRejected {
                    reason: "fraud".into(),
                },
            );
            if state.signup == NotRequired {
                assert_eq!(outcome, Err(Refusal::NoSignupToReject));
            } else {
                assert_eq!(
                    outcome,
                    Ok((
                        Lifecycle {
                            signup: Rejected,
                            ..state
                        },
                        vec![
                            Effect::RecordSignupReason("fraud".into()),
                            Effect::RejectAtMarketplace {
                                reason: "fraud".into()
                            },
                        ]
                    )),
                    "rejecting {state:?}"
                );
            }
        }
    }

    #[test]
    fn a_reset_makes_any_signup_pending_again() {
        for state in every_state() {
            let outcome = transition(state, Event::Reset).unwrap();
            if state.signup == NotRequired {
                assert_eq!(outcome, (state, vec![Effect::ResetAtMarketplace]));
            } else {
                assert_eq!(
                    outcome,
                    (
                        Lifecycle {
                            signup: Pending,
                            ..state
                        },
                        vec![Effect::ClearSignupReason, Effect::ResetAtMarketplace]
                    ),
                    "resetting {state:?}"
                );
            }
        }
    }

    #[test]
    fn the_marketplace_confirms_only_an_approval_on_its_way() {
        for state in every_state() {
            let outcome = transition(state, Event::ApprovedAtMarketplace).unwrap();
            if state.signup == Approving {
                assert_eq!(
                    outcome,
                    (
                        Lifecycle {
                            signup: Approved,
                            ..state
                        },
                        vec![Effect::NotifyApproved]
                    )
                );
            } else {
                assert_eq!(outcome, (state, vec![]), "confirming {state:?}");
            }
        }
    }

    #[test]
    fn a_deletion_moves_towards_deleted() {
        let deletion = |finalized, purge, end_subscriptions| {
            Event::Deleted(Deletion {
                reason: "bye".into(),
                finalized,
                purge,
                end_subscriptions,
            })
        };
        let requested = Effect::RecordDeletion {
            reason: "bye".into(),
        };
        let end = Effect::EndSubscriptions {
            reason: "bye".into(),
        };
        // (from, finalized, purge, end) -> (to, effects)
        let table = [
            (
                (Active, false),
                (false, false, false),
                (DeletionPending, false),
                vec![requested.clone()],
            ),
            (
                (Active, false),
                (true, false, false),
                (Gone, true),
                vec![requested.clone(), Effect::RecordFinalization],
            ),
            (
                (Active, false),
                (true, true, true),
                (Gone, true),
                vec![
                    requested.clone(),
                    Effect::RecordFinalization,
                    Effect::Purge,
                    end.clone(),
                ],
            ),
            (
                (Active, false),
                (false, true, false),
                (DeletionPending, false),
                vec![requested.clone(), Effect::Purge],
            ),
            (
                (Active, false),
                (false, false, true),
                (DeletionPending, false),
                vec![requested.clone(), end.clone()],
            ),
            (
                (DeletionPending, false),
                (false, false, false),
                (DeletionPending, false),
                vec![],
            ),
            (
                (DeletionPending, false),
                (true, false, false),
                (Gone, true),
                vec![Effect::RecordFinalization],
            ),
            (
                (DeletionPending, false),
                (false, true, true),
                (DeletionPending, false),
                vec![Effect::Purge, end.clone()],
            ),
            ((Gone, true), (false, false, false), (Gone, true), vec![]),
            ((Gone, true), (true, false, false), (Gone, true), vec![]),
            (
                (Gone, true),
                (true, true, true),
                (Gone, true),
                vec![Effect::Purge, end.clone()],
            ),
        ];
        for ((account, finalized), (f, p, e), (to, to_finalized), effects) in table {
            for signup in SIGNUPS {
                assert_eq!(
                    transition(at(account, signup, finalized), deletion(f, p, e)),
                    Ok((at(to, signup, to_finalized), effects.clone())),
                    "deleting {account:?} (finalized {f}, purge {p}, end {e})"
                );
            }
        }
    }

    #[test]
    fn only_a_deleted_account_is_finalized() {
        for signup in SIGNUPS {
            assert_eq!(
                transition(live(signup), Event::Finalized),
                Err(Refusal::FinalizingActiveAccount)
            );
            assert_eq!(
                transition(at(DeletionPending, signup, false), Event::Finalized),
                Ok((
                    at(Gone, signup, true),
                    vec![Effect::RecordFinalization, Effect::DropCredential]
                ))
            );
            assert_eq!(
                transition(at(Gone, signup, true), Event::Finalized),
                Ok((at(Gone, signup, true), vec![]))
            );
        }
    }
}
