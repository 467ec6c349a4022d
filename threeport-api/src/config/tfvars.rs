//! Terraform variable files (`VarsDocument`): `name = value` lines of strings, numbers, bools,
//! lists and objects written as JSON-compatible HCL, or a `.tfvars.json` object.

use serde_json::{Map, Value};

/// The variables of a tfvars file (`json`: a `.tfvars.json` file).
pub fn parse(text: &str, json: bool) -> Result<Map<String, Value>, String> {
    if json {
        return match serde_json::from_str(text) {
            Ok(Value::Object(vars)) => Ok(vars),
            Ok(_) => Err("a .tfvars.json file holds one JSON object".to_owned()),
            Err(e) => Err(format!("not valid JSON: {e}")),
        };
    }
    let mut vars = Map::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected `name = value`", index + 1))?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(format!(
                "line {}: {name:?} is not a variable name",
                index + 1
            ));
        }
        let value = value.trim();
        // JSON covers HCL's strings, numbers, bools, `[…]` lists and `{"k": v}` objects.
        let parsed: Value = serde_json::from_str(value).map_err(|_| {
            format!(
                "line {}: the value of {name} is not a string, number, bool, list or object this \
                 reader understands (use a .tfvars.json file for anything else)",
                index + 1
            )
        })?;
        vars.insert(name.to_owned(), parsed);
    }
    Ok(vars)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn scalar_lines_and_json_files_parse() {
        let vars = parse(
            "# sizes\nname = \"web\"\ncount = 3\nha = true\nzones = [\"a\", \"b\"]\n",
            false,
        )
        .unwrap();
        assert_eq!(vars["name"], "web");
        assert_eq!(vars["count"], 3);
        assert_eq!(vars["zones"][1], "b");
        assert!(
            parse("name = web\n", false)
                .unwrap_err()
                .starts_with("line 1")
        );
        assert_eq!(parse("{\"a\": 1}", true).unwrap()["a"], 1);
    }
}
