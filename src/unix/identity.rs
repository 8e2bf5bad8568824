//! The user and group workers run as (`-u`, `-g`, `--initgroups`; resolved from names
//! here): the privilege drop itself, and handing the master's files to that user.

/// The user and group workers switch to (`-u`, `-g`, `--initgroups`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    /// The user's name, for initgroups.
    pub user_name: Option<String>,
    pub initgroups: bool,
}

impl Identity {
    /// Resolves names or numbers; `None` when neither `-u` nor `-g` was given.
    ///
    /// # Errors
    /// Gunicorn's `No such user: 'x'` / `No such group: 'x'`.
    pub fn resolve(
        user: Option<&str>,
        group: Option<&str>,
        initgroups: bool,
    ) -> Result<Option<Identity>, String> {
        use nix::unistd::{getegid, geteuid, Group, Uid, User};
        if user.is_none() && group.is_none() {
            return Ok(None);
        }
        let user_entry = match user {
            None => None,
            Some(u) => Some(match u.parse::<u32>() {
                Ok(n) => User::from_uid(Uid::from_raw(n))
                    .ok()
                    .flatten()
                    .map_or((n, None, None), |e| (n, Some(e.name), Some(e.gid.as_raw()))),
                Err(_) => {
                    let e = User::from_name(u)
                        .ok()
                        .flatten()
                        .ok_or_else(|| format!("No such user: '{u}'"))?;
                    (e.uid.as_raw(), Some(e.name), Some(e.gid.as_raw()))
                }
            }),
        };
        let gid = match group {
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => Group::from_name(g)
                    .ok()
                    .flatten()
                    .map(|e| e.gid.as_raw())
                    .ok_or_else(|| format!("No such group: '{g}'"))?,
            },
            // Gunicorn's default group is the master's egid, not the user's primary group.
            None => getegid().as_raw(),
        };
        let (uid, user_name) = match user_entry {
            Some((uid, name, _)) => (uid, name),
            None => (geteuid().as_raw(), None),
        };
        Ok(Some(Identity {
            uid,
            gid,
            user_name,
            initgroups,
        }))
    }
}

/// Drops this process's privileges to `identity`: supplementary groups, then gid, then uid
/// (after uid nothing else could be changed).
///
/// # Errors
/// A system call refused (e.g. not running as root).
pub fn drop_privileges(identity: &Identity) -> Result<(), String> {
    use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
    let gid = Gid::from_raw(identity.gid);
    if nix::unistd::getuid().is_root() {
        match (&identity.user_name, identity.initgroups) {
            (Some(name), true) => {
                let cname = std::ffi::CString::new(name.as_str()).map_err(|e| e.to_string())?;
                nix::unistd::initgroups(&cname, gid)
                    .map_err(|e| format!("initgroups({name}): {e}"))?;
            }
            // Without this the worker would keep root's supplementary groups.
            _ => setgroups(&[gid]).map_err(|e| format!("setgroups: {e}"))?,
        }
    }
    if nix::unistd::getgid() != gid {
        setgid(gid).map_err(|e| format!("setgid({}): {e}", identity.gid))?;
    }
    if nix::unistd::getuid().as_raw() != identity.uid {
        setuid(Uid::from_raw(identity.uid))
            .map_err(|e| format!("setuid({}): {e}", identity.uid))?;
    }
    Ok(())
}

/// Gives `paths` (log files the workers reopen on USR1) to the workers' user. Best effort:
/// a file that cannot be given stays as it is, and reopening it is what will complain.
pub fn give_files<'a>(identity: &Identity, paths: impl Iterator<Item = &'a str>) {
    for path in paths {
        let _ = nix::unistd::chown(
            path,
            Some(nix::unistd::Uid::from_raw(identity.uid)),
            Some(nix::unistd::Gid::from_raw(identity.gid)),
        );
    }
}
