//! Settings: the table (`defs`), its row type (`setting`), the command line (`cli`) and the
//! environment (`env`), resolved by precedence into one typed [`Config`].
//!
//! Precedence, lowest first, as Gunicorn: defaults (some read the environment), then
//! `GUNICORN_CMD_ARGS`, then the command line.

pub mod cli;
pub mod defs;
pub mod env;
mod error;
pub mod file;
pub mod hooks;
pub mod parse;
pub mod setting;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use crate::http::request::{Leniency, Limits};
use crate::log::LogLevel;
use crate::sock::BindAddress;
use crate::unix::identity::Identity;
pub use error::ConfigError;
use setting::{Support, Value};

/// Peers whose proxy headers (`X-Forwarded-Proto`, `SCRIPT_NAME`) are believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedPeers {
    everyone: bool,
    networks: Vec<(IpAddr, u8)>,
}

impl TrustedPeers {
    /// Parses Gunicorn's `forwarded_allow_ips`: comma-separated IPs or CIDRs, or `*`.
    pub fn parse(text: &str) -> Result<TrustedPeers, String> {
        let mut peers = TrustedPeers::default();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "*" {
                peers.everyone = true;
                continue;
            }
            let (addr, bits) = match item.split_once('/') {
                Some((a, b)) => (a, Some(b)),
                None => (item, None),
            };
            let ip: IpAddr = addr
                .parse()
                .map_err(|_| format!("'{item}' is not a valid IP address or network"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                Some(b) => b
                    .parse::<u8>()
                    .ok()
                    .filter(|&b| b <= max)
                    .ok_or_else(|| format!("'{item}' is not a valid IP address or network"))?,
                None => max,
            };
            peers.networks.push((ip, bits));
        }
        Ok(peers)
    }

    /// Whether `peer` (None for a unix-socket peer, always trusted) may send proxy headers.
    pub fn trusts(&self, peer: Option<IpAddr>) -> bool {
        let Some(ip) = peer else { return true };
        if self.everyone {
            return true;
        }
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        self.networks.iter().any(|&(net, bits)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => prefix_eq(&n.octets(), &a.octets(), bits),
            (IpAddr::V6(n), IpAddr::V6(a)) => prefix_eq(&n.octets(), &a.octets(), bits),
            _ => false,
        })
    }
}

fn prefix_eq(net: &[u8], addr: &[u8], bits: u8) -> bool {
    let full = usize::from(bits / 8);
    if net[..full] != addr[..full] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        net[full] & mask == addr[full] & mask
    }
}

/// `--reload-engine`: how `--reload` notices changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadEngine {
    /// inotify where the kernel has it, else polling.
    Auto,
    /// Modification times compared once a second.
    Poll,
    /// inotify (Linux).
    Inotify,
}

/// What happens to a request header whose name has an underscore (`header_map`): it could
/// pose as another header once `-` and `_` both become `_` in the environ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeaderMap {
    /// Dropped silently (the default).
    Drop,
    /// The request is refused with 400.
    Refuse,
    /// Mapped into the environ like any header.
    Dangerous,
}

/// A directory served under a URL path by the worker itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticMount {
    /// The URL path, without a trailing `/` (`/` alone for the root).
    pub route: String,
    pub dir: PathBuf,
}

/// Every resolved setting, typed. Built once in the master and inherited by the workers.
#[derive(Clone, Debug)]
pub struct Config {
    pub app_module: Option<String>,
    pub binds: Vec<BindAddress>,
    pub backlog: i32,
    pub workers: usize,
    /// Threads per worker (`--threads`); more than 1, or `-k gthread`, makes `threaded`.
    pub threads: usize,
    /// The gthread worker: requests run in a pool of `threads` Python threads.
    pub threaded: bool,
    pub worker_connections: usize,
    pub max_requests: u64,
    pub max_requests_jitter: u64,
    /// Recycling on memory and age (rgunicorn's own, from Granian): the resident memory
    /// limit in bytes, how often the master samples it (ms) and how many samples in a row
    /// must be over; a worker's lifetime (ms) before jitter.
    pub workers_max_rss: Option<u64>,
    /// Static routes (`--static-path-route`/`--static-path-mount`, paired in order), the
    /// file served for a directory, and the `Cache-Control` max-age (0: none).
    pub statics: Vec<StaticMount>,
    pub static_index: Option<String>,
    pub static_expires: u64,
    /// `--metrics`: where the Prometheus exporter listens.
    pub metrics: Option<std::net::SocketAddr>,
    pub rss_sample_interval_ms: u64,
    pub rss_samples: u32,
    pub workers_lifetime_ms: Option<u64>,
    pub timeout: u64,
    pub graceful_timeout: u64,
    pub keepalive: u64,
    pub limits: Limits,
    pub check_config: bool,
    pub print_config: bool,
    pub preload_app: bool,
    pub capture_output: bool,
    pub reload: bool,
    /// Extra files or glob patterns watched by `--reload` (re-expanded at every check).
    pub reload_extra_files: Vec<String>,
    pub reload_engine: ReloadEngine,
    pub sendfile: bool,
    pub chdir: PathBuf,
    pub raw_env: Vec<(String, String)>,
    pub forwarded_allow_ips: TrustedPeers,
    /// Header (upper case) -> value meaning HTTPS, believed from trusted peers.
    pub secure_scheme_headers: Vec<(String, String)>,
    /// Underscore header names (upper case) a trusted peer may send (`*` = any).
    pub forwarder_headers: Vec<String>,
    pub header_map: HeaderMap,
    /// `--log-config` (INI), `--log-config-json`, and `logconfig_dict` from the file.
    pub logconfig: Option<String>,
    pub logconfig_json: Option<String>,
    pub logconfig_dict: Option<std::sync::Arc<pyo3::Py<pyo3::PyAny>>>,
    /// `--log-syslog`: (address, facility, prefix) when on.
    pub syslog: Option<(String, String, String)>,
    pub disable_redirect_access_to_syslog: bool,
    /// TLS for every listener when `--certfile` is given (with `--keyfile`).
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// `--proxy-protocol` and the peers allowed to send a PROXY header.
    pub proxy_protocol: crate::http::proxy::ProxyMode,
    pub proxy_allow_ips: TrustedPeers,
    /// `--statsd-host`, `--statsd-prefix`, `--dogstatsd-tags`.
    pub statsd: Option<(String, String, String)>,
    /// `--enable-backlog-metric`: the master sends `gunicorn.backlog` each loop pass.
    pub backlog_metric: bool,
    pub accesslog: Option<String>,
    pub access_log_format: String,
    pub errorlog: String,
    pub loglevel: LogLevel,
    pub proc_name: String,
    pub pythonpath: Vec<String>,
    pub pidfile: Option<PathBuf>,
    pub reuse_port: bool,
    pub daemon: bool,
    pub enable_stdio_inheritance: bool,
    /// Who the workers run as, when `-u`/`-g` were given.
    pub identity: Option<Identity>,
    /// Applied while creating unix sockets (Gunicorn: not process-wide).
    pub umask: u32,
    /// Settings given that rgunicorn recognises but ignores: logged once the log is open.
    pub warnings: Vec<String>,
    /// Server hooks from the configuration file (installed by the master).
    pub hooks: Vec<(&'static str, std::sync::Arc<pyo3::Py<pyo3::PyAny>>)>,
    /// The control socket's path as configured (relative to the working directory), unless
    /// `--no-control-socket`; and its file mode.
    pub control_socket: Option<PathBuf>,
    pub control_socket_mode: u32,
    /// The raw value of every setting, by name (for `--print-config` and hooks' `cfg`).
    pub values: BTreeMap<&'static str, Value>,
}

/// What the command line asked for.
pub enum Invocation {
    Run(Box<Config>),
    Version,
}

/// Resolves the settings from the command line `args` (without the program name), the
/// configuration file and the environment. Precedence, lowest first: defaults (some read
/// the environment), the configuration file, `GUNICORN_CMD_ARGS`, the command line.
///
/// # Errors
/// Gunicorn's usage, file and validation errors; see [`ConfigError`].
pub fn load(py: pyo3::Python<'_>, args: &[String]) -> Result<Invocation, ConfigError> {
    let cli = cli::parse(args)?;
    if cli.version {
        return Ok(Invocation::Version);
    }
    let env_args = match std::env::var("GUNICORN_CMD_ARGS") {
        Ok(text) if !text.trim().is_empty() => {
            let words = env::shell_split(py, &text).map_err(ConfigError::Invalid)?;
            cli::parse(&words)?.values
        }
        _ => BTreeMap::new(),
    };
    let config_path = match cli.values.get("config").or_else(|| env_args.get("config")) {
        Some(Value::Str(path)) => Some(path.clone()),
        _ => None,
    };
    let from_file = match file::locate(config_path.as_deref())? {
        Some(source) => file::read(py, &source, defs::SETTINGS)?,
        None => file::FileSettings::default(),
    };
    let file_values: BTreeMap<&'static str, Value> = from_file.values.into_iter().collect();
    let mut values = BTreeMap::new();
    let mut warnings = Vec::new();
    for setting in defs::SETTINGS {
        let given = cli
            .values
            .get(setting.name)
            .or_else(|| env_args.get(setting.name))
            .or_else(|| file_values.get(setting.name))
            .cloned()
            .or_else(|| {
                // Gunicorn sets it to the command line's APP_MODULE before the file is
                // read (so the file may still change it); `wsgi_app` does not set it.
                (setting.name == "default_proc_name")
                    .then(|| cli.app_module.clone().map(Value::Str))
                    .flatten()
            });
        let default = (setting.default)();
        if let Some(value) = given.as_ref().filter(|v| **v != default) {
            match setting.support {
                Support::Full => {}
                Support::Ignored(why) => warnings.push(format!(
                    "setting '{}' = {value} is ignored: {why}",
                    setting.name
                )),
                Support::Refused(why) => {
                    return Err(ConfigError::Invalid(format!(
                        "setting '{}' = {value} is not supported by rgunicorn: {why}",
                        setting.name
                    )))
                }
            }
        }
        values.insert(setting.name, given.unwrap_or(default));
    }
    // The positional APP_MODULE wins over `wsgi_app` from the file.
    let app_module = cli
        .app_module
        .clone()
        .or_else(|| match values.get("wsgi_app") {
            Some(Value::Str(s)) => Some(s.clone()),
            _ => None,
        });
    let mut config = Config::from_values(app_module, values)?;
    config.warnings = warnings;
    config.logconfig_dict = from_file
        .objects
        .into_iter()
        .find(|(name, _)| *name == "logconfig_dict")
        .map(|(_, obj)| std::sync::Arc::new(obj));
    config.hooks = from_file
        .hooks
        .into_iter()
        .map(|(name, hook)| (name, std::sync::Arc::new(hook)))
        .collect();
    Ok(Invocation::Run(Box::new(config)))
}

fn int(values: &BTreeMap<&'static str, Value>, name: &str) -> i64 {
    match values.get(name) {
        Some(Value::Int(n)) => *n,
        _ => 0,
    }
}

/// An integer setting that is set and above 0 (None: unset, `None` in a config file).
fn positive(values: &BTreeMap<&'static str, Value>, name: &str) -> Option<u64> {
    match values.get(name) {
        Some(Value::Int(n)) if *n > 0 => Some(n.unsigned_abs()),
        _ => None,
    }
}

fn text(values: &BTreeMap<&'static str, Value>, name: &str) -> Option<String> {
    match values.get(name) {
        Some(Value::Str(s)) => Some(s.clone()),
        _ => None,
    }
}

fn list(values: &BTreeMap<&'static str, Value>, name: &str) -> Vec<String> {
    match values.get(name) {
        Some(Value::List(items)) => items.clone(),
        Some(Value::Str(s)) => vec![s.clone()],
        _ => Vec::new(),
    }
}

/// The StatsD target as `Statsd::connect` takes it, from `statsd_host` as Gunicorn keeps it
/// (`('host', port)`, a unix socket's path, or a descriptor).
fn statsd_target(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::Address(host, port) if host.contains(':') => Some(format!("[{host}]:{port}")),
        Value::Address(host, port) => Some(format!("{host}:{port}")),
        Value::Str(path) => Some(format!("unix://{path}")),
        Value::Int(fd) => Some(format!("fd://{fd}")),
        _ => None,
    }
}

fn flag(values: &BTreeMap<&'static str, Value>, name: &str) -> bool {
    matches!(values.get(name), Some(Value::Bool(true)))
}

impl Config {
    /// Every setting sorted by name as `name = value`, names padded to the longest
    /// (Gunicorn's `--print-config`, and its debug-level `Current configuration:` dump).
    pub fn describe(&self) -> Vec<(String, String)> {
        let width = self.values.keys().map(|k| k.len()).max().unwrap_or(0);
        self.values
            .iter()
            .map(|(k, v)| (format!("{k:width$}"), v.to_python_str()))
            .collect()
    }

    /// How listeners are created.
    pub fn bind_options(&self) -> crate::sock::BindOptions {
        crate::sock::BindOptions {
            backlog: self.backlog,
            umask: self.umask,
            reuse_port: self.reuse_port,
            owner: self.identity.as_ref().map(|i| (i.uid, i.gid)),
        }
    }

    /// The typed view of resolved raw values (cross-setting checks happen here).
    ///
    /// # Errors
    /// A value that parsed but cannot be used (a malformed bind address, an `-e` without `=`).
    pub fn from_values(
        app_module: Option<String>,
        values: BTreeMap<&'static str, Value>,
    ) -> Result<Config, ConfigError> {
        let binds = list(&values, "bind")
            .iter()
            .map(|b| BindAddress::parse(b).map_err(ConfigError::Invalid))
            .collect::<Result<Vec<_>, _>>()?;
        let raw_env = list(&values, "raw_env")
            .iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
                _ => Err(ConfigError::Invalid(format!(
                    "Invalid value for raw_env: {kv}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Checked here too: the default comes from FORWARDED_ALLOW_IPS unchecked.
        let forwarded = list(&values, "forwarded_allow_ips").join(",");
        parse::parse_addr_list(&forwarded).map_err(ConfigError::Invalid)?;
        let forwarded_allow_ips = TrustedPeers::parse(&forwarded).map_err(ConfigError::Invalid)?;
        let pythonpath = text(&values, "pythonpath")
            .map(|p| {
                p.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        // Set at all (`--no-sendfile`, or any value in a file), it is off, as Gunicorn's
        // `cfg.sendfile` has it; otherwise the SENDFILE environment variable decides.
        let sendfile = if !matches!(values.get("sendfile"), None | Some(Value::None)) {
            false
        } else {
            match std::env::var("SENDFILE") {
                Ok(v) => matches!(v.to_ascii_lowercase().as_str(), "y" | "1" | "yes" | "true"),
                Err(_) => true,
            }
        };
        // `user` and `group` are ids (Gunicorn's defaults: the master's euid and egid);
        // workers switch to those that differ from the master's.
        let switch_to = |name: &str, current: u32| match values.get(name) {
            Some(Value::Int(id)) if *id != i64::from(current) => Some(id.to_string()),
            Some(Value::Str(name)) => Some(name.clone()),
            _ => None,
        };
        let mounts = list(&values, "static_path_mount");
        let routes = list(&values, "static_path_route");
        if mounts.len() > routes.len() {
            return Err(ConfigError::Invalid(format!(
                "--static-path-mount: {} directories but {} routes; give each its \
                 --static-path-route",
                mounts.len(),
                routes.len()
            )));
        }
        let statics = mounts
            .into_iter()
            .zip(routes)
            .map(|(dir, route)| StaticMount {
                route,
                dir: PathBuf::from(dir),
            })
            .collect();
        let proc_name = text(&values, "proc_name")
            .or_else(|| app_module.clone())
            .unwrap_or_else(|| "rgunicorn".to_string());
        Ok(Config {
            binds,
            backlog: i32::try_from(int(&values, "backlog")).unwrap_or(i32::MAX),
            workers: usize::try_from(int(&values, "workers")).unwrap_or(1).max(1),
            threads: usize::try_from(int(&values, "threads")).unwrap_or(1).max(1),
            threaded: int(&values, "threads") > 1
                || parse::is_gthread(&text(&values, "worker_class").unwrap_or_default()),
            worker_connections: usize::try_from(int(&values, "worker_connections"))
                .unwrap_or(1000)
                .max(1),
            max_requests: int(&values, "max_requests").unsigned_abs(),
            max_requests_jitter: int(&values, "max_requests_jitter").unsigned_abs(),
            workers_max_rss: positive(&values, "workers_max_rss").map(|mib| mib << 20),
            rss_sample_interval_ms: positive(&values, "rss_sample_interval").unwrap_or(30) * 1000,
            rss_samples: positive(&values, "rss_samples")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
            workers_lifetime_ms: positive(&values, "workers_lifetime").map(|s| s * 1000),
            statics,
            static_index: text(&values, "static_path_dir_to_file").filter(|f| !f.is_empty()),
            static_expires: int(&values, "static_path_expires").unsigned_abs(),
            metrics: flag(&values, "metrics")
                .then(|| {
                    let ip = text(&values, "metrics_address")?.parse().ok()?;
                    let port = u16::try_from(int(&values, "metrics_port")).ok()?;
                    Some(std::net::SocketAddr::new(ip, port))
                })
                .flatten(),
            timeout: int(&values, "timeout").unsigned_abs(),
            graceful_timeout: int(&values, "graceful_timeout").unsigned_abs(),
            keepalive: int(&values, "keepalive").unsigned_abs(),
            limits: Limits {
                lenient: Leniency {
                    obsolete_folding: flag(&values, "permit_obsolete_folding"),
                    strip_header_spaces: flag(&values, "strip_header_spaces"),
                    unconventional_method: flag(&values, "permit_unconventional_http_method"),
                    unconventional_version: flag(&values, "permit_unconventional_http_version"),
                    casefold_method: flag(&values, "casefold_http_method"),
                },
                ..Limits::from_settings(
                    int(&values, "limit_request_line"),
                    int(&values, "limit_request_fields"),
                    int(&values, "limit_request_field_size"),
                )
            },
            check_config: flag(&values, "check_config"),
            print_config: flag(&values, "print_config"),
            preload_app: flag(&values, "preload_app"),
            capture_output: flag(&values, "capture_output"),
            reload: flag(&values, "reload"),
            reload_extra_files: list(&values, "reload_extra_files"),
            reload_engine: match text(&values, "reload_engine").as_deref() {
                Some("poll") => ReloadEngine::Poll,
                Some("inotify") => ReloadEngine::Inotify,
                _ => ReloadEngine::Auto,
            },
            sendfile,
            chdir: PathBuf::from(text(&values, "chdir").unwrap_or_else(|| ".".to_string())),
            control_socket: text(&values, "control_socket")
                .filter(|p| !p.is_empty() && !flag(&values, "control_socket_disable"))
                .map(PathBuf::from),
            control_socket_mode: u32::try_from(int(&values, "control_socket_mode"))
                .unwrap_or(0o600),
            raw_env,
            forwarded_allow_ips,
            secure_scheme_headers: match values.get("secure_scheme_headers") {
                Some(Value::Dict(pairs)) => pairs
                    .iter()
                    .map(|(k, v)| (k.to_ascii_uppercase(), v.clone()))
                    .collect(),
                _ => Vec::new(),
            },
            forwarder_headers: list(&values, "forwarder_headers")
                .iter()
                .flat_map(|s| s.split(','))
                .map(|s| s.trim().to_ascii_uppercase())
                .filter(|s| !s.is_empty())
                .collect(),
            proxy_protocol: crate::http::proxy::ProxyMode::from_setting(
                &text(&values, "proxy_protocol").unwrap_or_default(),
            ),
            proxy_allow_ips: TrustedPeers::parse(&list(&values, "proxy_allow_ips").join(","))
                .map_err(ConfigError::Invalid)?,
            tls: match text(&values, "certfile") {
                Some(cert) => Some(
                    crate::tls::server_config(&crate::tls::TlsOptions {
                        certfile: &cert,
                        keyfile: text(&values, "keyfile").as_deref(),
                        cert_reqs: int(&values, "cert_reqs"),
                        ca_certs: text(&values, "ca_certs").as_deref(),
                        ciphers: text(&values, "ciphers").as_deref(),
                        suppress_ragged_eofs: flag(&values, "suppress_ragged_eofs"),
                    })
                    .map_err(ConfigError::Invalid)?,
                ),
                None => None,
            },
            syslog: flag(&values, "syslog").then(|| {
                (
                    text(&values, "syslog_addr")
                        .unwrap_or_else(|| "udp://localhost:514".to_string()),
                    text(&values, "syslog_facility").unwrap_or_else(|| "user".to_string()),
                    text(&values, "syslog_prefix")
                        .or_else(|| text(&values, "proc_name"))
                        .or_else(|| app_module.clone())
                        .unwrap_or_else(|| "rgunicorn".to_string()),
                )
            }),
            disable_redirect_access_to_syslog: flag(&values, "disable_redirect_access_to_syslog"),
            logconfig: text(&values, "logconfig"),
            logconfig_json: text(&values, "logconfig_json"),
            logconfig_dict: None,
            backlog_metric: flag(&values, "enable_backlog_metric"),
            statsd: statsd_target(values.get("statsd_host")).map(|host| {
                (
                    host,
                    text(&values, "statsd_prefix").unwrap_or_default(),
                    text(&values, "dogstatsd_tags").unwrap_or_default(),
                )
            }),
            header_map: match text(&values, "header_map").as_deref() {
                Some("refuse") => HeaderMap::Refuse,
                Some("dangerous") => HeaderMap::Dangerous,
                _ => HeaderMap::Drop,
            },
            accesslog: text(&values, "accesslog"),
            access_log_format: text(&values, "access_log_format").unwrap_or_default(),
            errorlog: text(&values, "errorlog").unwrap_or_else(|| "-".to_string()),
            loglevel: LogLevel::from_name(
                &text(&values, "loglevel")
                    .unwrap_or_default()
                    .to_ascii_lowercase(),
            ),
            proc_name,
            pythonpath,
            warnings: Vec::new(),
            hooks: Vec::new(),
            pidfile: text(&values, "pidfile").map(PathBuf::from),
            reuse_port: flag(&values, "reuse_port"),
            daemon: flag(&values, "daemon"),
            enable_stdio_inheritance: flag(&values, "enable_stdio_inheritance"),
            identity: Identity::resolve(
                switch_to("user", nix::unistd::geteuid().as_raw()).as_deref(),
                switch_to("group", nix::unistd::getegid().as_raw()).as_deref(),
                flag(&values, "initgroups"),
            )
            .map_err(ConfigError::Invalid)?,
            umask: u32::try_from(int(&values, "umask")).unwrap_or(0) & 0o777,
            app_module,
            values,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn trusted_peers_match_ips_and_networks() {
        let peers = TrustedPeers::parse("127.0.0.1, 10.0.0.0/8,::1").unwrap();
        assert!(peers.trusts(Some("127.0.0.1".parse().unwrap())));
        assert!(peers.trusts(Some("10.2.3.4".parse().unwrap())));
        assert!(peers.trusts(Some("::1".parse().unwrap())));
        assert!(peers.trusts(Some("::ffff:127.0.0.1".parse().unwrap())));
        assert!(!peers.trusts(Some("192.168.1.1".parse().unwrap())));
        assert!(peers.trusts(None), "unix peers are always trusted");
        assert!(TrustedPeers::parse("*")
            .unwrap()
            .trusts(Some("8.8.8.8".parse().unwrap())));
        assert!(TrustedPeers::parse("nonsense").is_err());
    }
}
