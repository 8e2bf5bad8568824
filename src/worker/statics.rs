//! Static routes (`--static-path-mount` under `--static-path-route`, rgunicorn's own
//! settings taken from Granian): the mounts' directories, opened at boot, and what a
//! request under one gets ([`Reply`]), by the rules of `http::files`. The loop sends it
//! (`static_route`).
//!
//! Files are opened with `openat2(RESOLVE_BENEATH)` from the mount's directory, so neither
//! `..` nor a symlink can lead out of it (symlinks that stay inside are followed).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, SFlag};

use crate::config::Config;
use crate::http::files::{self, Encoding, Ranged, Validators};
use crate::http::RequestHead;

/// The static routes of a worker, their directories open.
pub struct Statics {
    mounts: Vec<Mount>,
    index: Option<String>,
    expires: u64,
}

struct Mount {
    route: String,
    dir: OwnedFd,
}

/// An opened regular file and what it is.
struct Opened {
    file: OwnedFd,
    len: u64,
    modified: u64,
}

/// What a request under a static route gets.
pub enum Reply {
    /// A file, whole or one range, or its head (304 without a body).
    File {
        status: &'static str,
        headers: Vec<(&'static str, String)>,
        body: Option<(OwnedFd, i64, u64)>,
    },
    /// A short answer of our own (301, 404, 405, 416).
    Short {
        status: &'static str,
        headers: Vec<(&'static str, String)>,
        body: &'static str,
    },
    /// Not a path we serve (400): refused as a malformed request is.
    Refused,
}

impl Statics {
    /// Opens each mount's directory; None without mounts.
    ///
    /// # Errors
    /// A directory cannot be opened, as one line.
    pub fn open(config: &Config) -> Result<Option<Statics>, String> {
        if config.statics.is_empty() {
            return Ok(None);
        }
        let mut mounts = Vec::with_capacity(config.statics.len());
        for m in &config.statics {
            let dir = nix::fcntl::open(
                m.dir.as_path(),
                OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| {
                format!(
                    "Can't serve static files from {} (--static-path-mount): {}",
                    m.dir.display(),
                    e.desc()
                )
            })?;
            mounts.push(Mount {
                route: m.route.clone(),
                dir,
            });
        }
        // The longest route first: /static/admin wins over /static.
        mounts.sort_by_key(|m| std::cmp::Reverse(m.route.len()));
        Ok(Some(Statics {
            mounts,
            index: config.static_index.clone(),
            expires: config.static_expires,
        }))
    }

    /// The mount a request path (still percent-encoded) falls under, and the rest of it.
    fn route<'p>(&self, path: &'p str) -> Option<(&Mount, &'p str)> {
        self.mounts.iter().find_map(|m| {
            if m.route == "/" {
                return Some((m, path));
            }
            let rest = path.strip_prefix(m.route.as_str())?;
            (rest.is_empty() || rest.starts_with('/')).then_some((m, rest))
        })
    }

    /// Whether `path` is under a static route.
    pub fn serves(&self, path: &str) -> bool {
        self.route(path).is_some()
    }

    /// What `head` gets.
    pub fn reply(&self, head: &RequestHead) -> Reply {
        let Some((mount, rest)) = self.route(&head.path) else {
            return not_found();
        };
        let method = &*head.method;
        if method != "GET" && method != "HEAD" {
            return Reply::Short {
                status: "405 Method Not Allowed",
                headers: vec![("Allow", "GET, HEAD".to_string())],
                body: "Method Not Allowed\n",
            };
        }
        let Ok(mut relative) = files::relative_path(rest) else {
            return Reply::Refused;
        };
        let Some(mut opened) = open_beneath(&mount.dir, &relative) else {
            return not_found();
        };
        if opened.is_none() {
            // A directory: its index file, at a path ending in `/` (so that the page's
            // relative links resolve inside it).
            let Some(index) = &self.index else {
                return not_found();
            };
            if !head.path.ends_with('/') {
                let mut location = format!("{}/", head.path);
                if !head.query.is_empty() {
                    location.push('?');
                    location.push_str(&head.query);
                }
                return Reply::Short {
                    status: "301 Moved Permanently",
                    headers: vec![("Location", location)],
                    body: "",
                };
            }
            if !relative.is_empty() {
                relative.push(b'/');
            }
            relative.extend_from_slice(index.as_bytes());
            opened = match open_beneath(&mount.dir, &relative) {
                Some(Some(file)) => Some(file),
                _ => return not_found(),
            };
        }
        let Some(plain) = opened else {
            return not_found();
        };
        self.file_reply(head, mount, &relative, plain)
    }

    /// The reply for a regular file (or its precompressed sibling).
    fn file_reply(
        &self,
        head: &RequestHead,
        mount: &Mount,
        relative: &[u8],
        plain: Opened,
    ) -> Reply {
        let mut headers: Vec<(&'static str, String)> = Vec::with_capacity(9);
        headers.push(("Content-Type", files::content_type(relative).to_string()));
        let accept = head.header("accept-encoding").unwrap_or_default();
        let mut chosen = (plain, None);
        for encoding in [Encoding::Brotli, Encoding::Gzip] {
            if !files::accepts(accept, encoding.token()) {
                continue;
            }
            let mut sibling = relative.to_vec();
            sibling.extend_from_slice(encoding.suffix().as_bytes());
            if let Some(Some(compressed)) = open_beneath(&mount.dir, &sibling) {
                chosen = (compressed, Some(encoding));
                break;
            }
        }
        let (file, encoding) = chosen;
        if let Some(encoding) = encoding {
            headers.push(("Content-Encoding", encoding.token().to_string()));
            headers.push(("Vary", "Accept-Encoding".to_string()));
        }
        let validators = Validators::new(file.modified, file.len, encoding);
        let last_modified = crate::http::date::imf_fixdate(file.modified);
        headers.push(("ETag", validators.etag.clone()));
        headers.push((
            "Last-Modified",
            String::from_utf8_lossy(&last_modified).into_owned(),
        ));
        if let Some(cache) = files::cache_control(self.expires, relative) {
            headers.push(("Cache-Control", cache));
        }
        if validators.not_modified(head) {
            return Reply::File {
                status: "304 Not Modified",
                headers,
                body: None,
            };
        }
        headers.push(("Accept-Ranges", "bytes".to_string()));
        let (status, start, count) = match files::byte_range(head, file.len, &validators) {
            Ranged::Whole => ("200 OK", 0, file.len),
            Ranged::Part { start, end } => {
                headers.push(("Content-Range", format!("bytes {start}-{end}/{}", file.len)));
                ("206 Partial Content", start, end - start + 1)
            }
            Ranged::Unsatisfiable => {
                return Reply::Short {
                    status: "416 Range Not Satisfiable",
                    headers: vec![("Content-Range", format!("bytes */{}", file.len))],
                    body: "",
                };
            }
        };
        headers.push(("Content-Length", count.to_string()));
        let Ok(offset) = i64::try_from(start) else {
            return not_found();
        };
        Reply::File {
            status,
            headers,
            body: Some((file.file, offset, count)),
        }
    }
}

fn not_found() -> Reply {
    Reply::Short {
        status: "404 Not Found",
        headers: Vec::new(),
        body: "Not Found\n",
    }
}

/// Opens `relative` under `dir` without leaving it: Some(Some) for a regular file,
/// Some(None) for a directory, None for anything else or a failure (missing, a symlink
/// out of the mount, no permission).
fn open_beneath(dir: &OwnedFd, relative: &[u8]) -> Option<Option<Opened>> {
    let path = if relative.is_empty() {
        Path::new(".")
    } else {
        Path::new(std::ffi::OsStr::from_bytes(relative))
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let file = nix::fcntl::openat2(dir.as_fd(), path, how).ok()?;
    let stat = fstat(&file).ok()?;
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFDIR {
        return Some(None);
    }
    if kind != SFlag::S_IFREG {
        return None;
    }
    Some(Some(Opened {
        file,
        len: u64::try_from(stat.st_size).unwrap_or(0),
        modified: u64::try_from(stat.st_mtime).unwrap_or(0),
    }))
}
