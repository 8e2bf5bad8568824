#![allow(clippy::unwrap_used)]

use super::*;
use crate::config::defs::SETTINGS;

struct Fake {
    config: Config,
    workers: Vec<WorkerFacts>,
    target: usize,
}

impl Fake {
    fn new(settings: &[(&'static str, Value)]) -> Fake {
        let mut values: std::collections::BTreeMap<_, _> =
            SETTINGS.iter().map(|s| (s.name, (s.default)())).collect();
        for (name, value) in settings {
            values.insert(*name, value.clone());
        }
        let config = Config::from_values(Some("app:app".to_string()), values).unwrap();
        Fake {
            config,
            workers: vec![
                WorkerFacts {
                    pid: 202,
                    age: 2,
                    aborted: true,
                    last_heartbeat: Some(0.123),
                },
                WorkerFacts {
                    pid: 101,
                    age: 1,
                    aborted: false,
                    last_heartbeat: None,
                },
            ],
            target: 2,
        }
    }
}

impl Arbiter for Fake {
    fn pid(&self) -> i32 {
        7
    }
    fn worker_facts(&self) -> Vec<WorkerFacts> {
        self.workers
            .iter()
            .map(|w| WorkerFacts {
                pid: w.pid,
                age: w.age,
                aborted: w.aborted,
                last_heartbeat: w.last_heartbeat,
            })
            .collect()
    }
    fn counters(&self) -> Counters {
        Counters {
            uptime_seconds: 12.345,
            spawned: 3,
            killed: 1,
            reloads: 0,
            recycled: crate::master::recycle::Recycled {
                max_requests: 4,
                max_rss: 1,
                lifetime: 0,
            },
        }
    }
    fn config(&self) -> &Config {
        &self.config
    }
    fn listeners(&self) -> &[Listener] {
        &[]
    }
    fn target(&self) -> usize {
        self.target
    }
    fn set_target(&mut self, workers: usize) {
        self.target = workers;
    }
    fn max_target(&self) -> usize {
        10
    }
}

/// The reply to `command` (with `args`), as the JSON text Gunicorn would send.
fn ask(fake: &mut Fake, command: &str) -> String {
    let request = Json::Object(vec![
        ("id".to_string(), Json::Int(5)),
        ("command".to_string(), Json::Str(command.to_string())),
        ("args".to_string(), Json::Array(Vec::new())),
    ]);
    answer(&request, fake).unwrap().to_python_json()
}

#[test]
fn show_workers_lists_by_age_with_gunicorns_fields() {
    let mut fake = Fake::new(&[]);
    assert_eq!(
        ask(&mut fake, "show workers"),
        "{\"id\": 5, \"status\": \"ok\", \"data\": {\"workers\": [\
         {\"pid\": 101, \"age\": 1, \"booted\": false, \"aborted\": false, \"last_heartbeat\": null}, \
         {\"pid\": 202, \"age\": 2, \"booted\": false, \"aborted\": true, \"last_heartbeat\": 0.12}], \
         \"count\": 2}}"
    );
}

#[test]
fn words_are_case_insensitive_but_the_shutdown_mode_is_not() {
    let mut fake = Fake::new(&[]);
    assert!(ask(&mut fake, "SHOW Stats").contains("\"uptime\": 12.35"));
    assert!(ask(&mut fake, "show stats").contains(
        "\"workers_current\": 2, \"workers_target\": 2, \"workers_spawned\": 3, \
         \"workers_killed\": 1, \"reloads\": 0, \"dirty_arbiter_pid\": null, \
         \"workers_recycled\": {\"max_requests\": 4, \"max_rss\": 1, \"lifetime\": 0}}"
    ));
}

#[test]
fn errors_are_worded_as_gunicorns() {
    let mut fake = Fake::new(&[]);
    let error = |fake: &mut Fake, command: &str| {
        let reply = ask(fake, command);
        let at = reply.find("\"error\": ").unwrap();
        reply[at + 9..reply.len() - 1].to_string()
    };
    assert_eq!(error(&mut fake, ""), "\"Empty command\"");
    assert_eq!(error(&mut fake, "  "), "\"Empty command\"");
    // shlex gives one empty word: an unknown command, as in Python.
    assert_eq!(
        error(&mut fake, "''"),
        "\"Invalid argument: Unknown command: \""
    );
    assert_eq!(
        error(&mut fake, "bogus"),
        "\"Invalid argument: Unknown command: bogus\""
    );
    assert_eq!(
        error(&mut fake, "show"),
        "\"Invalid argument: Missing show target (all|workers|dirty|config|stats|listeners)\""
    );
    assert_eq!(
        error(&mut fake, "show Nothing"),
        "\"Invalid argument: Unknown show target: nothing\""
    );
    assert_eq!(
        error(&mut fake, "worker"),
        "\"Invalid argument: Missing worker action (add|remove|kill)\""
    );
    assert_eq!(
        error(&mut fake, "worker kill"),
        "\"Invalid argument: Missing PID for worker kill\""
    );
    assert_eq!(
        error(&mut fake, "worker add two"),
        "\"Invalid argument: invalid literal for int() with base 10: 'two'\""
    );
    assert_eq!(
        error(&mut fake, "worker add \"it's\""),
        "\"Invalid argument: invalid literal for int() with base 10: \\\"it's\\\"\""
    );
    assert_eq!(
        error(&mut fake, "show 'workers"),
        "\"Invalid argument: No closing quotation\""
    );
    assert_eq!(
        error(&mut fake, "dirty"),
        "\"Invalid argument: Missing dirty action (add|remove)\""
    );
}

#[test]
fn worker_add_and_remove_change_the_target_within_bounds() {
    let mut fake = Fake::new(&[]);
    let data =
        |reply: String| reply[reply.find("\"data\": ").unwrap() + 8..reply.len() - 1].to_string();
    assert_eq!(
        data(ask(&mut fake, "worker add 3")),
        "{\"added\": 3, \"previous\": 2, \"total\": 5}"
    );
    assert_eq!(
        data(ask(&mut fake, "worker add 0")),
        "{\"added\": 1, \"previous\": 5, \"total\": 6}",
        "0 and negatives mean 1"
    );
    assert_eq!(
        data(ask(&mut fake, "worker add 1_000")),
        "{\"added\": 4, \"previous\": 6, \"total\": 10}",
        "bounded by the heartbeat slots"
    );
    assert_eq!(
        data(ask(&mut fake, "worker remove 20")),
        "{\"removed\": 9, \"previous\": 10, \"total\": 1}",
        "never below one"
    );
    assert_eq!(fake.target, 1);
    assert_eq!(
        data(ask(&mut fake, "worker remove")),
        "{\"removed\": 0, \"previous\": 1, \"total\": 1}"
    );
}

#[test]
fn worker_add_never_lowers_a_target_above_the_bound() {
    let mut fake = Fake::new(&[]);
    fake.target = 12; // more than max_target (10), as a large --workers could set it
    let reply = ask(&mut fake, "worker add 1");
    assert!(
        reply.ends_with("\"data\": {\"added\": 0, \"previous\": 12, \"total\": 12}}"),
        "{reply}"
    );
    assert_eq!(fake.target, 12);
}

#[test]
fn worker_kill_signals_only_our_own_workers() {
    let mut fake = Fake::new(&[]);
    // Not ours: never signalled (pid 1 would be init).
    assert!(ask(&mut fake, "worker kill 1")
        .ends_with("\"data\": {\"success\": false, \"error\": \"Worker 1 not found\"}}"));
    assert!(ask(&mut fake, "worker kill -1").contains("Worker -1 not found"));
}

#[test]
fn show_config_has_gunicorns_twenty_keys_in_order() {
    let mut fake = Fake::new(&[("threads", Value::Int(4))]);
    let reply = ask(&mut fake, "show config");
    let keys: Vec<&str> = SHOWN_SETTINGS.to_vec();
    let mut at = 0;
    for key in keys {
        let found = reply[at..].find(&format!("\"{key}\": ")).unwrap();
        at += found;
    }
    assert!(reply.contains(
        "\"worker_class\": \"<class 'gunicorn.workers.gthread.ThreadWorker'>\", \"threads\": 4"
    ));
    assert!(reply.contains("\"proc_name\": \"app:app\""));
    assert!(reply.contains("\"dirty_apps\": [], \"dirty_timeout\": 300"));
    assert!(reply.contains("\"bind\": [\"127.0.0.1:8000\"]"));
}

#[test]
fn dirty_commands_answer_as_without_a_dirty_arbiter() {
    let mut fake = Fake::new(&[]);
    assert!(ask(&mut fake, "show dirty")
        .ends_with("{\"enabled\": false, \"pid\": null, \"workers\": [], \"apps\": []}}"));
    assert!(ask(&mut fake, "dirty add 2")
        .ends_with("{\"success\": false, \"error\": \"Dirty arbiter not running\"}}"));
}

#[test]
fn help_lists_fifteen_commands() {
    let mut fake = Fake::new(&[]);
    let reply = ask(&mut fake, "help");
    assert_eq!(reply.matches("\": \"").count(), 15 + 1, "{reply}");
    assert!(reply.contains("\"shutdown [graceful|quick]\": \"Shutdown server (TERM/INT)\""));
}

#[test]
fn requests_that_are_not_objects_get_no_reply() {
    let mut fake = Fake::new(&[]);
    assert!(answer(&Json::Array(Vec::new()), &mut fake).is_none());
    let bad_command = Json::Object(vec![("command".to_string(), Json::Int(5))]);
    assert!(answer(&bad_command, &mut fake).is_none());
    // A missing id is 0; any other id comes back as it was.
    let no_id = Json::Object(vec![("command".to_string(), Json::Str("help".into()))]);
    assert!(answer(&no_id, &mut fake)
        .unwrap()
        .to_python_json()
        .starts_with("{\"id\": 0, \"status\": \"ok\""));
}

#[test]
fn args_extend_the_command_as_python_str_does() {
    let mut fake = Fake::new(&[]);
    let request = |args: Json| {
        Json::Object(vec![
            ("id".to_string(), Json::Str("x".into())),
            ("command".to_string(), Json::Str("worker".into())),
            ("args".to_string(), args),
        ])
    };
    let reply = answer(
        &request(Json::Array(vec![Json::Str("add".into()), Json::Int(2)])),
        &mut fake,
    )
    .unwrap()
    .to_python_json();
    assert!(
        reply.contains("{\"added\": 2, \"previous\": 2, \"total\": 4}"),
        "{reply}"
    );
    let reply = answer(&request(Json::Int(3)), &mut fake)
        .unwrap()
        .to_python_json();
    assert!(reply.ends_with("\"error\": \"Command failed: 'int' object is not iterable\"}"));
}

#[test]
fn shlex_splits_as_python_does() {
    assert_eq!(
        split_command(r#"a 'b c' "d \"e\" \x" f\ g"#).unwrap(),
        vec!["a", "b c", "d \"e\" \\x", "f g"]
    );
    assert_eq!(split_command("x\\").unwrap_err(), "No escaped character");
    assert_eq!(split_command("''").unwrap(), vec![""]);
}

#[test]
fn python_int_accepts_what_int_accepts() {
    let ok = |t: &str| python_int(t).ok();
    assert_eq!(ok(" 42 "), Some(42));
    assert_eq!(ok("-3"), Some(-3));
    assert_eq!(ok("+1_0"), Some(10));
    for bad in ["", "1__0", "_1", "1_", "3.0", "0x10", "1e3"] {
        assert_eq!(ok(bad), None, "{bad}");
    }
}
