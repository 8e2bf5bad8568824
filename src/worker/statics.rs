//! Static routes (`--static-path-mount` under `--static-path-route`, rgunicorn's own
//! settings taken from Granian): the mounts' directories, opened at boot, and what a
//! request under one gets ([`Reply`]), by the rules of `http::files`. The loop sends it
//! (`static_route`).
//!
//! Files are opened with `openat2(RESOLVE_BENEATH)` from the mount's directory, so neither
//! `..` nor a symlink can lead out of it (symlinks that stay inside are followed).

use std::borrow::Cow;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
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

/// Response headers: names and (mostly fixed) values.
pub type Headers = Vec<(&'static str, Cow<'static, str>)>;

/// What a path under a mount turned out to be.
enum Lookup {
    File(Opened),
    Directory,
    /// Missing, a symlink out of the mount, not readable, not a regular file: 404.
    Missing,
    /// Out of descriptors or memory (EMFILE, ENFILE, ENOMEM): a 503 to retry, not a 404
    /// that a client or cache would keep.
    Busy,
}

/// What a request under a static route gets.
pub enum Reply {
    /// A file, whole or one range, or its head (304 without a body).
    File {
        status: &'static str,
        headers: Headers,
        body: Option<(OwnedFd, i64, u64)>,
    },
    /// A short answer of our own (301, 404, 405, 416, 503).
    Short {
        status: &'static str,
        headers: Headers,
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
                headers: vec![("Allow", Cow::Borrowed("GET, HEAD"))],
                body: "Method Not Allowed\n",
            };
        }
        let Ok(mut relative) = files::relative_path(rest) else {
            return Reply::Refused;
        };
        let plain = match open_beneath(&mount.dir, &relative) {
            Lookup::File(file) => file,
            Lookup::Directory => match self.index_of(head, mount, &mut relative) {
                Ok(file) => file,
                Err(reply) => return reply,
            },
            Lookup::Missing => return not_found(),
            Lookup::Busy => return busy(),
        };
        self.file_reply(head, mount, &relative, plain)
    }

    /// A directory's index file, at a path ending in `/` (so that the page's relative
    /// links resolve inside it); `relative` becomes the index file's path.
    fn index_of(
        &self,
        head: &RequestHead,
        mount: &Mount,
        relative: &mut Vec<u8>,
    ) -> Result<Opened, Reply> {
        let Some(index) = &self.index else {
            return Err(not_found());
        };
        if !head.path.ends_with('/') {
            let mut location = format!("{}/", head.path);
            if !head.query.is_empty() {
                location.push('?');
                location.push_str(&head.query);
            }
            return Err(Reply::Short {
                status: "301 Moved Permanently",
                headers: vec![("Location", Cow::Owned(location))],
                body: "",
            });
        }
        if !relative.is_empty() {
            relative.push(b'/');
        }
        relative.extend_from_slice(index.as_bytes());
        match open_beneath(&mount.dir, relative) {
            Lookup::File(file) => Ok(file),
            Lookup::Busy => Err(busy()),
            Lookup::Directory | Lookup::Missing => Err(not_found()),
        }
    }

    /// The reply for a regular file (or its precompressed sibling).
    fn file_reply(
        &self,
        head: &RequestHead,
        mount: &Mount,
        relative: &[u8],
        plain: Opened,
    ) -> Reply {
        let mut headers: Headers = Vec::with_capacity(9);
        headers.push(("Content-Type", Cow::Borrowed(files::content_type(relative))));
        let accept = head.header("accept-encoding").unwrap_or_default();
        let mut chosen = (plain, None);
        for encoding in [Encoding::Brotli, Encoding::Gzip] {
            if !files::accepts(accept, encoding.token()) {
                continue;
            }
            let mut sibling = relative.to_vec();
            sibling.extend_from_slice(encoding.suffix().as_bytes());
            // A sibling that cannot be opened (missing, out of descriptors) is skipped.
            if let Lookup::File(compressed) = open_beneath(&mount.dir, &sibling) {
                chosen = (compressed, Some(encoding));
                break;
            }
        }
        let (file, encoding) = chosen;
        if let Some(encoding) = encoding {
            headers.push(("Content-Encoding", Cow::Borrowed(encoding.token())));
            headers.push(("Vary", Cow::Borrowed("Accept-Encoding")));
        }
        let validators = Validators::new(file.modified, file.len, encoding);
        let last_modified = crate::http::date::imf_fixdate(file.modified);
        headers.push(("ETag", Cow::Owned(validators.etag.clone())));
        let last_modified = String::from_utf8_lossy(&last_modified).into_owned();
        headers.push(("Last-Modified", Cow::Owned(last_modified)));
        if let Some(cache) = files::cache_control(self.expires, relative) {
            headers.push(("Cache-Control", Cow::Owned(cache)));
        }
        if validators.not_modified(head) {
            return Reply::File {
                status: "304 Not Modified",
                headers,
                body: None,
            };
        }
        headers.push(("Accept-Ranges", Cow::Borrowed("bytes")));
        let (status, start, count) = match files::byte_range(head, file.len, &validators) {
            Ranged::Whole => ("200 OK", 0, file.len),
            Ranged::Part { start, end } => {
                let range = format!("bytes {start}-{end}/{}", file.len);
                headers.push(("Content-Range", Cow::Owned(range)));
                ("206 Partial Content", start, end - start + 1)
            }
            Ranged::Unsatisfiable => {
                return Reply::Short {
                    status: "416 Range Not Satisfiable",
                    headers: vec![("Content-Range", Cow::Owned(format!("bytes */{}", file.len)))],
                    body: "",
                };
            }
        };
        headers.push(("Content-Length", Cow::Owned(count.to_string())));
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

fn busy() -> Reply {
    Reply::Short {
        status: "503 Service Unavailable",
        headers: vec![("Retry-After", Cow::Borrowed("1"))],
        body: "Service Unavailable\n",
    }
}

/// Opens `relative` under `dir` without leaving it.
fn open_beneath(dir: &OwnedFd, relative: &[u8]) -> Lookup {
    let path = if relative.is_empty() {
        Path::new(".")
    } else {
        Path::new(std::ffi::OsStr::from_bytes(relative))
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let file = match nix::fcntl::openat2(dir.as_fd(), path, how) {
        Ok(file) => file,
        Err(Errno::EMFILE | Errno::ENFILE | Errno::ENOMEM) => return Lookup::Busy,
        Err(_) => return Lookup::Missing,
    };
    let Ok(stat) = fstat(&file) else {
        return Lookup::Missing;
    };
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFDIR {
        return Lookup::Directory;
    }
    if kind != SFlag::S_IFREG {
        return Lookup::Missing;
    }
    Lookup::File(Opened {
        file,
        len: u64::try_from(stat.st_size).unwrap_or(0),
        modified: u64::try_from(stat.st_mtime).unwrap_or(0),
    })
}
