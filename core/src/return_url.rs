//! Where a payer's browser may be sent back to. Only the portal's own origins are allowed, so our
//! domain never redirects anyone to a site of an attacker's choosing (an open redirect).

use std::fmt;

/// The origins a `return_url` may point at (`EVISA_RETURN_URL_ORIGINS`).
#[derive(Clone, PartialEq, Eq)]
pub struct ReturnUrlOrigins {
    origins: Vec<url::Origin>,
    /// `dev`: any port of `localhost` or a loopback address, where portals under development run.
    allow_localhost: bool,
}

impl fmt::Debug for ReturnUrlOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.origins.iter().map(url::Origin::ascii_serialization))
            .finish()?;
        if self.allow_localhost {
            f.write_str(" + localhost")?;
        }
        Ok(())
    }
}

/// Why a `return_url` is refused; the text is the detail of the field's problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReturnUrlError {
    #[error("must be an absolute http(s) URL")]
    NotAbsolute,
    #[error("must be on one of the portal's origins (EVISA_RETURN_URL_ORIGINS)")]
    OriginNotAllowed,
}

impl ReturnUrlOrigins {
    /// Parses a comma-separated list of origins (`https://portal.example.gov`); a path, query or
    /// fragment is refused, since an origin has none.
    pub fn parse(list: &str, allow_localhost: bool) -> Result<Self, String> {
        let mut origins = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let url = url::Url::parse(item).map_err(|_| format!("`{item}` is not an origin"))?;
            if !matches!(url.scheme(), "http" | "https")
                || url.host().is_none()
                || url.path() != "/"
                || url.query().is_some()
                || url.fragment().is_some()
                || !url.username().is_empty()
            {
                return Err(format!(
                    "`{item}` is not an origin (scheme://host[:port], nothing after)"
                ));
            }
            origins.push(url.origin());
        }
        Ok(Self {
            origins,
            allow_localhost,
        })
    }

    /// Just `base`'s origin (and localhost when asked).
    pub fn of(base: &url::Url, allow_localhost: bool) -> Self {
        Self {
            origins: vec![base.origin()],
            allow_localhost,
        }
    }

    /// A checked return URL.
    pub fn check(&self, raw: &str) -> Result<url::Url, ReturnUrlError> {
        let url = url::Url::parse(raw).map_err(|_| ReturnUrlError::NotAbsolute)?;
        if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
            return Err(ReturnUrlError::NotAbsolute);
        }
        // Credentials in a URL are a classic way to disguise where it goes.
        if !url.username().is_empty() || url.password().is_some() {
            return Err(ReturnUrlError::OriginNotAllowed);
        }
        if self.origins.contains(&url.origin()) || (self.allow_localhost && is_local(&url)) {
            Ok(url)
        } else {
            Err(ReturnUrlError::OriginNotAllowed)
        }
    }
}

fn is_local(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_pass() {
        let o = ReturnUrlOrigins::parse(
            "https://portal.example.gov, https://visa.example.gov:8443",
            false,
        )
        .unwrap();
        assert!(o.check("https://portal.example.gov/done?x=1").is_ok());
        assert!(o.check("https://visa.example.gov:8443/back").is_ok());
        for bad in [
            "https://evil.example/",
            "http://portal.example.gov/", // another scheme is another origin
            "https://portal.example.gov:444/", // another port too
            "https://portal.example.gov.evil.example/",
            "https://portal.example.gov@evil.example/",
            "https://user@portal.example.gov/",
            "http://localhost:3000/",
        ] {
            assert_eq!(
                o.check(bad),
                Err(ReturnUrlError::OriginNotAllowed),
                "{bad} was allowed"
            );
        }
        for bad in [
            "/relative",
            "javascript:alert(1)",
            "ftp://portal.example.gov/",
            "not a url",
        ] {
            assert_eq!(o.check(bad), Err(ReturnUrlError::NotAbsolute), "{bad}");
        }
    }

    #[test]
    fn localhost_in_dev() {
        let o = ReturnUrlOrigins::of(&url::Url::parse("http://127.0.0.1:8080/").unwrap(), true);
        assert!(o.check("http://localhost:3000/back").is_ok());
        assert!(o.check("http://127.0.0.1:5173/").is_ok());
        assert!(o.check("http://[::1]:5173/").is_ok());
        assert!(o.check("https://evil.example/").is_err());
        assert!(o.check("http://localhost.evil.example/").is_err());
    }

    #[test]
    fn a_list_with_a_path_is_refused() {
        assert!(ReturnUrlOrigins::parse("https://portal.example.gov/path", false).is_err());
        assert!(ReturnUrlOrigins::parse("portal.example.gov", false).is_err());
        assert!(
            ReturnUrlOrigins::parse("", false)
                .unwrap()
                .check("https://a.example/")
                .is_err()
        );
    }
}
