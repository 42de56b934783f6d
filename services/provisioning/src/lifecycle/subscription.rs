//! The subscription state machine: requested → approved → active ⇄ pending
//! plan change / pending cancellation → cancelled (or rejected). Entering a
//! usable state provisions (account-scoped subscriptions), leaving for good
//! deprovisions, a plan change moves the resources along, and every change
//! billing cares about is passed on to billing.

use super::Refusal;
use crate::model::{PlanId, SubscriptionScope, SubscriptionState};

/// What the machine sees of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Lifecycle state.
    pub state: SubscriptionState,
    /// What it pays for.
    pub scope: SubscriptionScope,
    /// Plan in force.
    pub plan_id: PlanId,
    /// Plan asked for while a change is pending.
    pub pending_plan_id: Option<PlanId>,
    /// Google `usageReportingId` (billing hears of changes).
    pub usage_reporting_id: String,
    /// It became usable once (its start is recorded).
    pub started: bool,
    /// An approval waits for the account's signup.
    pub awaiting_account_approval: bool,
}

/// A subscription as a marketplace (or a caller) describes it; `None`
/// keeps what is stored.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Described {
    /// Our state, when the marketplace's maps to one.
    pub state: Option<SubscriptionState>,
    /// Scope.
    pub scope: Option<SubscriptionScope>,
    /// Plan in force.
    pub plan_id: Option<PlanId>,
    /// Plan asked for; replaces what is stored (none: no change pending).
    pub pending_plan_id: Option<PlanId>,
    /// Usage reporting id.
    pub usage_reporting_id: Option<String>,
}

/// What happens to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The marketplace (or `UpsertSubscription`) describes it.
    Describe(Described),
    /// The marketplace approved it itself.
    ApprovedByMarketplace,
    /// Approve it (or, by provider rule, reject it), waiting for the
    /// account's signup when that is not done. Only a requested
    /// subscription is affected.
    StartApproval {
        /// Why the provider refuses it, if it does.
        rejection: Option<String>,
        /// The account's signup is done (or not required).
        signup_done: bool,
    },
    /// `ApproveSubscription`: as [`Event::StartApproval`], refused when it
    /// ended.
    Approve {
        /// Why the provider refuses it, if it does.
        rejection: Option<String>,
        /// The account's signup is done (or not required).
        signup_done: bool,
    },
    /// `RejectSubscription`.
    Reject {
        /// Why.
        reason: String,
    },
    /// The marketplace accepted our approval.
    ApprovalAccepted {
        /// The marketplace activates on approval (no adapter).
        activates: bool,
    },
    /// The marketplace accepted our rejection.
    RejectionAccepted,
    /// Approve or reject the pending plan change at the marketplace.
    DecidePlanChange {
        /// Approve (or reject).
        approve: bool,
        /// Why, for a rejection.
        reason: String,
    },
    /// A plan change decided for a marketplace that applies it at once.
    PlanChangeSettled {
        /// It was approved.
        approve: bool,
    },
    /// `ChangePlan`: the plan changes at once.
    ChangePlan {
        /// The new plan.
        plan_id: PlanId,
    },
    /// `CancelSubscription`.
    Cancel,
    /// The marketplace no longer knows it.
    GoneAtMarketplace,
    /// Its resource was deleted (ends a resource-scoped subscription).
    ResourceDeleted,
    /// Its resource moved to another plan (moves a resource-scoped
    /// subscription along).
    ResourcePlanChanged {
        /// The resource's new plan.
        plan_id: PlanId,
    },
}

/// What the domain does after (or, for the marks, while) saving.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Record the start (`started_at`).
    MarkStarted,
    /// Record the end (`ended_at`).
    MarkEnded,
    /// Move the live resources to the new plan and apply it with their
    /// drivers.
    MoveResourcesToPlan,
    /// Create the resource of an account-scoped subscription (when the
    /// marketplace's adapter provisions account subscriptions).
    ProvisionAccountResource,
    /// Delete the live resources.
    DeprovisionResources,
    /// Grow the version and tell billing.
    TellBilling,
    /// Approve at the marketplace (a job).
    RequestApproval,
    /// Reject at the marketplace (a job).
    RequestRejection {
        /// Why.
        reason: String,
    },
    /// Decide the pending plan change at the marketplace (a job).
    RequestPlanDecision {
        /// Approve (or reject).
        approve: bool,
        /// Why, for a rejection.
        reason: String,
    },
}

/// The outcome of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The subscription after the event.
    pub after: Subscription,
    /// The row is written.
    pub save: bool,
    /// What to do, in order.
    pub effects: Vec<Effect>,
}

impl Step {
    fn unchanged(before: &Subscription) -> Self {
        Self {
            after: before.clone(),
            save: false,
            effects: Vec::new(),
        }
    }

    fn only(before: &Subscription, effect: Effect) -> Self {
        Self {
            after: before.clone(),
            save: false,
            effects: vec![effect],
        }
    }

    /// True when `effect` is among the effects.
    pub fn has(&self, effect: &Effect) -> bool {
        self.effects.contains(effect)
    }
}

/// The subscription described by `described`, new.
fn initial(described: &Described) -> Subscription {
    Subscription {
        state: SubscriptionState::Requested,
        scope: described.scope.unwrap_or(SubscriptionScope::Account),
        plan_id: described.plan_id.clone().unwrap_or_default(),
        pending_plan_id: None,
        usage_reporting_id: String::new(),
        started: false,
        awaiting_account_approval: false,
    }
}

/// Applies `event` to `before` (`None`: a subscription being recorded,
/// which only [`Event::Describe`] does).
pub fn step(before: Option<&Subscription>, event: Event) -> Result<Step, Refusal> {
    use SubscriptionState as S;
    let Some(current) = before else {
        let Event::Describe(described) = event else {
            return Err(Refusal::NotFound("subscription not found".into()));
        };
        let after = describe(initial(&described), described);
        return Ok(settle(None, after, true, Vec::new()));
    };
    let mut after = current.clone();
    Ok(match event {
        Event::Describe(described) => {
            let after = describe(after, described);
            settle(before, after, true, Vec::new())
        }
        Event::ApprovedByMarketplace if current.state == S::Requested => {
            after.state = S::Approved;
            settle(before, after, true, Vec::new())
        }
        Event::ApprovedByMarketplace => Step::unchanged(current),
        Event::StartApproval {
            rejection,
            signup_done,
        } => start_approval(current, rejection, signup_done),
        Event::Approve {
            rejection,
            signup_done,
        } => match current.state {
            S::Requested => start_approval(current, rejection, signup_done),
            S::Rejected | S::Cancelled => {
                return Err(Refusal::conflict(format!(
                    "a {} subscription cannot be approved",
                    current.state
                )));
            }
            _ => Step::unchanged(current),
        },
        Event::Reject { reason } => match current.state {
            S::Requested => Step::only(current, Effect::RequestRejection { reason }),
            S::Rejected => Step::unchanged(current),
            _ => {
                return Err(Refusal::conflict(format!(
                    "a {} subscription cannot be rejected",
                    current.state
                )));
            }
        },
        Event::ApprovalAccepted { activates } if current.state == S::Requested => {
            after.state = if activates { S::Active } else { S::Approved };
            settle(before, after, true, Vec::new())
        }
        Event::ApprovalAccepted { .. } => Step::unchanged(current),
        Event::RejectionAccepted if current.state == S::Requested => {
            after.state = S::Rejected;
            settle(before, after, true, Vec::new())
        }
        Event::RejectionAccepted => Step::unchanged(current),
        Event::DecidePlanChange { approve, reason } => {
            if current.pending_plan_id.is_none() {
                return Err(Refusal::conflict("no plan change is pending"));
            }
            Step::only(current, Effect::RequestPlanDecision { approve, reason })
        }
        Event::PlanChangeSettled { approve } => {
            if let (true, Some(pending)) = (approve, &current.pending_plan_id) {
                after.plan_id = pending.clone();
            }
            after.pending_plan_id = None;
            if after.state == S::PendingPlanChange {
                after.state = S::Active;
            }
            settle(before, after, true, Vec::new())
        }
        Event::ChangePlan { plan_id } => {
            if current.state.is_final() {
                return Err(Refusal::conflict(format!(
                    "a {} subscription cannot change plan",
                    current.state
                )));
            }
            after.plan_id = plan_id;
            after.pending_plan_id = None;
            settle(before, after, true, Vec::new())
        }
        Event::Cancel if current.state.is_final() => Step::unchanged(current),
        Event::Cancel => {
            after.state = S::Cancelled;
            settle(before, after, true, Vec::new())
        }
        Event::GoneAtMarketplace => {
            if !current.state.is_final() {
                after.state = S::Cancelled;
            }
            settle(before, after, true, Vec::new())
        }
        Event::ResourceDeleted => {
            if current.scope != SubscriptionScope::Resource || current.state.is_final() {
                return Ok(Step::unchanged(current));
            }
            after.state = S::Cancelled;
            let mut step = settle(before, after, true, Vec::new());
            // The subscription of one resource ends with it; any other
            // resource it pays for is left alone.
            step.effects
                .retain(|effect| *effect != Effect::DeprovisionResources);
            step
        }
        Event::ResourcePlanChanged { plan_id } => {
            if current.scope != SubscriptionScope::Resource || current.plan_id == plan_id {
                return Ok(Step::unchanged(current));
            }
            after.plan_id = plan_id;
            // The resource itself moved already; billing hears of it.
            Step {
                after,
                save: true,
                effects: vec![Effect::TellBilling],
            }
        }
    })
}

fn describe(mut after: Subscription, described: Described) -> Subscription {
    if let Some(plan_id) = described.plan_id.filter(|p| !p.is_empty()) {
        after.plan_id = plan_id;
    }
    after.pending_plan_id = described.pending_plan_id.filter(|p| !p.is_empty());
    if let Some(state) = described.state {
        // "Requested" from a marketplace that has not activated yet does
        // not undo our approval.
        let undoes_approval =
            state == SubscriptionState::Requested && after.state == SubscriptionState::Approved;
        if !undoes_approval {
            after.state = state;
        }
    }
    if let Some(scope) = described.scope {
        after.scope = scope;
    }
    if let Some(id) = described.usage_reporting_id.filter(|id| !id.is_empty()) {
        after.usage_reporting_id = id;
    }
    after
}

fn start_approval(current: &Subscription, rejection: Option<String>, signup_done: bool) -> Step {
    if current.state != SubscriptionState::Requested {
        return Step::unchanged(current);
    }
    if let Some(reason) = rejection {
        return Step::only(current, Effect::RequestRejection { reason });
    }
    let mut after = current.clone();
    after.awaiting_account_approval = !signup_done;
    Step {
        save: after.awaiting_account_approval != current.awaiting_account_approval,
        after,
        effects: if signup_done {
            vec![Effect::RequestApproval]
        } else {
            Vec::new()
        },
    }
}

/// The effects of moving from `before` to `after`.
fn settle(
    before: Option<&Subscription>,
    mut after: Subscription,
    save: bool,
    mut effects: Vec<Effect>,
) -> Step {
    let was_usable = before.is_some_and(|b| b.state.is_usable());
    let was_final = before.is_some_and(|b| b.state.is_final());
    let usable = after.state.is_usable();
    let ends = after.state.is_final() && !was_final;
    if usable && !was_usable && !after.started {
        after.started = true;
        effects.push(Effect::MarkStarted);
    }
    if ends {
        effects.push(Effect::MarkEnded);
        after.awaiting_account_approval = false;
    }
    if usable {
        after.awaiting_account_approval = false;
    }
    if before.is_some_and(|b| b.plan_id != after.plan_id) {
        effects.push(Effect::MoveResourcesToPlan);
    }
    if usable && !was_usable && after.scope == SubscriptionScope::Account {
        effects.push(Effect::ProvisionAccountResource);
    }
    if ends {
        effects.push(Effect::DeprovisionResources);
    }
    let billed_change = before.is_none_or(|b| {
        b.state != after.state
            || b.plan_id != after.plan_id
            || b.pending_plan_id != after.pending_plan_id
            || b.usage_reporting_id != after.usage_reporting_id
    });
    if billed_change {
        effects.push(Effect::TellBilling);
    }
    Step {
        save: save || before != Some(&after),
        after,
        effects,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Effect::{
        DeprovisionResources as D, MarkEnded as E, MarkStarted as S, MoveResourcesToPlan as M,
        ProvisionAccountResource as P, TellBilling as B,
    };
    use SubscriptionState::*;

    fn plan(id: &str) -> PlanId {
        PlanId::new(id)
    }

    fn sub(state: SubscriptionState) -> Subscription {
        Subscription {
            state,
            scope: SubscriptionScope::Account,
            plan_id: plan("basic"),
            pending_plan_id: None,
            usage_reporting_id: String::new(),
            started: state.is_usable() || state == Cancelled,
            awaiting_account_approval: false,
        }
    }

    /// `Some((state after, saved, effects))`, or `None` for a refusal.
    type Expected = Option<(SubscriptionState, bool, Vec<Effect>)>;

    fn check(before: &Subscription, event: Event, expected: Expected) {
        let outcome = step(Some(before), event.clone());
        match (outcome, expected) {
            (Ok(step), Some((state, save, effects))) => {
                assert_eq!(step.after.state, state, "{:?} on {:?}", event, before.state);
                assert_eq!(step.save, save, "save: {:?} on {:?}", event, before.state);
                assert_eq!(step.effects, effects, "{:?} on {:?}", event, before.state);
            }
            (Err(_), None) => {}
            (outcome, expected) => panic!(
                "{event:?} on {:?}: got {outcome:?}, expected {expected:?}",
                before.state
            ),
        }
    }

    fn table(event: Event, rows: [(SubscriptionState, Expected); 7]) {
        for (from, expected) in rows {
            check(&sub(from), event.clone(), expected);
        }
    }

    fn same(state: SubscriptionState) -> Expected {
        Some((state, false, vec![]))
    }

    #[test]
    fn cancelling_ends_what_has_not_ended() {
        let ends = |_| Some((Cancelled, true, vec![E, D, B]));
        table(
            Event::Cancel,
            [
                (Requested, ends(())),
                (Approved, ends(())),
                (Active, ends(())),
                (PendingPlanChange, ends(())),
                (PendingCancellation, ends(())),
                (Cancelled, same(Cancelled)),
                (Rejected, same(Rejected)),
            ],
        );
    }

    #[test]
    fn a_subscription_gone_at_the_marketplace_is_cancelled_and_always_saved() {
        let ends = |_| Some((Cancelled, true, vec![E, D, B]));
        table(
            Event::GoneAtMarketplace,
            [
                (Requested, ends(())),
                (Approved, ends(())),
                (Active, ends(())),
                (PendingPlanChange, ends(())),
                (PendingCancellation, ends(())),
                (Cancelled, Some((Cancelled, true, vec![]))),
                (Rejected, Some((Rejected, true, vec![]))),
            ],
        );
    }

    #[test]
    fn only_a_requested_subscription_is_approved_or_rejected_by_the_marketplace() {
        table(
            Event::ApprovedByMarketplace,
            [
                (Requested, Some((Approved, true, vec![B]))),
                (Approved, same(Approved)),
                (Active, same(Active)),
                (PendingPlanChange, same(PendingPlanChange)),
                (PendingCancellation, same(PendingCancellation)),
                (Cancelled, same(Cancelled)),
                (Rejected, same(Rejected)),
            ],
        );
        table(
            Event::ApprovalAccepted { activates: true },
            [
                (Requested, Some((Active, true, vec![S, P, B]))),
                (Approved, same(Approved)),
                (Active, same(Active)),
                (PendingPlanChange, same(PendingPlanChange)),
                (PendingCancellation, same(PendingCancellation)),
                (Cancelled, same(Cancelled)),
                (Rejected, same(Rejected)),
            ],
        );
        table(
            Event::ApprovalAccepted { activates: false },
            [
                (Requested, Some((Approved, true, vec![B]))),
                (Approved, same(Approved)),
                (Active, same(Active)),
                (PendingPlanChange, same(PendingPlanChange)),
                (PendingCancellation, same(PendingCancellation)),
                (Cancelled, same(Cancelled)),
                (Rejected, same(Rejected)),
            ],
        );
        table(
            Event::RejectionAccepted,
            [
                (Requested, Some((Rejected, true, vec![E, D, B]))),
                (Approved, same(Approved)),
                (Active, same(Active)),
                (PendingPlanChange, same(PendingPlanChange)),
                (PendingCancellation, same(PendingCancellation)),
                (Cancelled, same(Cancelled)),
                (Rejected, same(Rejected)),
            ],
        );
    }

    #[test]
    fn approving_asks_the_marketplace_and_refuses_ended_subscriptions() {
        let approve = Event::Approve {
            rejection: None,
            signup_done: true,
        };
        table(
            approve,
            [
                (
                    Requested,
                    Some((Requested, false, vec![Effect::RequestApproval])),
                ),
                (Approved, same(Approved)),
                (Active, same(Active)),
                (PendingPlanChange, same(PendingPlanChange)),
                (PendingCancellation, same(PendingCancellation)),
                (Cancelled, None),
                (Rejected, None),
            ],
        );
        let start = Event::StartApproval {
            rejection: None,
            signup_done: true,
        };
        table(
            start,
            [
                (
                    Requested,
                    Some((Requested, false, vec![Effect::RequestApproval])),
                ),
                (Approved, same(Approved)),
                (Active, same(Active)),
                (PendingPlanChange, same(PendingPlanChange)),
                (PendingCancellation, same(PendingCancellation)),
                (Cancelled, same(Cancelled)),
                (Rejected, same(Rejected)),
            ],
        );
    }

    #[test]
    fn an_approval_waits_for_the_signup_or_becomes_a_rejection_by_provider_rule() {
        let requested = sub(Requested);
        // Waiting: the flag is saved once.
        let waiting = step(
            Some(&requested),
            Event::Approve {
                rejection: None,
                signup_done: false,
            },
        )
        .unwrap();
        assert!(waiting.after.awaiting_account_approval && waiting.save);
        assert!(waiting.effects.is_empty());
        let again = step(
            Some(&waiting.after),
            Event::StartApproval {
                rejection: None,
                signup_done: false,
            },
        )
        .unwrap();
        assert!(!again.save && again.effects.is_empty());
        // The signup done: the flag is cleared and the approval asked for.
        let done = step(
            Some(&waiting.after),
            Event::StartApproval {
                rejection: None,
                signup_done: true,
            },
        )
        .unwrap();
        assert!(!done.after.awaiting_account_approval && done.save);
        assert_eq!(done.effects, vec![Effect::RequestApproval]);
        // A plan the provider does not offer: rejected instead.
        let refused = step(
            Some(&requested),
            Event::Approve {
                rejection: Some("plan `x` is not offered".into()),
                signup_done: true,
            },
        )
        .unwrap();
        assert_eq!(refused.after.state, Requested);
        assert_eq!(
            refused.effects,
            vec![Effect::RequestRejection {
                reason: "plan `x` is not offered".into()
            }]
        );
    }

    #[test]
    fn rejecting_is_for_requested_subscriptions_and_repeats_quietly() {
        let reject = Event::Reject {
            reason: "no".into(),
        };
        let asked = vec![Effect::RequestRejection {
            reason: "no".into(),
        }];
        table(
            reject,
            [
                (Requested, Some((Requested, false, asked))),
                (Approved, None),
                (Active, None),
                (PendingPlanChange, None),
                (PendingCancellation, None),
                (Cancelled, None),
                (Rejected, same(Rejected)),
            ],
        );
    }

    #[test]
    fn changing_the_plan_moves_the_resources_and_is_refused_once_ended() {
        let change = Event::ChangePlan {
            plan_id: plan("pro"),
        };
        let moved = |state| Some((state, true, vec![M, B]));
        table(
            change.clone(),
            [
                (Requested, moved(Requested)),
                (Approved, moved(Approved)),
                (Active, moved(Active)),
                (PendingPlanChange, moved(PendingPlanChange)),
                (PendingCancellation, moved(PendingCancellation)),
                (Cancelled, None),
                (Rejected, None),
            ],
        );
        let mut pending = sub(PendingPlanChange);
        pending.pending_plan_id = Some(plan("pro"));
        let step = step(Some(&pending), change).unwrap();
        assert_eq!(step.after.plan_id, plan("pro"));
        assert_eq!(step.after.pending_plan_id, None);
    }

    #[test]
    fn a_plan_change_decision_needs_a_pending_change() {
        for from in SubscriptionState::ALL {
            let decide = Event::DecidePlanChange {
                approve: false,
                reason: "no".into(),
            };
            check(&sub(from), decide.clone(), None);
            let mut pending = sub(from);
            pending.pending_plan_id = Some(plan("pro"));
            check(
                &pending,
                decide,
                Some((
                    from,
                    false,
                    vec![Effect::RequestPlanDecision {
                        approve: false,
                        reason: "no".into(),
                    }],
                )),
            );
        }
    }

    #[test]
    fn a_settled_plan_change_applies_or_drops_the_pending_plan() {
        let mut pending = sub(PendingPlanChange);
        pending.pending_plan_id = Some(plan("pro"));
        let approved = step(Some(&pending), Event::PlanChangeSettled { approve: true }).unwrap();
        assert_eq!(approved.after.state, Active);
        assert_eq!(approved.after.plan_id, plan("pro"));
        assert_eq!(approved.after.pending_plan_id, None);
        assert_eq!(approved.effects, vec![M, B]);
        let dropped = step(Some(&pending), Event::PlanChangeSettled { approve: false }).unwrap();
        assert_eq!(dropped.after.state, Active);
        assert_eq!(dropped.after.plan_id, plan("basic"));
        assert_eq!(dropped.effects, vec![B]);
        // Other states keep their state.
        let mut active = sub(Active);
        active.pending_plan_id = Some(plan("pro"));
        let kept = step(Some(&active), Event::PlanChangeSettled { approve: true }).unwrap();
        assert_eq!((kept.after.state, kept.effects), (Active, vec![M, B]));
    }

    #[test]
    fn a_deleted_resource_ends_its_own_subscription_only() {
        let resource = |state| Subscription {
            scope: SubscriptionScope::Resource,
            ..sub(state)
        };
        let ends = |_| Some((Cancelled, true, vec![E, B]));
        for (from, expected) in [
            (Requested, ends(())),
            (Approved, ends(())),
            (Active, ends(())),
            (PendingPlanChange, ends(())),
            (PendingCancellation, ends(())),
            (Cancelled, same(Cancelled)),
            (Rejected, same(Rejected)),
        ] {
            check(&resource(from), Event::ResourceDeleted, expected);
            // An account's subscription outlives its resources.
            check(&sub(from), Event::ResourceDeleted, same(from));
        }
        let moved = Event::ResourcePlanChanged {
            plan_id: plan("pro"),
        };
        check(
            &resource(Active),
            moved.clone(),
            Some((Active, true, vec![B])),
        );
        check(&sub(Active), moved, same(Active));
        check(
            &resource(Active),
            Event::ResourcePlanChanged {
                plan_id: plan("basic"),
            },
            same(Active),
        );
    }

    #[test]
    fn a_description_moves_to_any_state_with_the_effects_of_the_move() {
        let describe = |state: Option<SubscriptionState>| {
            Event::Describe(Described {
                state,
                ..Described::default()
            })
        };
        // New subscriptions.
        let new = |described: Described| step(None, Event::Describe(described)).unwrap();
        let recorded = new(Described {
            plan_id: Some(plan("basic")),
            ..Described::default()
        });
        assert_eq!(recorded.after.state, Requested);
        assert_eq!(recorded.after.plan_id, plan("basic"));
        assert_eq!(recorded.effects, vec![B]);
        let active = new(Described {
            state: Some(Active),
            plan_id: Some(plan("basic")),
            ..Described::default()
        });
        assert_eq!(active.effects, vec![S, P, B]);
        let resource_scoped = new(Described {
            state: Some(Active),
            scope: Some(SubscriptionScope::Resource),
            plan_id: Some(plan("basic")),
            ..Described::default()
        });
        assert_eq!(resource_scoped.effects, vec![S, B]);
        // Every move between states.
        for from in SubscriptionState::ALL {
            for to in SubscriptionState::ALL {
                let kept = from == Approved && to == Requested;
                let landed = if kept { from } else { to };
                let mut effects = Vec::new();
                if landed.is_usable() && !from.is_usable() && !sub(from).started {
                    effects.push(S);
                }
                let ends = landed.is_final() && !from.is_final();
                if ends {
                    effects.push(E);
                }
                if landed.is_usable() && !from.is_usable() {
                    effects.push(P);
                }
                if ends {
                    effects.push(D);
                }
                if landed != from {
                    effects.push(B);
                }
                check(
                    &sub(from),
                    describe(Some(to)),
                    Some((landed, true, effects)),
                );
            }
        }
        // "Requested" does not undo our approval.
        check(
            &sub(Approved),
            describe(Some(Requested)),
            Some((Approved, true, vec![])),
        );
        // Plan, pending plan and usage reporting id changes reach billing.
        let active = sub(Active);
        let changed = |described: Described| step(Some(&active), Event::Describe(described));
        assert_eq!(
            changed(Described {
                plan_id: Some(plan("pro")),
                ..Described::default()
            })
            .unwrap()
            .effects,
            vec![M, B]
        );
        assert_eq!(
            changed(Described {
                state: Some(PendingPlanChange),
                pending_plan_id: Some(plan("pro")),
                ..Described::default()
            })
            .unwrap()
            .effects,
            vec![B]
        );
        assert_eq!(
            changed(Described {
                usage_reporting_id: Some("u-1".into()),
                ..Described::default()
            })
            .unwrap()
            .effects,
            vec![B]
        );
        // Empty fields keep what is stored, except the pending plan.
        let quiet = changed(Described {
            plan_id: Some(PlanId::default()),
            usage_reporting_id: Some(String::new()),
            ..Described::default()
        })
        .unwrap();
        assert_eq!(
            (quiet.after.clone(), quiet.effects),
            (active.clone(), vec![])
        );
        let mut pending = active.clone();
        pending.pending_plan_id = Some(plan("pro"));
        let cleared = step(Some(&pending), Event::Describe(Described::default())).unwrap();
        assert_eq!(cleared.after.pending_plan_id, None);
        assert_eq!(cleared.effects, vec![B]);
    }

    #[test]
    fn only_a_description_records_a_new_subscription() {
        assert!(step(None, Event::Cancel).is_err());
        assert!(step(None, Event::ApprovedByMarketplace).is_err());
    }

    #[test]
    fn usable_or_ended_subscriptions_wait_for_no_signup() {
        let mut waiting = sub(Requested);
        waiting.awaiting_account_approval = true;
        let active = step(Some(&waiting), Event::ApprovalAccepted { activates: true }).unwrap();
        assert!(!active.after.awaiting_account_approval);
        let cancelled = step(Some(&waiting), Event::Cancel).unwrap();
        assert!(!cancelled.after.awaiting_account_approval);
    }
}
