#![allow(clippy::unwrap_used)]

use super::*;

fn s(text: &str) -> Value {
    Value::Str(text.to_string())
}

fn list(items: &[&str]) -> Value {
    Value::List(items.iter().map(|i| i.to_string()).collect())
}

#[test]
fn worker_class_accepts_sync_and_gthread() {
    assert_eq!(
        parse_worker_class("sync").unwrap(),
        Value::Str("sync".into())
    );
    assert_eq!(
        parse_worker_class(" gunicorn.workers.gthread.ThreadWorker").unwrap(),
        Value::Str("gunicorn.workers.gthread.ThreadWorker".into())
    );
    assert!(is_gthread("gunicorn.workers.gthread.ThreadWorker"));
    assert!(!is_gthread("gunicorn.workers.sync.SyncWorker"));
    assert!(parse_worker_class("gevent").unwrap_err().contains("gevent"));
    assert!(parse_threads("0").is_err());
    assert_eq!(parse_threads("8").unwrap(), Value::Int(8));
}

#[test]
fn user_and_group_become_ids() {
    assert_eq!(parse_user("root").unwrap(), Value::Int(0));
    assert_eq!(parse_user("1234").unwrap(), Value::Int(1234));
    assert_eq!(
        parse_user("no-such-user-here").unwrap_err(),
        "No such user: 'no-such-user-here'"
    );
    assert_eq!(parse_user(" 12").unwrap_err(), "No such user: ' 12'");
    assert_eq!(parse_group("root").unwrap(), Value::Int(0));
    assert_eq!(parse_group("99").unwrap(), Value::Int(99));
    assert_eq!(
        parse_group("no-such-group-here").unwrap_err(),
        "No such group: 'no-such-group-here'"
    );
}

#[test]
fn workers_must_be_positive() {
    assert!(parse_workers("0").is_err());
    assert_eq!(parse_workers("4").unwrap(), Value::Int(4));
}

#[test]
fn umask_accepts_gunicorn_spellings() {
    assert_eq!(parse_octal("0o22").unwrap(), Value::Int(0o22));
    assert_eq!(parse_octal("022").unwrap(), Value::Int(0o22));
    assert_eq!(parse_octal("0x12").unwrap(), Value::Int(0x12));
    assert_eq!(parse_octal("18").unwrap(), Value::Int(18));
    assert!(parse_octal("089").is_err());
}

#[test]
fn log_level_is_a_choice() {
    assert_eq!(
        parse_loglevel(" DEBUG").unwrap(),
        Value::Str("DEBUG".into())
    );
    assert!(parse_loglevel("verbose").is_err());
}

#[test]
fn control_socket_mode_accepts_octal_strings() {
    assert_eq!(parse_octal("0600").unwrap(), Value::Int(0o600));
    assert_eq!(parse_octal("0o660").unwrap(), Value::Int(0o660));
}

#[test]
fn hooks_are_dotted_import_paths() {
    assert_eq!(parse_hook("hooks.on_exit").unwrap(), s("hooks.on_exit"));
    assert_eq!(
        parse_hook("on_exit").unwrap_err(),
        "Value 'on_exit' is not import string. Format: module[.submodules...].object"
    );
}

#[test]
fn dicts_cannot_be_given_as_text() {
    assert_eq!(
        parse_dict("x").unwrap_err(),
        "Value is not a dictionary: x "
    );
}

#[test]
fn reload_engine_is_one_of_the_engines() {
    assert_eq!(parse_reload_engine("inotify").unwrap(), s("inotify"));
    assert_eq!(
        parse_reload_engine("fsevents").unwrap_err(),
        "Invalid reload_engine: 'fsevents'"
    );
    assert!(parse_reload_engine("POLL").is_err());
}

#[test]
fn reload_extra_files_must_exist_unless_globs() {
    assert_eq!(parse_reload_extra_file(" / ").unwrap(), s("/"));
    assert_eq!(
        parse_reload_extra_file("templates/*.html").unwrap(),
        s("templates/*.html")
    );
    assert_eq!(
        parse_reload_extra_file("/no/such/file.txt").unwrap_err(),
        "File /no/such/file.txt does not exists."
    );
}

#[test]
fn ip_networks_follow_python_ipaddress() {
    for ok in [
        "10.0.0.1",
        "192.168.0.0/16",
        "10.0.0.0/255.0.0.0",
        "10.0.0.0/0.255.255.255",
        "0.0.0.0/0",
        "::1",
        "fd00::/8",
        "fe80::1%eth0",
    ] {
        assert_eq!(check_ip_network(ok), Ok(()), "{ok}");
    }
    assert_eq!(
        check_ip_network("192.168.1.1/24").unwrap_err(),
        "192.168.1.1/24 has host bits set"
    );
    assert_eq!(
        check_ip_network("10.0.0.1/255.0.0.0").unwrap_err(),
        "10.0.0.1/8 has host bits set"
    );
    for bad in [
        "localhost",
        "10.0.0.0/33",
        "10.0.0.0/",
        "01.2.3.4",
        "::1/129",
        "1/2/3",
    ] {
        assert_eq!(
            check_ip_network(bad).unwrap_err(),
            format!("'{bad}' does not appear to be an IPv4 or IPv6 network"),
        );
    }
}

#[test]
fn allow_lists_are_split_and_checked() {
    assert_eq!(
        parse_addr_list(" 10.0.0.0/8, ::1 ").unwrap(),
        list(&["10.0.0.0/8", "::1"])
    );
    assert_eq!(parse_addr_list("*").unwrap(), list(&["*"]));
    assert_eq!(parse_addr_list("").unwrap(), list(&[]));
    assert!(parse_addr_list("10.0.0.1, nope").is_err());
}

#[test]
fn forwarder_headers_are_a_list() {
    assert_eq!(
        parse_comma_list("SCRIPT_NAME, PATH_INFO,REMOTE_USER").unwrap(),
        list(&["SCRIPT_NAME", "PATH_INFO", "REMOTE_USER"])
    );
}

#[test]
fn syslog_addresses_have_a_scheme_and_a_numeric_port() {
    for ok in [
        "unix:///dev/log",
        "unix:///dev/log#dgram",
        "udp://localhost:514",
        "tcp://[::1]:601",
        "udp://logs",
    ] {
        assert_eq!(parse_syslog_addr(ok).unwrap(), s(ok));
    }
    assert_eq!(
        parse_syslog_addr("localhost:514").unwrap_err(),
        "invalid syslog address"
    );
    assert_eq!(
        parse_syslog_addr("udp://localhost:x").unwrap_err(),
        "'x' is not a valid port number."
    );
}

#[test]
fn syslog_facility_is_a_known_name() {
    assert_eq!(parse_syslog_facility("LOCAL3").unwrap(), s("LOCAL3"));
    assert_eq!(
        parse_syslog_facility("local9").unwrap_err(),
        "unknown facility name: local9"
    );
}

#[test]
fn statsd_host_is_host_port_or_unix() {
    let addr = |host: &str, port| Value::Address(host.to_string(), port);
    for (ok, parsed) in [
        ("localhost:8125", addr("localhost", 8125)),
        ("LocalHost", addr("localhost", 8125)),
        ("[::1]:8126", addr("::1", 8126)),
        ("tcp://statsd:9125", addr("statsd", 9125)),
        ("unix:///run/statsd.sock", s("/run/statsd.sock")),
        ("unix:/run/statsd.sock", s("/run/statsd.sock")),
        ("unix:8125", addr("unix", 8125)),
        ("fd://3", Value::Int(3)),
    ] {
        assert_eq!(parse_statsd_host(ok).unwrap(), parsed, "{ok}");
    }
    assert_eq!(addr("localhost", 8125).to_string(), "('localhost', 8125)");
    for bad in ["localhost:port", "host:", "fd://x", "[::1]:x"] {
        assert_eq!(
            parse_statsd_host(bad).unwrap_err(),
            "Value must be one of ('host:port', 'unix://PATH')",
            "{bad}"
        );
    }
}

#[test]
fn python_ints_for_ports() {
    assert!(is_python_int(" 8125 "));
    assert!(is_python_int("-1"));
    assert!(is_python_int("8_125"));
    assert!(!is_python_int(""));
    assert!(!is_python_int("_1"));
    assert!(!is_python_int("1__0"));
}

#[test]
fn dogstatsd_tags_cannot_break_the_datagram() {
    assert_eq!(
        parse_dogstatsd_tags("env:prod,team:web").unwrap(),
        s("env:prod,team:web")
    );
    assert!(parse_dogstatsd_tags("a|b").is_err());
    assert!(parse_dogstatsd_tags("café").is_err());
}

#[test]
fn proxy_protocol_modes_and_aliases() {
    assert_eq!(parse_proxy_protocol("V2").unwrap(), s("v2"));
    assert_eq!(parse_proxy_protocol("true").unwrap(), s("auto"));
    assert_eq!(parse_proxy_protocol("false").unwrap(), s("off"));
    assert_eq!(parse_proxy_protocol("1").unwrap(), s("auto"));
    assert_eq!(
        parse_proxy_protocol("v3").unwrap_err(),
        "proxy_protocol must be: off, v1, v2, or auto"
    );
}

#[test]
fn protocol_is_http_or_uwsgi() {
    assert_eq!(parse_protocol("uwsgi").unwrap(), s("uwsgi"));
    assert!(parse_protocol("fastcgi").is_err());
}

#[test]
fn cert_reqs_is_an_ssl_verify_mode() {
    assert_eq!(parse_cert_reqs("2").unwrap(), Value::Int(2));
    assert!(parse_cert_reqs("3").is_err());
    assert!(parse_cert_reqs("-1").is_err());
}

#[test]
fn http_protocols_is_a_preference_list() {
    assert_eq!(parse_http_protocols("H2, h1").unwrap(), list(&["h2", "h1"]));
    assert_eq!(parse_http_protocols(" ").unwrap(), list(&["h1"]));
    assert_eq!(
        parse_http_protocols("h1,h3").unwrap_err(),
        "Invalid protocol 'h3'. Valid protocols: h1, h2"
    );
    assert_eq!(
        parse_http_protocols("h1,h1").unwrap_err(),
        "Duplicate protocols specified"
    );
}

#[test]
fn http2_cleartext_modes() {
    assert_eq!(
        parse_http2_cleartext("Prior-Knowledge").unwrap(),
        s("prior-knowledge")
    );
    assert_eq!(
        parse_http2_cleartext("True").unwrap_err(),
        "Invalid http2_cleartext: true"
    );
}

#[test]
fn http2_limits_have_rfc_ranges() {
    assert!(parse_http2_max_concurrent_streams("0").is_err());
    assert_eq!(
        parse_http2_initial_window_size("2147483647").unwrap(),
        Value::Int(2_147_483_647)
    );
    assert_eq!(
        parse_http2_initial_window_size("2147483648").unwrap_err(),
        "HTTP/2 window size must be at most 2147483647: 2147483648"
    );
    assert_eq!(
        parse_http2_max_frame_size("16777215").unwrap(),
        Value::Int(16_777_215)
    );
    assert_eq!(
        parse_http2_max_frame_size("-1").unwrap_err(),
        "http2_max_frame_size must be between 16384 and 16777215, got -1"
    );
    assert!(parse_http2_max_frame_size("16383").is_err());
}

#[test]
fn header_map_is_a_choice() {
    assert_eq!(parse_header_map(" Refuse").unwrap(), s("refuse"));
    assert_eq!(
        parse_header_map("map").unwrap_err(),
        "Invalid header map behaviour: map"
    );
}

#[test]
fn asgi_and_parser_choices() {
    assert_eq!(parse_asgi_loop("UVLOOP").unwrap(), s("uvloop"));
    assert_eq!(
        parse_asgi_loop("Trio").unwrap_err(),
        "Invalid ASGI loop: trio"
    );
    assert_eq!(parse_asgi_lifespan("on").unwrap(), s("on"));
    assert!(parse_asgi_lifespan("maybe").is_err());
    assert_eq!(parse_http_parser("fast").unwrap(), s("fast"));
    assert_eq!(
        parse_http_parser("c").unwrap_err(),
        "http_parser must be one of: auto, fast, python"
    );
}

#[test]
fn durations_are_seconds_or_granians_forms() {
    let secs = |t: &str| parse_workers_lifetime(t).unwrap();
    assert_eq!(secs("90"), Value::Int(90));
    assert_eq!(secs("5m"), Value::Int(300));
    assert_eq!(secs("1h"), Value::Int(3600));
    assert_eq!(secs("1h30m"), Value::Int(5400));
    assert_eq!(secs("2d"), Value::Int(172_800));
    assert_eq!(secs("1m30s"), Value::Int(90));
    assert_eq!(parse_rss_sample_interval("30s").unwrap(), Value::Int(30));
    for bad in ["", "5x", "30s5m", "m", "1.5h", "-60", "1h 30m"] {
        assert!(
            parse_workers_lifetime(bad)
                .unwrap_err()
                .contains("is not a valid duration"),
            "{bad:?}"
        );
    }
}

#[test]
fn recycling_settings_refuse_granians_out_of_range_values() {
    assert_eq!(
        parse_workers_lifetime("59").unwrap_err(),
        "--workers-lifetime: '59' is less than the minimum allowed value of 60 seconds"
    );
    assert_eq!(parse_workers_lifetime("60").unwrap(), Value::Int(60));
    assert_eq!(
        parse_rss_sample_interval("5m1s").unwrap_err(),
        "--rss-sample-interval: '5m1s' is greater than the maximum allowed value of 300 seconds"
    );
    assert!(parse_rss_sample_interval("0").is_err());
    assert_eq!(parse_rss_sample_interval("1").unwrap(), Value::Int(1));
    assert_eq!(
        parse_workers_max_rss("0").unwrap_err(),
        "--workers-max-rss: 0 is not in the range x>=1"
    );
    assert_eq!(parse_workers_max_rss("120").unwrap(), Value::Int(120));
    assert!(parse_rss_samples("-2").is_err());
    assert!(parse_rss_samples("abc")
        .unwrap_err()
        .starts_with("invalid literal"));
}
