//! The `Host` check against DNS rebinding: a web page on another site, whose name the
//! attacker points at 127.0.0.1, must not reach a taskd on this machine through the
//! visitor's browser. The browser sends the attacker's name as `Host`; taskd answers 421.
//!
//! `--allowed-hosts` lists the names taskd answers to. Unset, a server on a loopback address
//! answers only to `localhost`, `127.0.0.1` and `[::1]` (any port), and one on another
//! address to any name (its operator lists the public names behind a proxy). Health and
//! readiness probes are exempt: they are open, reveal nothing, and orchestrators call them
//! by IP.
//!
//! Behind a proxy listed in `--trusted-proxies` that sends `X-Forwarded-Host`, that name is
//! the one checked, not `Host`: it is the name the browser used — the one a rebinding
//! attacker controls — while `Host` is whatever the proxy chose for its upstream. So behind
//! a proxy, `--allowed-hosts` lists the public names. From any other peer `Host` is checked.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::header;
use axum::response::IntoResponse;

use super::error::ApiError;
use super::gate::{Entry, Gate};
use super::proxy::ForwardedHost;

/// The parsed `--allowed-hosts`: exact names and addresses, or `*.example.com`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHosts(Vec<String>);

impl AllowedHosts {
    /// The names a loopback server answers to when the flag is unset.
    pub fn loopback() -> AllowedHosts {
        AllowedHosts(vec!["localhost".into(), "127.0.0.1".into(), "::1".into()])
    }

    fn allows(&self, host: &str) -> bool {
        self.0.iter().any(|entry| match entry.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => entry == host,
        })
    }
}

impl FromStr for AllowedHosts {
    type Err = String;

    /// Comma-separated names; a port given with one is ignored (any port is accepted).
    fn from_str(list: &str) -> Result<AllowedHosts, String> {
        let entries: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|entry| host_name(entry).to_owned())
            .collect();
        if entries.is_empty() {
            return Err("name at least one host".to_owned());
        }
        if let Some(bad) = entries.iter().find(|e| e.is_empty() || e.contains('/')) {
            return Err(format!("`{bad}` is not a host name"));
        }
        Ok(AllowedHosts(
            entries
                .into_iter()
                .map(|e| e.to_ascii_lowercase())
                .collect(),
        ))
    }
}

/// The name part of a `Host` value: without a port, brackets or a final dot.
fn host_name(host: &str) -> &str {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        match host.rsplit_once(':') {
            // One colon: `name:port`. More: a bare IPv6 address.
            Some((name, port))
                if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                name
            }
            _ => host,
        }
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// Which hosts the server answers to: `None` for any.
pub type HostPolicy = Option<Arc<AllowedHosts>>;

/// The middleware: 421 for a request whose `Host` is not allowed.
#[derive(Clone)]
pub(super) struct CheckHost(pub HostPolicy);

impl Gate for CheckHost {
    type Kept = ();

    fn enter(&self, request: Request) -> Entry<()> {
        let Some(allowed) = &self.0 else {
            return Entry::Pass(request, ());
        };
        if matches!(request.uri().path(), "/healthz" | "/readyz") {
            return Entry::Pass(request, ());
        }
        // A trusted proxy's `X-Forwarded-Host` first; HTTP/1.1 sends `Host`; HTTP/2 the URI's
        // authority.
        let host = match request.extensions().get::<ForwardedHost>() {
            Some(ForwardedHost(host)) => Some(host.clone()),
            None => request
                .headers()
                .get(header::HOST)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned)
                .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned())),
        };
        match host {
            Some(host) if !allowed.allows(&host_name(&host).to_ascii_lowercase()) => {
                Entry::Answer(ApiError::HostNotAllowed(host).into_response())
            }
            _ => Entry::Pass(request, ()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_read_without_port_brackets_or_final_dot() {
        assert_eq!(host_name("localhost:8080"), "localhost");
        assert_eq!(host_name("[::1]:8080"), "::1");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("example.com."), "example.com");
        assert_eq!(host_name("127.0.0.1"), "127.0.0.1");
    }

    #[test]
    fn entries_match_exactly_or_as_subdomains() {
        let allowed: AllowedHosts = "tasks.example.com, *.internal:443".parse().unwrap();
        assert!(allowed.allows("tasks.example.com"));
        assert!(allowed.allows("a.b.internal"));
        assert!(!allowed.allows("internal"));
        assert!(!allowed.allows("evilinternal"));
        assert!(!allowed.allows("example.com"));
        assert!(AllowedHosts::loopback().allows("::1"));
        assert!("".parse::<AllowedHosts>().is_err());
    }
}
