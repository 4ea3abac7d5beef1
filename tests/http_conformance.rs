//! The WHIP/WHEP HTTP contract, one request per status code, against a real server on
//! 127.0.0.1 (no WebRTC peer needed: the answers are checked as text).

use parley::config::Config;
use reqwest::{header, Client, Method, StatusCode};

/// A syntactically complete offer; `video` and `audio` give the m-lines' codecs.
fn offer(audio: &[&str], video: &[&str], bundle: bool, direction: &str) -> String {
    let mut mids = Vec::new();
    let mut body = String::new();
    let mut mid = 0;
    let mut section = |kind: &str, rtpmap: &str| {
        let pt = 96 + mid;
        mids.push(mid.to_string());
        let s = format!(
            "m={kind} 9 UDP/TLS/RTP/SAVPF {pt}\r\nc=IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=mid:{mid}\r\na={direction}\r\n\
a=ice-ufrag:Abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=setup:actpass\r\n\
a=fingerprint:sha-256 6B:8B:F0:65:5F:78:E2:51:3B:AC:6F:F3:3F:46:1B:35:DC:B8:5F:64:1A:24:C2:43:F0:A1:58:D0:A1:2C:19:08\r\n\
a=rtpmap:{pt} {rtpmap}\r\n"
        );
        mid += 1;
        s
    };
    for a in audio {
        body.push_str(&section("audio", a));
    }
    for v in video {
        body.push_str(&section("video", v));
    }
    let group = if bundle {
        format!("a=group:BUNDLE {}\r\n", mids.join(" "))
    } else {
        String::new()
    };
    format!("v=0\r\no=- 4215 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n{group}{body}")
}

fn good_offer() -> String {
    offer(&["opus/48000/2"], &["VP8/90000"], true, "sendonly")
}

struct Fixture {
    server: parley::Server,
    http: Client,
}

impl Fixture {
    async fn new(config: Config) -> Self {
        let server = parley::start(config).await.expect("server starts");
        Self {
            server,
            http: Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.server.base_url(), path)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> reqwest::Response {
        let mut req = self.http.request(method, self.url(path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.body(body.to_owned())
            .send()
            .await
            .expect("request sent")
    }

    async fn post_sdp(&self, path: &str, sdp: &str) -> reqwest::Response {
        self.send(
            Method::POST,
            path,
            &[("content-type", "application/sdp")],
            sdp,
        )
        .await
    }
}

/// Asserts the status and returns the response for further checks.
fn expect(resp: reqwest::Response, status: StatusCode) -> reqwest::Response {
    assert_eq!(resp.status(), status, "{:?}", resp.headers());
    resp
}

/// Asserts the status and that the body is a one-line reason containing `reason`.
async fn expect_reason(resp: reqwest::Response, status: StatusCode, reason: &str) {
    let resp = expect(resp, status);
    let text = resp.text().await.expect("body");
    assert!(
        text.to_lowercase().contains(&reason.to_lowercase()),
        "status {status}: body {text:?} lacks {reason:?}"
    );
    assert_eq!(
        text.trim_end().lines().count(),
        1,
        "one-line reason: {text:?}"
    );
}

#[tokio::test]
async fn created_sessions_follow_the_whip_contract() {
    let f = Fixture::new(Config::loopback()).await;
    let resp = expect(
        f.post_sdp("/whip/room1", &good_offer()).await,
        StatusCode::CREATED,
    );
    let h = resp.headers().clone();
    assert_eq!(h[header::CONTENT_TYPE], "application/sdp");
    let location = h[header::LOCATION].to_str().unwrap().to_owned();
    let id = location.strip_prefix("/sessions/").expect("session URL");
    assert!(
        id.len() >= 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    let etag = h[header::ETAG].to_str().unwrap().to_owned();
    assert!(
        etag.starts_with('"') && etag.ends_with('"'),
        "strong ETag {etag}"
    );
    let answer = resp.text().await.unwrap();
    assert!(answer.contains("a=setup:passive"), "{answer}");
    assert!(answer.contains("a=ice-lite"), "{answer}");
    for section in answer.split("m=").skip(1) {
        assert!(
            section.contains("a=candidate:"),
            "every m-section has candidates: {section}"
        );
        assert!(section.contains("a=end-of-candidates"));
    }
    let port = f.server.media_addr.port().to_string();
    assert!(
        answer.contains(&format!("127.0.0.1 {port} typ host")),
        "{answer}"
    );

    // A second POST gets a different session URL.
    let other = f.post_sdp("/whip/room1", &good_offer()).await;
    assert_ne!(
        other.headers()[header::LOCATION].to_str().unwrap(),
        location
    );

    // Trickle with the current ufrag: 204.
    let trickle = "a=ice-ufrag:Abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\na=candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host\r\na=end-of-candidates\r\n";
    let frag = [("content-type", "application/trickle-ice-sdpfrag")];
    expect(
        f.send(Method::PATCH, &location, &frag, trickle).await,
        StatusCode::NO_CONTENT,
    );
    expect_reason(
        f.send(
            Method::PATCH,
            &location,
            &[("content-type", "text/plain")],
            trickle,
        )
        .await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "trickle-ice-sdpfrag",
    )
    .await;
    expect(
        f.send(Method::PATCH, &location, &frag, "a=candidate:garbage\r\n")
            .await,
        StatusCode::BAD_REQUEST,
    );

    // ICE restart: new credentials. Without If-Match 428, stale 412, with "*" 200.
    let restart = "a=ice-ufrag:Wxyz\r\na=ice-pwd:zyxwvutsrqponmlkjihgfedc\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n";
    expect_reason(
        f.send(Method::PATCH, &location, &frag, restart).await,
        StatusCode::PRECONDITION_REQUIRED,
        "If-Match",
    )
    .await;
    let stale = [frag[0], ("if-match", "\"stale\"")];
    expect_reason(
        f.send(Method::PATCH, &location, &stale, restart).await,
        StatusCode::PRECONDITION_FAILED,
        "ETag",
    )
    .await;
    let any = [frag[0], ("if-match", "*")];
    let resp = expect(
        f.send(Method::PATCH, &location, &any, restart).await,
        StatusCode::OK,
    );
    assert_eq!(
        resp.headers()[header::CONTENT_TYPE],
        "application/trickle-ice-sdpfrag"
    );
    let new_etag = resp.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("a=ice-ufrag:") && body.contains("a=ice-pwd:"),
        "{body}"
    );
    // The old ETag is now stale.
    let restart2 = restart.replace("Wxyz", "Qrst");
    let old = [frag[0], ("if-match", etag.as_str())];
    expect(
        f.send(Method::PATCH, &location, &old, &restart2).await,
        StatusCode::PRECONDITION_FAILED,
    );

    // DELETE frees the session at once; a second DELETE finds nothing.
    let before = f.server.session_count();
    expect(
        f.send(Method::DELETE, &location, &[], "").await,
        StatusCode::OK,
    );
    assert_eq!(f.server.session_count(), before - 1);
    expect_reason(
        f.send(Method::DELETE, &location, &[], "").await,
        StatusCode::NOT_FOUND,
        "no such session",
    )
    .await;
    expect(
        f.send(Method::PATCH, &location, &frag, trickle).await,
        StatusCode::NOT_FOUND,
    );
    f.server.shutdown().await;
}

/// method, path, headers, body, expected status, words the reason must contain.
type Case<'a> = (
    Method,
    String,
    Vec<(&'a str, &'a str)>,
    String,
    StatusCode,
    &'a str,
);

#[tokio::test]
async fn bad_requests_get_a_status_and_a_reason() {
    let mut config = Config::loopback();
    config.max_body_bytes = 16 * 1024;
    let f = Fixture::new(config).await;
    let sdp_ct = [("content-type", "application/sdp")];
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/whip/r".into(),
            vec![("content-type", "text/plain")],
            good_offer(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/sdp",
        ),
        (
            Method::POST,
            "/whip/r".into(),
            vec![],
            good_offer(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "application/sdp",
        ),
        (
            Method::POST,
            "/whip/r".into(),
            sdp_ct.to_vec(),
            "hello".into(),
            StatusCode::BAD_REQUEST,
            "v=0",
        ),
        (
            Method::POST,
            "/whip/r".into(),
            sdp_ct.to_vec(),
            "".into(),
            StatusCode::BAD_REQUEST,
            "empty",
        ),
        (
            Method::POST,
            "/whip/r".into(),
            sdp_ct.to_vec(),
            offer(
                &["opus/48000/2"],
                &["VP8/90000", "VP8/90000"],
                true,
                "sendonly",
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "at most one",
        ),
        (
            Method::POST,
            "/whip/r".into(),
            sdp_ct.to_vec(),
            offer(&["opus/48000/2"], &["VP8/90000"], false, "sendonly"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "BUNDLE",
        ),
        (
            Method::POST,
            "/whip/r".into(),
            sdp_ct.to_vec(),
            offer(&[], &["FOO/90000"], true, "sendonly"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "codec",
        ),
        (
            Method::POST,
            "/whep/r".into(),
            sdp_ct.to_vec(),
            offer(&["PCMU/8000"], &[], true, "recvonly"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "codec",
        ),
        (
            Method::POST,
            "/whip/r".into(),
            sdp_ct.to_vec(),
            good_offer().replace("a=fingerprint", "a=x-fingerprint"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "fingerprint",
        ),
        (
            Method::POST,
            "/whip/r".into(),
            sdp_ct.to_vec(),
            "x".repeat(20 * 1024),
            StatusCode::PAYLOAD_TOO_LARGE,
            "",
        ),
        (
            Method::POST,
            "/whip/bad%20room".into(),
            sdp_ct.to_vec(),
            good_offer(),
            StatusCode::BAD_REQUEST,
            "room name",
        ),
        (
            Method::POST,
            format!("/whip/{}", "r".repeat(65)),
            sdp_ct.to_vec(),
            good_offer(),
            StatusCode::BAD_REQUEST,
            "room name",
        ),
        (
            Method::POST,
            "/whip/r?participant=a%2Fb".into(),
            sdp_ct.to_vec(),
            good_offer(),
            StatusCode::BAD_REQUEST,
            "participant name",
        ),
        (
            Method::PATCH,
            "/sessions/0123456789abcdef0123456789abcdef".into(),
            vec![("content-type", "application/trickle-ice-sdpfrag")],
            "a=end-of-candidates\r\n".into(),
            StatusCode::NOT_FOUND,
            "no such session",
        ),
        (
            Method::DELETE,
            "/sessions/nope".into(),
            vec![],
            "".into(),
            StatusCode::NOT_FOUND,
            "no such session",
        ),
        (
            Method::GET,
            "/nothing-here".into(),
            vec![],
            "".into(),
            StatusCode::NOT_FOUND,
            "",
        ),
    ];
    for (method, path, headers, body, status, reason) in cases {
        let resp = f.send(method.clone(), &path, &headers, &body).await;
        assert_eq!(resp.status(), status, "{method} {path}");
        if !reason.is_empty() {
            let text = resp.text().await.unwrap();
            assert!(
                text.contains(reason),
                "{method} {path}: {text:?} lacks {reason:?}"
            );
            assert_eq!(text.trim_end().lines().count(), 1, "{text:?}");
        }
    }
    assert_eq!(
        f.server.session_count(),
        0,
        "no failed request left a session behind"
    );
    f.server.shutdown().await;
}

#[tokio::test]
async fn options_head_and_ice_server_links() {
    let mut config = Config::loopback();
    config.ice_server = vec!["stun:stun.example.org:3478".into()];
    let f = Fixture::new(config).await;
    let resp = f.send(Method::OPTIONS, "/whip/r", &[], "").await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let h = resp.headers();
    assert_eq!(h["accept-post"], "application/sdp");
    assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS]
        .to_str()
        .unwrap()
        .contains("PATCH"));
    assert!(h[header::ACCESS_CONTROL_ALLOW_HEADERS]
        .to_str()
        .unwrap()
        .contains("Authorization"));
    assert_eq!(
        h[header::LINK],
        "<stun:stun.example.org:3478>; rel=\"ice-server\""
    );
    let head = f.send(Method::HEAD, "/whep/r", &[], "").await;
    assert_eq!(head.status(), StatusCode::OK);
    let created = f.post_sdp("/whip/r", &good_offer()).await;
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(
        created.headers()[header::LINK],
        "<stun:stun.example.org:3478>; rel=\"ice-server\""
    );
    assert!(created.headers()[header::ACCESS_CONTROL_EXPOSE_HEADERS]
        .to_str()
        .unwrap()
        .contains("Location"));
    f.server.shutdown().await;
}

#[tokio::test]
async fn bearer_tokens_protect_each_side() {
    let mut config = Config::loopback();
    config.publish_token = Some("pub-secret".into());
    config.play_token = Some("play-secret".into());
    let f = Fixture::new(config).await;
    let whep_offer = offer(&["opus/48000/2"], &["VP8/90000"], true, "recvonly");
    for (path, body, token, other) in [
        ("/whip/r", good_offer(), "pub-secret", "play-secret"),
        ("/whep/r", whep_offer, "play-secret", "pub-secret"),
    ] {
        let resp = f.post_sdp(path, &body).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(resp.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let wrong = format!("Bearer {other}");
        let resp = f
            .send(
                Method::POST,
                path,
                &[
                    ("content-type", "application/sdp"),
                    ("authorization", &wrong),
                ],
                &body,
            )
            .await;
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "{path} with the other side's token"
        );
        let right = format!("Bearer {token}");
        let resp = f
            .send(
                Method::POST,
                path,
                &[
                    ("content-type", "application/sdp"),
                    ("authorization", &right),
                ],
                &body,
            )
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED, "{path}");
        let location = resp.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_owned();
        // The session resource needs the token too.
        let del = f.send(Method::DELETE, &location, &[], "").await;
        assert_eq!(del.status(), StatusCode::UNAUTHORIZED);
        let del = f
            .send(Method::DELETE, &location, &[("authorization", &right)], "")
            .await;
        assert_eq!(del.status(), StatusCode::OK);
    }
    f.server.shutdown().await;
}

#[tokio::test]
async fn too_many_sessions_is_503_with_retry_after() {
    let mut config = Config::loopback();
    config.max_sessions = 1;
    let f = Fixture::new(config).await;
    assert_eq!(
        f.post_sdp("/whip/r", &good_offer()).await.status(),
        StatusCode::CREATED
    );
    let resp = f.post_sdp("/whip/r2", &good_offer()).await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers().contains_key(header::RETRY_AFTER));
    f.server.shutdown().await;
}
