//! Who the admin listener answers, on the real binary: only its own host names (DNS
//! rebinding), only token holders when `server.admin_tokens` is set (bearer, or the status
//! page's cookie), and `/admin/config` shows no credential inside a URL.

use http::StatusCode;

use crate::client::{Client, Reply};
use crate::gateway::{KEY, SECRET, blocking};
use crate::process::Process;
use crate::support::redis_server::RedisServer;

/// An admin token of the tests.
const ADMIN_TOKEN: &str = "admin-token-0123456789abcdef";

/// Every admin endpoint (the session stream of a session that does not exist: refused
/// before it is looked up, or 404 after).
const ENDPOINTS: [&str; 7] = [
    "/",
    "/metrics",
    "/readyz",
    "/healthz",
    "/admin/config",
    "/admin/live",
    "/admin/sessions/nosuchsession/stream",
];

fn config(server_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
threads = 1
admin_listen = "127.0.0.1:0"
{server_extra}
[auth]
api_keys = ["{KEY}"]
stream_token_secret = "{SECRET}"
[agent]
dispatch = "none"
"#
    )
}

async fn get(admin: &Client, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut call = admin.get(path);
    for (name, value) in headers {
        call = call.header(name, value);
    }
    admin.send_call(call).await
}

fn assert_refused(reply: &Reply, status: StatusCode, code: &str, names: &str) {
    assert_eq!(reply.status, status, "{}", reply.text);
    assert_eq!(reply.error_code(), code, "{}", reply.text);
    assert!(
        reply.error_message().contains(names),
        "the message names {names:?}: {}",
        reply.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_name_is_refused_on_every_admin_endpoint() {
    let gateway = blocking(|| Process::start(&config("")));
    let admin = Client::new(gateway.admin.expect("admin listener"));
    let port = admin.addr().port();

    // A page on evil.example whose name now resolves to 127.0.0.1 sends its own name.
    let evil = format!("evil.example:{port}");
    for path in ENDPOINTS {
        let reply = get(&admin, path, &[("host", &evil)]).await;
        assert_refused(
            &reply,
            StatusCode::MISDIRECTED_REQUEST,
            "host_not_allowed",
            "evil.example",
        );
    }
    // Loopback names and IP addresses are answered.
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        let reply = get(&admin, "/admin/config", &[("host", &host)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text);
    }
    // So are the names configured in server.admin_hosts, in any case.
    let named = blocking(|| Process::start(&config(r#"admin_hosts = ["gw1.internal"]"#)));
    let named_admin = Client::new(named.admin.expect("admin listener"));
    for host in [
        format!("gw1.internal:{}", named_admin.addr().port()),
        "GW1.Internal".to_owned(),
    ] {
        let reply = get(&named_admin, "/admin/config", &[("host", &host)]).await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.text);
    }
    let other = get(&named_admin, "/admin/config", &[("host", "gw2.internal")]).await;
    assert_eq!(
        other.status,
        StatusCode::MISDIRECTED_REQUEST,
        "{}",
        other.text
    );
    // The status page may only talk to its own origin.
    let page = get(&admin, "/", &[]).await;
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("connect-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(!page.text.contains("params.get('report')"), "no report URL");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_token_guards_every_endpoint_but_healthz() {
    let gateway =
        blocking(|| Process::start(&config(&format!(r#"admin_tokens = ["{ADMIN_TOKEN}"]"#))));
    let admin = Client::new(gateway.admin.expect("admin listener"));
    let bearer = format!("Bearer {ADMIN_TOKEN}");

    for path in ENDPOINTS.iter().filter(|p| **p != "/healthz") {
        let missing = get(&admin, path, &[]).await;
        assert_refused(
            &missing,
            StatusCode::UNAUTHORIZED,
            "admin_token_required",
            "server.admin_tokens",
        );
        let wrong = get(
            &admin,
            path,
            &[("authorization", "Bearer not-the-admin-token")],
        )
        .await;
        assert_refused(
            &wrong,
            StatusCode::UNAUTHORIZED,
            "invalid_admin_token",
            "server.admin_tokens",
        );
    }
    assert_eq!(get(&admin, "/healthz", &[]).await.status, StatusCode::OK);
    for path in ["/", "/metrics", "/readyz", "/admin/config"] {
        let ok = get(&admin, path, &[("authorization", &bearer)]).await;
        assert_eq!(ok.status, StatusCode::OK, "{path}: {}", ok.text);
    }
    let unknown = get(
        &admin,
        "/admin/sessions/nosuchsession/stream",
        &[("authorization", &bearer)],
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let shown = get(&admin, "/admin/config", &[("authorization", &bearer)]).await;
    assert!(!shown.text.contains(ADMIN_TOKEN), "{}", shown.text);
    assert_eq!(
        shown.json["server"]["admin_tokens"],
        serde_json::json!(["<redacted>"])
    );

    // The browser's way in: /?token= once sets a cookie and leaves the address bar clean.
    let wrong = get(&admin, "/?token=not-the-admin-token", &[]).await;
    assert_refused(
        &wrong,
        StatusCode::UNAUTHORIZED,
        "invalid_admin_token",
        "server.admin_tokens",
    );
    let login = get(&admin, &format!("/?session=s1&token={ADMIN_TOKEN}"), &[]).await;
    assert_eq!(login.status, StatusCode::SEE_OTHER, "{}", login.text);
    assert_eq!(login.header("location"), Some("/?session=s1"));
    let set_cookie = login.header("set-cookie").expect("a cookie").to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Strict"),
        "{set_cookie}"
    );
    assert!(!set_cookie.contains(ADMIN_TOKEN), "{set_cookie}");
    let cookie = set_cookie.split(';').next().expect("name=value");
    let page = get(&admin, "/admin/config", &[("cookie", cookie)]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_config_shows_urls_without_their_credentials() {
    const PASSWORD: &str = "redis-pass-0123456789";
    let redis = blocking(RedisServer::start);
    // A Redis user with a password (the default user stays open for the harness).
    let created = redis.command(&[
        "ACL",
        "SETUSER",
        "gateway-user",
        "on",
        &format!(">{PASSWORD}"),
        "~*",
        "&*",
        "+@all",
    ]);
    assert_eq!(created.as_deref().map(str::trim), Some("OK"));
    let url = format!(
        "redis://gateway-user:{PASSWORD}@127.0.0.1:{}/0",
        redis.port()
    );
    // With the otlp feature, the collector URL carries credentials too (user info and a
    // query parameter); nothing listens there, so spans are simply lost.
    let telemetry = if cfg!(feature = "otlp") {
        "[telemetry]\notlp_endpoint = \"http://otel-user:otlp-pass-s3cret@127.0.0.1:9/v1/traces?api_key=otlp-key-s3cret\"\n"
    } else {
        ""
    };
    let toml = format!(
        "{}[store]\nkind = \"redis\"\n[store.redis]\nurls = [\"{url}\"]\n{telemetry}",
        config("")
    );
    let gateway = blocking(|| Process::start(&toml));
    // The gateway works with the credentials it hides.
    let client = Client::new(gateway.addr);
    let init = client
        .send_call(
            client
                .post("/v2/sessions")
                .bearer(KEY)
                .json(&serde_json::json!({})),
        )
        .await;
    assert_eq!(init.status, StatusCode::CREATED, "{}", init.text);

    let admin = Client::new(gateway.admin.expect("admin listener"));
    let shown = get(&admin, "/admin/config", &[]).await;
    assert_eq!(shown.status, StatusCode::OK);
    for secret in [
        PASSWORD,
        "gateway-user",
        "otlp-pass-s3cret",
        "otlp-key-s3cret",
        "otel-user",
    ] {
        assert!(
            !shown.text.contains(secret),
            "{secret} shown: {}",
            shown.text
        );
    }
    assert_eq!(
        shown.json["store"]["redis"]["urls"][0],
        format!("redis://<redacted>@127.0.0.1:{}/0", redis.port())
    );
    if cfg!(feature = "otlp") {
        assert_eq!(
            shown.json["telemetry"]["otlp_endpoint"],
            "http://<redacted>@127.0.0.1:9/v1/traces?<redacted>"
        );
    }
}
