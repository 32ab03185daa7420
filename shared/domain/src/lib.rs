//! The domain: types that are valid by construction, and the rules that use them.

pub mod audience;
pub mod audit;
pub mod contact;
pub mod delivery;
pub mod email;
pub mod endpoint;
pub mod event;
pub mod header;
pub mod health;
pub mod ids;
pub mod inbound;
pub mod input;
pub mod jobs;
pub mod license;
pub mod link;
pub mod phone;
pub mod reason;
pub mod receipt;
pub mod response;
pub mod routing;
pub mod segments;
pub mod settings;
pub mod text;
pub mod user;
pub mod validation;

pub use audience::Audience;
pub use contact::{Contact, ContactKind, Contacts, ExternalContact};
pub use delivery::{
    Channel, CheckJob, CheckKind, DeliveryJob, DeliveryRecord, DeliveryStatus, Destination,
    EscalationPlan, Message, Notification, Provider, QueuedWork, RecipientRef, RoutePage,
    SkipReason, Slot,
};
pub use email::EmailAddress;
pub use endpoint::{EndpointPolicy, GatewayUrl, SmtpSecurity, SmtpServer};
pub use event::{Category, EventError, IncidentEvent, Lane, Targets};
pub use header::{HeaderName, HttpHeader};
pub use ids::{
    ControlCenterId, DeviceId, IdempotencyKey, IncidentId, NotificationId, OrgId, UserId,
};
pub use license::License;
pub use link::{LINK_VALIDITY, LinkCode, ResponseLink, SealedCode, link_pad};
pub use phone::{PhoneNumber, SenderId};
pub use reason::{FailReason, FailureKind};
pub use response::{Answer, AnsweredVia, Response};
pub use segments::{FittedSms, SmsCount, SmsEncoding, SmsPolicy};
pub use settings::{
    CommunicationSettings, EmailProvider, EmailSettings, Escalation, GatewayFormat, HttpGateway,
    Method, SmsProvider, SmsSettings, SmtpSettings,
};
pub use user::{Device, Platform, User};
pub use validation::{FieldErrors, ValidationError};
