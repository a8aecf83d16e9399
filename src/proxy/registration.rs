//! RFC 7591 dynamic client registration, and reading a client back (through
//! this thread's memo).

use std::net::IpAddr;
use std::rc::Rc;

use super::{memo, ClientInformation, OAuthProxy};
use crate::actors::client_registry::{GetClient, RegisterClient, RegisterError};
use crate::audit::{Event, EventKind, Outcome, RequestContext};
use crate::error::{Error, ErrorCode, PageReason};
use crate::oauth::client::{RegisteredClient, RegistrationRequest};
use crate::oauth::client_document::{document_url, DocumentError};

impl OAuthProxy {
    /// RFC 7591 registration; answers the §3.2.1 client information.
    pub async fn register_client(
        &self,
        request: RegistrationRequest,
        client_ip: Option<IpAddr>,
        ctx: &RequestContext,
    ) -> Result<ClientInformation, Error> {
        let config = &self.inner.config;
        let registration = request.validate(config.allowed_redirect_uri_patterns.as_deref())?;
        let application_type = registration.application_type;
        let (client, client_secret) = self
            .actors()
            .clients
            .send(RegisterClient {
                registration,
                client_ip,
            })
            .await?
            .map_err(|e| match e {
                RegisterError::RateLimited => Error::oauth(ErrorCode::RateLimited, e.to_string()),
                RegisterError::Full => Error::oauth(ErrorCode::TemporarilyUnavailable, e.to_string()),
                RegisterError::Store(e) => e.into(),
            })?;
        // MCP clients go to /authorize right after registering: the record
        // written is the record that would be read back (client records are
        // never rewritten), so this thread remembers it as a read would.
        self.record(
            Event::new(EventKind::ClientRegistered, Outcome::Success, ctx)
                .client(client.client_id.clone(), client.client_name.clone()),
        )?;
        let client = Rc::new(client);
        memo::CLIENTS.with(|memo| memo.remember(&client.client_id, Some(memo::UNCHANGING), &Some(client.clone())));
        Ok(ClientInformation {
            client,
            client_secret,
            application_type,
        })
    }

    /// A client's registered name, for audit events (through the memo).
    pub async fn client_name(&self, client_id: &str) -> Option<String> {
        let client = self.client(client_id).await.ok().flatten()?;
        client.client_name.clone()
    }

    /// The client `client_id` names: a registered client, or the client a
    /// metadata document describes when the id is a document URL. A document
    /// that cannot be used is an error page saying why (those clients do not
    /// fall back to registration).
    pub(super) async fn client(&self, client_id: &str) -> Result<Option<Rc<RegisteredClient>>, Error> {
        if let Some(url) = document_url(client_id) {
            let refused = |problem: DocumentError| {
                Error::page(PageReason::ClientDocument {
                    client_id: client_id.to_string(),
                    problem,
                })
            };
            let url = url.map_err(refused)?;
            let client = self.inner.documents.client(&url).await.map_err(refused)?;
            return Ok(Some(Rc::new(RegisteredClient::clone(&client))));
        }
        // Client records are never rewritten, only created and expired: an
        // answer stays right for the memo's whole age, whatever else the
        // table sees and whichever instance writes it (Redis included).
        memo::remembered(&memo::CLIENTS, client_id, Some(memo::UNCHANGING), || async {
            let client = self.actors().clients.send(GetClient(client_id.to_string())).await??;
            Ok(client.map(Rc::new))
        })
        .await
    }
}
