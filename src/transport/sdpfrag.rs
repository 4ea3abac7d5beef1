//! Parser for `application/trickle-ice-sdpfrag` bodies (RFC 8840), as WHIP (RFC 9725 §4.3)
//! and WHEP clients send them in `PATCH` requests to trickle candidates or restart ICE.
//!
//! This module owns turning an untrusted fragment into an [`SdpFrag`]: ICE credentials,
//! and per media section its `mid`, candidate lines and end-of-candidates flag. It validates
//! what the ICE agent would otherwise choke on (credential syntax, candidate shape, limits)
//! and ignores SDP lines it does not need. It must never panic on a body, never touch a
//! session, and never decide what a fragment means for one (trickle or restart) beyond
//! [`SdpFrag::is_restart`].

use std::fmt;

/// At most this many `m=` sections in one fragment.
pub const MAX_MEDIA_SECTIONS: usize = 64;
/// At most this many `a=candidate` lines in one fragment, over all sections.
pub const MAX_CANDIDATES: usize = 256;

const UFRAG_LEN: std::ops::RangeInclusive<usize> = 4..=256;
const PWD_LEN: std::ops::RangeInclusive<usize> = 22..=256;

/// A parsed fragment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SdpFrag {
    /// `a=ice-ufrag`, from session or media level.
    pub ice_ufrag: Option<String>,
    /// `a=ice-pwd`, from session or media level.
    pub ice_pwd: Option<String>,
    /// Media sections in order. Lines before the first `m=` that belong to a section
    /// (`a=mid`, `a=candidate`, `a=end-of-candidates`) open an implicit one without `m=`.
    pub media: Vec<FragMedia>,
}

/// One media section of a fragment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FragMedia {
    /// `a=mid`, if given.
    pub mid: Option<String>,
    /// Candidate attributes without `a=`, e.g. `candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host`.
    pub candidates: Vec<String>,
    /// Whether `a=end-of-candidates` was present.
    pub end_of_candidates: bool,
}

/// Why a fragment was rejected. `line` numbers count from 1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FragError {
    /// A control character other than CR, LF or TAB, or a CR not ending a line.
    ControlCharacter {
        /// Where.
        line: usize,
    },
    /// A line that is not `<letter>=<value>`.
    NotSdp {
        /// Where.
        line: usize,
    },
    /// A malformed `a=candidate` line.
    BadCandidate {
        /// Where.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `a=ice-ufrag` with characters outside ice-char or a length outside 4..=256.
    BadUfrag,
    /// `a=ice-pwd` with characters outside ice-char or a length outside 22..=256.
    BadPwd,
    /// Two different `a=ice-ufrag` values.
    ConflictingUfrag,
    /// Two different `a=ice-pwd` values.
    ConflictingPwd,
    /// Two `a=mid` lines in one media section.
    DuplicateMid {
        /// Where the second one is.
        line: usize,
    },
    /// More than [`MAX_MEDIA_SECTIONS`] media sections.
    TooManyMediaSections,
    /// More than [`MAX_CANDIDATES`] candidates.
    TooManyCandidates,
}

impl fmt::Display for FragError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ControlCharacter { line } => {
                write!(f, "SDP fragment line {line} contains a control character")
            }
            Self::NotSdp { line } => {
                write!(f, "SDP fragment line {line} is not of the form x=value")
            }
            Self::BadCandidate { line, reason } => {
                write!(f, "SDP fragment line {line}: bad candidate: {reason}")
            }
            Self::BadUfrag => f.write_str(
                "a=ice-ufrag must be 4 to 256 characters of letters, digits, '+' and '/'",
            ),
            Self::BadPwd => f.write_str(
                "a=ice-pwd must be 22 to 256 characters of letters, digits, '+' and '/'",
            ),
            Self::ConflictingUfrag => f.write_str("SDP fragment has two different a=ice-ufrag"),
            Self::ConflictingPwd => f.write_str("SDP fragment has two different a=ice-pwd"),
            Self::DuplicateMid { line } => {
                write!(
                    f,
                    "SDP fragment line {line} repeats a=mid in one media section"
                )
            }
            Self::TooManyMediaSections => write!(
                f,
                "SDP fragment has more than {MAX_MEDIA_SECTIONS} media sections"
            ),
            Self::TooManyCandidates => {
                write!(f, "SDP fragment has more than {MAX_CANDIDATES} candidates")
            }
        }
    }
}

impl std::error::Error for FragError {}

impl SdpFrag {
    /// Whether this fragment restarts ICE: it carries a ufrag that differs from the one the
    /// session currently uses for the remote side.
    pub fn is_restart(&self, current_remote_ufrag: &str) -> bool {
        self.ice_ufrag
            .as_deref()
            .is_some_and(|u| u != current_remote_ufrag)
    }

    /// Every candidate of every section, in order, with its section's `mid`.
    pub fn candidates(&self) -> impl Iterator<Item = (Option<&str>, &str)> + '_ {
        self.media.iter().flat_map(|m| {
            m.candidates
                .iter()
                .map(move |c| (m.mid.as_deref(), c.as_str()))
        })
    }
}

/// ice-char = ALPHA / DIGIT / "+" / "/" (RFC 8839 §5.4).
fn ice_chars(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Records a credential, rejecting bad syntax and disagreement with an earlier value.
fn set_credential(
    slot: &mut Option<String>,
    value: &str,
    len: std::ops::RangeInclusive<usize>,
    bad: FragError,
    conflict: FragError,
) -> Result<(), FragError> {
    if !len.contains(&value.len()) || !ice_chars(value) {
        return Err(bad);
    }
    match slot {
        Some(old) if old != value => Err(conflict),
        Some(_) => Ok(()),
        None => {
            *slot = Some(value.to_owned());
            Ok(())
        }
    }
}

/// Checks `candidate:<foundation> <component> <transport> <priority> <address> <port> typ
/// <type> ...` (RFC 8839 §5.1) far enough for the ICE agent to take it.
fn check_candidate(value: &str) -> Result<(), &'static str> {
    let fields = value.strip_prefix("candidate:").unwrap_or(value);
    let mut it = fields.split_ascii_whitespace();
    let mut field = || it.next().ok_or("fewer than 8 fields");
    let foundation = field()?;
    let component = field()?;
    let _transport = field()?;
    let priority = field()?;
    let _address = field()?;
    let port = field()?;
    let typ = field()?;
    let _kind = field()?;
    if foundation.len() > 32 || !ice_chars(foundation) {
        return Err("foundation must be 1 to 32 ice-chars");
    }
    if !matches!(component.parse::<u16>(), Ok(1..=256)) {
        return Err("component must be a number from 1 to 256");
    }
    if priority.parse::<u32>().is_err() {
        return Err("priority must be a 32-bit number");
    }
    if port.parse::<u16>().is_err() {
        return Err("port must be a number from 0 to 65535");
    }
    if typ != "typ" {
        return Err("seventh field must be \"typ\"");
    }
    Ok(())
}

/// Parses a trickle-ice-sdpfrag body.
pub fn parse(body: &str) -> Result<SdpFrag, FragError> {
    let mut frag = SdpFrag::default();
    let mut candidates = 0usize;
    for (index, raw) in body.split('\n').enumerate() {
        let line = index + 1;
        let text = raw.strip_suffix('\r').unwrap_or(raw);
        if text.chars().any(|c| c.is_control() && c != '\t') {
            return Err(FragError::ControlCharacter { line });
        }
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let Some((kind, value)) = text.split_once('=') else {
            return Err(FragError::NotSdp { line });
        };
        if kind.len() != 1 || !kind.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(FragError::NotSdp { line });
        }
        if kind == "m" {
            if frag.media.len() >= MAX_MEDIA_SECTIONS {
                return Err(FragError::TooManyMediaSections);
            }
            frag.media.push(FragMedia::default());
            continue;
        }
        if kind != "a" {
            continue;
        }
        let (name, arg) = value.split_once(':').unwrap_or((value, ""));
        let arg = arg.trim();
        match name {
            "ice-ufrag" => set_credential(
                &mut frag.ice_ufrag,
                arg,
                UFRAG_LEN,
                FragError::BadUfrag,
                FragError::ConflictingUfrag,
            )?,
            "ice-pwd" => set_credential(
                &mut frag.ice_pwd,
                arg,
                PWD_LEN,
                FragError::BadPwd,
                FragError::ConflictingPwd,
            )?,
            "mid" => {
                let media = current_section(&mut frag.media);
                if media.mid.is_some() {
                    return Err(FragError::DuplicateMid { line });
                }
                media.mid = Some(arg.to_owned());
            }
            "candidate" => {
                check_candidate(value)
                    .map_err(|reason| FragError::BadCandidate { line, reason })?;
                candidates += 1;
                if candidates > MAX_CANDIDATES {
                    return Err(FragError::TooManyCandidates);
                }
                current_section(&mut frag.media)
                    .candidates
                    .push(value.to_owned());
            }
            "end-of-candidates" => current_section(&mut frag.media).end_of_candidates = true,
            // a=group:BUNDLE, a=ice-options and anything else: nothing to do.
            _ => {}
        }
    }
    Ok(frag)
}

/// The section lines go to: the last one, or an implicit one if no `m=` came yet.
fn current_section(media: &mut Vec<FragMedia>) -> &mut FragMedia {
    if media.is_empty() {
        media.push(FragMedia::default());
    }
    let last = media.len() - 1;
    &mut media[last]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Trickle request in the style of RFC 9725 §4.3.1 (candidates for one bundled section).
    const WHIP_TRICKLE: &str = "a=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=mid:0\r\n\
        a=ice-ufrag:EsAw\r\n\
        a=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
        a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
        a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0 ufrag EsAw network-id 2\r\n\
        a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 ufrag EsAw network-id 1\r\n\
        a=candidate:2154773085 1 tcp 1518214911 198.51.100.2 9 typ host tcptype active generation 0 ufrag EsAw network-id 2\r\n\
        a=end-of-candidates\r\n";

    /// ICE restart request in the style of RFC 9725 §4.4.1: new credentials, no candidates.
    const WHIP_RESTART: &str = "a=ice-options:trickle ice2\r\n\
        a=group:BUNDLE 0 1\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
        a=mid:0\r\n\
        a=ice-ufrag:ysXw\r\n\
        a=ice-pwd:vw5LmwG4y/e6dPP/zAP9Gp5k\r\n\
        a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\r\n\
        a=end-of-candidates\r\n";

    const PWD: &str = "abcdefghijklmnopqrstuv";
    const CAND: &str = "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host";

    #[test]
    fn whip_trickle_example() {
        let frag = parse(WHIP_TRICKLE).expect("parses");
        assert_eq!(frag.ice_ufrag.as_deref(), Some("EsAw"));
        assert_eq!(frag.ice_pwd.as_deref(), Some("P2uYro0UCOQ4zxjKXaWCBui1"));
        assert_eq!(frag.media.len(), 1);
        let m = &frag.media[0];
        assert_eq!(m.mid.as_deref(), Some("0"));
        assert_eq!(m.candidates.len(), 4);
        assert_eq!(
            m.candidates[0],
            "candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1"
        );
        assert!(m.end_of_candidates);
        assert!(!frag.is_restart("EsAw"));
        assert_eq!(frag.candidates().count(), 4);
        assert!(frag.candidates().all(|(mid, _)| mid == Some("0")));
    }

    #[test]
    fn whip_restart_example() {
        let frag = parse(WHIP_RESTART).expect("parses");
        assert!(frag.is_restart("EsAw"));
        assert!(!frag.is_restart("ysXw"));
        assert_eq!(frag.ice_pwd.as_deref(), Some("vw5LmwG4y/e6dPP/zAP9Gp5k"));
    }

    /// (name, body, ufrag, pwd, [(mid, candidate count, end-of-candidates)])
    type Accepted<'a> = (
        &'a str,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        &'a [(Option<&'a str>, usize, bool)],
    );

    #[test]
    fn accepted_fragments() {
        let lf_only = format!(
            "a=ice-ufrag:abcd\na=ice-pwd:{PWD}\nm=video 9 UDP/TLS/RTP/SAVPF 96\na=mid:1\n{CAND}\n"
        );
        let session_level = format!(
            "a=ice-ufrag:abcd\r\na=ice-pwd:{PWD}\r\nm=audio 9 UDP 0\r\na=mid:0\r\n{CAND}\r\n"
        );
        let both_levels = format!(
            "a=ice-ufrag:abcd\r\nm=audio 9 UDP 0\r\na=ice-ufrag:abcd\r\na=ice-pwd:{PWD}\r\n"
        );
        let two_sections = format!(
            "m=audio 9 UDP 0\r\na=mid:0\r\n{CAND}\r\nm=video 9 UDP 0\r\na=mid:1\r\n{CAND}\r\n{CAND}\r\na=end-of-candidates\r\n"
        );
        let table: &[Accepted] = &[
            ("LF line ends", &lf_only, Some("abcd"), Some(PWD), &[(Some("1"), 1, false)]),
            ("session-level credentials", &session_level, Some("abcd"), Some(PWD), &[(Some("0"), 1, false)]),
            ("same credentials at both levels", &both_levels, Some("abcd"), Some(PWD), &[(None, 0, false)]),
            ("two sections", &two_sections, None, None, &[(Some("0"), 1, false), (Some("1"), 2, true)]),
            ("candidate without m= opens an implicit section", CAND, None, None, &[(None, 1, false)]),
            ("end-of-candidates alone", "a=end-of-candidates", None, None, &[(None, 0, true)]),
            ("empty body", "", None, None, &[]),
            ("blank lines and unknown lines", "\r\n\r\nv=0\r\na=ice-options:trickle\r\na=x-foo\r\n", None, None, &[]),
            ("tab inside a line", "a=ice-ufrag:abcd\t", Some("abcd"), None, &[]),
            (
                "mDNS and tcp candidates",
                "m=audio 9 UDP 0\na=candidate:0 1 UDP 2122252543 3f1d-44.local 54400 typ host\na=candidate:2 1 TCP 2105524479 10.0.0.1 9 typ host tcptype active",
                None,
                None,
                &[(None, 2, false)],
            ),
            (
                "srflx with raddr",
                "a=candidate:842163049 1 udp 1677729535 203.0.113.7 51234 typ srflx raddr 10.0.0.1 rport 51234",
                None,
                None,
                &[(None, 1, false)],
            ),
        ];
        for (name, body, ufrag, pwd, media) in table {
            let frag = parse(body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(frag.ice_ufrag.as_deref(), *ufrag, "{name}");
            assert_eq!(frag.ice_pwd.as_deref(), *pwd, "{name}");
            let got: Vec<_> = frag
                .media
                .iter()
                .map(|m| (m.mid.as_deref(), m.candidates.len(), m.end_of_candidates))
                .collect();
            assert_eq!(got, media.to_vec(), "{name}");
        }
    }

    #[test]
    fn rejected_fragments() {
        use FragError::*;
        let long = "a".repeat(257);
        let ctl = |line| ControlCharacter { line };
        let not_sdp = |line| NotSdp { line };
        let m64 = "m=audio 9 UDP 0\n".repeat(MAX_MEDIA_SECTIONS);
        let table: Vec<(&str, String, FragError)> = vec![
            ("NUL", "a=mid:0\0".into(), ctl(1)),
            ("bare CR", "a=mid:0\rx\r\n".into(), ctl(1)),
            (
                "escape char on line 2",
                "a=mid:0\r\na=x\u{1b}".into(),
                ctl(2),
            ),
            ("C1 control", "a=mid:\u{85}".into(), ctl(1)),
            ("not SDP", "hello".into(), not_sdp(1)),
            ("JSON", "{\"candidate\":\"x\"}".into(), not_sdp(1)),
            ("long type", "ab=c".into(), not_sdp(1)),
            ("upper-case type", "A=mid:0".into(), not_sdp(1)),
            (
                "bad candidate on line 2",
                "m=audio 9 UDP 0\na=candidate:1 1 udp 1 h 5000 typ".into(),
                bad_cand(2, "fewer than 8 fields"),
            ),
            ("short ufrag", "a=ice-ufrag:abc".into(), BadUfrag),
            ("long ufrag", format!("a=ice-ufrag:{long}"), BadUfrag),
            ("ufrag with dash", "a=ice-ufrag:ab-cd".into(), BadUfrag),
            ("ufrag non-ASCII", "a=ice-ufrag:abcdé".into(), BadUfrag),
            ("empty ufrag", "a=ice-ufrag:".into(), BadUfrag),
            (
                "short pwd",
                "a=ice-pwd:abcdefghijklmnopqrstu".into(),
                BadPwd,
            ),
            ("long pwd", format!("a=ice-pwd:{long}"), BadPwd),
            (
                "pwd with space",
                "a=ice-pwd:abcdefghijk mnopqrstuvwx".into(),
                BadPwd,
            ),
            (
                "ufrag conflict",
                "a=ice-ufrag:abcd\nm=audio 9 UDP 0\na=ice-ufrag:efgh".into(),
                ConflictingUfrag,
            ),
            (
                "pwd conflict",
                format!("a=ice-pwd:{PWD}\r\na=ice-pwd:{PWD}x"),
                ConflictingPwd,
            ),
            (
                "two mids",
                "m=audio 9 UDP 0\r\na=mid:0\r\na=mid:1".into(),
                DuplicateMid { line: 3 },
            ),
            (
                "65 sections",
                format!("{m64}m=video 9 UDP 0"),
                TooManyMediaSections,
            ),
            (
                "implicit section plus 64",
                format!("{CAND}\n{m64}"),
                TooManyMediaSections,
            ),
            (
                "257 candidates",
                format!("{CAND}\n").repeat(MAX_CANDIDATES + 1),
                TooManyCandidates,
            ),
        ];
        for (name, body, want) in &table {
            assert_eq!(parse(body).as_ref(), Err(want), "{name}");
            assert!(!want.to_string().contains('\n'), "{name}: one-line reason");
        }
    }

    fn bad_cand(line: usize, reason: &'static str) -> FragError {
        FragError::BadCandidate { line, reason }
    }

    #[test]
    fn candidate_shapes() {
        // (candidate attribute, None if accepted or the start of the reason)
        let table: &[(&str, Option<&str>)] = &[
            ("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", None),
            (
                "candidate:a+/Z 256 UDP 0 ::1 0 typ relay raddr 0.0.0.0 rport 0",
                None,
            ),
            (
                "candidate:1 1 udp 2130706431 127.0.0.1 5000 typ",
                Some("fewer"),
            ),
            ("candidate", Some("fewer")),
            ("candidate:1 rtp udp 1 h 5000 typ host", Some("component")),
            ("candidate:1 0 udp 1 h 5000 typ host", Some("component")),
            ("candidate:1 257 udp 1 h 5000 typ host", Some("component")),
            ("candidate:1 1 udp -1 h 5000 typ host", Some("priority")),
            (
                "candidate:1 1 udp 4294967296 h 5000 typ host",
                Some("priority"),
            ),
            ("candidate:1 1 udp 1 h 65536 typ host", Some("port")),
            ("candidate:1 1 udp 1 h http typ host", Some("port")),
            ("candidate:1 1 udp 1 h 5000 type host", Some("seventh")),
            ("candidate:a-b 1 udp 1 h 5000 typ host", Some("foundation")),
            (
                "candidate:123456789012345678901234567890123 1 udp 1 h 5 typ host",
                Some("foundation"),
            ),
        ];
        for (value, want) in table {
            match (check_candidate(value), want) {
                (Ok(()), None) => {}
                (Err(reason), Some(prefix)) if reason.starts_with(prefix) => {}
                (got, _) => panic!("{value}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn limits_are_inclusive() {
        let sections = "m=audio 9 UDP 0\n".repeat(MAX_MEDIA_SECTIONS);
        assert_eq!(
            parse(&sections).map(|f| f.media.len()),
            Ok(MAX_MEDIA_SECTIONS)
        );
        let cands = format!("{CAND}\n").repeat(MAX_CANDIDATES);
        assert_eq!(
            parse(&cands).map(|f| f.candidates().count()),
            Ok(MAX_CANDIDATES)
        );
        let ufrag = format!(
            "a=ice-ufrag:{}\na=ice-pwd:{}",
            "u".repeat(256),
            "p".repeat(256)
        );
        assert!(parse(&ufrag).is_ok());
        assert!(parse("a=ice-ufrag:a+/9").is_ok());
    }

    #[test]
    fn restart_detection() {
        let table: &[(&str, &str, bool)] = &[
            ("a=ice-ufrag:abcd", "abcd", false),
            ("a=ice-ufrag:abcd", "efgh", true),
            ("a=ice-ufrag:abcd", "ABCD", true),
            (CAND, "abcd", false),
            ("", "", false),
        ];
        for (body, current, want) in table {
            let frag = parse(body).expect("parses");
            assert_eq!(frag.is_restart(current), *want, "{body} vs {current}");
        }
    }

    #[test]
    fn arbitrary_text_never_panics() {
        let pieces = [
            "a=",
            "m=",
            "candidate:",
            "ice-ufrag:",
            "ice-pwd:",
            "mid:",
            "end-of-candidates",
            " ",
            "1",
            "udp",
            "typ",
            "host",
            "\r\n",
            "\n",
            "\r",
            "\t",
            "\0",
            "é",
            "=",
            ":",
            "x",
        ];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut body = String::new();
            for _ in 0..(state % 40) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                body.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            state = state.wrapping_add(0x9e37_79b9);
            let _ = parse(&body);
        }
    }
}
