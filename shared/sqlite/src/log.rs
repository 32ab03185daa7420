//! The delivery log: notifications, records and acks.

use super::*;

/// A record's key columns: (org, notification, recipient, channel).
fn record_key(
    org: &OrgId,
    id: &NotificationId,
    recipient: &RecipientRef,
    slot: Slot,
) -> [String; 4] {
    [org.to_string(), id.to_string(), recipient.key(), slot.key()]
}

/// Reads one record's state on the writer, lets `f` change it, and writes it back when
/// `f` says it changed: the read and the write are one step, as a conditional update is.
fn update_record<R>(
    c: &Connection,
    key: &[String; 4],
    f: impl FnOnce(&mut RecordState) -> (R, bool),
) -> anyhow::Result<Option<R>> {
    let Some(mut state) = one::<RecordState>(
        c,
        "SELECT state FROM records WHERE org = ?1 AND nid = ?2 AND recipient = ?3 AND channel = ?4",
        params![key[0], key[1], key[2], key[3]],
    )?
    else {
        return Ok(None);
    };
    let (out, changed) = f(&mut state);
    if changed {
        c.prepare_cached(
            "UPDATE records SET state = ?5, pending = ?6 WHERE org = ?1 AND nid = ?2 AND recipient = ?3 AND channel = ?4",
        )?
        .execute(params![
            key[0],
            key[1],
            key[2],
            key[3],
            to_json(&state)?,
            state.status == DeliveryStatus::Pending
        ])?;
    }
    Ok(Some(out))
}

#[async_trait]
impl DeliveryLog for Sqlite {
    async fn create_notification(&self, n: &Notification) -> StoreResult<Created> {
        let (org, id) = (n.org_id.to_string(), n.notification_id.to_string());
        let created_ms = n.created_at.timestamp_millis();
        let body = to_json(n).map_err(StoreError::Failed)?;
        self.db
            .write_one(move |c| {
                let new = c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO notifications (org, id, created_ms, body) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![org, id, created_ms, body])?
                    > 0;
                Ok(if new {
                    Created::New
                } else {
                    Created::AlreadyExists
                })
            })
            .await
    }

    async fn notification(
        &self,
        org: &OrgId,
        id: &NotificationId,
    ) -> StoreResult<Option<Notification>> {
        self.db.read(|c| {
            one(
                c,
                "SELECT body FROM notifications WHERE org = ?1 AND id = ?2",
                params![org.as_str(), id.as_str()],
            )
        })
    }

    async fn put_route_pages(&self, n: &Notification, pages: &[RoutePage]) -> StoreResult<()> {
        let (org, nid) = (n.org_id.to_string(), n.notification_id.to_string());
        let items = pages
            .iter()
            .map(|p| Ok((p.page, to_json(p)?)))
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(StoreError::Failed)?;
        self.db
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "INSERT OR REPLACE INTO route_pages (org, nid, page, body) VALUES (?1, ?2, ?3, ?4)",
                )?;
                for (page, body) in &items {
                    stmt.execute(params![org, nid, page, body])?;
                }
                Ok(())
            })
            .await
    }

    async fn claim_chain(
        &self,
        org: &OrgId,
        id: &NotificationId,
        chain: &str,
    ) -> StoreResult<bool> {
        let (org, id, chain) = (org.to_string(), id.to_string(), chain.to_string());
        self.db
            .write_one(move |c| {
                let kept = c
                    .prepare_cached(
                        "UPDATE notifications SET body = json_set(body, '$.chain', ?3)
                         WHERE org = ?1 AND id = ?2
                           AND coalesce(json_extract(body, '$.chain'), ?3) = ?3",
                    )?
                    .execute(params![org, id, chain])?;
                Ok(kept == 1)
            })
            .await
    }

    async fn route_page(
        &self,
        org: &OrgId,
        id: &NotificationId,
        page: u32,
    ) -> StoreResult<Option<RoutePage>> {
        self.db.read(|c| {
            one(
                c,
                "SELECT body FROM route_pages WHERE org = ?1 AND nid = ?2 AND page = ?3",
                params![org.as_str(), id.as_str(), page],
            )
        })
    }

    async fn page_routed(&self, org: &OrgId, id: &NotificationId, page: u32) -> StoreResult<()> {
        let (org, nid) = (org.to_string(), id.to_string());
        self.db
            .write_one(move |c| {
                c.prepare_cached(
                    "UPDATE route_pages SET body = json_set(body, '$.routed', json('true')) WHERE org = ?1 AND nid = ?2 AND page = ?3",
                )?
                .execute(params![org, nid, page])?;
                Ok(())
            })
            .await
    }

    async fn get_notification(
        &self,
        org: &OrgId,
        id: &NotificationId,
    ) -> StoreResult<Option<Logged>> {
        self.db.read(|c| logged(c, org.as_str(), id.as_str()))
    }

    /// Reads only the page (the records' primary key is in recipient order).
    async fn notification_page(
        &self,
        org: &OrgId,
        id: &NotificationId,
        after: Option<&str>,
        recipients: usize,
    ) -> StoreResult<Option<(Logged, Option<String>)>> {
        self.db
            .read(|c| logged_page(c, org.as_str(), id.as_str(), after, recipients))
    }

    async fn recipient_records(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        self.db.read(|c| {
            records(
                c,
                &format!("SELECT {RECORD_COLUMNS} FROM records WHERE org = ?1 AND nid = ?2 AND recipient = ?3 ORDER BY channel"),
                params![org.as_str(), id.as_str(), recipient.key()],
            )
        })
    }

    async fn put_records(&self, n: &Notification, records: &[DeliveryRecord]) -> StoreResult<()> {
        let org = n.org_id.to_string();
        let items = records
            .iter()
            .map(|r| {
                Ok((
                    r.notification_id.to_string(),
                    r.recipient.key(),
                    r.slot().key(),
                    r.status == DeliveryStatus::Pending,
                    to_json(&RecordState::of(r))?,
                    to_json(r)?,
                ))
            })
            .collect::<anyhow::Result<Vec<_>>>()
            .map_err(StoreError::Failed)?;
        self.db
            .write(move |c| {
                let mut stmt = c.prepare_cached(
                    "INSERT OR IGNORE INTO records (org, nid, recipient, channel, pending, state, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?;
                for (nid, recipient, channel, pending, state, body) in &items {
                    stmt.execute(params![org, nid, recipient, channel, pending, state, body])?;
                }
                Ok(())
            })
            .await
    }

    async fn claim(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: Slot,
        lease: std::time::Duration,
    ) -> StoreResult<Claim> {
        let key = record_key(org, id, recipient, slot);
        self.db
            .write_one(move |c| {
                let claim = update_record(c, &key, |r| {
                    let claim = r.claim(Utc::now(), lease);
                    let changed = matches!(claim, Claim::Claimed { .. });
                    (claim, changed)
                })?;
                Ok(claim.unwrap_or(Claim::Missing))
            })
            .await
    }

    async fn finish(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: Slot,
        outcome: Finish,
    ) -> StoreResult<bool> {
        let key = record_key(org, id, recipient, slot);
        self.db
            .write_one(move |c| {
                let moved = update_record(c, &key, |r| {
                    let moved = r.finish(outcome, Utc::now());
                    (moved, moved)
                })?;
                Ok(moved.unwrap_or(false))
            })
            .await
    }

    async fn receipt(
        &self,
        key: &flare_shared::domain::receipt::ReceiptKey,
        outcome: Finish,
    ) -> StoreResult<ReceiptMatch> {
        let key = key.as_str().to_string();
        self.db
            .write_one(move |c| {
                // The partial index on the state's receipt key finds it.
                let mut found = c
                    .prepare_cached(
                        "SELECT org, nid, recipient, channel FROM records WHERE json_extract(state, '$.receipt_key') = ?1 LIMIT 2",
                    )?
                    .query_map(params![key], |r| {
                        Ok([r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?])
                    })?
                    .collect::<Result<Vec<_>, _>>()?;
                // A key two deliveries share (a gateway that reuses its ids) names neither.
                if found.len() != 1 {
                    return Ok(ReceiptMatch::Unknown);
                }
                let k = found.remove(0);
                let slot = Slot::parse_key(&k[3]).context("a stored record's channel")?;
                let moved = update_record(c, &k, |r| {
                    let moved = r.finish(outcome, Utc::now());
                    (moved, moved)
                })?
                .unwrap_or(false);
                let [org, nid, recipient, _] = k;
                Ok(ReceiptMatch::Found {
                    target: ReceiptTarget {
                        org_id: OrgId::parse(&org).context("a stored org id")?,
                        notification_id: NotificationId::parse_existing(&nid)
                            .context("a stored notification id")?,
                        recipient,
                        channel: slot.channel,
                    },
                    moved,
                })
            })
            .await
    }

    async fn list_notifications(
        &self,
        org: &OrgId,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationSummary>> {
        self.db.read(|c| {
            let (ms, id) = after.map_or((i64::MAX, String::new()), |a| {
                (a.created_ms, a.notification_id.to_string())
            });
            // Newest first from the index; "after" a place is strictly older than it.
            let notifications: Vec<Notification> = rows(
                c,
                "SELECT body FROM notifications WHERE org = ?1 AND (?4 = 0 OR (created_ms, id) < (?2, ?3)) ORDER BY created_ms DESC, id DESC LIMIT ?5",
                params![org.as_str(), ms, id, after.is_some(), limit as i64],
            )?;
            let mut counted = c.prepare_cached(
                "SELECT json_extract(state, '$.status'), count(*), coalesce(sum(json_extract(state, '$.segments')), 0) FROM records WHERE org = ?1 AND nid = ?2 GROUP BY 1",
            )?;
            let mut answered = c.prepare_cached(
                "SELECT json_extract(body, '$.answer'), count(*) FROM responses WHERE org = ?1 AND nid = ?2 GROUP BY 1",
            )?;
            notifications
                .into_iter()
                .map(|n| {
                    let mut counts = StatusCounts::default();
                    let by_status = counted
                        .query_map(params![org.as_str(), n.notification_id.as_str()], |r| {
                            Ok((
                                r.get::<_, String>(0)?,
                                r.get::<_, i64>(1)?,
                                r.get::<_, i64>(2)?,
                            ))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    for (status, k, segments) in by_status {
                        let status: DeliveryStatus =
                            serde_json::from_value(serde_json::Value::String(status))?;
                        counts.add_many(status, u64::try_from(k)?);
                        counts.sms_segments += u64::try_from(segments)?;
                    }
                    let by_answer = answered
                        .query_map(params![org.as_str(), n.notification_id.as_str()], |r| {
                            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
                        })?
                        .collect::<Result<Vec<_>, _>>()?;
                    for (answer, k) in by_answer {
                        let answer = flare_shared::domain::Answer::parse(&answer)?;
                        for _ in 0..k {
                            counts.add_answer(answer);
                        }
                    }
                    Ok(NotificationSummary {
                        notification: n,
                        counts,
                    })
                })
                .collect()
        })
    }

    async fn acked(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool> {
        self.db.read(|c| {
            Ok(
                c.prepare_cached("SELECT 1 FROM acks WHERE org = ?1 AND nid = ?2 AND user = ?3")?
                    .exists(params![org.as_str(), id.as_str(), user.as_str()])?,
            )
        })
    }

    async fn remember_sms(
        &self,
        org: Option<&OrgId>,
        number: &flare_shared::domain::PhoneNumber,
        sent: &flare_shared::ports::SmsSent,
    ) -> StoreResult<()> {
        // "": any organization (no organization's id is empty).
        let (org, number) = (
            org.map_or_else(String::new, ToString::to_string),
            number.as_str().to_string(),
        );
        let at = sent.at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let body = to_json(sent).map_err(StoreError::Failed)?;
        self.db
            .write_one(move |c| {
                // The newest stands (the times share one format, so they order as text).
                c.prepare_cached(
                    "INSERT INTO sms_sent (org, number, at, body) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (org, number) DO UPDATE SET at = excluded.at, body = excluded.body WHERE excluded.at > sms_sent.at",
                )?
                .execute(params![org, number, at, body])?;
                Ok(())
            })
            .await
    }

    async fn last_sms(
        &self,
        org: Option<&OrgId>,
        number: &flare_shared::domain::PhoneNumber,
    ) -> StoreResult<Option<flare_shared::ports::SmsSent>> {
        self.db.read(|c| {
            one(
                c,
                "SELECT body FROM sms_sent WHERE org = ?1 AND number = ?2",
                params![org.map_or("", OrgId::as_str), number.as_str()],
            )
        })
    }

    async fn put_link(&self, link: &flare_shared::domain::ResponseLink) -> StoreResult<()> {
        let digest = link.digest.clone();
        let body = to_json(link).map_err(StoreError::Failed)?;
        self.db
            .write_one(move |c| {
                c.prepare_cached("INSERT OR REPLACE INTO links (digest, body) VALUES (?1, ?2)")?
                    .execute(params![digest, body])?;
                Ok(())
            })
            .await
    }

    async fn link_for(
        &self,
        link: &flare_shared::domain::ResponseLink,
        candidate: &flare_shared::domain::SealedCode,
    ) -> StoreResult<Option<flare_shared::domain::SealedCode>> {
        let (org, nid, user) = (
            link.org_id.to_string(),
            link.notification_id.to_string(),
            link.user_id.to_string(),
        );
        let (digest, body) = (
            link.digest.clone(),
            to_json(link).map_err(StoreError::Failed)?,
        );
        let sealed = to_json(candidate).map_err(StoreError::Failed)?;
        self.db
            .write_one(move |c| {
                let inserted = c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO links_for (org, nid, user, body) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![org, nid, user, sealed])?;
                if inserted == 1 {
                    c.prepare_cached("INSERT OR REPLACE INTO links (digest, body) VALUES (?1, ?2)")?
                        .execute(params![digest, body])?;
                    return Ok(None);
                }
                one(
                    c,
                    "SELECT body FROM links_for WHERE org = ?1 AND nid = ?2 AND user = ?3",
                    params![org, nid, user],
                )
            })
            .await
    }

    async fn link(&self, digest: &str) -> StoreResult<Option<flare_shared::domain::ResponseLink>> {
        self.db.read(|c| {
            one(
                c,
                "SELECT body FROM links WHERE digest = ?1",
                params![digest],
            )
        })
    }

    async fn first_inbound(&self, org: &OrgId, message_id: &str) -> StoreResult<bool> {
        let (org, id) = (org.to_string(), message_id.to_string());
        self.db
            .write_one(move |c| {
                let inserted = c
                    .prepare_cached("INSERT OR IGNORE INTO inbound (org, id) VALUES (?1, ?2)")?
                    .execute(params![org, id])?;
                Ok(inserted == 1)
            })
            .await
    }

    async fn respond(
        &self,
        org: &OrgId,
        id: &NotificationId,
        user: &UserId,
        response: &flare_shared::domain::Response,
    ) -> StoreResult<Option<flare_shared::domain::Response>> {
        let (org, id, user) = (org.to_string(), id.to_string(), user.to_string());
        let body = to_json(response).map_err(StoreError::Failed)?;
        self.db
            .write_one(move |c| {
                let previous = one(
                    c,
                    "SELECT body FROM responses WHERE org = ?1 AND nid = ?2 AND user = ?3",
                    params![org, id, user],
                )?;
                // The latest answer stands.
                c.prepare_cached(
                    "INSERT INTO responses (org, nid, user, body) VALUES (?1, ?2, ?3, ?4) ON CONFLICT (org, nid, user) DO UPDATE SET body = excluded.body",
                )?
                .execute(params![org, id, user, body])?;
                Ok(previous)
            })
            .await
    }

    async fn ack(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool> {
        let (org, id, user) = (org.to_string(), id.to_string(), user.to_string());
        self.db
            .write_one(move |c| {
                let exists = c
                    .prepare_cached("SELECT 1 FROM notifications WHERE org = ?1 AND id = ?2")?
                    .exists(params![org, id])?;
                if !exists {
                    return Ok(false);
                }
                let inserted = c
                    .prepare_cached(
                        "INSERT OR IGNORE INTO acks (org, nid, user, at) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![org, id, user, Utc::now().to_rfc3339()])?;
                Ok(inserted == 1)
            })
            .await
    }
}
