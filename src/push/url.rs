//! The receiver's URL (`--push URL`, `push --url URL`): http or https, a
//! host, an optional port and path prefix, and optional credentials in the
//! userinfo (`https://USER:TOKEN@host`, Grafana Cloud's basic auth), which
//! become an `Authorization` header and are never shown in messages.

use std::fmt;

use base64::Engine;

/// A parsed receiver URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: String,
    /// Host and port as given (`[::1]:4040`), without credentials.
    pub authority: String,
    /// The path prefix without its trailing `/` ("" for none).
    pub prefix: String,
    /// `Basic ...` from the URL's userinfo.
    pub basic_auth: Option<String>,
}

impl Endpoint {
    /// Parses `http(s)://[user[:password]@]host[:port][/prefix]`.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        let url = url.trim();
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(format!(
                "'{}' is not an http(s) URL: give it with its scheme, e.g. \
                 http://pyroscope:4040 or https://profiles.example.net",
                redact(url)
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(format!(
                "'{}': only http:// and https:// URLs are supported, not {scheme}://",
                redact(url)
            ));
        }
        if rest.contains(['?', '#']) {
            return Err(format!(
                "'{}': the URL must not have a query or fragment: give the server's base \
                 URL (flameprobe adds the API path)",
                redact(url)
            ));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        let (userinfo, host) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if host.is_empty() || host.starts_with(':') {
            return Err(format!("'{}': the URL has no host", redact(url)));
        }
        if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "'{}': the host contains spaces or control characters",
                redact(url)
            ));
        }
        if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']')) {
            if port.parse::<u16>().is_err() {
                return Err(format!("'{}': '{port}' is not a port number", redact(url)));
            }
        }
        let basic_auth = match userinfo {
            None => None,
            Some(u) => {
                let (user, password) = u.split_once(':').unwrap_or((u, ""));
                let creds = format!("{}:{}", percent_decode(user)?, percent_decode(password)?);
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(creds)
                ))
            }
        };
        Ok(Endpoint {
            scheme,
            authority: host.to_string(),
            prefix: path.trim_end_matches('/').to_string(),
            basic_auth,
        })
    }

    /// The URL of `path` (which starts with `/`, and may carry a query)
    /// under the prefix, without credentials.
    pub fn url(&self, path: &str) -> String {
        format!(
            "{}://{}{}{}",
            self.scheme, self.authority, self.prefix, path
        )
    }
}

/// The URL for people: without credentials.
impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.prefix)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Endpoint({self}{})",
            if self.basic_auth.is_some() {
                ", with credentials"
            } else {
                ""
            }
        )
    }
}

/// A URL as text for messages, its userinfo hidden.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[end..]),
        None => url.to_string(),
    }
}

/// Decodes `%XX` escapes (userinfo may escape `:` and `@` that way).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "the URL's credentials have a bad %-escape".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "the URL's credentials are not UTF-8".to_string())
}

/// Escapes a query-string value (RFC 3986 unreserved characters stay).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hosts_ports_prefixes_and_credentials() {
        let e = Endpoint::parse("http://localhost:4040").unwrap();
        assert_eq!(e.url("/ingest"), "http://localhost:4040/ingest");
        assert_eq!(e.basic_auth, None);
        let e = Endpoint::parse("HTTPS://prof.example.net/pyroscope/").unwrap();
        assert_eq!(
            e.url("/push.v1.PusherService/Push"),
            "https://prof.example.net/pyroscope/push.v1.PusherService/Push"
        );
        let e = Endpoint::parse("https://12345:glc%40tok@prof.example.net").unwrap();
        // base64("12345:glc@tok")
        assert_eq!(e.basic_auth.as_deref(), Some("Basic MTIzNDU6Z2xjQHRvaw=="));
        assert_eq!(e.to_string(), "https://prof.example.net");
        assert!(!format!("{e:?}").contains("tok"));
        let e = Endpoint::parse("http://[::1]:4040").unwrap();
        assert_eq!(e.url("/x"), "http://[::1]:4040/x");
    }

    #[test]
    fn refuses_what_is_not_an_http_url() {
        for (bad, why) in [
            ("localhost:4040", "scheme"),
            ("ftp://host", "only http"),
            ("http://", "no host"),
            ("http://:4040", "no host"),
            ("http://host:port", "not a port"),
            ("http://host/?x=1", "query"),
            ("http://a b", "spaces"),
        ] {
            let err = Endpoint::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let err = Endpoint::parse("ftp://user:secret@host").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[test]
    fn escapes_query_values() {
        assert_eq!(query_escape("app.cpu{a=b}"), "app.cpu%7Ba%3Db%7D");
    }
}
