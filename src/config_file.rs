//! Configuration files with every problem named at once: a file with three
//! mistakes says three things, not the first and then the next on the
//! second try.
//!
//! The file is parsed as TOML (a syntax error stops there: nothing after it
//! can be read reliably), then deserialized into its type with the path of
//! each failing field (`serde_path_to_error`); the failing entry is taken
//! out and the rest tried again, up to [`MAX_PROBLEMS`] problems.

use serde::de::DeserializeOwned;

/// Problems reported from one file at most.
pub const MAX_PROBLEMS: usize = 32;

/// `text` as a `T`, or every problem found, one per line (the first with
/// its line and column).
pub fn parse<T: DeserializeOwned>(text: &str) -> Result<T, String> {
    let first = match toml::from_str::<T>(text) {
        Ok(v) => return Ok(v),
        Err(e) => e,
    };
    let Ok(mut table) = toml::from_str::<toml::Table>(text) else {
        return Err(first.to_string());
    };
    let mut problems = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    while problems.len() < MAX_PROBLEMS {
        let e = match serde_path_to_error::deserialize::<_, T>(toml::Value::Table(table.clone())) {
            Ok(_) => break,
            Err(e) => e,
        };
        let path = e.path().to_string();
        let msg = e.inner().to_string();
        // A field we took out ourselves, now missing: a consequence.
        if removed
            .iter()
            .any(|r| msg.contains(&format!("missing field `{r}`")))
        {
            break;
        }
        let at = if path == "." {
            String::new()
        } else {
            path.clone()
        };
        let split = |path: &str| match path.rsplit_once('.') {
            Some((p, k)) => (p.to_string(), k.to_string()),
            None => (String::new(), path.to_string()),
        };
        let (parent, key) = match between(&msg, "unknown field `", "`") {
            // The path may or may not end with the unknown key itself.
            Some(field) if split(&at).1 == field => split(&at),
            Some(field) => (at.clone(), field.to_string()),
            None => split(&at),
        };
        problems.push(if at.is_empty() {
            msg.clone()
        } else {
            format!("{at}: {msg}")
        });
        if key.is_empty() || !remove(&mut table, &parent, &key) {
            break;
        }
        removed.push(key);
    }
    match problems.len() {
        0 | 1 => Err(first.to_string()),
        n => Err(format!("{n} problems:\n{}", problems.join("\n"))),
    }
}

fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let i = s.find(start)? + start.len();
    let j = s[i..].find(end)? + i;
    Some(&s[i..j])
}

/// Takes `key` out of the table at dotted `parent` (array items by index).
fn remove(table: &mut toml::Table, parent: &str, key: &str) -> bool {
    let mut at: &mut toml::Table = table;
    for part in parent.split('.').filter(|p| !p.is_empty()) {
        let next = match at.get_mut(part) {
            Some(v) => v,
            None => return false,
        };
        at = match next {
            toml::Value::Table(t) => t,
            _ => return false,
        };
    }
    at.remove(key).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        #[serde(default)]
        n: u32,
        #[serde(default)]
        s: String,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        #[serde(default)]
        a: u32,
        #[serde(default)]
        b: bool,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let e = parse::<Cfg>("a = \"x\"\nb = 3\nnmae = 1\n[inner]\nn = -1\ns = 2\n").unwrap_err();
        assert!(e.starts_with("5 problems:"), "{e}");
        for want in [
            "a: invalid type",
            "b: invalid type",
            "unknown field `nmae`",
            "inner.n:",
            "inner.s:",
        ] {
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    #[test]
    fn one_problem_keeps_its_line_and_a_good_file_parses() {
        let e = parse::<Cfg>("a = 1\nb = 3\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse::<Cfg>("a = 1\n[inner]\nn = 2\n").is_ok());
        let e = parse::<Cfg>("a = = 1\nb = 3\n").unwrap_err();
        assert!(e.contains("line 1"), "a syntax error: {e}");
    }
}
