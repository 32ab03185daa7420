//! Secrets Manager adapter: provider passwords and header values, one secret each, under
//! a name prefix (`flare/` by default) that IAM confines the functions to.

use super::{error_code, store_error};
use async_trait::async_trait;
use aws_sdk_secretsmanager::Client;
use flare_shared::ports::{SecretKey, SecretStore, StoreResult};
use secrecy::{ExposeSecret, SecretString};

#[derive(Clone, Debug)]
pub struct SecretsManagerStore {
    client: Client,
    prefix: String,
}

impl SecretsManagerStore {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
        }
    }

    pub fn name(&self, key: &SecretKey) -> String {
        key.name(&self.prefix)
    }
}

const NOT_FOUND: &str = "ResourceNotFoundException";

#[async_trait]
impl SecretStore for SecretsManagerStore {
    async fn get(&self, key: &SecretKey) -> StoreResult<Option<SecretString>> {
        match self
            .client
            .get_secret_value()
            .secret_id(self.name(key))
            .send()
            .await
        {
            Ok(out) => Ok(out.secret_string.map(SecretString::from)),
            Err(e) if error_code(&e) == Some(NOT_FOUND) => Ok(None),
            Err(e) => Err(store_error(e, "GetSecretValue")),
        }
    }

    async fn put(&self, key: &SecretKey, value: &SecretString) -> StoreResult<()> {
        let name = self.name(key);
        // A revision's secret is new: create it in one call (the plain name, from before
        // revisions, usually exists).
        if key.is_versioned() {
            return match self
                .client
                .create_secret()
                .name(&name)
                .secret_string(value.expose_secret())
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if error_code(&e) == Some("ResourceExistsException") => self
                    .client
                    .put_secret_value()
                    .secret_id(&name)
                    .secret_string(value.expose_secret())
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| store_error(e, "PutSecretValue")),
                Err(e) => Err(store_error(e, "CreateSecret")),
            };
        }
        match self
            .client
            .put_secret_value()
            .secret_id(&name)
            .secret_string(value.expose_secret())
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some(NOT_FOUND) => {
                self.client
                    .create_secret()
                    .name(&name)
                    .secret_string(value.expose_secret())
                    .send()
                    .await
                    .map_err(|e| store_error(e, "CreateSecret"))?;
                Ok(())
            }
            Err(e) => Err(store_error(e, "PutSecretValue")),
        }
    }

    async fn delete(&self, key: &SecretKey) -> StoreResult<()> {
        match self
            .client
            .delete_secret()
            .secret_id(self.name(key))
            // A deleted provider secret has no use in a recovery window.
            .force_delete_without_recovery(true)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if error_code(&e) == Some(NOT_FOUND) => Ok(()),
            Err(e) => Err(store_error(e, "DeleteSecret")),
        }
    }
}
