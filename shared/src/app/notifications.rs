//! The notifications API: a notification with every delivery, receipts, acks, manual SMS.

use super::auth::Claims;
use super::error::ApiError;
use super::notify::{ManualSmsError, Notifier, RouteError};
use super::{Records, Services};
use crate::domain::input::{ManualSmsInput, ReceiptInput};
use crate::domain::reason::SkipReason;
use crate::domain::{
    Channel, DeliveryRecord, IdempotencyKey, NotificationId, OrgId, RecipientRef, UserId,
};
use crate::ports::{Finish, ListPosition, Logged};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::collections::hash_map::Entry;

fn recipient_view(r: &RecipientRef) -> Value {
    match r {
        RecipientRef::User(id) => json!({"user_id": id}),
        RecipientRef::Contact { contact, .. } => json!({"contact": contact}),
    }
}

fn delivery_view(r: &DeliveryRecord) -> Value {
    let mut v = json!({
        "channel": r.channel,
        "status": r.status,
        "attempts": r.attempts,
        "fallback": r.fallback,
        "cycle": r.cycle,
    });
    if let Some(reason) = &r.reason {
        v["reason"] = json!(reason);
    }
    if let Some(p) = r.provider {
        v["provider"] = json!(p);
    }
    if let Some(id) = &r.provider_message_id {
        v["provider_message_id"] = json!(id);
    }
    if let Some(at) = r.delivered_at {
        v["delivered_at"] = json!(at);
    }
    if let Some(why) = r.fallback_reason {
        v["fallback_reason"] = json!(why);
    }
    if let Some(from) = r.failover_from {
        v["failover_from"] = json!(from);
    }
    if let Some(d) = &r.detail {
        v["detail"] = json!(d);
    }
    if r.complaint {
        v["complaint"] = json!(true);
    }
    if let Some(e) = r.encoding {
        v["encoding"] = json!(e);
    }
    if let Some(n) = r.segments {
        v["segments"] = json!(n);
    }
    v
}

/// `GET /v1/notifications/{id}`: recipients in the order the log keeps them, each with
/// its deliveries as push, sms, email.
pub fn view(l: &Logged) -> Value {
    let n = &l.notification;
    // One pass: a linear search per record made a 10,000-recipient view quadratic.
    let mut at: HashMap<String, usize> = HashMap::with_capacity(l.records.len() / 2);
    let mut groups: Vec<(&RecipientRef, Vec<&DeliveryRecord>)> = Vec::new();
    for r in &l.records {
        match at.entry(r.recipient.key()) {
            Entry::Occupied(e) => groups[*e.get()].1.push(r),
            Entry::Vacant(e) => {
                e.insert(groups.len());
                groups.push((&r.recipient, vec![r]));
            }
        }
    }
    let acks: HashMap<&UserId, &chrono::DateTime<chrono::Utc>> =
        l.acks.iter().map(|(u, t)| (u, t)).collect();
    let answers: HashMap<&UserId, &crate::domain::Response> =
        l.responses.iter().map(|(u, r)| (u, r)).collect();
    let recipients: Vec<Value> = groups
        .into_iter()
        .map(|(who, mut list)| {
            list.sort_by_key(|r| (r.cycle, Channel::ALL.iter().position(|c| *c == r.channel)));
            let mut v = recipient_view(who);
            // The recipient was reached when their app said so (push `delivered`).
            if let Some(at) = list.iter().filter_map(|r| r.delivered_at).min() {
                v["delivered_at"] = json!(at);
            }
            v["deliveries"] = Value::Array(list.into_iter().map(delivery_view).collect());
            if let RecipientRef::User(id) = who
                && let Some(at) = acks.get(id)
            {
                v["acknowledged_at"] = json!(at);
            }
            if let RecipientRef::User(id) = who
                && let Some(r) = answers.get(id)
            {
                v["response"] = json!(r.answer);
                v["responded_at"] = json!(r.at);
                v["responded_via"] = json!(r.via);
            }
            v
        })
        .collect();
    let mut v = json!({
        "notification_id": n.notification_id,
        "category": n.category,
        // Which queue its deliveries wait in: urgent ones go first.
        "lane": n.category.lane(),
        "incident_id": n.incident_id,
        "control_center_id": n.control_center_id,
        "created_at": n.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "message": n.message,
        "recipients": recipients,
        // The page's; `get` answers the whole notification's when it has more pages.
        "sms_segments": l.records.iter().filter_map(|r| r.segments).map(u64::from).sum::<u64>(),
    });
    if let Some(a) = &n.audience {
        v["audience"] = json!(a);
    }
    v
}

/// A query's parameters; one given more than once is an error naming it (which of the
/// values was meant cannot be known).
fn query_params<'q>(
    query: Option<&'q str>,
    errors: &mut crate::domain::FieldErrors,
) -> Vec<(std::borrow::Cow<'q, str>, std::borrow::Cow<'q, str>)> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        if seen.insert(name.clone()) {
            out.push((name, value));
        } else {
            errors.add(name.as_ref(), "is given more than once");
        }
    }
    out
}

/// How many notifications a page of `GET /v1/notifications` holds at most, and by
/// default.
pub const LIST_MAX: usize = 100;
pub const LIST_DEFAULT: usize = 50;

/// `GET /v1/notifications?limit=50&cursor=...`: newest first, with counts by state.
pub async fn list(svc: &Services, org: &OrgId, query: Option<&str>) -> Result<Value, ApiError> {
    let mut limit = LIST_DEFAULT;
    let mut after = None;
    let mut errors = crate::domain::FieldErrors::new();
    for (name, value) in query_params(query, &mut errors) {
        match name.as_ref() {
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=LIST_MAX).contains(&n) => limit = n,
                _ => errors.add(
                    "limit",
                    format!("must be a whole number from 1 to {LIST_MAX}"),
                ),
            },
            "cursor" => match ListPosition::parse_cursor(&value) {
                Some(p) => after = Some(p),
                None => errors.add(
                    "cursor",
                    "is not a cursor this list answered (use next_cursor as it is)",
                ),
            },
            other => errors.add(other, "unknown query parameter"),
        }
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    // One more than asked: whether there is a next page, without an empty last one.
    let mut page = svc
        .log
        .list_notifications(org, after.as_ref(), limit + 1)
        .await?;
    let next = (page.len() > limit).then(|| {
        page.truncate(limit);
        page.last()
            .map(|s| ListPosition::of(&s.notification).cursor())
    });
    let notifications: Vec<Value> = page
        .iter()
        .map(|s| {
            let n = &s.notification;
            let mut v = json!({
                "notification_id": n.notification_id,
                "category": n.category,
                "incident_id": n.incident_id,
                "created_at": n.created_at,
                "counts": s.counts,
                "sms_segments": s.counts.sms_segments,
            });
            if let Some(a) = &n.audience {
                v["audience"] = json!(a);
            }
            v
        })
        .collect();
    Ok(json!({"notifications": notifications, "next_cursor": next.flatten()}))
}

/// How many recipients a page of `GET /v1/notifications/{id}` holds at most.
pub const PAGE_RECIPIENTS: usize = 500;

/// Whether `s` could be a cursor a page answered: a recipient key (`user:u-17`,
/// `contact:2`), or in a notification whose records are spread over partitions, a
/// partition and a recipient key in it (`S03~user:u-17`, or `S03~` for its start).
fn recipient_cursor(s: &str) -> bool {
    if let Some((shard, key)) = s.strip_prefix('S').and_then(|r| r.split_once('~')) {
        return (1..=3).contains(&shard.len())
            && shard.bytes().all(|b| b.is_ascii_digit())
            && (key.is_empty() || recipient_key(key));
    }
    recipient_key(s)
}

/// Whether `s` could be a recipient key (`user:u-17`, `contact:2`).
fn recipient_key(s: &str) -> bool {
    let rest = s
        .strip_prefix("user:")
        .or_else(|| s.strip_prefix("contact:"));
    rest.is_some_and(|r| {
        (1..=128).contains(&r.len())
            && r.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@:".contains(&b))
    })
}

/// `GET /v1/notifications/{id}[?cursor=...]`: up to [`PAGE_RECIPIENTS`] recipients, and
/// `next_cursor` when more follow.
pub async fn get(
    svc: &Services,
    org: &OrgId,
    id: &str,
    query: Option<&str>,
) -> Result<Value, ApiError> {
    let id = NotificationId::parse(id)
        .map_err(|_| ApiError::not_found("no notification with that id"))?;
    let mut after = None;
    let mut errors = crate::domain::FieldErrors::new();
    for (name, value) in query_params(query, &mut errors) {
        match name.as_ref() {
            "cursor" if recipient_cursor(&value) => after = Some(value.into_owned()),
            "cursor" => errors.add(
                "cursor",
                "is not a cursor this notification answered (use next_cursor as it is)",
            ),
            other => errors.add(other, "unknown query parameter"),
        }
    }
    if !errors.is_empty() {
        return Err(errors.into());
    }
    let (logged, next) = svc
        .log
        .notification_page(org, &id, after.as_deref(), PAGE_RECIPIENTS)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no notification \"{id}\"")))?;
    let mut v = view(&logged);
    if after.is_some() || next.is_some() {
        v["sms_segments"] = json!(svc.log.sms_segments(org, &id).await?);
    }
    v["next_cursor"] = json!(next);
    Ok(v)
}

/// `POST /v1/notifications/{id}/receipt`: the recipient's app says the notification
/// reached the device. Idempotent (the first receipt's time is kept). A caller the
/// notification was not for gets the same 404 as for a notification that does not
/// exist, so a receipt tells nobody which notifications exist.
pub async fn receipt(
    svc: &Services,
    claims: &Claims,
    id: &str,
    body: &Value,
) -> Result<(), ApiError> {
    let input = ReceiptInput::parse(body)?;
    // The id is not echoed: it may be anything a caller sent.
    let not_found = || ApiError::not_found("no such notification for you");
    let id = NotificationId::parse(id).map_err(|_| not_found())?;
    let me = UserId::parse_existing(&claims.sub).map_err(|_| not_found())?;
    let records = svc
        .log
        .recipient_records(&claims.org_id, &id, &RecipientRef::User(me.clone()))
        .await?;
    if records.is_empty() {
        return Err(not_found());
    }
    let first = receive(svc.records(), &claims.org_id, &id, &me).await?;
    let device_id = input.device_id.as_ref().map(ToString::to_string);
    tracing::info!(notification_id = %id, user_id = %me, device_id, first, "receipt");
    Ok(())
}

/// A receipt's effect: push `sent` becomes `delivered`, and SMS and email still held
/// behind push end `skipped` (`push_delivered`). Answers whether push moved.
async fn receive(
    rec: Records<'_>,
    org: &OrgId,
    id: &NotificationId,
    me: &UserId,
) -> Result<bool, ApiError> {
    let who = RecipientRef::User(me.clone());
    let at = chrono::Utc::now();
    let (log, metrics) = (rec.log, rec.metrics);
    let moved = super::ended::finish(
        log,
        metrics,
        org,
        id,
        &who,
        Channel::Push.into(),
        Some(crate::domain::Provider::Sns),
        Finish::Delivered { at },
    )
    .await?;
    for channel in [Channel::Sms, Channel::Email] {
        // Only while held: a delivery already released or sent is not touched.
        super::ended::finish(
            log,
            metrics,
            org,
            id,
            &who,
            channel.into(),
            None,
            Finish::SkipHeld {
                reason: SkipReason::PushDelivered.as_str().to_string(),
            },
        )
        .await?;
    }
    Ok(moved)
}

/// Only a user the notification was for may acknowledge it; to anyone else it is not
/// there (404, as a missing one: the answer does not tell whether it exists).
pub async fn ack(svc: &Services, claims: &Claims, id: &str) -> Result<(), ApiError> {
    let (id, me) = caller(claims, id)?;
    acknowledge(svc.records(), &claims.org_id, &id, &me).await
}

/// A recipient's answer, `responding` or `unavailable` (from the app: `POST
/// .../response`): an acknowledgement, with everything it ends, and the answer, which
/// replaces an earlier one.
pub async fn respond(
    svc: &Services,
    claims: &Claims,
    id: &str,
    body: &Value,
    via: crate::domain::AnsweredVia,
) -> Result<(), ApiError> {
    let answer = crate::domain::Answer::from_body(body).map_err(ApiError::Validation)?;
    let (id, me) = caller(claims, id)?;
    answer_as(svc.records(), &claims.org_id, &id, &me, answer, via, false).await?;
    Ok(())
}

/// `me`'s answer to notification `id` of `org`: written with its acknowledgement (one
/// write), then everything not sent to them yet ends. Answers the answer it replaced. `vouched`: a response link or a
/// dispatch SMS sent to them says they were a recipient of a dispatch, so nothing is
/// read to check it; otherwise their records are (404 when there are none).
pub async fn answer_as(
    rec: Records<'_>,
    org: &OrgId,
    id: &NotificationId,
    me: &UserId,
    answer: crate::domain::Answer,
    via: crate::domain::AnsweredVia,
    vouched: bool,
) -> Result<Option<crate::domain::Response>, ApiError> {
    let who = RecipientRef::User(me.clone());
    if !vouched && rec.log.recipient_records(org, id, &who).await?.is_empty() {
        return Err(not_found());
    }
    let response = crate::domain::Response {
        answer,
        at: chrono::Utc::now(),
        via,
    };
    let answered = rec.log.answer(org, id, me, &response).await?;
    if answered.first_ack {
        let category = match vouched {
            true => crate::domain::Category::Dispatch,
            false => category_of(rec, org, id).await?,
        };
        rec.metrics.acknowledged(category);
    }
    end_unsent(rec, org, id, &who).await?;
    // An answer from the app says the push arrived; one by link or SMS says nothing of it.
    if via == crate::domain::AnsweredVia::App {
        receive(rec, org, id, me).await?;
    }
    tracing::info!(notification_id = %id, user_id = %me, answer = answer.as_str(), via = via.as_str(), "notification answered");
    Ok(answered.previous)
}

fn not_found() -> ApiError {
    ApiError::not_found("no such notification for you")
}

/// The notification `id` names and the calling user (404 for what cannot be either).
fn caller(claims: &Claims, id: &str) -> Result<(NotificationId, UserId), ApiError> {
    let id = NotificationId::parse(id).map_err(|_| not_found())?;
    let me = UserId::parse_existing(&claims.sub).map_err(|_| not_found())?;
    Ok((id, me))
}

/// A notification's category, for the metric an acknowledgement counts in.
async fn category_of(
    rec: Records<'_>,
    org: &OrgId,
    id: &NotificationId,
) -> Result<crate::domain::Category, ApiError> {
    let n = rec.log.notification(org, id).await?;
    Ok(n.map_or(crate::domain::Category::Dispatch, |n| n.category))
}

/// [`ack`]'s work: an acknowledgement, which is the app's receipt too (v1.1: what was
/// held behind push ends `push_delivered`), and ends what was not sent yet.
async fn acknowledge(
    rec: Records<'_>,
    org: &OrgId,
    id: &NotificationId,
    me: &UserId,
) -> Result<(), ApiError> {
    // The caller's own records only (one Query), whatever the notification's size.
    let who = RecipientRef::User(me.clone());
    let mine = rec.log.recipient_records(org, id, &who).await?;
    if mine.is_empty() {
        return Err(not_found());
    }
    if rec.log.ack(org, id, me).await? {
        rec.metrics.acknowledged(category_of(rec, org, id).await?);
    }
    receive(rec, org, id, me).await?;
    end_unsent(rec, org, id, &who).await?;
    tracing::info!(notification_id = %id, user_id = %me, "notification acknowledged");
    Ok(())
}

/// An acknowledgement wins over everything not sent yet: a started escalation cycle's
/// deliveries, a fallback waiting in its retry backoff, SMS and email still held (read
/// after the ack is written, so a cycle starting meanwhile either sees the ack or has
/// its records here; one a live attempt holds is left to it, and that attempt, or its
/// retry, finds the ack before sending). One Query, and a write per delivery ended.
async fn end_unsent(
    rec: Records<'_>,
    org: &OrgId,
    id: &NotificationId,
    who: &RecipientRef,
) -> Result<(), ApiError> {
    for r in rec
        .log
        .recipient_records(org, id, who)
        .await?
        .into_iter()
        .filter(|r| r.status == crate::domain::DeliveryStatus::Pending)
    {
        super::ended::finish(
            rec.log,
            rec.metrics,
            org,
            id,
            who,
            r.slot(),
            r.provider,
            Finish::Cancel {
                reason: SkipReason::Acknowledged.as_str().to_string(),
            },
        )
        .await?;
    }
    Ok(())
}

pub async fn manual_sms(
    svc: &Services,
    org: &OrgId,
    body: &Value,
    idempotency_key: Option<&str>,
) -> Result<Value, ApiError> {
    let mut errors = crate::domain::FieldErrors::new();
    let key =
        idempotency_key.and_then(|k| errors.check("Idempotency-Key", IdempotencyKey::parse(k)));
    let input = match ManualSmsInput::parse(body) {
        Ok(input) if errors.is_empty() => input,
        Ok(_) => return Err(errors.into()),
        Err(e) => {
            errors.merge("", e);
            return Err(errors.into());
        }
    };
    let notifier = Notifier {
        settings: svc.settings.clone(),
        directory: svc.directory.clone(),
        log: svc.log.clone(),
        queue: svc.queue.clone(),
        metrics: svc.metrics.clone(),
        page_size: crate::app::notify::ROUTE_PAGE,
    };
    match notifier.manual_sms(org, input, key.as_ref()).await {
        Ok(id) => Ok(json!({"notification_id": id})),
        Err(ManualSmsError::Disabled) => Err(ApiError::ManualSmsDisabled),
        Err(ManualSmsError::UnknownUser) => Err(ApiError::Missing("user")),
        Err(ManualSmsError::Route(RouteError::Store(e))) => Err(e.into()),
        Err(ManualSmsError::Route(RouteError::Queue(e))) => Err(ApiError::Unavailable(e.into())),
        // Sending it again with the same Idempotency-Key completes it.
        Err(ManualSmsError::Route(e @ RouteError::Incomplete(_))) => {
            Err(ApiError::Unavailable(e.into()))
        }
        Err(ManualSmsError::Route(e)) => Err(ApiError::Internal(e.into())),
    }
}
