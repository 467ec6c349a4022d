//! A fault-injecting proxy in front of moto: forwards every request, except that a matching
//! request can have its answer lost (forwarded, then answered with a 500, as when a
//! connection drops after AWS acted) or be answered with a chosen error instead.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

/// What happens to a matching request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forwarded (AWS acts), then answered with a 500: the caller never learns the result.
    LoseAnswer,
    /// Not forwarded; answered with this status, content type and body.
    Answer(u16, &'static str, String),
}

impl Fault {
    /// An EC2 error answer (`<Response><Errors>…`).
    pub fn ec2_error(status: u16, code: &str) -> Fault {
        Fault::Answer(
            status,
            "text/xml",
            format!(
                "<Response><Errors><Error><Code>{code}</Code><Message>injected</Message></Error></Errors><RequestID>1</RequestID></Response>"
            ),
        )
    }
}

struct Rule {
    pattern: String,
    fault: Fault,
    times: u32,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    client: reqwest::Client,
    rules: Arc<Mutex<Vec<Rule>>>,
}

/// The proxy; point an [`AwsConnection`](threeport_aws::AwsConnection)'s endpoint at `url`.
pub struct FaultProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    rules: Arc<Mutex<Vec<Rule>>>,
}

impl FaultProxy {
    /// A proxy to `upstream` on a free loopback port.
    pub async fn start(upstream: &str) -> FaultProxy {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let rules = Arc::new(Mutex::new(Vec::new()));
        let proxy = Proxy {
            upstream: upstream.to_owned(),
            client: reqwest::Client::new(),
            rules: rules.clone(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        tokio::spawn(async move { axum::serve(listener, app).await });
        FaultProxy { url, rules }
    }

    /// The next `times` requests whose method, path or body contain `pattern`
    /// (`Action=CreateSubnet`, `POST /clusters`) meet `fault`.
    pub fn inject(&self, pattern: &str, fault: Fault, times: u32) {
        self.rules.lock().unwrap().push(Rule {
            pattern: pattern.to_owned(),
            fault,
            times,
        });
    }
}

async fn forward(
    State(proxy): State<Proxy>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let seen = format!("{method} {path}\n{}", String::from_utf8_lossy(&body));
    let fault = {
        let mut rules = proxy.rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.times > 0 && seen.contains(&r.pattern))
            .map(|rule| {
                rule.times -= 1;
                rule.fault.clone()
            })
    };
    if let Some(Fault::Answer(status, content_type, body)) = &fault {
        return (
            StatusCode::from_u16(*status).unwrap(),
            [("content-type", *content_type)],
            body.clone(),
        )
            .into_response();
    }
    let mut request = proxy
        .client
        .request(method, format!("{}{path}", proxy.upstream))
        .body(body);
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(err) => return (StatusCode::BAD_GATEWAY, err.to_string()).into_response(),
    };
    if matches!(fault, Some(Fault::LoseAnswer)) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "text/xml")],
            "<Response><Errors><Error><Code>InternalError</Code><Message>answer lost (injected)</Message></Error></Errors></Response>",
        )
            .into_response();
    }
    let status = answer.status();
    let mut out = HeaderMap::new();
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            out.insert(name.clone(), value.clone());
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    (status, out, bytes).into_response()
}
