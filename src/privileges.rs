//! Dropping root: `[security] drop_privileges_user` / `drop_privileges_group`.
//!
//! Names are looked up when the config is parsed (an unknown user or group is a config error
//! with its place in the file); the switch happens once, after the listeners (and later the
//! admin socket) exist, and only when the daemon was started as root.

use std::ffi::CString;

/// A user's ids, as the password database gives them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    /// The user's primary group.
    pub gid: u32,
}

/// Looks a user up by name (or numeric id). `Err` is the reason, for the operator.
pub fn user(name: &str) -> Result<User, String> {
    let c = CString::new(name).map_err(|_| format!("{name:?} is not a user name"))?;
    // SAFETY: an all-zero passwd is a valid out-parameter; getpwnam_r fills it and `buf` holds
    // the strings it points to, both alive for the call.
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut out: *mut libc::passwd = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let rc = libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut out);
        if rc == 0 && !out.is_null() {
            return Ok(User {
                uid: pw.pw_uid,
                gid: pw.pw_gid,
            });
        }
    }
    match name.parse::<u32>() {
        Ok(uid) => Ok(User { uid, gid: uid }),
        Err(_) => Err(format!(
            "unknown user {name:?}; create it (useradd --system {name}) or name an existing one"
        )),
    }
}

/// Looks a group up by name (or numeric id).
pub fn group(name: &str) -> Result<u32, String> {
    let c = CString::new(name).map_err(|_| format!("{name:?} is not a group name"))?;
    // SAFETY: as in `user`, with getgrnam_r.
    unsafe {
        let mut gr: libc::group = std::mem::zeroed();
        let mut out: *mut libc::group = std::ptr::null_mut();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let rc = libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut out);
        if rc == 0 && !out.is_null() {
            return Ok(gr.gr_gid);
        }
    }
    name.parse::<u32>()
        .map_err(|_| format!("unknown group {name:?}; name an existing group"))
}

/// The user and group the daemon runs as once it has dropped privileges to `user_name` /
/// `group_name` (the same rules as [`drop`]); `None` when it would keep root's.
pub fn dropped_ids(user_name: Option<&str>, group_name: Option<&str>) -> Option<(u32, u32)> {
    if user_name.is_none() && group_name.is_none() {
        return None;
    }
    let u = user_name.and_then(|n| user(n).ok());
    let gid = match group_name {
        Some(g) => group(g).ok()?,
        None => u?.gid,
    };
    Some((u.map_or(0, |u| u.uid), gid))
}

/// Whether a process running as `uid` with the one group `gid` (as after [`drop`]) may read
/// `path`, by its mode bits and those of every directory on the way (ACLs aside). Root may
/// read anything.
pub fn readable_by(path: &std::path::Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    if uid == 0 {
        return true;
    }
    let allows = |m: &std::fs::Metadata, bits: u32| {
        let class = if m.uid() == uid {
            bits << 6
        } else if m.gid() == gid {
            bits << 3
        } else {
            bits
        };
        m.mode() & class == class
    };
    let Ok(file) = std::fs::metadata(path) else {
        return false;
    };
    if !allows(&file, 0o4) {
        return false;
    }
    let Ok(real) = std::fs::canonicalize(path) else {
        return false;
    };
    real.ancestors()
        .skip(1)
        .all(|dir| std::fs::metadata(dir).is_ok_and(|m| allows(&m, 0o1)))
}

/// Switches to `user` and `group` if the process runs as root and either is set. Returns what
/// it did, for the log; `Ok(None)` when nothing was to be done.
pub fn drop(user_name: Option<&str>, group_name: Option<&str>) -> Result<Option<String>, String> {
    if user_name.is_none() && group_name.is_none() {
        return Ok(None);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let u = user_name.map(user).transpose()?;
    let gid = match group_name {
        Some(g) => Some(group(g)?),
        None => u.map(|u| u.gid),
    };
    // SAFETY: plain syscalls with values; glibc applies set*id to every thread of the process.
    unsafe {
        if let Some(gid) = gid {
            if libc::setgroups(1, &gid) != 0 || libc::setgid(gid) != 0 {
                return Err(format!(
                    "cannot switch to group {gid}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
        if let Some(u) = u {
            if libc::setuid(u.uid) != 0 {
                return Err(format!(
                    "cannot switch to user {}: {}",
                    u.uid,
                    std::io::Error::last_os_error()
                ));
            }
            // Never able to regain root.
            if libc::setuid(0) == 0 {
                return Err("still able to regain root after dropping privileges".into());
            }
        }
    }
    Ok(Some(format!(
        "dropped privileges to uid {} gid {}",
        // SAFETY: no preconditions.
        unsafe { libc::getuid() },
        unsafe { libc::getgid() }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readability_by_mode_bits() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("k.pem");
        std::fs::write(&f, "x").unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let me = unsafe { libc::geteuid() };
        let other = if me == 65534 { 65533 } else { 65534 };
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(readable_by(&f, 0, 0), "root reads anything");
        assert!(!readable_by(&f, other, other));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(readable_by(&f, other, other));
        // A directory on the way that the user cannot search.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(!readable_by(&f, other, other));
        assert_eq!(dropped_ids(None, None), None);
        assert_eq!(dropped_ids(Some("root"), None), Some((0, 0)));
        assert_eq!(dropped_ids(None, Some("root")), Some((0, 0)));
    }

    #[test]
    fn looks_up_users_and_groups() {
        assert_eq!(user("root").unwrap().uid, 0);
        assert_eq!(group("root").unwrap(), 0);
        assert_eq!(user("0").unwrap().uid, 0);
        assert!(user("no-such-user-zcs")
            .unwrap_err()
            .contains("unknown user"));
        assert!(group("no-such-group-zcs")
            .unwrap_err()
            .contains("unknown group"));
    }
}
