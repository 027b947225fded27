//! Click's shell-completion protocol, answered the way the official CLI (Click 8.5) does:
//! `_TM_COMPLETE=<shell>_source` prints the shell function that `tm completion SHELL`
//! hooks in, and `_TM_COMPLETE=<shell>_complete` answers one completion request from
//! `COMP_WORDS`/`COMP_CWORD`, walked over our clap command tree. A script the official
//! CLI installed therefore keeps working with ours, and ours with it.

use clap::builder::ValueHint;
use clap::{Arg, ArgAction, Command};

/// What the hook asked for and what to answer: text for stdout and the exit status.
pub fn answer(request: &str, root: &Command, prog: &str) -> (String, u8) {
    let Some((shell, instruction)) = request.split_once('_') else { return (String::new(), 1) };
    let Some(shell) = Shell::parse(shell) else { return (String::new(), 1) };
    match instruction {
        "source" => (shell.source(prog), 0),
        "complete" => {
            let (args, incomplete) = shell.request(|name| std::env::var(name).unwrap_or_default());
            let items = complete(root, args, &incomplete);
            let lines: Vec<String> = items.iter().map(|item| shell.format(item)).collect();
            (format!("{}\n", lines.join("\n")), 0)
        }
        _ => (String::new(), 1),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shell {
    Bash,
    Zsh,
    Fish,
    Pwsh,
}

/// One completion: `kind` is `plain`, or `file`/`dir` for the shell to complete paths.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    kind: &'static str,
    value: String,
    help: Option<String>,
}

impl Item {
    fn plain(value: impl Into<String>, help: Option<String>) -> Item {
        Item { kind: "plain", value: value.into(), help }
    }
}

impl Shell {
    fn parse(name: &str) -> Option<Shell> {
        match name {
            "bash" => Some(Shell::Bash),
            "zsh" => Some(Shell::Zsh),
            "fish" => Some(Shell::Fish),
            "powershell" => Some(Shell::Pwsh),
            _ => None,
        }
    }

    /// Click's scripts, byte for byte, for `prog`.
    fn source(self, prog: &str) -> String {
        let template = match self {
            Shell::Bash => include_str!("completion/bash.sh"),
            Shell::Zsh => include_str!("completion/zsh.sh"),
            Shell::Fish => include_str!("completion/fish.sh"),
            Shell::Pwsh => include_str!("completion/powershell.ps1"),
        };
        let safe: String = prog.replace('-', "_").chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        template
            .replace("%(complete_func)s", &format!("_{safe}_completion"))
            .replace("%(complete_var)s", &complete_var(prog))
            .replace("%(prog_name)s", prog)
    }

    /// The complete words before the cursor and the word being completed.
    fn request(self, env: impl Fn(&str) -> String) -> (Vec<String>, String) {
        let words = split_arg_string(&env("COMP_WORDS"));
        if self == Shell::Fish {
            // Fish sends the partial word as COMP_CWORD, and also at the end of COMP_WORDS.
            let raw = env("COMP_CWORD");
            let incomplete =
                if raw.is_empty() { raw } else { split_arg_string(&raw).into_iter().next().unwrap_or_default() };
            let mut args: Vec<String> = words.into_iter().skip(1).collect();
            if !incomplete.is_empty() && args.last() == Some(&incomplete) {
                args.pop();
            }
            return (args, incomplete);
        }
        let cword: usize = env("COMP_CWORD").trim().parse().unwrap_or(0);
        let args = words.iter().skip(1).take(cword.saturating_sub(1)).cloned().collect();
        (args, words.get(cword).cloned().unwrap_or_default())
    }

    fn format(self, item: &Item) -> String {
        match self {
            Shell::Bash => format!("{},{}", item.kind, item.value),
            Shell::Zsh => {
                let help = item.help.as_deref().unwrap_or("_");
                let value = if help == "_" { item.value.clone() } else { item.value.replace(':', "\\:") };
                format!("{}\n{value}\n{help}", item.kind)
            }
            Shell::Fish => match &item.help {
                Some(help) => format!("{},{}\t{}", item.kind, item.value, help.replace('\n', "\\n").replace('\t', " ")),
                None => format!("{},{}", item.kind, item.value),
            },
            Shell::Pwsh => {
                let help = item.help.as_deref().map_or_else(|| "_".to_owned(), |h| h.replace(['\r', '\n'], " "));
                format!("{}\n{}\n{help}", item.kind, item.value)
            }
        }
    }
}

/// `_TM_COMPLETE` for `tm`: the variable Click reads for a program name.
pub fn complete_var(prog: &str) -> String {
    format!("_{}_COMPLETE", prog.replace('-', "_").to_uppercase())
}

/// Where the complete words leave the command line: the command reached, and what was
/// given to it.
struct Position<'a> {
    command: &'a Command,
    /// Options given on the command line (by clap id).
    given: Vec<String>,
    positionals: usize,
}

/// Follows the complete words through the command tree as Click's resilient parse does:
/// options (and their values) are skipped, a known subcommand name descends, and an
/// unknown one stops the walk at its group.
fn resolve<'a>(root: &'a Command, args: &[String]) -> Position<'a> {
    let mut at = Position { command: root, given: Vec::new(), positionals: 0 };
    let mut words = args.iter();
    let mut options_end = false;
    while let Some(word) = words.next() {
        if !options_end && word == "--" {
            options_end = true;
        } else if !options_end && starts_option(word) {
            let (name, inline) = match word.split_once('=') {
                Some((name, _)) if word.starts_with("--") => (name, true),
                _ => (word.as_str(), false),
            };
            if HELP.contains(&name) {
                at.given.push("help".into());
            } else if let Some(arg) = options(at.command).find(|a| names(a).iter().any(|n| n == name)) {
                at.given.push(option_id(arg).to_owned());
                if takes_value(arg) && !inline {
                    words.next();
                }
            }
        } else if at.command.has_subcommands() {
            match at.command.find_subcommand(word) {
                Some(sub) => at = Position { command: sub, given: Vec::new(), positionals: 0 },
                None => return at,
            }
        } else {
            at.positionals += 1;
        }
    }
    at
}

/// Click's `_resolve_incomplete` and the `shell_complete` of what it picks.
fn complete(root: &Command, mut args: Vec<String>, incomplete: &str) -> Vec<Item> {
    let mut incomplete = incomplete.to_owned();
    if incomplete == "=" {
        incomplete.clear();
    } else if starts_option(&incomplete) && incomplete.contains('=') {
        let (name, value) = incomplete.split_once('=').map(|(n, v)| (n.to_owned(), v.to_owned())).unwrap_or_default();
        args.push(name);
        incomplete = value;
    }
    let at = resolve(root, &args);
    if !args.iter().any(|a| a == "--") && starts_option(&incomplete) {
        return command_items(&at, &incomplete);
    }
    // The last complete word is an option that still needs its value.
    if let Some(last) = args.last().filter(|w| starts_option(w)) {
        if let Some(arg) = options(at.command).find(|a| names(a).iter().any(|n| n == last)) {
            if takes_value(arg) {
                return value_items(arg, &incomplete);
            }
        }
    }
    // The first positional without a value.
    if let Some(arg) = at.command.get_positionals().nth(at.positionals) {
        return value_items(arg, &incomplete);
    }
    if let Some(arg) = at.command.get_positionals().find(|a| matches!(a.get_action(), ArgAction::Append)) {
        return value_items(arg, &incomplete);
    }
    command_items(&at, &incomplete)
}

/// A group's subcommands starting with `incomplete` (sorted, as Click lists them), then,
/// when `incomplete` starts like an option, the options not given yet.
fn command_items(at: &Position, incomplete: &str) -> Vec<Item> {
    let mut subs: Vec<&Command> =
        at.command.get_subcommands().filter(|c| !c.is_hide_set() && c.get_name().starts_with(incomplete)).collect();
    subs.sort_by_key(|c| c.get_name());
    let mut items: Vec<Item> = subs.iter().map(|c| Item::plain(c.get_name(), short_help(c))).collect();
    if incomplete.chars().next().is_some_and(|c| !c.is_alphanumeric()) {
        for arg in options(at.command) {
            let repeatable = matches!(arg.get_action(), ArgAction::Append | ArgAction::Count);
            if arg.is_hide_set() || (!repeatable && at.given.iter().any(|g| g == option_id(arg))) {
                continue;
            }
            let help = arg.get_help().map(|h| h.to_string());
            items.extend(
                names(arg).into_iter().filter(|n| n.starts_with(incomplete)).map(|n| Item::plain(n, help.clone())),
            );
        }
        // Click's help option comes last, on every command.
        if !at.given.iter().any(|g| g == "help") {
            let help = Some("Show this message and exit.".to_owned());
            items.extend(HELP.iter().filter(|n| n.starts_with(incomplete)).map(|n| Item::plain(*n, help.clone())));
        }
    }
    items
}

/// The values an option or argument can take: its choices, or the shell's file names.
fn value_items(arg: &Arg, incomplete: &str) -> Vec<Item> {
    match arg.get_value_hint() {
        ValueHint::FilePath | ValueHint::AnyPath => {
            return vec![Item { kind: "file", value: incomplete.into(), help: None }]
        }
        ValueHint::DirPath => return vec![Item { kind: "dir", value: incomplete.into(), help: None }],
        _ => {}
    }
    let fold = arg.is_ignore_case_set();
    let wanted = if fold { incomplete.to_lowercase() } else { incomplete.to_owned() };
    arg.get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| v.get_name().to_owned())
        .filter(|v| if fold { v.to_lowercase().starts_with(&wanted) } else { v.starts_with(&wanted) })
        .map(|v| Item::plain(v, None))
        .collect()
}

/// Click's help option, which every command has.
const HELP: [&str; 2] = ["-h", "--help"];

/// Flags the official CLI declares as one Click option with a secondary name
/// (`--active/--inactive`) and we as two clap args: given either, neither is offered.
const SECONDARY_NAMES: &[(&str, &str)] = &[("inactive", "active")];

/// The option an arg belongs to in Click's terms (a secondary name is its primary's).
fn option_id(arg: &Arg) -> &str {
    let id = arg.get_id().as_str();
    SECONDARY_NAMES.iter().find(|(secondary, _)| *secondary == id).map_or(id, |(_, primary)| primary)
}

/// Options of a command in the order its help lists them (Click's declaration order),
/// without clap's own help.
fn options(command: &Command) -> impl Iterator<Item = &Arg> {
    let mut options: Vec<&Arg> =
        command.get_arguments().filter(|a| !a.is_positional() && a.get_id() != "help").collect();
    options.sort_by_key(|a| a.get_display_order());
    options.into_iter()
}

/// An option's names in Click's order: the long name, then the short one.
fn names(arg: &Arg) -> Vec<String> {
    let mut names: Vec<String> =
        arg.get_long_and_visible_aliases().unwrap_or_default().iter().map(|l| format!("--{l}")).collect();
    names.extend(arg.get_short_and_visible_aliases().unwrap_or_default().iter().map(|s| format!("-{s}")));
    names
}

fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

fn starts_option(word: &str) -> bool {
    word.starts_with('-')
}

/// A command's help line as Click shortens it for completions: the first sentence, at
/// most 45 characters, cut at a word with `...`.
fn short_help(command: &Command) -> Option<String> {
    let about = command.get_about()?.to_string();
    Some(shorten(&about, 45))
}

/// Click's `_make_default_short_help`: the first sentence of the first paragraph, or as
/// many whole words as fit with `...` (Python's `textwrap.shorten`).
fn shorten(help: &str, limit: usize) -> String {
    let paragraph = help.split("\n\n").next().unwrap_or_default();
    let mut words: Vec<&str> = paragraph.split_whitespace().collect();
    // A period ends the sentence unless the next word starts in lowercase ("vs. x").
    if let Some(end) = (0..words.len())
        .find(|&i| words[i].ends_with('.') && words.get(i + 1).is_none_or(|next| !next.starts_with(char::is_lowercase)))
    {
        words.truncate(end + 1);
    }
    let width = |ws: &[&str]| ws.iter().map(|w| w.chars().count()).sum::<usize>() + ws.len().saturating_sub(1);
    if width(&words) <= limit {
        return words.join(" ");
    }
    let mut line = Vec::new();
    for word in words {
        line.push(word);
        if width(&line) > limit {
            line.pop();
            break;
        }
    }
    while !line.is_empty() && width(&line) + 3 > limit {
        line.pop();
    }
    format!("{}...", line.join(" "))
}

/// Python's `shlex.split` (POSIX mode, no comments) that keeps a partial last word
/// instead of failing on an open quote or a trailing backslash, as Click's does.
fn split_arg_string(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                for q in chars.by_ref() {
                    if q == '\'' {
                        break;
                    }
                    word.push(q);
                }
            }
            '"' => {
                in_word = true;
                while let Some(q) = chars.next() {
                    match q {
                        '"' => break,
                        '\\' if matches!(chars.peek(), Some('"' | '\\')) => word.extend(chars.next()),
                        q => word.push(q),
                    }
                }
            }
            '\\' => {
                in_word = true;
                word.extend(chars.next());
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_shlex_and_keeps_partial_words() {
        assert_eq!(split_arg_string("tm  auth lo"), ["tm", "auth", "lo"]);
        assert_eq!(
            split_arg_string(r#"tm --json '{"a": 1}' "b c" d\ e"#),
            ["tm", "--json", r#"{"a": 1}"#, "b c", "d e"]
        );
        assert_eq!(split_arg_string("tm 'open"), ["tm", "open"]);
        assert_eq!(split_arg_string("tm end\\"), ["tm", "end"]);
        assert_eq!(split_arg_string(r#"tm "a\"b""#), ["tm", "a\"b"]);
    }

    #[test]
    fn short_help_is_clicks() {
        assert_eq!(shorten("Activities (Control Plane).", 45), "Activities (Control Plane).");
        assert_eq!(shorten("Get an activity (GET /v1/activities/{activityId}).", 45), "Get an activity (GET...");
        assert_eq!(
            shorten("Insert/update serverless pricing via validated JSON input.", 45),
            "Insert/update serverless pricing via..."
        );
    }
}
