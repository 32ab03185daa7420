//! The routing policy, as pure functions: who is told, on which channel, through which
//! provider; and what follows when push fails. Every recipient gets an outcome for every
//! channel, so the log answers "why was this person not texted?".

use super::contact::ExternalContact;
use super::delivery::{
    Channel, DeliveryJob, DeliveryRecord, DeliveryStatus, Destination, Provider, RecipientRef,
    SkipReason,
};
use super::email::EmailAddress;
use super::event::Category;
use super::ids::NotificationId;
use super::phone::PhoneNumber;
use super::reason::FallbackReason;
use super::settings::{CommunicationSettings, Method};
use super::user::User;

pub use super::jobs::JobTemplate;

/// What the policy needs besides the recipients.
#[derive(Debug, Clone, Copy)]
pub struct RoutingContext<'a> {
    pub category: Category,
    pub settings: &'a CommunicationSettings,
    /// The effective SMS provider of the notification's control center (its own, else
    /// `main`'s); `None` when neither has SMS settings.
    pub sms_provider: Option<Provider>,
    /// Email always has a provider: the organization's, else the default account.
    pub email_provider: Provider,
}

/// Someone a notification concerns.
#[derive(Debug, Clone, Copy)]
pub enum Recipient<'a> {
    User(&'a User),
    /// A contact who is not a user, with its position in the event (or the SOS
    /// creator's list), which keys its records.
    Contact {
        index: u32,
        contact: &'a ExternalContact,
    },
}

/// The decision for one (recipient, channel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Enqueue now.
    Send {
        provider: Provider,
        destination: Destination,
    },
    /// Held while push is in flight (`app_then_sms_email`): sent if push fails on every
    /// device, else skipped with `push_sent`.
    AwaitPush {
        provider: Provider,
        destination: Destination,
    },
    Skip(SkipReason),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedDelivery {
    pub channel: Channel,
    /// True for deliveries that exist only because the app may fail or is not possible.
    pub fallback: bool,
    pub action: Action,
}

impl PlannedDelivery {
    pub fn is_planned(&self) -> bool {
        !matches!(self.action, Action::Skip(_))
    }

    pub fn skip_reason(&self) -> Option<SkipReason> {
        match self.action {
            Action::Skip(r) => Some(r),
            _ => None,
        }
    }
}

/// Every channel's outcome for one recipient, in `Channel::ALL` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientPlan {
    pub recipient: RecipientRef,
    pub deliveries: [PlannedDelivery; 3],
}

impl RecipientPlan {
    pub fn get(&self, channel: Channel) -> &PlannedDelivery {
        &self.deliveries[channel as usize]
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub recipients: Vec<RecipientPlan>,
}

/// Plans every recipient. Pure: the same input always gives the same plan.
pub fn plan(ctx: &RoutingContext, recipients: &[Recipient]) -> Plan {
    Plan {
        recipients: recipients.iter().map(|r| plan_recipient(ctx, r)).collect(),
    }
}

fn skip(channel: Channel, fallback: bool, reason: SkipReason) -> PlannedDelivery {
    PlannedDelivery {
        channel,
        fallback,
        action: Action::Skip(reason),
    }
}

/// Sends at once when there is a target; else records why not.
fn direct(
    channel: Channel,
    fallback: bool,
    target: Result<(Provider, Destination), SkipReason>,
) -> PlannedDelivery {
    PlannedDelivery {
        channel,
        fallback,
        action: match target {
            Ok((provider, destination)) => Action::Send {
                provider,
                destination,
            },
            Err(reason) => Action::Skip(reason),
        },
    }
}

fn held(channel: Channel, target: Result<(Provider, Destination), SkipReason>) -> PlannedDelivery {
    PlannedDelivery {
        channel,
        fallback: true,
        action: match target {
            Ok((provider, destination)) => Action::AwaitPush {
                provider,
                destination,
            },
            Err(reason) => Action::Skip(reason),
        },
    }
}

fn sms_target(
    ctx: &RoutingContext,
    mobile: Option<&PhoneNumber>,
) -> Result<(Provider, Destination), SkipReason> {
    let mobile = mobile.ok_or(SkipReason::NoPrimaryMobile)?;
    let provider = ctx.sms_provider.ok_or(SkipReason::SmsNotConfigured)?;
    Ok((provider, Destination::Phone(mobile.clone())))
}

fn email_target(
    ctx: &RoutingContext,
    email: Option<&EmailAddress>,
) -> Result<(Provider, Destination), SkipReason> {
    let email = email.ok_or(SkipReason::NoPrimaryEmail)?;
    Ok((ctx.email_provider, Destination::Email(email.clone())))
}

/// Whether a user can get an in-app notification at all, and why not.
pub fn push_possible(user: &User) -> Result<(), SkipReason> {
    if !user.license.allows_app() {
        Err(SkipReason::NotLicensedForApp)
    } else if user.is_virtual {
        Err(SkipReason::VirtualUser)
    } else if !user.has_device() {
        Err(SkipReason::NoDevice)
    } else {
        Ok(())
    }
}

/// The fallback window of the notification being planned (see
/// [`CommunicationSettings::fallback_window`]).
pub fn fallback_window(ctx: &RoutingContext) -> Option<u32> {
    ctx.settings.fallback_window(method_of(ctx))
}

fn method_of(ctx: &RoutingContext) -> Method {
    let s = ctx.settings;
    match ctx.category {
        Category::Dispatch => s.dispatch,
        Category::IncidentContacts => s.incident_contacts,
        Category::Messages => s.messages,
        // Not chosen by a method; see the category rules.
        Category::Distress | Category::ManualSms => Method::AppSmsEmail,
    }
}

pub fn plan_recipient(ctx: &RoutingContext, recipient: &Recipient) -> RecipientPlan {
    match recipient {
        Recipient::User(u) => RecipientPlan {
            recipient: RecipientRef::User(u.user_id.clone()),
            deliveries: plan_user(ctx, u),
        },
        Recipient::Contact { index, contact } => RecipientPlan {
            recipient: RecipientRef::Contact {
                index: *index,
                contact: (*contact).clone(),
            },
            deliveries: plan_contact(ctx, contact),
        },
    }
}

fn plan_user(ctx: &RoutingContext, u: &User) -> [PlannedDelivery; 3] {
    use Channel::*;
    let s = ctx.settings;
    let sms = || sms_target(ctx, u.contacts.primary_mobile());
    let email = || email_target(ctx, u.contacts.primary_email());
    let push = push_possible(u);
    let push_delivery = || match push {
        Ok(()) => direct(
            Push,
            false,
            Ok((Provider::Sns, Destination::Devices(u.user_id.clone()))),
        ),
        Err(reason) => skip(Push, false, reason),
    };
    match ctx.category {
        // Virtual users are dispatched by SMS and email, and only while the switch is on.
        Category::Dispatch if u.is_virtual => {
            let push = skip(Push, false, push.err().unwrap_or(SkipReason::VirtualUser));
            if s.dispatch_virtual_users {
                [
                    push,
                    direct(Sms, false, sms()),
                    direct(Email, false, email()),
                ]
            } else {
                [
                    push,
                    skip(Sms, false, SkipReason::VirtualDispatchDisabled),
                    skip(Email, false, SkipReason::VirtualDispatchDisabled),
                ]
            }
        }
        Category::Dispatch | Category::Messages | Category::IncidentContacts => {
            match method_of(ctx) {
                Method::AppOnly => [
                    push_delivery(),
                    skip(Sms, false, SkipReason::NotInMethod),
                    skip(Email, false, SkipReason::NotInMethod),
                ],
                Method::AppSmsEmail => [
                    push_delivery(),
                    direct(Sms, false, sms()),
                    direct(Email, false, email()),
                ],
                Method::AppThenSmsEmail if push.is_ok() => {
                    [push_delivery(), held(Sms, sms()), held(Email, email())]
                }
                // Push is not possible: the fallback starts at once.
                Method::AppThenSmsEmail => [
                    push_delivery(),
                    direct(Sms, true, sms()),
                    direct(Email, true, email()),
                ],
            }
        }
        // An SOS reaches emergency contacts; a user given as a recipient is treated alike.
        Category::Distress => distress(ctx, sms(), email()),
        Category::ManualSms => manual_sms(ctx, sms()),
    }
}

fn plan_contact(ctx: &RoutingContext, c: &ExternalContact) -> [PlannedDelivery; 3] {
    use Channel::*;
    let sms = || sms_target(ctx, c.mobile.as_ref());
    let email = || email_target(ctx, c.email.as_ref());
    match ctx.category {
        Category::Distress => distress(ctx, sms(), email()),
        Category::ManualSms => manual_sms(ctx, sms()),
        // People who are not users have no app: SMS and email, unless the method is app only.
        Category::Dispatch | Category::Messages | Category::IncidentContacts => {
            if method_of(ctx) == Method::AppOnly {
                [
                    skip(Push, false, SkipReason::NoApp),
                    skip(Sms, false, SkipReason::NoApp),
                    skip(Email, false, SkipReason::NoApp),
                ]
            } else {
                [
                    skip(Push, false, SkipReason::NoApp),
                    direct(Sms, false, sms()),
                    direct(Email, false, email()),
                ]
            }
        }
    }
}

type Target = Result<(Provider, Destination), SkipReason>;

fn distress(ctx: &RoutingContext, sms: Target, email: Target) -> [PlannedDelivery; 3] {
    use Channel::*;
    if ctx.settings.distress {
        [
            skip(Push, false, SkipReason::NoApp),
            direct(Sms, false, sms),
            direct(Email, false, email),
        ]
    } else {
        [
            skip(Push, false, SkipReason::DistressDisabled),
            skip(Sms, false, SkipReason::DistressDisabled),
            skip(Email, false, SkipReason::DistressDisabled),
        ]
    }
}

fn manual_sms(ctx: &RoutingContext, sms: Target) -> [PlannedDelivery; 3] {
    use Channel::*;
    let sms = if ctx.settings.manual_sms {
        direct(Sms, false, sms)
    } else {
        skip(Sms, false, SkipReason::ManualSmsDisabled)
    };
    [
        skip(Push, false, SkipReason::NotInMethod),
        sms,
        skip(Email, false, SkipReason::NotInMethod),
    ]
}

/// The plan of a recipient the directory does not know: every channel skipped.
pub fn unknown_user(id: &super::ids::UserId) -> RecipientPlan {
    let d = |channel| skip(channel, false, SkipReason::UnknownUser);
    RecipientPlan {
        recipient: RecipientRef::User(id.clone()),
        deliveries: [d(Channel::Push), d(Channel::Sms), d(Channel::Email)],
    }
}

/// The plan of an SOS creator who has no emergency contacts: no one is told, and the
/// notification says so on the creator (every channel skipped).
pub fn no_emergency_contacts(id: &super::ids::UserId) -> RecipientPlan {
    let d = |channel| skip(channel, false, SkipReason::NoEmergencyContacts);
    RecipientPlan {
        recipient: RecipientRef::User(id.clone()),
        deliveries: [d(Channel::Push), d(Channel::Sms), d(Channel::Email)],
    }
}

/// How push ended for a recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Accepted for at least one device.
    Sent,
    /// Failed on every device.
    FailedOnEveryDevice,
}

/// A delivery held while push was in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldDelivery {
    pub channel: Channel,
    pub provider: Provider,
    pub destination: Destination,
}

/// What follows push for the deliveries held behind it: when push failed on every
/// device they are sent, marked fallback; when push was sent they end `push_sent`.
pub fn after_push(held: &[HeldDelivery], outcome: PushOutcome) -> Vec<PlannedDelivery> {
    held.iter()
        .map(|h| PlannedDelivery {
            channel: h.channel,
            fallback: true,
            action: match outcome {
                PushOutcome::FailedOnEveryDevice => Action::Send {
                    provider: h.provider,
                    destination: h.destination.clone(),
                },
                PushOutcome::Sent => Action::Skip(SkipReason::PushSent),
            },
        })
        .collect()
}

/// What a window check does with a recipient's SMS and email still held behind push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowStep {
    /// Send them now as fallback, for this reason.
    FallBack(FallbackReason),
    /// The app confirmed the push: they end skipped with this reason.
    Skip(SkipReason),
    /// Not yet: look again at this time.
    WaitUntil(chrono::DateTime<chrono::Utc>),
}

/// The window rule: held SMS and email go as fallback (`no_app_receipt`) only once the
/// window of a sent push has ended with no receipt; a delivered push (a receipt) skips
/// them (`push_delivered`), a failed one sends them (`push_failed`). While push is still
/// in flight, or sent but its window not yet written, look again one window later: by
/// then the push's own run has written the window or failed.
pub fn window_step(
    push: DeliveryStatus,
    fallback_at: Option<chrono::DateTime<chrono::Utc>>,
    window: chrono::TimeDelta,
    now: chrono::DateTime<chrono::Utc>,
) -> WindowStep {
    match (push, fallback_at) {
        (DeliveryStatus::Delivered, _) => WindowStep::Skip(SkipReason::PushDelivered),
        // A push a provider's receipt says never arrived failed as surely.
        (DeliveryStatus::Failed | DeliveryStatus::Undelivered, _) => {
            WindowStep::FallBack(FallbackReason::PushFailed)
        }
        (DeliveryStatus::Sent, Some(at)) if at <= now => {
            WindowStep::FallBack(FallbackReason::NoAppReceipt)
        }
        (DeliveryStatus::Sent, Some(at)) => WindowStep::WaitUntil(at),
        // A push that was never attempted holds nothing back (routing sent them at once);
        // a held record beside one is a stale hold: release it.
        (DeliveryStatus::Skipped, _) => WindowStep::FallBack(FallbackReason::PushNotPossible),
        (DeliveryStatus::Pending, _) | (DeliveryStatus::Sent, None) => {
            WindowStep::WaitUntil(now + window)
        }
    }
}

impl RecipientPlan {
    /// The deliveries held behind push, for [`after_push`].
    pub fn held(&self) -> Vec<HeldDelivery> {
        self.deliveries
            .iter()
            .filter_map(|d| match &d.action {
                Action::AwaitPush {
                    provider,
                    destination,
                } => Some(HeldDelivery {
                    channel: d.channel,
                    provider: *provider,
                    destination: destination.clone(),
                }),
                _ => None,
            })
            .collect()
    }

    /// The log records of this recipient: `pending` for planned and held deliveries,
    /// `skipped` with the reason for the rest.
    pub fn records(&self, notification_id: &NotificationId) -> Vec<DeliveryRecord> {
        self.deliveries
            .iter()
            .map(|d| {
                let (status, reason, provider, destination, awaiting_push) = match &d.action {
                    Action::Send {
                        provider,
                        destination,
                    } => (
                        DeliveryStatus::Pending,
                        None,
                        Some(*provider),
                        Some(destination.clone()),
                        false,
                    ),
                    Action::AwaitPush {
                        provider,
                        destination,
                    } => (
                        DeliveryStatus::Pending,
                        None,
                        Some(*provider),
                        Some(destination.clone()),
                        true,
                    ),
                    Action::Skip(r) => (
                        DeliveryStatus::Skipped,
                        Some(r.as_str().to_string()),
                        None,
                        None,
                        false,
                    ),
                };
                DeliveryRecord {
                    notification_id: notification_id.clone(),
                    recipient: self.recipient.clone(),
                    channel: d.channel,
                    status,
                    reason,
                    attempts: 0,
                    fallback: d.fallback,
                    provider,
                    provider_message_id: None,
                    destination,
                    // Sent at once as a fallback: push was not possible.
                    fallback_reason: (d.fallback && matches!(d.action, Action::Send { .. }))
                        .then_some(super::reason::FallbackReason::PushNotPossible),
                    awaiting_push,
                    claimed_until: None,
                    delivered_at: None,
                    fallback_at: None,
                    cycle: 0,
                    failover_from: None,
                    detail: None,
                    complaint: false,
                    encoding: None,
                    segments: None,
                }
            })
            .collect()
    }

    /// The jobs to enqueue now (held deliveries wait for push).
    pub fn jobs(&self, template: &JobTemplate) -> Vec<DeliveryJob> {
        self.deliveries
            .iter()
            .filter_map(|d| match &d.action {
                Action::Send {
                    provider,
                    destination,
                } => Some(template.job(
                    &self.recipient,
                    d.channel,
                    *provider,
                    destination,
                    d.fallback,
                )),
                _ => None,
            })
            .collect()
    }
}
