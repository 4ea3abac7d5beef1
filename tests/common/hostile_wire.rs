//! Bytes a hostile client puts on the wire, built by hand: raw HTTP/1.1 requests (paths no
//! URL library would let through), and UDP datagrams that look like STUN, DTLS, RTP and
//! RTCP. Pure builders plus one raw HTTP exchange; nothing here knows what the server
//! should answer.

use rtc::ice::attributes::control::AttrControlling;
use rtc::ice::attributes::priority::PriorityAttr;
use rtc::ice::attributes::use_candidate::UseCandidateAttr;
use rtc::stun::attributes::ATTR_USERNAME;
use rtc::stun::fingerprint::FINGERPRINT;
use rtc::stun::integrity::MessageIntegrity;
use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
use rtc::stun::textattrs::Username;
use rtc::stun::xoraddr::XorMappedAddress;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// A small deterministic generator (xorshift64*), so a failing case can be replayed from
/// its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// What came back from a raw HTTP exchange.
#[derive(Debug)]
pub struct RawResponse {
    /// The status code, if a status line arrived.
    pub status: Option<u16>,
    /// Everything after the header block (not de-chunked).
    pub body: String,
    /// The header block, for headers such as Retry-After.
    pub head: String,
    /// Whether the server closed (or reset) the connection before `timeout`.
    pub closed: bool,
    pub elapsed: Duration,
}

/// Sends `request` as is on a new connection and reads until the server closes it or
/// `timeout` passes. Write errors are ignored: a server may answer and close before it has
/// read a large body.
pub async fn raw_http(addr: SocketAddr, request: &[u8], timeout: Duration) -> RawResponse {
    let start = Instant::now();
    let mut got = Vec::new();
    let mut closed = false;
    if let Ok(mut stream) = TcpStream::connect(addr).await {
        let _ = stream.write_all(request).await;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 8192];
        loop {
            match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
    } else {
        closed = true;
    }
    parse_response(&got, closed, start.elapsed())
}

/// Splits a raw HTTP/1.1 response into status, head and body.
pub fn parse_response(raw: &[u8], closed: bool, elapsed: Duration) -> RawResponse {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    RawResponse {
        status,
        body: body.to_owned(),
        head: head.to_owned(),
        closed,
        elapsed,
    }
}

/// An HTTP/1.1 request with `Connection: close` and a Content-Length for `body`.
pub fn request(method: &str, target: &[u8], headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(body.len() + 256);
    r.extend_from_slice(method.as_bytes());
    r.push(b' ');
    r.extend_from_slice(target);
    r.extend_from_slice(b" HTTP/1.1\r\nHost: parley.test\r\nConnection: close\r\n");
    for (name, value) in headers {
        r.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    r.extend_from_slice(body);
    r
}

/// A STUN binding request as an ICE controlling agent sends it, with `USERNAME` set to
/// `username` and USE-CANDIDATE (nomination) if `nominate`. With `integrity_key`,
/// MESSAGE-INTEGRITY (keyed with that password) and FINGERPRINT follow; without, the
/// request carries neither.
pub fn stun_binding(username: &str, integrity_key: Option<&str>) -> Vec<u8> {
    stun_request(username, integrity_key, true)
}

/// [`stun_binding`] with or without USE-CANDIDATE.
pub fn stun_request(username: &str, integrity_key: Option<&str>, nominate: bool) -> Vec<u8> {
    let crypto = rtc::crypto::default_provider().expect("a crypto provider");
    let mut m = Message::new();
    let mut setters: Vec<Box<dyn Setter + '_>> = vec![
        Box::new(BINDING_REQUEST),
        Box::new(TransactionId::new()),
        Box::new(Username::new(ATTR_USERNAME, username.to_owned())),
        Box::new(AttrControlling(0x0123_4567_89ab_cdef)),
        Box::new(PriorityAttr(2_130_706_431)),
    ];
    if nominate {
        setters.push(Box::new(UseCandidateAttr));
    }
    if let Some(key) = integrity_key {
        setters.push(Box::new(
            MessageIntegrity::new_short_term_integrity_with_provider(
                key.to_owned(),
                crypto.crypto(),
            ),
        ));
        setters.push(Box::new(FINGERPRINT));
    }
    m.build(&setters).expect("a STUN message builds");
    m.raw.clone()
}

/// The binding success answering `request` (a STUN binding request received from
/// `from`), keyed with our password `key`; `None` if `request` is not STUN.
pub fn stun_success(request: &[u8], from: SocketAddr, key: &str) -> Option<Vec<u8>> {
    let crypto = rtc::crypto::default_provider().expect("a crypto provider");
    let mut req = Message::new();
    req.raw = request.to_vec();
    req.decode().ok()?;
    let mut out = Message::new();
    out.build(&[
        Box::new(req),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress {
            ip: from.ip(),
            port: from.port(),
        }),
        Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
            key.to_owned(),
            crypto.crypto(),
        )),
        Box::new(FINGERPRINT),
    ])
    .ok()?;
    Some(out.raw)
}

/// The first `a=ice-ufrag:` / `a=ice-pwd:` value of an SDP.
pub fn sdp_attr(sdp: &str, name: &str) -> Option<String> {
    let prefix = format!("a={name}:");
    sdp.lines()
        .find_map(|l| l.trim_end().strip_prefix(&prefix).map(str::to_owned))
}

/// A DTLS 1.2 record with a plaintext body: `content_type` (20 change-cipher-spec, 21
/// alert, 22 handshake, 23 application data), `epoch` and a 48-bit sequence number.
pub fn dtls_record(content_type: u8, epoch: u16, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut r = vec![content_type, 0xfe, 0xfd];
    r.extend_from_slice(&epoch.to_be_bytes());
    r.extend_from_slice(&seq.to_be_bytes()[2..]);
    r.extend_from_slice(&(body.len() as u16).to_be_bytes());
    r.extend_from_slice(body);
    r
}

/// An RTP header (version 2) and `payload`.
pub fn rtp(payload_type: u8, seq: u16, ssrc: u32, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![0x80, payload_type & 0x7f];
    r.extend_from_slice(&seq.to_be_bytes());
    r.extend_from_slice(&(u32::from(seq) * 3000).to_be_bytes());
    r.extend_from_slice(&ssrc.to_be_bytes());
    r.extend_from_slice(payload);
    r
}

/// An RTCP packet of `packet_type` (200..=206) with `count` in the first byte's low bits
/// and `body` (padded to 32-bit words).
pub fn rtcp(packet_type: u8, count: u8, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let mut r = vec![0x80 | (count & 0x1f), packet_type];
    r.extend_from_slice(&((body.len() / 4) as u16).to_be_bytes());
    r.extend_from_slice(&body);
    r
}

/// A plaintext PLI (RFC 4585 §6.3.1) from `sender` about `media`.
pub fn pli(sender: u32, media: u32) -> Vec<u8> {
    let mut body = sender.to_be_bytes().to_vec();
    body.extend_from_slice(&media.to_be_bytes());
    rtcp(206, 1, &body)
}

/// Sends `datagrams` from `socket` to `to`, 8 at a time with a millisecond between bursts,
/// so the kernel's receive buffer never overflows and every datagram reaches the engine.
pub async fn send_paced(socket: &UdpSocket, to: SocketAddr, datagrams: &[Vec<u8>]) {
    let mut pace = tokio::time::interval(Duration::from_millis(1));
    for burst in datagrams.chunks(8) {
        pace.tick().await;
        for d in burst {
            socket.send_to(d, to).await.expect("send a datagram");
        }
    }
}

/// Random datagrams of many sizes (0 to 2048 bytes); the first byte is random too, so every
/// RFC 7983 class (STUN, DTLS, RTP/RTCP, nothing) shows up.
pub fn random_datagrams(rng: &mut Rng, count: usize) -> Vec<Vec<u8>> {
    const SIZES: [usize; 14] = [0, 1, 2, 3, 4, 12, 19, 20, 21, 100, 500, 1200, 1500, 2048];
    (0..count)
        .map(|i| {
            let len = if i < SIZES.len() {
                SIZES[i]
            } else {
                rng.below(2049)
            };
            rng.bytes(len)
        })
        .collect()
}

/// DTLS-looking junk: record headers with content types 20..=63, epochs 0 and 1, plaintext
/// alerts (close_notify, handshake_failure), handshake and application-data records.
pub fn dtls_junk(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = vec![
        dtls_record(21, 0, 1 << 40, &[1, 0]),  // warning close_notify
        dtls_record(21, 0, 1 << 41, &[2, 40]), // fatal handshake_failure
        dtls_record(21, 1, 1 << 40, &[2, 40]), // an epoch-1 alert that cannot decrypt
        dtls_record(20, 0, 7, &[1]),           // change_cipher_spec
        dtls_record(22, 0, 0, &rng.bytes(120)),
        dtls_record(23, 1, 99, &rng.bytes(300)),
        // A ClientHello's handshake header, and no body.
        dtls_record(22, 0, 1, &[1, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 200]),
    ];
    for _ in 0..100 {
        let len = 1 + rng.below(400);
        let mut d = rng.bytes(len);
        d[0] = 20 + (rng.below(44) as u8);
        out.push(d);
    }
    out
}

/// RTP- and RTCP-looking datagrams: payload types 96/111/0 with random SSRCs, RTCP types
/// 200..=206 with random bodies.
pub fn rtp_rtcp_junk(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..100u16 {
        let pt = [96, 111, 0][usize::from(i % 3)];
        out.push(rtp(pt, i, rng.next_u64() as u32, &rng.bytes(160)));
    }
    for pt in 200..=206u8 {
        for _ in 0..10 {
            let len = 4 + 4 * rng.below(10);
            let body = rng.bytes(len);
            out.push(rtcp(pt, rng.below(32) as u8, &body));
        }
    }
    out
}

/// Returns every datagram that arrived on `socket` so far (without waiting).
pub fn drain(socket: &UdpSocket) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok((n, _)) = socket.try_recv_from(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

/// Datagrams the kernel dropped for a full receive buffer on the UDP socket bound to
/// 127.0.0.1:`port` (the last column of /proc/net/udp).
pub fn kernel_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some(local.as_str()))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}
