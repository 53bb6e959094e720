//! The same requests through `http_cors_middleware` and through tower-http's
//! `CorsLayer` configured alike: the same status and CORS headers, but for the
//! deliberate differences the crate docs list (each applied below by name, so
//! a difference that is not on the list fails).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{HeaderName, Method, Request};
use http_cors_middleware::{CorsConfig, CorsError, http_cors_middleware};
use http_types::{Handler, Response, empty, full};
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};
use tower_layer::Layer;
use tower_service::Service;

/// What a browser reads of an answer: the status and the CORS headers,
/// names lowercase, list values as sorted lowercase tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answer {
    status: u16,
    headers: BTreeMap<String, Vec<String>>,
    /// Whether the inner handler ran.
    reached_handler: bool,
}

impl Answer {
    fn has(&self, name: &str) -> bool {
        self.headers.contains_key(name)
    }

    fn keep_only_vary(&mut self) {
        self.headers.retain(|k, _| k == "vary");
    }
}

fn answer(res: &Response, reached_handler: bool) -> Answer {
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in res.headers() {
        let name = name.as_str().to_ascii_lowercase();
        if !(name.starts_with("access-control-") || name == "vary") {
            continue;
        }
        let tokens = headers.entry(name).or_default();
        for t in value.to_str().expect("ASCII header").split(',') {
            let t = t.trim().to_ascii_lowercase();
            if !t.is_empty() {
                tokens.push(t);
            }
        }
        tokens.sort();
    }
    Answer {
        status: res.status().as_u16(),
        headers,
        reached_handler,
    }
}

/// The inner app: `200 ok`, counting calls.
fn inner() -> (Handler, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let handler = Handler::new(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Response::new(full("ok")) }
    });
    (handler, calls)
}

/// tower-http's layer configured as `config`.
fn tower_layer(config: &CorsConfig) -> CorsLayer {
    let origin = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(config.allowed_origins.iter().map(|o| o.parse().unwrap()))
    };
    let headers = if config.allowed_headers.is_empty() {
        AllowHeaders::mirror_request()
    } else {
        AllowHeaders::list(config.allowed_headers.clone())
    };
    CorsLayer::new()
        .allow_origin(origin)
        .allow_methods(config.allowed_methods.clone())
        .allow_headers(headers)
        .allow_credentials(config.allow_credentials)
        .max_age(config.max_age)
}

fn request(method: &Method, headers: &[(&str, &str)]) -> Request<http_types::Body> {
    let mut b = Request::builder().method(method.clone()).uri("/x");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(empty()).unwrap()
}

/// Waits until tower-http's service is ready (where it checks its rules).
async fn ready(svc: &mut tower_http::cors::Cors<Handler>) {
    std::future::poll_fn(|cx| Service::<Request<http_types::Body>>::poll_ready(svc, cx))
        .await
        .unwrap();
}

async fn ours(config: &CorsConfig, method: &Method, headers: &[(&str, &str)]) -> Answer {
    let (handler, calls) = inner();
    let app = http_cors_middleware(config.clone()).unwrap().apply(handler);
    let res = app.call(request(method, headers)).await;
    answer(&res, calls.load(Ordering::SeqCst) == 1)
}

async fn theirs(config: &CorsConfig, method: &Method, headers: &[(&str, &str)]) -> Answer {
    let (handler, calls) = inner();
    let mut svc = tower_layer(config).layer(handler);
    ready(&mut svc).await;
    let res = svc.call(request(method, headers)).await.unwrap();
    answer(&res, calls.load(Ordering::SeqCst) == 1)
}

/// tower-http's answer changed by the documented differences only.
fn as_we_answer(
    config: &CorsConfig,
    method: &Method,
    headers: &[(&str, &str)],
    mut t: Answer,
) -> Answer {
    let get = |name: &str| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
    let origin = get("origin");
    let requested = get("access-control-request-method");
    // Whom tower-http allows: it sends Allow-Origin for them (and `*` to all).
    let origin_allowed = origin.is_some() && t.has("access-control-allow-origin");
    if *method == Method::OPTIONS && (origin.is_none() || requested.is_none()) {
        // Difference: only OPTIONS with Origin and Access-Control-Request-Method
        // is a preflight; tower-http answers every OPTIONS itself.
        assert!(!t.reached_handler && t.status == 200, "{t:?}");
        t.reached_handler = true;
        t.headers.remove("access-control-allow-methods");
        t.headers.remove("access-control-allow-headers");
        t.headers.remove("access-control-max-age");
    }
    if !origin_allowed {
        // Difference: CORS headers go to allowed origins only.
        t.keep_only_vary();
    }
    // Difference: Vary names Origin also with `*` (we send `*` only to
    // requests with an Origin), and Access-Control-Request-Method on answers
    // to OPTIONS (it makes them preflights and decides 204 or 403).
    let mut also_vary = vec![];
    if config.allowed_origins.iter().any(|o| o == "*") {
        also_vary.push("origin");
    }
    if *method == Method::OPTIONS {
        also_vary.push("access-control-request-method");
    }
    if !also_vary.is_empty() {
        let vary = t.headers.entry("vary".into()).or_default();
        vary.extend(also_vary.iter().map(|v| v.to_string()));
        vary.sort();
    }
    if *method == Method::OPTIONS && origin.is_some() && requested.is_some() {
        let method_listed = t
            .headers
            .get("access-control-allow-methods")
            .is_some_and(|m| m.contains(&requested.unwrap().to_ascii_lowercase()));
        // Difference: 204 for an allowed preflight, 403 with Vary alone for
        // one whose origin or method is not allowed.
        if origin_allowed && method_listed {
            t.status = 204;
        } else {
            t.status = 403;
            t.keep_only_vary();
        }
    }
    t
}

/// Request headers, `(name, value)`.
type Headers = Vec<(&'static str, &'static str)>;

/// The requests every configuration is checked with: name, method, headers.
fn cases() -> Vec<(&'static str, Method, Headers)> {
    let allowed = ("origin", "https://a.example");
    let other = ("origin", "https://evil.example");
    let acrm = |m| ("access-control-request-method", m);
    let acrh = |h| ("access-control-request-headers", h);
    vec![
        ("no Origin", Method::GET, vec![]),
        ("simple GET, allowed origin", Method::GET, vec![allowed]),
        ("simple GET, other origin", Method::GET, vec![other]),
        ("POST, allowed origin", Method::POST, vec![allowed]),
        ("null origin", Method::GET, vec![("origin", "null")]),
        (
            "preflight allowed",
            Method::OPTIONS,
            vec![allowed, acrm("POST"), acrh("content-type")],
        ),
        (
            "preflight, method not allowed",
            Method::OPTIONS,
            vec![allowed, acrm("DELETE")],
        ),
        (
            "preflight, header not allowed",
            Method::OPTIONS,
            vec![allowed, acrm("GET"), acrh("x-not-listed")],
        ),
        (
            "preflight, other origin",
            Method::OPTIONS,
            vec![other, acrm("GET")],
        ),
        (
            "preflight without Origin",
            Method::OPTIONS,
            vec![acrm("GET")],
        ),
        ("OPTIONS, not a preflight", Method::OPTIONS, vec![allowed]),
    ]
}

fn configs() -> Vec<(&'static str, CorsConfig)> {
    vec![
        (
            "one origin",
            CorsConfig {
                allowed_origins: vec!["https://a.example".into()],
                ..CorsConfig::default()
            },
        ),
        (
            "credentials and listed headers",
            CorsConfig {
                allowed_origins: vec!["https://a.example".into(), "https://b.example".into()],
                allowed_methods: vec![Method::GET, Method::POST, Method::PUT],
                allowed_headers: vec![
                    HeaderName::from_static("content-type"),
                    HeaderName::from_static("x-token"),
                ],
                allow_credentials: true,
                ..CorsConfig::default()
            },
        ),
        (
            "any origin",
            CorsConfig {
                allowed_origins: vec!["*".into()],
                ..CorsConfig::default()
            },
        ),
    ]
}

#[tokio::test]
async fn the_same_answers_as_tower_http_but_for_the_documented_differences() {
    let mut compared = 0;
    for (config_name, config) in configs() {
        for (case, method, headers) in cases() {
            let ours = ours(&config, &method, &headers).await;
            let theirs = theirs(&config, &method, &headers).await;
            let want = as_we_answer(&config, &method, &headers, theirs.clone());
            assert_eq!(
                ours, want,
                "{config_name} / {case}:\n ours   {ours:?}\n tower-http {theirs:?}"
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 33);
}

#[tokio::test]
async fn where_both_allow_the_answers_are_identical() {
    // No difference applies to a simple request from a listed origin: the
    // headers are exactly tower-http's.
    for (_, config) in &configs()[..2] {
        let h = [("origin", "https://a.example")];
        let ours = ours(config, &Method::GET, &h).await;
        let theirs = theirs(config, &Method::GET, &h).await;
        assert_eq!(ours, theirs);
        assert!(ours.has("access-control-allow-origin"));
    }
    // An allowed preflight: the same headers, 204 for 200.
    let config = &configs()[1].1;
    let h = [
        ("origin", "https://b.example"),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "x-token"),
    ];
    let ours = ours(config, &Method::OPTIONS, &h).await;
    let mut theirs = theirs(config, &Method::OPTIONS, &h).await;
    assert_eq!((ours.status, theirs.status), (204, 200));
    assert_eq!(
        ours.headers["vary"],
        ["access-control-request-method", "origin"]
    );
    assert_eq!(theirs.headers["vary"], ["origin"]);
    theirs.headers.remove("vary");
    let mut ours_but_vary = ours.headers.clone();
    ours_but_vary.remove("vary");
    assert_eq!(ours_but_vary, theirs.headers);
    assert_eq!(
        ours.headers["access-control-allow-methods"],
        ["get", "post", "put"]
    );
    assert_eq!(ours.headers["access-control-allow-credentials"], ["true"]);
    assert_eq!(ours.headers["access-control-max-age"], ["600"]);
}

#[tokio::test]
async fn unsafe_credentials_are_refused_when_built_where_tower_http_panics_or_allows() {
    let star = CorsConfig {
        allowed_origins: vec!["*".into()],
        allow_credentials: true,
        ..CorsConfig::default()
    };
    assert_eq!(
        http_cors_middleware(star.clone()).unwrap_err(),
        CorsError::WildcardWithCredentials
    );
    // tower-http panics when the layer wraps a service.
    let layer = tower_layer(&star);
    let wrapped = std::panic::catch_unwind(AssertUnwindSafe(|| layer.layer(inner().0)));
    assert!(wrapped.is_err());

    // `null` with credentials: tower-http lets any sandboxed page read
    // credentialed responses; we refuse the configuration.
    let null = CorsConfig {
        allowed_origins: vec!["null".into()],
        allow_credentials: true,
        ..CorsConfig::default()
    };
    assert_eq!(
        http_cors_middleware(null.clone()).unwrap_err(),
        CorsError::NullWithCredentials
    );
    let t = theirs(&null, &Method::GET, &[("origin", "null")]).await;
    assert_eq!(t.headers["access-control-allow-origin"], ["null"]);
    assert_eq!(t.headers["access-control-allow-credentials"], ["true"]);
}
