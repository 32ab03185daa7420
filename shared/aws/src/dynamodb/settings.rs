//! The settings adapter: one item per setting, saves conditional on the secrets revision.

use super::*;

/// Settings in DynamoDB.
#[derive(Clone, Debug)]
pub struct DynamoSettings {
    table: Table,
}

impl DynamoSettings {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            table: Table::new(client, table),
        }
    }

    /// Audited API writes go in one transaction with their entry in `audit`.
    pub fn with_audit(mut self, audit: DynamoAuditLog) -> Self {
        self.table.audit = Some(audit);
        self
    }
}

#[async_trait]
impl SettingsStore for DynamoSettings {
    async fn all(&self, org: &OrgId) -> StoreResult<AllSettings> {
        // The settings' sort keys sort together: `COMMUNICATION` < `EMAIL` < `SMS#...`,
        // and below `SMS$` (`$` follows `#`); users (`USER#...`, when the directory
        // shares the table) are past it. One Query reads them all.
        let items = self
            .table
            .query_between(org_pk(org), COMMUNICATION_SK, "SMS$")
            .await?;
        let mut all = AllSettings::default();
        for item in items {
            let sk = item
                .get(SK)
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            match sk.as_str() {
                COMMUNICATION_SK => all.communication = Some(from_item(item)?),
                EMAIL_SK => all.email = Some(from_item(item)?),
                s if s.starts_with(SMS_PREFIX) => all.sms.push(from_item(item)?),
                _ => {}
            }
        }
        Ok(all)
    }
    /// One Query (the control center's own settings, else `main`'s), not two GetItems.
    async fn effective_sms(
        &self,
        org: &OrgId,
        cc: &ControlCenterId,
    ) -> StoreResult<Option<SmsSettings>> {
        Ok(self.all(org).await?.effective_sms(cc).cloned())
    }

    async fn get_sms(&self, org: &OrgId, cc: &ControlCenterId) -> StoreResult<Option<SmsSettings>> {
        self.table
            .get(org_pk(org), format!("{SMS_PREFIX}{cc}"))
            .await
    }
    async fn list_sms(&self, org: &OrgId) -> StoreResult<Vec<SmsSettings>> {
        self.table.query_prefix(org_pk(org), SMS_PREFIX).await
    }
    async fn put_sms(&self, org: &OrgId, s: &SmsSettings) -> StoreResult<()> {
        self.table
            .put(
                org_pk(org),
                format!("{SMS_PREFIX}{}", s.control_center_id),
                s,
            )
            .await
    }
    async fn put_sms_if(
        &self,
        org: &OrgId,
        s: &SmsSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        let key = (org, format!("{SMS_PREFIX}{}", s.control_center_id));
        let after = Stored::Sms(Some(s));
        self.table.put_if(key, (s, after), Rev::Sms, expect).await
    }
    async fn delete_sms(
        &self,
        org: &OrgId,
        cc: &ControlCenterId,
        at: Option<&str>,
    ) -> StoreResult<bool> {
        let key = (org, format!("{SMS_PREFIX}{cc}"));
        let gone = Stored::Sms(None);
        self.table.delete_if(key, (Rev::Sms, gone), at).await
    }
    async fn get_email(&self, org: &OrgId) -> StoreResult<Option<EmailSettings>> {
        self.table.get(org_pk(org), EMAIL_SK.into()).await
    }
    async fn put_email(&self, org: &OrgId, s: &EmailSettings) -> StoreResult<()> {
        self.table.put(org_pk(org), EMAIL_SK.into(), s).await
    }
    async fn put_email_if(
        &self,
        org: &OrgId,
        s: &EmailSettings,
        expect: Expect<'_>,
    ) -> StoreResult<bool> {
        let key = (org, EMAIL_SK.into());
        let after = Stored::Email(Some(s));
        self.table.put_if(key, (s, after), Rev::Email, expect).await
    }
    async fn delete_email(&self, org: &OrgId, at: Option<&str>) -> StoreResult<bool> {
        let key = (org, EMAIL_SK.into());
        let gone = Stored::Email(None);
        self.table.delete_if(key, (Rev::Email, gone), at).await
    }
    async fn get_communication(&self, org: &OrgId) -> StoreResult<Option<CommunicationSettings>> {
        self.table.get(org_pk(org), COMMUNICATION_SK.into()).await
    }
    async fn put_communication(&self, org: &OrgId, s: &CommunicationSettings) -> StoreResult<()> {
        let item = to_item(org_pk(org), COMMUNICATION_SK.into(), s)?;
        let audited = self
            .table
            .audited(org, Stored::Communication(Some(s)), |name| {
                let put = Put::builder().table_name(name).set_item(Some(item));
                let put = put.build().map_err(built)?;
                Ok(TransactWriteItem::builder().put(put).build())
            });
        if audited.await?.is_some() {
            return Ok(());
        }
        self.table
            .put(org_pk(org), COMMUNICATION_SK.into(), s)
            .await
    }
}
