//! Outbound HTTP: the policy (`--allow-outbound`, taskd's own addresses, addresses never
//! allowed) and the one client that completion webhooks and the `http` kind share.
//!
//! Outbound is deny-by-default: with an empty list every request is refused. A request is
//! allowed only if its host is listed by name, or every address the host resolves to lies
//! in a listed network — in both cases for the port the request goes to. Link-local and
//! cloud metadata addresses are never allowed; taskd's own listen address and database
//! only when an entry names exactly that host and port.
//!
//! The check happens where the address is chosen: the client's DNS resolver resolves,
//! screens, and hands the connector only the addresses it checked (so a second lookup
//! cannot swap in another one), and a URL whose host is an IP literal — which skips the
//! resolver — is checked before it is sent. A resolver is told a name but not the port, so
//! each port gets its own client whose resolver screens for that port; connection pools
//! are per host and port anyway, so nothing is lost. A refused request never opens a
//! connection. Redirects are not followed (a redirect to an IP literal would skip the
//! resolver) and proxies from the environment are ignored (a proxy would resolve for us).
//!
//! No axum, no engine, no store here: this is a policy and a client.

mod allow;
mod own;
mod policy;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Method, RequestBuilder, Response, Url};

pub use allow::{AllowList, BadEntry, DEFAULT_ALLOW_OUTBOUND};
pub use own::OwnAddrs;
pub use policy::{Policy, never_allowed};

/// How long connecting may take, whatever the request's own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many per-port clients are kept (with their idle connections); a request to a port
/// beyond them gets a client of its own, dropped after it.
const MAX_PORT_CLIENTS: usize = 64;

/// A request the allow-list refused; no connection was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused by the outbound allow-list: {0}")]
pub struct Refused(String);

/// Why an outbound request got no response.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    /// The allow-list refused it: no packet was sent, and trying again will not help.
    #[error(transparent)]
    Refused(Refused),
    #[error("timed out")]
    Timeout,
    /// Connecting, TLS, or reading the answer failed.
    #[error("{0}")]
    Failed(String),
}

impl From<reqwest::Error> for OutboundError {
    fn from(error: reqwest::Error) -> Self {
        // The resolver's refusal comes back wrapped by the connector and the client.
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        let mut causes = Vec::new();
        while let Some(cause) = source {
            if let Some(refused) = cause.downcast_ref::<Refused>() {
                return OutboundError::Refused(refused.clone());
            }
            causes.push(cause.to_string());
            source = cause.source();
        }
        if error.is_timeout() {
            return OutboundError::Timeout;
        }
        causes.dedup();
        OutboundError::Failed(causes.join(": "))
    }
}

/// The screening resolver of the client for one port: the system's lookup, then the
/// policy for that port. `None`: the client that only builds requests, which connects
/// nowhere (fail closed, should a request be sent through it).
struct Screening {
    policy: Arc<Policy>,
    port: Option<u16>,
}

impl Resolve for Screening {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.policy);
        let port = self.port;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let Some(port) = port else {
                let refused = Refused("requests go through `Outbound::send`".to_owned());
                return Err(refused.into());
            };
            policy.screen_name(&host, port)?;
            let found = tokio::net::lookup_host((host.as_str(), port)).await?;
            let allowed = policy.screen(&host, port, found.map(|addr| addr.ip()))?;
            tracing::debug!(%host, ?allowed, "outbound host resolved and allowed");
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The outbound client with its policy. Cheap to clone: clones share the clients and their
/// connection pools. The clients are private, so every request goes through
/// [`Outbound::send`].
#[derive(Clone, Debug)]
pub struct Outbound {
    policy: Arc<Policy>,
    /// Builds requests; connects nowhere.
    builder: reqwest::Client,
    /// One client per destination port, made on first use. A std mutex: it is held only to
    /// look up or insert, never across an await, and building a client happens outside it.
    by_port: Arc<Mutex<HashMap<u16, reqwest::Client>>>,
}

impl Outbound {
    pub fn new(allow: AllowList, own: OwnAddrs) -> Result<Outbound, reqwest::Error> {
        let policy = Arc::new(Policy::new(allow, own));
        let builder = client(&policy, None)?;
        Ok(Outbound {
            policy,
            builder,
            by_port: Arc::default(),
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// A request to be finished by the caller (headers, body, timeout) and sent with
    /// [`Outbound::send`].
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        self.builder.request(method, url)
    }

    /// Sends a request built by [`Outbound::request`] if the policy permits it.
    pub async fn send(&self, request: RequestBuilder) -> Result<Response, OutboundError> {
        let request = request.build()?;
        self.policy
            .check_url(request.url())
            .map_err(OutboundError::Refused)?;
        // `check_url` admits only http(s), whose default ports are known.
        let port = request.url().port_or_known_default().unwrap_or(0);
        Ok(self.client_for(port)?.execute(request).await?)
    }

    fn client_for(&self, port: u16) -> Result<reqwest::Client, reqwest::Error> {
        // A poisoned lock only means another request panicked mid-insert; the map is fine.
        let known = self
            .by_port
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&port)
            .cloned();
        if let Some(client) = known {
            return Ok(client);
        }
        let client = client(&self.policy, Some(port))?;
        let mut by_port = self.by_port.lock().unwrap_or_else(|e| e.into_inner());
        if by_port.len() < MAX_PORT_CLIENTS {
            return Ok(by_port.entry(port).or_insert(client).clone());
        }
        Ok(client)
    }
}

/// A client whose resolver screens for `port`; every client is configured alike.
fn client(policy: &Arc<Policy>, port: Option<u16>) -> Result<reqwest::Client, reqwest::Error> {
    let resolver = Screening {
        policy: Arc::clone(policy),
        port,
    };
    reqwest::Client::builder()
        .dns_resolver(Arc::new(resolver))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(CONNECT_TIMEOUT)
        .user_agent(concat!("taskd/", env!("CARGO_PKG_VERSION")))
        .build()
}
