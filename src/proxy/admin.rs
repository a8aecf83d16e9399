//! The operator's controls behind the admin API (`routes::admin` is its
//! HTTP face): list, show and delete clients; list, show and revoke grants;
//! revoke every grant of a user (the kill switch).
//!
//! Contract:
//! - An answer never holds a token, a client secret (or its hash) or
//!   anything else that authenticates: only identifiers, names, scopes and
//!   times ([`ClientView`], [`GrantView`]).
//! - Grants of a client or a user are found through the indexes written
//!   atomically with each grant (`TokenVault`'s `GrantIndexes`), on every
//!   backend. A revoked grant is taken from the store, so every token
//!   issued from it fails at once on this instance, and on every instance
//!   sharing Redis as soon as Redis's invalidation push arrives.
//! - Every revocation is an audit event (`grant.revoked`, revoked by an
//!   admin), and a deleted client is `client.deleted`. When the audit trail
//!   is required and cannot take an event, the revocations still happen
//!   (a kill switch must not stop half way) and the answer is the error.
//! - Upstream tokens of revoked grants are revoked at the upstream's
//!   revocation endpoint, when one is configured.

use futures_util::StreamExt;
use serde::Serialize;

use super::OAuthProxy;
use crate::actors::client_registry::{ClientFilter, ClientUsage, DeleteClient, ListClients, ListedClient};
use crate::actors::token_vault::{GetGrant, ListGrants, RevokeGrant};
use crate::audit::{Event, EventKind, Outcome, RequestContext, RevokedBy};
use crate::error::{Error, ErrorCode};
use crate::oauth::client::TokenEndpointAuthMethod;
use crate::oauth::client_document::document_url;
use crate::records::Grant;
use crate::store::StoreError;

/// Largest page an admin listing answers.
pub const MAX_PAGE: usize = 500;
/// The page size when none is asked for.
pub const DEFAULT_PAGE: usize = 50;
/// Grants read per step while revoking many.
const REVOKE_BATCH: usize = 100;
/// Upstream revocations in flight at once.
const UPSTREAM_REVOCATIONS_AT_ONCE: usize = 8;

/// A client as the admin API shows it (no secret, no hash): a registered
/// client, or a document client as its listing keeps it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientView {
    /// `registered` (dynamic registration) or `document` (the client id is
    /// the URL of its metadata document).
    pub kind: &'static str,
    pub client_id: String,
    pub client_name: Option<String>,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<String>,
    pub token_endpoint_auth_method: TokenEndpointAuthMethod,
    /// Unix seconds; for a document client, when it was first seen.
    pub registered_at: u64,
    /// When it last completed a token exchange (Unix seconds), if it has.
    pub last_used_at: Option<u64>,
    /// A document client's document host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// When a document client's authorization last started (Unix seconds,
    /// written at most once a minute per instance).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_at: Option<u64>,
}

impl ClientView {
    fn of(listed: ListedClient) -> Self {
        match listed {
            ListedClient::Registered(client, last_used_at) => ClientView {
                kind: "registered",
                client_id: client.client_id,
                client_name: client.client_name,
                redirect_uris: client.redirect_uris,
                grant_types: client.grant_types,
                token_endpoint_auth_method: client.token_endpoint_auth_method,
                registered_at: client.issued_at,
                last_used_at,
                host: None,
                last_seen_at: None,
            },
            ListedClient::Document(listing, last_used_at) => ClientView {
                kind: "document",
                client_id: listing.client_id,
                client_name: listing.client_name,
                redirect_uris: listing.redirect_uris,
                grant_types: listing.grant_types,
                token_endpoint_auth_method: listing.token_endpoint_auth_method,
                registered_at: listing.first_seen,
                last_used_at,
                host: Some(listing.host),
                last_seen_at: Some(listing.last_seen),
            },
        }
    }
}

/// A grant as the admin API shows it: never a token.
#[derive(Debug, Clone, Serialize)]
pub struct GrantView {
    pub grant_id: String,
    pub client_id: String,
    pub subject: String,
    pub scopes: Vec<String>,
    pub resource: String,
    /// The sign-in that made it (Unix seconds).
    pub created_at: u64,
    /// Its last refresh-token rotation (swap mode), if any.
    pub last_refreshed_at: Option<u64>,
    /// When it ends unless refreshed again; never after its maximum
    /// lifetime (`OAUTH_PROXY_GRANT_MAX_LIFETIME`).
    pub expires_at: u64,
}

/// One page of a listing.
#[derive(Debug, Clone, Serialize)]
pub struct Listing<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Where a listing starts and how much it answers.
#[derive(Debug, Clone, Default)]
pub struct PageRequest {
    pub cursor: Option<String>,
    /// Between 1 and [`MAX_PAGE`].
    pub limit: usize,
}

/// What deleting a client did.
#[derive(Debug, Clone, Serialize)]
pub struct DeletedClient {
    pub client_id: String,
    pub deleted: bool,
    pub grants_revoked: usize,
    /// For a document client: that deleting does not block it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

/// What deleting a document client cannot do.
pub const DOCUMENT_CLIENT_DELETED: &str = "a document client is not a registration: it can sign in again; \
to block it, leave its host out of OAUTH_PROXY_CIMD_ALLOWED_HOSTS or set OAUTH_PROXY_CIMD=false";

/// What revoking a user's grants did.
#[derive(Debug, Clone, Serialize)]
pub struct RevokedSubject {
    pub subject: String,
    pub grants_revoked: usize,
    /// Grants whose upstream tokens the upstream confirmed revoked.
    pub upstream_revoked: usize,
}

fn not_found(what: &str) -> Error {
    Error::oauth(ErrorCode::NotFound, format!("no such {what}"))
}

/// A cursor this store does not know (one of another listing, or edited)
/// is the caller's mistake.
fn listing_error(error: StoreError) -> Error {
    match error {
        StoreError::Encoding(_) => Error::invalid_request("the cursor is not one this listing gave"),
        other => other.into(),
    }
}

/// The email a grant's claims carry, for the audit trail.
fn email_of(grant: &Grant) -> Option<String> {
    let claims: serde_json::Value = serde_json::from_str(&grant.claims).ok()?;
    claims.get("email")?.as_str().map(str::to_string)
}

impl OAuthProxy {
    fn grant_view(&self, grant_id: String, grant: Grant) -> GrantView {
        let lifetimes = &self.inner.config.lifetimes;
        let ends_at = grant.ends_at(lifetimes.grant_max);
        let last_refreshed_at = grant.previous.as_ref().map(|rotation| rotation.rotated_at);
        let last_written = last_refreshed_at.unwrap_or(grant.created_at);
        GrantView {
            grant_id,
            expires_at: last_written
                .saturating_add(lifetimes.refresh_token.as_secs())
                .min(ends_at),
            client_id: grant.client_id,
            subject: grant.subject,
            scopes: grant.scopes.iter().map(str::to_string).collect(),
            resource: grant.resource,
            created_at: grant.created_at,
            last_refreshed_at,
        }
    }

    /// Registered clients that `filter` accepts, a page at a time.
    pub async fn admin_clients(&self, filter: ClientFilter, page: PageRequest) -> Result<Listing<ClientView>, Error> {
        let (clients, next_cursor) = self
            .actors()
            .clients
            .send(ListClients {
                filter,
                cursor: page.cursor,
                limit: page.limit,
            })
            .await?
            .map_err(listing_error)?;
        Ok(Listing {
            items: clients.into_iter().map(ClientView::of).collect(),
            next_cursor,
        })
    }

    pub async fn admin_client(&self, client_id: &str) -> Result<ClientView, Error> {
        let found = self.actors().clients.send(ClientUsage(client_id.to_string())).await??;
        Ok(ClientView::of(found.ok_or_else(|| not_found("client"))?))
    }

    /// Deletes a client and revokes every grant made to it. A document
    /// client's listing is removed and its grants revoked, but it is not
    /// blocked: its next sign-in reads its document again (the answer's
    /// `note` says so). It is unknown (404) only with neither a listing
    /// nor a grant.
    pub async fn admin_delete_client(&self, client_id: &str, ctx: &RequestContext) -> Result<DeletedClient, Error> {
        let document = document_url(client_id).is_some();
        let client = match self.admin_client(client_id).await {
            Ok(client) => Some(client),
            Err(Error::OAuth {
                code: ErrorCode::NotFound,
                ..
            }) if document => None,
            Err(e) => return Err(e),
        };
        let client_name = client.and_then(|c| c.client_name);
        let deleted = self
            .actors()
            .clients
            .send(DeleteClient(client_id.to_string()))
            .await??;
        let mut audit = Ok(());
        if deleted {
            audit = self.record(
                Event::new(EventKind::ClientDeleted, Outcome::Success, ctx).client(client_id, client_name.clone()),
            );
        }
        let index = self.inner.prototypes.vault.indexes().by_client(client_id);
        // The name is known here, and the listing already gone.
        let known = (client_id.to_string(), client_name);
        let revoked = self
            .revoke_all(index, None, Some(client_id.to_string()), Some(known), ctx)
            .await?;
        audit.and(revoked.audit)?;
        if document && !deleted && revoked.grants == 0 {
            return Err(not_found("client"));
        }
        Ok(DeletedClient {
            client_id: client_id.to_string(),
            deleted,
            grants_revoked: revoked.grants,
            note: document.then_some(DOCUMENT_CLIENT_DELETED),
        })
    }

    /// Grants of a user and/or a client (every grant when neither is
    /// given), a page at a time.
    pub async fn admin_grants(
        &self,
        subject: Option<String>,
        client_id: Option<String>,
        page: PageRequest,
    ) -> Result<Listing<GrantView>, Error> {
        let indexes = self.inner.prototypes.vault.indexes();
        let index = match (&subject, &client_id) {
            (Some(subject), _) => Some(indexes.by_subject(subject)),
            (None, Some(client_id)) => Some(indexes.by_client(client_id)),
            (None, None) => None,
        };
        let (grants, next_cursor) = self
            .actors()
            .vault
            .send(ListGrants {
                index,
                subject,
                client_id,
                cursor: page.cursor,
                limit: page.limit,
            })
            .await?
            .map_err(listing_error)?;
        Ok(Listing {
            items: grants
                .into_iter()
                .map(|(grant_id, grant)| self.grant_view(grant_id, grant))
                .collect(),
            next_cursor,
        })
    }

    pub async fn admin_grant(&self, grant_id: &str) -> Result<GrantView, Error> {
        let grant = self.actors().vault.send(GetGrant(grant_id.to_string())).await??;
        let grant = grant.ok_or_else(|| not_found("grant"))?;
        Ok(self.grant_view(grant_id.to_string(), grant))
    }

    /// Revokes one grant (every token issued from it) and its upstream tokens.
    pub async fn admin_revoke_grant(&self, grant_id: &str, ctx: &RequestContext) -> Result<(), Error> {
        let revoked = self.actors().vault.send(RevokeGrant(grant_id.to_string())).await??;
        let grant = revoked.ok_or_else(|| not_found("grant"))?;
        let client_name = self.listed_client_name(&grant.client_id).await;
        let event = self.revoked_event(grant_id, &grant, client_name, ctx);
        self.revoke_upstream(&grant).await;
        self.record(event)
    }

    /// The kill switch: revokes every grant of `subject`, and their
    /// upstream tokens where the upstream can revoke them.
    pub async fn admin_revoke_subject(&self, subject: &str, ctx: &RequestContext) -> Result<RevokedSubject, Error> {
        let index = self.inner.prototypes.vault.indexes().by_subject(subject);
        let revoked = self
            .revoke_all(index, Some(subject.to_string()), None, None, ctx)
            .await?;
        revoked.audit?;
        Ok(RevokedSubject {
            subject: subject.to_string(),
            grants_revoked: revoked.grants,
            upstream_revoked: revoked.upstream,
        })
    }

    /// A client's name as the registry lists it (a registration or a
    /// document client's listing; never a document fetch), for audit events.
    async fn listed_client_name(&self, client_id: &str) -> Option<String> {
        let listed = self
            .actors()
            .clients
            .send(ClientUsage(client_id.to_string()))
            .await
            .ok()?;
        match listed.ok()?? {
            ListedClient::Registered(client, _) => client.client_name,
            ListedClient::Document(listing, _) => listing.client_name,
        }
    }

    fn revoked_event(&self, grant_id: &str, grant: &Grant, client_name: Option<String>, ctx: &RequestContext) -> Event {
        Event::new(EventKind::GrantRevoked, Outcome::Success, ctx)
            .client(grant.client_id.clone(), client_name)
            .subject(grant.subject.clone(), email_of(grant))
            .grant(grant_id)
            .revoked_by(RevokedBy::Admin)
    }

    /// Revokes the upstream tokens of a revoked grant at the upstream's
    /// revocation endpoint (`/revoke` and the admin API); whether the
    /// upstream confirmed it (`false` also when it has no such endpoint).
    pub(super) async fn revoke_upstream(&self, grant: &Grant) -> bool {
        let upstream = &self.inner.upstream;
        if upstream.revocation_endpoint.is_none() {
            return false;
        }
        let (token, hint) = match &grant.upstream.refresh_token {
            Some(refresh) => (refresh.as_str(), "refresh_token"),
            None => (grant.upstream.access_token.as_str(), "access_token"),
        };
        match upstream.revoke(token, hint).await {
            Ok(()) => true,
            Err(e) => {
                log::warn!("upstream revocation failed: {e}");
                false
            }
        }
    }

    /// Revokes every grant filed under `index` that matches the filters,
    /// following the index to its end (bounded: each step takes or skips
    /// what it read).
    async fn revoke_all(
        &self,
        index: String,
        subject: Option<String>,
        client_id: Option<String>,
        known_name: Option<(String, Option<String>)>,
        ctx: &RequestContext,
    ) -> Result<Revoked, Error> {
        let mut revoked = Revoked {
            grants: 0,
            upstream: 0,
            audit: Ok(()),
        };
        let mut cursor = None;
        // Client names for the events, read once per client.
        let mut names: std::collections::HashMap<String, Option<String>> = known_name.into_iter().collect();
        loop {
            let (grants, next) = self
                .actors()
                .vault
                .send(ListGrants {
                    index: Some(index.clone()),
                    subject: subject.clone(),
                    client_id: client_id.clone(),
                    cursor,
                    limit: REVOKE_BATCH,
                })
                .await??;
            let mut taken = Vec::new();
            for (grant_id, _) in grants {
                // Taken, not just read: of two revocations, one counts it.
                if let Some(grant) = self.actors().vault.send(RevokeGrant(grant_id.clone())).await?? {
                    if !names.contains_key(&grant.client_id) && names.len() < REVOKE_BATCH {
                        let name = self.listed_client_name(&grant.client_id).await;
                        names.insert(grant.client_id.clone(), name);
                    }
                    let client_name = names.get(&grant.client_id).cloned().flatten();
                    let event = self.revoked_event(&grant_id, &grant, client_name, ctx);
                    let recorded = self.record(event);
                    if revoked.audit.is_ok() {
                        revoked.audit = recorded;
                    }
                    revoked.grants += 1;
                    taken.push(grant);
                }
            }
            revoked.upstream += futures_util::stream::iter(taken.iter().map(|grant| self.revoke_upstream(grant)))
                .buffer_unordered(UPSTREAM_REVOCATIONS_AT_ONCE)
                .filter(|confirmed| std::future::ready(*confirmed))
                .count()
                .await;
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(revoked),
            }
        }
    }
}

/// What a bulk revocation did; `audit`: the first event the audit trail
/// could not take.
struct Revoked {
    grants: usize,
    upstream: usize,
    audit: Result<(), Error>,
}
