//! `${VAR}` interpolation of string values.
//!
//! Syntax (the same as Docker Compose, so it is familiar):
//! - `${NAME}`: the value of the environment variable `NAME`; unset is an
//!   error naming it. `NAME` is `[A-Za-z_][A-Za-z0-9_]*`.
//! - `${NAME:-default}`: `default` when `NAME` is unset or empty.
//! - `$$`: a literal `$`, so `$${NAME}` is the literal text `${NAME}`.
//! - Any other `$` is kept as is (`pa$word` needs no escaping).
//!
//! It runs on the *parsed* string values of the file, not on its raw text,
//! so a secret containing `"`, `#` or `: ` cannot change the structure of the
//! document, and a `${...}` in a comment is ignored (see
//! docs/adr/0002-config-loading.md).

/// Why one `${...}` could not be expanded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InterpolationError {
    /// `${NAME}` with `NAME` not set.
    Unset(String),
    /// `${...}` whose content is not a variable name.
    InvalidName(String),
    /// `${` with no closing `}`.
    Unterminated,
}

impl InterpolationError {
    /// The text to look for in the raw file to find the line.
    pub(crate) fn needle(&self) -> String {
        match self {
            InterpolationError::Unset(name) => format!("${{{name}"),
            InterpolationError::InvalidName(inner) => format!("${{{inner}}}"),
            InterpolationError::Unterminated => "${".to_owned(),
        }
    }

    pub(crate) fn message(&self) -> String {
        match self {
            InterpolationError::Unset(name) => format!(
                "environment variable {name} is not set (referenced as ${{{name}}}). \
                 Hint: set it, give a default with ${{{name}:-value}}, or write $${{ for a literal ${{"
            ),
            InterpolationError::InvalidName(inner) => format!(
                "${{{inner}}} is not a variable reference: a name is letters, digits and '_' \
                 (not starting with a digit), optionally followed by :-default. \
                 Hint: write $${{ for a literal ${{"
            ),
            InterpolationError::Unterminated => {
                "unterminated ${ (no closing }). Hint: write $${ for a literal ${".to_owned()
            }
        }
    }
}

/// Expands every reference in `text`; the error lists every problem in it.
pub(crate) fn interpolate<'a>(
    text: &str,
    lookup: impl Fn(&str) -> Option<&'a str>,
) -> Result<String, Vec<InterpolationError>> {
    let mut out = String::with_capacity(text.len());
    let mut errors = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(close) = body.find('}') else {
                errors.push(InterpolationError::Unterminated);
                rest = "";
                break;
            };
            let inner = &body[..close];
            let (name, default) = match inner.split_once(":-") {
                Some((name, default)) => (name, Some(default)),
                None => (inner, None),
            };
            if !is_var_name(name) {
                errors.push(InterpolationError::InvalidName(inner.to_owned()));
            } else {
                match (lookup(name), default) {
                    (Some(value), None) => out.push_str(value),
                    (Some(value), Some(_)) if !value.is_empty() => out.push_str(value),
                    (_, Some(default)) => out.push_str(default),
                    (None, None) => errors.push(InterpolationError::Unset(name.to_owned())),
                }
            }
            rest = &body[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn is_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// 1-based number of the first line of `text` containing `needle`.
pub(crate) fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<String, Vec<InterpolationError>> {
        interpolate(text, |name| match name {
            "HOST" => Some("idp.example"),
            "EMPTY" => Some(""),
            _ => None,
        })
    }

    #[test]
    fn expands_set_variables() {
        assert_eq!(
            run("https://${HOST}/token"),
            Ok("https://idp.example/token".into())
        );
        assert_eq!(run("${HOST}${HOST}"), Ok("idp.exampleidp.example".into()));
        assert_eq!(run("no refs"), Ok("no refs".into()));
    }

    #[test]
    fn defaults_apply_when_unset_or_empty() {
        assert_eq!(run("${NOPE:-8080}"), Ok("8080".into()));
        assert_eq!(run("${EMPTY:-x}"), Ok("x".into()));
        assert_eq!(run("${HOST:-x}"), Ok("idp.example".into()));
        assert_eq!(run("${NOPE:-}"), Ok("".into()));
    }

    #[test]
    fn dollar_dollar_is_a_literal_dollar() {
        assert_eq!(run("$${HOST}"), Ok("${HOST}".into()));
        assert_eq!(run("a$$b"), Ok("a$b".into()));
        assert_eq!(run("pa$word $ 5$"), Ok("pa$word $ 5$".into()));
    }

    #[test]
    fn every_problem_in_a_string_is_reported() {
        assert_eq!(
            run("${A} ${HOST} ${B} ${9x} ${oops"),
            Err(vec![
                InterpolationError::Unset("A".into()),
                InterpolationError::Unset("B".into()),
                InterpolationError::InvalidName("9x".into()),
                InterpolationError::Unterminated,
            ])
        );
        assert_eq!(
            run("${}"),
            Err(vec![InterpolationError::InvalidName("".into())])
        );
    }

    #[test]
    fn messages_name_the_variable() {
        let msg = InterpolationError::Unset("SEARCH_SECRET".into()).message();
        assert!(
            msg.starts_with("environment variable SEARCH_SECRET is not set"),
            "{msg}"
        );
        assert_eq!(line_of("a\nb: ${X}\n", "${X"), Some(2));
    }
}
