//! The hostile HTTP clients: the table of bad requests (each with the status the server
//! must answer and the words of its reason), and clients that send their headers or body
//! too slowly, or nothing at all. Requests are raw bytes, so paths and framing reach the
//! server exactly as written.
//!
//! Owns: building requests and timing slow connections. Never: judging the answers (the
//! test compares them with the table).

use super::hostile_call::{good_offer, raw_offer};
use super::hostile_wire::{parse_response, request, Rng};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const SDP: (&str, &str) = ("Content-Type", "application/sdp");
pub const FRAG: (&str, &str) = ("Content-Type", "application/trickle-ice-sdpfrag");

/// One hostile HTTP request and what the server must answer.
pub struct Case {
    pub what: String,
    pub request: Vec<u8>,
    /// Acceptable statuses.
    pub expect: &'static [u16],
    /// Words the one-line reason must contain ("" when the server gives none).
    pub reason: &'static str,
}

pub fn case(
    what: impl Into<String>,
    request: Vec<u8>,
    expect: &'static [u16],
    reason: &'static str,
) -> Case {
    Case {
        what: what.into(),
        request,
        expect,
        reason,
    }
}

pub const SDP_LINE: &str = "Content-Type: application/sdp";

/// A request written out line by line (with `Host` and `Connection: close`), for framing
/// no client library would produce.
pub fn raw(request_line: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut r = format!("{request_line} HTTP/1.1\r\nHost: parley.test\r\nConnection: close\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn post_sdp(target: &str, body: impl AsRef<[u8]>) -> Vec<u8> {
    request("POST", target.as_bytes(), &[SDP], body.as_ref())
}

/// An offer with `n` m-lines, all VP8 video.
pub fn offer_with_mlines(n: usize) -> String {
    let video = vec!["VP8/90000"; n];
    raw_offer("Abcd", "abcdefghijklmnopqrstuvwx", &[], &video, "recvonly")
}

/// The good offer with `lines` inserted at the end of its last m-section.
pub fn offer_plus(lines: &str) -> String {
    format!("{}{lines}", good_offer())
}

/// A session id no one was given: 32 hex digits.
pub fn random_id(rng: &mut Rng) -> String {
    format!("{:016x}{:016x}", rng.next_u64(), rng.next_u64())
}

/// The `Location` header of a raw response.
pub fn location(head: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("location")
            .then(|| value.trim().to_owned())
    })
}

/// The HTTP table: request → expected status (and reason). Requests that target a session
/// use the live viewer's session URL `viewer`, whose client ufrag is `ufrag`.
pub fn http_cases(viewer: &str, ufrag: &str, rng: &mut Rng) -> Vec<Case> {
    let good = good_offer();
    let half = &good.as_bytes()[..good.len() / 2];
    let filler: String = (0..1500)
        .map(|i| format!("a=x-filler-{i}:{}\r\n", "z".repeat(60)))
        .collect();
    let candidates: String = (0..2000)
        .map(|i| {
            format!(
                "a=candidate:{i} 1 udp 2130706431 10.{}.{}.{} {} typ host\r\n",
                i / 65536 % 256,
                i / 256 % 256,
                i % 256,
                1024 + i
            )
        })
        .collect();
    let cand = |ip: &str| {
        format!(
            "a=ice-ufrag:{ufrag}\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 {ip} 9 typ host\r\n"
        )
    };
    let many_cands = |n: usize| -> String {
        let mut f = format!("a=ice-ufrag:{ufrag}\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n");
        for i in 0..n {
            f.push_str(&format!(
                "a=candidate:{i} 1 udp {} 192.0.2.{} {} typ host\r\n",
                2_000_000_000 - i,
                i % 250 + 1,
                10_000 + i
            ));
        }
        f
    };
    let patch = |body: &[u8]| request("PATCH", viewer.as_bytes(), &[FRAG], body);
    let long = |n: usize| format!("/whip/{}", "r".repeat(n));
    let mut cases = Vec::new();
    // Offers that are not what they claim to be.
    cases.push(case(
        "valid offer cut in half",
        post_sdp("/whip/h", half),
        &[422],
        "payload type not found",
    ));
    cases.push(case(
        "binary junk (invalid UTF-8)",
        post_sdp(
            "/whip/h",
            rng.bytes(4096)
                .iter()
                .map(|b| b | 0x80)
                .collect::<Vec<u8>>(),
        ),
        &[400],
        "UTF-8",
    ));
    cases.push(case(
        "NUL bytes after v=0",
        post_sdp("/whip/h", b"v=0\r\n\0\0\0\0\x01\x02\r\n"),
        &[400],
        "control",
    ));
    cases.push(case(
        "empty body",
        post_sdp("/whip/h", b""),
        &[400],
        "empty",
    ));
    cases.push(case(
        "only v=0",
        post_sdp("/whip/h", b"v=0\r\n"),
        &[422],
        "no active audio or video",
    ));
    cases.push(case(
        "m= line without a port",
        post_sdp("/whip/h", good.replace("m=video 9", "m=video x")),
        &[400],
        "port",
    ));
    cases.push(case(
        "huge SDP under the limit (1500 unknown attributes, 100 KB)",
        post_sdp("/whip/h", offer_plus(&filler)),
        &[201],
        "",
    ));
    cases.push(case(
        "one 100 KB attribute line",
        post_sdp(
            "/whip/h",
            offer_plus(&format!("a=x-long:{}\r\n", "y".repeat(100_000))),
        ),
        &[201],
        "",
    ));
    cases.push(case(
        "5000 m-lines (over the body limit)",
        post_sdp("/whip/h", offer_with_mlines(5000)),
        &[413],
        "",
    ));
    cases.push(case(
        "100 m-lines (under the body limit)",
        post_sdp("/whep/h", offer_with_mlines(100)),
        &[422],
        "more than 64 media sections",
    ));
    cases.push(case(
        "2000 a=candidate lines in the offer",
        post_sdp("/whip/h", offer_plus(&candidates)),
        &[201],
        "",
    ));
    cases.push(case(
        "unknown codecs only",
        post_sdp(
            "/whip/h",
            raw_offer(
                "Abcd",
                "abcdefghijklmnopqrstuvwx",
                &["FOO/48000/2"],
                &["BAR/90000"],
                "sendonly",
            ),
        ),
        &[422],
        "codec",
    ));
    cases.push(case(
        "no ICE credentials",
        post_sdp(
            "/whip/h",
            good.replace("a=ice-ufrag:Abcd\r\n", "")
                .replace("a=ice-pwd:abcdefghijklmnopqrstuvwx\r\n", ""),
        ),
        &[422],
        "ICE credentials",
    ));
    cases.push(case(
        "no DTLS fingerprint",
        post_sdp("/whip/h", good.replace("a=fingerprint", "a=x-fingerprint")),
        &[422],
        "fingerprint",
    ));
    cases.push(case(
        "a data channel",
        post_sdp(
            "/whip/h",
            good.replace(
                "m=video 9 UDP/TLS/RTP/SAVPF 97",
                "m=application 9 UDP/DTLS/SCTP webrtc-datachannel",
            ),
        ),
        &[422],
        "data channels",
    ));
    // Wrong or odd content types and framing.
    cases.push(case(
        "Content-Type text/plain",
        request(
            "POST",
            b"/whip/h",
            &[("Content-Type", "text/plain")],
            good.as_bytes(),
        ),
        &[415],
        "application/sdp",
    ));
    cases.push(case(
        "no Content-Type",
        request("POST", b"/whip/h", &[], good.as_bytes()),
        &[415],
        "application/sdp",
    ));
    cases.push(case(
        "Content-Type application/sdpx",
        request(
            "POST",
            b"/whip/h",
            &[("Content-Type", "application/sdpx")],
            good.as_bytes(),
        ),
        &[415],
        "application/sdp",
    ));
    cases.push(case(
        "Content-Type application/sdp; charset=utf-8",
        request(
            "POST",
            b"/whip/h",
            &[("Content-Type", "application/sdp; charset=utf-8")],
            good.as_bytes(),
        ),
        &[201],
        "",
    ));
    // Not refused from the header: the server waits for the body until the request timeout.
    cases.push(case(
        "Content-Length 100 MB declared, nothing sent",
        raw(
            "POST /whip/h",
            &["Content-Type: application/sdp", "Content-Length: 100000000"],
            b"",
        ),
        &[408, 413],
        "",
    ));
    cases.push(case(
        "Content-Length not a number",
        raw("POST /whip/h", &["Content-Length: abc"], b""),
        &[400],
        "",
    ));
    cases.push(case(
        "Content-Length and Transfer-Encoding both",
        raw(
            "POST /whip/h",
            &[SDP_LINE, "Content-Length: 5", "Transfer-Encoding: chunked"],
            b"0\r\n\r\n",
        ),
        &[400],
        "empty",
    ));
    cases.push(case(
        "200 headers",
        request(
            "POST",
            b"/whip/h",
            &(0..200).map(|_| ("X-Junk", "j")).collect::<Vec<_>>(),
            good.as_bytes(),
        ),
        &[431],
        "",
    ));
    cases.push(case(
        "one 500 KB header",
        request(
            "POST",
            b"/whip/h",
            &[SDP, ("X-Junk", "j".repeat(500_000).as_str())],
            good.as_bytes(),
        ),
        &[431],
        "",
    ));
    // Odd path segments and queries.
    cases.push(case(
        "room %00",
        post_sdp("/whip/%00", &good),
        &[400],
        "room name",
    ));
    // "." and ".." are path steps, not names (clients' URL normalisation rewrites them).
    cases.push(case(
        "room ..",
        post_sdp("/whip/..", &good),
        &[400],
        "room name",
    ));
    cases.push(case(
        "room %2e%2e",
        post_sdp("/whip/%2e%2e", &good),
        &[400],
        "room name",
    ));
    cases.push(case(
        "room a%2Fb",
        post_sdp("/whip/a%2Fb", &good),
        &[400],
        "room name",
    ));
    cases.push(case(
        "room %C3%A4 (percent-encoded unicode)",
        post_sdp("/whip/%C3%A4", &good),
        &[400],
        "room name",
    ));
    cases.push(case(
        "room raw UTF-8 bytes",
        post_sdp("/whip/\u{e4}\u{1F600}", &good),
        &[400],
        "",
    ));
    cases.push(case(
        "room of 65 characters",
        post_sdp(&long(65), &good),
        &[400],
        "room name",
    ));
    cases.push(case(
        "room of 8000 characters",
        post_sdp(&long(8000), &good),
        &[400],
        "room name",
    ));
    cases.push(case(
        "room of 70000 characters",
        post_sdp(&long(70_000), &good),
        &[400, 414, 431],
        "",
    ));
    cases.push(case("empty room", post_sdp("/whip/", &good), &[404], ""));
    cases.push(case(
        "extra segments",
        post_sdp("/whip/r/x/y", &good),
        &[404],
        "",
    ));
    cases.push(case(
        "double slash",
        post_sdp("//whip/r", &good),
        &[404],
        "",
    ));
    cases.push(case(
        "participant %00 in the path",
        post_sdp("/whep/r/%00", &good),
        &[400],
        "participant name",
    ));
    cases.push(case(
        "participant %00 in the query",
        post_sdp("/whip/r?participant=%00", &good),
        &[400],
        "participant name",
    ));
    cases.push(case(
        "empty participant",
        post_sdp("/whip/r?participant=", &good),
        &[400],
        "participant name",
    ));
    cases.push(case(
        "participant given twice",
        post_sdp("/whip/r?participant=a&participant=b", &good),
        &[400],
        "",
    ));
    cases.push(case(
        "bad percent escape",
        post_sdp("/whip/r%ZZ", &good),
        &[400],
        "",
    ));
    // Wrong methods.
    cases.push(case(
        "GET /whip/r",
        request("GET", b"/whip/r", &[], b""),
        &[405],
        "",
    ));
    cases.push(case(
        "PUT /whip/r",
        request("PUT", b"/whip/r", &[SDP], good.as_bytes()),
        &[405],
        "",
    ));
    cases.push(case(
        "DELETE /whip/r",
        request("DELETE", b"/whip/r", &[], b""),
        &[405],
        "",
    ));
    cases.push(case(
        "PATCH /whep/r",
        request("PATCH", b"/whep/r", &[FRAG], b"a=end-of-candidates\r\n"),
        &[405],
        "",
    ));
    cases.push(case(
        "GET on a session",
        request("GET", viewer.as_bytes(), &[], b""),
        &[405],
        "",
    ));
    cases.push(case(
        "POST on a session",
        request("POST", viewer.as_bytes(), &[SDP], good.as_bytes()),
        &[405],
        "",
    ));
    cases.push(case(
        "BREW /whip/r",
        request("BREW", b"/whip/r", &[], b""),
        &[405],
        "",
    ));
    // Sessions that are not yours (ids cannot be guessed) and odd ids.
    cases.push(case(
        "PATCH a random id",
        request(
            "PATCH",
            format!("/sessions/{}", random_id(rng)).as_bytes(),
            &[FRAG],
            b"a=end-of-candidates\r\n",
        ),
        &[404],
        "no such session",
    ));
    cases.push(case(
        "DELETE a random id",
        request(
            "DELETE",
            format!("/sessions/{}", random_id(rng)).as_bytes(),
            &[],
            b"",
        ),
        &[404],
        "no such session",
    ));
    cases.push(case(
        "DELETE an id of 5000 characters",
        request(
            "DELETE",
            format!("/sessions/{}", "a".repeat(5000)).as_bytes(),
            &[],
            b"",
        ),
        &[404],
        "no such session",
    ));
    cases.push(case(
        "DELETE /sessions/%00",
        request("DELETE", b"/sessions/%00", &[], b""),
        &[404],
        "no such session",
    ));
    cases.push(case(
        "DELETE /sessions/..",
        request("DELETE", b"/sessions/..", &[], b""),
        &[404],
        "",
    ));
    cases.push(case(
        "events of a random id",
        request(
            "GET",
            format!("/sessions/{}/events", random_id(rng)).as_bytes(),
            &[],
            b"",
        ),
        &[404],
        "",
    ));
    cases.push(case(
        "remove a participant nobody is",
        request("DELETE", b"/rooms/h/participants/nobody", &[], b""),
        &[404],
        "",
    ));
    // Fragments for the live viewer's session.
    cases.push(case(
        "PATCH with Content-Type text/plain",
        request(
            "PATCH",
            viewer.as_bytes(),
            &[("Content-Type", "text/plain")],
            b"a=end-of-candidates\r\n",
        ),
        &[415],
        "trickle-ice-sdpfrag",
    ));
    cases.push(case(
        "PATCH with an empty fragment",
        patch(b""),
        &[400],
        "empty",
    ));
    cases.push(case(
        "PATCH with words",
        patch(b"hello there"),
        &[400],
        "not of the form",
    ));
    cases.push(case(
        "PATCH with binary junk",
        patch(&rng.bytes(512).iter().map(|b| b | 0x80).collect::<Vec<u8>>()),
        &[400],
        "UTF-8",
    ));
    cases.push(case(
        "PATCH with control characters",
        patch(b"a=mid:0\x07\r\n"),
        &[400],
        "control character",
    ));
    cases.push(case(
        "PATCH with a short candidate",
        patch(b"a=candidate:1 1 udp\r\n"),
        &[400],
        "bad candidate",
    ));
    cases.push(case(
        "PATCH with a bad ufrag",
        patch(b"a=ice-ufrag:x\r\n"),
        &[400],
        "ice-ufrag",
    ));
    cases.push(case(
        "PATCH with two ufrags",
        patch(format!("a=ice-ufrag:{ufrag}\r\na=ice-ufrag:Zzzz\r\n").as_bytes()),
        &[400],
        "two different",
    ));
    cases.push(case(
        "PATCH with a repeated mid",
        patch(b"a=mid:0\r\na=mid:1\r\n"),
        &[400],
        "repeats a=mid",
    ));
    cases.push(case(
        "PATCH with 65 m= sections",
        patch("m=audio 9 RTP/AVP 0\r\n".repeat(65).as_bytes()),
        &[400],
        "media sections",
    ));
    cases.push(case(
        "PATCH with 257 candidates",
        patch(many_cands(257).as_bytes()),
        &[400],
        "256 candidates",
    ));
    cases.push(case(
        "PATCH over the body limit",
        patch(format!("a=x:{}\r\n", "q".repeat(200_000)).as_bytes()),
        &[413],
        "",
    ));
    cases.push(case(
        "trickle for a different ufrag",
        patch(b"a=ice-ufrag:Other\r\na=mid:0\r\na=candidate:1 1 udp 1 192.0.2.1 9 typ host\r\n"),
        &[428],
        "If-Match",
    ));
    cases.push(case(
        "ICE restart without If-Match",
        patch(b"a=ice-ufrag:Wxyz\r\na=ice-pwd:zyxwvutsrqponmlkjihgfedc\r\n"),
        &[428],
        "If-Match",
    ));
    cases.push(case(
        "ICE restart with a stale If-Match",
        request(
            "PATCH",
            viewer.as_bytes(),
            &[FRAG, ("If-Match", "\"stale\"")],
            b"a=ice-ufrag:Wxyz\r\na=ice-pwd:zyxwvutsrqponmlkjihgfedc\r\n",
        ),
        &[412],
        "ETag",
    ));
    cases.push(case(
        "ICE restart, If-Match *, no password",
        request(
            "PATCH",
            viewer.as_bytes(),
            &[FRAG, ("If-Match", "*")],
            b"a=ice-ufrag:Wxyz\r\n",
        ),
        &[400],
        "ice-pwd",
    ));
    cases.push(case(
        "trickle 256 unreachable candidates",
        patch(many_cands(256).as_bytes()),
        &[204],
        "",
    ));
    cases.push(case(
        "trickle an mDNS candidate",
        patch(cand("f3a0b1c2-0000-4000-8000-000000000000.local").as_bytes()),
        &[204],
        "",
    ));
    cases.push(case(
        "trickle an IPv6 candidate",
        patch(cand("2001:db8::1").as_bytes()),
        &[204],
        "",
    ));
    cases.push(case(
        "trickle a candidate on port 0",
        patch(
            format!("a=ice-ufrag:{ufrag}\r\na=candidate:1 1 udp 1 192.0.2.9 0 typ host\r\n")
                .as_bytes(),
        ),
        &[204],
        "",
    ));
    let tcp = format!(
        "a=ice-ufrag:{ufrag}\r\na=candidate:1 1 tcp 1 192.0.2.9 9 typ host tcptype active\r\n"
    );
    cases.push(case(
        "trickle a TCP candidate",
        patch(tcp.as_bytes()),
        &[204],
        "",
    ));
    cases
}

/// A client that writes one header byte every 500 ms and never finishes. Returns how long
/// the server kept the connection open (`None`: still open after `cap`) and any status it
/// sent before closing.
pub async fn slow_headers(addr: SocketAddr, cap: Duration) -> (Option<Duration>, Option<u16>) {
    let start = Instant::now();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return (Some(start.elapsed()), None);
    };
    let head = b"POST /whip/slow HTTP/1.1\r\nHost: parley.test\r\nX-Slow: ";
    let mut pace = tokio::time::interval(Duration::from_millis(500));
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let mut sent = 0usize;
    while start.elapsed() < cap {
        tokio::select! {
            _ = pace.tick() => {
                let byte = head.get(sent).copied().unwrap_or(b'a');
                sent += 1;
                if stream.write_all(&[byte]).await.is_err() {
                    break;
                }
            }
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
        }
    }
    let status = parse_response(&got, true, start.elapsed()).status;
    let elapsed = start.elapsed();
    ((elapsed < cap).then_some(elapsed), status)
}

/// A client that sends complete headers announcing a 4000-byte offer, then one body byte
/// every 500 ms. Returns when the connection closed and the status it got, if any.
pub async fn slow_body(addr: SocketAddr, cap: Duration) -> (Option<Duration>, Option<u16>) {
    let start = Instant::now();
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return (Some(start.elapsed()), None);
    };
    let head = raw(
        "POST /whip/slow",
        &[SDP_LINE, "Content-Length: 4000"],
        b"v=0\r\n",
    );
    if stream.write_all(&head).await.is_err() {
        return (Some(start.elapsed()), None);
    }
    let mut pace = tokio::time::interval(Duration::from_millis(500));
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while start.elapsed() < cap {
        tokio::select! {
            _ = pace.tick() => {
                if stream.write_all(b"a").await.is_err() {
                    break;
                }
            }
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            },
        }
    }
    let status = parse_response(&got, true, start.elapsed()).status;
    let elapsed = start.elapsed();
    ((elapsed < cap).then_some(elapsed), status)
}

/// A client that connects and sends nothing.
pub async fn idle(addr: SocketAddr, cap: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let mut buf = [0u8; 64];
    match tokio::time::timeout(cap, stream.read(&mut buf)).await {
        Ok(_) => Some(start.elapsed()),
        Err(_) => None,
    }
}
