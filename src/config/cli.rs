//! The command line: a clap `Command` built at run time from the settings table, and the
//! extraction of the values a command line (or `GUNICORN_CMD_ARGS`) gave.

use std::collections::BTreeMap;

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::defs::SETTINGS;
use super::error::ConfigError;
use super::setting::{Action, Setting, Support, Value};

/// `usage: rgunicorn [OPTIONS] [APP_MODULE]`, as Gunicorn words it.
const USAGE: &str = "rgunicorn [OPTIONS] [APP_MODULE]";

/// What `--help` says of `APP_MODULE`.
const APP_MODULE_HELP: &str = "The WSGI application: MODULE[:VARIABLE] (project.wsgi, \
     app:application; VARIABLE defaults to 'application'), or a factory call \
     (app:create_app()). Optional when the configuration sets wsgi_app.";

/// Builds the parser: one argument per flagged setting, plus `APP_MODULE` and `--version`.
pub fn command() -> Command {
    let mut cmd = Command::new("rgunicorn")
        .override_usage(USAGE)
        // argparse's layout: a lower-case "usage:" line, then the arguments.
        .help_template("usage: {usage}\n\n{all-args}")
        .disable_version_flag(true)
        .disable_help_flag(true)
        .arg(
            Arg::new("help")
                .short('h')
                .long("help")
                .action(ArgAction::Help)
                .help("Show this help message and exit."),
        )
        .arg(
            Arg::new("version")
                .short('v')
                .long("version")
                .action(ArgAction::SetTrue)
                .help("Show program's version number and exit."),
        )
        .arg(
            Arg::new("APP_MODULE")
                .num_args(1)
                .required(false)
                .help(APP_MODULE_HELP),
        );
    for setting in SETTINGS.iter().filter(|s| !s.flags.is_empty()) {
        let mut arg = Arg::new(setting.name).help(help_text(setting));
        for flag in setting.flags {
            if let Some(long) = flag.strip_prefix("--") {
                arg = if arg.get_long().is_none() {
                    arg.long(long)
                } else {
                    arg.visible_alias(long)
                };
            } else if let Some(short) = flag.strip_prefix('-').and_then(|s| s.chars().next()) {
                arg = arg.short(short);
            }
        }
        arg = match setting.action {
            // argparse accepts `-t -1` (then the validator refuses it); so must we.
            Action::Set => arg
                .action(ArgAction::Set)
                .num_args(1)
                .allow_negative_numbers(true),
            Action::Append => arg
                .action(ArgAction::Append)
                .num_args(1)
                .allow_negative_numbers(true),
            Action::SetTrue | Action::SetFalse => arg.action(ArgAction::SetTrue),
        };
        if !setting.meta.is_empty() {
            arg = arg.value_name(setting.meta);
        }
        if setting.name == "proxy_protocol" {
            // Gunicorn's optional value: a bare `--proxy-protocol` means auto.
            arg = arg.num_args(0..=1).default_missing_value("auto");
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

/// A setting's `--help` line, from its row: Gunicorn's description and default
/// (`[30]`, `['127.0.0.1:8000']`), and whether rgunicorn ignores or refuses it.
fn help_text(setting: &Setting) -> String {
    let mut text = format!(
        "{} [{}]",
        setting.help.trim_end_matches('.'),
        (setting.default)().to_python_str()
    );
    match setting.support {
        Support::Full => {}
        Support::Ignored(why) => text.push_str(&format!(" (Ignored by rgunicorn: {why}.)")),
        Support::Refused(why) => text.push_str(&format!(
            " (Only the default is accepted by rgunicorn: {why}.)"
        )),
    }
    text
}

/// What one command line said: the settings it gave explicitly and the app module.
#[derive(Default, Debug)]
pub struct Given {
    pub values: BTreeMap<&'static str, Value>,
    pub app_module: Option<String>,
    pub version: bool,
}

/// Parses `args` (without the program name) into the settings they set explicitly.
///
/// # Errors
/// A clap usage error (exit 2) or a value a setting's parser refuses (exit 1).
pub fn parse(args: &[String]) -> Result<Given, ConfigError> {
    let cmd = command();
    let args = &expand_abbreviations(args, &long_options(&cmd))?;
    let argv = std::iter::once("rgunicorn".to_string()).chain(args.iter().cloned());
    let matches = cmd.try_get_matches_from(argv).map_err(|e| {
        unrecognized(&e, args)
            .or_else(|| in_argparse_words(&e))
            .unwrap_or(ConfigError::Usage(e))
    })?;
    extract(&matches)
}

/// Every long option of `cmd` (`--workers`, aliases such as `--log-file` included), in the
/// order they were added: argparse's order, which its ambiguity message lists them in.
fn long_options(cmd: &Command) -> Vec<String> {
    cmd.get_arguments()
        .filter_map(Arg::get_long_and_visible_aliases)
        .flatten()
        .map(|long| format!("--{long}"))
        .collect()
}

/// Argparse's `allow_abbrev`: a long option may be shortened to any unique prefix
/// (`--timeo 5`, `--bin=127.0.0.1:8000`). Each such word is rewritten to the full option;
/// an exact option always wins over longer ones it starts (`--reload`), words after `--`
/// are positional, and a word no option starts is left for the parser to refuse.
///
/// # Errors
/// A prefix of more than one option, in argparse's words: `ambiguous option: --wor could
/// match --workers, --worker-class, ...` (a usage error, exit 2).
fn expand_abbreviations(args: &[String], longs: &[String]) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::with_capacity(args.len());
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if word == "--" {
            out.push(word.clone());
            out.extend(words.cloned());
            break;
        }
        if !word.starts_with("--") {
            out.push(word.clone());
            continue;
        }
        let (name, value) = match word.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (word.as_str(), None),
        };
        if longs.iter().any(|long| long == name) {
            out.push(word.clone());
            continue;
        }
        let candidates: Vec<&str> = longs
            .iter()
            .filter(|long| long.starts_with(name))
            .map(String::as_str)
            .collect();
        match candidates[..] {
            [] => out.push(word.clone()),
            [long] => out.push(match value {
                Some(value) => format!("{long}={value}"),
                None => long.to_string(),
            }),
            _ => {
                return Err(ConfigError::BadArgument(format!(
                    "ambiguous option: {word} could match {}",
                    candidates.join(", ")
                )))
            }
        }
    }
    Ok(out)
}

/// An unknown option in Gunicorn's (argparse's) words, `unrecognized arguments: --wokers 3`,
/// with a `did you mean --workers?` line when a flag is close; None for other errors.
fn unrecognized(e: &clap::Error, args: &[String]) -> Option<ConfigError> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let Some(ContextValue::String(unknown)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    let flag = unknown.split('=').next().unwrap_or(unknown);
    // As argparse: the option as written, and the word after it when APP_MODULE was already
    // given (otherwise that word is APP_MODULE).
    let at = args
        .iter()
        .position(|a| a == unknown || a.starts_with(&format!("{flag}=")));
    let mut words = vec![at.map_or_else(|| unknown.clone(), |i| args[i].clone())];
    if let Some(i) = at.filter(|&i| !args[i].contains('=')) {
        if let Some(next) = args.get(i + 1).filter(|n| !n.starts_with('-')) {
            if app_module_before(&args[..i]) {
                words.push(next.clone());
            }
        }
    }
    let mut msg = format!("unrecognized arguments: {}", words.join(" "));
    if let Some(close) = closest_flag(flag) {
        msg.push_str(&format!("\ndid you mean {close}?"));
    }
    Some(ConfigError::BadArgument(msg))
}

/// A missing or unexpected option value in argparse's words (`argument -w/--workers:
/// expected one argument`); None for other errors (help and version included).
fn in_argparse_words(e: &clap::Error) -> Option<ConfigError> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) else {
        return None;
    };
    // clap names the option `--workers <INT>`; argparse names all its flags, `-w/--workers`.
    let long = arg.split(' ').next().unwrap_or(arg);
    let flags = SETTINGS
        .iter()
        .find(|s| s.flags.contains(&long))
        .map_or_else(|| long.to_string(), |s| s.flags.join("/"));
    let value = match e.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => v.as_str(),
        _ => "",
    };
    let what = match e.kind() {
        ErrorKind::InvalidValue if value.is_empty() => "expected one argument".to_string(),
        ErrorKind::TooManyValues | ErrorKind::UnknownArgument => {
            format!("ignored explicit argument '{value}'")
        }
        _ => return None,
    };
    Some(ConfigError::BadArgument(format!(
        "argument {flags}: {what}"
    )))
}

/// Whether `args` already hold a positional word (APP_MODULE), skipping option values.
fn app_module_before(args: &[String]) -> bool {
    let takes_value = |flag: &str| {
        SETTINGS
            .iter()
            .any(|s| s.flags.contains(&flag) && matches!(s.action, Action::Set | Action::Append))
    };
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        if !arg.starts_with('-') {
            return true;
        }
        i += if !arg.contains('=') && takes_value(arg) {
            2
        } else {
            1
        };
    }
    false
}

/// The long flag nearest to `given`: a few typos away (one per three letters), or one it
/// starts (3+ letters).
fn closest_flag(given: &str) -> Option<&'static str> {
    let given = given.trim_start_matches('-');
    SETTINGS
        .iter()
        .flat_map(|s| s.flags.iter())
        .chain(["--version"].iter())
        .filter_map(|f| f.strip_prefix("--").map(|name| (*f, name)))
        .map(|(flag, name)| (edit_distance(given, name), flag, name))
        .filter(|(d, _, name)| {
            *d <= (given.len() / 3).max(1) || (given.len() >= 3 && name.starts_with(given))
        })
        .min_by_key(|(d, _, _)| *d)
        .map(|(_, flag, _)| flag)
}

/// Levenshtein distance between two short ASCII strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(row[j]).min(row[j + 1])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

fn extract(matches: &ArgMatches) -> Result<Given, ConfigError> {
    let mut given = Given {
        app_module: matches.get_one::<String>("APP_MODULE").cloned(),
        version: matches.get_flag("version"),
        ..Given::default()
    };
    for setting in SETTINGS.iter().filter(|s| !s.flags.is_empty()) {
        if matches.value_source(setting.name) != Some(ValueSource::CommandLine) {
            continue;
        }
        let flag = setting.flags.join("/");
        let bad = |text: &str, why: String| {
            if why.starts_with("invalid literal") {
                ConfigError::BadArgument(format!("argument {flag}: invalid int value: '{text}'"))
            } else {
                ConfigError::Invalid(why)
            }
        };
        let value = match setting.action {
            Action::SetTrue => Value::Bool(true),
            Action::SetFalse => Value::Bool(false),
            Action::Set => {
                let text = matches
                    .get_one::<String>(setting.name)
                    .map(String::as_str)
                    .unwrap_or_default();
                (setting.parse)(text).map_err(|why| bad(text, why))?
            }
            Action::Append => {
                let mut items = Vec::new();
                for text in matches
                    .get_many::<String>(setting.name)
                    .into_iter()
                    .flatten()
                {
                    match (setting.parse)(text).map_err(|why| bad(text, why))? {
                        Value::Str(s) => items.push(s),
                        other => items.push(other.to_string()),
                    }
                }
                Value::List(items)
            }
        };
        given.values.insert(setting.name, value);
    }
    Ok(given)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_set_settings_and_the_positional_is_the_app() {
        let given = parse(&args(&["-w", "3", "-b", "a:1", "--bind", "b:2", "app:x"])).unwrap();
        assert_eq!(given.values["workers"], Value::Int(3));
        assert_eq!(
            given.values["bind"],
            Value::List(vec!["a:1".into(), "b:2".into()])
        );
        assert_eq!(given.app_module.as_deref(), Some("app:x"));
    }

    #[test]
    fn log_file_is_an_alias_of_error_logfile() {
        let given = parse(&args(&["--log-file", "-"])).unwrap();
        assert_eq!(given.values["errorlog"], Value::Str("-".into()));
    }

    #[test]
    fn underscore_flag_spelling_is_kept() {
        let given = parse(&args(&["--limit-request-field_size", "100"])).unwrap();
        assert_eq!(given.values["limit_request_field_size"], Value::Int(100));
    }

    #[test]
    fn unknown_flags_are_reported_in_argparse_words() {
        let msg = |a: &[&str]| match parse(&args(a)) {
            Err(ConfigError::BadArgument(msg)) => msg,
            other => panic!("{other:?}"),
        };
        assert_eq!(msg(&["--nope"]), "unrecognized arguments: --nope");
        assert_eq!(
            msg(&["app:application", "--wokers", "3"]),
            "unrecognized arguments: --wokers 3\ndid you mean --workers?"
        );
        // Without APP_MODULE before it, the next word is APP_MODULE, as in argparse.
        assert_eq!(
            msg(&["--wokers", "3"]),
            "unrecognized arguments: --wokers\ndid you mean --workers?"
        );
        assert_eq!(
            msg(&["app", "--bnd=127.0.0.1:1"]),
            "unrecognized arguments: --bnd=127.0.0.1:1\ndid you mean --bind?"
        );
        assert_eq!(edit_distance("wokers", "workers"), 1);
    }

    #[test]
    fn unique_prefixes_of_long_options_are_accepted() {
        let given = parse(&args(&["--timeo", "5", "--bin=127.0.0.1:1", "--wo", "x"]));
        assert!(given.is_err(), "--wo is ambiguous");
        let given = parse(&args(&[
            "--timeo",
            "5",
            "--bin=127.0.0.1:1",
            "--workers",
            "2",
            "--worker-cl",
            "gthread",
            "--log-f",
            "-",
            "--prel",
            "app:x",
        ]))
        .unwrap();
        assert_eq!(given.values["timeout"], Value::Int(5));
        assert_eq!(
            given.values["bind"],
            Value::List(vec!["127.0.0.1:1".into()])
        );
        assert_eq!(given.values["workers"], Value::Int(2));
        assert_eq!(given.values["worker_class"], Value::Str("gthread".into()));
        assert_eq!(given.values["errorlog"], Value::Str("-".into()));
        assert_eq!(given.values["preload_app"], Value::Bool(true));
        assert_eq!(given.app_module.as_deref(), Some("app:x"));
        assert!(parse(&args(&["--vers"])).unwrap().version);
        // An exact option wins over the longer ones it starts.
        let given = parse(&args(&["--reload", "app:x"])).unwrap();
        assert_eq!(given.values["reload"], Value::Bool(true));
        let given = parse(&args(&["--reload-en", "poll", "app:x"])).unwrap();
        assert_eq!(given.values["reload_engine"], Value::Str("poll".into()));
        // After `--`, words are positional and never expanded.
        let given = parse(&args(&["--", "--timeo"])).unwrap();
        assert_eq!(given.app_module.as_deref(), Some("--timeo"));
    }

    #[test]
    fn ambiguous_prefixes_are_refused_in_argparse_words() {
        let msg = |a: &[&str]| match parse(&args(a)) {
            Err(ConfigError::BadArgument(msg)) => msg,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            msg(&["--wor", "3"]),
            "ambiguous option: --wor could match --workers, --worker-class, \
             --worker-connections, --worker-tmp-dir, --workers-max-rss, --workers-lifetime"
        );
        assert_eq!(
            msg(&["--wor=3"]),
            "ambiguous option: --wor=3 could match --workers, --worker-class, \
             --worker-connections, --worker-tmp-dir, --workers-max-rss, --workers-lifetime"
        );
        assert_eq!(
            msg(&["--he"]),
            "ambiguous option: --he could match --help, --header-map"
        );
        assert_eq!(
            msg(&["--reloa"]),
            "ambiguous option: --reloa could match --reload, --reload-engine, \
             --reload-extra-file"
        );
        assert_eq!(
            msg(&["--past", "x"]),
            "ambiguous option: --past could match --paste, --paster, --paste-global"
        );
        // A word no option starts is still an unknown option.
        assert_eq!(msg(&["--x=1"]), "unrecognized arguments: --x=1");
    }

    #[test]
    fn non_integer_is_a_usage_error_and_negative_is_invalid() {
        assert!(matches!(
            parse(&args(&["-w", "abc"])),
            Err(ConfigError::BadArgument(_))
        ));
        assert!(matches!(
            parse(&args(&["-t", "-1"])),
            Err(ConfigError::Invalid(_))
        ));
    }
}
