//! The HTTP side of a push: one blocking client (ureq over rustls, the
//! system's root certificates), the requests of both APIs, and errors that
//! say what the server said and whether trying again can help.

use std::fmt;
use std::time::Duration;

use super::url::Endpoint;

/// Longest wait for a connection (TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default longest time one request may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of an error answer read (its message is shown).
const ERROR_BODY_LIMIT: u64 = 64 * 1024;
/// Longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// One HTTP request of a push.
#[derive(Clone, Debug)]
pub struct Request {
    /// Path (and query) under the endpoint's prefix.
    pub path: String,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// Why a push failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushError {
    /// The message, naming the URL and what the server said.
    pub message: String,
    /// Whether trying again later can succeed (rate limits, a server
    /// that is down or slow), and when the server asked to.
    pub retry: Retry,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The request itself is wrong (a 4xx): the same will fail again.
    Never,
    /// Try again, after this long if the server said (`Retry-After`).
    Later(Option<Duration>),
}

impl fmt::Display for PushError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PushError {}

/// Sends requests to one receiver.
pub struct Client {
    agent: ureq::Agent,
    endpoint: Endpoint,
    /// `--push-header`s, and the URL's basic auth.
    headers: Vec<(String, String)>,
    timeout: Duration,
}

impl Client {
    pub fn new(endpoint: Endpoint, headers: &[(String, String)], timeout: Duration) -> Client {
        use ureq::tls::{RootCerts, TlsConfig};
        let config = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT.min(timeout)))
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            // A redirect would resend the profile (and the credentials)
            // elsewhere: say where instead.
            .max_redirects(0)
            .user_agent(concat!("flameprobe/", env!("CARGO_PKG_VERSION")))
            .tls_config(
                TlsConfig::builder()
                    .root_certs(RootCerts::PlatformVerifier)
                    .build(),
            )
            .build();
        let mut all = headers.to_vec();
        if let Some(auth) = &endpoint.basic_auth {
            all.push(("Authorization".into(), auth.clone()));
        }
        Client {
            agent: ureq::Agent::new_with_config(config),
            endpoint,
            headers: all,
            timeout,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Sends one request; any 2xx answer is success.
    pub fn send(&self, req: &Request) -> Result<(), PushError> {
        let url = self.endpoint.url(&req.path);
        let shown = self.endpoint.url(req.path.split('?').next().unwrap_or(""));
        let mut builder = self
            .agent
            .post(&url)
            .header("Content-Type", req.content_type);
        if req.content_type == super::PROTO_CONTENT_TYPE {
            builder = builder.header("Connect-Protocol-Version", "1");
        }
        for (name, value) in &self.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let mut response = match builder.send(&req.body[..]) {
            Ok(r) => r,
            Err(e) => return Err(transport_error(&shown, &e, self.timeout)),
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            // Read the (empty) answer so the connection can be reused.
            let _ = response
                .body_mut()
                .with_config()
                .limit(ERROR_BODY_LIMIT)
                .read_to_vec();
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let body = response
            .body_mut()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default();
        Err(status_error(&shown, status, &body, retry_after, location))
    }
}

/// The error for an answer that is not a success: the status, the Connect
/// error code and message when the body is the Connect error envelope
/// (`{"code": ..., "message": ...}`), else the body's first line.
pub fn status_error(
    url: &str,
    status: u16,
    body: &str,
    retry_after: Option<Duration>,
    location: Option<String>,
) -> PushError {
    #[derive(serde::Deserialize)]
    struct Envelope {
        code: Option<String>,
        message: Option<String>,
    }
    let said = match serde_json::from_str::<Envelope>(body) {
        Ok(Envelope { code, message }) => match (code, message) {
            (Some(c), Some(m)) => format!("{c}: {}", printable(&m)),
            (Some(c), None) => c,
            (None, Some(m)) => printable(&m),
            (None, None) => String::new(),
        },
        Err(_) => printable(body.lines().find(|l| !l.trim().is_empty()).unwrap_or("")),
    };
    let reason = match status {
        301 | 302 | 303 | 307 | 308 => match &location {
            Some(to) => format!("redirected to {}: push to that URL instead", printable(to)),
            None => "redirected elsewhere".into(),
        },
        400 => "the server refused the profile".into(),
        401 | 403 => "not authorized: check the credentials (https://USER:TOKEN@host, or \
                      --push-header 'Authorization: ...', and X-Scope-OrgID for a tenant)"
            .into(),
        404 => "no such API here: check the URL (the server's base URL; --push-api \
                ingest for servers without the push API)"
            .into(),
        413 => "the profile is too large for the server: push smaller windows (--every) or \
                fewer series"
            .into(),
        429 => "rate limited".into(),
        500..=599 => "server error".into(),
        _ => "unexpected answer".into(),
    };
    let mut message = format!("push to {url} failed: HTTP {status}, {reason}");
    if !said.is_empty() {
        message.push_str(&format!(" (server said: {said})"));
    }
    let retry = match status {
        408 | 425 | 429 | 500..=599 => Retry::Later(retry_after),
        _ => Retry::Never,
    };
    PushError { message, retry }
}

/// The error for a request that got no answer: refused, unresolvable,
/// timed out, a TLS failure.
fn transport_error(url: &str, e: &ureq::Error, timeout: Duration) -> PushError {
    use ureq::Error as E;
    let (what, retry) = match e {
        E::Timeout(ureq::Timeout::Connect) => (
            format!(
                "could not connect within {}s",
                CONNECT_TIMEOUT.min(timeout).as_secs_f64()
            ),
            true,
        ),
        E::Timeout(_) => (
            format!(
                "no answer within {} (--push-timeout)",
                crate::profile::units::format(
                    crate::profile::units::NANOSECONDS,
                    timeout.as_nanos() as u64
                )
            ),
            true,
        ),
        E::HostNotFound => ("the host name does not resolve".to_string(), true),
        E::ConnectionFailed => ("the connection failed".to_string(), true),
        E::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => (
            "connection refused: is the server running and listening there?".to_string(),
            true,
        ),
        E::Io(io) => (format!("{io}"), true),
        E::Rustls(tls) => (
            format!("TLS failed: {tls} (the server's certificate must be trusted by this machine's root certificates)"),
            false,
        ),
        E::Tls(msg) => (format!("TLS failed: {msg}"), false),
        E::BadUri(u) => (format!("bad URL: {u}"), false),
        other => (other.to_string(), true),
    };
    PushError {
        message: format!("push to {url} failed: {what}"),
        retry: if retry {
            Retry::Later(None)
        } else {
            Retry::Never
        },
    }
}

/// A server's text for one line on a terminal: at most 300 characters,
/// control characters escaped ([`crate::text::printable`]).
fn printable(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((end, _)) => format!("{}...", crate::text::printable(&s[..end])),
        None => crate::text::printable(s).into_owned(),
    }
}

/// Checks a `--push-header 'Name: value'`.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let Some((name, value)) = s.split_once(':') else {
        return Err(format!(
            "--push-header '{s}': expected 'Name: value', e.g. 'X-Scope-OrgID: team-a'"
        ));
    };
    let (name, value) = (name.trim(), value.trim());
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(token) {
        return Err(format!(
            "--push-header '{s}': '{name}' is not a header name"
        ));
    }
    if value.chars().any(|c| c.is_control() && c != '\t') {
        return Err(format!(
            "--push-header '{name}': the value must not contain line breaks or control characters"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if [
        "content-type",
        "content-length",
        "host",
        "connect-protocol-version",
    ]
    .contains(&lower.as_str())
    {
        return Err(format!(
            "--push-header '{name}': flameprobe sets this header itself"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_envelope_gives_the_message() {
        let e = status_error(
            "http://h/x",
            400,
            r#"{"code":"invalid_argument","message":"invalid labels '{}' with error: service name is not provided"}"#,
            None,
            None,
        );
        assert!(e.message.contains("HTTP 400"), "{e}");
        assert!(
            e.message.contains(
                "invalid_argument: invalid labels '{}' with error: service name is not provided"
            ),
            "{e}"
        );
        assert_eq!(e.retry, Retry::Never);
        let e = status_error(
            "http://h/x",
            429,
            "slow down\n",
            Some(Duration::from_secs(3)),
            None,
        );
        assert!(
            e.message.contains("rate limited") && e.message.contains("slow down"),
            "{e}"
        );
        assert_eq!(e.retry, Retry::Later(Some(Duration::from_secs(3))));
        let e = status_error("http://h/x", 503, "", None, None);
        assert_eq!(e.retry, Retry::Later(None));
        let e = status_error("http://h/x", 401, "\x1b[31mno\x1b[0m", None, None);
        assert!(
            e.message.contains("\\x1b[31mno") && e.message.contains("credentials"),
            "{e}"
        );
        let e = status_error("http://h/x", 308, "", None, Some("https://h/x".into()));
        assert!(e.message.contains("redirected to https://h/x"), "{e}");
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(
            parse_header("X-Scope-OrgID: team-a"),
            Ok(("X-Scope-OrgID".into(), "team-a".into()))
        );
        assert_eq!(
            parse_header("Authorization: Bearer a:b"),
            Ok(("Authorization".into(), "Bearer a:b".into()))
        );
        for bad in [
            "novalue",
            ": x",
            "Bad Name: x",
            "X: a\nb",
            "Content-Type: x",
        ] {
            assert!(parse_header(bad).is_err(), "{bad}");
        }
    }
}
