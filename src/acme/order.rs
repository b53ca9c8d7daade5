//! One ACME order for one domain with instant-acme: account (created once and stored),
//! order, challenge answer (HTTP-01 token or TLS-ALPN-01 certificate, both in the shared store),
//! finalize with a fresh key, and the issued chain.

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use super::store::{write_private, Store};
use super::{AcmeSettings, Challenge};

/// Why an order failed.
#[derive(Debug, thiserror::Error)]
pub enum OrderError {
    #[error("ACME: {0}")]
    Acme(#[from] instant_acme::Error),
    #[error("storing ACME state: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Other(String),
}

/// `account.json`: the credentials and the directory they belong to.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// The account for the configured directory: the stored one, or a new one (then stored).
pub async fn account(settings: &AcmeSettings, store: &Store) -> Result<Account, OrderError> {
    let builder = || match &settings.ca {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    let path = store.account_path();
    match std::fs::read(&path).map(|b| serde_json::from_slice::<StoredAccount>(&b)) {
        Ok(Ok(stored)) if stored.directory == settings.directory => {
            return Ok(builder()?.from_credentials(stored.credentials).await?);
        }
        Ok(Ok(_)) => tracing::info!("the ACME directory changed; creating a new account"),
        Ok(Err(e)) => {
            tracing::warn!(file = %path.display(), "unreadable ACME account file ({e}); creating a new account")
        }
        Err(_) => tracing::info!("creating an ACME account"),
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contact,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder()?
        .create(&new, settings.directory.clone(), None)
        .await?;
    let stored = StoredAccount {
        directory: settings.directory.clone(),
        credentials,
    };
    let json = serde_json::to_vec_pretty(&stored).map_err(|e| OrderError::Other(e.to_string()))?;
    write_private(&path, &json, 0o600)?;
    Ok(account)
}

/// Orders a certificate for `domain`; returns the chain and key, both PEM.
pub async fn issue(
    account: &Account,
    settings: &AcmeSettings,
    store: &Store,
    domain: &str,
) -> Result<(String, String), OrderError> {
    let identifiers = [Identifier::Dns(domain.to_string())];
    let mut order = account.new_order(&NewOrder::new(&identifiers)).await?;
    let mut tokens = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(OrderError::Other(format!("authorization is {other:?}"))),
        }
        let kind = match settings.challenge {
            Challenge::Http01 => ChallengeType::Http01,
            Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        let mut challenge = authz
            .challenge(kind.clone())
            .ok_or_else(|| OrderError::Other(format!("the CA offers no {kind:?} challenge")))?;
        let key_auth = challenge.key_authorization();
        match settings.challenge {
            Challenge::Http01 => {
                store.put_token(&challenge.token, key_auth.as_str())?;
                tokens.push(challenge.token.clone());
            }
            Challenge::TlsAlpn01 => {
                let pem = super::alpn::challenge_cert(domain, key_auth.digest().as_ref())?;
                write_private(&store.alpn_path(domain), pem.as_bytes(), 0o600)?;
            }
        }
        challenge.set_ready().await?;
    }
    let retry = RetryPolicy::default();
    let status = order.poll_ready(&retry).await;
    for token in &tokens {
        store.remove_token(token);
    }
    let _ = std::fs::remove_file(store.alpn_path(domain));
    match status? {
        OrderStatus::Ready => {}
        other => {
            return Err(OrderError::Other(format!(
                "order is {other:?} (challenge failed?)"
            )))
        }
    }
    let key_pem = order.finalize().await?;
    let chain_pem = order.poll_certificate(&retry).await?;
    Ok((chain_pem, key_pem))
}
