//! The user and group workers run as (`-u`, `-g`, `--initgroups`; resolved from names by
//! `config`): the privilege drop itself, and handing the master's files to that user.

use crate::config::Identity;

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
