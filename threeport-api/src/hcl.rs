//! A syntax check of Terraform's native (HCL) files at the API's door: strings, comments,
//! heredocs and the nesting of braces, brackets and parentheses, so that the commonest
//! mistakes get a 400 naming the file and line. Everything else (block and argument
//! grammar, references, types) is Terraform's own `validate`, run by the controller.

/// A syntax error: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        line,
        message: message.into(),
    }
}

/// What is open at a point of the file.
enum Open {
    /// `{`, `[` or `(`, and its line.
    Delimiter(char, usize),
    /// A `${`/`%{` template sequence (its line) inside a quoted string (that string's line).
    Template(usize, usize),
}

fn closing(open: char) -> char {
    match open {
        '{' => '}',
        '[' => ']',
        _ => ')',
    }
}

/// Checks the lexical structure of an HCL file.
///
/// ```
/// use threeport_api::hcl::check_syntax;
/// assert!(check_syntax("resource \"terraform_data\" \"a\" {\n  input = \"${var.x}\"\n}\n").is_ok());
/// let err = check_syntax("resource \"terraform_data\" \"a\" {\n  input = 1\n").unwrap_err();
/// assert_eq!(err.line, 1);
/// ```
pub fn check_syntax(source: &str) -> Result<(), SyntaxError> {
    let chars: Vec<char> = source.chars().collect();
    let at = |i: usize| chars.get(i).copied();
    let mut stack: Vec<Open> = Vec::new();
    // Inside a quoted string: the line it started on.
    let mut string: Option<usize> = None;
    let mut line = 1;
    let mut i = 0;
    while let Some(ch) = at(i) {
        if let Some(start) = string {
            match ch {
                '\n' => {
                    return Err(error(
                        start,
                        "unterminated string: a quoted string ends on its own line \
                         (a heredoc spans lines)",
                    ));
                }
                '\\' if at(i + 1).is_some_and(|c| c != '\n') => i += 2,
                '"' => {
                    string = None;
                    i += 1;
                }
                // `$${` and `%%{` are literal.
                '$' | '%' if at(i + 1) == Some(ch) => i += 2,
                '$' | '%' if at(i + 1) == Some('{') => {
                    stack.push(Open::Template(line, start));
                    string = None;
                    i += 2;
                }
                _ => i += 1,
            }
            continue;
        }
        match ch {
            '\n' => line += 1,
            '#' => i = end_of_line(&chars, i) - 1,
            '/' if at(i + 1) == Some('/') => i = end_of_line(&chars, i) - 1,
            '/' if at(i + 1) == Some('*') => {
                let start = line;
                let mut j = i + 2;
                loop {
                    match at(j) {
                        None => return Err(error(start, "unterminated /* comment")),
                        Some('*') if at(j + 1) == Some('/') => break,
                        Some('\n') => line += 1,
                        _ => {}
                    }
                    j += 1;
                }
                i = j + 1;
            }
            '"' => string = Some(line),
            '<' if at(i + 1) == Some('<') => {
                let start = line;
                let mut j = i + 2;
                if at(j) == Some('-') {
                    j += 1;
                }
                let ident_start = j;
                while at(j).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    j += 1;
                }
                let ident: String = chars[ident_start..j].iter().collect();
                if ident.is_empty() {
                    return Err(error(start, "a heredoc (`<<`) needs a delimiter word"));
                }
                // The body: whole lines until one that is the delimiter alone.
                let mut pos = end_of_line(&chars, j);
                loop {
                    if pos >= chars.len() {
                        return Err(error(start, format!("heredoc <<{ident} is not closed")));
                    }
                    line += 1;
                    let next = end_of_line(&chars, pos + 1);
                    let text: String = chars[pos + 1..next].iter().collect();
                    pos = next;
                    if text.trim() == ident {
                        break;
                    }
                }
                i = pos;
                continue;
            }
            '{' | '[' | '(' => stack.push(Open::Delimiter(ch, line)),
            '}' | ']' | ')' => match stack.pop() {
                Some(Open::Delimiter(open, _)) if closing(open) == ch => {}
                Some(Open::Template(_, start)) if ch == '}' => string = Some(start),
                Some(Open::Delimiter(open, opened)) => {
                    return Err(error(
                        line,
                        format!("unexpected `{ch}`: the `{open}` of line {opened} is not closed"),
                    ));
                }
                Some(Open::Template(opened, _)) => {
                    return Err(error(
                        line,
                        format!("unexpected `{ch}` in the template sequence of line {opened}"),
                    ));
                }
                None => return Err(error(line, format!("unexpected `{ch}`: nothing is open"))),
            },
            _ => {}
        }
        i += 1;
    }
    if let Some(start) = string {
        return Err(error(start, "unterminated string"));
    }
    match stack.pop() {
        None => Ok(()),
        Some(Open::Delimiter(open, opened)) => Err(error(
            opened,
            format!("`{open}` is not closed (expected `{}`)", closing(open)),
        )),
        Some(Open::Template(opened, _)) => {
            Err(error(opened, "template sequence `${` is not closed"))
        }
    }
}

/// Index of the newline ending the line that holds `i` (or the end of the text).
fn end_of_line(chars: &[char], i: usize) -> usize {
    chars[i..]
        .iter()
        .position(|&c| c == '\n')
        .map_or(chars.len(), |p| i + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_files_pass() {
        let source = r#"
# a comment with "quotes" and { braces
// another }
/* block
   comment ] */
variable "name" {
  type    = string
  default = "a \"quoted\" ${upper("x")} $${literal} %{ if true }yes%{ endif }"
}
locals {
  list = [1, 2, (3 + 4)]
  map  = { a = "}" }
  text = <<-EOT
    braces { [ ( are text here "
    EOT
}
output "x" { value = local.list }
"#;
        assert_eq!(check_syntax(source), Ok(()));
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("a = {\n  b = 1\n", 1, "`{` is not closed"),
            ("a = [1, 2}\n", 1, "unexpected `}`"),
            ("a = 1\n}\n", 2, "nothing is open"),
            ("x {\n  a = \"open\n}\n", 2, "unterminated string"),
            ("x = <<EOT\nbody\n", 1, "heredoc <<EOT is not closed"),
            ("/* never\nclosed", 1, "unterminated /* comment"),
            ("a = \"${b\"\n", 1, "unterminated string"),
        ];
        for (source, line, message) in cases {
            let err = check_syntax(source).unwrap_err();
            assert_eq!(err.line, line, "{source:?}: {err:?}");
            assert!(err.message.contains(message), "{source:?}: {err:?}");
        }
    }
}
