//! The delivery log in memory, with the claim semantics of the DynamoDB one.

use super::*;

type RecordKey = (String, flare_shared::domain::Slot);

#[derive(Default)]
struct LogEntry {
    notification: Option<Notification>,
    records: BTreeMap<RecordKey, DeliveryRecord>,
    acks: BTreeMap<UserId, chrono::DateTime<chrono::Utc>>,
    responses: BTreeMap<UserId, flare_shared::domain::Response>,
    pages: BTreeMap<u32, RoutePage>,
    chain: Option<String>,
}

/// The delivery log in memory, with the same claim semantics as the DynamoDB one.
#[derive(Default)]
pub struct MemoryDeliveryLog {
    entries: Mutex<HashMap<(OrgId, NotificationId), LogEntry>>,
    /// Receipt key → the record it names.
    #[allow(clippy::type_complexity)]
    receipts:
        Mutex<HashMap<String, Vec<(OrgId, NotificationId, String, flare_shared::domain::Slot)>>>,
    /// (org, number) → the newest dispatch SMS sent to it.
    sms_sent: Mutex<HashMap<(Option<OrgId>, String), flare_shared::ports::SmsSent>>,
    /// (org, provider message id) of the inbound messages seen.
    inbound: Mutex<std::collections::HashSet<(OrgId, String)>>,
    /// Response links by their code's digest.
    links: Mutex<HashMap<String, flare_shared::domain::ResponseLink>>,
    /// Each (organization, notification, user)'s sealed code.
    #[allow(clippy::type_complexity)]
    links_for: Mutex<HashMap<(OrgId, NotificationId, UserId), flare_shared::domain::SealedCode>>,
}

impl MemoryDeliveryLog {
    pub fn acks(&self, org: &OrgId, id: &NotificationId) -> Vec<UserId> {
        lock(&self.entries)
            .get(&(org.clone(), id.clone()))
            .map(|e| e.acks.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl DeliveryLog for MemoryDeliveryLog {
    async fn create_notification(&self, n: &Notification) -> StoreResult<Created> {
        let mut entries = lock(&self.entries);
        let e = entries
            .entry((n.org_id.clone(), n.notification_id.clone()))
            .or_default();
        if e.notification.is_some() {
            return Ok(Created::AlreadyExists);
        }
        e.notification = Some(n.clone());
        Ok(Created::New)
    }

    async fn put_route_pages(&self, n: &Notification, pages: &[RoutePage]) -> StoreResult<()> {
        let mut entries = lock(&self.entries);
        let e = entries
            .entry((n.org_id.clone(), n.notification_id.clone()))
            .or_default();
        e.pages = pages.iter().map(|p| (p.page, p.clone())).collect();
        Ok(())
    }

    async fn notification(
        &self,
        org: &OrgId,
        id: &NotificationId,
    ) -> StoreResult<Option<Notification>> {
        Ok(lock(&self.entries)
            .get(&(org.clone(), id.clone()))
            .and_then(|e| e.notification.clone()))
    }

    async fn acked(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool> {
        Ok(lock(&self.entries)
            .get(&(org.clone(), id.clone()))
            .is_some_and(|e| e.acks.contains_key(user)))
    }

    async fn claim_chain(
        &self,
        org: &OrgId,
        id: &NotificationId,
        chain: &str,
    ) -> StoreResult<bool> {
        let mut entries = lock(&self.entries);
        let Some(e) = entries.get_mut(&(org.clone(), id.clone())) else {
            return Ok(false);
        };
        Ok(match &e.chain {
            Some(kept) => kept == chain,
            None => {
                e.chain = Some(chain.to_string());
                true
            }
        })
    }

    async fn route_page(
        &self,
        org: &OrgId,
        id: &NotificationId,
        page: u32,
    ) -> StoreResult<Option<RoutePage>> {
        Ok(lock(&self.entries)
            .get(&(org.clone(), id.clone()))
            .and_then(|e| e.pages.get(&page).cloned()))
    }

    async fn page_routed(&self, org: &OrgId, id: &NotificationId, page: u32) -> StoreResult<()> {
        if let Some(p) = lock(&self.entries)
            .get_mut(&(org.clone(), id.clone()))
            .and_then(|e| e.pages.get_mut(&page))
        {
            p.routed = true;
        }
        Ok(())
    }

    async fn get_notification(
        &self,
        org: &OrgId,
        id: &NotificationId,
    ) -> StoreResult<Option<Logged>> {
        let entries = lock(&self.entries);
        Ok(entries.get(&(org.clone(), id.clone())).and_then(|e| {
            e.notification.clone().map(|n| Logged {
                notification: n,
                records: e.records.values().cloned().collect(),
                acks: e.acks.iter().map(|(u, t)| (u.clone(), *t)).collect(),
                responses: e.responses.iter().map(|(u, r)| (u.clone(), *r)).collect(),
            })
        }))
    }

    async fn recipient_records(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let entries = lock(&self.entries);
        let key = recipient.key();
        Ok(entries
            .get(&(org.clone(), id.clone()))
            .map(|e| {
                // The recipient's records are one run of the key order.
                let first = flare_shared::domain::Slot::from(Channel::Push);
                e.records
                    .range((key.clone(), first)..)
                    .take_while(|((k, _), _)| *k == key)
                    .map(|(_, r)| r.clone())
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn put_records(&self, n: &Notification, records: &[DeliveryRecord]) -> StoreResult<()> {
        let org = &n.org_id;
        let mut entries = lock(&self.entries);
        for r in records {
            let e = entries
                .entry((org.clone(), r.notification_id.clone()))
                .or_default();
            e.records
                .entry((r.recipient.key(), r.slot()))
                .or_insert_with(|| r.clone());
        }
        Ok(())
    }

    async fn claim(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: flare_shared::domain::Slot,
        lease: std::time::Duration,
    ) -> StoreResult<Claim> {
        let mut entries = lock(&self.entries);
        let Some(r) = entries
            .get_mut(&(org.clone(), id.clone()))
            .and_then(|e| e.records.get_mut(&(recipient.key(), slot)))
        else {
            return Ok(Claim::Missing);
        };
        let mut state = RecordState::of(r);
        let claim = state.claim(chrono::Utc::now(), lease);
        state.apply(r);
        Ok(claim)
    }

    async fn finish(
        &self,
        org: &OrgId,
        id: &NotificationId,
        recipient: &RecipientRef,
        slot: flare_shared::domain::Slot,
        outcome: Finish,
    ) -> StoreResult<bool> {
        let mut entries = lock(&self.entries);
        let Some(r) = entries
            .get_mut(&(org.clone(), id.clone()))
            .and_then(|e| e.records.get_mut(&(recipient.key(), slot)))
        else {
            return Ok(false);
        };
        let mut state = RecordState::of(r);
        let moved = state.finish(outcome, chrono::Utc::now());
        if moved && let Some(k) = state.receipt_key.take() {
            lock(&self.receipts).entry(k).or_default().push((
                org.clone(),
                id.clone(),
                recipient.key(),
                slot,
            ));
        }
        state.apply(r);
        Ok(moved)
    }

    async fn receipt(&self, key: &ReceiptKey, outcome: Finish) -> StoreResult<ReceiptMatch> {
        // A key two deliveries share (a gateway that reuses its ids) names neither.
        let Some((org, id, recipient, slot)) = lock(&self.receipts)
            .get(key.as_str())
            .filter(|all| all.len() == 1)
            .and_then(|all| all.first().cloned())
        else {
            return Ok(ReceiptMatch::Unknown);
        };
        let mut entries = lock(&self.entries);
        let Some(r) = entries
            .get_mut(&(org.clone(), id.clone()))
            .and_then(|e| e.records.get_mut(&(recipient.clone(), slot)))
        else {
            return Ok(ReceiptMatch::Unknown);
        };
        let mut state = RecordState::of(r);
        let moved = state.finish(outcome, chrono::Utc::now());
        state.apply(r);
        Ok(ReceiptMatch::Found {
            target: ReceiptTarget {
                org_id: org,
                notification_id: id,
                recipient,
                channel: slot.channel,
            },
            moved,
        })
    }

    async fn list_notifications(
        &self,
        org: &OrgId,
        after: Option<&ListPosition>,
        limit: usize,
    ) -> StoreResult<Vec<NotificationSummary>> {
        let entries = lock(&self.entries);
        let mut out: Vec<(ListPosition, NotificationSummary)> = entries
            .iter()
            .filter(|((o, _), _)| o == org)
            .filter_map(|(_, e)| {
                let n = e.notification.clone()?;
                let mut counts = StatusCounts::default();
                for r in e.records.values() {
                    counts.add(r.status);
                    counts.add_segments(r.segments);
                }
                for r in e.responses.values() {
                    counts.add_answer(r.answer);
                }
                Some((
                    ListPosition::of(&n),
                    NotificationSummary {
                        notification: n,
                        counts,
                    },
                ))
            })
            .filter(|(p, _)| after.is_none_or(|a| p < a))
            .collect();
        out.sort_by(|a, b| b.0.cmp(&a.0));
        Ok(out.into_iter().take(limit).map(|(_, s)| s).collect())
    }

    async fn remember_sms(
        &self,
        org: Option<&OrgId>,
        number: &flare_shared::domain::PhoneNumber,
        sent: &flare_shared::ports::SmsSent,
    ) -> StoreResult<()> {
        let mut all = lock(&self.sms_sent);
        let e = all
            .entry((org.cloned(), number.as_str().to_string()))
            .or_insert_with(|| sent.clone());
        if sent.at > e.at {
            *e = sent.clone();
        }
        Ok(())
    }

    async fn last_sms(
        &self,
        org: Option<&OrgId>,
        number: &flare_shared::domain::PhoneNumber,
    ) -> StoreResult<Option<flare_shared::ports::SmsSent>> {
        Ok(lock(&self.sms_sent)
            .get(&(org.cloned(), number.as_str().to_string()))
            .cloned())
    }

    async fn put_link(&self, link: &flare_shared::domain::ResponseLink) -> StoreResult<()> {
        lock(&self.links).insert(link.digest.clone(), link.clone());
        Ok(())
    }

    async fn link_for(
        &self,
        link: &flare_shared::domain::ResponseLink,
        candidate: &flare_shared::domain::SealedCode,
    ) -> StoreResult<Option<flare_shared::domain::SealedCode>> {
        let key = (
            link.org_id.clone(),
            link.notification_id.clone(),
            link.user_id.clone(),
        );
        let mut all = lock(&self.links_for);
        if let Some(existing) = all.get(&key) {
            return Ok(Some(existing.clone()));
        }
        all.insert(key, candidate.clone());
        lock(&self.links).insert(link.digest.clone(), link.clone());
        Ok(None)
    }

    async fn link(&self, digest: &str) -> StoreResult<Option<flare_shared::domain::ResponseLink>> {
        Ok(lock(&self.links).get(digest).cloned())
    }

    async fn first_inbound(&self, org: &OrgId, message_id: &str) -> StoreResult<bool> {
        Ok(lock(&self.inbound).insert((org.clone(), message_id.to_string())))
    }

    async fn respond(
        &self,
        org: &OrgId,
        id: &NotificationId,
        user: &UserId,
        response: &flare_shared::domain::Response,
    ) -> StoreResult<Option<flare_shared::domain::Response>> {
        Ok(lock(&self.entries)
            .get_mut(&(org.clone(), id.clone()))
            .and_then(|e| e.responses.insert(user.clone(), *response)))
    }

    async fn ack(&self, org: &OrgId, id: &NotificationId, user: &UserId) -> StoreResult<bool> {
        let mut entries = lock(&self.entries);
        match entries.get_mut(&(org.clone(), id.clone())) {
            Some(e) if e.notification.is_some() => match e.acks.entry(user.clone()) {
                std::collections::btree_map::Entry::Vacant(v) => {
                    v.insert(chrono::Utc::now());
                    Ok(true)
                }
                std::collections::btree_map::Entry::Occupied(_) => Ok(false),
            },
            _ => Ok(false),
        }
    }
}
