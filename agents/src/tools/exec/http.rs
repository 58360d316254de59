//! The `http` executor: POSTs the arguments as JSON to a configured URL,
//! with an SSRF guard in front of every connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use reqwest::{redirect, StatusCode, Url};
use serde_json::Value;

use super::super::error::{ExecError, ToolError};
use super::super::spec::HttpSpec;
use super::super::validate::ValidCall;
use super::resolve::{forbidden_reason, Resolver, SystemResolver};
use super::{Executor, ToolOutput};

/// Redirects followed at most (each to the same host, each checked again).
pub const MAX_REDIRECTS: usize = 3;

/// POSTs calls to one endpoint. Before any connection the host must be
/// allowed and every address it resolves to acceptable; the connection is
/// then pinned to those addresses so a second DNS answer cannot swap them.
pub struct HttpExecutor {
    url: Url,
    host: String,
    allow_hosts: Vec<String>,
    allow_private: bool,
    timeout: Duration,
    max_response_bytes: usize,
    resolver: Arc<dyn Resolver>,
}

impl std::fmt::Debug for HttpExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpExecutor")
            .field("url", &self.url.as_str())
            .field("allow_hosts", &self.allow_hosts)
            .field("allow_private", &self.allow_private)
            .finish_non_exhaustive()
    }
}

impl HttpExecutor {
    /// Checks `spec` (of the tool `tool`) and uses the system resolver.
    pub fn new(tool: &str, spec: &HttpSpec) -> Result<Self, ToolError> {
        let bad = |reason: String| ToolError::InvalidHttp {
            tool: tool.to_owned(),
            reason,
        };
        let url = Url::parse(&spec.url).map_err(|e| bad(format!("bad url `{}`: {e}", spec.url)))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad(format!(
                "the url must be http or https, not `{}`",
                url.scheme()
            )));
        }
        let host = host_key(&url).ok_or_else(|| bad("the url has no host".into()))?;
        if spec.allow_hosts.is_empty() {
            return Err(bad("`allow_hosts` is empty".into()));
        }
        let allow_hosts: Vec<String> = spec.allow_hosts.iter().map(|h| normalize_host(h)).collect();
        if !allow_hosts.contains(&host) {
            return Err(bad(format!(
                "the url's host `{host}` is not in `allow_hosts`"
            )));
        }
        if spec.timeout_ms == 0 {
            return Err(bad("`timeout_ms` must be positive".into()));
        }
        if spec.max_response_bytes == 0 {
            return Err(bad("`max_response_bytes` must be positive".into()));
        }
        Ok(Self {
            url,
            host,
            allow_hosts,
            allow_private: spec.allow_private,
            timeout: Duration::from_millis(spec.timeout_ms),
            max_response_bytes: spec.max_response_bytes,
            resolver: Arc::new(SystemResolver),
        })
    }

    /// The same executor resolving names with `resolver`.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = resolver;
        self
    }

    /// POSTs `arguments` and returns the response body.
    pub async fn post(&self, arguments: &Value) -> Result<ToolOutput, ExecError> {
        let body =
            serde_json::to_vec(arguments).map_err(|e| ExecError::Transport(e.to_string()))?;
        tokio::time::timeout(self.timeout, self.exchange(body))
            .await
            .map_err(|_| ExecError::Timeout)?
    }

    async fn exchange(&self, body: Vec<u8>) -> Result<ToolOutput, ExecError> {
        let mut url = self.url.clone();
        let mut post = true;
        for hop in 0..=MAX_REDIRECTS {
            let addrs = self.check(&url).await?;
            let client = self.client(&url, &addrs)?;
            let request = if post {
                client
                    .post(url.clone())
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.clone())
            } else {
                client.get(url.clone())
            };
            let response = request
                .header(ACCEPT, "application/json, text/*")
                .send()
                .await
                .map_err(transport)?;
            let status = response.status();
            if status.is_redirection() {
                let Some(location) = response.headers().get(LOCATION) else {
                    return Err(ExecError::Status(status.as_u16()));
                };
                if hop == MAX_REDIRECTS {
                    return Err(refused(format!("more than {MAX_REDIRECTS} redirects")));
                }
                url = self.redirect_target(&url, location)?;
                // 307 and 308 repeat the request; the others turn it into a GET.
                post &= matches!(
                    status,
                    StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
                );
                continue;
            }
            if !status.is_success() {
                return Err(ExecError::Status(status.as_u16()));
            }
            check_content_type(&response)?;
            return self.read_body(response).await;
        }
        unreachable!("the last hop returns")
    }

    /// Where a redirect leads, refused unless it stays on the same host.
    fn redirect_target(
        &self,
        from: &Url,
        location: &reqwest::header::HeaderValue,
    ) -> Result<Url, ExecError> {
        let location = location
            .to_str()
            .map_err(|_| refused("a redirect with an unreadable Location".into()))?;
        let next = from
            .join(location)
            .map_err(|e| refused(format!("a redirect to a bad url `{location}`: {e}")))?;
        let host = host_key(&next).unwrap_or_default();
        if host != self.host {
            return Err(refused(format!("a redirect to another host `{host}`")));
        }
        if from.scheme() == "https" && next.scheme() != "https" {
            return Err(refused("a redirect from https to plain http".into()));
        }
        Ok(next)
    }

    /// The addresses `url` may be reached at: the host must be allowed and
    /// (unless private addresses are allowed) every address public.
    async fn check(&self, url: &Url) -> Result<Vec<SocketAddr>, ExecError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(refused(format!(
                "the scheme `{}` is not http(s)",
                url.scheme()
            )));
        }
        let host = host_key(url).ok_or_else(|| refused("the url has no host".into()))?;
        if !self.allow_hosts.contains(&host) {
            return Err(refused(format!("the host `{host}` is not allowed")));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| refused("the url has no port".into()))?;
        let addrs = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Ipv6(ip)) => vec![SocketAddr::new(ip.into(), port)],
            Some(url::Host::Domain(name)) => self
                .resolver
                .resolve(name, port)
                .await
                .map_err(|e| ExecError::Transport(format!("cannot resolve `{name}`: {e}")))?,
            None => return Err(refused("the url has no host".into())),
        };
        if addrs.is_empty() {
            return Err(ExecError::Transport(format!("`{host}` has no address")));
        }
        if !self.allow_private {
            // One bad address refuses the host: a client may try any of them.
            for addr in &addrs {
                if let Some(kind) = forbidden_reason(addr.ip()) {
                    return Err(refused(format!(
                        "`{host}` is at {}, a {kind} address",
                        addr.ip()
                    )));
                }
            }
        }
        Ok(addrs)
    }

    /// A client for one request, pinned to the checked addresses, with no
    /// proxy (a proxy would resolve the name again) and no automatic
    /// redirects. Built per request since the pin is per client.
    fn client(&self, url: &Url, addrs: &[SocketAddr]) -> Result<reqwest::Client, ExecError> {
        let mut builder = reqwest::Client::builder()
            .redirect(redirect::Policy::none())
            .no_proxy()
            .timeout(self.timeout)
            .user_agent("warden-tools");
        if let Some(url::Host::Domain(name)) = url.host() {
            builder = builder.resolve_to_addrs(name, addrs);
        }
        builder.build().map_err(transport)
    }

    /// The body, refused as soon as it grows past the limit.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<ToolOutput, ExecError> {
        if response
            .content_length()
            .is_some_and(|len| len > self.max_response_bytes as u64)
        {
            return Err(ExecError::TooLarge);
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > self.max_response_bytes {
                return Err(ExecError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(ToolOutput::new(String::from_utf8_lossy(&body).into_owned()))
    }
}

impl Executor for HttpExecutor {
    fn execute<'a>(&'a self, call: &'a ValidCall) -> BoxFuture<'a, Result<ToolOutput, ExecError>> {
        Box::pin(self.post(&call.call().arguments))
    }
}

/// JSON (`application/json`, `application/*+json`) or any `text/*`.
fn check_content_type(response: &reqwest::Response) -> Result<(), ExecError> {
    let value = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let Some(value) = value else {
        return Err(ExecError::BadContentType("(none)".into()));
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let json =
        mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"));
    if json || mime.starts_with("text/") {
        Ok(())
    } else {
        Err(ExecError::BadContentType(value))
    }
}

/// The host of a URL as allow-lists hold it: lower case, IPv6 without
/// brackets, no trailing dot.
fn host_key(url: &Url) -> Option<String> {
    match url.host()? {
        url::Host::Domain(d) => Some(normalize_host(d)),
        url::Host::Ipv4(ip) => Some(ip.to_string()),
        url::Host::Ipv6(ip) => Some(ip.to_string()),
    }
}

fn normalize_host(host: &str) -> String {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.trim_end_matches('.').to_ascii_lowercase(),
    }
}

fn refused(reason: String) -> ExecError {
    ExecError::Refused { reason }
}

/// A reqwest failure, with its causes (reqwest's own text is terse).
fn transport(e: reqwest::Error) -> ExecError {
    if e.is_timeout() {
        return ExecError::Timeout;
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    ExecError::Transport(text)
}
