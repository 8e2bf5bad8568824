//! What the `pre_request` and `post_request` hooks receive: the `req` object (Gunicorn's
//! Request, duck-typed), filled in with the body's trailers once it was read to its end,
//! and the `resp` object (Gunicorn's Response, duck-typed). Built only when such a hook
//! is set: a request without hooks never comes here.

use std::sync::atomic::Ordering;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

use super::environ::{self, ConnEnv};
use super::response::Sent;
use crate::http::request::RequestHead;
use crate::python::hooks::{call_worker_hook, count_request, is_set, namespace};

/// Before the app: the `req` object (when `pre_request` or `post_request` is set, else
/// None), `pre_request(worker, req)`, and `worker.nr`, which Gunicorn counts after
/// pre_request. For a worker whose hooks receive the worker object.
pub fn pre_request<'py>(
    py: Python<'py>,
    head: &RequestHead,
    conn: &ConnEnv,
    environ: &Bound<'py, PyDict>,
    body: &Bound<'py, PyAny>,
    request_hooks: bool,
) -> Option<Bound<'py, PyAny>> {
    let req = if request_hooks {
        let number = conn.requests.fetch_add(1, Ordering::Relaxed) + 1;
        request_object(py, head, conn, environ, body, number).ok()
    } else {
        None
    };
    if let Some(req) = &req {
        call_worker_hook(py, "pre_request", std::slice::from_ref(req));
    }
    count_request();
    req
}

/// After the response and the access log: `post_request(worker, req, environ, resp)`, if
/// set.
pub fn post_request<'py>(
    py: Python<'py>,
    req: &Bound<'py, PyAny>,
    environ: &Bound<'py, PyDict>,
    sent: &Sent<'_>,
) {
    if !is_set("post_request") {
        return;
    }
    match response_object(py, sent) {
        Ok(resp) => call_worker_hook(
            py,
            "post_request",
            &[req.clone(), environ.clone().into_any(), resp],
        ),
        Err(e) => crate::python::log_exception(py, "Exception in post_request hook", &e),
    }
}

/// The `req` object hooks receive (Gunicorn's Request, duck-typed).
fn request_object<'py>(
    py: Python<'py>,
    head: &RequestHead,
    conn: &ConnEnv,
    environ: &Bound<'py, PyDict>,
    body: &Bound<'py, PyAny>,
    number: u64,
) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::IntoPyObject;
    let headers = PyList::empty(py);
    for h in &head.headers {
        let value = environ::latin1(py, &h.value)?;
        headers.append((h.name.to_ascii_uppercase(), value))?;
    }
    let scheme = environ
        .get_item(intern!(py, "wsgi.url_scheme"))?
        .unwrap_or_else(|| intern!(py, "http").clone().into_any());
    let port: Bound<'py, PyAny> = match conn.remote_port {
        Some(p) => PyString::new(py, &p.to_string()).into_any(),
        None => py.None().into_bound(py),
    };
    let peer = PyTuple::new(py, [PyString::new(py, &conn.remote_ip).into_any(), port])?;
    namespace(
        py,
        &[
            ("method", head.method.clone().into_pyobject(py)?.into_any()),
            ("uri", head.target.clone().into_pyobject(py)?.into_any()),
            ("path", head.path.clone().into_pyobject(py)?.into_any()),
            ("query", head.query.clone().into_pyobject(py)?.into_any()),
            (
                "fragment",
                head.fragment.clone().into_pyobject(py)?.into_any(),
            ),
            (
                "version",
                PyTuple::new(py, [head.version.0, head.version.1])?.into_any(),
            ),
            ("headers", headers.into_any()),
            // Filled in once the body was read to its end (`set_trailers`).
            ("trailers", PyList::empty(py).into_any()),
            ("body", body.clone()),
            ("scheme", scheme),
            ("peer_addr", peer.clone().into_any()),
            ("remote_addr", peer.into_any()),
            ("req_number", number.into_pyobject(py)?.into_any()),
            ("proxy_protocol_info", proxy_protocol_info(py, conn)?),
        ],
    )
}

/// `req.proxy_protocol_info`: what the connection's PROXY header said, as Gunicorn's dict
/// (ports as numbers; no addresses for `UNKNOWN`, `LOCAL` and `UNSPEC`), or None without
/// one. Every request of the connection gets it.
fn proxy_protocol_info<'py>(py: Python<'py>, conn: &ConnEnv) -> PyResult<Bound<'py, PyAny>> {
    let Some((protocol, proxy_addr, proxy_port)) = &conn.proxy else {
        return Ok(py.None().into_bound(py));
    };
    let info = PyDict::new(py);
    info.set_item("proxy_protocol", protocol)?;
    let none = py.None().into_bound(py);
    if matches!(protocol.as_str(), "TCP4" | "TCP6") {
        // The header's source became the connection's remote address.
        info.set_item("client_addr", &conn.remote_ip)?;
        info.set_item("client_port", conn.remote_port)?;
        info.set_item("proxy_addr", proxy_addr)?;
        info.set_item("proxy_port", proxy_port.parse::<u16>().ok())?;
    } else {
        for key in ["client_addr", "client_port", "proxy_addr", "proxy_port"] {
            info.set_item(key, &none)?;
        }
    }
    Ok(info.into_any())
}

/// Sets `req.trailers` (Gunicorn: `(NAME, value)` pairs once the chunked body was read to
/// its end); a name with an underscore is dropped unless `header_map` is "dangerous".
pub fn set_trailers(
    py: Python<'_>,
    req: &Bound<'_, PyAny>,
    trailers: &[crate::http::body::Trailer],
    keep_underscored: bool,
) -> PyResult<()> {
    let list = PyList::empty(py);
    for (name, value) in trailers {
        if !keep_underscored && name.contains(&b'_') {
            continue;
        }
        let name = String::from_utf8_lossy(name);
        list.append((name, environ::latin1(py, value)?))?;
    }
    req.setattr(intern!(py, "trailers"), list)
}

/// The `resp` object `post_request` receives (Gunicorn's Response, duck-typed): `sent` is
/// the body bytes that went out (a body cut to its Content-Length counts what was sent),
/// `response_length` the Content-Length the head announced (None without one).
fn response_object<'py>(py: Python<'py>, sent: &Sent<'_>) -> PyResult<Bound<'py, PyAny>> {
    use pyo3::IntoPyObject;
    let list = PyList::empty(py);
    for (n, v) in &sent.headers {
        list.append((n, v))?;
    }
    namespace(
        py,
        &[
            ("status", sent.status.as_ref().into_pyobject(py)?.into_any()),
            ("status_code", sent.code.into_pyobject(py)?.into_any()),
            ("headers", list.into_any()),
            ("sent", sent.body_bytes.into_pyobject(py)?.into_any()),
            (
                "response_length",
                sent.announced_length.into_pyobject(py)?.into_any(),
            ),
            (
                "headers_sent",
                pyo3::types::PyBool::new(py, sent.code != 0)
                    .to_owned()
                    .into_any(),
            ),
        ],
    )
}
