//! Content codings (`br`, `zstd`, `gzip`) and the choice of one for a request's
//! `Accept-Encoding` (RFC 9110 §12.5.3): q-values, `identity;q=0`, `*`, and the server's
//! order of preference among codings the client likes equally.

/// A content coding the daemon serves (precompressed files) or makes (on-the-fly compression).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Encoding {
    Br,
    Zstd,
    Gzip,
}

impl Encoding {
    /// Every coding, by the name the config uses.
    pub const ALL: [(&'static str, Encoding); 3] = [
        ("br", Encoding::Br),
        ("zstd", Encoding::Zstd),
        ("gzip", Encoding::Gzip),
    ];

    /// The `Content-Encoding` token (also the config's name).
    pub fn token(self) -> &'static str {
        match self {
            Self::Br => "br",
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
        }
    }

    /// The file name suffix of a precompressed variant (`x.css.br`).
    pub fn suffix(self) -> &'static str {
        match self {
            Self::Br => ".br",
            Self::Zstd => ".zst",
            Self::Gzip => ".gz",
        }
    }
}

/// What a request's `Accept-Encoding` makes of the codings a route offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// This coding.
    Coded(Encoding),
    /// No coding (the client takes none of those offered, or sent no `Accept-Encoding`).
    Identity,
    /// Nothing acceptable: the client refuses identity (`identity;q=0` or `*;q=0`) and every
    /// coding offered. RFC 9110 lets the server send identity anyway, which the daemon does.
    None,
}

/// Picks a coding for `accept` (the request's `Accept-Encoding` value, `None` when absent)
/// among `offered`, in the server's order of preference: the highest q-value wins; among equal
/// q-values the one listed first in `offered`. A coding is acceptable with q > 0, named or
/// through `*`; identity is preferred only when its own q-value is higher than every coding's.
pub fn negotiate(accept: Option<&[u8]>, offered: &[Encoding]) -> Choice {
    let Some(accept) = accept else {
        return Choice::Identity;
    };
    let prefs = Prefs::parse(accept);
    match prefs.ranked(offered)[0] {
        Some(e) => Choice::Coded(e),
        None if prefs.identity_q() == 0 => Choice::None,
        None => Choice::Identity,
    }
}

/// Every coding of `offered` the client takes, best first (as [`negotiate`] ranks them): for
/// precompressed files, where the best one may have no file.
pub fn ranked(accept: Option<&[u8]>, offered: &[Encoding]) -> [Option<Encoding>; 3] {
    match accept {
        None => [None; 3],
        Some(a) => Prefs::parse(a).ranked(offered),
    }
}

/// The q-values (in thousandths) of one `Accept-Encoding`.
struct Prefs {
    star: Option<u16>,
    identity: Option<u16>,
    named: [Option<u16>; 3],
}

impl Prefs {
    fn parse(accept: &[u8]) -> Self {
        let mut p = Self {
            star: None,
            identity: None,
            named: [None; 3],
        };
        for item in accept.split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';');
            let token = parts.next().unwrap_or_default().trim_ascii();
            if token.is_empty() {
                continue;
            }
            let mut q = 1000;
            for part in parts {
                let part = part.trim_ascii();
                if let Some(v) = part
                    .strip_prefix(b"q=")
                    .or_else(|| part.strip_prefix(b"Q="))
                {
                    q = qvalue(v).unwrap_or(0);
                }
            }
            let slot = if token == b"*" {
                &mut p.star
            } else if token.eq_ignore_ascii_case(b"identity") {
                &mut p.identity
            } else if let Some(i) = Encoding::ALL
                .iter()
                .position(|(name, _)| token.eq_ignore_ascii_case(name.as_bytes()))
            {
                &mut p.named[i]
            } else if token.eq_ignore_ascii_case(b"x-gzip") {
                &mut p.named[2]
            } else {
                continue;
            };
            // A coding listed twice keeps its best q-value.
            *slot = Some(slot.map_or(q, |old| old.max(q)));
        }
        p
    }

    fn q(&self, e: Encoding) -> u16 {
        let i = Encoding::ALL.iter().position(|(_, x)| *x == e).unwrap_or(0);
        self.named[i].or(self.star).unwrap_or(0)
    }

    /// Identity is acceptable unless refused by name, or by `*;q=0` without naming it.
    fn identity_q(&self) -> u16 {
        self.identity.unwrap_or(match self.star {
            Some(0) => 0,
            _ => 1,
        })
    }

    /// The codings of `offered` with q > 0 and not below identity's own q-value (when the
    /// client names it), best first, ties in `offered`'s order.
    fn ranked(&self, offered: &[Encoding]) -> [Option<Encoding>; 3] {
        let mut out: [Option<(Encoding, u16)>; 3] = [None; 3];
        let mut n = 0;
        for &e in offered.iter().take(3) {
            let q = self.q(e);
            if q > 0
                && self.identity.is_none_or(|iq| q >= iq)
                && !out.iter().flatten().any(|(x, _)| *x == e)
            {
                out[n] = Some((e, q));
                n += 1;
            }
        }
        // Stable: equal q-values keep the server's order.
        out[..n].sort_by_key(|x| std::cmp::Reverse(x.map_or(0, |(_, q)| q)));
        out.map(|x| x.map(|(e, _)| e))
    }
}

/// A q-value (`0`, `0.5`, `1.000`) in thousandths; `None` when malformed.
fn qvalue(v: &[u8]) -> Option<u16> {
    let v = v.trim_ascii();
    let (int, frac) = match v.iter().position(|&b| b == b'.') {
        Some(dot) => (&v[..dot], &v[dot + 1..]),
        None => (v, &b""[..]),
    };
    if int.len() != 1 || frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for i in 0..3 {
        thousandths = thousandths * 10 + frac.get(i).map_or(0, |d| u16::from(d - b'0'));
    }
    match int[0] {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Encoding::*;

    const ALL: &[Encoding] = &[Br, Zstd, Gzip];

    fn pick(accept: &str, offered: &[Encoding]) -> Choice {
        negotiate(Some(accept.as_bytes()), offered)
    }

    #[test]
    fn server_order_breaks_ties() {
        assert_eq!(pick("gzip, deflate, br, zstd", ALL), Choice::Coded(Br));
        assert_eq!(pick("gzip, zstd", ALL), Choice::Coded(Zstd));
        assert_eq!(pick("gzip", ALL), Choice::Coded(Gzip));
        assert_eq!(pick("gzip, br", &[Gzip, Br]), Choice::Coded(Gzip));
        assert_eq!(negotiate(None, ALL), Choice::Identity);
        assert_eq!(pick("", ALL), Choice::Identity);
        assert_eq!(pick("deflate", ALL), Choice::Identity);
        assert_eq!(pick("br", &[]), Choice::Identity);
    }

    #[test]
    fn q_values_count() {
        assert_eq!(pick("br;q=0.5, gzip", ALL), Choice::Coded(Gzip));
        assert_eq!(pick("br;q=0, gzip;q=0.1", ALL), Choice::Coded(Gzip));
        assert_eq!(pick("br;q=0", ALL), Choice::Identity);
        assert_eq!(pick("GZIP;Q=1.0", ALL), Choice::Coded(Gzip));
        assert_eq!(pick("gzip;q=1.5", ALL), Choice::Identity, "malformed = 0");
        assert_eq!(pick("gzip;q=0.001", ALL), Choice::Coded(Gzip));
        assert_eq!(pick("x-gzip", ALL), Choice::Coded(Gzip));
        assert_eq!(
            pick("gzip;q=0.5, identity", ALL),
            Choice::Identity,
            "identity is liked more"
        );
        assert_eq!(pick("gzip, identity;q=0.5", ALL), Choice::Coded(Gzip));
    }

    #[test]
    fn star_and_refused_identity() {
        assert_eq!(pick("*", ALL), Choice::Coded(Br));
        assert_eq!(pick("*, br;q=0", ALL), Choice::Coded(Zstd));
        assert_eq!(pick("*;q=0", ALL), Choice::None);
        assert_eq!(pick("*;q=0, identity", ALL), Choice::Identity);
        assert_eq!(pick("identity;q=0", &[Gzip]), Choice::None);
        assert_eq!(pick("identity;q=0, gzip", &[Gzip]), Choice::Coded(Gzip));
        assert_eq!(pick("br, *;q=0", &[Gzip]), Choice::None);
    }

    #[test]
    fn every_acceptable_coding_in_order() {
        let r = |a: &str, offered: &[Encoding]| ranked(Some(a.as_bytes()), offered);
        assert_eq!(r("zstd, gzip", ALL), [Some(Zstd), Some(Gzip), None]);
        assert_eq!(
            r("gzip;q=0.9, br;q=0.5, zstd", ALL),
            [Some(Zstd), Some(Gzip), Some(Br)]
        );
        assert_eq!(r("identity", ALL), [None; 3]);
        assert_eq!(r("*", &[Gzip, Br]), [Some(Gzip), Some(Br), None]);
        assert_eq!(ranked(None, ALL), [None; 3]);
    }

    #[test]
    fn q_value_forms() {
        assert_eq!(qvalue(b"1"), Some(1000));
        assert_eq!(qvalue(b"1.000"), Some(1000));
        assert_eq!(qvalue(b"0.25"), Some(250));
        assert_eq!(qvalue(b"0"), Some(0));
        assert_eq!(qvalue(b"0.1234"), None);
        assert_eq!(qvalue(b"2"), None);
        assert_eq!(qvalue(b"1.1"), None);
        assert_eq!(qvalue(b".5"), None);
    }
}
