//! HTTP request methods, parsed once from the request line or the config.

use std::fmt;

/// An HTTP method. The nine methods of RFC 9110 (and PATCH) are variants; any other valid
/// token is kept as [`Method::Other`] so that an upstream can still receive it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Connect,
    Options,
    Trace,
    Patch,
    /// Any other token (`PROPFIND`, `PURGE`, …). Methods are case-sensitive (RFC 9110 §9.1).
    Other(Box<str>),
}

impl Method {
    /// Parses a method token. Returns `None` when `s` is empty or holds a character that is not
    /// a `tchar` (RFC 9110 §5.6.2).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "POST" => Self::Post,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "CONNECT" => Self::Connect,
            "OPTIONS" => Self::Options,
            "TRACE" => Self::Trace,
            "PATCH" => Self::Patch,
            _ if !s.is_empty() && s.bytes().all(is_tchar) => Self::Other(s.into()),
            _ => return None,
        })
    }

    /// The method as it appears on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Post => "POST",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
            Self::Options => "OPTIONS",
            Self::Trace => "TRACE",
            Self::Patch => "PATCH",
            Self::Other(s) => s,
        }
    }

    /// Bit of a standard method in a [`MethodSet`]; `None` for [`Method::Other`].
    fn bit(&self) -> Option<u16> {
        Some(
            1 << match self {
                Self::Get => 0,
                Self::Head => 1,
                Self::Post => 2,
                Self::Put => 3,
                Self::Delete => 4,
                Self::Connect => 5,
                Self::Options => 6,
                Self::Trace => 7,
                Self::Patch => 8,
                Self::Other(_) => return None,
            },
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `tchar` of RFC 9110 §5.6.2.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A set of methods: a bit set for the standard ones, a short list for the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MethodSet {
    bits: u16,
    others: Vec<Box<str>>,
}

impl MethodSet {
    /// Adds a method; adding one twice is harmless.
    pub fn insert(&mut self, m: Method) {
        match m.bit() {
            Some(b) => self.bits |= b,
            None => {
                if !self.contains(&m) {
                    self.others.push(m.as_str().into());
                }
            }
        }
    }

    pub fn contains(&self, m: &Method) -> bool {
        match m.bit() {
            Some(b) => self.bits & b != 0,
            None => self.others.iter().any(|o| **o == *m.as_str()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.bits == 0 && self.others.is_empty()
    }

    /// The methods, standard ones first in a fixed order, as an `Allow` header value
    /// (`GET, HEAD`).
    pub fn allow_header(&self) -> String {
        const ALL: [Method; 9] = [
            Method::Get,
            Method::Head,
            Method::Post,
            Method::Put,
            Method::Delete,
            Method::Connect,
            Method::Options,
            Method::Trace,
            Method::Patch,
        ];
        let mut out: Vec<&str> = ALL
            .iter()
            .filter(|m| self.contains(m))
            .map(Method::as_str)
            .collect();
        out.extend(self.others.iter().map(|s| &**s));
        out.join(", ")
    }
}

impl FromIterator<Method> for MethodSet {
    fn from_iter<I: IntoIterator<Item = Method>>(iter: I) -> Self {
        let mut set = Self::default();
        for m in iter {
            set.insert(m);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_standard_and_extension_methods() {
        assert_eq!(Method::parse("GET"), Some(Method::Get));
        assert_eq!(
            Method::parse("PROPFIND"),
            Some(Method::Other("PROPFIND".into()))
        );
        assert_eq!(Method::parse("get"), Some(Method::Other("get".into())));
        assert_eq!(Method::parse(""), None);
        assert_eq!(Method::parse("GE T"), None);
        assert_eq!(Method::parse("GET\0"), None);
    }

    #[test]
    fn set_membership_and_allow_header() {
        let set: MethodSet = [Method::Head, Method::Get, Method::Other("PURGE".into())]
            .into_iter()
            .collect();
        assert!(set.contains(&Method::Get));
        assert!(!set.contains(&Method::Post));
        assert!(set.contains(&Method::Other("PURGE".into())));
        assert!(!set.contains(&Method::Other("PURGEX".into())));
        assert_eq!(set.allow_header(), "GET, HEAD, PURGE");
        assert!(MethodSet::default().is_empty());
    }
}
