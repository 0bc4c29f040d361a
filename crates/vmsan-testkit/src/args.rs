//! Firecracker's own command-line parser rules (`utils::arg_parser`): `--name value`, flags,
//! repeatable options, `--` then pass-through arguments, and its error messages.

use std::collections::BTreeMap;

/// One accepted argument.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Name without dashes.
    pub name: &'static str,
    /// Takes a value.
    pub takes_value: bool,
    /// May repeat.
    pub multiple: bool,
    /// Must be present.
    pub required: bool,
}

/// Shorthand constructors.
pub const fn value(name: &'static str) -> Spec {
    Spec {
        name,
        takes_value: true,
        multiple: false,
        required: false,
    }
}

/// A required option with a value.
pub const fn required(name: &'static str) -> Spec {
    Spec {
        name,
        takes_value: true,
        multiple: false,
        required: true,
    }
}

/// A flag.
pub const fn flag(name: &'static str) -> Spec {
    Spec {
        name,
        takes_value: false,
        multiple: false,
        required: false,
    }
}

/// A repeatable option.
pub const fn multiple(name: &'static str) -> Spec {
    Spec {
        name,
        takes_value: true,
        multiple: true,
        required: false,
    }
}

/// Parsed arguments.
#[derive(Debug, Default, Clone)]
pub struct Parsed {
    values: BTreeMap<String, Vec<String>>,
    flags: Vec<String>,
    /// Everything after `--`.
    pub extra: Vec<String>,
}

impl Parsed {
    /// Single value.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.first())
            .map(String::as_str)
    }

    /// All values.
    pub fn values(&self, name: &str) -> &[String] {
        self.values.get(name).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Flag present.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

/// Parses `args` (without argv[0]). `help`/`version` short-circuit required checks.
pub fn parse(specs: &[Spec], args: &[String]) -> Result<Parsed, String> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            out.extra = args[i + 1..].to_vec();
            break;
        }
        let Some(name) = a.strip_prefix("--") else {
            return Err(format!(
                "Found argument '{a}' which wasn't expected, or isn't valid in this context."
            ));
        };
        if name == "help" {
            out.flags.push("help".into());
            i += 1;
            continue;
        }
        let Some(spec) = specs.iter().find(|s| s.name == name) else {
            return Err(format!(
                "Found argument '{name}' which wasn't expected, or isn't valid in this context."
            ));
        };
        if spec.takes_value {
            let Some(v) = args.get(i + 1).filter(|v| !v.starts_with("--")) else {
                return Err(format!(
                    "The argument '{name}' requires a value, but none was supplied."
                ));
            };
            let entry = out.values.entry(name.to_owned()).or_default();
            if !entry.is_empty() && !spec.multiple {
                return Err(format!(
                    "The argument '{name}' was provided more than once."
                ));
            }
            entry.push(v.clone());
            i += 2;
        } else {
            if out.flags.iter().any(|f| f == name) {
                return Err(format!(
                    "The argument '{name}' was provided more than once."
                ));
            }
            out.flags.push(name.to_owned());
            i += 1;
        }
    }
    if out.flag("help") || out.flag("version") {
        return Ok(out);
    }
    for s in specs {
        if s.required && !out.values.contains_key(s.name) {
            return Err(format!("Argument '{}' required, but not found.", s.name));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn firecracker_parser_rules() {
        let specs = [required("id"), flag("daemonize"), multiple("cgroup")];
        let p = parse(
            &specs,
            &v(&[
                "--id",
                "a",
                "--cgroup",
                "x=1",
                "--cgroup",
                "y=2",
                "--daemonize",
                "--",
                "--x",
            ]),
        )
        .unwrap();
        assert_eq!(p.value("id"), Some("a"));
        assert_eq!(p.values("cgroup").len(), 2);
        assert!(p.flag("daemonize"));
        assert_eq!(p.extra, v(&["--x"]));
        assert_eq!(
            parse(&specs, &v(&["--bogus"])).unwrap_err(),
            "Found argument 'bogus' which wasn't expected, or isn't valid in this context."
        );
        assert_eq!(
            parse(&specs, &v(&[])).unwrap_err(),
            "Argument 'id' required, but not found."
        );
        assert_eq!(
            parse(&specs, &v(&["--id"])).unwrap_err(),
            "The argument 'id' requires a value, but none was supplied."
        );
        assert_eq!(
            parse(&specs, &v(&["--id", "a", "--id", "b"])).unwrap_err(),
            "The argument 'id' was provided more than once."
        );
    }
}
