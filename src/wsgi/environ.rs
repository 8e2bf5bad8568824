//! The WSGI `environ` (PEP 3333 plus Gunicorn's extra keys), built per request by copying a
//! template dict (the worker's constant keys plus the connection's own, see
//! [`ConnEnv::template`]) and setting the rest with interned key strings.
//!
//! Proxy policy lives here too: scheme headers and `SCRIPT_NAME` are believed only from
//! trusted peers (`forwarded_allow_ips`; unix-socket peers are always trusted), and header
//! names with an underscore are dropped (they could spoof `HTTP_X_FOO` from `X-Foo`).

use std::borrow::Cow;
use std::os::fd::RawFd;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};

use crate::config::HeaderMap;
use crate::http::request::RequestHead;

/// Slots of the header-name → environ-key cache (a power of two).
const HEADER_KEY_SLOTS: usize = 256;

/// Per-connection values, converted to Python once per connection, not per request.
///
/// Made by the event loop without Python (the threaded worker's loop does not hold the
/// GIL): its Python objects are made by the thread that runs the connection's first
/// request (`template`, `socket`).
pub struct ConnEnv {
    /// REMOTE_ADDR, and the access log's `%(h)s`.
    pub remote_ip: String,
    /// REMOTE_PORT (TCP only).
    pub remote_port: Option<u16>,
    /// TCP: the listener's address and port; unix: None (taken from Host per request).
    pub server: Option<std::sync::Arc<(String, String)>>,
    /// Unix socket path (SERVER_NAME when there is no Host header).
    pub unix_path: String,
    /// The connection's descriptor, owned by the event loop.
    pub fd: RawFd,
    /// `gunicorn.socket`, made at the connection's first request. It wraps `fd` itself
    /// (no `dup`: one descriptor per connection) and is detached when the connection ends.
    /// (A `OnceLock`: with threads, the request's thread makes it, the loop releases it.)
    pub socket: std::sync::OnceLock<Py<PyAny>>,
    /// The worker's template plus this connection's own keys (REMOTE_ADDR, REMOTE_PORT,
    /// `gunicorn.socket`, SERVER_NAME and SERVER_PORT on TCP, PROXY_*), made at its first
    /// request: the requests of a keep-alive connection copy it instead of setting them.
    pub template: std::sync::OnceLock<Py<PyDict>>,
    /// The peer may set scheme headers and forwarder headers.
    pub trusted: bool,
    /// The connection is TLS: `wsgi.url_scheme` is https unless a trusted proxy says otherwise.
    pub https: bool,
    /// From a PROXY header: protocol, and the proxy's own address and port.
    pub proxy: Option<(String, String, String)>,
    /// Requests begun on this connection: the hooks' `req.req_number`, which in Gunicorn
    /// is the request's number on its connection (1 for the first).
    pub requests: std::sync::atomic::AtomicU64,
}

impl ConnEnv {
    /// A plain TCP connection from 127.0.0.1 on descriptor `fd`, for unit tests.
    #[cfg(test)]
    pub fn for_tests(fd: RawFd) -> ConnEnv {
        ConnEnv {
            remote_ip: "127.0.0.1".to_string(),
            remote_port: Some(40000),
            server: None,
            unix_path: String::new(),
            fd,
            socket: std::sync::OnceLock::new(),
            template: std::sync::OnceLock::new(),
            trusted: false,
            https: false,
            proxy: None,
            requests: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The connection is over: `gunicorn.socket` lets go of the descriptor, so an app that
    /// kept the object can no longer reach whatever reuses that number (it raises instead).
    pub fn release(&self, py: Python<'_>) {
        if let Some(socket) = self.socket.get() {
            if let Err(e) = socket.bind(py).call_method0(intern!(py, "detach")) {
                tracing::debug!("gunicorn.socket detach failed: {e}");
            }
        }
    }
}

/// `environ['gunicorn.socket']`'s class: a `socket.socket` over the server's descriptor.
/// Closing it only lets go of the descriptor, which stays the server's to close.
const CONNECTION_SOCKET: &std::ffi::CStr = c"
import socket
class ConnectionSocket(socket.socket):
    __slots__ = ()
    def close(self):
        self.detach()
";

/// Why no environ could be built for a request.
pub enum EnvironError {
    /// The client's fault: 400 with this message.
    BadRequest(String),
    /// A deployment problem (SCRIPT_NAME mismatch): 500 with this message.
    Config(String),
}

/// Builds environ dicts for one worker.
pub struct EnvironBuilder {
    template: Py<PyDict>,
    /// [`CONNECTION_SOCKET`], defined (and `socket` imported) when the worker boots.
    socket_class: Py<PyAny>,
    script_name: String,
    /// Direct-mapped: a name's slot holds the last name that hashed there and its key. A
    /// lookup costs one hash and one comparison however many names clients invent, and
    /// the cache's size is fixed; a miss converts and interns the name.
    header_keys: Vec<Option<(Box<str>, Py<PyString>)>>,
    /// `secure_scheme_headers`: header (upper case) -> the value that means HTTPS.
    secure_scheme_headers: Vec<(String, String)>,
    /// `forwarder_headers` (upper case; `*` = any).
    forwarder_headers: Vec<String>,
    header_map: HeaderMap,
    /// The last Host header seen and the SERVER_NAME and SERVER_PORT it gave (most requests
    /// of a worker carry the same one).
    last_host: Option<(String, &'static str, Py<PyString>, Py<PyString>)>,
}

/// Decodes bytes as latin-1 (PEP 3333's "native strings").
///
/// # Errors
/// Python's MemoryError.
pub fn latin1<'py>(py: Python<'py>, bytes: &[u8]) -> PyResult<Bound<'py, PyString>> {
    let len = pyo3::ffi::Py_ssize_t::try_from(bytes.len())
        .map_err(|_| pyo3::exceptions::PyOverflowError::new_err("header too long"))?;
    // SAFETY: the pointer and length describe `bytes`, which outlives the call; CPython
    // copies them into a new str (or returns NULL with an exception set).
    let text = unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            pyo3::ffi::PyUnicode_DecodeLatin1(bytes.as_ptr().cast(), len, std::ptr::null()),
        )?
    };
    Ok(text.cast_into::<PyString>()?)
}

/// Bytes as latin-1 text, borrowed when they are ASCII.
fn latin1_text(bytes: &[u8]) -> Cow<'_, str> {
    match crate::http::text::ascii_str(bytes) {
        Some(s) => Cow::Borrowed(s),
        None => Cow::Owned(bytes.iter().map(|&b| char::from(b)).collect()),
    }
}

/// Percent-decodes a path to bytes (invalid escapes are kept as they are); borrowed when
/// there is no escape.
fn percent_decode(path: &str) -> Cow<'_, [u8]> {
    let bytes = path.as_bytes();
    if !bytes.contains(&b'%') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn header_key(name: &str) -> String {
    let mut key = String::with_capacity(name.len() + 5);
    key.push_str("HTTP_");
    for c in name.chars() {
        key.push(if c == '-' {
            '_'
        } else {
            c.to_ascii_uppercase()
        });
    }
    key
}

impl EnvironBuilder {
    /// Prepares the constant part of every environ.
    ///
    /// # Errors
    /// A Python error while creating the template (a broken interpreter).
    pub fn new(py: Python<'_>, config: &crate::config::Config) -> PyResult<EnvironBuilder> {
        let multiprocess = config.workers > 1;
        let t = PyDict::new(py);
        t.set_item("wsgi.version", PyTuple::new(py, [1, 0])?)?;
        t.set_item("wsgi.url_scheme", "http")?;
        t.set_item("wsgi.errors", Bound::new(py, super::errors::ErrorStream)?)?;
        t.set_item("wsgi.multithread", PyBool::new(py, config.threaded))?;
        t.set_item("wsgi.multiprocess", PyBool::new(py, multiprocess))?;
        t.set_item("wsgi.run_once", PyBool::new(py, false))?;
        t.set_item(
            "wsgi.file_wrapper",
            py.get_type::<super::file_wrapper::FileWrapper>(),
        )?;
        t.set_item("wsgi.input_terminated", PyBool::new(py, true))?;
        t.set_item("SERVER_SOFTWARE", format!("rgunicorn/{}", crate::VERSION))?;
        let script_name = std::env::var("SCRIPT_NAME").unwrap_or_default();
        t.set_item("SCRIPT_NAME", &script_name)?;
        // Every request sets these: in the template already, a copy has its final size and
        // setting them replaces a value instead of growing the dict.
        for key in [
            "REQUEST_METHOD",
            "RAW_URI",
            "QUERY_STRING",
            "SERVER_PROTOCOL",
            "REMOTE_ADDR",
            "gunicorn.socket",
            "SERVER_NAME",
            "SERVER_PORT",
            "PATH_INFO",
            "wsgi.input",
            "wsgi.early_hints",
        ] {
            t.set_item(key, py.None())?;
        }
        // Room for the request's own keys (REMOTE_PORT, one per header): one more key grows
        // the table from 32 to 64 slots and its deletion keeps that size. A copy clones the
        // table as it is (CPython copies a dict with few deleted entries by memcpy), so
        // requests with up to about 20 headers never resize their environ.
        t.set_item("rgunicorn.room", py.None())?;
        t.del_item("rgunicorn.room")?;
        let namespace = PyDict::new(py);
        py.run(CONNECTION_SOCKET, Some(&namespace), None)?;
        let socket_class = namespace
            .get_item("ConnectionSocket")?
            .ok_or_else(|| pyo3::exceptions::PyRuntimeError::new_err("no ConnectionSocket"))?;
        Ok(EnvironBuilder {
            template: t.unbind(),
            socket_class: socket_class.unbind(),
            script_name,
            header_keys: (0..HEADER_KEY_SLOTS).map(|_| None).collect(),
            secure_scheme_headers: config.secure_scheme_headers.clone(),
            forwarder_headers: config.forwarder_headers.clone(),
            header_map: config.header_map,
            last_host: None,
        })
    }

    fn key_for<'py>(&mut self, py: Python<'py>, name: &str) -> Bound<'py, PyString> {
        // FNV-1a: a few instructions per byte, and collisions only cost a miss.
        let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
            (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
        });
        let slot = &mut self.header_keys[hash as usize % HEADER_KEY_SLOTS];
        if let Some((cached, key)) = slot {
            if **cached == *name {
                return key.bind(py).clone();
            }
        }
        let key = PyString::intern(py, &header_key(name));
        *slot = Some((name.into(), key.clone().unbind()));
        key
    }

    /// SERVER_NAME and SERVER_PORT for a Host header, from the last one when it is the same.
    fn server_name_port<'py>(
        &mut self,
        py: Python<'py>,
        host: &str,
        scheme: &'static str,
    ) -> (Bound<'py, PyString>, Bound<'py, PyString>) {
        if let Some((last, last_scheme, name, port)) = &self.last_host {
            if last == host && *last_scheme == scheme {
                return (name.bind(py).clone(), port.bind(py).clone());
            }
        }
        let (name, port) = split_host(host, scheme);
        let (name, port) = (PyString::new(py, &name), PyString::new(py, &port));
        self.last_host = Some((
            host.to_string(),
            scheme,
            name.clone().unbind(),
            port.clone().unbind(),
        ));
        (name, port)
    }

    /// The worker's template with `conn`'s own keys set.
    fn connection_template<'py>(
        &self,
        py: Python<'py>,
        conn: &ConnEnv,
    ) -> PyResult<Bound<'py, PyDict>> {
        let t = self.template.bind(py).copy()?;
        t.set_item(intern!(py, "REMOTE_ADDR"), &conn.remote_ip)?;
        if let Some(port) = conn.remote_port {
            t.set_item(intern!(py, "REMOTE_PORT"), port.to_string())?;
        }
        let socket = match conn.socket.get() {
            Some(socket) => socket.bind(py).clone(),
            None => {
                let kwargs = PyDict::new(py);
                kwargs.set_item(intern!(py, "fileno"), conn.fd)?;
                let socket = self.socket_class.bind(py).call((), Some(&kwargs))?;
                let _ = conn.socket.set(socket.clone().unbind());
                socket
            }
        };
        t.set_item(intern!(py, "gunicorn.socket"), socket)?;
        if let Some(server) = &conn.server {
            let (name, port) = &**server;
            t.set_item(intern!(py, "SERVER_NAME"), name)?;
            t.set_item(intern!(py, "SERVER_PORT"), port)?;
        }
        if let Some((protocol, addr, port)) = &conn.proxy {
            t.set_item(intern!(py, "PROXY_PROTOCOL"), protocol)?;
            t.set_item(intern!(py, "PROXY_ADDR"), addr)?;
            t.set_item(intern!(py, "PROXY_PORT"), port)?;
        }
        Ok(t)
    }

    /// The environ for `head` on a connection described by `conn`.
    ///
    /// # Errors
    /// See [`EnvironError`]; a Python failure becomes `Config`.
    pub fn build<'py>(
        &mut self,
        py: Python<'py>,
        head: &RequestHead,
        conn: &ConnEnv,
    ) -> Result<Bound<'py, PyDict>, EnvironError> {
        self.try_build(py, head, conn).map_err(|e| match e {
            BuildError::Env(e) => e,
            BuildError::Py(e) => EnvironError::Config(e.to_string()),
        })
    }

    fn try_build<'py>(
        &mut self,
        py: Python<'py>,
        head: &RequestHead,
        conn: &ConnEnv,
    ) -> Result<Bound<'py, PyDict>, BuildError> {
        let env = match conn.template.get() {
            Some(template) => template.bind(py).copy()?,
            None => {
                let template = self.connection_template(py, conn)?;
                let env = template.copy()?;
                let _ = conn.template.set(template.unbind());
                env
            }
        };
        let method = match head.method.as_str() {
            "GET" => intern!(py, "GET").clone(),
            "POST" => intern!(py, "POST").clone(),
            "HEAD" => intern!(py, "HEAD").clone(),
            other => PyString::new(py, other),
        };
        env.set_item(intern!(py, "REQUEST_METHOD"), method)?;
        env.set_item(intern!(py, "RAW_URI"), head.target.as_str())?;
        env.set_item(intern!(py, "QUERY_STRING"), head.query.as_str())?;
        let protocol = match head.version {
            (1, 1) => intern!(py, "HTTP/1.1").clone(),
            (1, 0) => intern!(py, "HTTP/1.0").clone(),
            (major, minor) => PyString::new(py, &format!("HTTP/{major}.{minor}")),
        };
        env.set_item(intern!(py, "SERVER_PROTOCOL"), protocol)?;

        let mut script_name: Option<String> = None;
        let mut host: Option<Cow<'_, str>> = None;
        // The keys set from headers so far (interned, so one key is one object), to join a
        // repeated header without asking the dict about every header. Past its size, the
        // dict is asked.
        let mut set_keys = [std::ptr::null_mut(); 24];
        let mut set_count = 0;
        let mut scheme: Option<&'static str> = None;
        for header in &head.headers {
            let upper = || header.name.to_ascii_uppercase();
            if header.name.contains('_') {
                let upper = upper();
                let forwarded = conn.trusted
                    && self
                        .forwarder_headers
                        .iter()
                        .any(|f| *f == upper || f == "*");
                if !forwarded {
                    match self.header_map {
                        HeaderMap::Drop => continue,
                        HeaderMap::Refuse => {
                            return Err(BuildError::Env(EnvironError::BadRequest(format!(
                                "Invalid HTTP header name: '{}'",
                                header.name
                            ))))
                        }
                        HeaderMap::Dangerous => {}
                    }
                }
            }
            if conn.trusted {
                if let Some((_, secure)) = self
                    .secure_scheme_headers
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&header.name))
                {
                    let this = if header.value == secure.as_bytes() {
                        "https"
                    } else {
                        "http"
                    };
                    match scheme {
                        Some(s) if s != this => {
                            return Err(BuildError::Env(EnvironError::BadRequest(
                                "Contradictory scheme headers".to_string(),
                            )))
                        }
                        _ => scheme = Some(this),
                    }
                }
            }
            let name = header.name.as_str();
            if name.eq_ignore_ascii_case("content-type") {
                env.set_item(intern!(py, "CONTENT_TYPE"), latin1(py, &header.value)?)?;
                continue;
            } else if name.eq_ignore_ascii_case("content-length") {
                env.set_item(intern!(py, "CONTENT_LENGTH"), latin1(py, &header.value)?)?;
                continue;
            } else if name.eq_ignore_ascii_case("host") {
                host = Some(latin1_text(&header.value));
            } else if name.eq_ignore_ascii_case("script_name") {
                script_name = Some(latin1_text(&header.value).into_owned());
            }
            let key = self.key_for(py, &header.name);
            let value = latin1(py, &header.value)?;
            let seen =
                if set_count < set_keys.len() && !set_keys[..set_count].contains(&key.as_ptr()) {
                    set_keys[set_count] = key.as_ptr();
                    set_count += 1;
                    None
                } else {
                    env.get_item(&key)?
                };
            match seen {
                // Repeated headers are joined with a bare comma, in arrival order.
                Some(prev) => env.set_item(
                    &key,
                    format!("{},{}", prev.extract::<String>()?, value.to_str()?),
                )?,
                None => env.set_item(&key, value)?,
            }
        }
        // RFC 9112 §3.2.2: an absolute-form target's authority replaces Host.
        if let Some(authority) = &head.authority {
            if head.target.contains("://") {
                env.set_item(intern!(py, "HTTP_HOST"), authority.as_str())?;
                host = Some(Cow::Borrowed(authority));
            }
        }
        let scheme = scheme.unwrap_or(if conn.https { "https" } else { "http" });
        if scheme == "https" {
            env.set_item(intern!(py, "wsgi.url_scheme"), intern!(py, "https"))?;
        }

        match &conn.server {
            // In the connection's template.
            Some(_) => {}
            None => match &host {
                Some(h) => {
                    let (name, port) = self.server_name_port(py, h, scheme);
                    env.set_item(intern!(py, "SERVER_NAME"), name)?;
                    env.set_item(intern!(py, "SERVER_PORT"), port)?;
                }
                None => {
                    env.set_item(intern!(py, "SERVER_NAME"), &conn.unix_path)?;
                    env.set_item(intern!(py, "SERVER_PORT"), intern!(py, ""))?;
                }
            },
        }

        let script_name = match script_name {
            Some(s) => {
                env.set_item(intern!(py, "SCRIPT_NAME"), &s)?;
                s
            }
            None => self.script_name.clone(),
        };
        let mut path = head.path.as_str();
        if !script_name.is_empty() && path != "*" {
            match path.strip_prefix(script_name.as_str()) {
                Some(rest) if rest.is_empty() || rest.starts_with('/') => path = rest,
                _ => {
                    return Err(BuildError::Env(EnvironError::Config(format!(
                        "Request path '{path}' does not start with SCRIPT_NAME '{script_name}'"
                    ))))
                }
            }
        }
        env.set_item(intern!(py, "PATH_INFO"), latin1(py, &percent_decode(path))?)?;
        Ok(env)
    }
}

enum BuildError {
    Env(EnvironError),
    Py(PyErr),
}

impl From<PyErr> for BuildError {
    fn from(e: PyErr) -> BuildError {
        BuildError::Py(e)
    }
}

/// `host[:port]` → (name, port), the port defaulting by scheme (unix-socket listeners).
fn split_host(host: &str, scheme: &str) -> (String, String) {
    let default = if scheme == "https" { "443" } else { "80" };
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((v6, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').unwrap_or(default);
            return (format!("[{v6}]"), port.to_string());
        }
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (name.to_string(), port.to_string()),
        None => (host.to_string(), default.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_percent_decoded_to_bytes() {
        assert_eq!(percent_decode("/a%20b/%e9"), b"/a b/\xe9".to_vec());
        assert_eq!(percent_decode("/100%"), b"/100%".to_vec());
        assert_eq!(percent_decode("/%zz"), b"/%zz".to_vec());
        assert_eq!(percent_decode("/%4"), b"/%4".to_vec());
    }

    #[test]
    fn header_keys_follow_cgi() {
        assert_eq!(header_key("X-Forwarded-For"), "HTTP_X_FORWARDED_FOR");
    }

    #[test]
    fn host_splits_with_scheme_default_port() {
        assert_eq!(
            split_host("example.com", "http"),
            ("example.com".into(), "80".into())
        );
        assert_eq!(
            split_host("example.com:8080", "https"),
            ("example.com".into(), "8080".into())
        );
        assert_eq!(split_host("[::1]", "https"), ("[::1]".into(), "443".into()));
    }
}
