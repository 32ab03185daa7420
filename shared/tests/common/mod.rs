//! Builders shared by the routing tests.
#![allow(dead_code)]

use flare_shared::domain::routing::{Action, Plan, RecipientPlan};
use flare_shared::*;

pub fn user(id: &str, license: License) -> User {
    User {
        user_id: UserId::parse(id).unwrap(),
        name: format!("User {id}"),
        license,
        is_virtual: false,
        control_center_id: None,
        contacts: Contacts::default(),
        emergency_contacts: vec![],
        devices: vec![],
    }
}

/// A responder with a device, a primary mobile and a primary email: reachable everywhere.
pub fn responder(id: &str) -> User {
    with_contacts(with_device(user(id, License::BasicResponder)), true, true)
}

pub fn with_device(mut u: User) -> User {
    u.devices.push(Device {
        device_id: DeviceId::parse(&format!("d-{}", u.user_id)).unwrap(),
        platform: Platform::Fcm,
        token: "tok".into(),
        endpoint: Some(format!("endpoint/{}", u.user_id)),
    });
    u
}

pub fn with_contacts(mut u: User, primary_mobile: bool, primary_email: bool) -> User {
    u.contacts = Contacts::new(vec![
        Contact::Mobile {
            value: PhoneNumber::parse("+14155550100").unwrap(),
            primary: primary_mobile,
        },
        Contact::Mobile {
            value: PhoneNumber::parse("+14155550101").unwrap(),
            primary: false,
        },
        Contact::Email {
            value: EmailAddress::parse("primary@example.org").unwrap(),
            primary: primary_email,
        },
        Contact::Email {
            value: EmailAddress::parse("other@example.org").unwrap(),
            primary: false,
        },
    ])
    .unwrap();
    u
}

pub fn virtual_user(id: &str) -> User {
    let mut u = responder(id);
    u.is_virtual = true;
    u
}

pub fn contact(name: &str, mobile: bool, email: bool) -> ExternalContact {
    ExternalContact {
        name: name.into(),
        mobile: mobile.then(|| PhoneNumber::parse("+351912345678").unwrap()),
        email: email.then(|| EmailAddress::parse("rui@example.org").unwrap()),
    }
}

pub fn settings(method: Method) -> CommunicationSettings {
    CommunicationSettings {
        dispatch: method,
        incident_contacts: method,
        messages: method,
        distress: true,
        dispatch_virtual_users: true,
        manual_sms: true,
        // No window: push accepted is enough (the window has tests of its own).
        app_fallback_seconds: 0,
        dispatch_escalation: None,
        sms_help_text: None,
    }
}

pub fn only(plan: &Plan) -> &RecipientPlan {
    assert_eq!(plan.recipients.len(), 1);
    &plan.recipients[0]
}

pub fn reason(r: &RecipientPlan, c: Channel) -> Option<SkipReason> {
    r.get(c).skip_reason()
}

pub fn is_sent_now(r: &RecipientPlan, c: Channel) -> bool {
    matches!(r.get(c).action, Action::Send { .. })
}

pub fn is_held(r: &RecipientPlan, c: Channel) -> bool {
    matches!(r.get(c).action, Action::AwaitPush { .. })
}

/// SMS settings of `main` that send through SNS.
pub fn sns_for_main() -> SmsSettings {
    SmsSettings {
        control_center_id: ControlCenterId::main(),
        provider: SmsProvider::Sns,
        sender_number: None,
        password_set: false,
        secrets_at: None,
        smart_encoding: true,
        max_segments: 3,
    }
}

/// Push that every device takes.
pub struct OkPush;

#[async_trait::async_trait]
impl flare_shared::ports::PushSender for OkPush {
    async fn send(
        &self,
        _: &flare_shared::ports::PushMessage,
    ) -> Result<flare_shared::ports::Receipt, flare_shared::ports::SendError> {
        Ok(flare_shared::ports::Receipt {
            provider: Provider::Sns,
            provider_message_id: Some("m-1".into()),
        })
    }
}

/// One organization on the in-memory adapters, for the tests that route and deliver:
/// SMS through SNS for `main`, the given communication settings, responders (device,
/// primary mobile and email each), and a sample incident routed to them.
pub struct MemoryWorld {
    pub org: OrgId,
    pub settings: std::sync::Arc<flare_memory::MemorySettings>,
    pub directory: std::sync::Arc<flare_memory::MemoryDirectory>,
    pub log: std::sync::Arc<flare_memory::MemoryDeliveryLog>,
    pub metrics: std::sync::Arc<flare_memory::MemoryMetrics>,
    pub queue: std::sync::Arc<flare_memory::MemoryQueue>,
}

impl MemoryWorld {
    pub async fn new(comm: CommunicationSettings, users: &[&str]) -> Self {
        use flare_shared::ports::{Directory, SettingsStore};
        let w = MemoryWorld {
            org: OrgId::parse("acme").unwrap(),
            settings: Default::default(),
            directory: Default::default(),
            log: Default::default(),
            metrics: Default::default(),
            queue: Default::default(),
        };
        w.settings.put_sms(&w.org, &sns_for_main()).await.unwrap();
        w.settings.put_communication(&w.org, &comm).await.unwrap();
        for u in users {
            w.directory.put_user(&w.org, &responder(u)).await.unwrap();
        }
        w
    }

    /// The sample event `events/incidents/<name>.json`, for `users`.
    pub fn incident(name: &str, users: &[&str]) -> IncidentEvent {
        let raw = std::fs::read(format!(
            "{}/../events/incidents/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        let mut event = IncidentEvent::from_json(&raw).unwrap();
        event.targets = Targets::Users(users.iter().map(|u| UserId::parse(u).unwrap()).collect());
        event
    }

    pub fn notifier(&self) -> flare_shared::app::notify::Notifier {
        flare_shared::app::notify::Notifier {
            settings: self.settings.clone(),
            directory: self.directory.clone(),
            log: self.log.clone(),
            queue: self.queue.clone(),
            metrics: self.metrics.clone(),
            page_size: flare_shared::app::notify::ROUTE_PAGE,
        }
    }

    /// A deliverer on the world's queue, with `push` and no SMS or email sender.
    pub fn deliverer(
        &self,
        push: Option<std::sync::Arc<dyn flare_shared::ports::PushSender>>,
    ) -> flare_shared::app::deliver::Deliverer {
        flare_shared::app::deliver::Deliverer {
            log: self.log.clone(),
            queue: Some(self.queue.clone()),
            directory: self.directory.clone(),
            settings: self.settings.clone(),
            push,
            sms: Default::default(),
            email: Default::default(),
            default_sender: None,
            metrics: self.metrics.clone(),
            failover: None,
            pacer: None,
            sns_per_second: None,
            max_pace_wait: None,
            links: None,
        }
    }

    /// The API over the world's log.
    pub fn services(&self) -> flare_shared::app::Services {
        let mut services = flare_memory::services(EndpointPolicy::default());
        services.log = self.log.clone();
        services.metrics = self.metrics.clone();
        services
    }

    /// `POST /v1/notifications/{id}/{op}` (`receipt`, `ack`) by the responder `sub`:
    /// the status it answers.
    pub async fn recipient_post(&self, sub: &str, id: &NotificationId, op: &str) -> u16 {
        self.recipient_post_body(sub, id, op, "").await
    }

    /// The same with a body (`response`: `{"response": ...}`).
    pub async fn recipient_post_body(
        &self,
        sub: &str,
        id: &NotificationId,
        op: &str,
        body: &str,
    ) -> u16 {
        use flare_shared::app::api::{self, ApiRequest};
        use flare_shared::app::auth::{Claims, Role};
        let req = ApiRequest {
            method: "POST".into(),
            path: format!("/v1/notifications/{id}/{op}"),
            claims: Ok(Claims {
                sub: sub.into(),
                org_id: self.org.clone(),
                roles: vec![Role::Responder],
            }),
            body: body.as_bytes().to_vec(),
            query: None,
            idempotency_key: None,
            headers: Vec::new(),
            url: None,
            meta: Default::default(),
        };
        api::handle(&self.services(), req).await.status
    }
}
