//! Request-path normalisation: percent-decoding and dot-segment removal (RFC 3986 §5.2.4),
//! done once so that routing and the static file server see one canonical, safe path.
//!
//! Decoding happens *before* dot-segment handling, so `%2e%2e` is `..` and cannot escape the
//! root either. Anything that could smuggle a separator or confuse a filesystem (an encoded
//! `/`, a backslash, NUL and other control bytes) is refused rather than rewritten.

/// A path that cannot be normalised; the caller answers 400.
pub type PathError = super::Malformed;

/// Decodes and normalises a raw origin-form path (no query).
///
/// The output starts with `/`; segments are percent-decoded and joined by `/`, `.` segments
/// are dropped, `..` pops a segment (above the root is an error), empty segments are merged
/// (`//` → `/`), and a trailing slash is preserved (`/docs/` stays `/docs/`, `/docs/.` →
/// `/docs/`, `/a/..` → `/`).
///
/// Errors: `raw` not starting with `/`; a bad percent escape (`%`, `%4`, `%zz`); a decoded
/// segment holding `/`, `\`, NUL or another control byte (`< 0x20`, `0x7f`); decoded bytes that
/// are not UTF-8; `..` above the root.
pub fn normalize(raw: &str) -> Result<String, PathError> {
    let rest = raw.strip_prefix('/').ok_or(PathError {
        reason: "path does not start with '/'",
    })?;
    // Segments are appended as "/seg"; `starts` remembers where each one begins, for "..".
    let mut out = String::with_capacity(raw.len());
    let mut starts: Vec<usize> = Vec::new();
    let mut segment = Vec::new();
    let mut trailing_slash = false;
    for raw_segment in rest.split('/') {
        decode_segment(raw_segment.as_bytes(), &mut segment)?;
        let seg = std::str::from_utf8(&segment).map_err(|_| PathError {
            reason: "path is not valid UTF-8",
        })?;
        match seg {
            "" | "." => trailing_slash = true,
            ".." => {
                let start = starts.pop().ok_or(PathError {
                    reason: "path goes above the root",
                })?;
                out.truncate(start);
                trailing_slash = true;
            }
            _ => {
                starts.push(out.len());
                out.push('/');
                out.push_str(seg);
                trailing_slash = false;
            }
        }
    }
    if out.is_empty() || trailing_slash {
        out.push('/');
    }
    Ok(out)
}

/// Percent-decodes one segment into `out` (cleared first), refusing bytes that must not appear
/// in a decoded segment.
fn decode_segment(raw: &[u8], out: &mut Vec<u8>) -> Result<(), PathError> {
    out.clear();
    let mut i = 0;
    while let Some(&b) = raw.get(i) {
        let byte = if b == b'%' {
            let (Some(hi), Some(lo)) = (
                raw.get(i + 1).copied().and_then(super::hex_digit),
                raw.get(i + 2).copied().and_then(super::hex_digit),
            ) else {
                return Err(PathError {
                    reason: "bad percent escape in path",
                });
            };
            i += 3;
            hi << 4 | lo
        } else {
            i += 1;
            b
        };
        match byte {
            b'/' => {
                return Err(PathError {
                    reason: "encoded '/' in path",
                })
            }
            b'\\' => {
                return Err(PathError {
                    reason: "backslash in path",
                })
            }
            0 => {
                return Err(PathError {
                    reason: "NUL in path",
                })
            }
            0x01..=0x1f | 0x7f => {
                return Err(PathError {
                    reason: "control character in path",
                })
            }
            _ => out.push(byte),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(raw: &str) -> Result<String, &'static str> {
        normalize(raw).map_err(|e| e.reason)
    }

    #[test]
    fn plain_paths() {
        assert_eq!(n("/").as_deref(), Ok("/"));
        assert_eq!(n("//").as_deref(), Ok("/"));
        assert_eq!(n("///").as_deref(), Ok("/"));
        assert_eq!(n("/a").as_deref(), Ok("/a"));
        assert_eq!(n("/a/b/c.txt").as_deref(), Ok("/a/b/c.txt"));
        assert_eq!(n("//a//b").as_deref(), Ok("/a/b"));
        assert_eq!(n("/...").as_deref(), Ok("/..."));
        assert_eq!(n("/.hidden/..x/x..").as_deref(), Ok("/.hidden/..x/x.."));
    }

    #[test]
    fn trailing_slash_preserved() {
        assert_eq!(n("/docs/").as_deref(), Ok("/docs/"));
        assert_eq!(n("/docs//").as_deref(), Ok("/docs/"));
        assert_eq!(n("/docs/.").as_deref(), Ok("/docs/"));
        assert_eq!(n("/a/..").as_deref(), Ok("/"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/b/../").as_deref(), Ok("/a/"));
        assert_eq!(n("/.").as_deref(), Ok("/"));
        assert_eq!(n("/./").as_deref(), Ok("/"));
    }

    #[test]
    fn dot_segments() {
        assert_eq!(n("/a/./b/../c").as_deref(), Ok("/a/c"));
        assert_eq!(n("/a/b/../../c").as_deref(), Ok("/c"));
        assert_eq!(n("/a/%2e/b/%2E%2e/c").as_deref(), Ok("/a/c"));
        assert_eq!(n("/a/.%2e").as_deref(), Ok("/"));
        assert_eq!(n("/..").err(), Some("path goes above the root"));
        assert_eq!(n("/../a").err(), Some("path goes above the root"));
        assert_eq!(n("/a/../..").err(), Some("path goes above the root"));
        assert_eq!(n("/%2e%2e").err(), Some("path goes above the root"));
        assert_eq!(
            n("/a/%2e%2e/%2e%2e/etc/passwd").err(),
            Some("path goes above the root")
        );
        assert_eq!(n("/a/./../b/./").as_deref(), Ok("/b/"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(n("/%7Euser").as_deref(), Ok("/~user"));
        assert_eq!(n("/a%20b").as_deref(), Ok("/a b"));
        assert_eq!(n("/%C3%A9").as_deref(), Ok("/é"));
        assert_eq!(n("/%c3%a9t%C3%A9").as_deref(), Ok("/été"));
        assert_eq!(n("/é").as_deref(), Ok("/é"));
        assert_eq!(n("/%25").as_deref(), Ok("/%"));
        assert_eq!(n("/%3F%23").as_deref(), Ok("/?#"));
        assert_eq!(n("/a+b").as_deref(), Ok("/a+b"));
    }

    #[test]
    fn bad_escapes() {
        for raw in ["/%", "/%4", "/%zz", "/%4g", "/a%", "/%%41", "/%-1", "/%+1"] {
            assert_eq!(n(raw).err(), Some("bad percent escape in path"), "{raw}");
        }
    }

    #[test]
    fn forbidden_bytes() {
        assert_eq!(n("/a%2fb").err(), Some("encoded '/' in path"));
        assert_eq!(n("/a%2Fb").err(), Some("encoded '/' in path"));
        assert_eq!(n("/static/..%2fsecret").err(), Some("encoded '/' in path"));
        assert_eq!(n("/a\\b").err(), Some("backslash in path"));
        assert_eq!(n("/a%5cb").err(), Some("backslash in path"));
        assert_eq!(n("/a%5C..%5Cb").err(), Some("backslash in path"));
        assert_eq!(n("/a%00").err(), Some("NUL in path"));
        assert_eq!(n("/a\0").err(), Some("NUL in path"));
        assert_eq!(n("/a%0d%0a").err(), Some("control character in path"));
        assert_eq!(n("/a%1f").err(), Some("control character in path"));
        assert_eq!(n("/a%7f").err(), Some("control character in path"));
        assert_eq!(n("/a\tb").err(), Some("control character in path"));
        assert_eq!(n("/a\x7f").err(), Some("control character in path"));
    }

    #[test]
    fn invalid_utf8() {
        assert_eq!(n("/%ff").err(), Some("path is not valid UTF-8"));
        assert_eq!(n("/%C3").err(), Some("path is not valid UTF-8"));
        assert_eq!(n("/%C3/%A9").err(), Some("path is not valid UTF-8"));
        assert_eq!(n("/%c0%ae%c0%ae").err(), Some("path is not valid UTF-8"));
    }

    #[test]
    fn must_start_with_slash() {
        for raw in ["", "a", "*", "http://x/", "%2f", ".", "../a"] {
            assert_eq!(
                n(raw).err(),
                Some("path does not start with '/'"),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn output_is_a_fixed_point() {
        for raw in ["/a/./b/../c/", "//x//y", "/%7e/%41", "/a/b/c/../../d"] {
            let once = normalize(raw).unwrap();
            assert_eq!(normalize(&once).unwrap(), once, "{raw}");
        }
    }
}
