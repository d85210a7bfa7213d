//! Text from statements and stores, made safe to show a human: control,
//! bidirectional and other invisible format characters can redraw a
//! terminal line or reorder what an operator reads before signing.

/// Whether `c` is a control character or an invisible format character
/// (bidirectional overrides and isolates, zero-width characters, soft
/// hyphen, BOM, interlinear annotation marks).
pub fn is_hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206F}'
                | '\u{FEFF}'
                | '\u{FFF9}'..='\u{FFFB}'
        )
}

/// Plain single-line text: no control or hidden format characters.
pub fn is_plain(s: &str) -> bool {
    !s.chars().any(is_hidden)
}

/// `s` with every control or hidden format character shown as `\u{XXXX}`,
/// so what is printed is what is there.
pub fn visible(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if is_hidden(c) {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_escapes_and_bidi_overrides_are_shown_not_obeyed() {
        assert_eq!(visible("web1 -> ok"), "web1 -> ok");
        assert_eq!(visible("a\u{1b}[2Kb"), "a\\u{001b}[2Kb");
        assert_eq!(visible("\u{202e}evil"), "\\u{202e}evil");
        assert_eq!(visible("x\ry"), "x\\u{000d}y");
        assert!(is_plain("fix: bump nixpkgs (ü)"));
        assert!(!is_plain("zero\u{200b}width"));
    }
}
