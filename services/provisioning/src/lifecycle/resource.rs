//! The resource lifecycle: pending → ready or onboarding (or error) ⇄
//! suspended → uninstalled. Drivers do the work in jobs; this decides which
//! moves are allowed and what each one sets off.

use super::Refusal;
use crate::model::{Ownership, ResourceStatus};

/// What the machine sees of a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// Where it stands.
    pub status: ResourceStatus,
    /// Who runs it.
    pub ownership: Ownership,
}

/// What happens to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Its driver finished provisioning it.
    Provisioned {
        /// Usable once the customer finishes setup (else ready).
        onboarding: bool,
    },
    /// Its driver failed to provision it for good.
    ProvisioningFailed,
    /// `UpdateResource`.
    Update {
        /// The status asked for, if any.
        status: Option<ResourceStatus>,
        /// Its plan changed.
        plan_changed: bool,
        /// Its app URLs changed.
        app_urls_changed: bool,
    },
    /// `SuspendResource`.
    Suspend,
    /// `ResumeResource`.
    Resume,
    /// `DeleteResource` (or its subscription or account ended).
    Delete {
        /// Its driver keeps it, suspended, for a grace period first.
        grace: bool,
    },
    /// `RotateSecrets` (the status does not change).
    RotateSecrets,
    /// A rotation waiting for its driver completes.
    CompleteRotation,
    /// The console opens (`help`, `info`).
    OpenConsole,
    /// A console command for the driver.
    RunDriverCommand,
}

/// A driver's job about a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverStep {
    /// Apply the plan (and app URLs).
    ApplyPlan,
    /// Suspend.
    Suspend,
    /// Resume.
    Resume,
    /// Tear down.
    Deprovision,
    /// Revoke what was issued for the marketplace of a detached linked
    /// resource.
    Detach,
}

/// What the domain does after saving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Provision with the driver (a job).
    Provision,
    /// Apply the plan with the driver (a job).
    ApplyPlan,
    /// Move a resource-scoped subscription to the resource's plan.
    MoveSubscriptionToPlan,
    /// Suspend with the driver (a job).
    DriverSuspend,
    /// Resume with the driver (a job).
    DriverResume,
    /// Tear down with the driver (a job, after the grace period).
    Deprovision,
    /// End the resource's resource-scoped subscription.
    EndSubscription,
    /// Detach a linked resource (it becomes importable again).
    Detach,
    /// Tell the marketplace (a job).
    Notify {
        /// With the current secrets.
        push_secrets: bool,
    },
}

/// The outcome of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The resource after the event.
    pub after: Resource,
    /// The status changed.
    pub changed: bool,
    /// What to do, in order.
    pub effects: Vec<Effect>,
}

impl Step {
    fn unchanged(before: Resource) -> Self {
        Self {
            after: before,
            changed: false,
            effects: Vec::new(),
        }
    }

    fn to(before: Resource, status: ResourceStatus, effects: Vec<Effect>) -> Self {
        Self {
            after: Resource { status, ..before },
            changed: status != before.status,
            effects,
        }
    }
}

/// A new resource: ready at once when its driver says so, else pending
/// with its provisioning scheduled. Imported (linked) resources are ready.
pub fn created(ownership: Ownership, ready: bool) -> Step {
    let status = if ready || ownership == Ownership::Linked {
        ResourceStatus::Ready
    } else {
        ResourceStatus::Pending
    };
    Step {
        after: Resource { status, ownership },
        changed: true,
        effects: if status == ResourceStatus::Pending {
            vec![Effect::Provision]
        } else {
            Vec::new()
        },
    }
}

/// Applies `event` to `before`.
pub fn step(before: Resource, event: Event) -> Result<Step, Refusal> {
    use ResourceStatus as S;
    let status = before.status;
    Ok(match event {
        Event::Provisioned { onboarding } if status == S::Pending => {
            let to = if onboarding { S::Onboarding } else { S::Ready };
            Step::to(before, to, vec![Effect::Notify { push_secrets: true }])
        }
        Event::ProvisioningFailed if status == S::Pending => Step::to(
            before,
            S::Error,
            vec![Effect::Notify {
                push_secrets: false,
            }],
        ),
        Event::Provisioned { .. } | Event::ProvisioningFailed => Step::unchanged(before),
        Event::Update {
            status: wanted,
            plan_changed,
            app_urls_changed,
        } => {
            if status == S::Uninstalled {
                return Err(Refusal::conflict("the resource is deleted"));
            }
            let to = match wanted {
                Some(S::Pending) | Some(S::Uninstalled) => {
                    return Err(Refusal::Unprocessable {
                        message: format!("a resource cannot be set {}", wanted.unwrap_or(status)),
                        user_message: None,
                    });
                }
                Some(wanted) => wanted,
                None => status,
            };
            let mut effects = Vec::new();
            if plan_changed {
                // The driver applies the plan (and the app URLs with it).
                effects.push(Effect::MoveSubscriptionToPlan);
                effects.push(Effect::ApplyPlan);
            } else if app_urls_changed && to != S::Pending {
                // The driver (a plug-in) reconciles its redirect allow-list.
                effects.push(Effect::ApplyPlan);
            }
            Step::to(before, to, effects)
        }
        Event::Suspend => match status {
            S::Suspended => Step::unchanged(before),
            S::Ready | S::Onboarding | S::Error => Step::to(
                before,
                S::Suspended,
                vec![
                    Effect::DriverSuspend,
                    Effect::Notify {
                        push_secrets: false,
                    },
                ],
            ),
            S::Pending | S::Uninstalled => {
                return Err(Refusal::conflict(format!(
                    "a {status} resource cannot be suspended"
                )));
            }
        },
        Event::Resume => match status {
            S::Ready => Step::unchanged(before),
            S::Suspended => Step::to(
                before,
                S::Ready,
                vec![
                    Effect::DriverResume,
                    Effect::Notify {
                        push_secrets: false,
                    },
                ],
            ),
            S::Pending | S::Onboarding | S::Error | S::Uninstalled => {
                return Err(Refusal::conflict(format!(
                    "a {status} resource cannot be resumed"
                )));
            }
        },
        Event::Delete { .. } if status == S::Uninstalled => Step::unchanged(before),
        Event::Delete { grace } => {
            let mut effects = vec![Effect::EndSubscription];
            if before.ownership == Ownership::Linked {
                // Imported: the provider keeps it; it is detached and its
                // driver is not asked to tear it down.
                effects.push(Effect::Detach);
            } else {
                if grace {
                    effects.push(Effect::DriverSuspend);
                }
                effects.push(Effect::Deprovision);
            }
            Step::to(before, S::Uninstalled, effects)
        }
        Event::RotateSecrets => {
            if before.ownership == Ownership::Linked {
                return Err(Refusal::Unprocessable {
                    message: "the secrets of an imported resource are rotated by the provider"
                        .into(),
                    user_message: Some("Rotate this resource's credentials with the provider"),
                });
            }
            if matches!(status, S::Uninstalled | S::Pending) {
                return Err(Refusal::conflict(format!(
                    "secrets cannot be rotated while the resource is {status}"
                )));
            }
            Step::unchanged(before)
        }
        Event::CompleteRotation if status == S::Uninstalled => {
            return Err(Refusal::conflict("the resource is deleted"));
        }
        Event::CompleteRotation => Step::unchanged(before),
        Event::OpenConsole if status == S::Uninstalled => {
            return Err(Refusal::NotFound("resource not found".into()));
        }
        Event::OpenConsole => Step::unchanged(before),
        Event::RunDriverCommand => match status {
            S::Ready | S::Onboarding => Step::unchanged(before),
            S::Suspended => {
                return Err(Refusal::Conflict {
                    message: "the resource is suspended".into(),
                    user_message: Some("This resource is suspended"),
                });
            }
            S::Pending => return Err(Refusal::conflict("the resource is not ready yet")),
            S::Error | S::Uninstalled => {
                return Err(Refusal::conflict(format!(
                    "the resource is in status `{status}`"
                )));
            }
        },
    })
}

/// Whether a driver job still applies to the resource as it is now (a
/// later change may have overtaken it). The provider runs linked
/// resources itself: only their detachment reaches the driver.
pub fn driver_step_applies(step: DriverStep, resource: Resource) -> bool {
    use ResourceStatus as S;
    let status = resource.status;
    if resource.ownership == Ownership::Linked {
        return step == DriverStep::Detach && status == S::Uninstalled;
    }
    match step {
        DriverStep::ApplyPlan => status != S::Uninstalled,
        DriverStep::Suspend => matches!(status, S::Suspended | S::Uninstalled),
        DriverStep::Resume => !matches!(status, S::Suspended | S::Uninstalled),
        DriverStep::Deprovision => status == S::Uninstalled,
        DriverStep::Detach => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResourceStatus::*;

    fn owned(status: ResourceStatus) -> Resource {
        Resource {
            status,
            ownership: Ownership::Owned,
        }
    }

    fn linked(status: ResourceStatus) -> Resource {
        Resource {
            status,
            ownership: Ownership::Linked,
        }
    }

    /// `Some((status after, effects))`, or `None` for a refusal.
    type Expected = Option<(ResourceStatus, Vec<Effect>)>;

    fn table(
        resource: fn(ResourceStatus) -> Resource,
        event: Event,
        rows: [(ResourceStatus, Expected); 6],
    ) {
        for (from, expected) in rows {
            let before = resource(from);
            match (step(before, event), expected) {
                (Ok(step), Some((status, effects))) => {
                    assert_eq!(step.after.status, status, "{event:?} on {from}");
                    assert_eq!(step.changed, status != from, "{event:?} on {from}");
                    assert_eq!(step.after.ownership, before.ownership);
                    assert_eq!(step.effects, effects, "{event:?} on {from}");
                }
                (Err(_), None) => {}
                (outcome, expected) => {
                    panic!("{event:?} on {from}: got {outcome:?}, expected {expected:?}")
                }
            }
        }
    }

    fn same(status: ResourceStatus) -> Expected {
        Some((status, vec![]))
    }

    const NOTIFY: Effect = Effect::Notify {
        push_secrets: false,
    };

    #[test]
    fn new_resources_are_ready_or_pending_with_their_provisioning_scheduled() {
        let ready = created(Ownership::Owned, true);
        assert_eq!((ready.after.status, ready.effects), (Ready, vec![]));
        let pending = created(Ownership::Owned, false);
        assert_eq!(
            (pending.after.status, pending.effects),
            (Pending, vec![Effect::Provision])
        );
        let imported = created(Ownership::Linked, false);
        assert_eq!((imported.after.status, imported.effects), (Ready, vec![]));
    }

    #[test]
    fn only_a_pending_resource_is_provisioned() {
        let pushed = vec![Effect::Notify { push_secrets: true }];
        table(
            owned,
            Event::Provisioned { onboarding: false },
            [
                (Pending, Some((Ready, pushed.clone()))),
                (Onboarding, same(Onboarding)),
                (Ready, same(Ready)),
                (Suspended, same(Suspended)),
                (Error, same(Error)),
                (Uninstalled, same(Uninstalled)),
            ],
        );
        table(
            owned,
            Event::Provisioned { onboarding: true },
            [
                (Pending, Some((Onboarding, pushed))),
                (Onboarding, same(Onboarding)),
                (Ready, same(Ready)),
                (Suspended, same(Suspended)),
                (Error, same(Error)),
                (Uninstalled, same(Uninstalled)),
            ],
        );
        table(
            owned,
            Event::ProvisioningFailed,
            [
                (Pending, Some((Error, vec![NOTIFY]))),
                (Onboarding, same(Onboarding)),
                (Ready, same(Ready)),
                (Suspended, same(Suspended)),
                (Error, same(Error)),
                (Uninstalled, same(Uninstalled)),
            ],
        );
    }

    #[test]
    fn updates_set_any_status_but_not_on_a_deleted_resource() {
        for wanted in [Ready, Suspended, Onboarding, Error] {
            let event = Event::Update {
                status: Some(wanted),
                plan_changed: false,
                app_urls_changed: false,
            };
            table(
                owned,
                event,
                [
                    (Pending, Some((wanted, vec![]))),
                    (Onboarding, Some((wanted, vec![]))),
                    (Ready, Some((wanted, vec![]))),
                    (Suspended, Some((wanted, vec![]))),
                    (Error, Some((wanted, vec![]))),
                    (Uninstalled, None),
                ],
            );
        }
        for wanted in [Pending, Uninstalled] {
            let event = Event::Update {
                status: Some(wanted),
                plan_changed: false,
                app_urls_changed: false,
            };
            assert!(step(owned(Ready), event).is_err());
        }
    }

    #[test]
    fn plan_and_app_url_changes_reach_the_driver() {
        let plan = Event::Update {
            status: None,
            plan_changed: true,
            app_urls_changed: true,
        };
        let moved = vec![Effect::MoveSubscriptionToPlan, Effect::ApplyPlan];
        table(
            owned,
            plan,
            [
                (Pending, Some((Pending, moved.clone()))),
                (Onboarding, Some((Onboarding, moved.clone()))),
                (Ready, Some((Ready, moved.clone()))),
                (Suspended, Some((Suspended, moved.clone()))),
                (Error, Some((Error, moved))),
                (Uninstalled, None),
            ],
        );
        let urls = Event::Update {
            status: None,
            plan_changed: false,
            app_urls_changed: true,
        };
        let applied = |status| Some((status, vec![Effect::ApplyPlan]));
        table(
            owned,
            urls,
            [
                // Provisioning applies them.
                (Pending, same(Pending)),
                (Onboarding, applied(Onboarding)),
                (Ready, applied(Ready)),
                (Suspended, applied(Suspended)),
                (Error, applied(Error)),
                (Uninstalled, None),
            ],
        );
    }

    #[test]
    fn suspension_and_resumption() {
        let suspended = Some((Suspended, vec![Effect::DriverSuspend, NOTIFY]));
        table(
            owned,
            Event::Suspend,
            [
                (Pending, None),
                (Onboarding, suspended.clone()),
                (Ready, suspended.clone()),
                (Suspended, same(Suspended)),
                (Error, suspended),
                (Uninstalled, None),
            ],
        );
        table(
            owned,
            Event::Resume,
            [
                (Pending, None),
                (Onboarding, None),
                (Ready, same(Ready)),
                (Suspended, Some((Ready, vec![Effect::DriverResume, NOTIFY]))),
                (Error, None),
                (Uninstalled, None),
            ],
        );
    }

    #[test]
    fn deletion_tears_down_owned_resources_and_detaches_linked_ones() {
        let torn_down = |_| {
            Some((
                Uninstalled,
                vec![Effect::EndSubscription, Effect::Deprovision],
            ))
        };
        let later = |_| {
            Some((
                Uninstalled,
                vec![
                    Effect::EndSubscription,
                    Effect::DriverSuspend,
                    Effect::Deprovision,
                ],
            ))
        };
        let detached = |_| Some((Uninstalled, vec![Effect::EndSubscription, Effect::Detach]));
        for (resource, grace, outcome) in [
            (
                owned as fn(ResourceStatus) -> Resource,
                false,
                torn_down as fn(()) -> Expected,
            ),
            (owned, true, later),
            (linked, false, detached),
            (linked, true, detached),
        ] {
            table(
                resource,
                Event::Delete { grace },
                [
                    (Pending, outcome(())),
                    (Onboarding, outcome(())),
                    (Ready, outcome(())),
                    (Suspended, outcome(())),
                    (Error, outcome(())),
                    (Uninstalled, same(Uninstalled)),
                ],
            );
        }
    }

    #[test]
    fn secrets_rotate_on_usable_owned_resources_only() {
        table(
            owned,
            Event::RotateSecrets,
            [
                (Pending, None),
                (Onboarding, same(Onboarding)),
                (Ready, same(Ready)),
                (Suspended, same(Suspended)),
                (Error, same(Error)),
                (Uninstalled, None),
            ],
        );
        for status in ResourceStatus::ALL {
            assert!(matches!(
                step(linked(status), Event::RotateSecrets),
                Err(Refusal::Unprocessable { .. })
            ));
        }
        table(
            owned,
            Event::CompleteRotation,
            [
                (Pending, same(Pending)),
                (Onboarding, same(Onboarding)),
                (Ready, same(Ready)),
                (Suspended, same(Suspended)),
                (Error, same(Error)),
                (Uninstalled, None),
            ],
        );
    }

    #[test]
    fn the_console_runs_driver_commands_on_usable_resources() {
        table(
            owned,
            Event::OpenConsole,
            [
                (Pending, same(Pending)),
                (Onboarding, same(Onboarding)),
                (Ready, same(Ready)),
                (Suspended, same(Suspended)),
                (Error, same(Error)),
                (Uninstalled, None),
            ],
        );
        assert_eq!(
            step(owned(Uninstalled), Event::OpenConsole),
            Err(Refusal::NotFound("resource not found".into()))
        );
        table(
            owned,
            Event::RunDriverCommand,
            [
                (Pending, None),
                (Onboarding, same(Onboarding)),
                (Ready, same(Ready)),
                (Suspended, None),
                (Error, None),
                (Uninstalled, None),
            ],
        );
    }

    #[test]
    fn driver_jobs_run_only_while_they_still_apply() {
        use DriverStep::*;
        let rows: [(DriverStep, [bool; 6]); 5] = [
            // Pending, Onboarding, Ready, Suspended, Error, Uninstalled
            (ApplyPlan, [true, true, true, true, true, false]),
            (Suspend, [false, false, false, true, false, true]),
            (Resume, [true, true, true, false, true, false]),
            (Deprovision, [false, false, false, false, false, true]),
            (Detach, [false; 6]),
        ];
        for (driver_step, applies) in rows {
            for (status, expected) in ResourceStatus::ALL.into_iter().zip(applies) {
                assert_eq!(
                    driver_step_applies(driver_step, owned(status)),
                    expected,
                    "{driver_step:?} on owned {status}"
                );
                assert_eq!(
                    driver_step_applies(driver_step, linked(status)),
                    driver_step == Detach && status == Uninstalled,
                    "{driver_step:?} on linked {status}"
                );
            }
        }
    }
}
