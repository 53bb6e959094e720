//! `--config FILE` (or the flag's environment variable, `RT_CONFIG`): the
//! same settings as the flags, from a TOML file.
//!
//! Keys are the flags' long names, in kebab or snake case (`max-connections`
//! or `max_connections`); a flag that repeats takes an array. A file value
//! becomes that flag's default, so the precedence is clap's own: a flag on
//! the command line, then its environment variable, then the file, then the
//! built-in default. An unknown key, a value of the wrong kind or one the
//! flag refuses is an error naming the file, the line and the key.

use std::ffi::OsString;
use std::path::Path;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{ArgAction, Command, CommandFactory, FromArgMatches};

/// Why the settings could not be read.
#[derive(Debug)]
pub(crate) enum ConfigError {
    /// The command line or an environment variable (clap's error, printed as clap prints it).
    Args(clap::Error),
    /// The config file: `path:line: key: what is wrong`.
    File(String),
}

impl From<clap::Error> for ConfigError {
    fn from(e: clap::Error) -> Self {
        ConfigError::Args(e)
    }
}

/// Parses `argv` (program name first) into `P`, with the settings of the
/// config file named by `--config` or by the `config` flag's environment
/// variable as defaults.
pub(crate) fn parse_from<P>(argv: Vec<OsString>) -> Result<P, ConfigError>
where
    P: CommandFactory + FromArgMatches,
{
    let mut cmd = P::command();
    if let Some(path) = config_path(&cmd, &argv) {
        cmd = with_file(cmd, Path::new(&path))?;
    }
    let matches = cmd.try_get_matches_from(argv)?;
    Ok(P::from_arg_matches(&matches)?)
}

/// The file `--config` (or `--config=`) names on the command line, else
/// the one its environment variable names.
fn config_path(cmd: &Command, argv: &[OsString]) -> Option<OsString> {
    let mut args = argv.iter().skip(1);
    while let Some(a) = args.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return args.next().cloned();
        }
        if let Some(path) = a.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some(path.into());
        }
    }
    let arg = cmd.get_arguments().find(|a| a.get_id() == "config")?;
    std::env::var_os(arg.get_env()?).filter(|v| !v.is_empty())
}

/// `cmd` with the file's settings as the defaults of their flags.
fn with_file(mut cmd: Command, path: &Path) -> Result<Command, ConfigError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::File(format!("{shown}: cannot read the config file: {e}")))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|e| ConfigError::File(format!("{shown}: {}", e.to_string().trim_end())))?;
    let lines = key_lines(&text);
    let keys: Vec<String> = cmd
        .get_arguments()
        .filter(|a| a.get_long().is_some() && !is_builtin(a.get_id().as_str()))
        .map(|a| a.get_long().unwrap_or_default().to_string())
        .collect();
    for (key, value) in &table {
        let line = lines
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0, |(_, line)| *line);
        let at = |what: String| ConfigError::File(format!("{shown}:{line}: {key}: {what}"));
        let id = key.replace('-', "_");
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == id.as_str() && a.get_long().is_some())
            .filter(|a| !is_builtin(a.get_id().as_str()))
            .ok_or_else(|| {
                at(format!(
                    "unknown key (the keys are the flags: {})",
                    keys.join(", ")
                ))
            })?;
        let long = arg.get_long().unwrap_or_default().to_string();
        let values = match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(b)) => vec![b.to_string()],
            (ArgAction::SetTrue, other) => {
                return Err(at(format!("expected true or false, found {}", kind(other))));
            }
            (ArgAction::Append, toml::Value::Array(items)) => items
                .iter()
                .map(|v| {
                    scalar(v).ok_or_else(|| {
                        at(format!("expected strings or numbers, found {}", kind(v)))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?,
            (_, v) => vec![scalar(v).ok_or_else(|| {
                at(format!(
                    "expected a string, a number or true/false, found {}",
                    kind(v)
                ))
            })?],
        };
        if !matches!(arg.get_action(), ArgAction::SetTrue) {
            for v in &values {
                check(&cmd, &long, v).map_err(at)?;
            }
        }
        let secret = arg.is_hide_env_values_set();
        // clap takes owned defaults only with its `string` feature; these
        // few strings are read once and live as long as the process anyway.
        let values: Vec<&'static str> = values
            .into_iter()
            .map(|v| &*Box::leak(v.into_boxed_str()))
            .collect();
        cmd = cmd.mut_arg(id, |a| a.default_values(values).hide_default_value(secret));
    }
    Ok(cmd)
}

/// Whether `--long=value` is a value that flag takes: parsed alone, with
/// the flag's own value parser.
fn check(cmd: &Command, long: &str, value: &str) -> Result<(), String> {
    let argv = [cmd.get_name().to_string(), format!("--{long}={value}")];
    match cmd.clone().try_get_matches_from(argv) {
        Err(e)
            if matches!(
                e.kind(),
                ErrorKind::InvalidValue | ErrorKind::ValueValidation
            ) =>
        {
            let about_this = match e.get(ContextKind::InvalidArg) {
                Some(ContextValue::String(arg)) => {
                    arg.split([' ', '=']).next() == Some(format!("--{long}").as_str())
                }
                _ => true,
            };
            if !about_this {
                return Ok(()); // another flag's environment variable: clap reports it
            }
            let shown = e.to_string();
            let first = shown.lines().next().unwrap_or_default();
            Err(first.strip_prefix("error: ").unwrap_or(first).to_string())
        }
        _ => Ok(()),
    }
}

/// The line of each top-level key of `text` (TOML already parsed it once).
fn key_lines(text: &str) -> Vec<(String, usize)> {
    let Ok(table) = toml::de::DeTable::parse(text) else {
        return Vec::new();
    };
    table
        .get_ref()
        .iter()
        .map(|(k, _)| {
            let line = text[..k.span().start.min(text.len())].matches('\n').count() + 1;
            (k.get_ref().to_string(), line)
        })
        .collect()
}

fn is_builtin(id: &str) -> bool {
    matches!(id, "config" | "help" | "version")
}

fn scalar(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        _ => None,
    }
}

fn kind(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}
