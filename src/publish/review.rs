//! What a signer reads before signing: every field of the statement, one
//! line each, in words a human checks.
//!
//! Nothing signed may be hidden from the review: [`review`] destructures the
//! statement without `..`, so a field added to it does not compile until it
//! is rendered here, and a test compares the rendered field names with the
//! statement's JSON. Text values are quoted with their length, runs of
//! spaces are counted and every control or invisible character is escaped
//! ([`crate::format::text::visible`]), so a padded comment cannot draw a line
//! of its own on a signing terminal. `decommission` is flagged: it takes
//! hosts out of lockout protection.

use crate::format::rollout::Rollout;
use crate::format::statement::{ArchiveRef, Digest, Source, Statement};
use crate::format::text::visible;
use crate::format::time::rfc3339;

/// One line of a review.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The statement's JSON name of the field (`source.comment`,
    /// `toplevels.web`), or `statement` for the hash of the bytes.
    pub field: String,
    pub value: String,
    /// Needs the signer's attention (shown flagged).
    pub alert: bool,
}

fn line(field: impl Into<String>, value: impl Into<String>) -> Line {
    Line {
        field: field.into(),
        value: value.into(),
        alert: false,
    }
}

/// `s` quoted, with its length in characters: control and invisible
/// characters escaped, other Unicode spaces escaped, and runs of two or more
/// spaces counted (`[12 spaces]`), so what is shown is what is signed.
pub fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    let mut spaces = 0usize;
    let flush = |out: &mut String, n: &mut usize| {
        match *n {
            0 => {}
            1 => out.push(' '),
            k => out.push_str(&format!("[{k} spaces]")),
        }
        *n = 0;
    };
    for c in s.chars() {
        if c == ' ' {
            spaces += 1;
            continue;
        }
        flush(&mut out, &mut spaces);
        // Unicode spaces and characters that render blank (Braille blank,
        // Hangul fillers) would pad a value as well as spaces do.
        if (c.is_whitespace() && !c.is_ascii())
            || matches!(
                c,
                '\u{2800}' | '\u{3164}' | '\u{115F}' | '\u{1160}' | '\u{FFA0}'
            )
        {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else {
            out.push_str(&visible(c.encode_utf8(&mut [0; 4])));
        }
    }
    flush(&mut out, &mut spaces);
    out.push('"');
    format!("{out} ({} chars)", s.chars().count())
}

fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{bytes} bytes ({v:.1} {unit})")
}

fn duration(secs: u64) -> String {
    match secs {
        s if s % 86_400 == 0 && s > 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 && s > 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 && s > 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// The rollout plan in words.
pub fn rollout_words(r: &Rollout) -> String {
    let Rollout { points, gates } = r;
    let pts: Vec<String> = points
        .iter()
        .map(|(t, p)| format!("{}={p}%", duration(*t)))
        .collect();
    let gated: Vec<String> = gates
        .iter()
        .map(|g| format!("stage {} from {}%", quoted(&g.stage), g.percent))
        .collect();
    format!(
        "{} (the last hosts activate {} after `created`{})",
        pts.join(", "),
        duration(r.duration()),
        if gated.is_empty() {
            String::new()
        } else {
            format!(
                "; gated, each opened only by a signed promotion: {}",
                gated.join(", ")
            )
        }
    )
}

/// `t` relative to `now` ("in 3h", "2d ago"), from the reviewing
/// machine's clock.
fn relative(t: u64, now: u64) -> String {
    let words = |d: u64| match d {
        d if d >= 2 * 86_400 => format!("{}d", d / 86_400),
        d if d >= 2 * 3600 => format!("{}h", d / 3600),
        d if d >= 120 => format!("{}m", d / 60),
        d => format!("{d}s"),
    };
    if t >= now {
        format!("in {}", words(t - now))
    } else {
        format!("{} ago", words(now - t))
    }
}

/// Every field of `st` (whose exact bytes are `bytes`), in signing order;
/// times also relative to `now` (this machine's clock).
pub fn review(st: &Statement, bytes: &[u8], now: u64) -> Vec<Line> {
    let Statement {
        kind,
        remote,
        version,
        previous,
        archive,
        created,
        expires,
        source,
        toplevels,
        decommission,
        rollout,
    } = st;
    let ArchiveRef {
        blake3,
        size: bytes_len,
    } = archive;
    let mut out = vec![
        line("type", quoted(kind)),
        line("remote", quoted(remote.as_str())),
        line("version", version.to_string()),
        line(
            "previous",
            previous.map_or("none: the first release of this remote".to_owned(), |d| {
                format!("{d} (the statement this release extends)")
            }),
        ),
        line("archive.blake3", blake3.to_hex()),
        line("archive.size", size(*bytes_len)),
        line(
            "created",
            format!("{} ({created}, {})", rfc3339(*created), relative(*created, now)),
        ),
        line(
            "expires",
            match expires {
                Some(e) => format!("{} ({e}, {})", rfc3339(*e), relative(*e, now)),
                None => "none: hosts accept this release for as long as no newer one exists (no freeze protection)".into(),
            },
        ),
    ];
    match source {
        None => out.push(line("source", "none (no commit, lock hash or comment)")),
        Some(Source {
            git_commit,
            flake_lock_blake3,
            comment,
        }) => {
            out.push(line(
                "source.git_commit",
                git_commit.as_deref().map_or("none".into(), quoted),
            ));
            out.push(line(
                "source.flake_lock_blake3",
                flake_lock_blake3.map_or("none".into(), |d: Digest| d.to_hex()),
            ));
            out.push(line(
                "source.comment",
                comment.as_deref().map_or("none".into(), quoted),
            ));
        }
    }
    match toplevels {
        None => out.push(line(
            "toplevels",
            "none (toplevel-mode hosts evaluate the flake, or refuse it)",
        )),
        Some(t) => {
            for (name, path) in t {
                out.push(line(format!("toplevels.{}", visible(name)), quoted(path)));
            }
        }
    }
    match decommission {
        None => out.push(line("decommission", "none")),
        Some(list) => out.push(Line {
            field: "decommission".into(),
            value: format!(
                "{} -- hosts of these configurations skip the lockout inspection and probation for this release: it may stop their agent or move them to another remote, and nothing rolls it back",
                list.iter().map(|n| quoted(n)).collect::<Vec<_>>().join(", ")
            ),
            alert: true,
        }),
    }
    out.push(line(
        "rollout",
        rollout.as_ref().map_or(
            "none: every host activates at its next poll".into(),
            rollout_words,
        ),
    ));
    out.push(line(
        "statement",
        format!("{} ({} bytes signed)", Digest::of(bytes), bytes.len()),
    ));
    out
}

/// The review as text, one field a line (flagged lines start with `!!`).
pub fn render(lines: &[Line]) -> String {
    let width = lines.iter().map(|l| l.field.len()).max().unwrap_or(0);
    lines
        .iter()
        .map(|l| {
            format!(
                "{} {:<width$}  {}\n",
                if l.alert { "!!" } else { "  " },
                l.field,
                l.value
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::remote::RemoteName;
    use crate::format::statement::STATEMENT_TYPE;

    /// A statement with every field set.
    fn full() -> Statement {
        Statement {
            kind: STATEMENT_TYPE.into(),
            remote: RemoteName::new("prod").expect("name"),
            version: 7,
            previous: Some(Digest([1; 32])),
            archive: ArchiveRef {
                blake3: Digest([2; 32]),
                size: 123_456,
            },
            created: 1_800_000_000,
            expires: Some(1_800_086_400),
            source: Some(Source {
                git_commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                flake_lock_blake3: Some(Digest([3; 32])),
                comment: Some("fix".into()),
            }),
            toplevels: Some(
                [(
                    "web".to_owned(),
                    "/nix/store/abc-nixos-system-web".to_owned(),
                )]
                .into_iter()
                .collect(),
            ),
            decommission: Some(vec!["web1".into()]),
            rollout: Some(Rollout {
                points: vec![(0, 1), (3600, 1), (90_000, 100)],
                gates: vec![crate::format::rollout::Gate {
                    stage: "rest".into(),
                    percent: 1,
                }],
            }),
        }
    }

    /// The JSON paths of every value a statement signs (objects recursed).
    fn paths(v: &serde_json::Value, prefix: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) if prefix != "rollout" => {
                for (k, v) in m {
                    let p = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    paths(v, &p, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }

    /// Issue 29: `sign` never showed `decommission` or `rollout`, yet signed
    /// them. Every field the statement serialises must have a review line.
    #[test]
    fn every_signed_field_is_in_the_review() {
        let st = full();
        let bytes = st.to_bytes();
        let mut signed = Vec::new();
        paths(
            &serde_json::from_slice(&bytes).expect("json"),
            "",
            &mut signed,
        );
        let shown: Vec<String> = review(&st, &bytes, 1_800_000_000)
            .into_iter()
            .map(|l| l.field)
            .collect();
        for p in &signed {
            assert!(
                shown.iter().any(|s| s == p),
                "signed field {p} is not in the review: {shown:?}"
            );
        }
    }

    /// A compromised prepare machine adds `decommission`: the signer sees it
    /// flagged.
    #[test]
    fn decommission_added_by_a_prepare_machine_is_flagged_to_the_signer() {
        let st = full();
        let lines = review(&st, &st.to_bytes(), 1_800_000_000);
        let d = lines
            .iter()
            .find(|l| l.field == "decommission")
            .expect("line");
        assert!(d.alert);
        assert!(d.value.contains("\"web1\" (4 chars)"), "{}", d.value);
        assert!(render(&lines).contains("!! decommission"));
    }

    /// Issue 29: a comment padded with spaces drew a fake `expires:` line
    /// on an 80-column terminal, and "expires: none" was never printed.
    #[test]
    fn comment_padded_to_draw_a_fake_expires_line_is_shown_as_one_value() {
        let mut st = full();
        st.expires = None;
        st.source = Some(Source {
            comment: Some(format!(
                "ok{}expires:   2030-01-01T00:00:00Z",
                " ".repeat(70)
            )),
            ..Source::default()
        });
        let lines = review(&st, &st.to_bytes(), 1_800_000_000);
        let text = render(&lines);
        let c = lines
            .iter()
            .find(|l| l.field == "source.comment")
            .expect("comment");
        assert_eq!(
            c.value,
            "\"ok[70 spaces]expires:[3 spaces]2030-01-01T00:00:00Z\" (103 chars)"
        );
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some("expires") && l.contains("none:")),
            "{text}"
        );
        assert_eq!(text.lines().filter(|l| l.contains("expires")).count(), 2);
    }

    #[test]
    fn control_and_unicode_spaces_are_escaped() {
        assert_eq!(quoted("a\u{1b}[2Kb"), "\"a\\u{001b}[2Kb\" (6 chars)");
        assert_eq!(quoted("a\u{2003}b"), "\"a\\u{2003}b\" (3 chars)");
        assert_eq!(quoted("a\u{2800}b"), "\"a\\u{2800}b\" (3 chars)");
        assert_eq!(quoted("\u{3164}"), "\"\\u{3164}\" (1 chars)");
        assert_eq!(quoted(" x "), "\" x \" (3 chars)");
        assert_eq!(quoted("\t"), "\"\\u{0009}\" (1 chars)");
    }

    #[test]
    fn a_statement_without_optional_fields_says_so() {
        let mut st = full();
        st.expires = None;
        st.source = None;
        st.toplevels = None;
        st.decommission = None;
        st.rollout = None;
        let text = render(&review(&st, &st.to_bytes(), 1_800_000_000));
        for needle in [
            "expires",
            "none: hosts accept",
            "source ",
            "decommission",
            "rollout",
            "every host activates",
        ] {
            assert!(text.contains(needle), "{needle}: {text}");
        }
        assert!(!text.contains("!!"));
    }
}
